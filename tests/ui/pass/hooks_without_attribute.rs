// An entity's `impl ReplicatedHooks` runs without `#[replicated(hooks)]`: an application's
// `impl ActiveModelBehavior for ActiveModel` becomes one by renaming the trait, body as it is.

mod notes {
    use sea_orm::entity::prelude::*;
    use sea_orm::Set;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "notes")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    #[async_trait::async_trait]
    impl ormsync::ReplicatedHooks for ActiveModel {
        fn new() -> Self {
            Self {
                body: Set("(empty)".into()),
                ..ActiveModelTrait::default()
            }
        }

        async fn before_save<C>(mut self, _db: &C, _insert: bool) -> Result<Self, DbErr>
        where
            C: ConnectionTrait,
        {
            if let sea_orm::ActiveValue::Set(body) = &self.body {
                let trimmed = body.trim().to_string();
                self.body = Set(trimmed);
            }
            Ok(self)
        }
    }
}

mod plain {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "plain")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

fn main() {
    use sea_orm::ActiveModelBehavior;
    // `new` is the entity's own when it has hooks, sea-orm's default when it has none.
    assert_eq!(notes::ActiveModel::new().body, sea_orm::Set("(empty)".to_string()));
    assert!(plain::ActiveModel::new().body.is_not_set());
}
