//! Replicating through a schema change, with `Destination::evolve_schema`, on every backend
//! as a destination: a column added at the source while an old and a new version of the
//! application write side by side, and the changes evolving refuses.
//!
//! `ORMSYNC_SEED=<u64>` replays a seed; each test prints the one it drew as
//! `evolution seed = …`.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, TestDb, count, diff_rows, rows_by_spec};
use ormsync::verify::VerifyOptions;
use ormsync::{Destination, Replicated, Replicator, State};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, Set,
    TransactionTrait,
};

/// The entity as the application's first version has it.
mod v1 {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "items")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
        pub qty: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

/// The entity after a migration added two columns: one nullable, one with a default.
mod v2 {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "items")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
        pub qty: i32,
        pub note: Option<String>,
        #[sea_orm(default_value = 0)]
        pub score: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

/// A version whose new column is `NOT NULL` without a default.
mod strict {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "items")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
        pub qty: i32,
        pub note: Option<String>,
        pub rank: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

/// A table the application had before it replicated it.
mod extras {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "extras")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub label: String,
        pub n: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

/// The second version with a new column of a database enum type as well.
mod v3 {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
    #[sea_orm(rs_type = "String", db_type = "Enum", enum_name = "shade")]
    pub enum Shade {
        #[sea_orm(string_value = "dark")]
        Dark,
        #[sea_orm(string_value = "light")]
        Light,
    }

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "items")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
        pub qty: i32,
        pub shade: Option<Shade>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

on_every_pair!(
    a_new_enum_column_is_added_with_its_type,
    a_new_entity_is_backfilled_and_nothing_else_copied_again,
    a_table_no_longer_skipped_is_backfilled,
    a_column_added_mid_stream_reaches_every_destination,
    a_narrower_column_is_refused_and_nothing_altered,
    a_not_null_column_without_default_is_refused_and_nothing_altered,
    a_column_the_destination_lost_is_added_before_the_change_that_carries_it,
);

/// The source table as the first version's migration makes it.
fn v1_table(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => {
            "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL)"
        }
        DbBackend::MySql => {
            "CREATE TABLE items (id BIGINT PRIMARY KEY, name LONGTEXT NOT NULL, qty INT NOT NULL)"
        }
        _ => {
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL)"
        }
    }
}

/// The second version's migration at the source.
fn v2_migration(backend: DbBackend) -> [&'static str; 2] {
    match backend {
        DbBackend::Sqlite => [
            "ALTER TABLE items ADD COLUMN note TEXT NULL",
            "ALTER TABLE items ADD COLUMN score INTEGER NOT NULL DEFAULT 0",
        ],
        _ => [
            "ALTER TABLE items ADD COLUMN note TEXT NULL",
            "ALTER TABLE items ADD COLUMN score BIGINT NOT NULL DEFAULT 0",
        ],
    }
}

