//! Fan-out: one hub writing a steady 1,000 changes/s for 10 s, shipped to 1, 10 and 50
//! SQLite children, either through a NATS JetStream stream (`Publisher` at the hub, a
//! `Subscriber` per child) or as direct SQL destinations of the hub's replicator.
//!
//! ```text
//! cargo bench --bench fanout
//! ORMSYNC_BENCH_CHILDREN=1,10,50 ORMSYNC_BENCH_RATE=1000 ORMSYNC_BENCH_SECS=10 \
//!   ORMSYNC_BENCH_CATCHUP_CHILDREN=1,10 ORMSYNC_BENCH_CATCHUP_CHANGES=10000 \
//!   cargo bench --bench fanout
//! ```
//!
//! It starts its own `nats-server` (on `PATH` or in `/usr/sbin`) on free ports, with its
//! store in a temporary directory, and never uses a server on 127.0.0.1:4222.
//!
//! **Processes.** The hub (the writer and the replicator) runs in the bench's process. The
//! JetStream children run in a child process of their own (this binary started again with
//! `ORMSYNC_BENCH_FANOUT_CHILDREN_OF` set), so the hub's CPU time, read from
//! `/proc/self/stat` (utime + stime) before and after, holds the hub's work alone. Direct
//! destinations are written by the hub's replicator itself, so there the hub's CPU holds
//! every child's apply: that is the cost fan-out through a stream takes off the hub. The
//! writer's own cost (its commits and capture) is in both; a run with no replicator
//! measures it, and it is printed so it can be subtracted. nats-server's CPU time is
//! printed beside (its `/proc/<pid>/stat`).
//!
//! **Outbox reads.** The replicator's connection to the hub's database carries a sea-orm
//! metric callback that counts every `SELECT` on `ormsync_outbox` it runs (statements,
//! exact). Rows read are counted as the changes the hub's destinations applied (each
//! destination's reader returns each change once to its destination; a read repeated after
//! a gap or a failure is not counted, so it is a lower bound), and bytes as those rows'
//! sizes in the outbox (`LENGTH` of payload, key and table name, measured at the end; the
//! bench keeps the outbox with `without_retention`).
//!
//! **Lag.** The writer takes each change's commit time right after its `COMMIT` returns;
//! each child's table alone has a column `applied_at` whose default is SQLite's clock in
//! milliseconds, set when the row is inserted there. One machine, one clock.
//!
//! **Catch-up.** Children that have applied the stream once go offline; the hub writes N
//! changes (100 per transaction) and publishes them; the children start again and each
//! one's apply rate is N over the time until it holds them all. The baseline is the same
//! children as direct destinations of a hub whose outbox already holds the N changes.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{BenchDb, captured};
use ormsync::jetstream::{Publisher, Subscriber};
use ormsync::{Destination, Replicator};
use sea_orm::{
    ActiveModelTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    Statement, TransactionTrait,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Set in the child process that runs the subscribers, to the NATS URL.
const CHILDREN_OF: &str = "ORMSYNC_BENCH_FANOUT_CHILDREN_OF";
const STREAM_ENV: &str = "ORMSYNC_BENCH_FANOUT_STREAM";
const FILES_ENV: &str = "ORMSYNC_BENCH_FANOUT_FILES";

#[tokio::main]
async fn main() -> ExitCode {
    if let Ok(url) = std::env::var(CHILDREN_OF) {
        return match children_process(&url).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "fanout children failed: {}",
                    ormsync::redact::redact(&e.to_string())
                );
                ExitCode::FAILURE
            }
        };
    }
    common::bench_main("fanout", run()).await
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

