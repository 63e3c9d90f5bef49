//! The payload keeps every type across engines; the schema installs idempotently, by hand
//! or as a migration; writes outside a transaction are refused unless asked for by name.

mod common;

use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use common::entities::{accounts, everything, everything_rows};
use common::{Backend, TestDb, count};
use ormsync::change::Row;
use ormsync::value::Value;
use ormsync::{Destination, Replicated, Replicator};
use sea_orm::prelude::Decimal;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryOrder, Set,
    TransactionTrait,
};
use sea_orm_migration::prelude::*;

/// The shared sample rows, with the third timestamp past 2038-01-19T03:14:07Z: MariaDB
/// is only a destination (and then read) here, and ormsync binds zoned timestamps there as
/// UTC wall time, which `DATETIME(6)` takes over its whole range.
fn originals() -> Vec<everything::Model> {
    let mut rows = everything_rows();
    rows[2].ts = chrono::DateTime::<Utc>::from_str("2038-01-19T03:14:08Z").unwrap();
    rows
}

async fn all(db: &DatabaseConnection) -> Vec<everything::Model> {
    everything::Entity::find()
        .order_by_asc(everything::Column::Id)
        .all(db)
        .await
        .unwrap()
}

/// Ships `from`'s outbox to `to` and returns what `to` holds.
async fn hop(from: &TestDb, to: &TestDb) -> Vec<everything::Model> {
    let rep = Replicator::builder(from.db.clone())
        .entity::<everything::Entity>()
        .destination(Destination::new(to.backend.name(), to.db.clone()))
        .poll_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    rep.sync_now().await.unwrap();
    rep.shutdown().await;
    all(&to.db).await
}

/// Reads `everything` without its Rust type, as the command line and snapshots do, and
/// checks it against the typed read.
async fn assert_untyped_read_matches(db: &DatabaseConnection) {
    let spec = everything::Entity::table_spec();
    let mut q = sea_orm::sea_query::Query::select();
    q.columns(spec.columns.iter().map(|c| Alias::new(c.as_str())))
        .from(Alias::new(spec.table.as_str()))
        .order_by(Alias::new("id"), Order::Asc);
    let untyped: Vec<Row> = db
        .query_all(&q)
        .await
        .unwrap()
        .iter()
        .map(|res| {
            Row(spec
                .columns
                .iter()
                .zip(&spec.types)
                .map(|(c, tag)| (c.clone(), Value::read(res, c, tag).unwrap()))
                .collect())
        })
        .collect();
    let typed: Vec<Row> = all(db)
        .await
        .iter()
        .map(|m| everything::Entity::to_row(m).unwrap())
        .collect();
    assert_eq!(untyped, typed, "{:?}", db.get_database_backend());
}

