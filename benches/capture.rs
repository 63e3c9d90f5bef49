//! Capture overhead: a single-row insert and a single-row update, each in its own
//! transaction (begin, write, commit), of a captured entity (`#[derive(Replicated)]`: the
//! row plus its outbox row) next to an identical plain entity on another table of the same
//! database (the baseline), on SQLite, PostgreSQL and MariaDB.
//!
//! ```text
//! cargo bench --bench capture
//! ```
//!
//! PostgreSQL is `postgres://postgres@127.0.0.1:5432/postgres` unless
//! `ORMSYNC_BENCH_POSTGRES_URL` says otherwise, MariaDB `mysql://root@127.0.0.1:3306`
//! unless `ORMSYNC_BENCH_MYSQL_URL` does; the bench creates and drops its own database on
//! each, and skips a server with a message when it is not reachable. Criterion
//! prints each pair side by side (`insert/sqlite/plain`, `insert/sqlite/captured`, …).
//! The ratio at the end comes from a paired run after them: blocks of plain and captured
//! transactions alternate, so drift on a shared machine weighs on both alike.
//!
//! Then the same transactions from concurrent writers: for each count in
//! `ORMSYNC_BENCH_WRITERS` (default `1,4,16,32`), rounds of plain and captured blocks of
//! [`CONCURRENT_BLOCK`] each, alternating, and the throughput of each (transactions per
//! second). An update writer changes rows of its own, so writers meet only on the tables
//! and the outbox. On PostgreSQL a third kind, `captured+trigger`, measures captures with a
//! statement trigger on the outbox that calls `pg_notify` in every capturing transaction.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common::{BenchDb, Server};
use criterion::Criterion;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseConnection, TransactionTrait};
use tokio::runtime::Runtime;

/// Rows each update bench cycles through (inserted before it starts).
const UPDATE_ROWS: i64 = 1000;
/// First id the insert benches use: above the update rows.
const FIRST_INSERT_ID: i64 = 1_000_000;

/// Rounds of the paired measurement, and transactions of each kind per round.
const PAIRED_ROUNDS: usize = 30;
const PAIRED_BLOCK: usize = 100;

/// What the paired measurement found for one backend and operation.
struct Paired {
    plain_us: f64,
    captured_us: f64,
    /// Captured ÷ plain time of each round, sorted.
    round_ratios: Vec<f64>,
}

impl Paired {
    /// Captured ÷ plain time: the median round's. A WAL checkpoint or a neighbour's burst
    /// of I/O lands on one block and moves the means by more than the capture costs.
    fn ratio(&self) -> f64 {
        self.round_ratio(0.5)
    }

    /// The `q` quantile of the per-round ratios.
    fn round_ratio(&self, q: f64) -> f64 {
        let i = ((self.round_ratios.len() - 1) as f64 * q).round() as usize;
        self.round_ratios[i]
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Captured,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Captured => "captured",
        }
    }
}

async fn insert_one(db: &DatabaseConnection, kind: Kind, id: i64) {
    let txn = db.begin().await.expect("begin");
    match kind {
        Kind::Plain => {
            common::plain_row(id).insert(&txn).await.expect("insert");
        }
        Kind::Captured => {
            common::captured_row(id).insert(&txn).await.expect("insert");
        }
    }
    txn.commit().await.expect("commit");
}

async fn update_one(db: &DatabaseConnection, kind: Kind, id: i64, round: i64) {
    let txn = db.begin().await.expect("begin");
    match kind {
        Kind::Plain => {
            common::plain_update(id, round)
                .update(&txn)
                .await
                .expect("update");
        }
        Kind::Captured => {
            common::captured_update(id, round)
                .update(&txn)
                .await
                .expect("update");
        }
    }
    txn.commit().await.expect("commit");
}

