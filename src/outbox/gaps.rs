//! Telling a hole (a rolled-back id that never commits) from an id whose transaction is
//! still open, per backend.
//!
//! When the reader sees id N+1 but not N, the transaction that took N has either rolled
//! back (a hole, to be skipped) or not committed yet (to be waited for). A gap is settled
//! once every transaction that could own it has ended; a settled gap still missing in the
//! next read is a hole.
//!
//! - **PostgreSQL**: right after the read, take the snapshot's `xmax`: the owner of N had
//!   already taken N, so its xid is below it. Once the current snapshot's `xmin` reaches
//!   that value, every such transaction has ended.
//! - **MySQL/MariaDB**: take the server's `NOW(6)` after the read; the gap settles when
//!   `information_schema.innodb_trx` lists no transaction started at or before it. Without
//!   the `PROCESS` privilege that table reads empty or fails, so a timeout (far above any
//!   transaction's life, configurable) is the fallback.
//! - **SQLite**: one writer at a time, so a visible higher id means N's writer has ended:
//!   a gap is a hole at once.

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::error::{DbContext, Result};

/// Evidence taken when a gap was first seen.
#[derive(Clone, Debug)]
pub(crate) enum Proof {
    /// SQLite: nothing to wait for.
    Immediate,
    /// PostgreSQL: the snapshot's `xmax` after the read.
    PgXmax(u64),
    /// MySQL/MariaDB: the server time after the read, and when we saw it.
    MySql { server_time: String, seen: Instant },
}

/// Takes the proof for gaps seen in the read that just finished.
pub(crate) async fn take(db: &DatabaseConnection) -> Result<Proof> {
    let backend = db.get_database_backend();
    Ok(match backend {
        DbBackend::Postgres => {
            let v = scalar(db, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text").await?;
            Proof::PgXmax(v.parse().unwrap_or(u64::MAX))
        }
        DbBackend::MySql => Proof::MySql {
            server_time: scalar(db, "SELECT CAST(NOW(6) AS CHAR)").await?,
            seen: Instant::now(),
        },
        _ => Proof::Immediate,
    })
}

/// The present state of the source, against which proofs are checked; read once per batch.
pub(crate) enum Now {
    Immediate,
    PgXmin(u64),
    MySql {
        oldest_open: Option<String>,
        readable: bool,
    },
}

/// Reads what [`settled`] needs, once for every pending gap.
pub(crate) async fn now(db: &DatabaseConnection) -> Result<Now> {
    Ok(match db.get_database_backend() {
        DbBackend::Postgres => {
            let v = scalar(db, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text").await?;
            Now::PgXmin(v.parse().unwrap_or(0))
        }
        DbBackend::MySql => {
            let stmt = Statement::from_string(
                DbBackend::MySql,
                "SELECT CAST(MIN(trx_started) AS CHAR) AS v FROM information_schema.innodb_trx",
            );
            match db.query_one_raw(stmt).await {
                Ok(Some(row)) => Now::MySql {
                    oldest_open: row.try_get::<Option<String>>("", "v").ok().flatten(),
                    readable: true,
                },
                _ => Now::MySql {
                    oldest_open: None,
                    readable: false,
                },
            }
        }
        _ => Now::Immediate,
    })
}

/// Whether every transaction that could own a gap proven by `proof` has ended.
pub(crate) fn settled(proof: &Proof, now: &Now, timeout: Duration) -> bool {
    match (proof, now) {
        (Proof::Immediate, _) => true,
        (Proof::PgXmax(xmax), Now::PgXmin(xmin)) => xmin >= xmax,
        (
            Proof::MySql { server_time, seen },
            Now::MySql {
                oldest_open,
                readable,
            },
        ) => {
            if seen.elapsed() >= timeout {
                return true;
            }
            // `trx_started` has whole seconds and `server_time` has microseconds; both are
            // `YYYY-MM-DD HH:MM:SS…` strings, so they compare as text. A transaction that
            // started in the same second counts as open, which only waits longer.
            *readable
                && match oldest_open {
                    None => true,
                    Some(oldest) => oldest.as_str() > server_time.as_str(),
                }
        }
        _ => false,
    }
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> Result<String> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .context(|| "reading the source's open transactions".into())?;
    Ok(row
        .and_then(|r| r.try_get_by_index::<String>(0).ok())
        .unwrap_or_default())
}
