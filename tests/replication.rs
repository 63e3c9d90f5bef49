//! Core replication on every backend pair: each operation, batches that touch one row
//! many times, concurrent writers with rollbacks, late commits, crashes mid-batch, and
//! destinations that cannot take a change. Every test ends by comparing both sides row
//! for row.

#[macro_use]
mod common;

use std::str::FromStr;
use std::time::Duration;

use common::entities::{account, accounts, line, line_items};
use common::{Backend, TestDb, assert_all_same, count, max_outbox_id, pair};
use std::sync::{Arc, Mutex};

use ormsync::{AlertKind, Destination, Replicator, State};
use rand::{Rng, SeedableRng};
use sea_orm::prelude::Decimal;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    ExecResult, IsolationLevel, ModelTrait, QueryResult, Set, Statement, TransactionTrait,
};

on_every_pair!(
    each_operation_alone,
    update_then_delete_in_one_batch,
    insert_delete_insert_of_one_key,
    many_changes_to_one_row,
    concurrent_writers_with_rollbacks,
    killed_mid_batch_and_restarted,
    late_commit_is_never_skipped,
    missing_column_or_table_holds_the_change,
    source_restored_from_an_earlier_backup,
    source_restored_under_a_running_replicator,
);

// A batch bigger than MariaDB takes in one packet, from each kind of source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_rows_fit_the_packet_limit_from_postgres() {
    wide_rows_fit_the_packet_limit(Backend::Postgres, Backend::MySql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_rows_fit_the_packet_limit_from_sqlite() {
    wide_rows_fit_the_packet_limit(Backend::Sqlite, Backend::MySql).await
}

// An update whose values another transaction committed after this one's snapshot: MySQL's
// read-back of the row is the snapshot's (REPEATABLE READ). SQLite cannot run the two
// transactions this way (the later one's write is refused), and PostgreSQL returns the row
// from the UPDATE itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_values_as_a_commit_since_the_snapshot_from_mariadb() {
    same_values_as_a_commit_since_the_snapshot(Backend::MySql, Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_values_as_a_commit_since_the_snapshot_from_postgres() {
    same_values_as_a_commit_since_the_snapshot(Backend::Postgres, Backend::MySql).await
}

// An update that sets no column, while another transaction's change of that row waits to
// commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_update_behind_a_pending_change_from_mariadb() {
    unchanged_update_behind_a_pending_change(Backend::MySql, Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_update_behind_a_pending_change_from_postgres() {
    unchanged_update_behind_a_pending_change(Backend::Postgres, Backend::Sqlite).await
}

// A delete through a model read before another transaction moved the row into a
// destination's filter: the delete is judged by the row as it is, so it reaches that
// destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_of_a_stale_model_from_mariadb() {
    delete_of_a_stale_model(Backend::MySql, Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_of_a_stale_model_from_postgres() {
    delete_of_a_stale_model(Backend::Postgres, Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_of_a_stale_model_from_sqlite() {
    delete_of_a_stale_model(Backend::Sqlite, Backend::MySql).await
}

// A delete of a row another transaction already deleted removes nothing, and must ship
// nothing: here a third transaction is inserting the key again, unseen by the delete (not
// yet committed), and takes a lower outbox id than the delete would. Shipped, the delete
// would land after that insert and remove a row the source has.
// (`writers_with_rollbacks::postgres_to_mariadb` in tests/delivery.rs lost a row this way.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_of_a_row_already_gone_from_postgres() {
    let Some((s, d)) = pair(Backend::Postgres, Backend::MySql).await else {
        return;
    };
    let rep = start(&s, &d).await;
    let stale = two_accounts_and_a_copy_of_the_first(&s.db).await;

    let txn = s.db.begin().await.unwrap();
    stale.clone().delete(&txn).await.unwrap();
    txn.commit().await.unwrap();
    let again = s.db.begin().await.unwrap();
    account(1, "Grace", "7").insert(&again).await.unwrap();
    let txn = s.db.begin().await.unwrap();
    let deleted = stale.delete(&txn).await.unwrap();
    txn.commit().await.unwrap();
    again.commit().await.unwrap();
    assert_eq!(deleted.rows_affected, 0, "the delete found no row");

    rep.sync_now().await.unwrap();
    assert_eq!(count(&s.db, "accounts").await, 2);
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

// A delete racing another transaction that deletes the key and inserts it again: the
// delete waits for that transaction's lock, which releases a row that no longer exists, and
// acts on the new row. Whatever each transaction does, replaying the captured changes in
// outbox order must give the source's final state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_racing_a_delete_and_reinsert_from_postgres() {
    racing_a_delete_and_reinsert(Backend::Postgres, Backend::MySql, Racer::Delete, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_racing_a_delete_and_reinsert_from_mariadb() {
    racing_a_delete_and_reinsert(Backend::MySql, Backend::Postgres, Racer::Delete, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_racing_a_delete_and_reinsert_from_mariadb_read_committed() {
    let rc = Some(IsolationLevel::ReadCommitted);
    racing_a_delete_and_reinsert(Backend::MySql, Backend::Sqlite, Racer::Delete, rc).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_racing_a_delete_and_reinsert_from_sqlite() {
    racing_a_delete_and_reinsert(Backend::Sqlite, Backend::Postgres, Racer::Delete, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_update_racing_a_delete_and_reinsert_from_postgres() {
    let racer = Racer::UnchangedUpdate;
    racing_a_delete_and_reinsert(Backend::Postgres, Backend::Sqlite, racer, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_update_racing_a_delete_and_reinsert_from_mariadb() {
    let racer = Racer::UnchangedUpdate;
    racing_a_delete_and_reinsert(Backend::MySql, Backend::Postgres, racer, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_update_racing_a_delete_and_reinsert_from_sqlite() {
    let racer = Racer::UnchangedUpdate;
    racing_a_delete_and_reinsert(Backend::Sqlite, Backend::MySql, racer, None).await
}

#[derive(Clone, Copy, Debug)]
enum Racer {
    Delete,
    /// An update that sets no column.
    UnchangedUpdate,
}

async fn racing_a_delete_and_reinsert(
    src: Backend,
    dst: Backend,
    racer: Racer,
    isolation: Option<IsolationLevel>,
) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = start(&s, &d).await;
    let read_earlier = two_accounts_and_a_copy_of_the_first(&s.db).await;

    // SQLite writers need connections of their own; one pool connection each elsewhere.
    let other = sea_orm::Database::connect(&s.url).await.unwrap();
    let recreate = other.begin().await.unwrap();
    read_earlier.clone().delete(&recreate).await.unwrap();
    account(1, "Grace", "9").insert(&recreate).await.unwrap();

    let db = s.db.clone();
    let racing = tokio::spawn(async move {
        let txn = db.begin_with_config(isolation, None).await?;
        match racer {
            Racer::Delete => {
                read_earlier.delete(&txn).await?;
            }
            Racer::UnchangedUpdate => {
                use sea_orm::IntoActiveModel;
                read_earlier.into_active_model().update(&txn).await?;
            }
        }
        txn.commit().await
    });
    // The racer now waits for `recreate`'s lock; it commits while the racer waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    recreate.commit().await.unwrap();
    racing
        .await
        .unwrap()
        .expect("the racer acts on the re-inserted row");

    let expected = match racer {
        Racer::Delete => 1,
        Racer::UnchangedUpdate => 2,
    };
    assert_eq!(count(&s.db, "accounts").await, expected);
    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

// The one window a locked read cannot close: a delete's read finds no row, and another
// transaction commits that key before the `DELETE` runs, which removes it. PostgreSQL (and
// MySQL under READ COMMITTED) cannot lock a missing key, so the capture sees it happen and
// fails the transaction: no row leaves the source without its delete reaching the
// destinations. The connection below commits that insert at exactly that moment, which
// no real interleaving can be made to do on demand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinsert_committed_between_a_deletes_read_and_its_delete_from_postgres() {
    reinsert_between_read_and_delete(Backend::Postgres, Backend::MySql, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinsert_committed_between_a_deletes_read_and_its_delete_from_mariadb() {
    let rc = Some(IsolationLevel::ReadCommitted);
    reinsert_between_read_and_delete(Backend::MySql, Backend::Postgres, rc).await
}

async fn reinsert_between_read_and_delete(
    src: Backend,
    dst: Backend,
    isolation: Option<IsolationLevel>,
) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = start(&s, &d).await;
    let stale = two_accounts_and_a_copy_of_the_first(&s.db).await;
    let txn = s.db.begin().await.unwrap();
    stale.clone().delete(&txn).await.unwrap();
    txn.commit().await.unwrap();

    let txn = s.db.begin_with_config(isolation, None).await.unwrap();
    let interposed = InsertBeforeDelete {
        txn: &txn,
        other: s.db.clone(),
    };
    let refused = stale.delete(&interposed).await.expect_err(
        "a delete whose DELETE removed a row its read did not see fails its transaction",
    );
    assert!(
        refused
            .to_string()
            .contains("roll this transaction back and retry"),
        "{refused}"
    );
    if src == Backend::Postgres {
        // Even an application that commits anyway: PostgreSQL has aborted the transaction,
        // and its COMMIT rolls back.
        let _ = txn.commit().await;
    } else {
        // MySQL cannot abort it: the application rolls back, as the error says.
        txn.rollback().await.unwrap();
    }
    assert_eq!(count(&s.db, "accounts").await, 2, "the insert stands");

    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

/// A transaction through which another connection inserts and commits account 1 right
/// before a `DELETE` of `accounts` runs.
struct InsertBeforeDelete<'a> {
    txn: &'a sea_orm::DatabaseTransaction,
    other: DatabaseConnection,
}

#[async_trait::async_trait]
impl ConnectionTrait for InsertBeforeDelete<'_> {
    fn get_database_backend(&self) -> DbBackend {
        self.txn.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        if stmt.sql.starts_with("DELETE") && stmt.sql.contains("accounts") {
            let insert = self.other.begin().await?;
            account(1, "Grace", "3").insert(&insert).await?;
            insert.commit().await?;
        }
        self.txn.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.txn.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.txn.query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.txn.query_all_raw(stmt).await
    }
}

// Many late commits at once, with batches smaller than them: a read cut by its batch size
// says nothing of the ids above its last one, so a gap there must not be taken for a hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_commits_beyond_one_batch_from_postgres() {
    late_commits_beyond_one_batch(Backend::Postgres, Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_commits_beyond_one_batch_from_mariadb() {
    late_commits_beyond_one_batch(Backend::MySql, Backend::Sqlite).await
}

async fn late_commits_beyond_one_batch(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = replicator_to(&s, vec![Destination::new("dest", d.db.clone())], 2).await;
    rep.sync_now().await.unwrap();
    // Open transactions each holding an outbox id, between committed ones.
    let mut open = Vec::new();
    for i in 0..5 {
        let held = s.db.begin().await.unwrap();
        account(100 + i, "held", "1").insert(&held).await.unwrap();
        open.push(held);
        let txn = s.db.begin().await.unwrap();
        account(200 + i, "committed", "1")
            .insert(&txn)
            .await
            .unwrap();
        txn.commit().await.unwrap();
    }
    rep.sync_now().await.unwrap();
    for held in open {
        held.commit().await.unwrap();
    }
    rep.drain("dest").await.unwrap();
    assert_eq!(count(&s.db, "accounts").await, 10);
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

// An update that sets no column, of a row another transaction deleted after this one's
// snapshot saw it: on MariaDB (REPEATABLE READ) sea-orm's read-back answers from that
// snapshot and would return the row, captured as an update that brings it back at every
// destination. The locked read finds no row: the update fails, nothing is captured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_update_of_a_row_deleted_since_the_snapshot_from_mariadb() {
    unchanged_update_of_a_row_deleted_since_the_snapshot(Backend::MySql, Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_update_of_a_row_deleted_since_the_snapshot_from_postgres() {
    unchanged_update_of_a_row_deleted_since_the_snapshot(Backend::Postgres, Backend::Sqlite).await
}

async fn unchanged_update_of_a_row_deleted_since_the_snapshot(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = start(&s, &d).await;
    let seen = two_accounts_and_a_copy_of_the_first(&s.db).await;
    let late = s.db.begin().await.unwrap();
    // The transaction's snapshot: it sees account 1.
    assert!(
        accounts::Entity::find_by_id(1)
            .one(&late)
            .await
            .unwrap()
            .is_some()
    );
    let other = sea_orm::Database::connect(&s.url).await.unwrap();
    let txn = other.begin().await.unwrap();
    seen.clone().delete(&txn).await.unwrap();
    txn.commit().await.unwrap();
    use sea_orm::IntoActiveModel;
    let refused = seen.into_active_model().update(&late).await;
    assert!(
        matches!(refused, Err(DbErr::RecordNotFound(_))),
        "{refused:?}"
    );
    late.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    assert_eq!(count(&s.db, "accounts").await, 1);
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

// SQLite: a captured delete reads its row first. Were that read the transaction's first
// statement, a writer committing while the delete waited for the lock would leave the
// transaction's snapshot stale, and SQLite would refuse the delete (SQLITE_BUSY_SNAPSHOT)
// instead of letting it go on once the writer is done. The writer is another connection
// (another process, or a pool of more than sea-orm's default one connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_behind_a_concurrent_writer_from_sqlite() {
    let Some((s, d)) = pair(Backend::Sqlite, Backend::Postgres).await else {
        return;
    };
    let rep = start(&s, &d).await;
    let held = two_accounts_and_a_copy_of_the_first(&s.db).await;

    let other = sea_orm::Database::connect(&s.url).await.unwrap();
    let writer = other.begin().await.unwrap();
    account(1, "Grace", "5").update(&writer).await.unwrap();
    let db = s.db.clone();
    let deleting = tokio::spawn(async move {
        let txn = db.begin().await?;
        held.delete(&txn).await?;
        txn.commit().await
    });
    // The delete now waits for the writer's lock; the writer commits while it waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.commit().await.unwrap();
    deleting
        .await
        .unwrap()
        .expect("the delete waits for the writer, then goes on");

    rep.sync_now().await.unwrap();
    assert_eq!(count(&s.db, "accounts").await, 1);
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

/// Commits accounts 1 and 2 and returns account 1 as read then: a model that goes stale as
/// soon as another transaction changes or deletes the row.
async fn two_accounts_and_a_copy_of_the_first(db: &DatabaseConnection) -> accounts::Model {
    let txn = db.begin().await.unwrap();
    account(1, "Ada", "1").insert(&txn).await.unwrap();
    account(2, "Ada", "2").insert(&txn).await.unwrap();
    txn.commit().await.unwrap();
    accounts::Entity::find_by_id(1)
        .one(db)
        .await
        .unwrap()
        .unwrap()
}

async fn delete_of_a_stale_model(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = replicator_to(
        &s,
        vec![
            Destination::new("grace-only", d.db.clone())
                .filter::<accounts::Entity>(ormsync::RowFilter::eq("name", "Grace")),
        ],
        1000,
    )
    .await;
    let stale = two_accounts_and_a_copy_of_the_first(&s.db).await;

    let txn = s.db.begin().await.unwrap();
    account(1, "Grace", "1").update(&txn).await.unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    assert_eq!(count(&d.db, "accounts").await, 1, "Grace moved in");

    let txn = s.db.begin().await.unwrap();
    stale.delete(&txn).await.unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    assert_eq!(count(&s.db, "accounts").await, 1);
    assert_eq!(
        count(&d.db, "accounts").await,
        0,
        "the delete reached the destination that held the row"
    );
    rep.shutdown().await;
}

async fn same_values_as_a_commit_since_the_snapshot(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = start(&s, &d).await;
    let txn = s.db.begin().await.unwrap();
    account(1, "Ada", "1").insert(&txn).await.unwrap();
    line(1, 1, 10).insert(&txn).await.unwrap();
    txn.commit().await.unwrap();

    // `late` reads first, so its snapshot is from before `early` commits.
    let late = s.db.begin().await.unwrap();
    let ada = accounts::Entity::find_by_id(1)
        .one(&late)
        .await
        .unwrap()
        .unwrap();
    let early = s.db.begin().await.unwrap();
    account(1, "Grace", "5").update(&early).await.unwrap();
    let mut l = line(1, 1, 0);
    l.qty = Set(58);
    l.update(&early).await.unwrap();
    early.commit().await.unwrap();

    // The same values again: the rows do not change, but these updates come last.
    let mut a: accounts::ActiveModel = ada.into();
    a.balance = Set(Decimal::from_str("5").unwrap());
    let back = a.update(&late).await.unwrap();
    let mut l = line(1, 1, 0);
    l.qty = Set(58);
    l.update(&late).await.unwrap();
    late.commit().await.unwrap();

    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    assert_eq!(
        (back.name.as_str(), back.balance),
        ("Grace", Decimal::from_str("5").unwrap()),
        "an update returns the row as it is, not as the snapshot saw it"
    );
    rep.shutdown().await;
}

async fn unchanged_update_behind_a_pending_change(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = start(&s, &d).await;
    let txn = s.db.begin().await.unwrap();
    account(1, "Ada", "1").insert(&txn).await.unwrap();
    txn.commit().await.unwrap();

    let early = s.db.begin().await.unwrap();
    account(1, "Grace", "5").update(&early).await.unwrap();
    let db = s.db.clone();
    let late = tokio::spawn(async move {
        let txn = db.begin().await?;
        let ada = accounts::Entity::find_by_id(1).one(&txn).await?.unwrap();
        // Sets nothing: sea-orm runs no UPDATE, only reads the row back.
        let back = accounts::ActiveModel::from(ada).update(&txn).await?;
        txn.commit().await?;
        Ok::<_, DbErr>(back)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !late.is_finished(),
        "an update that sets nothing waits for the pending change of its row"
    );
    early.commit().await.unwrap();
    let back = late.await.unwrap().unwrap();

    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    assert_eq!(back.name, "Grace", "the row read back is the committed one");
    rep.shutdown().await;
}

// Reads of wide rows are bounded by bytes on a MariaDB source too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_rows_from_mariadb() {
    wide_rows_fit_the_packet_limit(Backend::MySql, Backend::Postgres).await
}

async fn start(source: &TestDb, dest: &TestDb) -> Replicator {
    replicator_to(
        source,
        vec![Destination::new("dest", dest.db.clone())],
        1000,
    )
    .await
}

async fn replicator_to(source: &TestDb, dests: Vec<Destination>, batch: u64) -> Replicator {
    let mut b = Replicator::builder(source.db.clone())
        .entity::<accounts::Entity>()
        .entity::<line_items::Entity>()
        .poll_interval(Duration::from_millis(50))
        .retry_delays(Duration::from_millis(10), Duration::from_millis(200))
        // A crashed instance's lease expires quickly, so its successor takes over soon.
        .lease_ttl(Duration::from_millis(600))
        .batch_size(batch);
    for d in dests {
        b = b.destination(d);
    }
    b.start().await.expect("start replicator")
}

/// Accounts `ids`, one transaction each.
async fn accounts_one_by_one(db: &DatabaseConnection, ids: impl IntoIterator<Item = i64>) {
    for id in ids {
        let txn = db.begin().await.unwrap();
        account(id, "Ada", "1").insert(&txn).await.unwrap();
        txn.commit().await.unwrap();
    }
}

/// What a restore of the source from a backup taken when its outbox ended at `last` leaves:
/// the rows written since gone without a trace, the outbox back to `last`, and its next id
/// `last + 1`. (The same as restoring a dump into a fresh database, with one database.)
async fn restore_backup_taken_at(db: &DatabaseConnection, last: i64, rows_since: &[i64]) {
    let backend = db.get_database_backend();
    let ids: Vec<String> = rows_since.iter().map(i64::to_string).collect();
    let reset = match backend {
        DbBackend::Postgres => {
            format!("SELECT setval(pg_get_serial_sequence('ormsync_outbox', 'id'), {last})")
        }
        DbBackend::MySql => format!("ALTER TABLE ormsync_outbox AUTO_INCREMENT = {}", last + 1),
        _ => format!("UPDATE sqlite_sequence SET seq = {last} WHERE name = 'ormsync_outbox'"),
    };
    for sql in [
        format!("DELETE FROM accounts WHERE id IN ({})", ids.join(", ")),
        format!("DELETE FROM ormsync_outbox WHERE id > {last}"),
        reset,
    ] {
        db.execute_unprepared(&sql).await.unwrap();
    }
}

/// Rows 1-10 shipped, a backup taken, rows 11-20 shipped, the backup restored, rows
/// 100-109 written (taking the outbox ids of 11-20): the destination must not take the
/// source for the one it followed, and skip 100-109 for good. It halts, saying why, until
/// a resync of every table copies the source as it is now.
async fn source_restored_from_an_earlier_backup(src: Backend, dst: Backend) {
    restored_source(src, dst, false).await
}

/// The same while the replicator keeps running: a failover to a replica that was behind,
/// under the same connection URL.
async fn source_restored_under_a_running_replicator(src: Backend, dst: Backend) {
    restored_source(src, dst, true).await
}

async fn restored_source(src: Backend, dst: Backend, running: bool) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let alerts: Arc<Mutex<Vec<ormsync::Alert>>> = Arc::default();
    let started = || {
        let alerts = alerts.clone();
        Replicator::builder(s.db.clone())
            .entity::<accounts::Entity>()
            .entity::<line_items::Entity>()
            .poll_interval(Duration::from_millis(50))
            .retry_delays(Duration::from_millis(10), Duration::from_millis(200))
            .lease_ttl(Duration::from_millis(600))
            .on_alert(move |a| alerts.lock().unwrap().push(a.clone()))
            .destination(Destination::new("dest", d.db.clone()))
            .start()
    };
    let rep = started().await.unwrap();
    accounts_one_by_one(&s.db, 1..=10).await;
    rep.sync_now().await.unwrap();
    let backup = max_outbox_id(&s.db).await;
    accounts_one_by_one(&s.db, 11..=20).await;
    rep.sync_now().await.unwrap();
    let rep = if running {
        Some(rep)
    } else {
        rep.shutdown().await;
        None
    };
    restore_backup_taken_at(&s.db, backup, &(11..=20).collect::<Vec<_>>()).await;
    accounts_one_by_one(&s.db, 100..=109).await;
    assert_eq!(
        max_outbox_id(&s.db).await,
        backup + 10,
        "the new rows took the old ids"
    );
    let rep = match rep {
        Some(rep) => rep,
        None => started().await.unwrap(),
    };

    let refused = rep
        .sync_now()
        .await
        .expect_err("a source that went back in time halts its destinations");
    assert!(
        refused.to_string().contains("went back in time"),
        "{refused}"
    );
    let status = rep.status().destinations.remove(0);
    assert_eq!(status.state, State::Halted, "{status:?}");
    assert!(
        alerts
            .lock()
            .unwrap()
            .iter()
            .any(|a| a.kind == AlertKind::Halted
                && a.error
                    .as_deref()
                    .is_some_and(|e| e.contains("went back in time"))),
        "an alert says why"
    );
    assert_eq!(
        count(&d.db, "accounts").await,
        20,
        "nothing shipped, nothing lost"
    );

    // The remedy the error names: a resync of every table, then resume.
    rep.resync("dest", &["accounts", "line_items"])
        .await
        .unwrap();
    rep.resume("dest").await.unwrap();
    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    accounts_one_by_one(&s.db, 200..=201).await;
    rep.sync_now().await.unwrap();
    assert_eq!(count(&d.db, "accounts").await, 22);
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

async fn each_operation_alone(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = start(&s, &d).await;

    let txn = s.db.begin().await.unwrap();
    account(1, "  Ada  ", "10.50").insert(&txn).await.unwrap();
    account(2, "Grace", "-3.25").insert(&txn).await.unwrap();
    line(1, 1, 3).insert(&txn).await.unwrap();
    line(1, 2, 4).insert(&txn).await.unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    let ada = accounts::Entity::find_by_id(1)
        .one(&d.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ada.name, "Ada",
        "the application's own hook ran before capture"
    );
    assert_eq!(ada.local_flag, None, "a skipped column never ships");

    let txn = s.db.begin().await.unwrap();
    let mut a: accounts::ActiveModel = ada.clone().into();
    a.balance = Set(Decimal::from_str("99.99").unwrap());
    a.note = Set(None);
    a.update(&txn).await.unwrap();
    let mut l: line_items::ActiveModel = line(1, 2, 4);
    l.qty = Set(40);
    l.update(&txn).await.unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;

    let txn = s.db.begin().await.unwrap();
    let grace = accounts::Entity::find_by_id(2)
        .one(&txn)
        .await
        .unwrap()
        .unwrap();
    grace.delete(&txn).await.unwrap();
    // A delete through an ActiveModel holding only the key.
    line_items::ActiveModel {
        order_id: Set(1),
        line_no: Set(1),
        ..Default::default()
    }
    .delete(&txn)
    .await
    .unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    assert_eq!(count(&d.db, "accounts").await, 1);
    assert_eq!(count(&d.db, "line_items").await, 1);
    rep.shutdown().await;
}

async fn update_then_delete_in_one_batch(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = start(&s, &d).await;
    let txn = s.db.begin().await.unwrap();
    for id in 1..=3 {
        account(id, "x", "1").insert(&txn).await.unwrap();
    }
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();

    let txn = s.db.begin().await.unwrap();
    let mut a = account(1, "changed", "2");
    a.note = Set(None);
    let a = a.update(&txn).await.unwrap();
    a.delete(&txn).await.unwrap();
    account(2, "kept", "3").update(&txn).await.unwrap();
    txn.commit().await.unwrap();
    let txn = s.db.begin().await.unwrap();
    let three = accounts::Entity::find_by_id(3)
        .one(&txn)
        .await
        .unwrap()
        .unwrap();
    let mut three: accounts::ActiveModel = three.into();
    three.name = Set("three".into());
    three
        .update(&txn)
        .await
        .unwrap()
        .delete(&txn)
        .await
        .unwrap();
    txn.commit().await.unwrap();

    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    assert_eq!(count(&d.db, "accounts").await, 1);
    rep.shutdown().await;
}

async fn insert_delete_insert_of_one_key(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = start(&s, &d).await;
    for (i, name) in ["first", "second"].iter().enumerate() {
        let txn = s.db.begin().await.unwrap();
        let m = account(7, name, "1").insert(&txn).await.unwrap();
        if i == 0 {
            m.delete(&txn).await.unwrap();
        }
        txn.commit().await.unwrap();
    }
    let txn = s.db.begin().await.unwrap();
    line(1, 1, 1)
        .insert(&txn)
        .await
        .unwrap()
        .delete(&txn)
        .await
        .unwrap();
    line(1, 1, 2).insert(&txn).await.unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    let seven = accounts::Entity::find_by_id(7)
        .one(&d.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seven.name, "second");
    rep.shutdown().await;
}

async fn many_changes_to_one_row(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = start(&s, &d).await;
    let txn = s.db.begin().await.unwrap();
    account(1, "start", "0").insert(&txn).await.unwrap();
    txn.commit().await.unwrap();
    for i in 1..=40 {
        let txn = s.db.begin().await.unwrap();
        let mut a = account(1, &format!("v{i}"), &format!("{i}.01"));
        a.note = Set(if i % 2 == 0 {
            None
        } else {
            Some(format!("odd {i}"))
        });
        a.update(&txn).await.unwrap();
        txn.commit().await.unwrap();
    }
    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    let one = accounts::Entity::find_by_id(1)
        .one(&d.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((one.name.as_str(), one.note), ("v40", None));
    rep.shutdown().await;
}

/// One random transaction of 1–4 operations on a small key space; rolled back 15% of
/// the time. Failures (deadlocks, duplicate inserts by racing writers) roll back too.
async fn random_transaction(
    db: &DatabaseConnection,
    rng: &mut rand::rngs::StdRng,
) -> Result<bool, DbErr> {
    let txn = db.begin().await?;
    if let Err(e) = random_operations(&txn, rng).await {
        // Roll back now: a dropped transaction stays open on its pooled connection until
        // the connection is reused, which holds back the outbox's gap proofs.
        txn.rollback().await?;
        return Err(e);
    }
    if rng.random_range(0..100) < 15 {
        txn.rollback().await?;
        Ok(false)
    } else {
        txn.commit().await?;
        Ok(true)
    }
}

async fn random_operations(
    txn: &sea_orm::DatabaseTransaction,
    rng: &mut rand::rngs::StdRng,
) -> Result<(), DbErr> {
    for _ in 0..rng.random_range(1..=4) {
        let id = rng.random_range(1..=40);
        let existing = accounts::Entity::find_by_id(id).one(txn).await?;
        match (existing, rng.random_range(0..10)) {
            (None, _) => {
                account(id, &format!("n{}", rng.random::<u16>()), "1")
                    .insert(txn)
                    .await?;
                line(id, 1, 1).insert(txn).await?;
            }
            (Some(m), 0..=1) => {
                line(id, 1, 0).delete(txn).await?;
                m.delete(txn).await?;
            }
            (Some(m), _) => {
                let mut a: accounts::ActiveModel = m.into();
                a.balance = Set(Decimal::new(rng.random_range(-10_000..10_000), 2));
                a.update(txn).await?;
                let mut l = line(id, 1, 0);
                l.qty = Set(rng.random_range(0..100));
                l.update(txn).await?;
            }
        }
    }
    Ok(())
}

async fn concurrent_writers_with_rollbacks(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = start(&s, &d).await;
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let db = s.connect().await;
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w);
            let (mut committed, mut undone) = (0, 0);
            for _ in 0..60 {
                // A deadlock, a busy SQLite or a duplicate key from a racing writer: the
                // transaction rolled back, so try another.
                for _attempt in 0..50 {
                    match random_transaction(&db, &mut rng).await {
                        Ok(true) => committed += 1,
                        Ok(false) => undone += 1,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                    }
                    break;
                }
            }
            (committed, undone)
        }));
    }
    let mut totals = (0, 0);
    for w in writers {
        let (c, u) = w.await.unwrap();
        totals = (totals.0 + c, totals.1 + u);
    }
    assert!(
        totals.0 > 150 && totals.1 > 10,
        "the workload did commit and roll back: {totals:?}"
    );
    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

async fn killed_mid_batch_and_restarted(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    // A backlog where later changes undo earlier ones: a batch applied twice would
    // resurrect deleted rows or roll values back.
    for round in 0..6 {
        let txn = s.db.begin().await.unwrap();
        for id in 1..=60 {
            match round {
                0 => drop(account(id, "new", "1").insert(&txn).await.unwrap()),
                r if r % 2 == 1 => drop(
                    account(id, &format!("r{round}"), &format!("{round}.5"))
                        .update(&txn)
                        .await
                        .unwrap(),
                ),
                // Even rounds delete the even rows and insert them back.
                _ if id % 2 == 0 => {
                    let m = accounts::Entity::find_by_id(id)
                        .one(&txn)
                        .await
                        .unwrap()
                        .unwrap();
                    m.delete(&txn).await.unwrap();
                    account(id, &format!("back{round}"), "3")
                        .insert(&txn)
                        .await
                        .unwrap();
                }
                _ => {}
            }
        }
        // And the last round deletes a few for good.
        if round == 5 {
            for id in (5..=60).step_by(5) {
                accounts::Entity::find_by_id(id)
                    .one(&txn)
                    .await
                    .unwrap()
                    .unwrap()
                    .delete(&txn)
                    .await
                    .unwrap();
            }
        }
        txn.commit().await.unwrap();
    }
    let total = max_outbox_id(&s.db).await;
    for _ in 0..6 {
        let rep = replicator_to(&s, vec![Destination::new("dest", d.db.clone())], 17).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..80))).await;
        rep.abort().await;
    }
    let rep = replicator_to(&s, vec![Destination::new("dest", d.db.clone())], 17).await;
    // The crashed instances' leases have to expire first: drain waits for that.
    rep.drain("dest").await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    let stored = ormsync::apply::read_checkpoint(&d.db, rep.source_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.watermark, total,
        "every change applied, none left behind"
    );
    assert!(stored.above.is_empty());
    rep.shutdown().await;
}

async fn late_commit_is_never_skipped(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = start(&s, &d).await;
    if src != Backend::Sqlite {
        // A takes id N and stays open; B takes N+1 and commits first.
        let a = s.db.begin().await.unwrap();
        account(1, "late", "1").insert(&a).await.unwrap();
        let b_conn = s.connect().await;
        let b = b_conn.begin().await.unwrap();
        account(2, "early", "2").insert(&b).await.unwrap();
        b.commit().await.unwrap();
        rep.sync_now().await.unwrap();
        let at_dest: Vec<i64> = accounts::Entity::find()
            .all(&d.db)
            .await
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(at_dest, vec![2], "B shipped while A is open");
        // Long enough for the gap to be probed while A still holds it.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        rep.sync_now().await.unwrap();
        rep.sync_now().await.unwrap();
        let at_dest: Vec<i64> = accounts::Entity::find()
            .all(&d.db)
            .await
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(at_dest, vec![2], "A is still open");
        a.commit().await.unwrap();
        rep.sync_now().await.unwrap();
        assert_all_same(&s.db, &d.db).await;
    }
    // A rolled-back transaction leaves a hole that must not stall the watermark.
    let c = s.db.begin().await.unwrap();
    account(3, "never", "0").insert(&c).await.unwrap();
    c.rollback().await.unwrap();
    let txn = s.db.begin().await.unwrap();
    account(4, "after the hole", "4")
        .insert(&txn)
        .await
        .unwrap();
    txn.commit().await.unwrap();
    let top = max_outbox_id(&s.db).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        rep.sync_now().await.unwrap();
        let p = ormsync::apply::read_checkpoint(&d.db, rep.source_id())
            .await
            .unwrap()
            .unwrap_or_default();
        if p.watermark == top {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watermark stalled at {} below {top}",
            p.watermark
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

/// 400 rows with 60 KB notes (MariaDB's `TEXT` holds 64 KB) are 24 MB in one batch, more
/// than MariaDB's `max_allowed_packet` (16 MiB by default) takes in one statement, which
/// would refuse it and drop the connection on every retry. The batch goes as several
/// statements instead and everything arrives.
async fn wide_rows_fit_the_packet_limit(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let note = "w".repeat(60_000);
    let ids: Vec<i64> = (1..=400).collect();
    for chunk in ids.chunks(100) {
        let txn = s.db.begin().await.unwrap();
        for &id in chunk {
            let mut a = account(id, "Wide", "1.00");
            a.note = Set(Some(format!("{id}:{note}")));
            a.insert(&txn).await.unwrap();
        }
        txn.commit().await.unwrap();
    }
    // A read holds about 8 MiB of changes, not its 3000: reading on delivers each change
    // once, in order.
    let mut reader =
        ormsync::outbox::OutboxReader::new(s.db.clone(), 3000, Duration::from_secs(60));
    let mut position = ormsync::position::Position::default();
    let (mut seen, mut reads) = (Vec::new(), 0);
    loop {
        let batch = reader.read(&position).await.unwrap();
        if batch.is_empty() {
            break;
        }
        let bytes: usize = batch.changes.iter().map(|c| c.row.to_json().len()).sum();
        assert!(bytes < (8 << 20) + 70_000, "one read held {bytes} bytes");
        seen.extend(batch.changes.iter().map(|c| c.id));
        batch.mark_done(&mut position);
        reads += 1;
    }
    assert!(reads >= 3, "24 MB of changes came in {reads} reads");
    let mut expected = seen.clone();
    expected.sort_unstable();
    expected.dedup();
    assert_eq!((seen.len(), &seen), (400, &expected));

    let rep = start(&s, &d).await;
    tokio::time::timeout(Duration::from_secs(120), rep.sync_now())
        .await
        .expect("the wide batch shipped within 2 minutes")
        .expect("the wide batch shipped");
    // The initial snapshot copied them, in chunks of about 8 MiB too.
    let snap = rep.status().destinations.remove(0).snapshot;
    assert!(
        snap.as_ref()
            .is_some_and(|s| s.rows_copied == 400 && s.chunks >= 3),
        "{snap:?}"
    );
    assert_eq!(count(&d.db, "accounts").await, 400);
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

async fn missing_column_or_table_holds_the_change(src: Backend, dst: Backend) {
    let Some(s) = TestDb::create(src).await else {
        return;
    };
    let Some(bad) = TestDb::create(dst).await else {
        return;
    };
    let Some(good) = TestDb::create(dst).await else {
        return;
    };
    s.create_tables().await;
    good.create_tables().await;
    ormsync::install(&s.db).await.unwrap();
    // `bad` has accounts without `note`, and no line_items at all.
    let accounts_without_note =
        common::entities::ddl(bad.db.get_database_backend())[0].replace(" note TEXT NULL,", "");
    assert!(!accounts_without_note.contains("note"));
    bad.db
        .execute_unprepared(&accounts_without_note)
        .await
        .unwrap();
    let rep = replicator_to(
        &s,
        vec![
            Destination::new("bad-dest", bad.db.clone()),
            Destination::new("good-dest", good.db.clone()),
        ],
        1000,
    )
    .await;
    let txn = s.db.begin().await.unwrap();
    account(1, "a", "1").insert(&txn).await.unwrap();
    line(1, 1, 1).insert(&txn).await.unwrap();
    txn.commit().await.unwrap();

    let err = rep
        .sync_destination("bad-dest")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad-dest") && err.contains("accounts") && err.contains("`note`"),
        "{err}"
    );
    rep.sync_destination("good-dest").await.unwrap();
    assert_all_same(&s.db, &good.db).await;
    let status = rep.status();
    assert!(
        status.destinations[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("note")),
        "{status}"
    );
    assert_eq!(status.destinations[0].watermark, 0);
    assert_eq!(
        count(&s.db, "ormsync_outbox").await,
        2,
        "the changes stay in the outbox"
    );

    // The default policy halts the destination until someone fixes the cause and resumes it.
    assert_eq!(
        status.destinations[0].state,
        ormsync::State::Halted,
        "{status}"
    );
    bad.db
        .execute_unprepared("ALTER TABLE accounts ADD COLUMN note TEXT NULL")
        .await
        .unwrap();
    let still = rep.sync_destination("bad-dest").await.unwrap_err();
    assert!(matches!(still, ormsync::Error::Halted { .. }), "{still}");
    rep.resume("bad-dest").await.unwrap();
    let err = rep
        .sync_destination("bad-dest")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad-dest") && err.contains("`line_items` does not exist"),
        "{err}"
    );
    bad.create_tables_except_accounts().await;
    // A resync copies the rows again but leaves the destination halted: only a resume
    // retries the change at fault.
    rep.resync("bad-dest", &["accounts"]).await.unwrap();
    assert_eq!(
        rep.status().destinations[0].state,
        ormsync::State::Halted,
        "{}",
        rep.status()
    );
    let still = rep.sync_destination("bad-dest").await.unwrap_err();
    assert!(matches!(still, ormsync::Error::Halted { .. }), "{still}");
    rep.resume("bad-dest").await.unwrap();
    rep.resume("bad-dest").await.unwrap();
    rep.sync_destination("bad-dest").await.unwrap();
    assert_all_same(&s.db, &bad.db).await;
    rep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_leaves_neither_row_nor_change() {
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        let Some(s) = TestDb::create(backend).await else {
            continue;
        };
        s.create_tables().await;
        ormsync::install(&s.db).await.unwrap();
        let txn = s.db.begin().await.unwrap();
        account(1, "gone", "1").insert(&txn).await.unwrap();
        assert_eq!(
            count_in(&txn, "ormsync_outbox").await,
            1,
            "{backend:?}: captured in the transaction"
        );
        txn.rollback().await.unwrap();
        assert_eq!(count(&s.db, "accounts").await, 0, "{backend:?}");
        assert_eq!(count(&s.db, "ormsync_outbox").await, 0, "{backend:?}");

        let txn = s.db.begin().await.unwrap();
        account(1, "kept", "1").insert(&txn).await.unwrap();
        txn.commit().await.unwrap();
        assert_eq!(count(&s.db, "accounts").await, 1, "{backend:?}");
        assert_eq!(count(&s.db, "ormsync_outbox").await, 1, "{backend:?}");
    }
}

async fn count_in<C: ConnectionTrait>(db: &C, table: &str) -> i64 {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            format!("SELECT COUNT(*) FROM {table}"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_creates_the_source_tables_and_no_password_leaks() {
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        let Some(s) = TestDb::create(backend).await else {
            continue;
        };
        let Some(d) = TestDb::create(Backend::Postgres).await else {
            continue;
        };
        s.create_tables().await;
        // The destination is reached through a URL carrying a password (trust auth
        // ignores it) and lacks the replicated tables.
        let with_password = d.url.replacen("postgres@", "postgres:hunter2secret@", 1);
        assert!(with_password.contains("hunter2secret"));
        let dest = sea_orm::Database::connect(&with_password).await.unwrap();
        let rep = Replicator::builder(s.db.clone())
            .entity::<accounts::Entity>()
            .destination(Destination::new("pw-dest", dest.clone()))
            .poll_interval(Duration::from_millis(50))
            .start()
            .await
            .expect("start installs the source's tables");
        let txn = s.db.begin().await.unwrap();
        account(1, "a", "1").insert(&txn).await.unwrap();
        txn.commit().await.unwrap();
        let err = rep.sync_now().await.unwrap_err();
        let status = rep.status();
        for text in [
            err.to_string(),
            format!("{err:?}"),
            status.to_string(),
            serde_json::to_string(&status).unwrap(),
            format!("{:?}", Destination::new("x", dest.clone())),
        ] {
            assert!(
                !text.contains("hunter2secret"),
                "{backend:?}: password in {text}"
            );
        }
        assert!(
            err.to_string().contains("`accounts` does not exist"),
            "{err}"
        );
        rep.shutdown().await;
    }
}

trait CreateRest {
    async fn create_tables_except_accounts(&self);
}

impl CreateRest for TestDb {
    async fn create_tables_except_accounts(&self) {
        for ddl in common::entities::ddl(self.db.get_database_backend()) {
            if !ddl.contains("TABLE accounts") && ddl.contains("line_items") {
                self.db.execute_unprepared(&ddl).await.unwrap();
            }
        }
    }
}

/// A gap whose owner is the newest open transaction is waited for, not skipped.
/// PostgreSQL's snapshot `xmax` is the latest *completed* xid plus one: once an older
/// transaction commits the id above the gap, the owner holds exactly that xid and is the
/// oldest running one, so a proof built on `xmax` settled at once and the owner's change,
/// committed later, was never shipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_owned_by_the_newest_open_transaction_is_not_a_hole() {
    let Some((s, d)) = pair(Backend::Postgres, Backend::Sqlite).await else {
        return;
    };
    let rep = start(&s, &d).await;
    rep.sync_now().await.unwrap();
    let (older_conn, owner_conn) = (s.connect().await, s.connect().await);
    // `older` takes its xid first; the owner takes a higher one and the outbox id below
    // the one `older` then commits.
    let older = older_conn.begin().await.unwrap();
    older
        .execute_unprepared("SELECT pg_current_xact_id()")
        .await
        .unwrap();
    let owner = owner_conn.begin().await.unwrap();
    account(1, "late", "1").insert(&owner).await.unwrap();
    account(2, "early", "1").insert(&older).await.unwrap();
    older.commit().await.unwrap();
    // Several reads while the owner is open: each must leave its id a gap.
    for _ in 0..3 {
        rep.sync_now().await.unwrap();
    }
    assert_eq!(count(&d.db, "accounts").await, 1);
    owner.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    assert_eq!(count(&d.db, "accounts").await, 2);
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

/// More open gaps than one statement probes: the reader reads them in one snapshot over
/// several statements, and still ships a late commit in the middle of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_open_gaps_are_probed_in_one_snapshot() {
    let Some((s, d)) = pair(Backend::Postgres, Backend::Sqlite).await else {
        return;
    };
    let rep = start(&s, &d).await;
    // An unrelated open transaction holds PostgreSQL's xmin back, so no gap settles.
    let holder = s.connect().await;
    let hold = holder.begin().await.unwrap();
    hold.execute_unprepared("SELECT pg_current_xact_id()")
        .await
        .unwrap();
    let late_conn = s.connect().await;
    let mut late = None;
    for i in 0..150i64 {
        let txn = s.db.begin().await.unwrap();
        account(1000 + i, "gone", "1").insert(&txn).await.unwrap();
        txn.rollback().await.unwrap();
        if i == 75 {
            let txn = late_conn.begin().await.unwrap();
            account(5000, "late", "1").insert(&txn).await.unwrap();
            late = Some(txn);
        }
        let txn = s.db.begin().await.unwrap();
        account(i + 1, "kept", "1").insert(&txn).await.unwrap();
        txn.commit().await.unwrap();
    }
    rep.sync_now().await.unwrap();
    assert_eq!(count(&d.db, "accounts").await, 150);
    late.unwrap().commit().await.unwrap();
    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    assert_eq!(count(&d.db, "accounts").await, 151);
    hold.rollback().await.unwrap();
    rep.shutdown().await;
}