async fn run(db: &DatabaseConnection, sql: &str) {
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn builder(source: &TestDb) -> ormsync::ReplicatorBuilder {
    Replicator::builder(source.db.clone())
        .poll_interval(Duration::from_millis(50))
        .retry_delays(Duration::from_millis(10), Duration::from_millis(200))
        .lease_ttl(Duration::from_millis(600))
        .batch_size(40)
}

fn destination(dest: &TestDb) -> Destination {
    Destination::new("dest", dest.db.clone())
        .create_tables()
        .evolve_schema()
}

/// One transaction of a writer that knows the first version's columns: an insert, an
/// update of some of them (as an application sets fields on a model it loaded), or a
/// delete, of a key from a small hot set.
async fn v1_write(db: &DatabaseConnection, rng: &mut StdRng) -> Result<(), sea_orm::DbErr> {
    let id = rng.random_range(1..=25i64);
    let txn = db.begin().await?;
    match v1::Entity::find_by_id(id).one(&txn).await? {
        None => {
            v1::ActiveModel {
                id: Set(id),
                name: Set(format!("v1-{}", rng.random_range(0..1000))),
                qty: Set(rng.random_range(0..100)),
            }
            .insert(&txn)
            .await?;
        }
        Some(m) if rng.random_bool(0.2) => {
            v1::ActiveModel::from(m).delete(&txn).await?;
        }
        Some(m) => {
            let mut a: v1::ActiveModel = m.into();
            a.qty = Set(rng.random_range(0..100));
            if rng.random_bool(0.5) {
                a.name = Set(format!("v1-{}", rng.random_range(0..1000)));
            }
            a.update(&txn).await?;
        }
    }
    txn.commit().await
}

/// One transaction of a writer that knows the new columns too.
async fn v2_write(db: &DatabaseConnection, rng: &mut StdRng) -> Result<(), sea_orm::DbErr> {
    let id = rng.random_range(1..=25i64);
    let note = |rng: &mut StdRng| {
        rng.random_bool(0.8)
            .then(|| format!("n{}", rng.random_range(0..1000)))
    };
    let txn = db.begin().await?;
    match v2::Entity::find_by_id(id).one(&txn).await? {
        None => {
            v2::ActiveModel {
                id: Set(id),
                name: Set(format!("v2-{}", rng.random_range(0..1000))),
                qty: Set(rng.random_range(0..100)),
                note: Set(note(rng)),
                score: Set(rng.random_range(1..1_000_000)),
            }
            .insert(&txn)
            .await?;
        }
        Some(m) if rng.random_bool(0.15) => {
            v2::ActiveModel::from(m).delete(&txn).await?;
        }
        Some(m) => {
            let mut a: v2::ActiveModel = m.into();
            a.score = Set(rng.random_range(1..1_000_000));
            if rng.random_bool(0.5) {
                a.note = Set(note(rng));
            }
            a.update(&txn).await?;
        }
    }
    txn.commit().await
}

/// A write that lost a race with the other writer (SQLite's lock, MariaDB's deadlock
/// detection) is the application's retry, not a replication fault: it is skipped.
fn raced(e: &sea_orm::DbErr) -> bool {
    let m = e.to_string().to_lowercase();
    m.contains("locked")
        || m.contains("deadlock")
        || m.contains("busy")
        // The row the writer loaded was deleted by the other before its update.
        || m.contains("none of the records are updated")
        // Both found the key free and inserted it.
        || m.contains("duplicate")
        // A delete whose row another transaction re-inserted under it: ormsync refuses it,
        // as it says, for the application to retry.
        || m.contains("roll this transaction back and retry")
        || m.contains("could not serialize")
}

/// The destination's rows equal the source's by the second version's columns, and verify
/// finds no drift.
async fn assert_same(s: &TestDb, d: &TestDb, what: &str) {
    let spec = v2::Entity::table_spec();
    let source = rows_by_spec(&s.db, &spec).await;
    let dest = rows_by_spec(&d.db, &spec).await;
    if let Some(diff) = diff_rows(&spec.table, &spec.key, source, dest, &|_| String::new()) {
        panic!("{what}: destination differs:\n{diff}");
    }
    let report = ormsync::verify::verify::<v2::Entity>(&s.db, &d.db, &VerifyOptions::default())
        .await
        .expect("verify");
    assert!(report.is_clean(), "{what}: {report:?}");
}

/// The first version replicates; the source migrates; a writer of the new version starts
/// while the old replicator still ships (it stops on the column it does not know, with
/// the changes kept); the new version's replicator takes over and adds the columns once,
/// while old and new writers interleave; every destination ends equal to the source, and
/// no change of the old writer resets a new column.
async fn a_column_added_mid_stream_reaches_every_destination(src: Backend, dst: Backend) {
    let Some(s) = TestDb::create(src).await else {
        return;
    };
    let Some(d) = TestDb::create(dst).await else {
        return;
    };
    let seed = common::seed();
    let what = format!("{}→{} (evolution seed = {seed})", src.name(), dst.name());
    eprintln!("evolution seed = {seed} ({}→{})", src.name(), dst.name());
    let mut rng = StdRng::seed_from_u64(seed);
    let sb = s.db.get_database_backend();
    run(&s.db, v1_table(sb)).await;
    ormsync::install(&s.db).await.expect("install");

    let old = builder(&s)
        .entity::<v1::Entity>()
        .destination(destination(&d))
        .start()
        .await
        .expect("start the old replicator");
    for _ in 0..40 {
        v1_write(&s.db, &mut rng).await.expect("v1 write");
    }
    old.sync_destination("dest")
        .await
        .expect("old version syncs");
    assert_eq!(count(&d.db, "items").await, count(&s.db, "items").await);

    for sql in v2_migration(sb) {
        run(&s.db, sql).await;
    }
    for _ in 0..10 {
        v2_write(&s.db, &mut rng).await.expect("v2 write");
    }
    let pending = count(&s.db, "ormsync_outbox").await;
    let err = old
        .sync_destination("dest")
        .await
        .expect_err("the old replicator cannot place the new column");
    let msg = err.to_string();
    // The worker may have met it before this call: then the call says it is halted, with
    // the same message.
    assert!(
        msg.contains("table `items`")
            && (msg.contains("`note`") || msg.contains("`score`"))
            && msg.contains("older version"),
        "{what}: {msg}"
    );
    assert_eq!(old.status().destinations[0].state, State::Halted, "{what}");
    assert!(
        count(&s.db, "ormsync_outbox").await >= pending,
        "{what}: the changes stay"
    );
    old.shutdown().await;

    let new = builder(&s)
        .entity::<v2::Entity>()
        .destination(destination(&d))
        .start()
        .await
        .expect("start the new replicator");
    // The old and the new version write side by side while the new replicator ships.
    let (mut r1, mut r2) = (
        StdRng::seed_from_u64(rng.random()),
        StdRng::seed_from_u64(rng.random()),
    );
    let (db1, db2) = (s.db.clone(), s.db.clone());
    let old_writer = tokio::spawn(async move {
        for _ in 0..80 {
            if let Err(e) = v1_write(&db1, &mut r1).await {
                assert!(raced(&e), "v1 write: {e}");
            }
        }
    });
    let new_writer = tokio::spawn(async move {
        for _ in 0..80 {
            if let Err(e) = v2_write(&db2, &mut r2).await {
                assert!(raced(&e), "v2 write: {e}");
            }
        }
    });
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        new.sync_destination("dest")
            .await
            .expect("new version syncs");
    }
    old_writer.await.expect("old writer");
    new_writer.await.expect("new writer");
    new.sync_destination("dest")
        .await
        .expect("new version syncs");
    assert_same(&s, &d, &what).await;
    assert_eq!(
        new.evolve_schema("dest").await.expect("evolve again"),
        Vec::<(String, String)>::new(),
        "{what}: the columns were added once"
    );
    new.shutdown().await;
}

