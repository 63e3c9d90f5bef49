//! Real-time shipping on PostgreSQL across processes: a writer in another process, one
//! `NOTIFY` after its captures from a connection of its own, and no trigger notifying from
//! inside the application's transactions.

mod common;

use std::time::{Duration, Instant};

use common::entities::account;
use common::{Backend, assert_all_same, count, pair};
use ormsync::{Destination, Replicator};
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseConnection, Statement, TransactionTrait};

/// How many accounts the child writes.
const WRITES: i64 = 20;

/// The writer side: another process that captures and calls `notify_replicators`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_writer_in_another_process_wakes_a_realtime_worker as a child process"]
async fn child_writer() {
    let Ok(source) = std::env::var("ORMSYNC_CHILD_SOURCE") else {
        return;
    };
    let db = sea_orm::Database::connect(&source).await.unwrap();
    ormsync::notify_replicators(&db);
    for id in 1..=WRITES {
        let txn = db.begin().await.unwrap();
        account(id, "written elsewhere", "1")
            .insert(&txn)
            .await
            .unwrap();
        txn.commit().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The last notification leaves a few milliseconds after the last capture.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// The worker polls once a minute: everything it ships before that, it shipped because the
/// writer's process notified it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_in_another_process_wakes_a_realtime_worker() {
    let Some((s, d)) = pair(Backend::Postgres, Backend::Sqlite).await else {
        return;
    };
    let rep = Replicator::builder(s.db.clone())
        .entity::<common::entities::accounts::Entity>()
        .entity::<common::entities::line_items::Entity>()
        .poll_interval(Duration::from_secs(60))
        .destination(Destination::new("live", d.db.clone()).realtime())
        .start()
        .await
        .unwrap();
    rep.sync_now().await.unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writer",
            "--ignored",
            "--test-threads",
            "1",
        ])
        .env("ORMSYNC_CHILD_SOURCE", &s.url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the writer process failed");
    let began = Instant::now();
    while count(&d.db, "accounts").await < WRITES && began.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        count(&d.db, "accounts").await,
        WRITES,
        "every change shipped on the writer's notifications, long before the poll"
    );
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

/// `install` leaves no trigger on the outbox, and takes away one that an outbox has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_leaves_no_notify_trigger() {
    let Some((s, _d)) = pair(Backend::Postgres, Backend::Sqlite).await else {
        return;
    };
    assert_eq!(triggers(&s.db).await, 0);
    s.db.execute_unprepared(
        "CREATE FUNCTION ormsync_notify() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_notify('ormsync_outbox', ''); RETURN NULL; END $$",
    )
    .await
    .unwrap();
    s.db.execute_unprepared(
        "CREATE TRIGGER ormsync_outbox_notify AFTER INSERT ON ormsync_outbox \
         FOR EACH STATEMENT EXECUTE FUNCTION ormsync_notify()",
    )
    .await
    .unwrap();
    assert_eq!(triggers(&s.db).await, 1);
    ormsync::install(&s.db).await.unwrap();
    assert_eq!(triggers(&s.db).await, 0);
}

async fn triggers(db: &DatabaseConnection) -> i64 {
    db.query_one_raw(Statement::from_string(
        db.get_database_backend(),
        "SELECT COUNT(*) FROM pg_trigger WHERE tgrelid = 'ormsync_outbox'::regclass \
         AND NOT tgisinternal",
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get_by_index::<i64>(0)
    .unwrap()
}
