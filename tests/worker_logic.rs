//! The worker's logic without a destination server: it applies through a [`MemorySink`],
//! wrapped in a [`Faulty`] one to inject faults, and ormsync's bookkeeping lives in a
//! SQLite file. Retries and the unavailable alert, halt and resume, dead letters and
//! replay, shutdown with a batch in flight, pause and resume, standby and takeover.
//!
//! Each test ends as a user would check: the sink holds exactly the source's rows. They
//! wait on alerts, status and the replicator's answers, each within a bound.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use common::entities::{account, accounts};
use common::memory_sink::{Faulty, MemorySink, source_rows};
use common::{Backend, TestDb, max_outbox_id};
use ormsync::change::{Change, Row};
use ormsync::value::Value;
use ormsync::{
    Alert, AlertKind, Destination, DestinationStatus, OnPermanentError, Replicator,
    ReplicatorBuilder, State,
};
use sea_orm::{ActiveModelTrait, DatabaseConnection, TransactionTrait};
use tokio::sync::mpsc;

/// How long any awaited event may take before the test fails.
const BOUND: Duration = Duration::from_secs(10);

/// The destination's name.
const DEST: &str = "memory";

/// A source with the test tables and the outbox, and a database for the destination's
/// bookkeeping; both SQLite files.
struct Setup {
    source: TestDb,
    bookkeeping: TestDb,
}

impl Setup {
    async fn new() -> Setup {
        let source = TestDb::create(Backend::Sqlite).await.expect("sqlite");
        source.create_tables().await;
        ormsync::install(&source.db).await.expect("install");
        let bookkeeping = TestDb::create(Backend::Sqlite).await.expect("sqlite");
        Setup {
            source,
            bookkeeping,
        }
    }

    /// A destination applying through `sink`.
    fn destination(&self, sink: impl ormsync::apply::Sink + 'static) -> Destination {
        Destination::new(DEST, self.bookkeeping.db.clone()).with_sink(sink)
    }

    /// A replicator of accounts, quick to retry and to poll, sending its alerts to the
    /// receiver returned.
    fn builder(&self) -> (ReplicatorBuilder, mpsc::UnboundedReceiver<Alert>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let builder = Replicator::builder(self.source.db.clone())
            .entity::<accounts::Entity>()
            .poll_interval(Duration::from_millis(50))
            .retry_delays(Duration::from_millis(10), Duration::from_millis(50))
            .unavailable_after(3, Duration::from_secs(60))
            .without_retention()
            .on_alert(move |a| {
                let _ = tx.send(a.clone());
            });
        (builder, rx)
    }

    async fn insert(&self, ids: impl IntoIterator<Item = i64>) {
        write(&self.source.db, ids, "1.5").await
    }

    /// The source's accounts, keyed as the memory sink keys them.
    async fn expected(&self) -> BTreeMap<String, Row> {
        source_rows::<accounts::Entity>(&self.source.db).await
    }
}

/// Inserts (or, with an existing id, fails) accounts `ids` in one transaction.
async fn write(db: &DatabaseConnection, ids: impl IntoIterator<Item = i64>, balance: &str) {
    let txn = db.begin().await.expect("begin");
    for id in ids {
        account(id, "n", balance)
            .insert(&txn)
            .await
            .expect("insert");
    }
    txn.commit().await.expect("commit");
}

/// Updates account `id`'s name in a transaction of its own.
async fn rename(db: &DatabaseConnection, id: i64, name: &str) {
    let txn = db.begin().await.expect("begin");
    account(id, name, "1.5").update(&txn).await.expect("update");
    txn.commit().await.expect("commit");
}

/// Whether `change` is one of account `id`.
fn of_account(change: &Change, id: i64) -> bool {
    change.table == "accounts" && change.key.get("id") == Some(&Value::BigInt(Some(id)))
}

/// `f`'s output, failing the test when it takes longer than [`BOUND`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {BOUND:?}"))
}

/// The next alert of `kind`'s variant, skipping others.
async fn alert(alerts: &mut mpsc::UnboundedReceiver<Alert>, kind: &AlertKind) -> Alert {
    within(&format!("alert {kind:?}"), async {
        loop {
            let a = alerts.recv().await.expect("alerts end with the replicator");
            if std::mem::discriminant(&a.kind) == std::mem::discriminant(kind) {
                return a;
            }
        }
    })
    .await
}

