// The derive writes `impl ActiveModelBehavior for ActiveModel`; a hand-written one conflicts.
// Such logic belongs in `impl ormsync::ReplicatedHooks for ActiveModel` with `#[replicated(hooks)]`.

mod customers {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "customers")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn main() {}
