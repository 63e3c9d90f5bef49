//! Shipping throughput from a backlog, against a ceiling measured in the same run.
//!
//! For each backend pair: N captured inserts are written at the source (through the entity,
//! 1,000 rows a transaction) with no replicator running; then the time from
//! `Replicator::start` to the return of `sync_now()` (every change applied at the
//! destination) gives ormsync's rows/s. The same again for N updates of those rows. The
//! ceiling is the destination taking the same rows straight from one client, as multi-row
//! upserts of 5,000 rows a statement (`insert_many … ON CONFLICT`, values bound), into a
//! table of the same shape: ormsync/ceiling is the share of the destination's raw upsert
//! speed that ormsync reaches.
//!
//! ```text
//! cargo bench --bench ship
//! ORMSYNC_BENCH_ROWS=200000 cargo bench --bench ship
//! ```
//!
//! Environment:
//!
//! - `ORMSYNC_BENCH_ROWS`: N (default 20000).
//! - `ORMSYNC_BENCH_BATCH`: the replicator's `batch_size` (default: the library's, 3000).
//! - `ORMSYNC_BENCH_APPLY_CONNECTIONS`: the destination's `apply_connections` (default 1).
//! - `ORMSYNC_BENCH_CEILING_CLIENTS`: a comma-separated list of client counts (default
//!   `1`). The ceiling is also measured with that many clients upserting at once, each
//!   taking the next 5,000-row statement: what several destination connections could reach
//!   at best. The ratio is always to the one-client ceiling; the others print as
//!   `RESULT_CEILING` lines and below the table.
//! - `ORMSYNC_BENCH_SCENARIOS`: a comma-separated subset of `postgres-postgres`,
//!   `postgres-mariadb`, `sqlite-postgres` (default: all three).
//! - `ORMSYNC_BENCH_SOURCE_URL`, `ORMSYNC_BENCH_DEST_URL`: the PostgreSQL servers that hold
//!   the source and destination databases (default for both, and for the capture bench:
//!   `ORMSYNC_BENCH_POSTGRES_URL`, else `postgres://postgres@127.0.0.1:5432/postgres`).
//!   The bench creates a uniquely named database on each and drops it afterwards.
//! - `ORMSYNC_BENCH_MYSQL_URL`: MariaDB/MySQL (default `mysql://root@127.0.0.1:3306`).
//! - `ORMSYNC_BENCH_REQUIRE_SERVERS=1`: an unreachable server fails the run instead of
//!   skipping its scenarios.
//!
//! Columns: `capture/s` is how fast the backlog was written (captured writes, 1,000 a
//! transaction; for information); `ship s` and `ship/s` are ormsync's; `ceiling/s` the
//! direct upserts'; `ratio` is ship/s ÷ ceiling/s. Where the shipping time goes:
//! `start %` is `Replicator::start` (source tables, node id, spawning the worker);
//! `read %` and `apply %` are the time inside ormsync's `ormsync.read_batch` and
//! `ormsync.apply_batch` tracing spans (reading and decoding the outbox; applying a batch
//! in one destination transaction with its checkpoint); the rest is the worker's other
//! work (destination tables and column check, lease, dead letters, routing a batch,
//! recording progress at the source, counting the backlog). `client CPU` is the CPU time of this
//! process over the shipping time (100% = one core busy): low means the time goes into
//! waiting on the databases.
//!
//! Besides the table, each figure is printed as a `RESULT key=value …` line for scripts
//! (`benches/compare_logical.sh` reads them).

mod common;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BenchDb, Server, captured, plain};
use ormsync::{Destination, Replicated, Replicator};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, EntityTrait, TransactionTrait,
};
use tracing::span;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Rows per source transaction when building a backlog.
const CHUNK: i64 = 1000;
/// Rows per ceiling statement: at least as many as ormsync's default batch, so the ceiling
/// pays no more round trips than ormsync does (with 1,000-row statements it was slower
/// than ormsync's 5,000-row batches on PostgreSQL).
const CEILING_ROWS: usize = 5000;

type Error = Box<dyn std::error::Error + Send + Sync>;

// --- Where the shipping time goes: wall time inside ormsync's spans, by name --------------

