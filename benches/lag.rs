//! Real-time lag: PostgreSQL → PostgreSQL with `Destination::realtime()`, a steady rate of
//! single-row captured inserts (default 1,000 changes/s for 30 s), and the commit-to-applied
//! latency of every change: p50, p99 and max.
//!
//! ```text
//! cargo bench --bench lag
//! ORMSYNC_BENCH_RATE=1000 ORMSYNC_BENCH_SECS=30 cargo bench --bench lag
//! ```
//!
//! Each change's commit time is taken by the writer right after its `COMMIT` returns; its
//! applied time is a column the destination's table alone has,
//! `applied_at DEFAULT clock_timestamp()`, set by the destination when ormsync inserts the
//! row. Both databases are on the same server, so both times come from one clock.
//! Writers: 4 tasks, each on its own schedule (rate / 4 per second).

mod common;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{BenchDb, Server, captured};
use ormsync::{Destination, Replicator};
use sea_orm::{ActiveModelTrait, ConnectionTrait, Statement, TransactionTrait};

type Error = Box<dyn std::error::Error + Send + Sync>;

const WRITERS: i64 = 4;

/// Each change's id and the time its `COMMIT` returned.
type Commits = Vec<(i64, DateTime<Utc>)>;

#[tokio::main]
async fn main() -> ExitCode {
    common::bench_main("lag", run()).await
}

async fn run() -> Result<(), Error> {
    let rate: u64 = env("ORMSYNC_BENCH_RATE", 1000);
    let secs: u64 = env("ORMSYNC_BENCH_SECS", 30);
    let admin = common::admin_url(Server::Postgres, "ORMSYNC_BENCH_POSTGRES_URL");
    let source = BenchDb::server(Server::Postgres, &admin).await?;
    let dest = BenchDb::server(Server::Postgres, &admin).await?;
    let ddl = common::ddl(sea_orm::DbBackend::Postgres, "bench_captured");
    source.db.execute_unprepared(&ddl).await?;
    dest.db.execute_unprepared(&ddl).await?;
    dest.db
        .execute_unprepared(
            "ALTER TABLE bench_captured ADD COLUMN applied_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()",
        )
        .await?;
    ormsync::install(&source.db).await?;
    let rep = Replicator::builder(source.db.clone())
        .entity::<captured::Entity>()
        .destination(Destination::new("dest", dest.db.clone()).realtime())
        .start()
        .await?;
    println!("machine before: {}", common::machine());

    let committed: Arc<Mutex<Commits>> = Arc::default();
    let per_writer = rate / WRITERS as u64;
    let every = Duration::from_secs_f64(1.0 / per_writer.max(1) as f64);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (db, committed) = (source.db.clone(), committed.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut id = w;
            while Instant::now() < deadline {
                tick.tick().await;
                id += WRITERS;
                let txn = db.begin().await?;
                common::captured_row(id).insert(&txn).await?;
                txn.commit().await?;
                let at = Utc::now();
                committed.lock().map_err(|e| e.to_string())?.push((id, at));
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    rep.sync_now().await?;
    rep.shutdown().await;
    println!("machine after:  {}", common::machine());

    let applied = dest
        .db
        .query_all_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT id, applied_at FROM bench_captured",
        ))
        .await?;
    let applied: std::collections::HashMap<i64, DateTime<Utc>> = applied
        .iter()
        .map(|r| Ok((r.try_get("", "id")?, r.try_get("", "applied_at")?)))
        .collect::<Result<_, sea_orm::DbErr>>()?;
    let committed = committed.lock().map_err(|e| e.to_string())?.clone();
    let mut lags: Vec<f64> = Vec::with_capacity(committed.len());
    for (id, at) in &committed {
        let Some(applied_at) = applied.get(id) else {
            return Err(format!("change {id} never arrived").into());
        };
        // A row applied before its writer read the clock after COMMIT counts as 0.
        lags.push(((*applied_at - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0).max(0.0));
    }
    lags.sort_by(f64::total_cmp);
    let pct = |p: f64| lags[((lags.len() as f64 * p) as usize).min(lags.len() - 1)];
    let achieved = committed.len() as f64 / secs as f64;
    println!(
        "\n{} changes in {secs} s ({achieved:.0}/s of {rate}/s asked), commit-to-applied latency: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        committed.len(),
        pct(0.50),
        pct(0.99),
        lags[lags.len() - 1]
    );
    println!(
        "RESULT rate={achieved:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        pct(0.50),
        pct(0.99),
        lags[lags.len() - 1]
    );
    Ok(())
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
