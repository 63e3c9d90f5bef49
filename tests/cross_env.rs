//! Databases whose keys differ, local edits at a destination, filters and masking, and
//! two-way replication: each on PostgreSQL → MariaDB, MariaDB → SQLite and SQLite →
//! PostgreSQL.

#[macro_use]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, TestDb, count};
use ormsync::change::Row;
use ormsync::value::Value;
use ormsync::{
    Alert, AlertKind, ConflictPolicy, Destination, KeyStrategy, OnPermanentError, Replicator,
    Resolution, RowFilter, Schedule, State, Transform,
};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, NotSet,
    QueryOrder, Set, TransactionTrait,
};
use uuid::Uuid;

pub mod customers {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "customers")]
    #[replicated(sync_key = "sync_id")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub sync_id: Uuid,
        pub email: String,
        pub name: String,
        pub tenant_id: i64,
        pub version: i64,
        pub secret: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(has_many = "super::orders::Entity")]
        Orders,
    }

    impl Related<super::orders::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Orders.def()
        }
    }
}

pub mod orders {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "orders")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub customer_id: i64,
        pub amount: i32,
        pub note: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::customers::Entity",
            from = "Column::CustomerId",
            to = "super::customers::Column::Id"
        )]
        Customer,
    }

    impl Related<super::customers::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Customer.def()
        }
    }
}

/// The tables, with auto-assigned keys and a real foreign key. `secret` is left out where
/// a destination must do without it; `unique_sync` false leaves the sync key unenforced.
fn ddl(backend: DbBackend, secret: bool, unique_sync: bool) -> Vec<String> {
    let secret = if secret { ", secret TEXT NULL" } else { "" };
    let unique = if unique_sync { " UNIQUE" } else { "" };
    match backend {
        DbBackend::Postgres => vec![
            format!(
                "CREATE TABLE customers (id BIGSERIAL PRIMARY KEY, sync_id UUID NOT NULL{unique}, \
                 email TEXT NOT NULL, name TEXT NOT NULL, tenant_id BIGINT NOT NULL, \
                 version BIGINT NOT NULL{secret})"
            ),
            "CREATE TABLE orders (id BIGSERIAL PRIMARY KEY, customer_id BIGINT NOT NULL \
             REFERENCES customers (id), amount INTEGER NOT NULL, note TEXT NOT NULL)"
                .into(),
        ],
        DbBackend::MySql => vec![
            format!(
                "CREATE TABLE customers (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
                 sync_id BINARY(16) NOT NULL{unique}, email VARCHAR(255) NOT NULL, \
                 name VARCHAR(255) NOT NULL, tenant_id BIGINT NOT NULL, version BIGINT NOT NULL{secret})"
            ),
            "CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id BIGINT NOT NULL, \
             amount INT NOT NULL, note TEXT NOT NULL, FOREIGN KEY (customer_id) REFERENCES customers (id))"
                .into(),
        ],
        _ => vec![
            format!(
                "CREATE TABLE customers (id INTEGER PRIMARY KEY AUTOINCREMENT, \
                 sync_id uuid_text NOT NULL{unique}, email TEXT NOT NULL, name TEXT NOT NULL, \
                 tenant_id INTEGER NOT NULL, version INTEGER NOT NULL{secret})"
            ),
            "CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, customer_id INTEGER NOT NULL \
             REFERENCES customers (id), amount INTEGER NOT NULL, note TEXT NOT NULL)"
                .into(),
        ],
    }
}