#[derive(Clone, Default)]
struct SpanTimes(Arc<Mutex<HashMap<&'static str, (Duration, u64)>>>);

struct Opened(Instant);

impl SpanTimes {
    fn take(&self) -> HashMap<&'static str, (Duration, u64)> {
        self.0
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

impl<S> Layer<S> for SpanTimes
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, _: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Opened(Instant::now()));
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(opened) = span.extensions().get::<Opened>().map(|o| o.0) else {
            return;
        };
        if let Ok(mut m) = self.0.lock() {
            let e = m.entry(span.metadata().name()).or_default();
            e.0 += opened.elapsed();
            e.1 += 1;
        }
    }
}

// --- Configuration -----------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
    MySql,
}

struct Scenario {
    id: &'static str,
    source: Kind,
    dest: Kind,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        id: "postgres-postgres",
        source: Kind::Postgres,
        dest: Kind::Postgres,
    },
    Scenario {
        id: "postgres-mariadb",
        source: Kind::Postgres,
        dest: Kind::MySql,
    },
    Scenario {
        id: "sqlite-postgres",
        source: Kind::Sqlite,
        dest: Kind::Postgres,
    },
];

struct Config {
    rows: i64,
    batch: u64,
    scenarios: Vec<String>,
    pg_source: String,
    pg_dest: String,
    mysql: String,
    require_servers: bool,
    ceiling_clients: Vec<usize>,
    /// `Destination::apply_connections` of the shipping destination.
    connections: usize,
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .map_err(|_| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let pg = common::admin_url(Server::Postgres, "ORMSYNC_BENCH_POSTGRES_URL");
        let scenarios: Vec<String> = std::env::var("ORMSYNC_BENCH_SCENARIOS")
            .map(|s| {
                s.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_else(|_| SCENARIOS.iter().map(|s| s.id.to_string()).collect());
        for s in &scenarios {
            if !SCENARIOS.iter().any(|k| k.id == s) {
                return Err(format!(
                    "unknown scenario `{s}` in ORMSYNC_BENCH_SCENARIOS (known: postgres-postgres, postgres-mariadb, sqlite-postgres)"
                ));
            }
        }
        let rows: i64 = env_number("ORMSYNC_BENCH_ROWS", 20_000)?;
        if rows < 1 {
            return Err("ORMSYNC_BENCH_ROWS must be at least 1".into());
        }
        Ok(Config {
            rows,
            batch: env_number("ORMSYNC_BENCH_BATCH", 3000)?,
            connections: env_number("ORMSYNC_BENCH_APPLY_CONNECTIONS", 1)?,
            scenarios,
            pg_source: std::env::var("ORMSYNC_BENCH_SOURCE_URL").unwrap_or_else(|_| pg.clone()),
            pg_dest: std::env::var("ORMSYNC_BENCH_DEST_URL").unwrap_or(pg),
            mysql: common::admin_url(Server::MySql, "ORMSYNC_BENCH_MYSQL_URL"),
            require_servers: std::env::var("ORMSYNC_BENCH_REQUIRE_SERVERS")
                .is_ok_and(|v| !v.is_empty() && v != "0"),
            ceiling_clients: match std::env::var("ORMSYNC_BENCH_CEILING_CLIENTS") {
                Err(_) => vec![1],
                Ok(v) => v
                    .split(',')
                    .map(|c| c.trim().parse::<usize>().ok().filter(|&c| c >= 1))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        format!("ORMSYNC_BENCH_CEILING_CLIENTS={v} is not a list of client counts like 1,2,4")
                    })?,
            },
        })
    }
}

// --- One scenario -------------------------------------------------------------------------

/// One line of the table.
struct Figure {
    scenario: &'static str,
    op: &'static str,
    rows: i64,
    /// Building the backlog at the source: captured writes, 1,000 a transaction.
    capture_rows_per_s: f64,
    ship_secs: f64,
    ceiling_secs: f64,
    /// The ceiling again with more clients at once: (clients, seconds).
    more_ceilings: Vec<(usize, f64)>,
    shares: Shares,
    /// Calls of `sync_now` it took until the destination had everything (1 when it keeps
    /// its promise).
    sync_calls: u32,
}

/// Shares of the shipping time: `Replicator::start` (source tables, node id, spawning the
/// worker), and time inside the `ormsync.read_batch` and `ormsync.apply_batch` spans.
#[derive(Clone, Copy)]
struct Shares {
    start: f64,
    read: Option<f64>,
    apply: Option<f64>,
    /// CPU time of this whole process (all threads) while shipping, over the shipping time:
    /// how busy the client side is (the databases run in their own processes).
    client_cpu: Option<f64>,
}

