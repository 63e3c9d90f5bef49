//! Initial snapshot, resync and schema bootstrap on every backend pair: rows that existed
//! before capture started reach a new destination while writers keep changing them; a
//! snapshot killed halfway resumes from its last chunk; a mangled table is resynced while
//! changes stream; missing tables are created from the entities and a table with other
//! columns is refused.

#[macro_use]
mod common;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::entities::{customers, fk_ddl, orders};
use common::{Backend, TestDb, assert_same, count};
use ormsync::{Destination, Replicated, Replicator, SnapshotStatus, State};
use rand::{Rng, SeedableRng};
use sea_orm::prelude::Decimal;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    ModelTrait, QueryFilter, Set, Statement, TransactionTrait,
};

on_every_pair!(
    also_sqlite: a_new_destination_meets_parents_deleted_and_recreated,
    resync_after_a_parent_deleted_and_its_child_moved,
    an_instance_that_lost_its_lease_plans_no_copy,
);

// Several instances creating one PostgreSQL destination's tables at once, and instances
// killed while they do: PostgreSQL's `CREATE … IF NOT EXISTS` is not safe against a
// concurrent one, and a refusal there would halt the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_bootstrap_one_postgres_destination_at_once() {
    let (Some(s), Some(d)) = (
        TestDb::create(Backend::Sqlite).await,
        TestDb::create(Backend::Postgres).await,
    ) else {
        return;
    };
    existing_rows(&s.db, 20).await;
    let instance = |i: usize| {
        start(&s.db)
            .instance_id(format!("i{i}"))
            .lease_ttl(Duration::from_millis(150))
            .destination(Destination::new("d", d.db.clone()).create_tables())
    };
    let both = futures_util::future::join_all((0..3).map(|i| instance(i).start())).await;
    for r in both {
        r.expect("start").abort().await;
    }
    for round in 0..6u64 {
        let r = instance(10 + round as usize).start().await.expect("start");
        tokio::time::sleep(Duration::from_millis(round * 3)).await;
        r.abort().await;
    }
    let r = instance(99).start().await.expect("start");
    sync(&r).await;
    assert_both_same(&s.db, &d.db).await;
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_destination_meets_parents_deleted_and_recreated_postgres_to_postgres() {
    a_new_destination_meets_parents_deleted_and_recreated(Backend::Postgres, Backend::Postgres)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_moved_out_of_the_filter_and_deleted_while_copying_goes_sqlite_to_sqlite() {
    a_row_moved_out_of_the_filter_and_deleted_while_copying_goes(Backend::Sqlite, Backend::Sqlite)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_moved_out_of_the_filter_and_deleted_while_copying_goes_postgres_to_mariadb() {
    a_row_moved_out_of_the_filter_and_deleted_while_copying_goes(Backend::Postgres, Backend::MySql)
        .await
}

// A column that refuses long text: PostgreSQL and MariaDB destinations (SQLite takes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_resync_halts_until_resumed_postgres_to_mariadb() {
    a_failed_resync_halts_until_resumed(Backend::Postgres, Backend::MySql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_resync_halts_until_resumed_sqlite_to_postgres() {
    a_failed_resync_halts_until_resumed(Backend::Sqlite, Backend::Postgres).await
}

on_every_pair!(
    snapshot_while_four_writers_change_the_rows,
    a_killed_snapshot_resumes_from_its_last_chunk,
    resync_repairs_a_mangled_table_while_changes_stream,
    bootstrap_creates_missing_tables_and_refuses_other_columns,
);

// ---- data ------------------------------------------------------------------------------

const ORDERS_PER_CUSTOMER: i64 = 4;

fn customer(id: i64) -> customers::Model {
    customers::Model {
        id,
        name: format!("customer {id}"),
        credit: Decimal::from_str(&format!("{}.{:04}", id % 1000, id % 10_000)).expect("decimal"),
        local_note: Some("kept at the source".into()),
    }
}

fn order(customer_id: i64, k: i64) -> orders::Model {
    orders::Model {
        id: customer_id * 8 + k,
        customer_id,
        item: format!("item {k} of {customer_id}"),
        qty: (customer_id % 17) as i32 + k as i32,
    }
}

/// Creates the tables and writes `customers` customers with their orders *without*
/// capturing them (`insert_many` bypasses the hooks): rows that existed before ormsync.
async fn existing_rows(db: &DatabaseConnection, customers: i64) {
    for ddl in fk_ddl(db.get_database_backend()) {
        db.execute_unprepared(&ddl).await.expect("create table");
    }
    ormsync::install(db).await.expect("install");
    for lo in (1..=customers).step_by(500) {
        let hi = (lo + 499).min(customers);
        let cs: Vec<customers::ActiveModel> = (lo..=hi).map(|i| customer(i).into()).collect();
        customers::Entity::insert_many(cs)
            .exec(db)
            .await
            .expect("customers");
        let os: Vec<orders::ActiveModel> = (lo..=hi)
            .flat_map(|c| (0..ORDERS_PER_CUSTOMER).map(move |k| order(c, k).into()))
            .collect();
        orders::Entity::insert_many(os)
            .exec(db)
            .await
            .expect("orders");
    }
}

async fn dest_tables(db: &DatabaseConnection) {
    for ddl in fk_ddl(db.get_database_backend()) {
        db.execute_unprepared(&ddl).await.expect("create table");
    }
}

/// How many pre-existing customers a pair gets: 10,000 customers and 40,000 orders (50,000
/// rows) from PostgreSQL, fewer elsewhere to keep the run short.
fn scale(src: Backend) -> i64 {
    match src {
        Backend::Postgres => 10_000,
        Backend::MySql => 4_000,
        Backend::Sqlite => 2_000,
    }
}

/// One captured transaction of random work on the customers `writer` owns (ids equal to it
/// modulo 4): an update of an order or a customer, a new customer with orders, or the
/// delete of a customer with its orders. Failures (a busy SQLite) roll back and count.
async fn write_once(
    db: &DatabaseConnection,
    writer: i64,
    rng: &mut rand::rngs::StdRng,
    next: &AtomicU64,
    existing: i64,
) {
    let pick = |rng: &mut rand::rngs::StdRng| {
        let c = rng.random_range(1..=existing / 4) * 4 - writer;
        c.max(1)
    };
    let work = async {
        let txn = db.begin().await?;
        match rng.random_range(0..10) {
            0..=3 => {
                let c = pick(rng);
                if let Some(o) =
                    orders::Entity::find_by_id(c * 8 + rng.random_range(0..ORDERS_PER_CUSTOMER))
                        .one(&txn)
                        .await?
                {
                    let qty = o.qty + 1;
                    let mut am: orders::ActiveModel = o.into();
                    am.qty = Set(qty);
                    am.item = Set(format!("changed by {writer}"));
                    am.update(&txn).await?;
                }
            }
            4..=5 => {
                let c = pick(rng);
                if let Some(m) = customers::Entity::find_by_id(c).one(&txn).await? {
                    let mut am: customers::ActiveModel = m.into();
                    am.name = Set(format!("renamed by {writer}"));
                    am.credit = Set(Decimal::from_str("1.5000").expect("decimal"));
                    am.update(&txn).await?;
                }
            }
            6..=8 => {
                // A new customer with two orders, ids beyond the existing ones.
                let id = existing + 1 + (next.fetch_add(1, Ordering::Relaxed) as i64) * 4 + writer;
                customers::ActiveModel::from(customer(id))
                    .insert(&txn)
                    .await?;
                for k in 0..2 {
                    orders::ActiveModel::from(order(id, k)).insert(&txn).await?;
                }
            }
            _ => {
                // Customers 1 and 2 keep the stray orders a test plants at a destination.
                let c = pick(rng).max(3);
                for o in orders::Entity::find()
                    .filter(orders::Column::CustomerId.eq(c))
                    .all(&txn)
                    .await?
                {
                    o.delete(&txn).await?;
                }
                if let Some(m) = customers::Entity::find_by_id(c).one(&txn).await? {
                    m.delete(&txn).await?;
                }
            }
        }
        txn.commit().await
    };
    if let Err(e) = work.await {
        tracing::debug!(error = %e, writer, "a writer's transaction failed");
    }
}

/// Starts 4 writers on `db`; they run until the flag is set.
fn writers(db: &TestDb, existing: i64) -> (Arc<AtomicBool>, Vec<tokio::task::JoinHandle<u64>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let handles = (0..4)
        .map(|w| {
            let db = db.db.clone();
            let stop = stop.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    write_once(&db, w, &mut rng, &next, existing).await;
                    n += 1;
                    // SQLite has one writer at a time: leave the replicator room to read.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                n
            })
        })
        .collect();
    (stop, handles)
}

async fn stop_writers(stop: Arc<AtomicBool>, handles: Vec<tokio::task::JoinHandle<u64>>) -> u64 {
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for h in handles {
        total += h.await.expect("writer");
    }
    total
}

fn start(source: &DatabaseConnection) -> ormsync::ReplicatorBuilder {
    Replicator::builder(source.clone())
        .entity::<customers::Entity>()
        .entity::<orders::Entity>()
        .poll_interval(Duration::from_millis(50))
        .retry_delays(Duration::from_millis(50), Duration::from_millis(500))
}

fn snapshot_of(r: &Replicator) -> (State, Option<SnapshotStatus>, Option<String>) {
    let d = r.status().destinations.remove(0);
    (d.state, d.snapshot, d.last_error)
}

/// Waits until the snapshot is done, failing on a halt or after `limit`.
async fn snapshot_done(r: &Replicator, limit: Duration) -> SnapshotStatus {
    let began = Instant::now();
    loop {
        let (state, snap, error) = snapshot_of(r);
        assert_ne!(state, State::Halted, "halted: {error:?}");
        if let Some(s) = snap
            && s.is_done()
            && state != State::Copying
        {
            return s;
        }
        assert!(
            began.elapsed() < limit,
            "snapshot not done after {limit:?}: {snap:?}",
            snap = snapshot_of(r)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn sync(r: &Replicator) {
    let began = Instant::now();
    loop {
        match r.sync_now().await {
            Ok(()) => return,
            Err(e) if e.is_transient() && began.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("sync_now: {e}"),
        }
    }
}

async fn assert_both_same(s: &DatabaseConnection, d: &DatabaseConnection) {
    assert_same::<customers::Entity>(s, d).await;
    assert_same::<orders::Entity>(s, d).await;
}

/// The stored copy progress of every table at `dest`: (table, copied, done).
async fn stored_progress(dest: &DatabaseConnection) -> Vec<(String, i64, bool)> {
    let rows = dest
        .query_all_raw(Statement::from_string(
            dest.get_database_backend(),
            "SELECT table_name, copied, done FROM ormsync_snapshot ORDER BY table_name",
        ))
        .await
        .expect("snapshot progress");
    rows.iter()
        .map(|r| {
            (
                r.try_get::<String>("", "table_name").unwrap(),
                r.try_get::<i64>("", "copied").unwrap(),
                r.try_get::<i32>("", "done").unwrap() != 0,
            )
        })
        .collect()
}

/// Expires every lease at `db`, as leases whose holders were held up past their time.
async fn expire_leases(db: &DatabaseConnection) {
    let past = match db.get_database_backend() {
        DbBackend::MySql => "'1970-01-02 00:00:00'",
        DbBackend::Postgres => "'1970-01-02T00:00:00Z'",
        _ => "'1970-01-02T00:00:00.000Z'",
    };
    db.execute_unprepared(&format!("UPDATE ormsync_leases SET expires_at = {past}"))
        .await
        .expect("expire the leases");
}

// ---- scenarios -------------------------------------------------------------------------

/// An instance whose lease another one took over while it did not look (an instance held
/// up past its lease) is asked to copy a table again. Its copy must not start: a plan it
/// leaves unfinished at the destination, which the instance that ships there does not
/// resume, keeps that destination from ever draining.
async fn an_instance_that_lost_its_lease_plans_no_copy(src: Backend, dst: Backend) {
    common::trace();
    let (Some(s), Some(d)) = (TestDb::create(src).await, TestDb::create(dst).await) else {
        return;
    };
    existing_rows(&s.db, 200).await;
    dest_tables(&d.db).await;
    // An instance trusts its lease for a third of it after each renewal: long enough here
    // for the other to take it over meanwhile, unseen.
    let instance = |name: &str| {
        start(&s.db)
            .instance_id(name)
            .lease_ttl(Duration::from_secs(90))
            .destination(Destination::new("backup", d.db.clone()).snapshot_chunk_rows(5))
    };
    let first = instance("first").start().await.expect("start the first");
    sync(&first).await;
    assert_both_same(&s.db, &d.db).await;

    expire_leases(&s.db).await;
    let second = instance("second").start().await.expect("start the second");
    // A pass of its own: it holds the lease and streams.
    sync(&second).await;
    assert_eq!(snapshot_of(&second).0, State::Idle);

    // The first is asked to copy a table again, and killed once a plan shows at the
    // destination, if one does.
    let planned = async {
        while stored_progress(&d.db)
            .await
            .iter()
            .all(|(_, _, done)| *done)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let answer = tokio::select! {
        answer = first.resync("backup", &["snap_orders"]) => Some(answer),
        () = planned => None,
    };
    first.abort().await;
    if let Some(answer) = answer {
        assert!(
            matches!(&answer, Err(e) if e.is_transient()),
            "the first, no longer holding the lease, stands by: {answer:?}"
        );
    }

    let txn = s.db.begin().await.unwrap();
    customers::ActiveModel::from(customer(201))
        .insert(&txn)
        .await
        .unwrap();
    orders::ActiveModel::from(order(201, 0))
        .insert(&txn)
        .await
        .unwrap();
    txn.commit().await.unwrap();
    let drained = tokio::time::timeout(Duration::from_secs(30), second.drain("backup")).await;
    assert!(
        matches!(drained, Ok(Ok(()))),
        "the destination drains: {drained:?}; copy progress there: {:?}",
        stored_progress(&d.db).await
    );
    assert_both_same(&s.db, &d.db).await;
    second.shutdown().await;
}

/// A destination added while the outbox holds histories whose replay over a copy of the
/// current rows would break a foreign key: a parent deleted and re-created with a new child,
/// a child moved to another parent before its old parent was deleted, a parent deleted with
/// its children. The copy holds the rows as they are now, so replaying the delete of
/// customer 1 would meet order 11, which references its new incarnation.
async fn a_new_destination_meets_parents_deleted_and_recreated(src: Backend, dst: Backend) {
    let (Some(s), Some(d)) = (TestDb::create(src).await, TestDb::create(dst).await) else {
        return;
    };
    existing_rows(&s.db, 0).await;
    let db = &s.db;
    let write = |f: Vec<Step>| async move {
        let txn = db.begin().await.expect("begin");
        for step in f {
            match step {
                Step::Customer(c) => {
                    customers::ActiveModel::from(customer(c))
                        .insert(&txn)
                        .await
                        .expect("customer");
                }
                Step::Order(c, k) => {
                    orders::ActiveModel::from(order(c, k))
                        .insert(&txn)
                        .await
                        .expect("order");
                }
                Step::DeleteCustomer(c) => {
                    customer(c).delete(&txn).await.expect("delete customer");
                }
                Step::DeleteOrder(c, k) => {
                    order(c, k).delete(&txn).await.expect("delete order");
                }
                Step::Move(c, k, to) => {
                    let mut am: orders::ActiveModel = order(c, k).into();
                    am.customer_id = Set(to);
                    am.reset(orders::Column::Id);
                    am.update(&txn).await.expect("move order");
                }
            }
        }
        txn.commit().await.expect("commit");
    };
    use Step::*;
    // Customer 1 deleted and re-created, with a new order.
    write(vec![Customer(1), Order(1, 2)]).await;
    write(vec![
        DeleteOrder(1, 2),
        DeleteCustomer(1),
        Customer(1),
        Order(1, 3),
    ])
    .await;
    // Order (2, 0) moved to customer 4, customer 2 deleted, re-created, and the order moved
    // back to it.
    write(vec![Customer(2), Customer(4), Order(2, 0)]).await;
    write(vec![Move(2, 0, 4), DeleteCustomer(2)]).await;
    write(vec![Customer(2), Move(2, 0, 2)]).await;
    // Customer 3 deleted with its orders.
    write(vec![Customer(3), Order(3, 0), Order(3, 1)]).await;
    write(vec![
        DeleteOrder(3, 0),
        DeleteOrder(3, 1),
        DeleteCustomer(3),
    ])
    .await;

    // One change a batch: a replay in batches could not take the history in one plan.
    let r = start(&s.db)
        .batch_size(1)
        .destination(Destination::new("new", d.db.clone()).create_tables())
        .start()
        .await
        .expect("start");
    snapshot_done(&r, Duration::from_secs(60)).await;
    sync(&r).await;
    let status = r.status().destinations.remove(0);
    assert_ne!(status.state, State::Halted, "{:?}", status.last_error);
    assert_eq!(count(&s.db, "snap_customers").await, 3);
    assert_eq!(count(&s.db, "snap_orders").await, 2);
    assert_both_same(&s.db, &d.db).await;
    // And the stream goes on from there.
    write(vec![
        DeleteOrder(1, 3),
        DeleteCustomer(1),
        Customer(1),
        Order(1, 0),
    ])
    .await;
    sync(&r).await;
    assert_both_same(&s.db, &d.db).await;
    r.shutdown().await;
}

/// A destination that takes the customers a filter admits, added while the source renames
/// one it has already copied out of the filter and then deletes it: the converge that ends
/// the copy finds the key gone, with a last delete whose row the filter refuses, and must
/// still delete the row the copy wrote.
async fn a_row_moved_out_of_the_filter_and_deleted_while_copying_goes(src: Backend, dst: Backend) {
    common::trace();
    let (Some(s), Some(d)) = (TestDb::create(src).await, TestDb::create(dst).await) else {
        return;
    };
    existing_rows(&s.db, scale(src)).await;
    dest_tables(&d.db).await;
    // Key 0 comes first in the copy and has no orders.
    customers::Entity::insert(customers::ActiveModel::from(customers::Model {
        name: "kept for a while".into(),
        ..customer(0)
    }))
    .exec(&s.db)
    .await
    .expect("customer 0");
    let admitted = |row: &ormsync::change::Row| !matches!(row.get("name"), Some(ormsync::value::Value::String(Some(n))) if n.starts_with("out"));
    let r = start(&s.db)
        .destination(
            Destination::new("filtered", d.db.clone())
                .snapshot_chunk_rows(50)
                .filter::<customers::Entity>(ormsync::RowFilter::new(admitted)),
        )
        .start()
        .await
        .expect("start");
    let began = Instant::now();
    while customers::Entity::find_by_id(0i64)
        .one(&d.db)
        .await
        .expect("read")
        .is_none()
    {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "customer 0 never copied"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let txn = s.db.begin().await.expect("begin");
    let mut zero: customers::ActiveModel = customer(0).into();
    zero.name = Set("out of the filter".into());
    let zero = zero.update(&txn).await.expect("rename");
    txn.commit().await.expect("commit");
    let txn = s.db.begin().await.expect("begin");
    zero.delete(&txn).await.expect("delete");
    txn.commit().await.expect("commit");
    let (state, snap, _) = snapshot_of(&r);
    assert!(
        state == State::Copying && !snap.is_some_and(|s| s.is_done()),
        "the copy ended before the source changed customer 0; make the copy longer"
    );
    snapshot_done(&r, Duration::from_secs(240)).await;
    sync(&r).await;
    assert_both_same(&s.db, &d.db).await;
    r.shutdown().await;
}

/// A resync of a parent and a child table after the source moved a child to another parent
/// and deleted the first: the copy of the parents finds the deleted parent at the
/// destination, still referenced there until the children are copied.
async fn resync_after_a_parent_deleted_and_its_child_moved(src: Backend, dst: Backend) {
    let (Some(s), Some(d)) = (TestDb::create(src).await, TestDb::create(dst).await) else {
        return;
    };
    existing_rows(&s.db, 0).await;
    let txn = s.db.begin().await.expect("begin");
    for c in [1, 2] {
        customers::ActiveModel::from(customer(c))
            .insert(&txn)
            .await
            .expect("customer");
    }
    orders::ActiveModel::from(order(1, 2))
        .insert(&txn)
        .await
        .expect("order");
    txn.commit().await.expect("commit");
    // Ships when asked only: the move and the delete wait in the outbox.
    let r = start(&s.db)
        .destination(
            Destination::new("d", d.db.clone())
                .create_tables()
                .schedule(ormsync::Schedule::every(Duration::from_secs(3600))),
        )
        .start()
        .await
        .expect("start");
    sync(&r).await;
    let txn = s.db.begin().await.expect("begin");
    let mut moved: orders::ActiveModel = order(1, 2).into();
    moved.customer_id = Set(2);
    moved.reset(orders::Column::Id);
    moved.update(&txn).await.expect("move");
    customer(1).delete(&txn).await.expect("delete");
    txn.commit().await.expect("commit");

    r.resync("d", &["snap_customers", "snap_orders"])
        .await
        .expect("resync");
    sync(&r).await;
    assert_eq!(count(&d.db, "snap_customers").await, 1);
    assert_both_same(&s.db, &d.db).await;
    r.shutdown().await;
}

#[derive(Clone, Copy)]
enum Step {
    Customer(i64),
    Order(i64, i64),
    DeleteCustomer(i64),
    DeleteOrder(i64, i64),
    /// Order (customer, k) to another customer.
    Move(i64, i64, i64),
}

async fn snapshot_while_four_writers_change_the_rows(src: Backend, dst: Backend) {
    common::trace();
    let (Some(s), Some(d)) = (TestDb::create(src).await, TestDb::create(dst).await) else {
        return;
    };
    let existing = scale(src);
    existing_rows(&s.db, existing).await;
    dest_tables(&d.db).await;
    let rows = existing * (1 + ORDERS_PER_CUSTOMER);

    let (stop, handles) = writers(&s, existing);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let began = Instant::now();
    let r = start(&s.db)
        .destination(Destination::new("backup", d.db.clone()).snapshot_chunk_rows(1000))
        .start()
        .await
        .expect("start");
    let snap = snapshot_done(&r, Duration::from_secs(240)).await;
    let copy_time = began.elapsed();
    // Writes go on for a while after the copy, then stop; the stream catches up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = stop_writers(stop, handles).await;
    sync(&r).await;
    assert_both_same(&s.db, &d.db).await;
    // The same through verify, from the tables' specs alone (as the command line reads them).
    let reports = ormsync::verify::Verifier::new(s.db.clone(), d.db.clone())
        .table(customers::Entity::table_spec())
        .table(orders::Entity::table_spec())
        .verify(&Default::default())
        .await
        .expect("verify");
    assert!(reports.iter().all(|r| r.is_clean()), "{reports:?}");
    assert!(
        snap.rows_copied + snap.rows_deferred >= rows as u64 / 2,
        "{snap:?}"
    );
    eprintln!(
        "{}→{}: snapshot of {} rows ({} existing) in {:.2}s ({:.0} rows/s copying) while 4 writers made {} transactions; {} deferred to the stream",
        src.name(),
        dst.name(),
        snap.rows_copied,
        rows,
        copy_time.as_secs_f64(),
        snap.rows_per_second,
        writes,
        snap.rows_deferred,
    );
    let progress = stored_progress(&d.db).await;
    assert!(progress.iter().all(|(_, _, done)| *done), "{progress:?}");
    r.shutdown().await;
}

async fn a_killed_snapshot_resumes_from_its_last_chunk(src: Backend, dst: Backend) {
    common::trace();
    let (Some(s), Some(d)) = (TestDb::create(src).await, TestDb::create(dst).await) else {
        return;
    };
    let existing = 1_000;
    existing_rows(&s.db, existing).await;
    dest_tables(&d.db).await;
    let total = existing * (1 + ORDERS_PER_CUSTOMER);
    let chunk = 100;

    let first = start(&s.db)
        .destination(Destination::new("backup", d.db.clone()).snapshot_chunk_rows(chunk))
        .start()
        .await
        .expect("start");
    // Kill it once the child table is partly copied.
    let began = Instant::now();
    loop {
        let (state, snap, error) = snapshot_of(&first);
        assert_ne!(state, State::Halted, "halted: {error:?}");
        if snap
            .as_ref()
            .is_some_and(|s| s.tables_done == 1 && s.chunks >= 15)
        {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "no progress: {snap:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.abort().await;
    let before = stored_progress(&d.db).await;
    let copied_before: i64 = before.iter().map(|(_, c, _)| c).sum();
    assert!(
        before.iter().any(|(_, _, done)| !done) && copied_before > existing,
        "killed halfway: {before:?}"
    );

    // Writes while nothing replicates, then a new replicator resumes.
    let txn = s.db.begin().await.unwrap();
    customers::ActiveModel::from(customer(existing + 1))
        .insert(&txn)
        .await
        .unwrap();
    orders::ActiveModel::from(order(existing + 1, 0))
        .insert(&txn)
        .await
        .unwrap();
    let o = orders::Entity::find_by_id(8 * 3)
        .one(&txn)
        .await
        .unwrap()
        .unwrap();
    o.delete(&txn).await.unwrap();
    txn.commit().await.unwrap();

    let second = start(&s.db)
        .destination(Destination::new("backup", d.db.clone()).snapshot_chunk_rows(chunk))
        .start()
        .await
        .expect("restart");
    let snap = snapshot_done(&second, Duration::from_secs(120)).await;
    // It went on from the stored chunk: this run copied only what was left.
    let full_run = (total as u64).div_ceil(chunk);
    assert!(
        snap.chunks < full_run - 10,
        "resumed run copied {} chunks, a full copy takes {full_run}: {snap:?}",
        snap.chunks
    );
    assert!(snap.rows_copied >= total as u64, "{snap:?}");
    // The total for a progress bar: what was there, plus the customer and order added.
    let expected = total as u64 + 1;
    assert!(
        snap.rows_total.is_some_and(|t| t.abs_diff(expected) <= 1),
        "{snap:?}"
    );
    sync(&second).await;
    assert_both_same(&s.db, &d.db).await;
    second.shutdown().await;
}

async fn resync_repairs_a_mangled_table_while_changes_stream(src: Backend, dst: Backend) {
    common::trace();
    let (Some(s), Some(d)) = (TestDb::create(src).await, TestDb::create(dst).await) else {
        return;
    };
    let existing = 600;
    existing_rows(&s.db, existing).await;
    dest_tables(&d.db).await;
    let r = start(&s.db)
        .destination(Destination::new("backup", d.db.clone()).snapshot_chunk_rows(250))
        .start()
        .await
        .expect("start");
    snapshot_done(&r, Duration::from_secs(60)).await;
    sync(&r).await;
    assert_both_same(&s.db, &d.db).await;

    // Break the destination behind ormsync's back: rows gone, rows changed, rows extra.
    let b = d.db.get_database_backend();
    for sql in [
        "DELETE FROM snap_orders WHERE id % 7 = 0",
        "UPDATE snap_orders SET qty = qty + 1000 WHERE id % 5 = 0",
        "INSERT INTO snap_orders (id, customer_id, item, qty) VALUES (900001, 1, 'stray', 1), (900002, 2, 'stray', 2)",
    ] {
        d.db.execute_raw(Statement::from_string(b, sql))
            .await
            .expect(sql);
    }
    let before = ormsync::verify::verify::<orders::Entity>(&s.db, &d.db, &Default::default())
        .await
        .unwrap();
    assert!(!before.is_clean());

    let (stop, handles) = writers(&s, existing);
    tokio::time::sleep(Duration::from_millis(200)).await;
    r.resync("backup", &[orders::Entity::table_spec().table.as_str()])
        .await
        .expect("resync");
    let snap = snapshot_of(&r).1.expect("resync status");
    assert!(snap.is_done() && snap.rows_deleted >= 2, "{snap:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_writers(stop, handles).await;
    sync(&r).await;
    assert_both_same(&s.db, &d.db).await;
    assert!(
        r.resync("backup", &["no_such_table"]).await.is_err(),
        "an unknown table is refused"
    );
    r.shutdown().await;
}

/// A resync that fails for good (a destination column too narrow for the rows) halts the
/// destination with the error in its status, not "copying" for ever; once the column is
/// widened, a resume finishes the copy and the stream goes on.
async fn a_failed_resync_halts_until_resumed(src: Backend, dst: Backend) {
    common::trace();
    let (Some(s), Some(d)) = (TestDb::create(src).await, TestDb::create(dst).await) else {
        return;
    };
    existing_rows(&s.db, 100).await;
    dest_tables(&d.db).await;
    let r = start(&s.db)
        .destination(Destination::new("backup", d.db.clone()).snapshot_chunk_rows(50))
        .start()
        .await
        .expect("start");
    snapshot_done(&r, Duration::from_secs(60)).await;
    sync(&r).await;

    let (narrow, widen) = match d.backend {
        Backend::Postgres => (
            "ALTER TABLE snap_orders ALTER COLUMN item TYPE VARCHAR(4)",
            "ALTER TABLE snap_orders ALTER COLUMN item TYPE TEXT",
        ),
        _ => (
            "ALTER TABLE snap_orders MODIFY item VARCHAR(4) NOT NULL",
            "ALTER TABLE snap_orders MODIFY item VARCHAR(255) NOT NULL",
        ),
    };
    for sql in ["UPDATE snap_orders SET item = 'x'", narrow] {
        d.db.execute_unprepared(sql).await.expect(sql);
    }
    let err = r
        .resync("backup", &[orders::Entity::table_spec().table.as_str()])
        .await
        .expect_err("the rows do not fit");
    let began = Instant::now();
    loop {
        let (state, snap, error) = snapshot_of(&r);
        if state == State::Halted {
            assert!(
                snap.is_none(),
                "a failed copy is not shown as copying: {snap:?}"
            );
            assert!(error.is_some(), "the halt shows its error");
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "halts after the failed resync ({err}): {state:?} {snap:?} {error:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        r.sync_now().await,
        Err(ormsync::Error::Halted { .. })
    ));
    assert!(
        stored_progress(&d.db)
            .await
            .iter()
            .any(|(_, _, done)| !done),
        "the copy stays planned"
    );

    d.db.execute_unprepared(widen).await.expect(widen);
    r.resume("backup").await.expect("resume");
    sync(&r).await;
    assert_both_same(&s.db, &d.db).await;
    assert!(
        stored_progress(&d.db)
            .await
            .iter()
            .all(|(_, _, done)| *done),
        "the copy finished"
    );
    r.shutdown().await;
}

async fn bootstrap_creates_missing_tables_and_refuses_other_columns(src: Backend, dst: Backend) {
    common::trace();
    let (Some(s), Some(d), Some(other)) = (
        TestDb::create(src).await,
        TestDb::create(dst).await,
        TestDb::create(dst).await,
    ) else {
        return;
    };
    existing_rows(&s.db, 50).await;
    // `other` has a customers table with a column missing and one the entity lacks.
    other
        .db
        .execute_unprepared(
            "CREATE TABLE snap_customers (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(100) NOT NULL, \
             nickname VARCHAR(100) NULL)",
        )
        .await
        .unwrap();
    let r = start(&s.db)
        .destination(Destination::new("fresh", d.db.clone()).create_tables())
        .destination(Destination::new("other", other.db.clone()).create_tables())
        .start()
        .await
        .unwrap();
    let txn = s.db.begin().await.unwrap();
    customers::ActiveModel::from(customer(51))
        .insert(&txn)
        .await
        .unwrap();
    orders::ActiveModel::from(order(51, 1))
        .insert(&txn)
        .await
        .unwrap();
    txn.commit().await.unwrap();

    r.sync_destination("fresh").await.expect("fresh");
    assert_both_same(&s.db, &d.db).await;
    assert_eq!(
        count(&d.db, "snap_orders").await,
        50 * ORDERS_PER_CUSTOMER + 1
    );

    let err = r.sync_destination("other").await.expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("snap_customers") && msg.contains("credit") && msg.contains("nickname"),
        "{msg}"
    );
    let status = r.status().destinations.remove(1);
    assert_eq!(status.state, State::Halted);
    // On request, the same check and creation.
    assert_eq!(
        r.create_tables("fresh").await.unwrap(),
        Vec::<String>::new()
    );
    assert!(matches!(
        r.create_tables("other").await,
        Err(ormsync::Error::SchemaMismatch { ref table, ref missing, ref unexpected, .. })
            if table == "snap_customers" && missing == &["credit"] && unexpected == &["nickname"]
    ));
    // Not altered, and its child table not created either.
    let cols = other
        .db
        .query_all_raw(Statement::from_string(
            other.db.get_database_backend(),
            "SELECT * FROM snap_customers",
        ))
        .await
        .unwrap();
    assert!(cols.is_empty());
    assert!(
        other
            .db
            .execute_unprepared("SELECT 1 FROM snap_orders")
            .await
            .is_err(),
        "the child table waits for its parent"
    );
    r.shutdown().await;
}

// ---- self-referencing tables ---------------------------------------------------------------

/// A tree in one table: each node's parent, when it has one, is another node of the table.
pub mod nodes {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "tree_nodes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub parent_id: Option<i64>,
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(belongs_to = "Entity", from = "Column::ParentId", to = "Column::Id")]
        Parent,
    }

    impl Related<Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Parent.def()
        }
    }
}

/// The source's tree table. On PostgreSQL its reference is deferred to the commit, so a
/// transaction may insert a child before its parent, as an application that builds a tree
/// in one transaction may; MariaDB, the destination, checks each row as it is written.
async fn tree_table(db: &TestDb) {
    let sql = match db.backend {
        Backend::Postgres => {
            "CREATE TABLE tree_nodes (id BIGINT PRIMARY KEY, parent_id BIGINT NULL \
             REFERENCES tree_nodes (id) DEFERRABLE INITIALLY DEFERRED, name TEXT NOT NULL)"
        }
        _ => {
            "CREATE TABLE tree_nodes (id BIGINT PRIMARY KEY, parent_id BIGINT NULL \
             REFERENCES tree_nodes (id), name TEXT NOT NULL)"
        }
    };
    db.db.execute_unprepared(sql).await.expect("create tree");
    ormsync::install(&db.db).await.expect("install");
}

/// A random forest drawn from `rng`, growing and changing in transactions: each node gets
/// a random rank and only ever points at a node of higher rank (so the tree stays
/// acyclic), while keys are drawn independently, so parents have higher keys as often as
/// lower ones. Nodes are inserted, re-parented, renamed, deleted when they have no
/// children, and deleted and inserted again under the same key.
struct Forest {
    rank: std::collections::BTreeMap<i64, (u32, Option<i64>)>,
    next_name: u64,
}

impl Forest {
    fn children(&self, id: i64) -> bool {
        self.rank.values().any(|(_, p)| *p == Some(id))
    }

    fn parent_for(&self, rng: &mut rand::rngs::StdRng, rank: u32) -> Option<i64> {
        let above: Vec<i64> = self
            .rank
            .iter()
            .filter(|(_, (r, _))| *r > rank)
            .map(|(id, _)| *id)
            .collect();
        (!above.is_empty() && rng.random_bool(0.85))
            .then(|| above[rng.random_range(0..above.len())])
    }

    fn name(&mut self) -> String {
        self.next_name += 1;
        format!("node {}", self.next_name)
    }

    /// One transaction's models to write: inserts (children first where the source allows
    /// it), updates and deletes, applied to `self` as they are drawn.
    fn transaction(
        &mut self,
        rng: &mut rand::rngs::StdRng,
        children_first: bool,
    ) -> Vec<(bool, nodes::Model)> {
        let mut out = Vec::new();
        // A small subtree inserted at once: a new parent and new children of it.
        if rng.random_bool(0.5) {
            let id = rng.random_range(1..5_000);
            if !self.rank.contains_key(&id) {
                let rank = rng.random_range(1_000..2_000);
                let parent = self.parent_for(rng, rank);
                self.rank.insert(id, (rank, parent));
                let parent_model = nodes::Model {
                    id,
                    parent_id: parent,
                    name: self.name(),
                };
                let mut kids = Vec::new();
                for _ in 0..rng.random_range(0..4) {
                    let kid = rng.random_range(1..5_000);
                    if self.rank.contains_key(&kid) {
                        continue;
                    }
                    self.rank.insert(kid, (rank - 1, Some(id)));
                    kids.push(nodes::Model {
                        id: kid,
                        parent_id: Some(id),
                        name: self.name(),
                    });
                }
                if children_first {
                    out.extend(kids.into_iter().map(|k| (true, k)));
                    out.push((true, parent_model));
                } else {
                    out.push((true, parent_model));
                    out.extend(kids.into_iter().map(|k| (true, k)));
                }
            }
        }
        // A node inserted under a parent written after it, moved under another parent
        // written after the move, and the first parent deleted (before the second is
        // written, or after): the node's first version can never apply once that parent
        // is gone.
        if children_first && rng.random_bool(0.3) {
            let ids: [i64; 3] = std::array::from_fn(|_| rng.random_range(1..5_000));
            let [node, first, second] = ids;
            if node != first
                && node != second
                && first != second
                && ids.iter().all(|id| !self.rank.contains_key(id))
            {
                let rank = rng.random_range(1_000..2_000);
                let first_parent = self.parent_for(rng, rank);
                let second_parent = self.parent_for(rng, rank);
                let mut writes = vec![
                    (true, node, Some(first)),
                    (true, first, first_parent),
                    (true, node, Some(second)),
                    (false, first, first_parent),
                    (true, second, second_parent),
                ];
                if rng.random_bool(0.5) {
                    writes.swap(3, 4);
                }
                for (upsert, id, parent_id) in writes {
                    let name = if upsert { self.name() } else { String::new() };
                    out.push((
                        upsert,
                        nodes::Model {
                            id,
                            parent_id,
                            name,
                        },
                    ));
                }
                self.rank.insert(node, (rank - 1, Some(second)));
                self.rank.insert(second, (rank, second_parent));
            }
        }
        for _ in 0..rng.random_range(1..6) {
            let ids: Vec<i64> = self.rank.keys().copied().collect();
            if ids.is_empty() {
                break;
            }
            let id = ids[rng.random_range(0..ids.len())];
            let (rank, _) = self.rank[&id];
            match rng.random_range(0..10) {
                // Re-parent (or rename, keeping the parent).
                0..=5 => {
                    let parent = if rng.random_bool(0.7) {
                        self.parent_for(rng, rank)
                    } else {
                        self.rank[&id].1
                    };
                    self.rank.insert(id, (rank, parent));
                    out.push((
                        true,
                        nodes::Model {
                            id,
                            parent_id: parent,
                            name: self.name(),
                        },
                    ));
                }
                // Delete a leaf, sometimes inserting it again at once.
                _ if !self.children(id) => {
                    let (_, parent) = self.rank.remove(&id).expect("known");
                    out.push((
                        false,
                        nodes::Model {
                            id,
                            parent_id: parent,
                            name: String::new(),
                        },
                    ));
                    if rng.random_bool(0.4) {
                        let rank = rng.random_range(0..1_000);
                        let parent = self.parent_for(rng, rank);
                        self.rank.insert(id, (rank, parent));
                        out.push((
                            true,
                            nodes::Model {
                                id,
                                parent_id: parent,
                                name: self.name(),
                            },
                        ));
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// Writes `ops` in one transaction: an insert where the key is new to the transaction's
/// view, an update otherwise.
async fn write_tree(db: &DatabaseConnection, ops: Vec<(bool, nodes::Model)>) {
    use sea_orm::EntityTrait;
    let txn = db.begin().await.expect("begin");
    for (upsert, m) in ops {
        let found = nodes::Entity::find_by_id(m.id)
            .one(&txn)
            .await
            .expect("read");
        match (upsert, found) {
            (true, Some(_)) => {
                nodes::ActiveModel::from(m)
                    .reset_all()
                    .update(&txn)
                    .await
                    .expect("update");
            }
            (true, None) => {
                nodes::ActiveModel::from(m)
                    .insert(&txn)
                    .await
                    .expect("insert");
            }
            // Through the model, which the capture sees (`delete_by_id` it would not).
            (false, Some(row)) => {
                row.delete(&txn).await.expect("delete");
            }
            (false, None) => panic!("node {} to delete is not there", m.id),
        }
    }
    txn.commit().await.expect("commit");
}

/// A self-referencing table (a tree) reaches MariaDB, which checks each row's reference as
/// it is written: by the initial copy, in chunks smaller than the tree, with parents at
/// higher keys than their children, and by the stream, with subtrees inserted children
/// first (PostgreSQL's deferred reference allows it), nodes moved under nodes inserted
/// later in the same batch, leaves deleted and inserted again, and (deferred) a node
/// inserted under a parent written after it, moved under another written after the move,
/// and the first parent deleted, all in one transaction. Batches of 5 to 50 changes
/// cut transactions anywhere, a child-first one included. The seed is printed; the end
/// state equals the source's.
async fn trees_arrive_whatever_order_their_rows_come_in(src: Backend) {
    common::trace();
    let seed: u64 = std::env::var("ORMSYNC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("tree seed = {seed} ({})", src.name());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (Some(source), Some(dest)) = (
        TestDb::create(src).await,
        TestDb::create(Backend::MySql).await,
    ) else {
        return;
    };
    tree_table(&source).await;
    let children_first = src == Backend::Postgres;
    let mut forest = Forest {
        rank: Default::default(),
        next_name: 0,
    };
    // Before the replicator starts: the initial copy brings these, 20 rows a chunk.
    for _ in 0..60 {
        let ops = forest.transaction(&mut rng, children_first);
        write_tree(&source.db, ops).await;
    }
    let r = Replicator::builder(source.db.clone())
        .entity::<nodes::Entity>()
        .poll_interval(Duration::from_millis(20))
        .batch_size(rng.random_range(5..50))
        .destination(
            Destination::new("backup", dest.db.clone())
                .create_tables()
                .snapshot_chunk_rows(20),
        )
        .start()
        .await
        .expect("start");
    for _ in 0..150 {
        let ops = forest.transaction(&mut rng, children_first);
        write_tree(&source.db, ops).await;
    }
    sync(&r).await;
    let (state, _, error) = snapshot_of(&r);
    assert_eq!(state, State::Idle, "seed {seed}: {error:?}");
    r.shutdown().await;
    assert!(
        count(&source.db, "tree_nodes WHERE parent_id IS NOT NULL").await > 20,
        "seed {seed}: the forest has trees"
    );
    assert_same::<nodes::Entity>(&source.db, &dest.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trees_arrive_whatever_order_their_rows_come_in_postgres_to_mariadb() {
    trees_arrive_whatever_order_their_rows_come_in(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trees_arrive_whatever_order_their_rows_come_in_sqlite_to_mariadb() {
    trees_arrive_whatever_order_their_rows_come_in(Backend::Sqlite).await
}

/// Parents and children in two tables, the reference deferred at the source.
pub mod deferred {
    pub mod parents {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
        #[sea_orm(table_name = "deferred_parents")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: i64,
            pub name: String,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
    }

    pub mod children {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
        #[sea_orm(table_name = "deferred_children")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: i64,
            pub parent_id: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {
            #[sea_orm(
                belongs_to = "super::parents::Entity",
                from = "Column::ParentId",
                to = "super::parents::Column::Id"
            )]
            Parent,
        }

        impl Related<super::parents::Entity> for Entity {
            fn to() -> RelationDef {
                Relation::Parent.def()
            }
        }
    }
}

/// A PostgreSQL source whose foreign key is deferred to the commit writes children before
/// their parent and deletes a parent before its children, in one transaction each; batches
/// of one change cut every transaction apart. MariaDB checks each row as it is written, yet
/// ends with the source's rows: a change a foreign key refuses is tried again after the rest
/// of its batch, and with the changes after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_transaction_lands_at_mariadb_in_any_order() {
    use deferred::{children, parents};
    common::trace();
    let (Some(source), Some(dest)) = (
        TestDb::create(Backend::Postgres).await,
        TestDb::create(Backend::MySql).await,
    ) else {
        return;
    };
    source
        .db
        .execute_unprepared(
            "CREATE TABLE deferred_parents (id BIGINT PRIMARY KEY, name TEXT NOT NULL); \
             CREATE TABLE deferred_children (id BIGINT PRIMARY KEY, parent_id BIGINT NOT NULL \
             REFERENCES deferred_parents (id) DEFERRABLE INITIALLY DEFERRED)",
        )
        .await
        .expect("create tables");
    ormsync::install(&source.db).await.expect("install");
    let r = Replicator::builder(source.db.clone())
        .entity::<parents::Entity>()
        .entity::<children::Entity>()
        .poll_interval(Duration::from_millis(20))
        .batch_size(1)
        .destination(Destination::new("backup", dest.db.clone()).create_tables())
        .start()
        .await
        .expect("start");
    let child = |id, parent_id| children::ActiveModel::from(children::Model { id, parent_id });
    let parent = |id: i64| {
        parents::ActiveModel::from(parents::Model {
            id,
            name: format!("parent {id}"),
        })
    };

    // The (empty) initial copy done, everything below goes by the stream.
    sync(&r).await;
    // Children first, then their parent.
    let txn = source.db.begin().await.expect("begin");
    for id in 1..=3 {
        child(id, 10).insert(&txn).await.expect("child");
    }
    parent(10).insert(&txn).await.expect("parent");
    txn.commit().await.expect("commit");
    sync(&r).await;
    assert_eq!(count(&dest.db, "deferred_children").await, 3);

    // The parent deleted first, then its children; and a new family, in order.
    let txn = source.db.begin().await.expect("begin");
    parent(10).delete(&txn).await.expect("delete parent");
    for id in 1..=3 {
        child(id, 10).delete(&txn).await.expect("delete child");
    }
    parent(20).insert(&txn).await.expect("parent");
    child(4, 20).insert(&txn).await.expect("child");
    txn.commit().await.expect("commit");
    sync(&r).await;
    let (state, _, error) = snapshot_of(&r);
    assert_ne!(state, State::Halted, "{error:?}");
    r.shutdown().await;
    assert_same::<parents::Entity>(&source.db, &dest.db).await;
    assert_same::<children::Entity>(&source.db, &dest.db).await;
    assert_eq!(count(&dest.db, "deferred_parents").await, 1);
}

/// One write of a source transaction on the deferred tables.
#[derive(Clone, Copy, Debug)]
enum Family {
    /// Insert the child under a parent, or move it there.
    Child(i64, i64),
    /// Insert the parent.
    Parent(i64),
    /// Delete the child.
    NoChild(i64),
    /// Delete the parent.
    NoParent(i64),
}

/// Writes `ops` in one transaction; the source checks its foreign key at the commit.
async fn write_family(db: &DatabaseConnection, ops: &[Family]) {
    use deferred::{children, parents};
    use sea_orm::EntityTrait;
    let txn = db.begin().await.expect("begin");
    for op in ops {
        match *op {
            Family::Child(id, parent_id) => {
                let model = children::ActiveModel::from(children::Model { id, parent_id });
                if children::Entity::find_by_id(id)
                    .one(&txn)
                    .await
                    .expect("read")
                    .is_some()
                {
                    model.reset_all().update(&txn).await.expect("move child");
                } else {
                    model.insert(&txn).await.expect("insert child");
                }
            }
            Family::Parent(id) => {
                parents::ActiveModel::from(parents::Model {
                    id,
                    name: format!("parent {id}"),
                })
                .insert(&txn)
                .await
                .expect("insert parent");
            }
            // Through the model, which the capture sees.
            Family::NoChild(id) => {
                let row = children::Entity::find_by_id(id)
                    .one(&txn)
                    .await
                    .expect("read");
                row.expect("child to delete")
                    .delete(&txn)
                    .await
                    .expect("delete child");
            }
            Family::NoParent(id) => {
                let row = parents::Entity::find_by_id(id)
                    .one(&txn)
                    .await
                    .expect("read");
                row.expect("parent to delete")
                    .delete(&txn)
                    .await
                    .expect("delete parent");
            }
        }
    }
    txn.commit().await.expect("commit");
}

/// Within one PostgreSQL transaction under a deferred foreign key, a child is inserted
/// under a parent, moved to another parent, and the first parent deleted, with either
/// parent written after the child points at it: the child's first version, tried at
/// MariaDB once its parent is gone, can never apply. The child's last version can, and the
/// destination ends with the source's rows, whatever the batch size cuts.
async fn a_child_moved_to_a_later_parent_lands_at_mariadb(batch_size: u64) {
    use Family::*;
    use deferred::{children, parents};
    common::trace();
    let (Some(source), Some(dest)) = (
        TestDb::create(Backend::Postgres).await,
        TestDb::create(Backend::MySql).await,
    ) else {
        return;
    };
    source
        .db
        .execute_unprepared(
            "CREATE TABLE deferred_parents (id BIGINT PRIMARY KEY, name TEXT NOT NULL); \
             CREATE TABLE deferred_children (id BIGINT PRIMARY KEY, parent_id BIGINT NOT NULL \
             REFERENCES deferred_parents (id) DEFERRABLE INITIALLY DEFERRED)",
        )
        .await
        .expect("create tables");
    ormsync::install(&source.db).await.expect("install");
    let r = Replicator::builder(source.db.clone())
        .entity::<parents::Entity>()
        .entity::<children::Entity>()
        .poll_interval(Duration::from_millis(20))
        .batch_size(batch_size)
        .destination(Destination::new("backup", dest.db.clone()).create_tables())
        .start()
        .await
        .expect("start");
    sync(&r).await;
    let transactions: [&[Family]; 6] = [
        // Each parent written after the child points at it; the first one deleted.
        &[
            Child(1, 101),
            Parent(101),
            Child(1, 102),
            Parent(102),
            NoParent(101),
        ],
        // Both moves before either parent.
        &[
            Child(2, 111),
            Child(2, 112),
            Parent(111),
            NoParent(111),
            Parent(112),
        ],
        // Moved twice, the middle parent never written.
        &[
            Child(3, 121),
            Parent(121),
            Child(3, 122),
            Child(3, 123),
            Parent(123),
            NoParent(121),
        ],
        &[
            Child(4, 131),
            Child(4, 132),
            Child(4, 133),
            Parent(131),
            NoParent(131),
            Parent(133),
        ],
        // The first parent deleted and inserted again, and the child moved back to it.
        &[
            Child(5, 141),
            Parent(141),
            Child(5, 142),
            Parent(142),
            NoParent(141),
            Parent(141),
            Child(5, 141),
            NoParent(142),
        ],
        // The child moved, then deleted with its first parent.
        &[
            Child(6, 151),
            Parent(151),
            Child(6, 152),
            NoChild(6),
            NoParent(151),
        ],
    ];
    for ops in transactions {
        write_family(&source.db, ops).await;
        sync(&r).await;
        let (state, _, error) = snapshot_of(&r);
        assert_ne!(
            state,
            State::Halted,
            "batch size {batch_size}, {ops:?}: {error:?}"
        );
    }
    r.shutdown().await;
    assert_same::<parents::Entity>(&source.db, &dest.db).await;
    assert_same::<children::Entity>(&source.db, &dest.db).await;
    assert_eq!(count(&dest.db, "deferred_children").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_moved_to_a_later_parent_lands_at_mariadb_one_change_a_batch() {
    a_child_moved_to_a_later_parent_lands_at_mariadb(1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_moved_to_a_later_parent_lands_at_mariadb_three_changes_a_batch() {
    a_child_moved_to_a_later_parent_lands_at_mariadb(3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_moved_to_a_later_parent_lands_at_mariadb_whole_transactions() {
    a_child_moved_to_a_later_parent_lands_at_mariadb(50).await
}