/// A destination table whose column is narrower than the entity's (or, at SQLite, of
/// another kind) stops the destination with the error naming it, nothing is altered, and
/// the changes wait in the outbox.
async fn a_narrower_column_is_refused_and_nothing_altered(src: Backend, dst: Backend) {
    let Some(s) = TestDb::create(src).await else {
        return;
    };
    let Some(d) = TestDb::create(dst).await else {
        return;
    };
    run(&s.db, v1_table(s.db.get_database_backend())).await;
    for sql in v2_migration(s.db.get_database_backend()) {
        run(&s.db, sql).await;
    }
    ormsync::install(&s.db).await.expect("install");
    // `score` is an i64 in the entity; the destination has it narrower, and lacks `note`.
    let (narrow, declared) = match d.db.get_database_backend() {
        DbBackend::Postgres => ("integer", "integer"),
        DbBackend::MySql => ("int", "int"),
        _ => ("text", "text"),
    };
    run(
        &d.db,
        &format!(
            "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL, \
             score {narrow} NOT NULL DEFAULT 0)"
        ),
    )
    .await;
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..10 {
        v2_write(&s.db, &mut rng).await.expect("write");
    }
    let pending = count(&s.db, "ormsync_outbox").await;
    let r = builder(&s)
        .entity::<v2::Entity>()
        .destination(destination(&d).initial_snapshot(false))
        .start()
        .await
        .expect("start");
    // The worker may have met it before this call: then the call says it is halted, with
    // the same message.
    let msg = r
        .sync_destination("dest")
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        msg.contains("table `items`, column `score`")
            && msg.to_lowercase().contains(&format!("it is `{declared}"))
            && msg.contains("nothing was altered"),
        "{msg}"
    );
    assert_eq!(r.status().destinations[0].state, State::Halted);
    assert_eq!(count(&s.db, "ormsync_outbox").await, pending);
    assert_eq!(count(&d.db, "items").await, 0);
    assert!(
        d.db.execute_unprepared("SELECT note FROM items")
            .await
            .is_err(),
        "`note`, which could be added, was not: nothing is altered"
    );
    // On request, the same refusal.
    assert!(matches!(
        r.evolve_schema("dest").await,
        Err(ormsync::Error::SchemaEvolution { ref table, ref column, .. })
            if table == "items" && column == "score"
    ));
    // What `ormsync schema` shows: `note` would be added, `score` would not.
    let recorded = ormsync::outbox::entities::load_recorded(&s.db)
        .await
        .expect("recorded");
    let found = ormsync::apply::differences(&d.db, &recorded)
        .await
        .expect("differences");
    let items = found.iter().find(|t| t.table == "items").expect("items");
    let shown: Vec<String> = items.columns.iter().map(|c| c.to_string()).collect();
    // (MariaDB's `name TEXT` is shorter than the entity's `LONGTEXT`, and listed too.)
    assert!(
        items.columns.iter().any(|c| c.column == "note"
            && c.difference == ormsync::apply::Difference::Missing
            && c.evolves),
        "{shown:?}"
    );
    assert!(
        items.columns.iter().any(|c| c.column == "score"
            && matches!(c.difference, ormsync::apply::Difference::Type { .. })
            && !c.evolves
            && c.note
                .as_deref()
                .is_some_and(|n| n.contains("alter the column"))),
        "{shown:?}"
    );
    r.shutdown().await;
}

