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
//!
//! With `ORMSYNC_BENCH_WRITER_PROCESS=1` the writers run in a child process of their own,
//! as an application's writers run beside a replicator elsewhere: they wake it through
//! PostgreSQL notifications (`ormsync::notify_replicators`), and report each commit time
//! to this process on their standard output.

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
    if let Ok(url) = std::env::var(CHILD) {
        return match child(&url).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "lag writer failed: {}",
                    ormsync::redact::redact(&e.to_string())
                );
                ExitCode::FAILURE
            }
        };
    }
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

    let in_child = env("ORMSYNC_BENCH_WRITER_PROCESS", 0) == 1;
    let committed = if in_child {
        write_in_child(&source.url).await?
    } else {
        write(source.db.clone(), rate, secs).await?
    };
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
        "\n{} changes in {secs} s ({achieved:.0}/s of {rate}/s asked, writers {}), \
         commit-to-applied latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        committed.len(),
        if in_child {
            "in another process"
        } else {
            "in this process"
        },
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

/// [`WRITERS`] tasks committing single-row captured inserts at `rate` in all for `secs`.
async fn write(db: sea_orm::DatabaseConnection, rate: u64, secs: u64) -> Result<Commits, Error> {
    let committed: Arc<Mutex<Commits>> = Arc::default();
    let per_writer = rate / WRITERS as u64;
    let every = Duration::from_secs_f64(1.0 / per_writer.max(1) as f64);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (db, committed) = (db.clone(), committed.clone());
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
    let commits = committed.lock().map_err(|e| e.to_string())?.clone();
    Ok(commits)
}

/// Set in the child that writes, to the source's URL.
const CHILD: &str = "ORMSYNC_BENCH_LAG_WRITER_OF";

/// The writers of another process: each commit as a line `id micros-since-epoch`.
async fn child(url: &str) -> Result<(), Error> {
    let db = sea_orm::Database::connect(url).await?;
    ormsync::notify_replicators(&db);
    let commits = write(
        db,
        env("ORMSYNC_BENCH_RATE", 1000),
        env("ORMSYNC_BENCH_SECS", 30),
    )
    .await?;
    let mut out = String::new();
    for (id, at) in commits {
        out.push_str(&format!("{id} {}\n", at.timestamp_micros()));
    }
    print!("{out}");
    Ok(())
}

/// The writers in a child process; their commits.
async fn write_in_child(url: &str) -> Result<Commits, Error> {
    let exe = std::env::current_exe()?;
    let url = url.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .env(CHILD, url)
            .stderr(std::process::Stdio::inherit())
            .output()
    })
    .await??;
    if !out.status.success() {
        return Err("the writer process failed".into());
    }
    let mut commits = Commits::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.split(' ');
        let (Some(id), Some(at)) = (parts.next(), parts.next()) else {
            continue;
        };
        let at = DateTime::from_timestamp_micros(at.parse()?).ok_or("a bad commit time")?;
        commits.push((id.parse()?, at));
    }
    Ok(commits)
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
