//! Backlog scaling and memory: time per change draining backlogs of 10,000, 100,000 and
//! 1,000,000 captured inserts from PostgreSQL to PostgreSQL, and the replicator process's
//! peak resident memory while it drains.
//!
//! ```text
//! cargo bench --bench backlog
//! ORMSYNC_BENCH_BACKLOGS=10000,100000 cargo bench --bench backlog
//! ```
//!
//! The backlog is written straight into `ormsync_outbox` with one `INSERT … SELECT` over
//! `generate_series`, in the payload format capture writes (what is measured is the drain,
//! and a million captured transactions would take longer than the drain itself). The
//! peak RSS is the process's `VmHWM`, reset (`/proc/self/clear_refs`) right before the
//! replicator starts, so it covers the drain only. Environment:
//! `ORMSYNC_BENCH_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! `ORMSYNC_BENCH_BATCH`, the replicator's `batch_size` (default: the library's);
//! `ORMSYNC_BENCH_NOTE_BYTES`, a note of that many bytes in every row, for wide rows
//! (default: short notes in half the rows).

mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::{BenchDb, Server, captured};
use ormsync::{Destination, Replicator};
use sea_orm::{ConnectionTrait, Statement};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One backlog of `n` inserts into `ormsync_outbox`, in capture's payload format.
const BACKLOG_SQL: &str = r#"
INSERT INTO ormsync_outbox (table_name, op, pk, payload)
SELECT 'bench_captured', 'I', '{"id":{"i8":' || g || '}}',
  '{"id":{"i8":' || g || '},"name":{"s":"customer ' || g || '"},'
  || '"email":{"s":"customer' || g || '@example.com"},'
  || '"balance":{"dec":"' || round(((g * 137) % 10000000)::numeric / 100, 2) || '"},'
  || '"created_at":{"tsu":"' || to_char(to_timestamp(1700000000 + g) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') || '"},'
  || '"uid":{"uuid":"' || md5(g::text)::uuid || '"},'
  || '"note":' || CASE WHEN $3::int > 0 THEN '{"s":"' || repeat('x', $3::int) || '"}'
       WHEN g % 2 = 0 THEN '{"s":"note of ' || g || '"}' ELSE '{"s":null}' END || ','
  || '"qty":{"i4":' || (g % 100) || '},"active":{"b":' || (g % 3 <> 0) || '}}'
FROM generate_series($1::bigint, $2::bigint) AS g
"#;

#[tokio::main]
async fn main() -> ExitCode {
    common::bench_main("backlog", run()).await
}

async fn run() -> Result<(), Error> {
    let sizes: Vec<i64> = std::env::var("ORMSYNC_BENCH_BACKLOGS")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let admin = common::admin_url(Server::Postgres, "ORMSYNC_BENCH_POSTGRES_URL");
    let note_bytes: i32 = match std::env::var("ORMSYNC_BENCH_NOTE_BYTES") {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("ORMSYNC_BENCH_NOTE_BYTES={v} is not a number"))?,
        Err(_) => 0,
    };
    println!("machine before: {}", common::machine());
    let mut results = Vec::new();
    for &n in &sizes {
        let source = BenchDb::server(Server::Postgres, &admin).await?;
        let dest = BenchDb::server(Server::Postgres, &admin).await?;
        let sql = common::ddl(sea_orm::DbBackend::Postgres, "bench_captured");
        dest.db.execute_unprepared(&sql).await?;
        source.db.execute_unprepared(&sql).await?;
        ormsync::install(&source.db).await?;
        let written = Instant::now();
        source
            .db
            .execute_raw(Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                BACKLOG_SQL,
                [1i64.into(), n.into(), note_bytes.into()],
            ))
            .await?;
        println!("backlog of {n} written in {:?}", written.elapsed());

        common::reset_peak_rss();
        let started = Instant::now();
        let mut rep = Replicator::builder(source.db.clone());
        if let Ok(batch) = std::env::var("ORMSYNC_BENCH_BATCH") {
            let batch = batch
                .parse()
                .map_err(|_| format!("ORMSYNC_BENCH_BATCH={batch} is not a number"))?;
            rep = rep.batch_size(batch);
        }
        let rep = rep
            .entity::<captured::Entity>()
            .destination(Destination::new("dest", dest.db.clone()).initial_snapshot(false))
            .without_retention()
            .start()
            .await?;
        drain(&rep, n).await?;
        let secs = started.elapsed().as_secs_f64();
        let peak = common::peak_rss_kib();
        rep.shutdown().await;
        let arrived = common::count(&dest.db, "bench_captured").await;
        if arrived != n {
            return Err(format!("{arrived} of {n} rows arrived").into());
        }
        println!(
            "RESULT backlog={n} secs={secs:.3} us_per_change={:.2} rows_per_s={:.0} peak_rss_mib={:.1}",
            secs * 1e6 / n as f64,
            n as f64 / secs,
            peak as f64 / 1024.0
        );
        results.push((n, secs, peak));
    }
    println!("machine after:  {}", common::machine());
    println!("\nbacklog    drain s   µs/change   rows/s   × first   peak RSS MiB");
    let first = results.first().map(|r| r.1 / r.0 as f64).unwrap_or(1.0);
    for (n, secs, peak) in &results {
        let per = secs / *n as f64;
        println!(
            "{n:>9} {secs:>9.2} {:>11.2} {:>8.0} {:>9.2} {:>14.1}",
            per * 1e6,
            *n as f64 / secs,
            per / first,
            *peak as f64 / 1024.0
        );
    }
    Ok(())
}

/// Calls `sync_now` until the destination's watermark covers the whole backlog.
async fn drain(rep: &Replicator, n: i64) -> Result<(), Error> {
    for _ in 0..100 {
        rep.sync_now().await?;
        if rep.status().destinations[0].watermark >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err("the destination did not catch up".into())
}
