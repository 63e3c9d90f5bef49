//! Verify of a text key that sorts by bytes at the destination against one that does not:
//! the same rows at a MariaDB table keyed by `VARCHAR` under `utf8mb4_bin` (read by keyset
//! pagination) and under `utf8mb4_general_ci` (read in one statement sorted by bytes),
//! each verified against a PostgreSQL source keyed under `"C"`, in one run.
//!
//! ```text
//! cargo bench --bench verify_collation
//! ORMSYNC_BENCH_ROWS=200000 cargo bench --bench verify_collation
//! ```
//!
//! The keys are an md5 behind `K`, `k` or `_k`, so the two orders disagree throughout.
//! Environment: `ORMSYNC_BENCH_ROWS` (default 100,000), `ORMSYNC_BENCH_RUNS` (alternating
//! runs of each, default 3), `ORMSYNC_BENCH_POSTGRES_URL`, `ORMSYNC_BENCH_MYSQL_URL`.

mod common;

use std::process::ExitCode;
use std::time::Instant;

use common::{BenchDb, Server};
use ormsync::verify::{VerifyOptions, verify};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

type Error = Box<dyn std::error::Error + Send + Sync>;

mod keyed {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "bench_keyed")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub k: String,
        pub n: i64,
        pub note: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

const FILL_POSTGRES: &str = "INSERT INTO bench_keyed \
    SELECT (ARRAY['K', 'k', '_k'])[g % 3 + 1] || md5(g::text), g, 'note of ' || g \
    FROM generate_series(1, $1::bigint) AS g";

const FILL_MARIADB: &str = "INSERT INTO bench_keyed \
    SELECT CONCAT(ELT(seq % 3 + 1, 'K', 'k', '_k'), MD5(seq)), seq, CONCAT('note of ', seq) \
    FROM seq_1_to_";

#[tokio::main]
async fn main() -> ExitCode {
    common::bench_main("verify_collation", run()).await
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run() -> Result<(), Error> {
    let n = env("ORMSYNC_BENCH_ROWS", 100_000);
    let runs = env("ORMSYNC_BENCH_RUNS", 3);
    let pg = BenchDb::server(
        Server::Postgres,
        &common::admin_url(Server::Postgres, "ORMSYNC_BENCH_POSTGRES_URL"),
    )
    .await?;
    let maria_url = common::admin_url(Server::MySql, "ORMSYNC_BENCH_MYSQL_URL");
    let bin = BenchDb::server(Server::MySql, &maria_url).await?;
    let ci = BenchDb::server(Server::MySql, &maria_url).await?;
    pg.db
        .execute_unprepared(
            "CREATE TABLE bench_keyed (k TEXT COLLATE \"C\" PRIMARY KEY, n BIGINT NOT NULL, \
             note TEXT NOT NULL)",
        )
        .await?;
    pg.db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            FILL_POSTGRES,
            [(n as i64).into()],
        ))
        .await?;
    for (db, collation) in [(&bin.db, "utf8mb4_bin"), (&ci.db, "utf8mb4_general_ci")] {
        db.execute_unprepared(&format!(
            "CREATE TABLE bench_keyed (k VARCHAR(40) CHARACTER SET utf8mb4 COLLATE {collation} \
             PRIMARY KEY, n BIGINT NOT NULL, note TEXT NOT NULL) ENGINE=InnoDB"
        ))
        .await?;
        db.execute_unprepared(&format!("{FILL_MARIADB}{n}")).await?;
    }
    println!("{n} rows on each side; machine: {}", common::machine());
    let opts = VerifyOptions::default();
    let (mut bin_secs, mut ci_secs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for (dest, secs) in [(&bin.db, &mut bin_secs), (&ci.db, &mut ci_secs)] {
            let started = Instant::now();
            let report = verify::<keyed::Entity>(&pg.db, dest, &opts).await?;
            secs.push(started.elapsed().as_secs_f64());
            if !report.is_clean() || report.matching != n {
                return Err(format!("the tables should be equal: {report}").into());
            }
        }
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (b, c) = (best(&bin_secs), best(&ci_secs));
    println!("utf8mb4_bin (paginated):       {bin_secs:.3?} s");
    println!("utf8mb4_general_ci (one sort): {ci_secs:.3?} s");
    println!(
        "RESULT rows={n} bin_secs={b:.3} ci_secs={c:.3} ratio={:.2} ci_rows_per_s={:.0}",
        c / b,
        n as f64 / c
    );
    Ok(())
}
