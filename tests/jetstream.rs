//! A hub publishing to NATS JetStream and children applying the stream, against real
//! `nats-server` processes this test starts (never the one on 127.0.0.1:4222): every test
//! ends with each child's rows compared to the hub's, as the child's rules shape them.

#[macro_use]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::entities::{account, accounts, line, line_items};
use common::nats::{NatsCluster, NatsServer};
use common::{Backend, TestDb, assert_same, count, max_outbox_id, rows_of, seed};
use ormsync::jetstream::{Publisher, Subscriber};
use ormsync::{Alert, AlertKind, Destination, Replicator, RowFilter};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::{ActiveModelTrait, EntityTrait, TransactionTrait};

const STREAM: &str = "HUB";

async fn client(urls: &str) -> async_nats::jetstream::Context {
    let addrs: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(|u| u.parse().expect("a NATS URL"))
        .collect();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(addrs)
        .await
        .expect("connect to NATS");
    async_nats::jetstream::new(client)
}

/// A hub: the source's replicator, publishing to the stream.
async fn hub(
    source: &TestDb,
    urls: &str,
    configure: impl FnOnce(ormsync::jetstream::PublisherBuilder) -> ormsync::jetstream::PublisherBuilder,
    alerts: Option<Arc<Mutex<Vec<Alert>>>>,
) -> Replicator {
    let publisher = configure(Publisher::builder(client(urls).await, STREAM))
        .create()
        .await
        .expect("create the streams");
    let mut b = Replicator::builder(source.db.clone())
        .entity::<accounts::Entity>()
        .entity::<line_items::Entity>()
        .poll_interval(Duration::from_millis(50))
        .retry_delays(Duration::from_millis(10), Duration::from_millis(200))
        .unavailable_after(3, Duration::from_millis(300))
        .lease_ttl(Duration::from_millis(600))
        .batch_size(200)
        .destination(Destination::jetstream("children", source.db.clone(), publisher).realtime());
    if let Some(alerts) = alerts {
        b = b.on_alert(move |a| alerts.lock().unwrap().push(a.clone()));
    }
    b.start().await.expect("start the hub")
}

/// A child called `name` applying the stream to `db`, with `rules` on its destination.
async fn child(
    urls: &str,
    name: &str,
    db: &TestDb,
    rules: impl FnOnce(Destination) -> Destination,
    alerts: Option<Arc<Mutex<Vec<Alert>>>>,
) -> Subscriber {
    let mut b = Subscriber::builder(
        client(urls).await,
        STREAM,
        rules(Destination::new(name, db.db.clone())),
    )
    .entity::<accounts::Entity>()
    .entity::<line_items::Entity>()
    .retry_delays(Duration::from_millis(10), Duration::from_millis(200))
    .copy_chunk(100);
    if let Some(alerts) = alerts {
        b = b.on_alert(move |a| alerts.lock().unwrap().push(a.clone()));
    }
    b.start().await.expect("start the subscriber")
}

/// Waits until the hub has published all its outbox holds and `children` have applied it.
async fn caught_up(hub: &Replicator, children: &[&Subscriber]) {
    // `sync_now` reports a failed pass (a stream electing a leader, a node just killed)
    // while the worker retries on its own: ask again until one goes through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout(Duration::from_secs(60), hub.sync_now()).await {
            Ok(Ok(())) => break,
            Ok(Err(e)) if e.is_transient() || matches!(e, ormsync::Error::Retrying { .. }) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the hub did not publish within 60 s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => panic!("the hub failed to publish: {e}"),
            Err(_) => panic!("the hub did not publish within 60 s"),
        }
    }
    let target = hub
        .status()
        .destinations
        .iter()
        .find(|d| d.name == "children")
        .map(|d| (d.watermark, d.frontier))
        .expect("the stream destination");
    for c in children {
        c.wait_for(Duration::from_secs(60), |s| {
            s.watermark >= target.0 && s.frontier >= target.1
        })
        .await
        .unwrap_or_else(|e| panic!("{} did not catch up: {e}; {:?}", c.name(), c.status()));
    }
}

/// A fresh database with the test tables, or `None` when its server is unreachable.
async fn database(backend: Backend) -> Option<TestDb> {
    let db = TestDb::create(backend).await?;
    db.create_tables().await;
    Some(db)
}