async fn run() -> Result<(), Error> {
    let rate = env("ORMSYNC_BENCH_RATE", 1000);
    let secs = env("ORMSYNC_BENCH_SECS", 10);
    let counts = env_list("ORMSYNC_BENCH_CHILDREN", "1,10,50");
    let catchup_counts = env_list("ORMSYNC_BENCH_CATCHUP_CHILDREN", "1,10");
    let catchup_n = env("ORMSYNC_BENCH_CATCHUP_CHANGES", 10_000);
    // The harness waits on the server with blocking sleeps: off the runtime's threads.
    let nats = tokio::task::spawn_blocking(common::nats::NatsServer::start)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("nats-server not found")?;
    println!("nats-server at {}", nats.url());
    println!("machine before: {}", common::machine());

    let writer_only = steady(Mode::WriterOnly, 0, rate, secs, &nats).await?;
    println!("{writer_only}");
    let mut rows = Vec::new();
    for &n in &counts {
        let direct = steady(Mode::Direct, n, rate, secs, &nats).await?;
        println!("{direct}");
        let stream = steady(Mode::Stream, n, rate, secs, &nats).await?;
        println!("{stream}");
        rows.push((n, direct, stream));
    }
    let mut catchups = Vec::new();
    for &n in &catchup_counts {
        let direct = catchup_direct(n, catchup_n).await?;
        let stream = catchup_stream(n, catchup_n, &nats).await?;
        println!(
            "catch-up of {catchup_n} changes, {n} children: direct per child {} changes/s, \
             stream per child {} changes/s",
            rates(&direct),
            rates(&stream)
        );
        catchups.push((n, direct, stream));
    }
    println!("machine after:  {}", common::machine());

    println!(
        "\nwriter alone: {:.1} µs CPU per change",
        writer_only.hub_cpu_us
    );
    println!(
        "\n| children | hub CPU µs/change direct | stream | ratio | outbox SELECTs direct | stream | rows read/change direct | stream | bytes read/change direct | stream | lag p99 ms direct | stream | lag max ms stream | nats-server CPU µs/change | children CPU µs/change |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (n, d, s) in &rows {
        println!(
            "| {n} | {:.1} | {:.1} | {:.2} | {} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            d.hub_cpu_us,
            s.hub_cpu_us,
            s.hub_cpu_us / d.hub_cpu_us,
            d.selects,
            s.selects,
            d.rows_read_per_change,
            s.rows_read_per_change,
            d.bytes_read_per_change,
            s.bytes_read_per_change,
            d.lag_p99_ms,
            s.lag_p99_ms,
            s.lag_max_ms,
            s.nats_cpu_us,
            s.children_cpu_us,
        );
    }
    for (n, d, s) in &rows {
        println!(
            "RESULT children={n} hub_cpu_us_direct={:.1} hub_cpu_us_stream={:.1} rows_read_direct={:.2} rows_read_stream={:.2} bytes_read_direct={:.0} bytes_read_stream={:.0} lag_p99_ms_direct={:.1} lag_p99_ms_stream={:.1} writer_cpu_us={:.1}",
            d.hub_cpu_us,
            s.hub_cpu_us,
            d.rows_read_per_change,
            s.rows_read_per_change,
            d.bytes_read_per_change,
            s.bytes_read_per_change,
            d.lag_p99_ms,
            s.lag_p99_ms,
            writer_only.hub_cpu_us
        );
    }
    for (n, d, s) in &catchups {
        println!(
            "RESULT catchup children={n} changes={catchup_n} direct_per_child={} stream_per_child={}",
            rates(d),
            rates(s)
        );
    }
    Ok(())
}

