// `#[sea_orm::compact_model]` with relation fields (no attributes; the `Relation` enum is
// written by hand): the relation fields are not columns.

mod bakeries {
    use sea_orm::entity::prelude::*;

    #[sea_orm::compact_model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "bakeries")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
        pub cakes: HasMany<super::cakes::Entity>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(has_many = "super::cakes::Entity")]
        Cake,
    }

    impl Related<super::cakes::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Cake.def()
        }
    }
}

mod cakes {
    use sea_orm::entity::prelude::*;

    #[sea_orm::compact_model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "cakes")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
        pub bakery_id: Option<i32>,
        pub bakery: BelongsTo<Option<super::bakeries::Entity>>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::bakeries::Entity",
            from = "Column::BakeryId",
            to = "super::bakeries::Column::Id"
        )]
        Bakery,
    }

    impl Related<super::bakeries::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Bakery.def()
        }
    }
}

fn main() {
    let bakeries = <bakeries::Entity as ormsync::Replicated>::table_spec();
    assert_eq!(bakeries.columns, ["id", "name"]);
    assert!(bakeries.references.is_empty());
    let cakes = <cakes::Entity as ormsync::Replicated>::table_spec();
    assert_eq!(cakes.columns, ["id", "name", "bakery_id"]);
    assert_eq!(cakes.references.len(), 1);
    assert_eq!(cakes.references[0].table, "bakeries");
    assert_eq!(cakes.references[0].columns, ["bakery_id"]);
}