/// `n` seeded transactions of the hub's application: inserts, updates and deletes of a
/// few hot accounts and their lines, delete and re-insert, a tenth rolled back.
async fn write(db: &TestDb, rng: &mut StdRng, n: usize) {
    for _ in 0..n {
        let txn = db.db.begin().await.expect("begin");
        for _ in 0..rng.random_range(1..4) {
            let id = rng.random_range(1..40i64);
            let found = accounts::Entity::find_by_id(id)
                .one(&txn)
                .await
                .expect("read");
            match (found, rng.random_range(0..10)) {
                (None, _) => {
                    account(id, &format!("acct {id}"), "10.5")
                        .insert(&txn)
                        .await
                        .expect("insert");
                }
                (Some(a), 0..=1) => {
                    sea_orm::ModelTrait::delete(a, &txn).await.expect("delete");
                }
                (Some(_), _) => {
                    let balance =
                        format!("{}.{}", rng.random_range(0..1000), rng.random_range(0..99));
                    account(id, &format!("acct {id}"), &balance)
                        .update(&txn)
                        .await
                        .expect("update");
                }
            }
            let (order, no) = (rng.random_range(1..20i64), rng.random_range(1..4));
            let qty = rng.random_range(0..50);
            match line_items::Entity::find_by_id((order, no))
                .one(&txn)
                .await
                .expect("read")
            {
                None => {
                    line(order, no, qty)
                        .insert(&txn)
                        .await
                        .expect("insert line");
                }
                Some(l) if qty % 5 == 0 => {
                    sea_orm::ModelTrait::delete(l, &txn)
                        .await
                        .expect("delete line");
                }
                Some(_) => {
                    line(order, no, qty)
                        .update(&txn)
                        .await
                        .expect("update line");
                }
            }
        }
        if rng.random_range(0..10) == 0 {
            txn.rollback().await.expect("rollback");
        } else {
            txn.commit().await.expect("commit");
        }
    }
}

/// Lines whose quantity is even: the rule of the child that takes only those.
fn even_lines() -> RowFilter {
    RowFilter::new(
        |row| matches!(row.get("qty"), Some(ormsync::value::Value::Int(Some(q))) if q % 2 == 0),
    )
}

async fn assert_even_lines(source: &TestDb, child: &TestDb) {
    let wanted: Vec<_> = rows_of::<line_items::Entity>(&source.db)
        .await
        .into_iter()
        .filter(|r| matches!(r.get("qty"), Some(ormsync::value::Value::Int(Some(q))) if q % 2 == 0))
        .collect();
    let got = rows_of::<line_items::Entity>(&child.db).await;
    assert_eq!(
        got, wanted,
        "the filtered child's lines differ from the hub's even ones"
    );
}

/// Three children on three engines, one taking only some rows, while the hub writes; the
/// hub and one child are killed mid-way and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_on_every_engine_apply_each_change_once_through_kills() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let (Some(src), Some(a), Some(b), Some(c)) = (
        database(Backend::Sqlite).await,
        database(Backend::Sqlite).await,
        database(Backend::Postgres).await,
        database(Backend::MySql).await,
    ) else {
        return;
    };
    ormsync::install(&src.db).await.expect("install");
    let seed = seed();
    eprintln!("seed {seed} (ORMSYNC_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let url = nats.url();

    let mut hub_rep = hub(&src, &url, |p| p, None).await;
    let ca = child(&url, "child-a", &a, |d| d, None).await;
    let mut cb = child(&url, "child-b", &b, |d| d, None).await;
    let cc = child(
        &url,
        "child-c",
        &c,
        |d| d.filter::<line_items::Entity>(even_lines()),
        None,
    )
    .await;

    for round in 0..4 {
        write(&src, &mut rng, 60).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
        match round {
            1 => {
                // A crash of the hub: whatever it was publishing is published again.
                hub_rep.abort().await;
                write(&src, &mut rng, 30).await;
                hub_rep = hub(&src, &url, |p| p, None).await;
            }
            2 => {
                cb.abort().await;
                write(&src, &mut rng, 30).await;
                cb = child(&url, "child-b", &b, |d| d, None).await;
            }
            _ => {}
        }
    }
    caught_up(&hub_rep, &[&ca, &cb, &cc]).await;
    for child in [&a, &b] {
        assert_same::<accounts::Entity>(&src.db, &child.db).await;
        assert_same::<line_items::Entity>(&src.db, &child.db).await;
    }
    assert_same::<accounts::Entity>(&src.db, &c.db).await;
    assert_even_lines(&src, &c).await;
    for s in [ca.status(), cb.status(), cc.status()] {
        assert_eq!(s.errors, 0, "{s:?}");
    }
    for sub in [ca, cb, cc] {
        sub.shutdown().await;
    }
    hub_rep.shutdown().await;
}

