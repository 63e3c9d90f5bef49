//! Entities in sea-orm 2.0's formats replicate like classic ones: rows written through
//! `#[sea_orm::model]` entities (relations declared as fields, a self reference, nested
//! saves through `ActiveModelEx`), `#[sea_orm::compact_model]` entities and an entity
//! whose own hooks live in `ReplicatedHooks` reach the destination row for row, and no
//! relation field ever shows in a captured payload. SQLite files only: no servers.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, TestDb, assert_same};
use ormsync::{Destination, Replicated, Replicator};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, EntityTrait, ModelTrait, Schema, Set,
    Statement, TransactionTrait,
};

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

/// `#[sea_orm::compact_model]` with hooks of its own, found without `#[replicated(hooks)]`.
mod notes {
    use sea_orm::Set;
    use sea_orm::entity::prelude::*;

    #[sea_orm::compact_model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "notes")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
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

/// Creates every table of this file at `db`, parents first.
async fn create_tables(db: &DatabaseConnection) {
    let schema = Schema::new(db.get_database_backend());
    let statements = [
        schema.create_table_from_entity(users::Entity),
        schema.create_table_from_entity(profiles::Entity),
        schema.create_table_from_entity(posts::Entity),
        schema.create_table_from_entity(staff::Entity),
        schema.create_table_from_entity(bakeries::Entity),
        schema.create_table_from_entity(cakes::Entity),
        schema.create_table_from_entity(notes::Entity),
    ];
    for statement in statements {
        db.execute(&statement).await.expect("create table");
    }
}

async fn start(source: &TestDb, dest: &TestDb) -> Replicator {
    Replicator::builder(source.db.clone())
        .entity::<users::Entity>()
        .entity::<profiles::Entity>()
        .entity::<posts::Entity>()
        .entity::<staff::Entity>()
        .entity::<bakeries::Entity>()
        .entity::<cakes::Entity>()
        .entity::<notes::Entity>()
        .destination(Destination::new("dest", dest.db.clone()))
        .poll_interval(Duration::from_millis(50))
        .start()
        .await
        .expect("start replicator")
}

async fn assert_every_table_same(source: &DatabaseConnection, dest: &DatabaseConnection) {
    assert_same::<users::Entity>(source, dest).await;
    assert_same::<profiles::Entity>(source, dest).await;
    assert_same::<posts::Entity>(source, dest).await;
    assert_same::<staff::Entity>(source, dest).await;
    assert_same::<bakeries::Entity>(source, dest).await;
    assert_same::<cakes::Entity>(source, dest).await;
    assert_same::<notes::Entity>(source, dest).await;
}

/// The shipped columns of the table named `table`.
fn shipped_columns(table: &str) -> Vec<String> {
    let specs = [
        users::Entity::table_spec(),
        profiles::Entity::table_spec(),
        posts::Entity::table_spec(),
        staff::Entity::table_spec(),
        bakeries::Entity::table_spec(),
        cakes::Entity::table_spec(),
        notes::Entity::table_spec(),
    ];
    specs
        .into_iter()
        .find(|s| s.table == table)
        .unwrap_or_else(|| panic!("an outbox row of an unknown table `{table}`"))
        .columns
}

/// Every payload in the outbox holds exactly the shipped columns of its table: no relation
/// field, no skipped column. Returns how many payloads were read.
async fn assert_payloads_are_columns(db: &DatabaseConnection) -> usize {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT table_name, payload FROM ormsync_outbox WHERE payload IS NOT NULL",
        ))
        .await
        .expect("read the outbox");
    for row in &rows {
        let table: String = row.try_get("", "table_name").expect("table_name");
        let payload: String = row.try_get("", "payload").expect("payload");
        let json: serde_json::Value = serde_json::from_str(&payload).expect("JSON payload");
        let mut keys: Vec<String> = json
            .as_object()
            .unwrap_or_else(|| panic!("a payload of `{table}` is not an object: {payload}"))
            .keys()
            .cloned()
            .collect();
        let mut columns = shipped_columns(&table);
        keys.sort();
        columns.sort();
        assert_eq!(keys, columns, "payload of `{table}`: {payload}");
    }
    rows.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_of_every_format_replicate_row_for_row() {
    let source = TestDb::create(Backend::Sqlite).await.expect("sqlite");
    let dest = TestDb::create(Backend::Sqlite).await.expect("sqlite");
    create_tables(&source.db).await;
    create_tables(&dest.db).await;
    ormsync::install(&source.db)
        .await
        .expect("install at source");
    let rep = start(&source, &dest).await;
    let db = &source.db;

    // Plain ActiveModels of the dense format, one transaction.
    let txn = db.begin().await.unwrap();
    users::ActiveModel {
        id: Set(1),
        name: Set("Ada".into()),
        email: Set("ada@example.com".into()),
    }
    .insert(&txn)
    .await
    .unwrap();
    profiles::ActiveModel {
        id: Set(1),
        picture: Set("ada.png".into()),
        user_id: Set(1),
    }
    .insert(&txn)
    .await
    .unwrap();
    for (id, title) in [(1, "first"), (2, "second"), (3, "third")] {
        posts::ActiveModel {
            id: Set(id),
            user_id: Set(1),
            title: Set(title.into()),
            draft_note: Set(Some("not shipped".into())),
        }
        .insert(&txn)
        .await
        .unwrap();
    }
    txn.commit().await.unwrap();

    // A nested save through `ActiveModelEx`: the user and its posts in one call.
    let txn = db.begin().await.unwrap();
    let grace = users::ActiveModel::builder()
        .set_id(2)
        .set_name("Grace")
        .set_email("grace@example.com")
        .add_post(
            posts::ActiveModel::builder()
                .set_id(10)
                .set_title("nested one"),
        )
        .add_post(
            posts::ActiveModel::builder()
                .set_id(11)
                .set_title("nested two"),
        )
        .insert(&txn)
        .await
        .unwrap();
    txn.commit().await.unwrap();
    assert_eq!(grace.posts.len(), 2);

    // The self reference: a manager, two reports, one moved, one removed.
    let txn = db.begin().await.unwrap();
    for (id, name, boss) in [(1, "Boss", None), (2, "Ann", Some(1)), (3, "Bob", Some(1))] {
        staff::ActiveModel {
            id: Set(id),
            name: Set(name.into()),
            reports_to_id: Set(boss),
        }
        .insert(&txn)
        .await
        .unwrap();
    }
    txn.commit().await.unwrap();

    // The compact format with relation fields, and hooks found without an attribute.
    let txn = db.begin().await.unwrap();
    bakeries::ActiveModel {
        id: Set(1),
        name: Set("Corner".into()),
    }
    .insert(&txn)
    .await
    .unwrap();
    for (id, name, bakery) in [(1, "Apple", Some(1)), (2, "Plain", None)] {
        cakes::ActiveModel {
            id: Set(id),
            name: Set(name.into()),
            bakery_id: Set(bakery),
        }
        .insert(&txn)
        .await
        .unwrap();
    }
    notes::ActiveModel {
        id: Set(1),
        body: Set("  padded  ".into()),
    }
    .insert(&txn)
    .await
    .unwrap();
    txn.commit().await.unwrap();

    // Updates and deletes, several in one transaction.
    let txn = db.begin().await.unwrap();
    let mut post: posts::ActiveModel = posts::Entity::find_by_id(2)
        .one(&txn)
        .await
        .unwrap()
        .expect("post 2")
        .into();
    post.title = Set("second, edited".into());
    post.update(&txn).await.unwrap();
    posts::Entity::find_by_id(3)
        .one(&txn)
        .await
        .unwrap()
        .expect("post 3")
        .delete(&txn)
        .await
        .unwrap();
    let mut cake: cakes::ActiveModel = cakes::Entity::find_by_id(2)
        .one(&txn)
        .await
        .unwrap()
        .expect("cake 2")
        .into();
    cake.bakery_id = Set(Some(1));
    cake.update(&txn).await.unwrap();
    let mut bob: staff::ActiveModel = staff::Entity::find_by_id(3)
        .one(&txn)
        .await
        .unwrap()
        .expect("Bob")
        .into();
    bob.reports_to_id = Set(Some(2));
    bob.update(&txn).await.unwrap();
    let mut note: notes::ActiveModel = notes::Entity::find_by_id(1)
        .one(&txn)
        .await
        .unwrap()
        .expect("note 1")
        .into();
    note.body = Set(" edited ".into());
    note.update(&txn).await.unwrap();
    txn.commit().await.unwrap();

    // A reference removed, then the row it pointed at.
    let txn = db.begin().await.unwrap();
    let mut bob: staff::ActiveModel = staff::Entity::find_by_id(3)
        .one(&txn)
        .await
        .unwrap()
        .expect("Bob")
        .into();
    bob.reports_to_id = Set(None);
    bob.update(&txn).await.unwrap();
    staff::Entity::find_by_id(2)
        .one(&txn)
        .await
        .unwrap()
        .expect("Ann")
        .delete(&txn)
        .await
        .unwrap();
    txn.commit().await.unwrap();

    // A transaction rolled back ships nothing.
    let txn = db.begin().await.unwrap();
    users::ActiveModel {
        id: Set(3),
        name: Set("Never".into()),
        email: Set("never@example.com".into()),
    }
    .insert(&txn)
    .await
    .unwrap();
    txn.rollback().await.unwrap();

    let payloads = assert_payloads_are_columns(db).await;
    assert!(payloads >= 15, "only {payloads} payloads were captured");
    rep.sync_now().await.expect("sync");

    let note = notes::Entity::find_by_id(1).one(db).await.unwrap();
    assert_eq!(
        note.map(|n| n.body).as_deref(),
        Some("edited"),
        "the hook ran"
    );
    assert_eq!(common::count(db, "users").await, 2);
    assert_eq!(common::count(db, "posts").await, 4);
    assert_eq!(common::count(db, "staff").await, 2);
    assert_every_table_same(&source.db, &dest.db).await;
    rep.shutdown().await;
}
