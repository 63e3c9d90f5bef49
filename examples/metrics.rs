//! Serves ormsync's metrics for Prometheus while a replicator ships a steady stream of
//! writes, and measures commit-to-applied latency in real-time mode.
//!
//! ```text
//! cargo run --release --example metrics -- --seconds 30 --rate 1000
//! curl http://127.0.0.1:9898/metrics
//! ```
//!
//! ormsync reports through the `metrics` facade; the application installs the recorder of
//! its choice. Here it is `metrics-exporter-prometheus`, rendered on a plain TCP listener.
//! SQLite files in a temporary directory by default; `--source`/`--dest` take any URLs
//! (for the PostgreSQL → PostgreSQL latency figure, two PostgreSQL databases).
//!
//! Counters: `ormsync_changes_captured_total{table}`, `ormsync_changes_applied_total`,
//! `ormsync_apply_failures_total`; gauges: `ormsync_pending_changes`, `ormsync_lag_seconds`;
//! histograms: `ormsync_batch_size`, `ormsync_batch_duration_seconds` (all per `destination`).

use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use ormsync::redact::redact;
use ormsync::{Destination, Replicator};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, Database, EntityTrait, QueryFilter, Schema,
    Set, TransactionTrait,
};
use tokio::io::AsyncWriteExt;

mod events {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "metrics_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub payload: String,
        /// When the writer committed, in microseconds since the epoch.
        pub committed_at_us: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

#[derive(Parser)]
struct Args {
    /// Source URL (default: a SQLite file in a temporary directory).
    #[arg(long, env = "ORMSYNC_SOURCE_URL", hide_env_values = true)]
    source: Option<String>,
    /// Destination URL (default: a SQLite file in a temporary directory).
    #[arg(long, env = "ORMSYNC_DEST_URL", hide_env_values = true)]
    dest: Option<String>,
    /// How long to write.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Writes (one-row transactions) per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Where to serve /metrics.
    #[arg(long, default_value = "127.0.0.1:9898")]
    listen: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("serving metrics on http://{}/metrics", args.listen);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = prometheus.render();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });

    let dir = tempfile::tempdir()?;
    let sqlite = |name: &str| format!("sqlite://{}?mode=rwc", dir.path().join(name).display());
    let source_url = args
        .source
        .clone()
        .unwrap_or_else(|| sqlite("source.sqlite"));
    let dest_url = args.dest.clone().unwrap_or_else(|| sqlite("dest.sqlite"));
    println!("{} → {}", redact(&source_url), redact(&dest_url));
    let source = Database::connect(&source_url).await?;
    let dest = Database::connect(&dest_url).await?;
    for db in [&source, &dest] {
        if db.get_database_backend() == sea_orm::DbBackend::Sqlite {
            db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
        }
        let create = Schema::new(db.get_database_backend())
            .create_table_from_entity(events::Entity)
            .if_not_exists()
            .to_owned();
        db.execute(&create).await?;
        events::Entity::delete_many().exec(db).await?;
    }

    let replicator = Replicator::builder(source.clone())
        .entity::<events::Entity>()
        .poll_interval(Duration::from_secs(5))
        .destination(Destination::new("dest", dest.clone()).realtime())
        .start()
        .await?;

    // The writer: one-row transactions at a steady rate.
    let total = args.seconds * args.rate;
    let every = Duration::from_secs_f64(1.0 / args.rate as f64);
    let writer = {
        let source = source.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for id in 0..total as i64 {
                tokio::time::sleep_until(start + every * id as u32).await;
                let txn = source.begin().await?;
                events::ActiveModel {
                    id: Set(id),
                    payload: Set(format!("event {id}")),
                    committed_at_us: Set(Utc::now().timestamp_micros()),
                }
                .insert(&txn)
                .await?;
                txn.commit().await?;
            }
            Ok::<(), sea_orm::DbErr>(())
        })
    };

    // The observer: when each row shows up at the destination.
    let mut latencies_us = Vec::with_capacity(total as usize);
    let mut seen = 0i64;
    let deadline = Instant::now() + Duration::from_secs(args.seconds + 30);
    while seen < total as i64 && Instant::now() < deadline {
        let rows = events::Entity::find()
            .filter(events::Column::Id.gte(seen))
            .all(&dest)
            .await?;
        let now = Utc::now().timestamp_micros();
        let mut ids: Vec<&events::Model> = rows.iter().collect();
        ids.sort_by_key(|m| m.id);
        for m in ids {
            if m.id != seen {
                break;
            }
            latencies_us.push(now - m.committed_at_us);
            seen += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    writer.await??;
    latencies_us.sort_unstable();
    let pct =
        |p: f64| latencies_us[((latencies_us.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    if latencies_us.is_empty() {
        println!("nothing arrived");
    } else {
        println!(
            "{} changes at {}/s for {} s: commit-to-applied p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            latencies_us.len(),
            args.rate,
            args.seconds,
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
    }
    println!("{}", replicator.status());
    replicator.shutdown().await;
    Ok(())
}
