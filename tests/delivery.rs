//! Delivery under failure, on real servers: a destination that goes away mid-batch, a
//! replicator killed again and again (applying through one connection or several), a
//! change a destination refuses for good, three instances on one source, many writers
//! with rollbacks, and retention.

#[macro_use]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::entities::{account, accounts, customers, line_items, orders};
use common::proxy::Proxy;
use common::{Backend, TestDb, assert_all_same, count, max_outbox_id, pair};
use ormsync::{
    Alert, AlertKind, Destination, OnPermanentError, Replicator, RetentionPolicy, State,
};
use rand::{Rng, SeedableRng};
use sea_orm::prelude::Decimal;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityTrait, ModelTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Schema, Set,
    TransactionTrait,
};

fn builder(source: &DatabaseConnection) -> ormsync::ReplicatorBuilder {
    Replicator::builder(source.clone())
        .entity::<accounts::Entity>()
        .entity::<line_items::Entity>()
        .poll_interval(Duration::from_millis(30))
        .retry_delays(Duration::from_millis(20), Duration::from_millis(300))
        .lease_ttl(Duration::from_millis(800))
}

/// Collects alerts for assertions.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Alert>>>);

impl Seen {
    fn hook(&self) -> impl Fn(&Alert) + Send + Sync + 'static {
        let seen = self.0.clone();
        move |a: &Alert| seen.lock().unwrap().push(a.clone())
    }
    fn count(&self, destination: &str, kind: fn(&AlertKind) -> bool) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.destination == destination && kind(&a.kind))
            .count()
    }
}

/// Writes `n` single-row transactions: inserts, then updates and deletes of earlier rows.
async fn write_some(db: &DatabaseConnection, from: i64, n: i64) {
    for id in from..from + n {
        let txn = db.begin().await.unwrap();
        account(id, "w", "1").insert(&txn).await.unwrap();
        if id % 3 == 0 {
            account(id - 1, "updated", "2").update(&txn).await.unwrap();
        }
        if id % 7 == 0 {
            accounts::Entity::find_by_id(id - 2)
                .one(&txn)
                .await
                .unwrap()
                .unwrap()
                .delete(&txn)
                .await
                .unwrap();
        }
        txn.commit().await.unwrap();
    }
}

macro_rules! on_server_destinations {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_to_postgres() {
                super::$scenario(Backend::Sqlite, Backend::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_to_mariadb() {
                super::$scenario(Backend::Postgres, Backend::MySql).await
            }
        }
    )*};
}

// A proxy stands only in front of a server, and SQLite applies through one connection
// whatever it is given, so the destination is PostgreSQL or MariaDB.
on_server_destinations!(
    destination_outage,
    a_refusal_through_several_connections_halts_right_before_it
);
on_every_pair!(
    crash_with_sigkill_while_draining,
    crash_with_sigkill_while_applying_through_several_connections,
    a_large_batch_applies_through_several_connections,
    poison_change_halts_or_is_dead_lettered,
    corrupt_outbox_rows_are_parked,
    three_instances_one_shipper_each,
    writers_with_rollbacks,
    retention_keeps_the_outbox_bounded,
);