/// CPU seconds this process has used so far (user + system, all threads), from
/// `/proc/self/stat` in clock ticks of 1/100 s; `None` where that is not available.
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

impl Figure {
    fn ship_rows_per_s(&self) -> f64 {
        self.rows as f64 / self.ship_secs
    }
    fn ceiling_rows_per_s(&self) -> f64 {
        self.rows as f64 / self.ceiling_secs
    }
    fn ratio(&self) -> f64 {
        self.ceiling_secs / self.ship_secs
    }
}

enum Outcome {
    Done(Vec<Figure>),
    Skipped(String),
}

async fn open(kind: Kind, role: &str, cfg: &Config) -> Result<BenchDb, String> {
    match kind {
        Kind::Sqlite => Ok(BenchDb::sqlite().await),
        Kind::Postgres => {
            let admin = if role == "source" {
                &cfg.pg_source
            } else {
                &cfg.pg_dest
            };
            BenchDb::server(Server::Postgres, admin).await
        }
        Kind::MySql => BenchDb::server(Server::MySql, &cfg.mysql).await,
    }
}

/// Writes the backlog: `rows` captured inserts (`round` 0) or updates, 1,000 a transaction.
async fn backlog(db: &DatabaseConnection, rows: i64, round: i64) -> Result<f64, Error> {
    let start = Instant::now();
    let mut first = 1;
    while first <= rows {
        let last = (first + CHUNK - 1).min(rows);
        let txn = db.begin().await?;
        for id in first..=last {
            if round == 0 {
                common::captured_row(id).insert(&txn).await?;
            } else {
                common::captured_update(id, round).update(&txn).await?;
            }
        }
        txn.commit().await?;
        first = last + 1;
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

/// Starts a replicator and waits until the destination has everything: the shipping time.
async fn ship(
    source: &DatabaseConnection,
    dest: &DatabaseConnection,
    batch: u64,
    connections: usize,
    spans: &SpanTimes,
) -> Result<(f64, Shares, u32), Error> {
    let target = max_outbox_id(source).await?;
    spans.take();
    let cpu_before = process_cpu_secs();
    let start = Instant::now();
    let replicator = Replicator::builder(source.clone())
        .entity::<captured::Entity>()
        // The backlog is what is measured: no initial copy of the rows it already wrote.
        .destination(
            Destination::new("bench", dest.clone())
                .initial_snapshot(false)
                .apply_connections(connections),
        )
        .batch_size(batch)
        // Only the first pass and `sync_now` should run.
        .poll_interval(Duration::from_secs(3600))
        .start()
        .await?;
    let started = start.elapsed().as_secs_f64();
    // `sync_now` should return once everything is applied. When it returns early (a pass
    // that ends before the outbox is drained), it is called again and the calls counted.
    let deadline = start + Duration::from_secs(6 * 3600);
    let mut calls = 0u32;
    let synced = loop {
        calls += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, replicator.sync_now()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => break Err(format!("sync_now failed: {e}")),
            Err(_) => break Err("sync_now did not return within 6 hours".to_string()),
        }
        let watermark = replicator
            .status()
            .destinations
            .first()
            .map_or(0, |d| d.watermark);
        if watermark >= target {
            break Ok(());
        }
        if calls >= 1000 {
            break Err(format!(
                "still at outbox id {watermark} of {target} after {calls} calls of sync_now"
            ));
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let cpu = process_cpu_secs()
        .zip(cpu_before)
        .map(|(a, b)| (a - b) / secs);
    let status = replicator.status().to_string();
    replicator.shutdown().await;
    if let Err(e) = synced {
        return Err(format!("{e}\n{status}").into());
    }
    let times = spans.take();
    let share = |name: &str| times.get(name).map(|t| t.0.as_secs_f64() / secs);
    Ok((
        secs,
        Shares {
            start: started / secs,
            read: share("ormsync.read_batch"),
            apply: share("ormsync.apply_batch"),
            client_cpu: cpu,
        },
        calls,
    ))
}

/// The highest outbox id at `db`: what the destination must reach.
async fn max_outbox_id(db: &DatabaseConnection) -> Result<i64, Error> {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT COALESCE(MAX(id), 0) AS m FROM ormsync_outbox",
        ))
        .await?
        .ok_or("no row from MAX(id)")?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// The same rows written straight into the destination's plain table: multi-row upserts
/// of `CEILING_ROWS` rows, from `clients` connections at once, each taking the next
/// statement when its last one is done.
async fn ceiling(
    dest: &DatabaseConnection,
    rows: i64,
    round: i64,
    clients: usize,
) -> Result<f64, Error> {
    use plain::Column as C;
    let clients = clients.max(1);
    let on_conflict = OnConflict::column(C::Id)
        .update_columns([
            C::Name,
            C::Email,
            C::Balance,
            C::CreatedAt,
            C::Uid,
            C::Note,
            C::Qty,
            C::Active,
        ])
        .to_owned();
    let chunks: Vec<Vec<plain::ActiveModel>> = (1..=rows)
        .collect::<Vec<_>>()
        .chunks(CEILING_ROWS)
        .map(|ids| {
            ids.iter()
                .map(|&id| {
                    if round == 0 {
                        common::plain_row(id)
                    } else {
                        common::plain_row_updated(id, round)
                    }
                })
                .collect()
        })
        .collect();
    let queue = Arc::new(Mutex::new(chunks.into_iter()));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (queue, dest, on_conflict) = (queue.clone(), dest.clone(), on_conflict.clone());
            tokio::spawn(async move {
                loop {
                    let next = queue
                        .lock()
                        .map_err(|_| "a ceiling client panicked")?
                        .next();
                    let Some(chunk) = next else {
                        return Ok::<_, Error>(());
                    };
                    plain::Entity::insert_many(chunk)
                        .on_conflict(on_conflict.clone())
                        .exec_without_returning(&dest)
                        .await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Row `id` at both ends, as ormsync sees them.
async fn check_row(
    source: &DatabaseConnection,
    dest: &DatabaseConnection,
    rows: i64,
    id: i64,
) -> Result<(), Error> {
    let shipped = common::count(dest, "bench_captured").await;
    if shipped != rows {
        return Err(format!("the destination has {shipped} rows, expected {rows}").into());
    }
    let at = |db: &DatabaseConnection| {
        let db = db.clone();
        async move {
            let m = captured::Entity::find_by_id(id)
                .one(&db)
                .await?
                .ok_or_else(|| format!("row {id} is missing"))?;
            Ok::<_, Error>(captured::Entity::to_row(&m)?)
        }
    };
    let (s, d) = (at(source).await?, at(dest).await?);
    if s != d {
        return Err(format!("row {id} differs: source {s:?}, destination {d:?}").into());
    }
    Ok(())
}

async fn run_scenario(sc: &Scenario, cfg: &Config, spans: &SpanTimes) -> Result<Outcome, Error> {
    let source = match open(sc.source, "source", cfg).await {
        Ok(db) => db,
        Err(why) => return Ok(Outcome::Skipped(why)),
    };
    let dest = match open(sc.dest, "destination", cfg).await {
        Ok(db) => db,
        Err(why) => return Ok(Outcome::Skipped(why)),
    };
    common::create_tables(&source.db).await;
    common::create_tables(&dest.db).await;
    ormsync::install(&source.db).await?;
    ormsync::install(&dest.db).await?;
    let n = cfg.rows;
    let mut figures = Vec::new();
    for (op, round) in [("insert", 0), ("update", 1)] {
        eprintln!("{}: {op}: writing a backlog of {n} captured {op}s", sc.id);
        let capture_rows_per_s = backlog(&source.db, n, round).await?;
        eprintln!("{}: {op}: shipping", sc.id);
        let (ship_secs, shares, sync_calls) =
            ship(&source.db, &dest.db, cfg.batch, cfg.connections, spans).await?;
        check_row(&source.db, &dest.db, n, n).await?;
        eprintln!("{}: {op}: ceiling", sc.id);
        let ceiling_secs = ceiling(&dest.db, n, round, 1).await?;
        let mut more_ceilings = Vec::new();
        for &clients in cfg.ceiling_clients.iter().filter(|&&c| c > 1) {
            eprintln!("{}: {op}: ceiling with {clients} clients", sc.id);
            // The same work as the one-client run: inserts into an empty table, updates
            // to values the rows do not hold yet.
            let round = if round == 0 {
                dest.db
                    .execute_unprepared("DELETE FROM bench_plain")
                    .await?;
                0
            } else {
                round * 1000 + clients as i64
            };
            more_ceilings.push((clients, ceiling(&dest.db, n, round, clients).await?));
        }
        let written = common::count(&dest.db, "bench_plain").await;
        if written != n {
            return Err(format!("the ceiling table has {written} rows, expected {n}").into());
        }
        figures.push(Figure {
            scenario: sc.id,
            op,
            rows: n,
            capture_rows_per_s,
            ship_secs,
            ceiling_secs,
            more_ceilings,
            shares,
            sync_calls,
        });
    }
    Ok(Outcome::Done(figures))
}

fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "-".into(), |s| format!("{:.0}%", s * 100.0))
}

fn main() -> ExitCode {
    if !common::run_by_cargo_bench() {
        eprintln!("ship bench: not run outside `cargo bench --bench ship`");
        return ExitCode::SUCCESS;
    }
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ship bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let spans = SpanTimes::default();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(
                    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
                ),
        )
        .with(spans.clone().with_filter(EnvFilter::new("ormsync=debug")))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ship bench: {e}");
            return ExitCode::FAILURE;
        }
    };

    let before = common::machine();
    let mut figures = Vec::new();
    let mut failed = false;
    for sc in SCENARIOS
        .iter()
        .filter(|s| cfg.scenarios.iter().any(|x| x == s.id))
    {
        match rt.block_on(run_scenario(sc, &cfg, &spans)) {
            Ok(Outcome::Done(f)) => figures.extend(f),
            Ok(Outcome::Skipped(why)) => {
                println!("skipped {}: {}", sc.id, why);
                if cfg.require_servers {
                    failed = true;
                }
            }
            Err(e) => {
                eprintln!(
                    "{} failed: {}",
                    sc.id,
                    ormsync::redact::redact(&e.to_string())
                );
                failed = true;
            }
        }
    }

    println!();
    println!(
        "ormsync shipping from a backlog: N = {} rows, batch_size {}, ceiling = {}-row upserts from one client",
        cfg.rows, cfg.batch, CEILING_ROWS
    );
    println!("machine before: {before}");
    println!("machine after:  {}", common::machine());
    println!(
        "{:<18} {:<7} {:>10} {:>9} {:>10} {:>10} {:>8} {:>8} {:>7} {:>8} {:>10}",
        "scenario",
        "op",
        "capture/s",
        "ship s",
        "ship/s",
        "ceiling/s",
        "ratio",
        "start %",
        "read %",
        "apply %",
        "client CPU"
    );
    for f in &figures {
        println!(
            "{:<18} {:<7} {:>10.0} {:>9.2} {:>10.0} {:>10.0} {:>8.3} {:>8} {:>7} {:>8} {:>10}",
            f.scenario,
            f.op,
            f.capture_rows_per_s,
            f.ship_secs,
            f.ship_rows_per_s(),
            f.ceiling_rows_per_s(),
            f.ratio(),
            percent(Some(f.shares.start)),
            percent(f.shares.read),
            percent(f.shares.apply),
            percent(f.shares.client_cpu),
        );
    }
    println!();
    for f in &figures {
        println!(
            "RESULT scenario={} op={} rows={} capture_rows_per_s={:.0} ormsync_secs={:.3} ormsync_rows_per_s={:.0} ceiling_secs={:.3} ceiling_rows_per_s={:.0} ratio={:.4} sync_calls={}",
            f.scenario,
            f.op,
            f.rows,
            f.capture_rows_per_s,
            f.ship_secs,
            f.ship_rows_per_s(),
            f.ceiling_secs,
            f.ceiling_rows_per_s(),
            f.ratio(),
            f.sync_calls,
        );
    }
    for f in &figures {
        for &(clients, secs) in &f.more_ceilings {
            println!(
                "RESULT_CEILING scenario={} op={} rows={} clients={clients} ceiling_secs={secs:.3} ceiling_rows_per_s={:.0} vs_one_client={:.3}",
                f.scenario,
                f.op,
                f.rows,
                f.rows as f64 / secs,
                f.ceiling_secs / secs,
            );
        }
    }
    let early: Vec<String> = figures
        .iter()
        .filter(|f| f.sync_calls > 1)
        .map(|f| format!("{} {} ({} calls)", f.scenario, f.op, f.sync_calls))
        .collect();
    if !early.is_empty() {
        println!();
        println!(
            "note: sync_now returned before the destination had everything, and was called again, in: {}",
            early.join(", ")
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
