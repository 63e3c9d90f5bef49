//! Verify speed: a table of 1,000,000 rows (9 columns) in sync between PostgreSQL and
//! MariaDB, against the time of simply reading and decoding every row of both tables
//! (both at once, in key order, streamed), and the peak memory of the process during each.
//!
//! ```text
//! cargo bench --bench verify
//! ORMSYNC_BENCH_ROWS=100000 cargo bench --bench verify
//! ```
//!
//! Both tables are filled by SQL on the servers (`generate_series`, MariaDB's sequence
//! engine) with the same values. Environment: `ORMSYNC_BENCH_ROWS` (default 1,000,000),
//! `ORMSYNC_BENCH_CHUNK` (verify's chunk size, default its own), `ORMSYNC_BENCH_POSTGRES_URL`,
//! `ORMSYNC_BENCH_MYSQL_URL`.

mod common;

use std::process::ExitCode;
use std::time::Instant;

use common::{BenchDb, Server, captured};
use futures_util::StreamExt;
use ormsync::Replicated;
use ormsync::verify::{VerifyOptions, verify_table};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryOrder, Statement};

type Error = Box<dyn std::error::Error + Send + Sync>;

const FILL_POSTGRES: &str = "INSERT INTO bench_captured \
    SELECT g, 'customer ' || g, 'customer' || g || '@example.com', \
    round(((g * 137) % 10000000)::numeric / 100, 2), to_timestamp(1700000000 + g), \
    md5(g::text)::uuid, CASE WHEN g % 2 = 0 THEN 'note of ' || g END, g % 100, g % 3 <> 0 \
    FROM generate_series(1, $1::bigint) AS g";

const FILL_MARIADB: &str = "INSERT INTO bench_captured \
    SELECT seq, CONCAT('customer ', seq), CONCAT('customer', seq, '@example.com'), \
    ROUND(((seq * 137) % 10000000) / 100, 2), FROM_UNIXTIME(1700000000 + seq), \
    UNHEX(MD5(seq)), IF(seq % 2 = 0, CONCAT('note of ', seq), NULL), seq % 100, seq % 3 <> 0 \
    FROM seq_1_to_";

#[tokio::main]
async fn main() -> ExitCode {
    common::bench_main("verify", run()).await
}

async fn run() -> Result<(), Error> {
    let n: i64 = std::env::var("ORMSYNC_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let pg = BenchDb::server(
        Server::Postgres,
        &common::admin_url(Server::Postgres, "ORMSYNC_BENCH_POSTGRES_URL"),
    )
    .await?;
    let maria = BenchDb::server(
        Server::MySql,
        &common::admin_url(Server::MySql, "ORMSYNC_BENCH_MYSQL_URL"),
    )
    .await?;
    for db in [&pg.db, &maria.db] {
        db.execute_unprepared(&common::ddl(db.get_database_backend(), "bench_captured"))
            .await?;
    }
    let filled = Instant::now();
    pg.db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            FILL_POSTGRES,
            [n.into()],
        ))
        .await?;
    maria
        .db
        .execute_unprepared(&format!("SET time_zone = '+00:00'; {FILL_MARIADB}{n}"))
        .await?;
    println!("{n} rows on each side in {:?}", filled.elapsed());
    println!("machine before: {}", common::machine());

    // Baseline: read and decode every row of both tables, at once, in key order.
    common::reset_peak_rss();
    let started = Instant::now();
    let (a, b) = tokio::join!(read_all(&pg.db), read_all(&maria.db));
    let (a, b) = (a?, b?);
    let read_secs = started.elapsed().as_secs_f64();
    let read_peak = common::peak_rss_kib();
    if a != n as u64 || b != n as u64 {
        return Err(format!("read {a} and {b} rows, expected {n}").into());
    }

    common::reset_peak_rss();
    let mut opts = VerifyOptions::default();
    if let Some(chunk) = std::env::var("ORMSYNC_BENCH_CHUNK")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        opts = opts.chunk_size(chunk);
    }
    let started = Instant::now();
    let report = verify_table(&pg.db, &maria.db, &captured::Entity::table_spec(), &opts).await?;
    let verify_secs = started.elapsed().as_secs_f64();
    let verify_peak = common::peak_rss_kib();
    println!("machine after:  {}", common::machine());
    if !report.is_clean() {
        return Err(format!("the tables should be equal: {report:?}").into());
    }
    println!(
        "\n{n} rows, PostgreSQL vs MariaDB:\n  plain read of both: {read_secs:.2} s ({:.0} rows/s per side), peak RSS {:.1} MiB\n  verify:             {verify_secs:.2} s ({:.0} rows/s per side), peak RSS {:.1} MiB\n  verify ÷ read time: {:.2}",
        n as f64 / read_secs,
        read_peak as f64 / 1024.0,
        n as f64 / verify_secs,
        verify_peak as f64 / 1024.0,
        verify_secs / read_secs
    );
    println!(
        "RESULT rows={n} read_secs={read_secs:.3} verify_secs={verify_secs:.3} verify_rows_per_s={:.0} ratio={:.3} read_peak_mib={:.1} verify_peak_mib={:.1}",
        n as f64 / verify_secs,
        verify_secs / read_secs,
        read_peak as f64 / 1024.0,
        verify_peak as f64 / 1024.0
    );
    Ok(())
}

/// Streams every row of the table in key order, decoding each into a `Model`.
async fn read_all(db: &DatabaseConnection) -> Result<u64, Error> {
    let mut rows = captured::Entity::find()
        .order_by_asc(captured::Column::Id)
        .stream(db)
        .await?;
    let mut n = 0;
    while let Some(row) = rows.next().await {
        row?;
        n += 1;
    }
    Ok(n)
}
