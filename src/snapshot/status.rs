//! What a snapshot or resync reports while it runs.

use sea_orm::ConnectionTrait;
use serde::Serialize;

use super::store::TableProgress;
use crate::error::Result;

/// The progress of a destination's snapshot or resync, in
/// [`DestinationStatus::snapshot`](crate::DestinationStatus::snapshot).
///
/// Counts cover the whole copy, including chunks copied before an interruption;
/// `rows_per_second` covers this run only.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SnapshotStatus {
    /// The table being copied; `None` once every table is done.
    pub table: Option<String>,
    /// Tables copied completely.
    pub tables_done: usize,
    /// Tables to copy in all.
    pub tables_total: usize,
    /// Rows written to the destination.
    pub rows_copied: u64,
    /// About how many rows the copy writes in all, for a progress bar: the rows copied
    /// before this run plus the source's row count of the tables left, taken when this run
    /// began (`None` until counted). Rows written at the source meanwhile make it drift a
    /// little; `rows_copied + rows_deferred` reaches it when the copy is done.
    pub rows_total: Option<u64>,
    /// Rows left to the stream because their parent row was not at the destination yet
    /// (written at the source after the parent's table was copied; the stream brings both).
    pub rows_deferred: u64,
    /// Destination rows deleted because the source lacks them.
    pub rows_deleted: u64,
    /// Chunks copied in this run.
    pub chunks: u64,
    /// Rows written per second in this run.
    pub rows_per_second: f64,
}

impl SnapshotStatus {
    pub(crate) fn new(progress: &[TableProgress]) -> Self {
        SnapshotStatus {
            table: None,
            tables_done: progress.iter().filter(|p| p.done).count(),
            tables_total: progress.len(),
            rows_copied: progress.iter().map(|p| p.copied).sum(),
            rows_deferred: progress.iter().map(|p| p.deferred).sum(),
            rows_total: None,
            rows_deleted: 0,
            chunks: 0,
            rows_per_second: 0.0,
        }
    }

    /// Whether every table is copied.
    pub fn is_done(&self) -> bool {
        self.tables_done >= self.tables_total
    }
}

/// One table's copy as the destination records it in `ormsync_snapshot`, for a tool
/// watching a snapshot or resync from another process (the `ormsync` command line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TableCopy {
    /// The table.
    pub table: String,
    /// Whether its copy is complete.
    pub done: bool,
    /// Rows written so far.
    pub copied: u64,
}

/// The copies from source `source_id` recorded at destination `db`, by table name.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when `ormsync_snapshot` cannot be read.
pub async fn progress<C: ConnectionTrait>(db: &C, source_id: &str) -> Result<Vec<TableCopy>> {
    let mut all: Vec<TableCopy> = super::store::list(db, source_id)
        .await?
        .into_iter()
        .map(|p| TableCopy {
            table: p.table,
            done: p.done,
            copied: p.copied,
        })
        .collect();
    all.sort_by(|a, b| a.table.cmp(&b.table));
    Ok(all)
}
