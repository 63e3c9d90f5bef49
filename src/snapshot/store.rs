//! `ormsync_snapshot`: how far a snapshot or resync has copied each table, stored at the
//! destination and moved in the same transaction as the chunk it records, so an
//! interrupted copy resumes from its last chunk and never copies a chunk twice in effect.

use sea_orm::{ConnectionTrait, Statement};

use crate::change::Row;
use crate::error::{DbContext, Error, Result};
use crate::position::Position;
use crate::sql_text::{insert_if_absent, marks};

/// One table's copy, as stored.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TableProgress {
    pub(crate) table: String,
    /// The last key copied; `None` before the first chunk.
    pub(crate) last_key: Option<Row>,
    pub(crate) done: bool,
    /// Rows copied so far.
    pub(crate) copied: u64,
    /// Rows left to the stream because their parent row was not at the destination yet.
    pub(crate) deferred: u64,
    /// Whether destination rows the source lacks are deleted (a resync).
    pub(crate) prune: bool,
}

/// Starts (or restarts from the beginning) the copy of `tables` from `source`; with
/// `prune` (a resync) destination rows the source lacks are deleted as well.
pub(crate) async fn reset<C: ConnectionTrait>(
    db: &C,
    source: &str,
    tables: &[&str],
    prune: bool,
) -> Result<()> {
    let backend = db.get_database_backend();
    for table in tables {
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            marks(
                backend,
                "DELETE FROM ormsync_snapshot WHERE source = ? AND table_name = ?",
            ),
            [(*source).into(), (*table).into()],
        ))
        .await
        .context(|| format!("snapshot: resetting the progress of `{table}`"))?;
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            marks(
                backend,
                "INSERT INTO ormsync_snapshot (source, table_name, last_key, done, copied, deferred, prune) \
                 VALUES (?, ?, NULL, 0, 0, 0, ?)",
            ),
            [(*source).into(), (*table).into(), i32::from(prune).into()],
        ))
        .await
        .context(|| format!("snapshot: recording the start of `{table}`"))?;
    }
    Ok(())
}

/// Every table's copy from `source`, in no particular order.
pub(crate) async fn list<C: ConnectionTrait>(db: &C, source: &str) -> Result<Vec<TableProgress>> {
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            marks(
                backend,
                "SELECT table_name, last_key, done, copied, deferred, prune \
                 FROM ormsync_snapshot WHERE source = ?",
            ),
            [source.into()],
        ))
        .await
        .context(|| "snapshot: reading its progress".into())?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let decode = || "snapshot: decoding its progress".to_string();
        let table: String = row.try_get("", "table_name").context(decode)?;
        let last_key: Option<String> = row.try_get("", "last_key").context(decode)?;
        let last_key = match last_key {
            Some(json) => Some(Row::from_json(&json).map_err(|e| {
                Error::Config(format!(
                    "the snapshot progress of `{table}` holds a corrupt key ({e}); resync the table"
                ))
            })?),
            None => None,
        };
        out.push(TableProgress {
            last_key,
            done: row.try_get::<i32>("", "done").context(decode)? != 0,
            copied: row.try_get::<i64>("", "copied").context(decode)?.max(0) as u64,
            deferred: row.try_get::<i64>("", "deferred").context(decode)?.max(0) as u64,
            prune: row.try_get::<i32>("", "prune").context(decode)? != 0,
            table,
        });
    }
    Ok(out)
}

/// Records a chunk of `table` copied, inside the chunk's transaction: the last key copied
/// (`None` once the table is done), the rows copied and deferred.
pub(crate) async fn advance<C: ConnectionTrait>(
    txn: &C,
    source: &str,
    table: &str,
    last_key: Option<&Row>,
    copied: u64,
    deferred: u64,
) -> Result<()> {
    let backend = txn.get_database_backend();
    let done = i32::from(last_key.is_none());
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        marks(
            backend,
            "UPDATE ormsync_snapshot SET last_key = ?, done = ?, copied = copied + ?, \
             deferred = deferred + ? WHERE source = ? AND table_name = ?",
        ),
        [
            last_key.map(Row::to_json).into(),
            done.into(),
            (copied as i64).into(),
            (deferred as i64).into(),
            source.into(),
            table.into(),
        ],
    ))
    .await
    .context(|| format!("snapshot: recording the progress of `{table}`"))?;
    Ok(())
}

/// Records `base` as the position the copy from `source` converges from, unless a copy
/// under way already has one (older, so it covers this one's changes too).
pub(crate) async fn set_base<C: ConnectionTrait>(
    db: &C,
    source: &str,
    base: &Position,
) -> Result<()> {
    let backend = db.get_database_backend();
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        insert_if_absent(
            backend,
            "ormsync_snapshot_base (source, base) VALUES (?, ?)",
        ),
        [source.into(), base_json(base)?.into()],
    ))
    .await
    .context(|| "snapshot: recording where the copy converges from".into())?;
    Ok(())
}

/// The position the copy from `source` converges from; `None` when no copy waits to
/// converge.
pub(crate) async fn base<C: ConnectionTrait>(db: &C, source: &str) -> Result<Option<Position>> {
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            marks(
                backend,
                "SELECT base FROM ormsync_snapshot_base WHERE source = ?",
            ),
            [source.into()],
        ))
        .await
        .context(|| "snapshot: reading where the copy converges from".into())?;
    let Some(row) = row else {
        return Ok(None);
    };
    let json: String = row
        .try_get("", "base")
        .context(|| "snapshot: decoding where the copy converges from".into())?;
    serde_json::from_str(&json).map(Some).map_err(|e| {
        Error::Config(format!(
            "the snapshot base of source {source} is corrupt ({e}); resync the destination"
        ))
    })
}

/// Forgets the base of `source`'s copy, inside the transaction that stores the converged
/// checkpoint.
pub(crate) async fn clear_base<C: ConnectionTrait>(db: &C, source: &str) -> Result<()> {
    let backend = db.get_database_backend();
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        marks(
            backend,
            "DELETE FROM ormsync_snapshot_base WHERE source = ?",
        ),
        [source.into()],
    ))
    .await
    .context(|| "snapshot: clearing where the copy converged from".into())?;
    Ok(())
}

fn base_json(base: &Position) -> Result<String> {
    serde_json::to_string(base)
        .map_err(|e| Error::Config(format!("cannot encode a snapshot base: {e}")))
}