/// Per-child rates as "min–max (median)".
fn rates(r: &[f64]) -> String {
    let mut r = r.to_vec();
    r.sort_by(f64::total_cmp);
    if r.is_empty() {
        return "none".into();
    }
    format!(
        "{:.0}–{:.0} (median {:.0})",
        r[0],
        r[r.len() - 1],
        r[r.len() / 2]
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    WriterOnly,
    Direct,
    Stream,
}

struct Steady {
    mode: Mode,
    children: usize,
    changes: usize,
    achieved: f64,
    hub_cpu_us: f64,
    nats_cpu_us: f64,
    children_cpu_us: f64,
    selects: u64,
    rows_read_per_change: f64,
    bytes_read_per_change: f64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    lag_max_ms: f64,
}

impl std::fmt::Display for Steady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}, {} children: {} changes ({:.0}/s), hub CPU {:.1} µs/change, outbox SELECTs {}, \
             rows read {:.2}/change, bytes read {:.0}/change, lag p50 {:.1} ms p99 {:.1} ms max {:.1} ms, \
             nats-server CPU {:.1} µs/change, children process CPU {:.1} µs/change",
            self.mode,
            self.children,
            self.changes,
            self.achieved,
            self.hub_cpu_us,
            self.selects,
            self.rows_read_per_change,
            self.bytes_read_per_change,
            self.lag_p50_ms,
            self.lag_p99_ms,
            self.lag_max_ms,
            self.nats_cpu_us,
            self.children_cpu_us
        )
    }
}

/// CPU time (user + system) of process `pid` ("self" for this one), in microseconds.
fn cpu_us(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // Linux reports them in USER_HZ, 100 per second on every platform it runs on.
    ticks * 10_000
}

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// A SQLite file at `path`, WAL and `synchronous = NORMAL` as `BenchDb::sqlite`.
async fn open_sqlite(path: &Path) -> Result<DatabaseConnection, Error> {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut opts = ConnectOptions::new(url);
    opts.sqlx_logging(false)
        .max_connections(4)
        .map_sqlx_sqlite_opts(|o| {
            o.pragma("journal_mode", "WAL")
                .pragma("synchronous", "NORMAL")
        });
    Ok(Database::connect(opts).await?)
}

/// The children's table: the bench entity's, and `applied_at`, the child's clock in
/// milliseconds since the epoch when the row was inserted.
async fn child_files(dir: &Path, n: usize) -> Result<Vec<PathBuf>, Error> {
    let ddl = common::ddl(DbBackend::Sqlite, "bench_captured");
    let ddl = format!(
        "{}, applied_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400000.0))",
        ddl.strip_suffix(')')
            .ok_or("the DDL ends with a parenthesis")?
    );
    let mut files = Vec::new();
    for i in 0..n {
        let path = dir.join(format!("child-{i}.sqlite"));
        let db = open_sqlite(&path).await?;
        db.execute_unprepared(&ddl).await?;
        db.close().await?;
        files.push(path);
    }
    Ok(files)
}