async fn create(db: &DatabaseConnection, secret: bool, unique_sync: bool) {
    for sql in ddl(db.get_database_backend(), secret, unique_sync) {
        db.execute_unprepared(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// A source with the tables and ormsync installed, and a destination with the tables.
async fn setup(src: Backend, dst: Backend, dest_secret: bool) -> Option<(TestDb, TestDb)> {
    let s = TestDb::create(src).await?;
    let d = TestDb::create(dst).await?;
    create(&s.db, true, true).await;
    create(&d.db, dest_secret, true).await;
    ormsync::install(&s.db).await.unwrap();
    Some((s, d))
}

fn customer(email: &str, name: &str, tenant: i64) -> customers::ActiveModel {
    customers::ActiveModel {
        id: NotSet,
        sync_id: Set(Uuid::new_v4()),
        email: Set(email.into()),
        name: Set(name.into()),
        tenant_id: Set(tenant),
        version: Set(1),
        secret: Set(Some(format!("secret of {email}"))),
    }
}

fn order(customer_id: i64, amount: i32) -> orders::ActiveModel {
    orders::ActiveModel {
        id: NotSet,
        customer_id: Set(customer_id),
        amount: Set(amount),
        note: Set(format!("order of {amount}")),
    }
}

/// A row written at a destination by hand, as its own application would.
async fn local_customer(db: &DatabaseConnection, email: &str, name: &str, sync_id: Uuid) {
    local_customer_at(db, None, email, name, sync_id).await
}

async fn local_customer_at(
    db: &DatabaseConnection,
    id: Option<i64>,
    email: &str,
    name: &str,
    sync_id: Uuid,
) {
    // sea-orm stores a UUID as 16 bytes on MariaDB and SQLite.
    let sync = match db.get_database_backend() {
        DbBackend::Postgres => format!("'{sync_id}'"),
        DbBackend::MySql => format!("UNHEX('{}')", sync_id.simple()),
        _ => format!("X'{}'", sync_id.simple()),
    };
    let (id_col, id_val) = match id {
        Some(id) => ("id, ", format!("{id}, ")),
        None => ("", String::new()),
    };
    sql(
        db,
        &format!(
            "INSERT INTO customers ({id_col}sync_id, email, name, tenant_id, version) \
             VALUES ({id_val}{sync}, '{email}', '{name}', 7, 1)"
        ),
    )
    .await;
}

async fn sql(db: &DatabaseConnection, sql: &str) {
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn all_customers(db: &DatabaseConnection) -> Vec<customers::Model> {
    customers::Entity::find()
        .order_by_asc(customers::Column::Id)
        .all(db)
        .await
        .unwrap()
}

/// Customers as (email, name, tenant, version), sorted: what they are, whatever their keys.
async fn people(db: &DatabaseConnection) -> Vec<(String, String, i64, i64)> {
    let mut v: Vec<_> = all_customers(db)
        .await
        .into_iter()
        .map(|c| (c.email, c.name, c.tenant_id, c.version))
        .collect();
    v.sort();
    v
}

/// Orders as (their customer's email, amount, note), sorted: every foreign key resolved
/// to the row it points at on that side.
async fn orders_by_email(db: &DatabaseConnection) -> Vec<(String, i32, String)> {
    let customers = all_customers(db).await;
    let mut v: Vec<_> = orders::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|o| {
            let email = customers
                .iter()
                .find(|c| c.id == o.customer_id)
                .map(|c| c.email.clone())
                .unwrap_or_else(|| format!("<dangling {}>", o.customer_id));
            (email, o.amount, o.note)
        })
        .collect();
    v.sort();
    v
}

async fn id_of(db: &DatabaseConnection, email: &str) -> i64 {
    all_customers(db)
        .await
        .into_iter()
        .find(|c| c.email == email)
        .unwrap_or_else(|| panic!("no customer {email}"))
        .id
}

/// Conflicts recorded at `db`, as (table, outcome), in order.
async fn conflicts(db: &DatabaseConnection) -> Vec<(String, String)> {
    db.query_all_raw(sea_orm::Statement::from_string(
        db.get_database_backend(),
        "SELECT table_name, outcome FROM ormsync_conflicts ORDER BY id",
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.try_get::<String>("", "table_name").unwrap(),
            r.try_get::<String>("", "outcome").unwrap(),
        )
    })
    .collect()
}

async fn start(source: &TestDb, dest: Destination) -> Replicator {
    Replicator::builder(source.db.clone())
        .entity::<customers::Entity>()
        .entity::<orders::Entity>()
        .destination(dest)
        .poll_interval(Duration::from_millis(50))
        .retry_delays(Duration::from_millis(20), Duration::from_millis(200))
        .start()
        .await
        .unwrap()
}

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Alert>>>);

impl Seen {
    fn hook(&self) -> impl Fn(&Alert) + Send + Sync + 'static {
        let seen = self.0.clone();
        move |a: &Alert| seen.lock().unwrap().push(a.clone())
    }
    fn conflicts(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|a| match &a.kind {
                AlertKind::Conflict { outcome, .. } => Some(outcome.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A child with its own ids and local rows: the source's rows land under the child's keys,
/// an existing row with the same email is adopted, and every order points at its customer.
async fn key_map_translates_foreign_keys(src: Backend, dst: Backend) {
    let Some((s, d)) = setup(src, dst, true).await else {
        return;
    };
    // The child lived its own life: its ids 1..3 are taken, one by a customer the source
    // also has.
    local_customer(&d.db, "local1@child.org", "Local One", Uuid::new_v4()).await;
    local_customer(&d.db, "ada@x.org", "Ada (child copy)", Uuid::new_v4()).await;
    local_customer(&d.db, "local2@child.org", "Local Two", Uuid::new_v4()).await;
    let rep = start(
        &s,
        Destination::new("child", d.db.clone())
            .keys::<customers::Entity>(KeyStrategy::key_map().matching(["email"]))
            .keys::<orders::Entity>(KeyStrategy::key_map()),
    )
    .await;

    let txn = s.db.begin().await.unwrap();
    let bob = customer("bob@x.org", "Bob", 7).insert(&txn).await.unwrap();
    let ada = customer("ada@x.org", "Ada", 7).insert(&txn).await.unwrap();
    let cy = customer("cy@x.org", "Cy", 7).insert(&txn).await.unwrap();
    order(ada.id, 10).insert(&txn).await.unwrap();
    order(bob.id, 20).insert(&txn).await.unwrap();
    let o21 = order(bob.id, 21).insert(&txn).await.unwrap();
    let o30 = order(cy.id, 30).insert(&txn).await.unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    assert_eq!(
        id_of(&d.db, "ada@x.org").await,
        2,
        "Ada is the child's own row 2, not a duplicate"
    );

    let txn = s.db.begin().await.unwrap();
    let mut b: customers::ActiveModel = bob.clone().into();
    b.name = Set("Robert".into());
    b.update(&txn).await.unwrap();
    let mut o: orders::ActiveModel = o21.into();
    o.amount = Set(22);
    o.update(&txn).await.unwrap();
    txn.commit().await.unwrap();
    let txn = s.db.begin().await.unwrap();
    orders::ActiveModel {
        id: Set(o30.id),
        ..Default::default()
    }
    .delete(&txn)
    .await
    .unwrap();
    customers::ActiveModel {
        id: Set(cy.id),
        ..Default::default()
    }
    .delete(&txn)
    .await
    .unwrap();
    let dan = customer("dan@x.org", "Dan", 7).insert(&txn).await.unwrap();
    order(dan.id, 40).insert(&txn).await.unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();

    let mut expected = people(&s.db).await;
    expected.push(("local1@child.org".into(), "Local One".into(), 7, 1));
    expected.push(("local2@child.org".into(), "Local Two".into(), 7, 1));
    expected.sort();
    assert_eq!(
        people(&d.db).await,
        expected,
        "source rows under child keys, local rows kept"
    );
    assert_eq!(orders_by_email(&d.db).await, orders_by_email(&s.db).await);
    assert_ne!(
        id_of(&d.db, "dan@x.org").await,
        dan.id,
        "the child assigned its own key"
    );
    assert_eq!(
        count(&d.db, "ormsync_key_map").await,
        3 + 4,
        "Ada, Bob, Dan and their orders"
    );

    // A mapped row deleted at the child comes back on the source's next change, under a
    // new key, and the map follows.
    sql(
        &d.db,
        &format!(
            "DELETE FROM orders WHERE customer_id = {}",
            id_of(&d.db, "ada@x.org").await
        ),
    )
    .await;
    sql(&d.db, "DELETE FROM customers WHERE email = 'ada@x.org'").await;
    let ada_id = ada.id;
    let txn = s.db.begin().await.unwrap();
    let mut a: customers::ActiveModel = ada.into();
    a.name = Set("Ada L.".into());
    a.update(&txn).await.unwrap();
    order(ada_id, 11).insert(&txn).await.unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    assert!(
        people(&d.db)
            .await
            .contains(&("ada@x.org".into(), "Ada L.".into(), 7, 1))
    );
    assert!(
        orders_by_email(&d.db)
            .await
            .contains(&("ada@x.org".into(), 11, "order of 11".into()))
    );
    assert_eq!(
        conflicts(&d.db).await,
        [("customers".to_string(), "recreated".to_string())]
    );
    rep.shutdown().await;
}

/// Rows matched on their sync key: the destination keeps its own ids, and orders follow.
async fn sync_key_matches_rows(src: Backend, dst: Backend) {
    let Some((s, d)) = setup(src, dst, true).await else {
        return;
    };
    local_customer(&d.db, "local@child.org", "Local", Uuid::new_v4()).await;
    let shared = Uuid::new_v4();
    local_customer(&d.db, "old-ada@x.org", "Ada before", shared).await;
    let rep = start(
        &s,
        Destination::new("child", d.db.clone())
            .keys::<customers::Entity>(KeyStrategy::SyncKey)
            .keys::<orders::Entity>(KeyStrategy::key_map()),
    )
    .await;
    let txn = s.db.begin().await.unwrap();
    let mut ada = customer("ada@x.org", "Ada", 7);
    ada.sync_id = Set(shared);
    let ada = ada.insert(&txn).await.unwrap();
    let bob = customer("bob@x.org", "Bob", 7).insert(&txn).await.unwrap();
    order(ada.id, 1).insert(&txn).await.unwrap();
    let o2 = order(bob.id, 2).insert(&txn).await.unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    assert_eq!(
        id_of(&d.db, "ada@x.org").await,
        2,
        "the row with Ada's sync key was updated in place"
    );

    let txn = s.db.begin().await.unwrap();
    orders::ActiveModel::from(o2).delete(&txn).await.unwrap();
    customers::ActiveModel::from(bob)
        .delete(&txn)
        .await
        .unwrap();
    let mut a: customers::ActiveModel = ada.into();
    a.version = Set(2);
    a.update(&txn).await.unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();

    let mut expected = people(&s.db).await;
    expected.push(("local@child.org".into(), "Local".into(), 7, 1));
    expected.sort();
    assert_eq!(people(&d.db).await, expected);
    assert_eq!(orders_by_email(&d.db).await, orders_by_email(&s.db).await);
    rep.shutdown().await;
}

/// A sync key that matches two rows at the destination stops that change with an error
/// naming the column; nothing is written for it and it stays in the outbox.
async fn ambiguous_sync_key_is_refused(src: Backend, dst: Backend) {
    let Some(s) = TestDb::create(src).await else {
        return;
    };
    let Some(d) = TestDb::create(dst).await else {
        return;
    };
    create(&s.db, true, true).await;
    create(&d.db, true, false).await;
    ormsync::install(&s.db).await.unwrap();
    let twice = Uuid::new_v4();
    local_customer(&d.db, "one@child.org", "One", twice).await;
    local_customer(&d.db, "two@child.org", "Two", twice).await;
    let rep = start(
        &s,
        Destination::new("child", d.db.clone()).keys::<customers::Entity>(KeyStrategy::SyncKey),
    )
    .await;
    let txn = s.db.begin().await.unwrap();
    let mut c = customer("ada@x.org", "Ada", 7);
    c.sync_id = Set(twice);
    c.insert(&txn).await.unwrap();
    txn.commit().await.unwrap();
    let err = rep.sync_now().await.unwrap_err().to_string();
    assert!(
        err.contains("several rows") && err.contains("sync_id"),
        "{err}"
    );
    assert_eq!(rep.status().destinations[0].state, State::Halted);
    assert_eq!(count(&d.db, "customers").await, 2, "nothing written");
    rep.shutdown().await;
}

/// Under DestinationWins a row edited or deleted at the destination keeps the local
/// version, the decision is recorded and alerted; untouched rows follow the source.
async fn destination_wins_keeps_local_edits(src: Backend, dst: Backend) {
    let Some((s, d)) = setup(src, dst, true).await else {
        return;
    };
    let seen = Seen::default();
    let rep = Replicator::builder(s.db.clone())
        .entity::<customers::Entity>()
        .entity::<orders::Entity>()
        .destination(
            Destination::new("child", d.db.clone())
                .conflicts(ConflictPolicy::DestinationWins)
                .alert_on_conflicts(),
        )
        .on_alert(seen.hook())
        .poll_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let txn = s.db.begin().await.unwrap();
    let mut rows = Vec::new();
    for (i, email) in ["a@x.org", "b@x.org", "c@x.org"].into_iter().enumerate() {
        rows.push(
            customer(email, &format!("v{i}"), 7)
                .insert(&txn)
                .await
                .unwrap(),
        );
    }
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();

    sql(
        &d.db,
        &format!(
            "UPDATE customers SET name = 'edited here' WHERE id = {}",
            rows[0].id
        ),
    )
    .await;
    sql(
        &d.db,
        &format!("DELETE FROM customers WHERE id = {}", rows[2].id),
    )
    .await;
    let txn = s.db.begin().await.unwrap();
    for r in &rows {
        let mut a: customers::ActiveModel = r.clone().into();
        a.name = Set("from source".into());
        a.update(&txn).await.unwrap();
    }
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();

    let names: Vec<(String, String)> = all_customers(&d.db)
        .await
        .into_iter()
        .map(|c| (c.email, c.name))
        .collect();
    assert_eq!(
        names,
        [
            ("a@x.org".to_string(), "edited here".to_string()),
            ("b@x.org".to_string(), "from source".to_string()),
        ]
    );
    let expected = [
        ("customers".to_string(), "kept_destination".to_string()),
        ("customers".to_string(), "kept_local_delete".to_string()),
    ];
    assert_eq!(conflicts(&d.db).await, expected);
    assert_eq!(seen.conflicts(), ["kept_destination", "kept_local_delete"]);
    rep.shutdown().await;
}

/// A custom resolver merges both versions; one that panics parks its change without
/// halting the destination, and other tables go on.
async fn custom_resolver_merges_and_its_failure_is_contained(src: Backend, dst: Backend) {
    let Some((s, d)) = setup(src, dst, true).await else {
        return;
    };
    let merge = ConflictPolicy::custom(|c| {
        let name = |r: &Row| match r.get("name") {
            Some(Value::String(Some(n))) => n.clone(),
            _ => String::new(),
        };
        if name(c.row) == "boom" {
            panic!("cannot merge boom");
        }
        Ok(match c.current {
            Some(current) if name(current) != name(c.row) => {
                let mut merged = c.row.clone();
                for (col, v) in &mut merged.0 {
                    if col == "name" {
                        *v = Value::String(Some(format!("{}|{}", name(current), name(c.row))));
                    }
                }
                Resolution::Write(merged)
            }
            _ => Resolution::Apply,
        })
    });
    let rep = start(
        &s,
        Destination::new("child", d.db.clone())
            .conflicts_for::<customers::Entity>(merge)
            .on_permanent_error(OnPermanentError::DeadLetter),
    )
    .await;
    let txn = s.db.begin().await.unwrap();
    let c = customer("a@x.org", "a", 7).insert(&txn).await.unwrap();
    order(c.id, 1).insert(&txn).await.unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    sql(&d.db, "UPDATE customers SET name = 'local'").await;
    let txn = s.db.begin().await.unwrap();
    let mut a: customers::ActiveModel = c.clone().into();
    a.name = Set("b".into());
    let c = a.update(&txn).await.unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    assert_eq!(all_customers(&d.db).await[0].name, "local|b");
    assert_eq!(
        conflicts(&d.db).await,
        [("customers".to_string(), "resolved".to_string())]
    );

    let txn = s.db.begin().await.unwrap();
    let mut a: customers::ActiveModel = c.into();
    a.name = Set("boom".into());
    let c = a.update(&txn).await.unwrap();
    order(c.id, 2).insert(&txn).await.unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    let parked = rep.dead_letters("child").await.unwrap();
    assert_eq!(parked.len(), 1, "the change the resolver failed on is kept");
    assert!(
        parked[0].error.contains("cannot merge boom"),
        "{}",
        parked[0].error
    );
    assert_eq!(
        count(&d.db, "orders").await,
        2,
        "the unrelated table went on"
    );
    assert_eq!(
        all_customers(&d.db).await[0].name,
        "local|b",
        "nothing written for it"
    );
    assert_eq!(rep.status().destinations[0].state, State::Idle);
    rep.shutdown().await;
}

/// Staging gets tenant 7 only, without the secret column, with masked emails; a row moved
/// out of the filter is deleted there, and a delete of a row it never had does not touch
/// a local row that happens to share the key.
async fn filters_and_masking(src: Backend, dst: Backend) {
    let Some((s, d)) = setup(src, dst, false).await else {
        return;
    };
    let rep = start(
        &s,
        Destination::new("staging", d.db.clone())
            .filter::<customers::Entity>(RowFilter::eq("tenant_id", 7i64))
            .drop_column(customers::Column::Secret)
            .transform(customers::Column::Email, Transform::mask_email())
            .skip_table("orders"),
    )
    .await;
    let txn = s.db.begin().await.unwrap();
    let c1 = customer("ada@x.org", "Ada", 7).insert(&txn).await.unwrap();
    let c2 = customer("bob@x.org", "Bob", 8).insert(&txn).await.unwrap();
    let c3 = customer("cy@x.org", "Cy", 7).insert(&txn).await.unwrap();
    let c4 = customer("dee@x.org", "Dee", 8).insert(&txn).await.unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    // Staging's own row under the key of a source row it never received.
    local_customer_at(
        &d.db,
        Some(c4.id),
        "staging-only@x.org",
        "Staging",
        Uuid::new_v4(),
    )
    .await;

    let txn = s.db.begin().await.unwrap();
    let mut moved: customers::ActiveModel = c3.into();
    moved.tenant_id = Set(8);
    moved.update(&txn).await.unwrap();
    let c2_id = c2.id;
    let mut joined: customers::ActiveModel = c2.into();
    joined.tenant_id = Set(7);
    joined.update(&txn).await.unwrap();
    // A delete that names only the key still carries the whole row, so the filter sees it.
    customers::ActiveModel {
        id: Set(c4.id),
        ..Default::default()
    }
    .delete(&txn)
    .await
    .unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();

    let got: Vec<(i64, String, String)> = all_customers_without_secret(&d.db).await;
    assert_eq!(
        got,
        [
            (c1.id, "a***@x.org".to_string(), "Ada".to_string()),
            (c2_id, "b***@x.org".to_string(), "Bob".to_string()),
            (
                c4.id,
                "staging-only@x.org".to_string(),
                "Staging".to_string()
            ),
        ]
    );
    let originals: Vec<String> = all_customers(&s.db)
        .await
        .into_iter()
        .map(|c| c.email)
        .collect();
    assert!(
        got.iter().all(|(_, e, _)| !originals.contains(e)),
        "no original email at staging"
    );
    rep.shutdown().await;
}

/// Staging's table has no `secret` column, so it is read without the entity.
async fn all_customers_without_secret(db: &DatabaseConnection) -> Vec<(i64, String, String)> {
    db.query_all_raw(sea_orm::Statement::from_string(
        db.get_database_backend(),
        "SELECT id, email, name FROM customers ORDER BY id",
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.try_get::<i64>("", "id").unwrap(),
            r.try_get::<String>("", "email").unwrap(),
            r.try_get::<String>("", "name").unwrap(),
        )
    })
    .collect()
}

/// An order whose customer was filtered out never gets a wrong key: it is parked with a
/// message naming the parent, and the rest goes on.
async fn child_of_a_missing_parent_waits(src: Backend, dst: Backend) {
    let Some((s, d)) = setup(src, dst, true).await else {
        return;
    };
    let rep = start(
        &s,
        Destination::new("child", d.db.clone())
            .keys::<customers::Entity>(KeyStrategy::key_map())
            .filter::<customers::Entity>(RowFilter::eq("tenant_id", 7i64))
            .on_permanent_error(OnPermanentError::DeadLetter),
    )
    .await;
    let txn = s.db.begin().await.unwrap();
    let kept = customer("a@x.org", "A", 7).insert(&txn).await.unwrap();
    let hidden = customer("b@x.org", "B", 9).insert(&txn).await.unwrap();
    order(hidden.id, 1).insert(&txn).await.unwrap();
    order(kept.id, 2).insert(&txn).await.unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    let parked = rep.dead_letters("child").await.unwrap();
    assert_eq!(parked.len(), 1);
    assert!(
        parked[0].error.contains("has not arrived"),
        "{}",
        parked[0].error
    );
    assert_eq!(
        orders_by_email(&d.db).await,
        [("a@x.org".to_string(), 2, "order of 2".to_string())]
    );
    rep.shutdown().await;
}

/// Ships only when asked (`sync_now`), so edits made on both sides between two calls are
/// concurrent whatever the timing.
fn on_demand() -> Schedule {
    Schedule::every(Duration::from_secs(3600))
}

/// Two databases, each the other's destination, NewestWins on `version`: no applied
/// change is captured again, and concurrent edits (a tie included) end the same on both.
async fn two_way_converges_without_echo(a_backend: Backend, b_backend: Backend) {
    let Some(a) = TestDb::create(a_backend).await else {
        return;
    };
    let Some(b) = TestDb::create(b_backend).await else {
        return;
    };
    for db in [&a.db, &b.db] {
        create(db, true, true).await;
        ormsync::install(db).await.unwrap();
    }
    let newest = || ConflictPolicy::newest_wins("version");
    let ab = start(
        &a,
        Destination::new("b", b.db.clone())
            .conflicts_for::<customers::Entity>(newest())
            .schedule(on_demand()),
    )
    .await;
    let ba = start(
        &b,
        Destination::new("a", a.db.clone())
            .conflicts_for::<customers::Entity>(newest())
            .schedule(on_demand()),
    )
    .await;

    let txn = a.db.begin().await.unwrap();
    let mut rows = Vec::new();
    for email in ["1@x.org", "2@x.org", "3@x.org"] {
        rows.push(customer(email, "start", 7).insert(&txn).await.unwrap());
    }
    txn.commit().await.unwrap();
    ab.sync_now().await.unwrap();
    ba.sync_now().await.unwrap();
    let outbox = (
        count(&a.db, "ormsync_outbox").await,
        count(&b.db, "ormsync_outbox").await,
    );
    assert_eq!(
        outbox,
        (3, 0),
        "the rows applied at b were not captured there"
    );

    // Both sides edit before either ships: row 1 is newer at b, row 2 a tie, row 3 only at a.
    let edit = |m: &customers::Model, name: &str, version: i64| {
        let mut am: customers::ActiveModel = m.clone().into();
        am.name = Set(name.into());
        am.version = Set(version);
        am
    };
    let txn = a.db.begin().await.unwrap();
    edit(&rows[0], "a1", 2).update(&txn).await.unwrap();
    edit(&rows[1], "a2", 5).update(&txn).await.unwrap();
    edit(&rows[2], "a3", 2).update(&txn).await.unwrap();
    txn.commit().await.unwrap();
    let txn = b.db.begin().await.unwrap();
    edit(&rows[0], "b1", 3).update(&txn).await.unwrap();
    edit(&rows[1], "b2", 5).update(&txn).await.unwrap();
    txn.commit().await.unwrap();
    for _ in 0..2 {
        ab.sync_now().await.unwrap();
        ba.sync_now().await.unwrap();
    }
    assert_eq!(
        people(&a.db).await,
        people(&b.db).await,
        "both sides converged"
    );
    let names: Vec<String> = all_customers(&a.db)
        .await
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names[0], "b1");
    assert!(names[1] == "a2" || names[1] == "b2");
    assert_eq!(names[2], "a3");
    let outbox = (
        count(&a.db, "ormsync_outbox").await,
        count(&b.db, "ormsync_outbox").await,
    );
    assert_eq!(
        outbox,
        (6, 2),
        "only the applications' own writes were captured"
    );
    assert!(
        conflicts(&b.db)
            .await
            .contains(&("customers".into(), "kept_newer_destination".into()))
    );
    ab.shutdown().await;
    ba.shutdown().await;
}

on_every_pair!(
    key_map_translates_foreign_keys,
    sync_key_matches_rows,
    ambiguous_sync_key_is_refused,
    destination_wins_keeps_local_edits,
    custom_resolver_merges_and_its_failure_is_contained,
    filters_and_masking,
    child_of_a_missing_parent_waits,
    two_way_converges_without_echo,
);