/// A child offline for 10,000 changes catches up; a child that joins late copies the
/// current rows from the state stream, then follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_child_catches_up_and_a_late_child_gets_every_row() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let (Some(src), Some(early), Some(late)) = (
        database(Backend::Sqlite).await,
        database(Backend::Postgres).await,
        database(Backend::Sqlite).await,
    ) else {
        return;
    };
    ormsync::install(&src.db).await.expect("install");
    let url = nats.url();
    let hub_rep = hub(&src, &url, |p| p, None).await;
    let first = child(&url, "early", &early, |d| d, None).await;
    let mut rng = StdRng::seed_from_u64(seed());
    write(&src, &mut rng, 50).await;
    caught_up(&hub_rep, &[&first]).await;
    first.shutdown().await;

    // 10,000 changes while the child is away: 5,000 inserts, then half of them updated
    // and a fifth deleted.
    for chunk in 0..50i64 {
        let txn = src.db.begin().await.expect("begin");
        for i in 0..100 {
            line(1000 + chunk, i, 1).insert(&txn).await.expect("insert");
        }
        txn.commit().await.expect("commit");
    }
    for chunk in 0..50i64 {
        let txn = src.db.begin().await.expect("begin");
        for i in 0..100 {
            if i % 5 == 0 {
                let l = line_items::Entity::find_by_id((1000 + chunk, i))
                    .one(&txn)
                    .await
                    .unwrap()
                    .unwrap();
                sea_orm::ModelTrait::delete(l, &txn).await.expect("delete");
            } else if i % 2 == 0 {
                line(1000 + chunk, i, 2).update(&txn).await.expect("update");
            }
        }
        txn.commit().await.expect("commit");
    }
    let back = child(&url, "early", &early, |d| d, None).await;
    let joined = child(&url, "late", &late, |d| d, None).await;
    write(&src, &mut rng, 50).await;
    caught_up(&hub_rep, &[&back, &joined]).await;
    for c in [&early, &late] {
        assert_same::<accounts::Entity>(&src.db, &c.db).await;
        assert_same::<line_items::Entity>(&src.db, &c.db).await;
    }
    assert!(count(&late.db, "line_items").await > 4000);
    back.shutdown().await;
    joined.shutdown().await;
    hub_rep.shutdown().await;
}

/// A child offline longer than the stream keeps changes finds the gap, says so, and
/// copies the current rows (deletions included) rather than going on without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_behind_what_the_stream_keeps_copies_the_rows_again() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let (Some(src), Some(dst)) = (
        database(Backend::Sqlite).await,
        database(Backend::MySql).await,
    ) else {
        return;
    };
    ormsync::install(&src.db).await.expect("install");
    let url = nats.url();
    let hub_rep = hub(&src, &url, |p| p.max_age(Duration::from_secs(1)), None).await;
    let alerts = Arc::new(Mutex::new(Vec::new()));
    let c = child(&url, "far", &dst, |d| d, Some(alerts.clone())).await;
    let mut rng = StdRng::seed_from_u64(seed());
    write(&src, &mut rng, 80).await;
    caught_up(&hub_rep, &[&c]).await;
    c.shutdown().await;

    write(&src, &mut rng, 80).await;
    hub_rep.sync_now().await.expect("publish");
    // Every change published while the child was away expires.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    write(&src, &mut rng, 5).await;
    let c = child(&url, "far", &dst, |d| d, Some(alerts.clone())).await;
    caught_up(&hub_rep, &[&c]).await;
    assert_same::<accounts::Entity>(&src.db, &dst.db).await;
    assert_same::<line_items::Entity>(&src.db, &dst.db).await;
    let dropped = alerts
        .lock()
        .unwrap()
        .iter()
        .filter(|a| matches!(a.kind, AlertKind::RetentionDropped { .. }))
        .count();
    assert_eq!(dropped, 1, "one alert says the child fell behind");
    c.shutdown().await;
    hub_rep.shutdown().await;
}