/// The hub's source, and a second connection to it (for the replicator) that counts its
/// `SELECT`s on the outbox.
async fn hub_source() -> Result<(BenchDb, DatabaseConnection, Arc<AtomicU64>), Error> {
    let source = BenchDb::sqlite().await;
    source
        .db
        .execute_unprepared(&common::ddl(DbBackend::Sqlite, "bench_captured"))
        .await?;
    ormsync::install(&source.db).await?;
    let mut opts = ConnectOptions::new(source.url.clone());
    opts.sqlx_logging(false).map_sqlx_sqlite_opts(|o| {
        o.pragma("journal_mode", "WAL")
            .pragma("synchronous", "NORMAL")
    });
    let mut counted = Database::connect(opts).await?;
    let selects = Arc::new(AtomicU64::new(0));
    let s = selects.clone();
    counted.set_metric_callback(move |info| {
        let sql = info.statement.sql.trim_start();
        if sql.len() >= 6
            && sql[..6].eq_ignore_ascii_case("select")
            && sql.contains("ormsync_outbox")
        {
            s.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok((source, counted, selects))
}

async fn js_context(url: &str) -> Result<async_nats::jetstream::Context, Error> {
    let client = async_nats::connect(url).await?;
    Ok(async_nats::jetstream::new(client))
}

/// A steady run: `rate` single-row commits per second for `secs` at the hub, shipped to
/// `n` children as `mode` says.
async fn steady(
    mode: Mode,
    n: usize,
    rate: u64,
    secs: u64,
    nats: &common::nats::NatsServer,
) -> Result<Steady, Error> {
    let dir = tempfile::tempdir()?;
    let files = child_files(dir.path(), n).await?;
    let (source, counted, selects) = hub_source().await?;
    let stream_name = format!("FANOUT_{n}_{}", uuid::Uuid::new_v4().simple());
    let mut children_proc = None;
    let rep = match mode {
        Mode::WriterOnly => None,
        Mode::Direct => {
            let mut b = Replicator::builder(counted.clone())
                .entity::<captured::Entity>()
                .without_retention();
            for (i, f) in files.iter().enumerate() {
                b = b.destination(
                    Destination::new(format!("child-{i}"), open_sqlite(f).await?).realtime(),
                );
            }
            Some(b.start().await?)
        }
        Mode::Stream => {
            let publisher = Publisher::builder(js_context(&nats.url()).await?, &stream_name)
                .create()
                .await?;
            let rep = Replicator::builder(counted.clone())
                .entity::<captured::Entity>()
                .without_retention()
                .destination(
                    Destination::jetstream("children", counted.clone(), publisher).realtime(),
                )
                .start()
                .await?;
            children_proc = Some(ChildrenProcess::start(&nats.url(), &stream_name, &files)?);
            Some(rep)
        }
    };
    // A first change every child applies before the clock starts: the children are
    // connected and following.
    write_bulk(&source.db, -1, 1).await?;
    if let Some(rep) = &rep {
        rep.sync_now().await?;
        wait_rows(&files, 1, Duration::from_secs(120)).await?;
    }
    let selects_before = selects.load(Ordering::Relaxed);
    let nats_pid = nats.pid().map(|p| p.to_string()).unwrap_or_default();
    let (hub_before, nats_before) = (cpu_us("self"), cpu_us(&nats_pid));
    let children_before = children_proc.as_ref().map_or(0, |c| c.cpu_us());
    let commits = write_steady(&source.db, rate, secs).await?;
    let changes = commits.len();
    // The hub's work ends when it has shipped every change (to the children themselves, or
    // to the stream); the polling of the children's files that follows is not the hub's.
    if let Some(rep) = &rep {
        rep.sync_now().await?;
    }
    let hub_after = cpu_us("self");
    wait_rows(&files, changes + 1, Duration::from_secs(600)).await?;
    let nats_after = cpu_us(&nats_pid);
    let children_after = children_proc.as_ref().map_or(0, |c| c.cpu_us());
    let selects = selects.load(Ordering::Relaxed) - selects_before;
    let applied: u64 = rep.as_ref().map_or(0, |r| {
        r.status()
            .destinations
            .iter()
            .map(|d| d.applied)
            .sum::<u64>()
    });
    if let Some(rep) = rep {
        rep.shutdown().await;
    }
    if let Some(c) = children_proc {
        c.stop()?;
    }
    // The warm-up change is in `applied` once per destination; take it out.
    let destinations = match mode {
        Mode::WriterOnly => 0,
        Mode::Direct => n as u64,
        Mode::Stream => 1,
    };
    let rows_read = applied.saturating_sub(destinations);
    let row_bytes = outbox_row_bytes(&source.db).await?;
    let mut lags = Vec::with_capacity(changes * n);
    for f in &files {
        let db = open_sqlite(f).await?;
        let applied_at: HashMap<i64, f64> = db
            .query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT id, applied_at FROM bench_captured",
            ))
            .await?
            .iter()
            .map(|r| Ok((r.try_get("", "id")?, r.try_get("", "applied_at")?)))
            .collect::<Result<_, sea_orm::DbErr>>()?;
        for (id, at) in &commits {
            let got = applied_at
                .get(id)
                .ok_or_else(|| format!("change {id} never reached {}", f.display()))?;
            lags.push((got - at).max(0.0));
        }
        db.close().await?;
    }
    lags.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if lags.is_empty() {
            0.0
        } else {
            lags[((lags.len() as f64 * p) as usize).min(lags.len() - 1)]
        }
    };
    if mode == Mode::Stream {
        let js = js_context(&nats.url()).await?;
        js.delete_stream(&stream_name).await?;
        js.delete_stream(format!("{stream_name}_STATE")).await?;
    }
    let per = |us: u64| us as f64 / changes.max(1) as f64;
    Ok(Steady {
        mode,
        children: n,
        changes,
        achieved: changes as f64 / secs as f64,
        hub_cpu_us: per(hub_after - hub_before),
        nats_cpu_us: per(nats_after - nats_before),
        children_cpu_us: per(children_after.saturating_sub(children_before)),
        selects,
        rows_read_per_change: rows_read as f64 / changes.max(1) as f64,
        bytes_read_per_change: rows_read as f64 * row_bytes / changes.max(1) as f64,
        lag_p50_ms: pct(0.50),
        lag_p99_ms: pct(0.99),
        lag_max_ms: lags.last().copied().unwrap_or(0.0),
    })
}

