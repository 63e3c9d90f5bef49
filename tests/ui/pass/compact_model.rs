// `#[sea_orm::compact_model]` without relation fields: the `ModelEx` it generates carries
// the derive too, and writes nothing.

mod customers {
    use sea_orm::entity::prelude::*;

    #[sea_orm::compact_model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "customers")]
    #[replicated(sync_key = "sync_id")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub sync_id: Uuid,
        pub name: String,
        #[replicated(skip)]
        pub local_note: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

fn main() {
    let spec = <customers::Entity as ormsync::Replicated>::table_spec();
    assert_eq!(spec.table, "customers");
    assert_eq!(spec.key, ["id"]);
    assert_eq!(spec.columns, ["id", "sync_id", "name"]);
    assert_eq!(spec.sync_key.as_deref(), Some("sync_id"));
}
