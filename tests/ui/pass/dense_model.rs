// `#[sea_orm::model]` (sea-orm 2.0's dense format): relation fields with their attributes
// (`has_one`, `has_many`, `belongs_to` with `from`/`to`, a self reference both ways).
// `Model` keeps only the columns; the generated `ModelEx` carries the derive too.

mod users {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
        #[sea_orm(unique)]
        pub email: String,
        #[sea_orm(has_one)]
        pub profile: HasOne<super::profiles::Entity>,
        #[sea_orm(has_many)]
        pub posts: HasMany<super::posts::Entity>,
    }
}

mod profiles {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "profiles")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub picture: String,
        #[sea_orm(unique)]
        pub user_id: i32,
        #[sea_orm(belongs_to, from = "user_id", to = "id")]
        pub user: BelongsTo<super::users::Entity>,
    }
}

mod posts {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "posts")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub user_id: i32,
        pub title: String,
        #[replicated(skip)]
        pub draft_note: Option<String>,
        #[sea_orm(belongs_to, from = "user_id", to = "id")]
        pub author: BelongsTo<super::users::Entity>,
    }
}

mod staff {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "staff")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
        pub reports_to_id: Option<i32>,
        #[sea_orm(
            self_ref,
            relation_enum = "ReportsTo",
            relation_reverse = "Manages",
            from = "reports_to_id",
            to = "id"
        )]
        pub reports_to: BelongsTo<Option<Entity>>,
        #[sea_orm(self_ref, relation_enum = "Manages", relation_reverse = "ReportsTo")]
        pub manages: HasMany<Entity>,
    }
}

fn main() {
    use ormsync::Replicated;
    let users = users::Entity::table_spec();
    assert_eq!(users.columns, ["id", "name", "email"]);
    assert!(users.references.is_empty());
    let profiles = profiles::Entity::table_spec();
    assert_eq!(profiles.columns, ["id", "picture", "user_id"]);
    assert_eq!(profiles.references[0].table, "users");
    let posts = posts::Entity::table_spec();
    assert_eq!(posts.columns, ["id", "user_id", "title"]);
    let staff = staff::Entity::table_spec();
    assert_eq!(staff.columns, ["id", "name", "reports_to_id"]);
    assert_eq!(staff.references.len(), 1);
    assert_eq!(staff.references[0].table, "staff");
    assert_eq!(staff.references[0].columns, ["reports_to_id"]);
    assert_eq!(staff.references[0].to_columns, ["id"]);
}