/// A new column that is `NOT NULL` without a default cannot be given to the rows a
/// destination table has: refused by name, nothing altered, the changes kept.
async fn a_not_null_column_without_default_is_refused_and_nothing_altered(
    src: Backend,
    dst: Backend,
) {
    let Some(s) = TestDb::create(src).await else {
        return;
    };
    let Some(d) = TestDb::create(dst).await else {
        return;
    };
    let sb = s.db.get_database_backend();
    run(&s.db, v1_table(sb)).await;
    run(&s.db, "ALTER TABLE items ADD COLUMN note TEXT NULL").await;
    run(
        &s.db,
        "ALTER TABLE items ADD COLUMN rank INTEGER NOT NULL DEFAULT 0",
    )
    .await;
    ormsync::install(&s.db).await.expect("install");
    run(&d.db, v1_table(d.db.get_database_backend())).await;
    let txn = s.db.begin().await.unwrap();
    for id in 1..=5 {
        strict::ActiveModel {
            id: Set(id),
            name: Set(format!("n{id}")),
            qty: Set(1),
            note: Set(Some("x".into())),
            rank: Set(id as i32),
        }
        .insert(&txn)
        .await
        .unwrap();
    }
    txn.commit().await.unwrap();
    let r = builder(&s)
        .entity::<strict::Entity>()
        .destination(destination(&d).initial_snapshot(false))
        .start()
        .await
        .expect("start");
    let msg = r
        .sync_destination("dest")
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        msg.contains("table `items`, column `rank`")
            && msg.contains("NOT NULL without a default")
            && msg.contains("default_value"),
        "{msg}"
    );
    assert_eq!(r.status().destinations[0].state, State::Halted);
    assert!(matches!(
        r.evolve_schema("dest").await,
        Err(ormsync::Error::SchemaEvolution { ref column, .. }) if column == "rank"
    ));
    assert_eq!(count(&s.db, "ormsync_outbox").await, 5);
    assert!(
        d.db.execute_unprepared("SELECT note FROM items")
            .await
            .is_err(),
        "nothing is altered"
    );
    r.shutdown().await;
}

/// A destination table that lost a column after the worker prepared it (restored from an
/// older backup, say) gets it back before the first change that carries it.
async fn a_column_the_destination_lost_is_added_before_the_change_that_carries_it(
    src: Backend,
    dst: Backend,
) {
    let Some(s) = TestDb::create(src).await else {
        return;
    };
    let Some(d) = TestDb::create(dst).await else {
        return;
    };
    let sb = s.db.get_database_backend();
    run(&s.db, v1_table(sb)).await;
    for sql in v2_migration(sb) {
        run(&s.db, sql).await;
    }
    ormsync::install(&s.db).await.expect("install");
    let r = builder(&s)
        .entity::<v2::Entity>()
        .destination(destination(&d))
        .start()
        .await
        .expect("start");
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..10 {
        v2_write(&s.db, &mut rng).await.expect("write");
    }
    r.sync_destination("dest").await.expect("sync");
    run(&d.db, "ALTER TABLE items DROP COLUMN note").await;
    for _ in 0..30 {
        v2_write(&s.db, &mut rng).await.expect("write");
    }
    // The column's rows that did not change since are NULL where it came back: repaired by
    // a resync of the table, as after any restore.
    r.sync_destination("dest")
        .await
        .expect("sync after the loss");
    r.resync("dest", &["items"]).await.expect("resync");
    assert_same(&s, &d, &format!("{}→{}", src.name(), dst.name())).await;
    r.shutdown().await;
}

/// Rows of `extras` the application wrote before it replicated the table: not captured.
async fn uncaptured_extras(db: &DatabaseConnection, ids: std::ops::Range<i64>) {
    let ids: Vec<i64> = ids.collect();
    for chunk in ids.chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|id| format!("({id}, 'before {id}', {})", id * 3))
            .collect();
        run(
            db,
            &format!(
                "INSERT INTO extras (id, label, n) VALUES {}",
                values.join(", ")
            ),
        )
        .await;
    }
}

