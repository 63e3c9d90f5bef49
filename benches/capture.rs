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

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common::{BenchDb, Server};
use criterion::Criterion;
use sea_orm::{ActiveModelTrait, DatabaseConnection, TransactionTrait};
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

    let sqlite = rt.block_on(BenchDb::sqlite());
    results.push(("sqlite", bench_backend(&mut c, &rt, "sqlite", &sqlite.db)));
    drop(sqlite);

    for (server, name, env) in [
        (Server::Postgres, "postgres", "ORMSYNC_BENCH_POSTGRES_URL"),
        (Server::MySql, "mariadb", "ORMSYNC_BENCH_MYSQL_URL"),
    ] {
        let admin = common::admin_url(server, env);
        match rt.block_on(BenchDb::server(server, &admin)) {
            Ok(db) => {
                results.push((name, bench_backend(&mut c, &rt, name, &db.db)));
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
}
