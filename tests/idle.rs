//! The idle cost of a replicator, alone in its test binary: captures made by other tests
//! in the same process would wake its realtime worker.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::entities::accounts;
use common::{Backend, pair};
use ormsync::{Destination, Replicator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_replicator_issues_few_queries() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let Some((s, d)) = pair(backend, Backend::Sqlite).await else {
            continue;
        };
        let mut source = s.connect().await;
        let statements = Arc::new(AtomicU64::new(0));
        let counter = statements.clone();
        source.set_metric_callback(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        let poll = Duration::from_secs(1);
        let rep = Replicator::builder(source.clone())
            .entity::<accounts::Entity>()
            .poll_interval(poll)
            .destination(Destination::new("idle", d.db.clone()).realtime())
            .start()
            .await
            .unwrap();
        rep.sync_now().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = statements.load(Ordering::Relaxed);
        let idle = Duration::from_secs(6);
        tokio::time::sleep(idle).await;
        let issued = statements.load(Ordering::Relaxed) - before;
        let per_minute = issued as f64 * 60.0 / idle.as_secs_f64();
        eprintln!(
            "figure: {backend:?} idle: {issued} statements in {idle:?} ({per_minute:.0}/min) with a {poll:?} poll"
        );
        // Per poll tick: one outbox read and one read of the control row (`ormsync_control`,
        // at most once a second); a backlog count every 30 s; plus a lease renewal (two
        // statements) every third of the 10 s lease.
        let ticks = idle.as_secs_f64() / poll.as_secs_f64() + 1.0;
        let bound = (ticks * 2.0 + 2.0 * 3.0) as u64;
        assert!(
            issued <= bound,
            "{issued} statements while idle, at most {bound} expected"
        );
        rep.shutdown().await;
    }
}
