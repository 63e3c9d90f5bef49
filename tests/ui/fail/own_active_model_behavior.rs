// The derive writes `impl ActiveModelBehavior for ActiveModel`; a hand-written one conflicts
// (E0119, which a derive cannot reword). The fix, which the derive's docs and the README
// give: `impl ormsync::ReplicatedHooks for ActiveModel` in its place, body unchanged
// (tests/ui/pass/hooks_without_attribute.rs).

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