async fn destination_outage(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let proxy = Proxy::start(d.server_addr()).await;
    let through_proxy = sea_orm::Database::connect(proxy.url_for(&d.url))
        .await
        .unwrap();
    let seen = Seen::default();
    let rep = builder(&s.db)
        .batch_size(50)
        .unavailable_after(3, Duration::from_secs(1))
        .on_alert(seen.hook())
        .destination(Destination::new("backup", through_proxy))
        .start()
        .await
        .unwrap();
    write_some(&s.db, 1, 300).await;
    rep.sync_now().await.unwrap();

    // Writes go on while the destination is cut off, the cut landing mid-batch.
    let writer = {
        let db = s.connect().await;
        // Paced over about two seconds, so changes keep coming while the cut lasts.
        tokio::spawn(async move {
            for from in (301..701).step_by(10) {
                write_some(&db, from, 10).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    proxy.cut();
    // The worker notices and retries while the cut lasts (about three seconds).
    let cut_at = Instant::now();
    let mut retrying = false;
    while cut_at.elapsed() < Duration::from_secs(3) {
        retrying |= rep.status().destinations[0].state == State::Retrying;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = rep.status();
    assert!(
        retrying,
        "the worker never reported retrying during the outage: {status}"
    );
    writer.await.unwrap();
    let backlog = max_outbox_id(&s.db).await - status.destinations[0].watermark;
    proxy.restore();
    let restored = Instant::now();
    rep.drain("backup").await.unwrap();
    eprintln!(
        "figure: {src:?}→{dst:?}: caught up a backlog of {backlog} changes {:?} after the destination came back",
        restored.elapsed()
    );
    assert_all_same(&s.db, &d.db).await;
    assert_eq!(
        seen.count("backup", |k| *k == AlertKind::Unavailable),
        1,
        "one unavailable alert"
    );
    assert_eq!(
        seen.count("backup", |k| *k == AlertKind::Recovered),
        1,
        "one recovered alert"
    );
    rep.shutdown().await;
}

/// How a crash test's shipper applies.
#[derive(Clone, Copy)]
struct Shipping {
    batch: u64,
    connections: usize,
    /// Whether customers and their orders (a foreign key) are replicated too.
    orders: bool,
}

impl Shipping {
    fn builder(self, source: &DatabaseConnection) -> ormsync::ReplicatorBuilder {
        let b = builder(source).batch_size(self.batch);
        if self.orders {
            b.entity::<customers::Entity>().entity::<orders::Entity>()
        } else {
            b
        }
    }

    fn destination(self, db: DatabaseConnection) -> Destination {
        // The backlog is drained by the stream, not absorbed by a first copy.
        Destination::new("dest", db)
            .initial_snapshot(false)
            .apply_connections(self.connections)
    }

    fn env(self) -> [(&'static str, String); 3] {
        [
            ("ORMSYNC_CHILD_BATCH", self.batch.to_string()),
            ("ORMSYNC_CHILD_CONNECTIONS", self.connections.to_string()),
            ("ORMSYNC_CHILD_ORDERS", u8::from(self.orders).to_string()),
        ]
    }

    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).unwrap_or_default();
        Shipping {
            batch: var("ORMSYNC_CHILD_BATCH").parse().unwrap_or(53),
            connections: var("ORMSYNC_CHILD_CONNECTIONS").parse().unwrap_or(1),
            orders: var("ORMSYNC_CHILD_ORDERS") == "1",
        }
    }
}

/// The child side of the crash tests: ships until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the crash tests as a child process"]
async fn child_shipper() {
    let (Ok(source), Ok(dest)) = (
        std::env::var("ORMSYNC_CHILD_SOURCE"),
        std::env::var("ORMSYNC_CHILD_DEST"),
    ) else {
        return;
    };
    let shipping = Shipping::from_env();
    let source = sea_orm::Database::connect(&source).await.unwrap();
    let dest = sea_orm::Database::connect(&dest).await.unwrap();
    let rep = shipping
        .builder(&source)
        .instance_id(format!("child-{}", std::process::id()))
        .destination(shipping.destination(dest))
        .start()
        .await
        .unwrap();
    loop {
        let _ = rep.sync_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn crash_with_sigkill_while_draining(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    // A backlog of 10,000+ changes in which later changes undo earlier ones: a batch
    // applied twice would resurrect deleted rows or roll values back.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut next = 1;
    while max_outbox_id(&s.db).await < 10_000 {
        let txn = s.db.begin().await.unwrap();
        write_accounts(&txn, &mut rng, &mut next, 250).await;
        txn.commit().await.unwrap();
    }
    let shipping = Shipping {
        batch: 53,
        connections: 1,
        orders: false,
    };
    kill_shippers_then_check(&s, &d, shipping, &mut rng).await;
}

/// The same with each batch applied through three connections at once, and a history
/// drawn from a seed that mixes the accounts with customers and their orders: customers
/// created, orders placed, moved to another customer, customers deleted with their orders
/// and created again under the same key.
async fn crash_with_sigkill_while_applying_through_several_connections(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    for db in [&s.db, &d.db] {
        let schema = Schema::new(db.get_database_backend());
        db.execute(&schema.create_table_from_entity(customers::Entity))
            .await
            .unwrap();
        db.execute(&schema.create_table_from_entity(orders::Entity))
            .await
            .unwrap();
    }
    let mut rng = common::seeded_rng(&format!("{src:?}→{dst:?}: several connections"));
    let (mut next, mut next_customer, mut next_order) = (1, 1, 1);
    while max_outbox_id(&s.db).await < 12_000 {
        let txn = s.db.begin().await.unwrap();
        match rng.random_range(0..5) {
            0 => write_accounts(&txn, &mut rng, &mut next, 200).await,
            1 => {
                for _ in 0..150 {
                    customer(next_customer).insert(&txn).await.unwrap();
                    next_customer += 1;
                }
            }
            2 => {
                for _ in 0..200 {
                    if let Some(c) = some_customer(&txn, &mut rng).await {
                        order(next_order, c, "placed").insert(&txn).await.unwrap();
                        next_order += 1;
                    }
                }
            }
            3 => {
                for _ in 0..100 {
                    let (Some(o), Some(c)) = (
                        some_order(&txn, &mut rng).await,
                        some_customer(&txn, &mut rng).await,
                    ) else {
                        continue;
                    };
                    let mut o: orders::ActiveModel = o.into();
                    o.customer_id = Set(c);
                    o.item = Set(format!("moved to {c}"));
                    o.update(&txn).await.unwrap();
                }
            }
            _ => {
                for _ in 0..15 {
                    let Some(c) = some_customer(&txn, &mut rng).await else {
                        continue;
                    };
                    // Row by row, through the models: what captures.
                    let placed = orders::Entity::find()
                        .filter(orders::Column::CustomerId.eq(c))
                        .all(&txn)
                        .await
                        .unwrap();
                    for o in placed {
                        o.delete(&txn).await.unwrap();
                    }
                    let gone = customers::Entity::find_by_id(c).one(&txn).await.unwrap();
                    gone.unwrap().delete(&txn).await.unwrap();
                    if rng.random_bool(0.5) {
                        customer(c).insert(&txn).await.unwrap();
                        order(next_order, c, "again").insert(&txn).await.unwrap();
                        next_order += 1;
                    }
                }
            }
        }
        txn.commit().await.unwrap();
    }
    let shipping = Shipping {
        batch: 400,
        connections: 3,
        orders: true,
    };
    kill_shippers_then_check(&s, &d, shipping, &mut rng).await;
    common::assert_same::<customers::Entity>(&s.db, &d.db).await;
    common::assert_same::<orders::Entity>(&s.db, &d.db).await;
}

/// Inserts `n` accounts, each time updating or deleting an earlier one at random.
async fn write_accounts(
    txn: &DatabaseTransaction,
    rng: &mut rand::rngs::StdRng,
    next: &mut i64,
    n: usize,
) {
    for _ in 0..n {
        account(*next, "v0", "1").insert(txn).await.unwrap();
        let old = rng.random_range(1..=*next);
        if let Some(m) = accounts::Entity::find_by_id(old).one(txn).await.unwrap() {
            if rng.random_bool(0.3) {
                m.delete(txn).await.unwrap();
            } else {
                let mut a: accounts::ActiveModel = m.into();
                a.name = Set(format!("v{next}"));
                a.update(txn).await.unwrap();
            }
        }
        *next += 1;
    }
}

fn customer(id: i64) -> customers::ActiveModel {
    customers::ActiveModel {
        id: Set(id),
        name: Set(format!("customer {id}")),
        credit: Set(Decimal::new(id * 100 + 7, 2)),
        local_note: Set(None),
    }
}

fn order(id: i64, customer_id: i64, item: &str) -> orders::ActiveModel {
    orders::ActiveModel {
        id: Set(id),
        customer_id: Set(customer_id),
        item: Set(item.into()),
        qty: Set((id % 9 + 1) as i32),
    }
}

/// The id of a customer the source holds, picked at random, if it holds any.
async fn some_customer(txn: &DatabaseTransaction, rng: &mut rand::rngs::StdRng) -> Option<i64> {
    let n = customers::Entity::find().count(txn).await.unwrap();
    let at = rng.random_range(0..n.max(1));
    customers::Entity::find()
        .order_by_asc(customers::Column::Id)
        .offset(at)
        .one(txn)
        .await
        .unwrap()
        .map(|c| c.id)
}

/// An order the source holds, picked at random, if it holds any.
async fn some_order(
    txn: &DatabaseTransaction,
    rng: &mut rand::rngs::StdRng,
) -> Option<orders::Model> {
    let n = orders::Entity::find().count(txn).await.unwrap();
    let at = rng.random_range(0..n.max(1));
    orders::Entity::find()
        .order_by_asc(orders::Column::Id)
        .offset(at)
        .one(txn)
        .await
        .unwrap()
}

/// Starts a shipper process and kills it (SIGKILL) at a random moment once it is seen
/// shipping, again and again, then drains what is left in this process and checks the
/// destination holds the source's rows, with every change applied.
async fn kill_shippers_then_check(
    s: &TestDb,
    d: &TestDb,
    shipping: Shipping,
    rng: &mut rand::rngs::StdRng,
) {
    let (src, dst) = (s.backend, d.backend);
    log_writes(d).await;
    let total = max_outbox_id(&s.db).await;
    let exe = std::env::current_exe().unwrap();
    let source_id = ormsync::outbox::node_id(&s.db).await.unwrap();
    let mut mid_drain = 0;
    for round in 0..8 {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "child_shipper",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("ORMSYNC_CHILD_SOURCE", &s.url)
            .env("ORMSYNC_CHILD_DEST", &d.url)
            .envs(shipping.env())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill it at a random moment once it is seen shipping (a successor first waits for
        // the killed one's lease to expire).
        let before = ormsync::apply::read_checkpoint(&d.db, &source_id)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
            .frontier();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let now = ormsync::apply::read_checkpoint(&d.db, &source_id)
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            if now.frontier() > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let p = ormsync::apply::read_checkpoint(&d.db, &source_id)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        eprintln!(
            "{src:?}→{dst:?}: killed shipper {round} at watermark {} of {total} \
             ({} more applied above it)",
            p.watermark,
            p.above.len()
        );
        if p.watermark == total {
            break;
        }
        if p.watermark > 0 {
            mid_drain += 1;
        }
    }
    assert!(
        mid_drain >= 2,
        "the shipper was killed mid-drain only {mid_drain} times"
    );
    let rep = shipping
        .builder(&s.db)
        .destination(shipping.destination(d.db.clone()))
        .start()
        .await
        .unwrap();
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
    rep.shutdown().await;
    assert_written_once(d).await;
}

/// Asserts no account version was written twice at `db` (see [`log_writes`]). In these
/// tests every account version is a change of its own (a name no other change writes),
/// so a version written twice is a change applied twice.
async fn assert_written_once(db: &TestDb) {
    let twice = db
        .db
        .query_all_raw(sea_orm::Statement::from_string(
            db.db.get_database_backend(),
            "SELECT id, name, COUNT(*) AS n FROM account_writes GROUP BY id, name \
             HAVING COUNT(*) > 1",
        ))
        .await
        .unwrap();
    let twice: Vec<(i64, String, i64)> = twice
        .iter()
        .map(|r| {
            (
                r.try_get("", "id").unwrap(),
                r.try_get("", "name").unwrap(),
                r.try_get("", "n").unwrap(),
            )
        })
        .collect();
    assert!(
        twice.is_empty(),
        "{:?}: account versions written more than once: {twice:?}",
        db.backend
    );
}

/// Makes `db` log every account row written (inserted or updated) in `account_writes`.
async fn log_writes(db: &TestDb) {
    let sql: &[&str] = match db.backend {
        Backend::Postgres => &[
            "CREATE TABLE account_writes (id BIGINT NOT NULL, name TEXT NOT NULL)",
            "CREATE FUNCTION log_account_write() RETURNS trigger AS $$ BEGIN \
             INSERT INTO account_writes VALUES (NEW.id, NEW.name); RETURN NEW; END $$ \
             LANGUAGE plpgsql",
            "CREATE TRIGGER account_written AFTER INSERT OR UPDATE ON accounts \
             FOR EACH ROW EXECUTE FUNCTION log_account_write()",
        ],
        Backend::MySql => &[
            "CREATE TABLE account_writes (id BIGINT NOT NULL, name VARCHAR(255) NOT NULL)",
            "CREATE TRIGGER account_inserted AFTER INSERT ON accounts FOR EACH ROW \
             INSERT INTO account_writes VALUES (NEW.id, NEW.name)",
            "CREATE TRIGGER account_updated AFTER UPDATE ON accounts FOR EACH ROW \
             INSERT INTO account_writes VALUES (NEW.id, NEW.name)",
        ],
        Backend::Sqlite => &[
            "CREATE TABLE account_writes (id INTEGER NOT NULL, name TEXT NOT NULL)",
            "CREATE TRIGGER account_inserted AFTER INSERT ON accounts BEGIN \
             INSERT INTO account_writes VALUES (NEW.id, NEW.name); END",
            "CREATE TRIGGER account_updated AFTER UPDATE ON accounts BEGIN \
             INSERT INTO account_writes VALUES (NEW.id, NEW.name); END",
        ],
    };
    for statement in sql {
        db.db.execute_unprepared(statement).await.unwrap();
    }
}

/// A batch of 2,000 inserts applied through four connections: the destination ends with
/// the source's rows, and PostgreSQL, which records the transaction that wrote each row,
/// shows the rows came in more than one.
async fn a_large_batch_applies_through_several_connections(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    accounts_in_one_transaction(&s.db, 2000, None).await;
    let rep = one_batch_through(&s.db, "dest", &d.db, 4).await;
    rep.drain("dest").await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    assert_eq!(count(&d.db, "accounts").await, 2000);
    if dst == Backend::Postgres {
        let row =
            d.db.query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT count(DISTINCT xmin::text) AS n FROM accounts",
            ))
            .await
            .unwrap()
            .unwrap();
        let writers: i64 = row.try_get("", "n").unwrap();
        assert!(
            writers > 1,
            "the batch's rows were written by {writers} transaction(s)"
        );
    }
    rep.shutdown().await;
}

/// A change the destination refuses in a batch applied through several connections: the
/// destination halts holding exactly the changes before it, as through one connection,
/// not later rows that other connections had written; once the cause is fixed it ends
/// with the source's rows, each version written once.
async fn a_refusal_through_several_connections_halts_right_before_it(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    refuse_negative(&d).await;
    log_writes(&d).await;
    accounts_in_one_transaction(&s.db, 600, Some(300)).await;
    let rep = one_batch_through(&s.db, "strict", &d.db, 3).await;
    let _ = rep.sync_now().await;
    let err = rep.sync_destination("strict").await.unwrap_err();
    assert!(matches!(err, ormsync::Error::Halted { .. }), "{err}");
    assert_eq!(
        ids(&d.db).await,
        (1..300).collect::<Vec<_>>(),
        "everything before the refused change, nothing after it"
    );
    accept_negative(&d).await;
    rep.resume("strict").await.unwrap();
    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
    assert_written_once(&d).await;
}

/// Inserts accounts 1 to `n` in one transaction, `negative` with a negative balance.
async fn accounts_in_one_transaction(db: &DatabaseConnection, n: i64, negative: Option<i64>) {
    let txn = db.begin().await.unwrap();
    for id in 1..=n {
        let balance = if Some(id) == negative { "-5" } else { "5" };
        account(id, &format!("a{id}"), balance)
            .insert(&txn)
            .await
            .unwrap();
    }
    txn.commit().await.unwrap();
}

/// A replicator reading the whole outbox in one batch, which destination `name` at `db`
/// applies through `k` connections.
async fn one_batch_through(
    source: &DatabaseConnection,
    name: &str,
    db: &DatabaseConnection,
    k: usize,
) -> Replicator {
    builder(source)
        .batch_size(5000)
        .destination(
            Destination::new(name, db.clone())
                .initial_snapshot(false)
                .apply_connections(k),
        )
        .start()
        .await
        .unwrap()
}

/// Makes `db` refuse accounts with a negative balance, in a way that can be undone.
async fn refuse_negative(db: &TestDb) {
    let sql: &[&str] = match db.backend {
        Backend::Sqlite => &[
            "CREATE TRIGGER no_negative_i BEFORE INSERT ON accounts WHEN NEW.balance < 0 BEGIN SELECT RAISE(ABORT, 'negative balance'); END",
            "CREATE TRIGGER no_negative_u BEFORE UPDATE ON accounts WHEN NEW.balance < 0 BEGIN SELECT RAISE(ABORT, 'negative balance'); END",
        ],
        _ => &["ALTER TABLE accounts ADD CONSTRAINT no_negative CHECK (balance >= 0)"],
    };
    for s in sql {
        db.db.execute_unprepared(s).await.unwrap();
    }
}

async fn accept_negative(db: &TestDb) {
    let sql: &[&str] = match db.backend {
        Backend::Sqlite => &["DROP TRIGGER no_negative_i", "DROP TRIGGER no_negative_u"],
        _ => &["ALTER TABLE accounts DROP CONSTRAINT no_negative"],
    };
    for s in sql {
        db.db.execute_unprepared(s).await.unwrap();
    }
}

async fn ids(db: &DatabaseConnection) -> Vec<i64> {
    let mut ids: Vec<i64> = accounts::Entity::find()
        .all(db)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    ids.sort();
    ids
}

async fn poison_change_halts_or_is_dead_lettered(src: Backend, dst: Backend) {
    for policy in [OnPermanentError::Halt, OnPermanentError::DeadLetter] {
        let Some((s, strict)) = pair(src, dst).await else {
            return;
        };
        let Some(plain) = TestDb::create(dst).await else {
            return;
        };
        plain.create_tables().await;
        refuse_negative(&strict).await;
        let seen = Seen::default();
        let rep = builder(&s.db)
            .on_alert(seen.hook())
            // Without the initial snapshot: this is about the stream's order around a poison
            // change, and a snapshot would copy the rows after it.
            .destination(
                Destination::new("strict", strict.db.clone())
                    .on_permanent_error(policy)
                    .initial_snapshot(false),
            )
            .destination(Destination::new("plain", plain.db.clone()))
            .start()
            .await
            .unwrap();
        for id in 1..=20 {
            let txn = s.db.begin().await.unwrap();
            account(id, "x", if id == 13 { "-5" } else { "5" })
                .insert(&txn)
                .await
                .unwrap();
            txn.commit().await.unwrap();
        }
        // A later change of the poisoned row, still negative, and one of another row.
        let txn = s.db.begin().await.unwrap();
        account(13, "again", "-6").update(&txn).await.unwrap();
        account(14, "later", "7").update(&txn).await.unwrap();
        txn.commit().await.unwrap();

        let _ = rep.sync_now().await;
        rep.sync_destination("plain").await.unwrap();
        assert_all_same(&s.db, &plain.db).await;
        match policy {
            OnPermanentError::Halt => {
                let err = rep.sync_destination("strict").await.unwrap_err();
                assert!(matches!(err, ormsync::Error::Halted { .. }), "{err}");
                assert_eq!(
                    ids(&strict.db).await,
                    (1..=12).collect::<Vec<_>>(),
                    "nothing after the poison applied"
                );
                assert_eq!(rep.status().destinations[0].state, State::Halted);
                assert_eq!(seen.count("strict", |k| *k == AlertKind::Halted), 1);
                accept_negative(&strict).await;
                rep.resume("strict").await.unwrap();
            }
            OnPermanentError::DeadLetter => {
                rep.sync_destination("strict").await.unwrap();
                let expected: Vec<i64> = (1..=20).filter(|&i| i != 13).collect();
                assert_eq!(ids(&strict.db).await, expected, "later changes went on");
                let parked = rep.dead_letters("strict").await.unwrap();
                let parked_ids: Vec<(String, i64)> = parked
                    .iter()
                    .map(|l| (l.key.clone(), l.outbox_id))
                    .collect();
                assert_eq!(
                    parked.len(),
                    2,
                    "the poison and the later change of its row: {parked_ids:?}"
                );
                assert!(
                    parked.iter().all(|l| l.key.contains("13")),
                    "{parked_ids:?}"
                );
                assert_eq!(
                    seen.count("strict", |k| matches!(k, AlertKind::DeadLettered { .. })),
                    1
                );
                let again = rep.replay_dead_letters("strict").await.unwrap();
                assert_eq!(
                    (again.replayed, again.failed),
                    (0, 2),
                    "still refused before the fix"
                );
                accept_negative(&strict).await;
                let fixed = rep.replay_dead_letters("strict").await.unwrap();
                assert_eq!((fixed.replayed, fixed.failed), (2, 0));
                assert!(rep.dead_letters("strict").await.unwrap().is_empty());
            }
        }
        rep.sync_now().await.unwrap();
        assert_all_same(&s.db, &strict.db).await;
        rep.shutdown().await;
    }
}

async fn update_account(db: &DatabaseConnection, id: i64, name: &str) {
    let txn = db.begin().await.unwrap();
    account(id, name, "7").update(&txn).await.unwrap();
    txn.commit().await.unwrap();
}

/// Outbox rows a bad restore or a hand-made edit leaves behind: a payload that is not
/// JSON, a table the replicator does not know, and text for a decimal column.
/// A destination that parks refused changes parks them and goes on; one that halts stops
/// on each until an operator parks it by hand. Nothing else is lost or held back.
async fn corrupt_outbox_rows_are_parked(src: Backend, dst: Backend) {
    let Some((s, lenient)) = pair(src, dst).await else {
        return;
    };
    let Some(strict) = TestDb::create(dst).await else {
        return;
    };
    strict.create_tables().await;
    for id in 1..=8 {
        let txn = s.db.begin().await.unwrap();
        account(id, "x", "5").insert(&txn).await.unwrap();
        txn.commit().await.unwrap();
    }
    let backend = s.db.get_database_backend();
    let outbox_id_of = |id: i64| {
        let db = s.db.clone();
        async move {
            let row = db
                .query_one_raw(sea_orm::Statement::from_string(
                    backend,
                    format!(
                        "SELECT MAX(id) AS id FROM ormsync_outbox WHERE table_name = 'accounts' \
                         AND pk LIKE '%:{id}}}%'"
                    ),
                ))
                .await
                .unwrap()
                .unwrap();
            row.try_get_by_index::<i64>(0).unwrap()
        }
    };
    let (broken, applied) = (outbox_id_of(4).await, outbox_id_of(1).await);
    s.db.execute_unprepared(&format!(
        "UPDATE ormsync_outbox SET payload = '{{\"name\": ' WHERE id = {broken}"
    ))
    .await
    .unwrap();
    let stray = outbox_id_of(6).await;
    s.db.execute_unprepared(&format!(
        "UPDATE ormsync_outbox SET table_name = 'no_such_table' WHERE id = {stray}"
    ))
    .await
    .unwrap();
    // Text for a decimal column: PostgreSQL refuses it, MariaDB takes text that reads as a
    // number, SQLite would keep it as text.
    let mistyped = outbox_id_of(8).await;
    s.db.execute_unprepared(&format!(
        "UPDATE ormsync_outbox SET payload = REPLACE(payload, '{{\"dec\":', '{{\"s\":') \
         WHERE id = {mistyped}"
    ))
    .await
    .unwrap();
    // A later change of the broken row waits behind it.
    update_account(&s.db, 4, "later").await;

    let seen = Seen::default();
    let rep = builder(&s.db)
        .on_alert(seen.hook())
        .destination(
            Destination::new("lenient", lenient.db.clone())
                .on_permanent_error(OnPermanentError::DeadLetter)
                .initial_snapshot(false),
        )
        .destination(Destination::new("strict", strict.db.clone()).initial_snapshot(false))
        .start()
        .await
        .unwrap();
    let expected: Vec<i64> = vec![1, 2, 3, 5, 7];

    rep.sync_destination("lenient").await.unwrap();
    assert_eq!(ids(&lenient.db).await, expected);
    let parked: Vec<i64> = rep
        .dead_letters("lenient")
        .await
        .unwrap()
        .iter()
        .map(|l| l.outbox_id)
        .collect();
    assert_eq!(
        parked.len(),
        4,
        "three rows and the change behind one: {parked:?}"
    );
    for id in [broken, stray, mistyped] {
        assert!(parked.contains(&id), "{id} in {parked:?}");
    }
    assert_eq!(
        seen.count("lenient", |k| matches!(k, AlertKind::DeadLettered { .. })),
        3
    );
    // Replaying does not make them any better: all stay parked.
    let again = rep.replay_dead_letters("lenient").await.unwrap();
    assert_eq!((again.replayed, again.failed), (0, 4));
    let letters = rep.dead_letters("lenient").await.unwrap();
    let behind = letters
        .iter()
        .find(|l| ![broken, stray, mistyped].contains(&l.outbox_id))
        .unwrap();
    assert!(
        behind.error.contains(&format!("behind change {broken}")),
        "a change waiting behind another says so: {}",
        behind.error
    );

    let err = rep.sync_destination("strict").await.unwrap_err();
    assert!(matches!(err, ormsync::Error::Halted { .. }), "{err}");
    assert_eq!(ids(&strict.db).await, vec![1, 2, 3]);
    let refused = ormsync::outbox::dead_letters::park_by_hand(&s.db, "strict", applied)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ormsync::Error::NotParkable { .. }),
        "{refused}"
    );
    let unknown = ormsync::outbox::dead_letters::park_by_hand(&s.db, "nosuch", broken)
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, ormsync::Error::UnknownDestination(_)),
        "{unknown}"
    );
    ormsync::outbox::dead_letters::park_by_hand(&s.db, "strict", broken)
        .await
        .unwrap();
    rep.resume("strict").await.unwrap();
    let err = rep.sync_destination("strict").await.unwrap_err();
    assert!(
        err.to_string().contains("no_such_table"),
        "halts next on the unknown table: {err}"
    );
    ormsync::outbox::dead_letters::park_by_hand(&s.db, "strict", stray)
        .await
        .unwrap();
    rep.resume("strict").await.unwrap();
    let err = rep.sync_destination("strict").await.unwrap_err();
    assert!(
        err.to_string().contains("numeric column"),
        "halts next on the text for a decimal, on every backend: {err}"
    );
    ormsync::outbox::dead_letters::park_by_hand(&s.db, "strict", mistyped)
        .await
        .unwrap();
    rep.resume("strict").await.unwrap();
    rep.sync_destination("strict").await.unwrap();
    assert_eq!(ids(&strict.db).await, expected);
    assert_eq!(rep.dead_letters("strict").await.unwrap().len(), 4);

    // Once discarded, the rows' later changes ship again.
    for name in ["lenient", "strict"] {
        let all: Vec<i64> = rep
            .dead_letters(name)
            .await
            .unwrap()
            .iter()
            .map(|l| l.outbox_id)
            .collect();
        assert_eq!(rep.discard_dead_letters(name, &all).await.unwrap(), 4);
    }
    for id in [4, 6, 8] {
        update_account(&s.db, id, "fixed").await;
    }
    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &lenient.db).await;
    assert_all_same(&s.db, &strict.db).await;
    rep.shutdown().await;
}

