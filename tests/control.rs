//! Real time, schedules, runtime control, status and metrics.

mod common;

use std::time::{Duration, Instant};

use chrono::{SubsecRound, Timelike, Utc};
use common::entities::{account, accounts, line_items};
use common::{Backend, TestDb, assert_all_same, count, pair};
use ormsync::{Destination, Replicated, Replicator, Schedule, State};
use sea_orm::prelude::Decimal;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, EntityTrait, TransactionTrait,
};

async fn insert(db: &DatabaseConnection, ids: impl IntoIterator<Item = i64>) {
    let txn = db.begin().await.unwrap();
    for id in ids {
        account(id, "n", "1.5").insert(&txn).await.unwrap();
    }
    txn.commit().await.unwrap();
}

fn builder(source: &DatabaseConnection) -> ormsync::ReplicatorBuilder {
    Replicator::builder(source.clone())
        .entity::<accounts::Entity>()
        .entity::<line_items::Entity>()
        .retry_delays(Duration::from_millis(20), Duration::from_millis(300))
}

async fn count_accounts(db: &DatabaseConnection) -> u64 {
    accounts::Entity::find().all(db).await.unwrap().len() as u64
}

/// Waits up to `limit` for `db` to hold `n` accounts; returns how long it took.
async fn wait_for_accounts(db: &DatabaseConnection, n: u64, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if count_accounts(db).await == n {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Writes an account and its outbox row with plain SQL through another pool, as another
/// process would: no in-process signal, so only PostgreSQL's NOTIFY can wake the worker.
async fn insert_elsewhere(db: &DatabaseConnection, id: i64, commit: bool) {
    let txn = db.begin().await.unwrap();
    let model = accounts::Model {
        id,
        name: "elsewhere".into(),
        balance: Decimal::ONE,
        updated_at: Utc::now().trunc_subsecs(6),
        note: None,
        local_flag: None,
    };
    accounts::Entity::insert(accounts::ActiveModel::from(model.clone()))
        .exec_without_returning(&txn)
        .await
        .unwrap();
    let row = accounts::Entity::to_row(&model).unwrap();
    let key = accounts::Entity::key_of(&model).unwrap();
    txn.execute_raw(sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        "INSERT INTO ormsync_outbox (table_name, op, pk, payload) VALUES ('accounts', 'I', $1, $2)",
        [key.to_json().into(), row.to_json().into()],
    ))
    .await
    .unwrap();
    if commit {
        txn.commit().await.unwrap();
    } else {
        txn.rollback().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_on_postgres_wakes_on_commit_not_on_rollback() {
    let Some((s, d)) = pair(Backend::Postgres, Backend::Postgres).await else {
        return;
    };
    let rep = builder(&s.db)
        .poll_interval(Duration::from_secs(3600))
        .destination(Destination::new("hot", d.db.clone()).realtime())
        .start()
        .await
        .unwrap();
    let elsewhere = s.connect().await;
    // Let the first pass and the listener settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut latencies = Vec::new();
    for id in 1..=5 {
        let t = Instant::now();
        insert_elsewhere(&elsewhere, id, true).await;
        let took = wait_for_accounts(&d.db, id as u64, Duration::from_secs(10)).await;
        let took = took
            .unwrap_or_else(|| panic!("change {id} never arrived: NOTIFY did not wake the worker"));
        latencies.push(took.max(t.elapsed().min(took)));
    }
    eprintln!("figure: commit-to-applied through NOTIFY with a 1 h poll interval: {latencies:?}");
    insert_elsewhere(&elsewhere, 100, false).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        count_accounts(&d.db).await,
        5,
        "a rolled-back change never arrives"
    );
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_in_process_on_every_backend() {
    for backend in [Backend::Sqlite, Backend::MySql, Backend::Postgres] {
        let Some((s, d)) = pair(backend, Backend::Sqlite).await else {
            continue;
        };
        let rep = builder(&s.db)
            .poll_interval(Duration::from_secs(3600))
            .destination(Destination::new("hot", d.db.clone()).realtime())
            .start()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        for id in 1..=3 {
            insert(&s.db, [id]).await;
            assert!(
                wait_for_accounts(&d.db, id as u64, Duration::from_secs(10))
                    .await
                    .is_some(),
                "{backend:?}: the capture signal did not wake the worker"
            );
        }
        assert_all_same(&s.db, &d.db).await;
        rep.shutdown().await;
    }
}

/// The first destination's next run once it is known and differs from `other`.
async fn next_run(rep: &Replicator, other: Option<chrono::DateTime<Utc>>) -> chrono::DateTime<Utc> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let next = rep.status().destinations[0].next_run;
        if let Some(n) = next.filter(|n| Some(*n) != other) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "the next run never moved from {other:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_every_two_seconds_ships_only_at_ticks() {
    let Some((s, d)) = pair(Backend::Sqlite, Backend::Postgres).await else {
        return;
    };
    let rep = builder(&s.db)
        .poll_interval(Duration::from_millis(50))
        .destination(
            Destination::new("staging", d.db.clone())
                .schedule(Schedule::every(Duration::from_secs(2))),
        )
        .start()
        .await
        .unwrap();
    // Wait for a tick to pass, then write right after it.
    let first = next_run(&rep, None).await;
    let tick = next_run(&rep, Some(first)).await;
    insert(&s.db, 1..=20).await;
    let mut samples = Vec::new();
    while Utc::now() < tick - chrono::Duration::milliseconds(150) {
        samples.push(count_accounts(&d.db).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        samples.len() > 10 && samples.iter().all(|&n| n == 0),
        "nothing arrives between ticks: {samples:?}"
    );
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while last < 20 && Instant::now() < deadline {
        let n = count_accounts(&d.db).await;
        assert!(
            n == 0 || n == 20,
            "everything arrives at the tick, at once: saw {n}"
        );
        last = n;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(last, 20);
    assert!(Utc::now() >= tick - chrono::Duration::milliseconds(5));

    // sync_now ships at once, between ticks.
    insert(&s.db, 21..=22).await;
    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_schedule_fires_as_parsed() {
    let Some((s, d)) = pair(Backend::Sqlite, Backend::Sqlite).await else {
        return;
    };
    let rep = builder(&s.db)
        .destination(
            Destination::new("nightly", d.db.clone())
                .schedule(Schedule::cron("*/3 * * * * *").unwrap()),
        )
        .start()
        .await
        .unwrap();
    insert(&s.db, 1..=5).await;
    let next = next_run(&rep, None).await;
    assert_eq!(
        (next.second() % 3, next.nanosecond()),
        (0, 0),
        "next run {next} is on a */3 second"
    );
    assert!(
        wait_for_accounts(&d.db, 5, Duration::from_secs(8))
            .await
            .is_some()
    );
    assert!(Utc::now() >= next, "shipped at the cron time, not before");
    let after = next_run(&rep, Some(next)).await;
    assert!(
        after > next && after.second() % 3 == 0,
        "{after} after {next}"
    );
    rep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_disable_enable_add_remove() {
    for (src, dst) in [
        (Backend::Postgres, Backend::MySql),
        (Backend::Sqlite, Backend::Sqlite),
    ] {
        let Some((s, a)) = pair(src, dst).await else {
            continue;
        };
        let Some(b) = TestDb::create(dst).await else {
            continue;
        };
        b.create_tables().await;
        let rep = builder(&s.db)
            .poll_interval(Duration::from_millis(50))
            .destination(Destination::new("a", a.db.clone()))
            .start()
            .await
            .unwrap();
        insert(&s.db, 1..=10).await;
        rep.sync_now().await.unwrap();
        assert_all_same(&s.db, &a.db).await;

        // Paused: nothing ships, pending and lag grow, and they match the database.
        rep.pause("a").await.unwrap();
        let err = rep.sync_destination("a").await.unwrap_err();
        assert!(matches!(err, ormsync::Error::NotShipping { .. }), "{err}");
        insert(&s.db, 11..=15).await;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let first = rep.status().destinations[0].clone();
        insert(&s.db, 16..=20).await;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let status = rep.status();
        let second = &status.destinations[0];
        assert_eq!(second.state, State::Paused);
        assert!(
            second.pending > first.pending,
            "pending grows while paused: {} then {}",
            first.pending,
            second.pending
        );
        let stored = ormsync::apply::read_checkpoint(&a.db, rep.source_id())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            second.watermark, stored.watermark,
            "status shows the applied position"
        );
        let pending_in_db =
            s.db.query_one_raw(sea_orm::Statement::from_string(
                s.db.get_database_backend(),
                format!(
                    "SELECT COUNT(*) FROM ormsync_outbox WHERE id > {}",
                    stored.watermark
                ),
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<i64>(0)
            .unwrap();
        assert_eq!(second.pending as i64, pending_in_db, "{status}");
        assert!(
            second.lag_seconds.is_some_and(|l| l > 0.0),
            "lag while paused: {status}"
        );
        assert_eq!(
            status.outbox_size as i64,
            count(&s.db, "ormsync_outbox").await
        );
        assert_eq!(
            count_accounts(&a.db).await,
            10,
            "nothing shipped while paused"
        );
        rep.resume("a").await.unwrap();
        rep.drain("a").await.unwrap();
        assert_all_same(&s.db, &a.db).await;

        // Disabled: the checkpoint stays; enabled, it goes on from there.
        rep.disable("a").await.unwrap();
        insert(&s.db, 21..=25).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(count_accounts(&a.db).await, 20);
        assert_eq!(rep.status().destinations[0].state, State::Disabled);
        rep.enable("a").await.unwrap();
        rep.drain("a").await.unwrap();
        assert_all_same(&s.db, &a.db).await;

        // Added at run time, without restarting `a`.
        rep.add_destination(Destination::new("b", b.db.clone()))
            .await
            .unwrap();
        insert(&s.db, 26..=30).await;
        rep.drain("b").await.unwrap();
        rep.drain("a").await.unwrap();
        assert_all_same(&s.db, &b.db).await;
        assert_all_same(&s.db, &a.db).await;

        // Removed at run time: `a` goes on, `b` gets nothing more.
        rep.remove_destination("b").await.unwrap();
        assert_eq!(rep.destinations(), vec!["a".to_string()]);
        insert(&s.db, 31..=35).await;
        rep.drain("a").await.unwrap();
        assert_all_same(&s.db, &a.db).await;
        assert_eq!(count_accounts(&b.db).await, 30);
        assert_eq!(
            count(&s.db, "ormsync_progress").await,
            1,
            "a removed destination no longer holds back retention"
        );
        rep.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_captured_and_applied() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    let Some((s, d)) = pair(Backend::Sqlite, Backend::Sqlite).await else {
        return;
    };
    let rep = builder(&s.db)
        .destination(Destination::new("metered", d.db.clone()))
        .start()
        .await
        .unwrap();
    // Past the initial snapshot (of an empty table), so the 12 come through the stream.
    rep.sync_now().await.unwrap();
    insert(&s.db, 1..=12).await;
    rep.sync_now().await.unwrap();
    let mut applied = None;
    let mut captured = None;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        match (key.key().name(), value) {
            ("ormsync_changes_applied_total", metrics_util::debugging::DebugValue::Counter(n))
                if labels.contains(&"destination=metered".to_string()) =>
            {
                applied = Some(n)
            }
            ("ormsync_changes_captured_total", metrics_util::debugging::DebugValue::Counter(n))
                if labels.contains(&"table=accounts".to_string()) =>
            {
                captured = Some(n)
            }
            _ => {}
        }
    }
    assert_eq!(applied, Some(12));
    assert!(captured.is_some_and(|n| n >= 12), "{captured:?}");
    rep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_now_waits_for_a_drain_longer_than_the_lease() {
    let Some((s, d)) = pair(Backend::Sqlite, Backend::Postgres).await else {
        return;
    };
    for chunk in 0..20 {
        insert(&s.db, chunk * 200 + 1..=chunk * 200 + 200).await;
    }
    let rep = builder(&s.db)
        .batch_size(20)
        .lease_ttl(Duration::from_millis(150))
        .destination(Destination::new("slow", d.db.clone()))
        .start()
        .await
        .unwrap();
    let started = Instant::now();
    rep.sync_now().await.unwrap();
    eprintln!(
        "drained 4000 changes in batches of 20 in {:?} with a 150 ms lease",
        started.elapsed()
    );
    // Right after sync_now returns, with no further wait, everything is there.
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

/// Lag alerts: a paused destination passes the backlog threshold and raises `LagHigh`
/// once, with the backlog it saw; resumed, it catches up and raises `LagNormal` once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_alerts_rise_once_over_the_threshold_and_fall_once_caught_up() {
    let Some((s, d)) = pair(Backend::Sqlite, Backend::Sqlite).await else {
        return;
    };
    let alerts: std::sync::Arc<std::sync::Mutex<Vec<ormsync::Alert>>> = Default::default();
    let seen = alerts.clone();
    let rep = builder(&s.db)
        .poll_interval(Duration::from_millis(20))
        .lag_alert(Some(10), None)
        .on_alert(move |a| seen.lock().unwrap().push(a.clone()))
        .destination(Destination::new("d", d.db.clone()))
        .start()
        .await
        .unwrap();
    let lag = |kind: ormsync::AlertKind| {
        alerts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.kind == kind)
            .cloned()
            .collect::<Vec<_>>()
    };
    insert(&s.db, 1..=5).await;
    rep.sync_now().await.unwrap();
    rep.pause("d").await.unwrap();
    // Under the threshold: no alert.
    insert(&s.db, 6..=9).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(lag(ormsync::AlertKind::LagHigh).is_empty());
    insert(&s.db, 10..=30).await;
    let began = Instant::now();
    while lag(ormsync::AlertKind::LagHigh).is_empty() {
        assert!(began.elapsed() < Duration::from_secs(10), "no LagHigh");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let high = lag(ormsync::AlertKind::LagHigh);
    assert_eq!(high.len(), 1, "{high:?}");
    assert_eq!(high[0].destination, "d");
    assert_eq!(high[0].pending, Some(25), "{:?}", high[0]);
    assert!(lag(ormsync::AlertKind::LagNormal).is_empty());

    rep.resume("d").await.unwrap();
    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    let began = Instant::now();
    while lag(ormsync::AlertKind::LagNormal).is_empty() {
        assert!(began.elapsed() < Duration::from_secs(10), "no LagNormal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A while later, still one of each.
    insert(&s.db, 31..=33).await;
    rep.sync_now().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(lag(ormsync::AlertKind::LagHigh).len(), 1);
    let normal = lag(ormsync::AlertKind::LagNormal);
    assert_eq!(normal.len(), 1, "{normal:?}");
    assert_eq!(normal[0].pending, Some(0));
    rep.shutdown().await;
}