/// The mean size of an outbox row: payload, key and table name.
async fn outbox_row_bytes(db: &DatabaseConnection) -> Result<f64, Error> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT AVG(LENGTH(CAST(payload AS BLOB)) + LENGTH(CAST(pk AS BLOB)) \
             + LENGTH(table_name)) AS b FROM ormsync_outbox",
        ))
        .await?
        .ok_or("no answer")?;
    Ok(row.try_get::<Option<f64>>("", "b")?.unwrap_or(0.0))
}

/// Single-row captured inserts at `rate` for `secs`, ids from 1: each id and its commit
/// time in milliseconds since the epoch.
async fn write_steady(
    db: &DatabaseConnection,
    rate: u64,
    secs: u64,
) -> Result<Vec<(i64, f64)>, Error> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut commits = Vec::with_capacity((rate * secs) as usize);
    let mut id = 0;
    while Instant::now() < deadline {
        tick.tick().await;
        id += 1;
        let txn = db.begin().await?;
        common::captured_row(id).insert(&txn).await?;
        txn.commit().await?;
        commits.push((id, now_ms()));
    }
    Ok(commits)
}

/// Ids `from..from + n` in transactions of 100 rows.
async fn write_bulk(db: &DatabaseConnection, from: i64, n: u64) -> Result<(), Error> {
    let mut id = from;
    let end = from + n as i64;
    while id < end {
        let txn = db.begin().await?;
        for _ in 0..100 {
            if id >= end {
                break;
            }
            common::captured_row(id).insert(&txn).await?;
            id += 1;
        }
        txn.commit().await?;
    }
    Ok(())
}

async fn rows(path: &Path) -> Result<usize, Error> {
    let db = open_sqlite(path).await?;
    let n = common::count(&db, "bench_captured").await as usize;
    db.close().await?;
    Ok(n)
}

