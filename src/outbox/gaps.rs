//! Telling a hole (a rolled-back id that never commits) from an id whose transaction is
//! still open, per backend.
//!
//! When the reader sees id N+1 but not N, the transaction that took N has either rolled
//! back (a hole, to be skipped) or not committed yet (to be waited for). A gap is settled
//! once every transaction that could own it has ended; a settled gap still missing in the
//! next read is a hole.
//!
//! - **PostgreSQL**: right after the read, take a fresh xid (`pg_current_xact_id()` in a
//!   statement of its own): the owner of N had its xid before it took N (its row change
//!   comes before the capture), so that xid is below the fresh one. Once the current
//!   snapshot's `xmin` is above the fresh xid, every such transaction has ended.
//!   (A transaction whose first write is the outbox row itself would take N before its
//!   xid; if it were still open past the proof, its change would be skipped. Capture never
//!   does this: a change is captured after its row's write or locked read, and a delete
//!   that finds no row captures nothing. Repair, which writes only outbox rows, takes its
//!   xid first.)
//!   A snapshot's `xmax` is *not* such a bound: it is the latest *completed* xid plus one,
//!   so an open transaction whose xid is above every completed one holds an xid at or
//!   above `xmax` and, being the oldest running, becomes the later `xmin` itself.
//! - **MySQL/MariaDB**: an open transaction that inserted outbox row N holds that row's
//!   lock. A `SELECT … FOR UPDATE NOWAIT` over the gap (in a READ COMMITTED transaction,
//!   so no gap locks) fails at once while any owner is open and succeeds once all have
//!   ended. The autoincrement value is taken a few microseconds before the row is written,
//!   so a gap is only probed once it is a second old. (`information_schema.innodb_trx`
//!   would be the obvious source, but MariaDB serves it from a cache that stops
//!   refreshing while anyone polls it more often than every 100 ms.) If the probe cannot
//!   run at all (privileges), a timeout, far above any transaction's life, is the fallback.
//! - **SQLite**: one writer at a time, so a visible higher id means N's writer has ended:
//!   a gap is a hole at once.

use std::time::{Duration, Instant};

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, IsolationLevel, Statement, TransactionTrait,
};

use crate::classify;
use crate::error::{DbContext, Result};

/// How old a MySQL gap must be before its probe means anything.
const MYSQL_MIN_AGE: Duration = Duration::from_secs(1);

/// Evidence taken when a gap was first seen.
#[derive(Clone, Debug)]
pub(crate) enum Proof {
    /// SQLite: nothing to wait for.
    Immediate,
    /// PostgreSQL: an xid assigned after the read, above every xid assigned before it.
    PgXid(u64),
    /// MySQL/MariaDB: when the gap was seen.
    MySql { seen: Instant },
}

/// Takes the proof for gaps seen in the read that just finished.
pub(crate) async fn take(db: &DatabaseConnection) -> Result<Proof> {
    Ok(match db.get_database_backend() {
        DbBackend::Postgres => {
            // Not `pg_snapshot_xmax(pg_current_snapshot())`: that is latestCompletedXid + 1,
            // and the owner of a gap can be an open transaction holding exactly that xid or
            // a higher one (it began writing after the last transaction to finish). With it
            // as the bound, `settled` saw that owner as the later `xmin` itself and declared
            // its ids holes while it was still open: its changes were never shipped (a lost
            // delete of a child row, then the parent's delete refused at the destination).
            // An xid assigned now is above every xid assigned so far, the owner's included.
            // It costs one xid and a commit record (no WAL flush: nothing else is written)
            // per read that finds new gaps.
            let v = scalar(db, "SELECT pg_current_xact_id()::text").await?;
            Proof::PgXid(v.parse().unwrap_or(u64::MAX))
        }
        DbBackend::MySql => Proof::MySql {
            seen: Instant::now(),
        },
        _ => Proof::Immediate,
    })
}

/// Of `gaps` (inclusive id ranges with their proofs), those every owner of which has ended.
pub(crate) async fn settled(
    db: &DatabaseConnection,
    gaps: &[(i64, i64, &Proof)],
    timeout: Duration,
) -> Result<Vec<(i64, i64)>> {
    if gaps.is_empty() {
        return Ok(Vec::new());
    }
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let v = scalar(db, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text").await?;
            let xmin: u64 = v.parse().unwrap_or(0);
            Ok(gaps
                .iter()
                .filter(|(_, _, p)| match p {
                    // No transaction with an xid up to the proof's is still running.
                    Proof::PgXid(xid) => xmin > *xid,
                    _ => true,
                })
                .map(|&(lo, hi, _)| (lo, hi))
                .collect())
        }
        DbBackend::MySql => mysql_settled(db, gaps, timeout).await,
        _ => Ok(gaps.iter().map(|&(lo, hi, _)| (lo, hi)).collect()),
    }
}

async fn mysql_settled(
    db: &DatabaseConnection,
    gaps: &[(i64, i64, &Proof)],
    timeout: Duration,
) -> Result<Vec<(i64, i64)>> {
    let due: Vec<(i64, i64, Duration)> = gaps
        .iter()
        .map(|&(lo, hi, p)| {
            let age = match p {
                Proof::MySql { seen } => seen.elapsed(),
                _ => Duration::MAX,
            };
            (lo, hi, age)
        })
        .filter(|&(_, _, age)| age >= MYSQL_MIN_AGE)
        .collect();
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let txn = db
        .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
        .await
        .context(|| "probing outbox gaps".into())?;
    let mut out = Vec::new();
    for (lo, hi, age) in due {
        let probe = Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT id FROM ormsync_outbox WHERE id BETWEEN ? AND ? FOR UPDATE NOWAIT",
            [lo.into(), hi.into()],
        );
        match txn.query_all_raw(probe).await {
            Ok(_) => out.push((lo, hi)),
            // An owner is still open: wait, however long it takes.
            Err(e) if classify::is_row_locked(&e) => {}
            Err(e) => {
                tracing::debug!(error = %e, "cannot probe outbox gaps; falling back to the gap timeout");
                if age >= timeout {
                    out.push((lo, hi));
                }
            }
        }
    }
    txn.commit()
        .await
        .context(|| "closing the gap probe".into())?;
    Ok(out)
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