/// Makes `db`'s rows the changes of its own outbox, so it can feed the next hop.
async fn recapture(db: &TestDb) {
    ormsync::install(&db.db).await.unwrap();
    let rows = all(&db.db).await;
    let txn = db.db.begin().await.unwrap();
    for m in rows {
        ormsync::capture::save::<everything::Entity, _>(&txn, &m, true)
            .await
            .unwrap();
    }
    txn.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_survives_postgres_mariadb_sqlite_postgres() {
    let Some(pg) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let Some(maria) = TestDb::create(Backend::MySql).await else {
        return;
    };
    let Some(lite) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let Some(pg2) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    for db in [&pg, &maria, &lite, &pg2] {
        db.create_tables().await;
    }
    ormsync::install(&pg.db).await.unwrap();
    let txn = pg.db.begin().await.unwrap();
    for m in originals() {
        everything::ActiveModel::from(m).insert(&txn).await.unwrap();
    }
    txn.commit().await.unwrap();
    assert_eq!(
        all(&pg.db).await,
        originals(),
        "PostgreSQL stores the originals as they are"
    );

    assert_eq!(hop(&pg, &maria).await, originals(), "PostgreSQL → MariaDB");
    recapture(&maria).await;
    assert_eq!(hop(&maria, &lite).await, originals(), "MariaDB → SQLite");
    recapture(&lite).await;
    assert_eq!(hop(&lite, &pg2).await, originals(), "SQLite → PostgreSQL");
    for db in [&pg, &maria, &lite] {
        assert_untyped_read_matches(&db.db).await;
    }
}

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(ormsync::migration::Migration)]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_install_idempotently_by_hand_and_as_a_migration() {
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        let Some(db) = TestDb::create(backend).await else {
            continue;
        };
        // As a migration, then by hand over it, then again: nothing fails, nothing doubles.
        Migrator::up(&db.db, None).await.unwrap();
        ormsync::install(&db.db).await.unwrap();
        ormsync::install(&db.db).await.unwrap();
        for table in [
            "ormsync_outbox",
            "ormsync_checkpoint",
            "ormsync_leases",
            "ormsync_dead_letters",
            "ormsync_progress",
            "ormsync_key_map",
            "ormsync_conflicts",
            "ormsync_node",
        ] {
            assert_eq!(
                count(&db.db, table).await,
                0,
                "{backend:?}: {table} exists and is empty"
            );
        }
        let first = ormsync::outbox::node_id(&db.db).await.unwrap();
        assert_eq!(
            ormsync::outbox::node_id(&db.db).await.unwrap(),
            first,
            "the node id is stable"
        );
        Migrator::down(&db.db, None).await.unwrap();
        assert!(
            sea_orm::ConnectionTrait::execute_unprepared(
                &db.db,
                "SELECT COUNT(*) FROM ormsync_outbox"
            )
            .await
            .is_err(),
            "{backend:?}: down drops the tables"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_writes_are_refused_unless_asked_for_by_name() {
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        let Some(db) = TestDb::create(backend).await else {
            continue;
        };
        db.create_tables().await;
        ormsync::install(&db.db).await.unwrap();
        let model = || accounts::ActiveModel {
            id: Set(1),
            name: Set("pooled".into()),
            balance: Set(Decimal::ONE),
            updated_at: Set(Utc::now()),
            note: Set(None),
            local_flag: Set(None),
        };
        let err = model().insert(&db.db).await.unwrap_err().to_string();
        assert!(
            err.contains("transaction") && err.contains("allow_non_atomic_writes"),
            "{err}"
        );
        assert_eq!(
            count(&db.db, "accounts").await,
            0,
            "{backend:?}: the refused write never happened"
        );
        assert_eq!(count(&db.db, "ormsync_outbox").await, 0);

        ormsync::capture::allow_non_atomic_writes();
        let inserted = model().insert(&db.db).await;
        ormsync::capture::refuse_non_atomic_writes();
        let inserted = inserted.unwrap();
        assert_eq!(count(&db.db, "accounts").await, 1);
        assert_eq!(
            count(&db.db, "ormsync_outbox").await,
            1,
            "{backend:?}: captured, non-atomically"
        );
        let err = sea_orm::ModelTrait::delete(inserted, &db.db)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("pooled connection"), "{err}");
        assert_eq!(
            count(&db.db, "accounts").await,
            1,
            "{backend:?}: the refused delete never happened"
        );
        let spec = accounts::Entity::table_spec();
        assert!(!spec.columns.contains(&"local_flag".to_string()));
    }
}

/// An entity with a PostgreSQL `inet` column, which MariaDB has no type for.
mod tagged {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "tagged")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
        #[sea_orm(column_type = "Inet", nullable)]
        #[replicated(skip)]
        pub addr: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

/// A panic in code ormsync calls (here sea-query, asked for a MariaDB `CREATE TABLE` with
/// a PostgreSQL `inet` column) halts that destination with the panic's message; the other
/// destination and the replicator go on, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_halts_its_destination_not_the_replicator() {
    let (Some(s), Some(maria), Some(pg)) = (
        TestDb::create(Backend::Postgres).await,
        TestDb::create(Backend::MySql).await,
        TestDb::create(Backend::Postgres).await,
    ) else {
        return;
    };
    s.db.execute_unprepared(
        "CREATE TABLE tagged (id BIGINT PRIMARY KEY, name TEXT NOT NULL, addr INET)",
    )
    .await
    .unwrap();
    ormsync::install(&s.db).await.unwrap();
    let rep = Replicator::builder(s.db.clone())
        .entity::<tagged::Entity>()
        .poll_interval(Duration::from_millis(50))
        .destination(Destination::new("maria", maria.db.clone()).create_tables())
        .destination(Destination::new("pg", pg.db.clone()).create_tables())
        .start()
        .await
        .unwrap();
    let txn = s.db.begin().await.unwrap();
    tagged::ActiveModel {
        id: Set(1),
        name: Set("one".into()),
        ..Default::default()
    }
    .insert(&txn)
    .await
    .unwrap();
    txn.commit().await.unwrap();

    // The pass that panics answers the sync itself, or the sync meets the halt it left.
    let err = rep.sync_destination("maria").await.unwrap_err();
    assert!(
        matches!(
            err,
            ormsync::Error::Halted { .. } | ormsync::Error::Panicked { .. }
        ) && err.to_string().contains("panicked"),
        "{err}"
    );
    let maria_state = |rep: &Replicator| {
        rep.status()
            .destinations
            .into_iter()
            .find(|d| d.name == "maria")
            .map(|d| d.state)
    };
    assert_eq!(maria_state(&rep), Some(ormsync::State::Halted));
    rep.sync_destination("pg")
        .await
        .expect("the other destination ships");
    assert_eq!(count(&pg.db, "tagged").await, 1);
    assert_eq!(
        count(&s.db, "ormsync_outbox").await,
        1,
        "the change stays in the outbox"
    );
    // The worker is still there to answer.
    assert!(matches!(
        rep.sync_destination("maria").await,
        Err(ormsync::Error::Halted { .. })
    ));
    rep.shutdown().await;
}