const EXTRAS_TABLE: &str =
    "CREATE TABLE extras (id BIGINT PRIMARY KEY, label TEXT NOT NULL, n BIGINT NOT NULL)";

/// Captured writes to `extras`: updates of rows the backfill copies, inserts and deletes.
async fn write_extras(db: &DatabaseConnection, rng: &mut StdRng, n: usize) {
    for _ in 0..n {
        if let Err(e) = write_extra(db, rng).await {
            assert!(raced(&e), "extras write: {e}");
        }
    }
}

async fn write_extra(db: &DatabaseConnection, rng: &mut StdRng) -> Result<(), sea_orm::DbErr> {
    let id = rng.random_range(1..=10_100i64);
    let txn = db.begin().await?;
    match extras::Entity::find_by_id(id).one(&txn).await? {
        None => {
            extras::ActiveModel {
                id: Set(id),
                label: Set(format!("new {id}")),
                n: Set(rng.random_range(0..1000)),
            }
            .insert(&txn)
            .await?;
        }
        Some(m) if rng.random_bool(0.2) => {
            extras::ActiveModel::from(m).delete(&txn).await?;
        }
        Some(m) => {
            let mut a: extras::ActiveModel = m.into();
            a.n = Set(rng.random_range(0..1000));
            a.update(&txn).await?;
        }
    }
    txn.commit().await
}

/// Both sides' rows of `E` are the same, by its shipped columns.
async fn assert_same_table<E: Replicated>(s: &TestDb, d: &TestDb, what: &str)
where
    E::Model: Sync,
{
    let spec = E::table_spec();
    let source = rows_by_spec(&s.db, &spec).await;
    let dest = rows_by_spec(&d.db, &spec).await;
    if let Some(diff) = diff_rows(&spec.table, &spec.key, source, dest, &|_| String::new()) {
        panic!("{what}: destination differs:\n{diff}");
    }
}

/// An entity registered on a restart, whose table holds 10,000 rows written before it was
/// replicated, gets them copied while changes to it and to the table that streamed all
/// along go on; the table that streamed is not copied again.
async fn a_new_entity_is_backfilled_and_nothing_else_copied_again(src: Backend, dst: Backend) {
    let Some(s) = TestDb::create(src).await else {
        return;
    };
    let Some(d) = TestDb::create(dst).await else {
        return;
    };
    let seed = common::seed();
    let what = format!("{}→{} (evolution seed = {seed})", src.name(), dst.name());
    eprintln!("evolution seed = {seed} ({}→{})", src.name(), dst.name());
    let mut rng = StdRng::seed_from_u64(seed);
    let sb = s.db.get_database_backend();
    run(&s.db, v1_table(sb)).await;
    run(&s.db, EXTRAS_TABLE).await;
    ormsync::install(&s.db).await.expect("install");
    uncaptured_extras(&s.db, 1..10_001).await;

    let first = builder(&s)
        .entity::<v1::Entity>()
        .destination(destination(&d))
        .start()
        .await
        .expect("start");
    for _ in 0..30 {
        v1_write(&s.db, &mut rng).await.expect("write");
    }
    // A row no writer touches again, marked at the destination only: a copy of `items`
    // would overwrite the mark.
    let txn = s.db.begin().await.expect("begin");
    v1::ActiveModel {
        id: Set(1000),
        name: Set("left alone".into()),
        qty: Set(5),
    }
    .insert(&txn)
    .await
    .expect("insert");
    txn.commit().await.expect("commit");
    first.sync_destination("dest").await.expect("sync");
    first.shutdown().await;
    run(&d.db, "UPDATE items SET qty = -1 WHERE id = 1000").await;

    let second = builder(&s)
        .entity::<v1::Entity>()
        .entity::<extras::Entity>()
        .destination(destination(&d))
        .start()
        .await
        .expect("restart with the new entity");
    let (db, mut r) = (s.db.clone(), StdRng::seed_from_u64(rng.random()));
    let writer = tokio::spawn(async move { write_extras(&db, &mut r, 150).await });
    for _ in 0..20 {
        if let Err(e) = v1_write(&s.db, &mut rng).await {
            assert!(raced(&e), "{what}: {e}");
        }
    }
    writer.await.expect("writer");
    second.sync_destination("dest").await.expect("sync");
    assert_same_table::<extras::Entity>(&s, &d, &what).await;
    let status = second.status().destinations.remove(0);
    let copy = status.snapshot.expect("the backfill shows in status");
    assert_eq!(
        copy.tables_total, 1,
        "{what}: only the new table is copied: {copy:?}"
    );
    // 10,000 rows, less the few the writer deleted before the copy reached them.
    assert!(copy.rows_copied >= 9_800, "{what}: {copy:?}");
    let kept = v1::Entity::find_by_id(1000).one(&d.db).await.expect("read");
    assert_eq!(
        kept.map(|m| m.qty),
        Some(-1),
        "{what}: `items` was not copied again"
    );
    second.shutdown().await;
}

