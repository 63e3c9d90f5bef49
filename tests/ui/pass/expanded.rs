// The expanded entity format: `Model` derives `DeriveModel` and `DeriveActiveModel`, and the
// table name, columns and keys are written out by hand.

mod cakes {
    use sea_orm::entity::prelude::*;

    #[derive(Copy, Clone, Default, Debug, DeriveEntity)]
    pub struct Entity;

    impl EntityName for Entity {
        fn table_name(&self) -> &'static str {
            "cakes"
        }
    }

    #[derive(Clone, Debug, PartialEq, DeriveModel, DeriveActiveModel, ormsync::Replicated)]
    pub struct Model {
        pub id: i32,
        pub name: String,
        #[replicated(skip)]
        pub secret: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveColumn)]
    pub enum Column {
        Id,
        Name,
        Secret,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DerivePrimaryKey)]
    pub enum PrimaryKey {
        Id,
    }

    impl PrimaryKeyTrait for PrimaryKey {
        type ValueType = i32;

        fn auto_increment() -> bool {
            true
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter)]
    pub enum Relation {}

    impl ColumnTrait for Column {
        type EntityName = Entity;

        fn def(&self) -> ColumnDef {
            match self {
                Self::Id => ColumnType::Integer.def(),
                Self::Name => ColumnType::String(StringLen::None).def(),
                Self::Secret => ColumnType::String(StringLen::None).def().null(),
            }
        }
    }

    impl RelationTrait for Relation {
        fn def(&self) -> RelationDef {
            panic!("no relations")
        }
    }
}

fn main() {
    let spec = <cakes::Entity as ormsync::Replicated>::table_spec();
    assert_eq!(spec.table, "cakes");
    assert_eq!(spec.key, ["id"]);
    assert_eq!(spec.columns, ["id", "name"]);
}