/// Waits until every child holds `n` rows; the time each one got there, from the call.
async fn wait_rows(files: &[PathBuf], n: usize, timeout: Duration) -> Result<Vec<Duration>, Error> {
    let start = Instant::now();
    let mut done: Vec<Option<Duration>> = vec![None; files.len()];
    let mut dbs = Vec::new();
    for f in files {
        dbs.push(open_sqlite(f).await?);
    }
    while done.iter().any(Option::is_none) {
        for (i, db) in dbs.iter().enumerate() {
            if done[i].is_none() && common::count(db, "bench_captured").await as usize >= n {
                done[i] = Some(start.elapsed());
            }
        }
        if start.elapsed() > timeout {
            let mut held = Vec::new();
            for f in files {
                held.push(rows(f).await?);
            }
            return Err(format!("children did not reach {n} rows in {timeout:?}: {held:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for db in dbs {
        db.close().await?;
    }
    Ok(done.into_iter().flatten().collect())
}

/// The baseline of a catch-up: `n` children added as direct destinations to a hub whose
/// outbox holds `changes` changes; each child's rate.
async fn catchup_direct(n: usize, changes: u64) -> Result<Vec<f64>, Error> {
    let dir = tempfile::tempdir()?;
    let files = child_files(dir.path(), n).await?;
    let (source, counted, _) = hub_source().await?;
    write_bulk(&source.db, 1, changes).await?;
    let mut b = Replicator::builder(counted)
        .entity::<captured::Entity>()
        .without_retention();
    for (i, f) in files.iter().enumerate() {
        b = b.destination(Destination::new(
            format!("child-{i}"),
            open_sqlite(f).await?,
        ));
    }
    let rep = b.start().await?;
    let times = wait_rows(&files, changes as usize, Duration::from_secs(600)).await?;
    rep.shutdown().await;
    Ok(times
        .iter()
        .map(|t| changes as f64 / t.as_secs_f64())
        .collect())
}

/// `n` children that applied the stream once, offline while the hub publishes `changes`
/// changes, then started again; each child's rate.
async fn catchup_stream(
    n: usize,
    changes: u64,
    nats: &common::nats::NatsServer,
) -> Result<Vec<f64>, Error> {
    let dir = tempfile::tempdir()?;
    let files = child_files(dir.path(), n).await?;
    let (source, counted, _) = hub_source().await?;
    let stream_name = format!("FANOUT_CATCHUP_{n}_{}", uuid::Uuid::new_v4().simple());
    let publisher = Publisher::builder(js_context(&nats.url()).await?, &stream_name)
        .create()
        .await?;
    let rep = Replicator::builder(counted.clone())
        .entity::<captured::Entity>()
        .without_retention()
        .destination(Destination::jetstream("children", counted.clone(), publisher).realtime())
        .start()
        .await?;
    write_bulk(&source.db, 0, 1).await?;
    rep.sync_now().await?;
    let children = ChildrenProcess::start(&nats.url(), &stream_name, &files)?;
    wait_rows(&files, 1, Duration::from_secs(120)).await?;
    children.stop()?;
    write_bulk(&source.db, 1, changes).await?;
    rep.sync_now().await?;
    let children = ChildrenProcess::start(&nats.url(), &stream_name, &files)?;
    // From when every subscriber has started: `start` returns once the process says so.
    let times = wait_rows(&files, changes as usize + 1, Duration::from_secs(600)).await?;
    children.stop()?;
    rep.shutdown().await;
    let js = js_context(&nats.url()).await?;
    js.delete_stream(&stream_name).await?;
    js.delete_stream(format!("{stream_name}_STATE")).await?;
    Ok(times
        .iter()
        .map(|t| changes as f64 / t.as_secs_f64())
        .collect())
}

/// The children's process: `ready` on its standard output once every subscriber started;
/// it stops them and exits when its standard input closes.
struct ChildrenProcess {
    child: Child,
}

impl ChildrenProcess {
    fn start(url: &str, stream: &str, files: &[PathBuf]) -> Result<ChildrenProcess, Error> {
        let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        let mut child = Command::new(std::env::current_exe()?)
            .env(CHILDREN_OF, url)
            .env(STREAM_ENV, stream)
            .env(FILES_ENV, files.join(","))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.kill();
            return Err(format!("the children process said {line:?}").into());
        }
        Ok(ChildrenProcess { child })
    }

    fn cpu_us(&self) -> u64 {
        cpu_us(&self.child.id().to_string())
    }

    fn stop(mut self) -> Result<(), Error> {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("the children process ended with {status}").into());
        }
        Ok(())
    }
}

/// In the children's process: a subscriber per file, until standard input closes.
async fn children_process(url: &str) -> Result<(), Error> {
    let stream = std::env::var(STREAM_ENV)?;
    let files = std::env::var(FILES_ENV)?;
    let js = js_context(url).await?;
    let mut subscribers = Vec::new();
    for (i, f) in files.split(',').filter(|f| !f.is_empty()).enumerate() {
        let db = open_sqlite(Path::new(f)).await?;
        subscribers.push(
            Subscriber::builder(
                js.clone(),
                &stream,
                Destination::new(format!("child-{i}"), db),
            )
            .entity::<captured::Entity>()
            .start()
            .await?,
        );
    }
    println!("ready");
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await?;
    for s in subscribers {
        s.shutdown().await;
    }
    Ok(())
}