fn active(rep: &Replicator, destination: &str) -> bool {
    rep.status().destinations.iter().any(|d| {
        d.name == destination && matches!(d.state, State::Running | State::Idle | State::Retrying)
    })
}

async fn three_instances_one_shipper_each(src: Backend, dst: Backend) {
    let Some((s, a)) = pair(src, dst).await else {
        return;
    };
    let Some(b) = TestDb::create(dst).await else {
        return;
    };
    b.create_tables().await;
    let mut instances = Vec::new();
    for i in 0..3 {
        let rep = builder(&s.db)
            .instance_id(format!("app-{i}"))
            .destination(Destination::new("a", a.db.clone()))
            .destination(Destination::new("b", b.db.clone()))
            .start()
            .await
            .unwrap();
        instances.push(Some(rep));
    }
    let writer = {
        let db = s.connect().await;
        tokio::spawn(async move { write_some(&db, 1, 400).await })
    };
    let mut killed = None;
    let mut takeover = None;
    let started = Instant::now();
    while !writer.is_finished() || started.elapsed() < Duration::from_secs(4) {
        for dest in ["a", "b"] {
            let n = instances
                .iter()
                .flatten()
                .filter(|r| active(r, dest))
                .count();
            assert!(n <= 1, "{n} instances ship to `{dest}` at once");
        }
        if killed.is_none() && started.elapsed() > Duration::from_millis(1500) {
            // Kill whichever instance ships to `a`, as a crash would.
            if let Some(i) = instances
                .iter()
                .position(|r| r.as_ref().is_some_and(|r| active(r, "a")))
            {
                instances[i].take().unwrap().abort().await;
                killed = Some(Instant::now());
            }
        }
        if let (Some(k), None) = (killed, takeover)
            && instances.iter().flatten().any(|r| active(r, "a"))
        {
            takeover = Some(k.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.await.unwrap();
    let takeover = takeover.expect("another instance took over destination `a`");
    eprintln!(
        "figure: {src:?}→{dst:?}: lease takeover after the holder died: {takeover:?} (ttl 800 ms)"
    );
    let survivor = instances.iter().flatten().next().unwrap();
    survivor.drain("a").await.unwrap();
    survivor.drain("b").await.unwrap();
    assert_all_same(&s.db, &a.db).await;
    assert_all_same(&s.db, &b.db).await;
    let top = max_outbox_id(&s.db).await;
    for d in [&a, &b] {
        let p = ormsync::apply::read_checkpoint(&d.db, survivor.source_id())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.watermark, top);
    }
    for rep in instances.into_iter().flatten() {
        rep.shutdown().await;
    }
}

async fn random_transaction(
    db: &DatabaseConnection,
    rng: &mut rand::rngs::StdRng,
) -> Result<bool, DbErr> {
    let txn = db.begin().await?;
    let work = async {
        for _ in 0..rng.random_range(1..=5) {
            let id = rng.random_range(1..=300);
            match accounts::Entity::find_by_id(id).one(&txn).await? {
                None => {
                    account(id, "n", "1").insert(&txn).await?;
                }
                Some(m) if rng.random_bool(0.2) => {
                    m.delete(&txn).await?;
                }
                Some(m) => {
                    let mut a: accounts::ActiveModel = m.into();
                    a.balance = Set(Decimal::new(rng.random_range(0..100_000), 2));
                    a.update(&txn).await?;
                }
            }
        }
        Ok::<(), DbErr>(())
    };
    if let Err(e) = work.await {
        txn.rollback().await?;
        return Err(e);
    }
    if rng.random_bool(0.1) {
        txn.rollback().await?;
        Ok(false)
    } else {
        txn.commit().await?;
        Ok(true)
    }
}

async fn writers_with_rollbacks(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = builder(&s.db)
        .destination(Destination::new("dest", d.db.clone()))
        .start()
        .await
        .unwrap();
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let db = s.connect().await;
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(100 + w);
            let (mut committed, mut rolled_back) = (0u32, 0u32);
            // 5,000 transactions across the 8 writers.
            for _ in 0..625 {
                loop {
                    match random_transaction(&db, &mut rng).await {
                        Ok(true) => committed += 1,
                        Ok(false) => rolled_back += 1,
                        // Deadlocks, busy SQLite, racing inserts: that attempt rolled back.
                        Err(_) => continue,
                    }
                    break;
                }
            }
            (committed, rolled_back)
        }));
    }
    let (mut committed, mut rolled_back) = (0, 0);
    for w in writers {
        let (c, r) = w.await.unwrap();
        committed += c;
        rolled_back += r;
    }
    assert_eq!(committed + rolled_back, 5000);
    assert!(rolled_back > 300, "about 10% rolled back: {rolled_back}");
    rep.drain("dest").await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

