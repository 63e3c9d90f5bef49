//! Delivery under failure, on real servers: a destination that goes away mid-batch, a
//! replicator killed again and again, a change a destination refuses for good, three
//! instances on one source, many writers with rollbacks, and retention.

#[macro_use]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::entities::{account, accounts, line_items};
use common::proxy::Proxy;
use common::{Backend, TestDb, assert_all_same, count, max_outbox_id, pair};
use ormsync::{
    Alert, AlertKind, Destination, OnPermanentError, Replicator, RetentionPolicy, State,
};
use rand::{Rng, SeedableRng};
use sea_orm::prelude::Decimal;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, ModelTrait, Set,
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

// A proxy stands only in front of a server, so the destination is PostgreSQL or MariaDB.
on_server_destinations!(destination_outage);
on_every_pair!(
    crash_with_sigkill_while_draining,
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

/// The child side of the crash test: ships until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by crash_with_sigkill_while_draining as a child process"]
async fn child_shipper() {
    let (Ok(source), Ok(dest)) = (
        std::env::var("ORMSYNC_CHILD_SOURCE"),
        std::env::var("ORMSYNC_CHILD_DEST"),
    ) else {
        return;
    };
    let source = sea_orm::Database::connect(&source).await.unwrap();
    let dest = sea_orm::Database::connect(&dest).await.unwrap();
    let rep = builder(&source)
        .batch_size(53)
        .instance_id(format!("child-{}", std::process::id()))
        // The backlog is drained by the stream, not absorbed by a first copy.
        .destination(Destination::new("dest", dest).initial_snapshot(false))
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
        for _ in 0..250 {
            account(next, "v0", "1").insert(&txn).await.unwrap();
            let old = rng.random_range(1..=next);
            if let Some(m) = accounts::Entity::find_by_id(old).one(&txn).await.unwrap() {
                if rng.random_bool(0.3) {
                    m.delete(&txn).await.unwrap();
                } else {
                    let mut a: accounts::ActiveModel = m.into();
                    a.name = Set(format!("v{next}"));
                    a.update(&txn).await.unwrap();
                }
            }
            next += 1;
        }
        txn.commit().await.unwrap();
    }
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
            .watermark;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let now = ormsync::apply::read_checkpoint(&d.db, &source_id)
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            if now.watermark > before {
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
            "{src:?}→{dst:?}: killed shipper {round} at watermark {} of {total}",
            p.watermark
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
    let rep = builder(&s.db)
        .batch_size(500)
        .destination(Destination::new("dest", d.db.clone()).initial_snapshot(false))
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
