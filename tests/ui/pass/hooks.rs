// `#[replicated(hooks)]`: the entity's own logic lives in `ReplicatedHooks`.

mod notes {
    use sea_orm::Set;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "notes")]
    #[replicated(hooks)]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    #[async_trait::async_trait]
    impl ormsync::ReplicatedHooks for ActiveModel {
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

fn main() {
    let spec = <notes::Entity as ormsync::Replicated>::table_spec();
    assert_eq!(spec.table, "notes");
    assert_eq!(spec.columns, ["id", "body"]);
    assert_eq!(spec.sync_key, None);
}