/// A table a destination skipped, then no longer does, gets its rows copied: the changes
/// it skipped never reached it.
async fn a_table_no_longer_skipped_is_backfilled(src: Backend, dst: Backend) {
    let Some(s) = TestDb::create(src).await else {
        return;
    };
    let Some(d) = TestDb::create(dst).await else {
        return;
    };
    let sb = s.db.get_database_backend();
    run(&s.db, v1_table(sb)).await;
    run(&s.db, EXTRAS_TABLE).await;
    ormsync::install(&s.db).await.expect("install");
    uncaptured_extras(&s.db, 1..2_001).await;
    let mut rng = StdRng::seed_from_u64(23);
    let first = builder(&s)
        .entity::<v1::Entity>()
        .entity::<extras::Entity>()
        .destination(destination(&d).skip_table("extras"))
        .start()
        .await
        .expect("start");
    write_extras(&s.db, &mut rng, 50).await;
    for _ in 0..20 {
        v1_write(&s.db, &mut rng).await.expect("write");
    }
    first.sync_destination("dest").await.expect("sync");
    first.shutdown().await;
    let second = builder(&s)
        .entity::<v1::Entity>()
        .entity::<extras::Entity>()
        .destination(destination(&d))
        .start()
        .await
        .expect("restart without the skip");
    write_extras(&s.db, &mut rng, 50).await;
    second.sync_destination("dest").await.expect("sync");
    let what = format!("{}→{}", src.name(), dst.name());
    assert_same_table::<extras::Entity>(&s, &d, &what).await;
    assert_same_table::<v1::Entity>(&s, &d, &what).await;
    second.shutdown().await;
}

/// A new column of a database enum type is added with its type (PostgreSQL's created
/// first), and its values land.
async fn a_new_enum_column_is_added_with_its_type(src: Backend, dst: Backend) {
    let Some(s) = TestDb::create(src).await else {
        return;
    };
    let Some(d) = TestDb::create(dst).await else {
        return;
    };
    let sb = s.db.get_database_backend();
    run(&s.db, v1_table(sb)).await;
    ormsync::install(&s.db).await.expect("install");
    let first = builder(&s)
        .entity::<v1::Entity>()
        .destination(destination(&d))
        .start()
        .await
        .expect("start");
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..10 {
        v1_write(&s.db, &mut rng).await.expect("write");
    }
    first.sync_destination("dest").await.expect("sync");
    first.shutdown().await;
    match sb {
        DbBackend::Postgres => {
            run(&s.db, "CREATE TYPE shade AS ENUM ('dark', 'light')").await;
            run(&s.db, "ALTER TABLE items ADD COLUMN shade shade NULL").await;
        }
        DbBackend::MySql => {
            run(
                &s.db,
                "ALTER TABLE items ADD COLUMN shade ENUM('dark', 'light') NULL",
            )
            .await;
        }
        _ => run(&s.db, "ALTER TABLE items ADD COLUMN shade TEXT NULL").await,
    }
    let second = builder(&s)
        .entity::<v3::Entity>()
        .destination(destination(&d))
        .start()
        .await
        .expect("restart");
    let txn = s.db.begin().await.expect("begin");
    for (id, shade) in [
        (101, Some(v3::Shade::Dark)),
        (102, Some(v3::Shade::Light)),
        (103, None),
    ] {
        v3::ActiveModel {
            id: Set(id),
            name: Set(format!("shaded {id}")),
            qty: Set(1),
            shade: Set(shade),
        }
        .insert(&txn)
        .await
        .expect("insert");
    }
    txn.commit().await.expect("commit");
    second.sync_destination("dest").await.expect("sync");
    assert_same_table::<v3::Entity>(&s, &d, &format!("{}→{}", src.name(), dst.name())).await;
    second.shutdown().await;
}