/// A three-node cluster keeps each stream on every node; one node is killed while the
/// hub publishes and the children apply, and nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_killed_while_publishing_loses_nothing() {
    let Some(mut cluster) = NatsCluster::start(3) else {
        return;
    };
    let (Some(src), Some(a), Some(b)) = (
        database(Backend::Sqlite).await,
        database(Backend::Sqlite).await,
        database(Backend::Postgres).await,
    ) else {
        return;
    };
    ormsync::install(&src.db).await.expect("install");
    let urls = cluster.urls();
    let hub_rep = hub(&src, &urls, |p| p.replicas(3), None).await;
    let ca = child(&urls, "a", &a, |d| d, None).await;
    let cb = child(&urls, "b", &b, |d| d, None).await;
    let seed = seed();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    write(&src, &mut rng, 60).await;
    let victim = rng.random_range(0..3);
    cluster.node(victim).kill();
    write(&src, &mut rng, 120).await;
    caught_up(&hub_rep, &[&ca, &cb]).await;
    cluster.node(victim).restart();
    write(&src, &mut rng, 30).await;
    caught_up(&hub_rep, &[&ca, &cb]).await;
    for c in [&a, &b] {
        assert_same::<accounts::Entity>(&src.db, &c.db).await;
        assert_same::<line_items::Entity>(&src.db, &c.db).await;
    }
    ca.shutdown().await;
    cb.shutdown().await;
    hub_rep.shutdown().await;
}

/// With the stream down the hub goes on capturing into its outbox, alerts once that the
/// stream is unavailable and once that it recovered, and the children catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_keeps_capturing_while_the_stream_is_down() {
    let Some(mut nats) = NatsServer::start() else {
        return;
    };
    let (Some(src), Some(dst)) = (
        database(Backend::Sqlite).await,
        database(Backend::Sqlite).await,
    ) else {
        return;
    };
    ormsync::install(&src.db).await.expect("install");
    let url = nats.url();
    let alerts = Arc::new(Mutex::new(Vec::new()));
    let hub_rep = hub(&src, &url, |p| p, Some(alerts.clone())).await;
    let c = child(&url, "c", &dst, |d| d, None).await;
    let mut rng = StdRng::seed_from_u64(seed());
    write(&src, &mut rng, 30).await;
    caught_up(&hub_rep, &[&c]).await;

    nats.kill();
    write(&src, &mut rng, 60).await;
    let kinds = |alerts: &Arc<Mutex<Vec<Alert>>>, kind: &AlertKind| {
        alerts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| &a.kind == kind)
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while kinds(&alerts, &AlertKind::Unavailable) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Unavailable alert within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let published = hub_rep.status().destinations[0].watermark;
    assert!(
        published < max_outbox_id(&src.db).await,
        "the stream stored nothing while down, so the outbox holds the changes"
    );
    nats.restart();
    caught_up(&hub_rep, &[&c]).await;
    assert_same::<accounts::Entity>(&src.db, &dst.db).await;
    assert_same::<line_items::Entity>(&src.db, &dst.db).await;
    assert_eq!(kinds(&alerts, &AlertKind::Unavailable), 1);
    assert_eq!(kinds(&alerts, &AlertKind::Recovered), 1);
    c.shutdown().await;
    hub_rep.shutdown().await;
}

/// SQLite triggers at a child that refuse a negative balance, or take them away.
async fn refuse_negative(db: &TestDb, refuse: bool) {
    use sea_orm::ConnectionTrait;
    let sql: &[&str] = if refuse {
        &[
            "CREATE TRIGGER no_negative_i BEFORE INSERT ON accounts WHEN NEW.balance < 0 BEGIN SELECT RAISE(ABORT, 'negative balance'); END",
            "CREATE TRIGGER no_negative_u BEFORE UPDATE ON accounts WHEN NEW.balance < 0 BEGIN SELECT RAISE(ABORT, 'negative balance'); END",
        ]
    } else {
        &["DROP TRIGGER no_negative_i", "DROP TRIGGER no_negative_u"]
    };
    for s in sql {
        db.db.execute_unprepared(s).await.expect("trigger");
    }
}