async fn retention_keeps_the_outbox_bounded(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    // A destination that was removed long ago still has progress at the source, at zero.
    s.db.execute_unprepared(
        "INSERT INTO ormsync_progress (destination, watermark, frontier) VALUES ('ghost', 0, 0)",
    )
    .await
    .unwrap();
    let seen = Seen::default();
    let rep = builder(&s.db)
        .retention(
            RetentionPolicy::default()
                .every(Duration::from_millis(200))
                .max_age(Duration::from_secs(2))
                .step(100),
        )
        .on_alert(seen.hook())
        .destination(Destination::new("dest", d.db.clone()))
        .start()
        .await
        .unwrap();
    let writer = {
        let db = s.connect().await;
        // Paced, so the run lasts well past the 2 s maximum retention on every backend.
        tokio::spawn(async move {
            for from in (1..1500).step_by(50) {
                write_some(&db, from, 50).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    let mut largest = 0;
    let mut samples = Vec::new();
    while !writer.is_finished() {
        let n = count(&s.db, "ormsync_outbox").await;
        largest = largest.max(n);
        samples.push(n);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    writer.await.unwrap();
    let total = max_outbox_id(&s.db).await;
    rep.drain("dest").await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_all_same(&s.db, &d.db).await;
    let left = count(&s.db, "ormsync_outbox").await;
    eprintln!(
        "figure: {src:?}→{dst:?}: outbox size over the run (every 250 ms): {samples:?}; {total} changes, {left} left at the end"
    );
    // The ghost pins rows for at most 2 s: the outbox stays well under the total.
    assert!(
        largest < total * 2 / 3,
        "largest outbox {largest} of {total} changes"
    );
    assert!(seen.count("ghost", |k| *k == AlertKind::RetentionWarning) >= 1);
    assert!(seen.count("ghost", |k| matches!(k, AlertKind::RetentionDropped { .. })) >= 1);
    assert_eq!(
        seen.count("dest", |k| matches!(k, AlertKind::RetentionDropped { .. })),
        0,
        "nothing unapplied dropped"
    );
    rep.shutdown().await;
}

/// A process restarted under its stable instance id takes back at once the lease its
/// previous life left behind, where a new id would stand by until it expired; and
/// `sync_now` on an instance that stands by waits for the one that ships instead of
/// failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stable_instance_id_takes_its_lease_back_and_a_standby_syncs() {
    let Some((s, d)) = pair(Backend::Sqlite, Backend::Sqlite).await else {
        return;
    };
    // The lease a killed process held, good for a long while yet.
    s.db.execute_unprepared(
        "INSERT INTO ormsync_leases (destination, holder, expires_at) \
         VALUES ('backup', 'app-0', '2999-01-01T00:00:00.000Z')",
    )
    .await
    .unwrap();
    let start = |id: &'static str| {
        builder(&s.db)
            .lease_ttl(Duration::from_secs(30))
            .instance_id(id)
            .destination(Destination::new("backup", d.db.clone()))
            .start()
    };
    let restarted = start("app-0").await.unwrap();
    write_some(&s.db, 1, 20).await;
    tokio::time::timeout(Duration::from_secs(10), restarted.sync_now())
        .await
        .expect("ships at once, without waiting for its old lease to expire")
        .unwrap();
    assert_all_same(&s.db, &d.db).await;

    let other = start("app-1").await.unwrap();
    write_some(&s.db, 21, 20).await;
    tokio::time::timeout(Duration::from_secs(60), other.sync_now())
        .await
        .expect("a standby's sync_now returns once the shipping instance applied")
        .unwrap();
    assert_eq!(
        other.status().destinations[0].state,
        State::Standby,
        "app-0 ships"
    );
    assert_all_same(&s.db, &d.db).await;
    other.shutdown().await;
    restarted.shutdown().await;
}