fn status(r: &Replicator) -> DestinationStatus {
    r.status()
        .destinations
        .into_iter()
        .find(|d| d.name == DEST)
        .expect("the destination's status")
}

/// Returns once the destination's status shows `state`.
async fn state(r: &Replicator, state: State) -> DestinationStatus {
    let mut status = r.watch_status(DEST).expect("the destination's status");
    within(&format!("state {state}"), async {
        status
            .wait_for(|s| s.state == state)
            .await
            .expect("the worker runs")
            .clone()
    })
    .await
}

/// Asserts that `sink` holds the source's accounts, nothing missing and nothing more.
async fn assert_same(setup: &Setup, sink: &MemorySink) {
    let expected = setup.expected().await;
    let held = sink.rows("accounts");
    let missing: Vec<&String> = expected.keys().filter(|k| !held.contains_key(*k)).collect();
    let extra: Vec<&String> = held.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(missing.is_empty(), "missing at the sink: {missing:?}");
    assert!(extra.is_empty(), "extra at the sink: {extra:?}");
    assert_eq!(held, expected, "rows differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_retry_alert_once_and_recover() {
    let setup = Setup::new().await;
    setup.insert(1..=20).await;
    let sink = MemorySink::new();
    let (faulty, faults) = Faulty::new(sink.clone());
    faults.fail_next(3);
    let (builder, mut alerts) = setup.builder();
    let r = builder
        .destination(setup.destination(faulty))
        .start()
        .await
        .expect("start");

    let down = alert(&mut alerts, &AlertKind::Unavailable).await;
    assert_eq!(down.attempts, 3, "raised after the configured attempts");
    let up = alert(&mut alerts, &AlertKind::Recovered).await;
    assert_eq!(up.attempts, 3);
    within("sync", r.sync_destination(DEST))
        .await
        .expect("sync");
    assert_same(&setup, &sink).await;
    let s = status(&r);
    assert_eq!(s.retries, 3, "{s:?}");
    assert_eq!(s.state, State::Idle);
    assert_eq!(s.last_error, None);
    // The three failed tries and the one that landed.
    assert_eq!(faults.applies(), 4);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_halts_before_it_and_resume_lands_the_rest() {
    let setup = Setup::new().await;
    setup.insert(1..=4).await;
    setup.insert([5]).await;
    let refused = max_outbox_id(&setup.source.db).await;
    setup.insert(6..=10).await;
    let sink = MemorySink::new();
    let (faulty, faults) = Faulty::new(sink.clone());
    faults.refuse(|c| of_account(c, 5));
    let (builder, mut alerts) = setup.builder();
    let r = builder
        .destination(
            setup
                .destination(faulty)
                .on_permanent_error(OnPermanentError::Halt),
        )
        .start()
        .await
        .expect("start");

    let halted = alert(&mut alerts, &AlertKind::Halted).await;
    assert!(
        halted
            .error
            .as_deref()
            .is_some_and(|e| e.contains("refused")),
        "{halted:?}"
    );
    let s = state(&r, State::Halted).await;
    assert_eq!(s.watermark, refused - 1, "the changes before it landed");
    assert_eq!(sink.position_of(r.source_id()).watermark, refused - 1);
    let held: Vec<String> = sink.rows("accounts").into_keys().collect();
    assert_eq!(held.len(), 4, "accounts 1 to 4 only: {held:?}");
    let answer = within("sync while halted", r.sync_destination(DEST)).await;
    assert!(
        matches!(answer, Err(ormsync::Error::Halted { .. })),
        "{answer:?}"
    );
    // Written while halted: waits behind the refused change.
    setup.insert(11..=12).await;

    faults.stop_refusing();
    within("resume", r.resume(DEST)).await.expect("resume");
    within("sync", r.sync_destination(DEST))
        .await
        .expect("sync after resume");
    assert_same(&setup, &sink).await;
    assert_eq!(status(&r).state, State::Idle);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_is_parked_with_its_row_and_replay_lands_them() {
    let setup = Setup::new().await;
    setup.insert(1..=10).await;
    rename(&setup.source.db, 5, "renamed").await;
    setup.insert(11..=12).await;
    let sink = MemorySink::new();
    let (faulty, faults) = Faulty::new(sink.clone());
    faults.refuse(|c| of_account(c, 5));
    let (builder, mut alerts) = setup.builder();
    let r = builder
        .destination(
            setup
                .destination(faulty)
                .on_permanent_error(OnPermanentError::DeadLetter),
        )
        .start()
        .await
        .expect("start");

    let parked = alert(&mut alerts, &AlertKind::DeadLettered { outbox_id: 0 }).await;
    within("sync", r.sync_destination(DEST))
        .await
        .expect("sync goes on past the parked change");
    let letters = r.dead_letters(DEST).await.expect("dead letters");
    let ids: Vec<i64> = letters.iter().map(|l| l.outbox_id).collect();
    assert_eq!(
        letters.len(),
        2,
        "the insert and the update behind it: {ids:?}"
    );
    assert_eq!(
        parked.kind,
        AlertKind::DeadLettered {
            outbox_id: letters[0].outbox_id
        }
    );
    let mut expected = setup.expected().await;
    expected.retain(|_, row| row.get("id") != Some(&Value::BigInt(Some(5))));
    assert_eq!(expected.len(), 11);
    assert_eq!(sink.rows("accounts"), expected, "all but account 5");
    let s = status(&r);
    assert_eq!((s.state, s.dead_lettered), (State::Idle, 2), "{s:?}");
    // Past the parked changes: they wait at the source, not in the outbox.
    assert_eq!(s.watermark, max_outbox_id(&setup.source.db).await);

    // While the fault lasts, a replay keeps them parked.
    let report = within("replay", r.replay_dead_letters(DEST))
        .await
        .expect("replay");
    assert_eq!((report.replayed, report.failed), (0, 2));
    faults.stop_refusing();
    let report = within("replay", r.replay_dead_letters(DEST))
        .await
        .expect("replay");
    assert_eq!((report.replayed, report.failed), (2, 0));
    assert!(r.dead_letters(DEST).await.expect("dead letters").is_empty());
    assert_same(&setup, &sink).await;
    // Later changes of the row are no longer parked.
    rename(&setup.source.db, 5, "again").await;
    within("sync", r.sync_destination(DEST))
        .await
        .expect("sync");
    assert_same(&setup, &sink).await;
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_batch_in_flight_and_a_new_replicator_goes_on() {
    let setup = Setup::new().await;
    setup.insert(1..=10).await;
    let sink = MemorySink::new();
    let (faulty, faults) = Faulty::new(sink.clone());
    let mut gate = faults.hold_next();
    let (builder, _alerts) = setup.builder();
    let r = builder
        .destination(setup.destination(faulty))
        .start()
        .await
        .expect("start");

    within("the apply", gate.entered()).await;
    let stopping = tokio::spawn(r.shutdown());
    // Written while stopping: left for the next replicator.
    setup.insert(11..=15).await;
    gate.release();
    within("shutdown", stopping).await.expect("shutdown");
    let held = sink.rows("accounts");
    assert_eq!(held.len(), 10, "the batch in flight landed whole");

    let (builder, _alerts) = setup.builder();
    let (faulty, _faults) = Faulty::new(sink.clone());
    let r = builder
        .destination(setup.destination(faulty))
        .start()
        .await
        .expect("start again");
    within("sync", r.sync_destination(DEST))
        .await
        .expect("sync");
    assert_same(&setup, &sink).await;
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_changes_back_until_resume() {
    let setup = Setup::new().await;
    setup.insert(1..=5).await;
    let sink = MemorySink::new();
    let (builder, _alerts) = setup.builder();
    let r = builder
        .destination(setup.destination(sink.clone()))
        .start()
        .await
        .expect("start");
    within("sync", r.sync_destination(DEST))
        .await
        .expect("sync");
    assert_same(&setup, &sink).await;

    within("pause", r.pause(DEST)).await.expect("pause");
    state(&r, State::Paused).await;
    setup.insert(6..=10).await;
    let answer = within("sync while paused", r.sync_destination(DEST)).await;
    assert!(
        matches!(answer, Err(ormsync::Error::NotShipping { .. })),
        "{answer:?}"
    );
    assert_eq!(
        sink.rows("accounts").len(),
        5,
        "nothing shipped while paused"
    );

    within("resume", r.resume(DEST)).await.expect("resume");
    within("sync", r.sync_destination(DEST))
        .await
        .expect("sync");
    assert_same(&setup, &sink).await;
    let mut status = r.watch_status(DEST).expect("status");
    r.shutdown().await;
    assert_eq!(status.borrow_and_update().state, State::Stopped);
    assert!(
        status.changed().await.is_err(),
        "the watch ends with the worker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_instance_waits_then_takes_over() {
    let setup = Setup::new().await;
    setup.insert(1..=5).await;
    let sink = MemorySink::new();
    let start = |instance: &str| {
        let (builder, _alerts) = setup.builder();
        builder
            .instance_id(instance)
            .lease_ttl(Duration::from_millis(300))
            .destination(setup.destination(sink.clone()))
            .start()
    };
    let first = start("first").await.expect("start the first");
    within("sync", first.sync_destination(DEST))
        .await
        .expect("sync");
    let second = start("second").await.expect("start the second");
    state(&second, State::Standby).await;

    setup.insert(6..=10).await;
    // On standby it waits for the instance that ships.
    within("sync on standby", second.sync_destination(DEST))
        .await
        .expect("sync on standby");
    assert_same(&setup, &sink).await;
    assert_eq!(status(&second).applied, 0, "the first shipped them");

    first.shutdown().await;
    setup.insert(11..=15).await;
    within("sync after takeover", second.sync_destination(DEST))
        .await
        .expect("sync after takeover");
    assert_same(&setup, &sink).await;
    assert_eq!(status(&second).applied, 5);
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_with_its_own_sink_refuses_what_it_cannot_do() {
    let setup = Setup::new().await;
    let cases = [
        (
            "initial snapshot",
            setup.destination(MemorySink::new()).initial_snapshot(true),
        ),
        (
            "create_tables",
            setup.destination(MemorySink::new()).create_tables(),
        ),
        (
            "evolve_schema",
            setup.destination(MemorySink::new()).evolve_schema(),
        ),
    ];
    for (what, destination) in cases {
        let (builder, _alerts) = setup.builder();
        let answer = builder.destination(destination).start().await;
        assert!(
            matches!(&answer, Err(ormsync::Error::Config(m)) if m.contains("with_sink")),
            "{what}: {:?}",
            answer.err()
        );
    }
    let (builder, _alerts) = setup.builder();
    let r = builder
        .destination(setup.destination(MemorySink::new()))
        .start()
        .await
        .expect("start");
    let answer = within("resync", r.resync(DEST, &["accounts"])).await;
    assert!(
        matches!(answer, Err(ormsync::Error::Config(_))),
        "{answer:?}"
    );
    let answer = r.create_tables(DEST).await;
    assert!(
        matches!(answer, Err(ormsync::Error::Config(_))),
        "{answer:?}"
    );
    let answer = r.evolve_schema(DEST).await;
    assert!(
        matches!(answer, Err(ormsync::Error::Config(_))),
        "{answer:?}"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_mid_drain_applies_each_change_once() {
    let setup = Setup::new().await;
    setup.insert(1..=10).await;
    let sink = MemorySink::new();
    let (faulty, faults) = Faulty::new(sink.clone());
    // The second batch fails while the third is read ahead from the position it would
    // have stored.
    faults.fail_at(2);
    let (builder, _alerts) = setup.builder();
    let r = builder
        .batch_size(3)
        .destination(setup.destination(faulty))
        .start()
        .await
        .expect("start");

    // Waits the failure out, reading the position from the sink.
    within("drain", r.drain(DEST)).await.expect("drain");
    assert_same(&setup, &sink).await;
    let s = status(&r);
    assert_eq!((s.applied, s.retries), (10, 1), "{s:?}");
    // Four batches of up to three, and the one that failed.
    assert_eq!(faults.applies(), 5);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_a_long_drain_between_batches() {
    let setup = Setup::new().await;
    setup.insert(1..=40).await;
    let sink = MemorySink::new();
    let (faulty, faults) = Faulty::new(sink.clone());
    faults.delay(Some(Duration::from_millis(20)));
    let (builder, _alerts) = setup.builder();
    let r = builder
        .batch_size(2)
        .destination(setup.destination(faulty))
        .start()
        .await
        .expect("start");

    let mut status = r.watch_status(DEST).expect("status");
    within("a first batch", status.wait_for(|s| s.applied >= 2))
        .await
        .expect("the worker runs");
    within("shutdown", r.shutdown()).await;
    let landed = sink.rows("accounts").len();
    assert!(
        landed.is_multiple_of(2) && landed < 40,
        "whole batches, not the whole drain: {landed}"
    );
    assert_eq!(
        sink.position_of(
            &ormsync::outbox::node_id(&setup.source.db)
                .await
                .expect("id")
        )
        .watermark,
        landed as i64
    );

    let (builder, _alerts) = setup.builder();
    let r = builder
        .destination(setup.destination(sink.clone()))
        .start()
        .await
        .expect("start again");
    within("sync", r.sync_destination(DEST))
        .await
        .expect("sync");
    assert_same(&setup, &sink).await;
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_a_long_drain_between_batches() {
    let setup = Setup::new().await;
    setup.insert(1..=100).await;
    let sink = MemorySink::new();
    let (faulty, faults) = Faulty::new(sink.clone());
    // A drain of 50 batches that cannot take less than 1.5 s.
    faults.delay(Some(Duration::from_millis(30)));
    let (builder, _alerts) = setup.builder();
    let r = builder
        .batch_size(2)
        .destination(setup.destination(faulty))
        .start()
        .await
        .expect("start");

    let mut status = r.watch_status(DEST).expect("status");
    within("a first batch", status.wait_for(|s| s.applied >= 2))
        .await
        .expect("the worker runs");
    within("pause", r.pause(DEST)).await.expect("pause");
    let landed = sink.rows("accounts").len();
    assert!(
        landed.is_multiple_of(2) && landed < 100,
        "the pause stopped the drain between batches, not after it: {landed}"
    );
    state(&r, State::Paused).await;
    let applies = faults.applies();
    let answer = within("sync while paused", r.sync_destination(DEST)).await;
    assert!(
        matches!(answer, Err(ormsync::Error::NotShipping { .. })),
        "{answer:?}"
    );
    assert_eq!(faults.applies(), applies, "nothing shipped while paused");

    faults.delay(None);
    within("resume", r.resume(DEST)).await.expect("resume");
    within("sync", r.sync_destination(DEST))
        .await
        .expect("sync");
    assert_same(&setup, &sink).await;
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_about_no_change_halts_even_under_dead_letter() {
    let setup = Setup::new().await;
    setup.insert(1..=5).await;
    let sink = MemorySink::new();
    let (faulty, faults) = Faulty::new(sink.clone());
    faults.break_for_good();
    let (builder, mut alerts) = setup.builder();
    let r = builder
        .destination(
            setup
                .destination(faulty)
                .on_permanent_error(OnPermanentError::DeadLetter),
        )
        .start()
        .await
        .expect("start");

    alert(&mut alerts, &AlertKind::Halted).await;
    let s = state(&r, State::Halted).await;
    assert_eq!(
        (s.watermark, s.retries, s.dead_lettered),
        (0, 0, 0),
        "{s:?}"
    );
    assert!(r.dead_letters(DEST).await.expect("dead letters").is_empty());
    assert!(sink.rows("accounts").is_empty());
    // Halted, it tries nothing more until resumed.
    let tried = faults.applies();
    let answer = within("sync while halted", r.sync_destination(DEST)).await;
    assert!(
        matches!(answer, Err(ormsync::Error::Halted { .. })),
        "{answer:?}"
    );
    assert_eq!(faults.applies(), tried);

    faults.mend();
    within("resume", r.resume(DEST)).await.expect("resume");
    within("sync", r.sync_destination(DEST))
        .await
        .expect("sync after resume");
    assert_same(&setup, &sink).await;
    r.shutdown().await;
}
