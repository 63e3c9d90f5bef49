//! Capture overhead: a single-row insert and a single-row update, each in its own
//! transaction (begin, write, commit), of a captured entity (`#[derive(Replicated)]`: the
//! row plus its outbox row) next to an identical plain entity on another table of the same
//! database (the baseline), on SQLite and PostgreSQL.
//!
//! ```text
//! cargo bench --bench capture
//! ```
//!
//! PostgreSQL is `postgres://postgres@127.0.0.1:5432/postgres` unless
//! `ORMSYNC_BENCH_POSTGRES_URL` says otherwise; the bench creates and drops its own
//! database there, and skips PostgreSQL with a message when it is not reachable. Criterion
//! prints each pair side by side (`insert/sqlite/plain`, `insert/sqlite/captured`, …);
//! a summary of captured ÷ plain follows at the end.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BenchDb, Server};
use criterion::Criterion;
use sea_orm::{ActiveModelTrait, DatabaseConnection, TransactionTrait};
use tokio::runtime::Runtime;

/// Rows each update bench cycles through (inserted before it starts).
const UPDATE_ROWS: i64 = 1000;
/// First id the insert benches use: above the update rows.
const FIRST_INSERT_ID: i64 = 1_000_000;

/// Per-call timings of every bench, for the ratio summary: criterion's own statistics are
/// not readable from here, so each routine also records what it measured.
#[derive(Default, Clone)]
struct Timings(Arc<Mutex<BTreeMap<String, Vec<f64>>>>);

impl Timings {
    fn record(&self, id: &str, elapsed: Duration, iters: u64) {
        if iters == 0 {
            return;
        }
        let per = elapsed.as_secs_f64() / iters as f64;
        if let Ok(mut m) = self.0.lock() {
            m.entry(id.to_string()).or_default().push(per);
        }
    }

    /// The median per-iteration time of `id`'s calls (warm-up included), in seconds.
    fn median(&self, id: &str) -> Option<f64> {
        let m = self.0.lock().ok()?;
        let mut v = m.get(id)?.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
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

fn bench_backend(
    c: &mut Criterion,
    rt: &Runtime,
    backend: &str,
    db: &DatabaseConnection,
    t: &Timings,
) {
    rt.block_on(prepare(db));
    let next_id = Arc::new(AtomicI64::new(FIRST_INSERT_ID));
    let round = Arc::new(AtomicI64::new(0));

    let mut group = c.benchmark_group(format!("insert/{backend}"));
    for kind in [Kind::Plain, Kind::Captured] {
        let id = format!("insert/{backend}/{}", kind.name());
        group.bench_function(kind.name(), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (db, next_id, t, id) = (db.clone(), next_id.clone(), t.clone(), id.clone());
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let row = next_id.fetch_add(1, Ordering::Relaxed);
                        insert_one(&db, kind, row).await;
                    }
                    let elapsed = start.elapsed();
                    t.record(&id, elapsed, iters);
                    elapsed
                }
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group(format!("update/{backend}"));
    for kind in [Kind::Plain, Kind::Captured] {
        let id = format!("update/{backend}/{}", kind.name());
        group.bench_function(kind.name(), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (db, round, t, id) = (db.clone(), round.clone(), t.clone(), id.clone());
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let r = round.fetch_add(1, Ordering::Relaxed) + 1;
                        update_one(&db, kind, r % UPDATE_ROWS + 1, r).await;
                    }
                    let elapsed = start.elapsed();
                    t.record(&id, elapsed, iters);
                    elapsed
                }
            });
        });
    }
    group.finish();
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
    let timings = Timings::default();
    let mut backends = Vec::new();

    let sqlite = rt.block_on(BenchDb::sqlite());
    bench_backend(&mut c, &rt, "sqlite", &sqlite.db, &timings);
    backends.push("sqlite");
    drop(sqlite);

    let admin = common::admin_url(Server::Postgres, "ORMSYNC_BENCH_POSTGRES_URL");
    match rt.block_on(BenchDb::server(Server::Postgres, &admin)) {
        Ok(pg) => {
            bench_backend(&mut c, &rt, "postgres", &pg.db, &timings);
            backends.push("postgres");
            drop(pg);
        }
        Err(why) => println!("skipped postgres: {why}"),
    }

    c.final_summary();

    println!();
    println!("capture overhead (median of criterion's per-sample means, warm-up included)");
    println!("machine before: {before}");
    println!("machine after:  {}", common::machine());
    println!(
        "{:<18} {:>12} {:>12} {:>16}",
        "bench", "plain µs", "captured µs", "captured/plain"
    );
    for backend in backends {
        for op in ["insert", "update"] {
            let p = timings.median(&format!("{op}/{backend}/plain"));
            let cap = timings.median(&format!("{op}/{backend}/captured"));
            if let (Some(p), Some(cap)) = (p, cap) {
                println!(
                    "{:<18} {:>12.1} {:>12.1} {:>16.2}",
                    format!("{op}/{backend}"),
                    p * 1e6,
                    cap * 1e6,
                    cap / p
                );
            }
        }
    }
}