/// A change a child refuses for good: one child parks it (with the later changes of its
/// row) and goes on, and replays it once the cause is gone; the other halts before it and
/// goes on after `resume`. Neither loses or doubles a change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_is_parked_or_halts_at_the_child() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let (Some(src), Some(parks), Some(halts)) = (
        database(Backend::Sqlite).await,
        database(Backend::Sqlite).await,
        database(Backend::Sqlite).await,
    ) else {
        return;
    };
    ormsync::install(&src.db).await.expect("install");
    refuse_negative(&parks, true).await;
    refuse_negative(&halts, true).await;
    let url = nats.url();
    let hub_rep = hub(&src, &url, |p| p, None).await;
    let alerts = Arc::new(Mutex::new(Vec::new()));
    let parking = child(
        &url,
        "parks",
        &parks,
        |d| d.on_permanent_error(ormsync::OnPermanentError::DeadLetter),
        Some(alerts.clone()),
    )
    .await;
    let halting = child(&url, "halts", &halts, |d| d, Some(alerts.clone())).await;
    let txn = src.db.begin().await.unwrap();
    for id in 1..=5 {
        account(id, "ok", "1").insert(&txn).await.unwrap();
    }
    txn.commit().await.unwrap();
    // Both stream by now (a refused row in the first copy stops the child, as a snapshot's
    // does).
    caught_up(&hub_rep, &[&parking, &halting]).await;
    for (id, name, balance) in [(3, "negative", "-5"), (3, "after", "-6"), (4, "fine", "7")] {
        let txn = src.db.begin().await.unwrap();
        account(id, name, balance).update(&txn).await.unwrap();
        txn.commit().await.unwrap();
    }
    caught_up(&hub_rep, &[&parking]).await;
    let parked = parking.status();
    assert_eq!(parked.dead_lettered, 2, "{parked:?}");
    let letters = ormsync::outbox::dead_letters::list(&parks.db, "parks")
        .await
        .expect("the child's dead letters");
    assert_eq!(letters.len(), 2);
    assert_eq!(count(&parks.db, "accounts").await, 5);
    halting
        .wait_for(Duration::from_secs(30), |s| {
            s.state == ormsync::State::Halted
        })
        .await
        .expect("halts");

    refuse_negative(&parks, false).await;
    refuse_negative(&halts, false).await;
    let report = parking.replay_dead_letters().await.expect("replay");
    assert_eq!((report.replayed, report.failed), (2, 0));
    halting.resume().await.unwrap();
    caught_up(&hub_rep, &[&parking, &halting]).await;
    for c in [&parks, &halts] {
        assert_same::<accounts::Entity>(&src.db, &c.db).await;
    }
    let kinds: Vec<AlertKind> = alerts
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.kind.clone())
        .collect();
    assert!(kinds.contains(&AlertKind::Halted), "{kinds:?}");
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, AlertKind::DeadLettered { .. })),
        "{kinds:?}"
    );
    parking.shutdown().await;
    halting.shutdown().await;
    hub_rep.shutdown().await;
}

/// A change larger than the server takes in a message is refused for good by its id: the
/// hub parks it (policy `DeadLetter`) and the stream goes on with the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_too_large_for_a_message_is_parked_at_the_hub() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let (Some(src), Some(dst)) = (
        database(Backend::Sqlite).await,
        database(Backend::Sqlite).await,
    ) else {
        return;
    };
    ormsync::install(&src.db).await.expect("install");
    let url = nats.url();
    let publisher = Publisher::builder(client(&url).await, STREAM)
        .create()
        .await
        .expect("streams");
    let hub_rep = Replicator::builder(src.db.clone())
        .entity::<accounts::Entity>()
        .entity::<line_items::Entity>()
        .poll_interval(Duration::from_millis(50))
        .destination(
            Destination::jetstream("children", src.db.clone(), publisher)
                .on_permanent_error(ormsync::OnPermanentError::DeadLetter)
                .realtime(),
        )
        .start()
        .await
        .expect("hub");
    let c = child(&url, "c", &dst, |d| d, None).await;
    for (id, note) in [
        (1, "small".to_string()),
        (2, "x".repeat(1_200_000)),
        (3, "small".into()),
    ] {
        let txn = src.db.begin().await.unwrap();
        let mut a = account(id, "a", "1");
        a.note = sea_orm::Set(Some(note));
        a.insert(&txn).await.unwrap();
        txn.commit().await.unwrap();
    }
    caught_up(&hub_rep, &[&c]).await;
    let hub_status = hub_rep.status().destinations[0].clone();
    assert_eq!(hub_status.dead_lettered, 1, "{hub_status:?}");
    let letters = ormsync::outbox::dead_letters::list(&src.db, "children")
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].error.contains("max_payload"),
        "{}",
        letters[0].error
    );
    let ids: Vec<i64> = accounts::Entity::find()
        .all(&dst.db)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(
        ids,
        vec![1, 3],
        "the rest went on; the large one waits at the hub"
    );
    c.shutdown().await;
    hub_rep.shutdown().await;
}