/// Tables, the outbox, and the rows the update benches change.
async fn prepare(db: &DatabaseConnection) {
    common::create_tables(db).await;
    ormsync::install(db).await.expect("install the outbox");
    for kind in [Kind::Plain, Kind::Captured] {
        let txn = db.begin().await.expect("begin");
        for id in 1..=UPDATE_ROWS {
            match kind {
                Kind::Plain => common::plain_row(id).insert(&txn).await.map(drop),
                Kind::Captured => common::captured_row(id).insert(&txn).await.map(drop),
            }
            .expect("seed row");
        }
        txn.commit().await.expect("commit");
    }
}

/// Plain and captured transactions in alternating blocks of [`PAIRED_BLOCK`], the order
/// swapped each round, so whatever else the machine does weighs on both alike. Criterion's
/// separate runs of the two moved the ratio by up to 0.5 between back-to-back runs on a
/// shared VM; this is what the summary reports.
async fn paired(
    db: &DatabaseConnection,
    update: bool,
    next_id: &AtomicI64,
    round: &AtomicI64,
) -> Paired {
    let (mut plain, mut captured) = (Duration::ZERO, Duration::ZERO);
    let mut round_ratios = Vec::with_capacity(PAIRED_ROUNDS);
    for r in 0..PAIRED_ROUNDS {
        let order = if r % 2 == 0 {
            [Kind::Plain, Kind::Captured]
        } else {
            [Kind::Captured, Kind::Plain]
        };
        let mut took = [Duration::ZERO; 2];
        for kind in order {
            let start = Instant::now();
            for _ in 0..PAIRED_BLOCK {
                if update {
                    let n = round.fetch_add(1, Ordering::Relaxed) + 1;
                    update_one(db, kind, n % UPDATE_ROWS + 1, n).await;
                } else {
                    insert_one(db, kind, next_id.fetch_add(1, Ordering::Relaxed)).await;
                }
            }
            took[usize::from(kind == Kind::Captured)] = start.elapsed();
        }
        plain += took[0];
        captured += took[1];
        round_ratios.push(took[1].as_secs_f64() / took[0].as_secs_f64());
    }
    round_ratios.sort_by(f64::total_cmp);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / (PAIRED_ROUNDS * PAIRED_BLOCK) as f64;
    Paired {
        plain_us: per(plain),
        captured_us: per(captured),
        round_ratios,
    }
}

fn bench_backend(
    c: &mut Criterion,
    rt: &Runtime,
    backend: &str,
    db: &DatabaseConnection,
) -> [Paired; 2] {
    rt.block_on(prepare(db));
    let next_id = Arc::new(AtomicI64::new(FIRST_INSERT_ID));
    let round = Arc::new(AtomicI64::new(0));

    let mut group = c.benchmark_group(format!("insert/{backend}"));
    for kind in [Kind::Plain, Kind::Captured] {
        group.bench_function(kind.name(), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (db, next_id) = (db.clone(), next_id.clone());
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let row = next_id.fetch_add(1, Ordering::Relaxed);
                        insert_one(&db, kind, row).await;
                    }
                    start.elapsed()
                }
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group(format!("update/{backend}"));
    for kind in [Kind::Plain, Kind::Captured] {
        group.bench_function(kind.name(), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (db, round) = (db.clone(), round.clone());
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let r = round.fetch_add(1, Ordering::Relaxed) + 1;
                        update_one(&db, kind, r % UPDATE_ROWS + 1, r).await;
                    }
                    start.elapsed()
                }
            });
        });
    }
    group.finish();

    rt.block_on(async {
        [
            paired(db, false, &next_id, &round).await,
            paired(db, true, &next_id, &round).await,
        ]
    })
}

/// How long each block of the concurrent measurement runs, and how many rounds of plain
/// and captured blocks it takes.
const CONCURRENT_BLOCK: Duration = Duration::from_millis(1500);
const CONCURRENT_ROUNDS: usize = 3;

/// A trigger that notifies in every capturing transaction, as an outbox once had, for the
/// `captured+trigger` kind.
const NOTIFY_TRIGGER: [&str; 2] = [
    "CREATE OR REPLACE FUNCTION ormsync_bench_notify() RETURNS trigger LANGUAGE plpgsql AS \
     $$ BEGIN PERFORM pg_notify('ormsync_outbox', ''); RETURN NULL; END $$",
    "CREATE TRIGGER ormsync_bench_notify AFTER INSERT ON ormsync_outbox \
     FOR EACH STATEMENT EXECUTE FUNCTION ormsync_bench_notify()",
];

