//! Initial snapshot copy rate, against a ceiling measured in the same run.
//!
//! For each backend pair: N rows exist at the source before replication (written with
//! `insert_many`, which captures nothing); then the time from `Replicator::start` until the
//! destination's snapshot is done gives ormsync's copy rate (rows/s). The ceiling is one
//! client copying the same rows with sea-orm: keyset reads of a chunk of rows from the
//! source (as many as the snapshot's chunk), each written as one multi-row insert into a
//! table of the same shape at the destination.
//! ormsync/ceiling is the share of that naive copy's speed that the snapshot reaches (it
//! also locks the checkpoint, reads the destination's keys in the range and stores its
//! progress, per chunk).
//!
//! ```text
//! cargo bench --bench snapshot
//! ORMSYNC_BENCH_ROWS=200000 cargo bench --bench snapshot
//! ```
//!
//! Environment: `ORMSYNC_BENCH_ROWS` (default 50000), `ORMSYNC_BENCH_CHUNK` (the snapshot's
//! chunk rows and the naive copy's, default 3000 as in the library),
//! `ORMSYNC_BENCH_POSTGRES_URL`, `ORMSYNC_BENCH_MYSQL_URL` (as
//! for the other benches). Each figure is also printed as a `RESULT key=value …` line.

mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::{BenchDb, Server, captured, plain};
use ormsync::{Destination, Replicator};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

type Error = Box<dyn std::error::Error + Send + Sync>;

const SCENARIOS: [(&str, Server, Server); 2] = [
    ("postgres-postgres", Server::Postgres, Server::Postgres),
    ("postgres-mariadb", Server::Postgres, Server::MySql),
];

fn url(server: Server) -> String {
    match server {
        Server::Postgres => common::admin_url(server, "ORMSYNC_BENCH_POSTGRES_URL"),
        Server::MySql => common::admin_url(server, "ORMSYNC_BENCH_MYSQL_URL"),
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// N rows at the source, not captured.
async fn existing_rows(db: &DatabaseConnection, n: i64) -> Result<(), Error> {
    for lo in (1..=n).step_by(1000) {
        let hi = (lo + 999).min(n);
        captured::Entity::insert_many((lo..=hi).map(common::captured_row))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// The ceiling: one client copying `bench_captured` into `bench_plain` with sea-orm.
async fn naive_copy(
    source: &DatabaseConnection,
    dest: &DatabaseConnection,
    chunk_rows: u64,
) -> Result<u64, Error> {
    let mut last = 0i64;
    let mut rows = 0;
    loop {
        let chunk = captured::Entity::find()
            .filter(captured::Column::Id.gt(last))
            .order_by_asc(captured::Column::Id)
            .limit(chunk_rows)
            .all(source)
            .await?;
        let Some(end) = chunk.last().map(|m| m.id) else {
            return Ok(rows);
        };
        rows += chunk.len() as u64;
        plain::Entity::insert_many(chunk.into_iter().map(|m| plain::ActiveModel {
            id: sea_orm::Set(m.id),
            name: sea_orm::Set(m.name),
            email: sea_orm::Set(m.email),
            balance: sea_orm::Set(m.balance),
            created_at: sea_orm::Set(m.created_at),
            uid: sea_orm::Set(m.uid),
            note: sea_orm::Set(m.note),
            qty: sea_orm::Set(m.qty),
            active: sea_orm::Set(m.active),
        }))
        .exec(dest)
        .await?;
        last = end;
    }
}

async fn scenario(id: &str, src: Server, dst: Server, n: i64, chunk: u64) -> Result<(), Error> {
    let s = BenchDb::server(src, &url(src)).await?;
    let d = BenchDb::server(dst, &url(dst)).await?;
    common::create_tables(&s.db).await;
    common::create_tables(&d.db).await;
    ormsync::install(&s.db).await?;
    existing_rows(&s.db, n).await?;

    let started = Instant::now();
    let r = Replicator::builder(s.db.clone())
        .entity::<captured::Entity>()
        .poll_interval(Duration::from_millis(20))
        .destination(Destination::new("copy", d.db.clone()).snapshot_chunk_rows(chunk))
        .start()
        .await?;
    let status = loop {
        let st = r.status().destinations.remove(0);
        if let Some(e) = &st.last_error {
            return Err(e.clone().into());
        }
        if st.snapshot.as_ref().is_some_and(|s| s.is_done()) {
            break st.snapshot;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let snap_secs = started.elapsed().as_secs_f64();
    r.shutdown().await;
    let copied = status.map_or(0, |s| s.rows_copied);
    assert_eq!(common::count(&d.db, "bench_captured").await, n);

    let started = Instant::now();
    let naive = naive_copy(&s.db, &d.db, chunk).await?;
    let naive_secs = started.elapsed().as_secs_f64();

    let (ours, ceiling) = (copied as f64 / snap_secs, naive as f64 / naive_secs);
    println!(
        "{id:<18} {n:>9} rows  snapshot {snap_secs:>6.2} s {ours:>9.0} rows/s  naive copy {naive_secs:>6.2} s {ceiling:>9.0} rows/s  ratio {:.2}",
        ours / ceiling
    );
    println!(
        "RESULT bench=snapshot scenario={id} rows={n} snapshot_rows_per_s={ours:.0} naive_rows_per_s={ceiling:.0} ratio={:.3}",
        ours / ceiling
    );
    Ok(())
}

fn main() -> ExitCode {
    if !common::run_by_cargo_bench() {
        eprintln!("snapshot bench: not run outside `cargo bench --bench snapshot`");
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::FAILURE;
    };
    let n = env_u64("ORMSYNC_BENCH_ROWS", 50_000) as i64;
    let chunk = env_u64("ORMSYNC_BENCH_CHUNK", 3000);
    println!("{}", common::machine());
    let mut failed = false;
    for (id, src, dst) in SCENARIOS {
        if let Err(e) = rt.block_on(scenario(id, src, dst, n, chunk)) {
            eprintln!("{id}: {}", ormsync::redact::redact(&e.to_string()));
            failed = true;
        }
    }
    println!("{}", common::machine());
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