/// Transactions per second of `writers` concurrent writers over one block; failed
/// transactions (a busy SQLite) are not counted.
async fn concurrent_block(
    db: &DatabaseConnection,
    kind: Kind,
    update: bool,
    writers: usize,
    next_id: &Arc<AtomicI64>,
    round: &Arc<AtomicI64>,
) -> f64 {
    let deadline = Instant::now() + CONCURRENT_BLOCK;
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers as i64 {
        let (db, next_id, round) = (db.clone(), next_id.clone(), round.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            let own = UPDATE_ROWS / writers as i64;
            while Instant::now() < deadline {
                let ok = if update {
                    let n = round.fetch_add(1, Ordering::Relaxed);
                    let id = w * own + n % own.max(1) + 1;
                    try_update(&db, kind, id, n).await
                } else {
                    try_insert(&db, kind, next_id.fetch_add(1, Ordering::Relaxed)).await
                };
                done += u64::from(ok);
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total as f64 / CONCURRENT_BLOCK.as_secs_f64()
}

async fn try_insert(db: &DatabaseConnection, kind: Kind, id: i64) -> bool {
    let work = async {
        let txn = db.begin().await?;
        match kind {
            Kind::Plain => common::plain_row(id).insert(&txn).await.map(drop)?,
            Kind::Captured => common::captured_row(id).insert(&txn).await.map(drop)?,
        }
        txn.commit().await
    };
    work.await.is_ok()
}

async fn try_update(db: &DatabaseConnection, kind: Kind, id: i64, round: i64) -> bool {
    let work = async {
        let txn = db.begin().await?;
        match kind {
            Kind::Plain => common::plain_update(id, round)
                .update(&txn)
                .await
                .map(drop)?,
            Kind::Captured => common::captured_update(id, round)
                .update(&txn)
                .await
                .map(drop)?,
        }
        txn.commit().await
    };
    work.await.is_ok()
}

/// The writer counts to measure.
fn writer_counts() -> Vec<usize> {
    std::env::var("ORMSYNC_BENCH_WRITERS")
        .unwrap_or_else(|_| "1,4,16,32".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect()
}

/// One line of the concurrent measurement: median transactions per second of each kind.
struct Concurrent {
    what: String,
    plain: f64,
    captured: f64,
    /// Captured with the notify trigger (PostgreSQL only).
    triggered: Option<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Plain and captured blocks of every writer count, alternating, on `url`'s database
/// (prepared already), through a pool big enough for the writers; on PostgreSQL also with
/// the notify trigger, installed for those blocks only.
async fn concurrent(url: &str, backend: &str) -> Vec<Concurrent> {
    let counts = writer_counts();
    let Some(&most) = counts.iter().max() else {
        return Vec::new();
    };
    let mut opts = sea_orm::ConnectOptions::new(url.to_string());
    opts.sqlx_logging(false)
        .max_connections(most as u32 + 2)
        .min_connections(most as u32);
    if backend == "sqlite" {
        opts.map_sqlx_sqlite_opts(|o| {
            o.pragma("journal_mode", "WAL")
                .pragma("synchronous", "NORMAL")
        });
    }
    let db = sea_orm::Database::connect(opts).await.expect("bench pool");
    let pg = backend == "postgres";
    let next_id = Arc::new(AtomicI64::new(FIRST_INSERT_ID * 10));
    let round = Arc::new(AtomicI64::new(0));
    let mut out = Vec::new();
    for update in [false, true] {
        for &writers in &counts {
            let (mut plain, mut captured, mut triggered) = (Vec::new(), Vec::new(), Vec::new());
            for r in 0..CONCURRENT_ROUNDS {
                let order = if r % 2 == 0 {
                    [Kind::Plain, Kind::Captured]
                } else {
                    [Kind::Captured, Kind::Plain]
                };
                for kind in order {
                    let tps = concurrent_block(&db, kind, update, writers, &next_id, &round).await;
                    match kind {
                        Kind::Plain => plain.push(tps),
                        Kind::Captured => captured.push(tps),
                    }
                }
                if pg {
                    for sql in NOTIFY_TRIGGER {
                        db.execute_unprepared(sql).await.expect("notify trigger");
                    }
                    triggered.push(
                        concurrent_block(&db, Kind::Captured, update, writers, &next_id, &round)
                            .await,
                    );
                    db.execute_unprepared("DROP TRIGGER ormsync_bench_notify ON ormsync_outbox")
                        .await
                        .expect("drop notify trigger");
                }
            }
            out.push(Concurrent {
                what: format!(
                    "{}/{backend}/{writers}",
                    if update { "update" } else { "insert" }
                ),
                plain: median(plain),
                captured: median(captured),
                triggered: pg.then(|| median(triggered)),
            });
        }
    }
    db.close().await.ok();
    out
}

fn main() {
    if !common::run_by_cargo_bench() {
        eprintln!("capture bench: not run outside `cargo bench --bench capture`");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Each measurement is short so the whole bench runs in about two minutes; pass
    // criterion's own flags (e.g. `-- --measurement-time 20`) for longer ones.
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let before = common::machine();
    let mut results = Vec::new();

    // The concurrent writers run on both cores, as an application's would.
    let many = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut concurrency = Vec::new();

    let sqlite = rt.block_on(BenchDb::sqlite());
    results.push(("sqlite", bench_backend(&mut c, &rt, "sqlite", &sqlite.db)));
    concurrency.extend(many.block_on(concurrent(&sqlite.url, "sqlite")));
    drop(sqlite);

    for (server, name, env) in [
        (Server::Postgres, "postgres", "ORMSYNC_BENCH_POSTGRES_URL"),
        (Server::MySql, "mariadb", "ORMSYNC_BENCH_MYSQL_URL"),
    ] {
        let admin = common::admin_url(server, env);
        match rt.block_on(BenchDb::server(server, &admin)) {
            Ok(db) => {
                results.push((name, bench_backend(&mut c, &rt, name, &db.db)));
                concurrency.extend(many.block_on(concurrent(&db.url, name)));
                drop(db);
            }
            Err(why) => println!("skipped {name}: {why}"),
        }
    }

    c.final_summary();

    println!();
    println!(
        "capture overhead, paired: {PAIRED_ROUNDS} rounds of {PAIRED_BLOCK} plain and \
         {PAIRED_BLOCK} captured transactions, alternating (µs: mean per transaction)"
    );
    println!("machine before: {before}");
    println!("machine after:  {}", common::machine());
    println!(
        "{:<18} {:>10} {:>12} {:>10} {:>12} {:>18}",
        "bench", "plain µs", "captured µs", "median ×", "throughput", "rounds p10–p90 ×"
    );
    for (backend, ops) in results {
        for (op, p) in ["insert", "update"].into_iter().zip(ops) {
            println!(
                "{:<18} {:>10.1} {:>12.1} {:>10.2} {:>12.2} {:>12.2}–{:.2}",
                format!("{op}/{backend}"),
                p.plain_us,
                p.captured_us,
                p.ratio(),
                1.0 / p.ratio(),
                p.round_ratio(0.1),
                p.round_ratio(0.9),
            );
        }
    }

    println!();
    println!(
        "concurrent writers: {CONCURRENT_ROUNDS} rounds of {:.1} s blocks, median \
         transactions per second",
        CONCURRENT_BLOCK.as_secs_f64()
    );
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>16} {:>10}",
        "bench/writers", "plain/s", "captured/s", "captured ÷", "+trigger/s", "+trigger ÷"
    );
    for r in concurrency {
        let (t, tr) = match r.triggered {
            Some(t) => (format!("{t:.0}"), format!("{:.2}", t / r.plain)),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<22} {:>10.0} {:>10.0} {:>10.2} {:>16} {:>10}",
            r.what,
            r.plain,
            r.captured,
            r.captured / r.plain,
            t,
            tr
        );
    }
}
