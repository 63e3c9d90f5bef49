//! Copying a set of tables chunk by chunk, parents first, from where the stored progress
//! says each stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use sea_orm::{ConnectionTrait, DatabaseConnection};

use super::copy::{self, Chunk};
use super::order;
use super::status::SnapshotStatus;
use super::store::TableProgress;
use crate::apply::Rules;
use crate::bounded_read::ReadBudget;
use crate::entity::{Reference, TableSpec};
use crate::error::{DbContext, Error, Result};
use crate::keyset;
use crate::value::Value;

/// What a copy runs between: one source, one destination and how it takes rows.
pub(crate) struct Link {
    pub(crate) source: DatabaseConnection,
    pub(crate) dest: DatabaseConnection,
    /// The source's node id (the key of its checkpoint and progress at the destination).
    pub(crate) source_id: String,
    /// The destination's name, for messages.
    pub(crate) destination: String,
    pub(crate) rules: Arc<Rules>,
    pub(crate) chunk_rows: u64,
    /// The lease generation the copy writes under.
    pub(crate) fence: super::Fence,
}

/// A copy in progress: the tables left, in foreign-key order, each from its last key.
///
/// The caller drives it a chunk at a time with [`step`](Copy::step), so it can renew a
/// lease, publish the status or stop between chunks.
pub(crate) struct Copy {
    link: Link,
    /// Tables left, the first being copied, with the key its next chunk starts after and
    /// whether it prunes.
    left: Vec<(TableSpec, Option<Vec<Value>>, bool)>,
    /// Whether the first table of `left` was found at the destination with its columns.
    checked: bool,
    /// Every table the destination receives, for the references between them.
    tables: HashMap<String, TableSpec>,
    status: SnapshotStatus,
    /// Rows already copied (or deferred) of the tables left, by earlier runs.
    partly_copied: u64,
    started: Instant,
    this_run: u64,
    /// Rows copied of the table being copied, earlier runs' included, for its log line
    /// (`status` counts every table's).
    table_rows: u64,
    /// Rows each unfinished table had copied before this run.
    copied_before: HashMap<String, u64>,
    /// Rows per chunk of the table being copied: fewer when its rows are wide.
    budget: ReadBudget,
}

impl Copy {
    /// Plans the copy of the unfinished tables of `progress` among `tables`.
    pub(crate) fn new(
        link: Link,
        tables: HashMap<String, TableSpec>,
        progress: &[TableProgress],
    ) -> Result<Copy> {
        let by_table: HashMap<&str, &TableProgress> =
            progress.iter().map(|p| (p.table.as_str(), p)).collect();
        let mut left = Vec::new();
        for spec in order::parents_first(
            tables
                .values()
                .filter(|s| by_table.get(s.table.as_str()).is_some_and(|p| !p.done)),
        ) {
            let p = by_table[spec.table.as_str()];
            let after = match &p.last_key {
                Some(row) => Some(keyset::key_of(spec, row)?),
                None => None,
            };
            left.push((spec.clone(), after, p.prune));
        }
        let partly_copied = progress
            .iter()
            .filter(|p| !p.done)
            .map(|p| p.copied + p.deferred)
            .sum();
        let copied_before: HashMap<String, u64> = progress
            .iter()
            .filter(|p| !p.done)
            .map(|p| (p.table.clone(), p.copied))
            .collect();
        let table_rows = left
            .first()
            .and_then(|(s, _, _)| copied_before.get(&s.table).copied())
            .unwrap_or(0);
        let mut status = SnapshotStatus::new(progress);
        status.table = left.first().map(|(s, _, _)| s.table.clone());
        Ok(Copy {
            link: Link {
                chunk_rows: link.chunk_rows.max(1),
                ..link
            },
            checked: false,
            left,
            tables,
            status,
            partly_copied,
            started: Instant::now(),
            this_run: 0,
            table_rows,
            copied_before,
            budget: ReadBudget::new(link.chunk_rows),
        })
    }

    /// The progress so far.
    pub(crate) fn status(&self) -> &SnapshotStatus {
        &self.status
    }

    /// Whether every table is copied.
    pub(crate) fn is_done(&self) -> bool {
        self.left.is_empty()
    }

    /// Counts the source's rows of the tables left, for [`SnapshotStatus::rows_total`]:
    /// one `COUNT(*)` per table.
    pub(crate) async fn count_rows(&mut self) -> Result<()> {
        let mut left = 0u64;
        for (spec, _, _) in &self.left {
            let q = sea_orm::sea_query::Query::select()
                .expr(sea_orm::sea_query::Expr::cust("COUNT(*)"))
                .from(sea_orm::sea_query::Alias::new(spec.table.as_str()))
                .to_owned();
            let n: i64 = self
                .link
                .source
                .query_one(&q)
                .await
                .context(|| format!("snapshot: counting the rows of `{}`", spec.table))?
                .and_then(|r| r.try_get_by_index::<i64>(0).ok())
                .unwrap_or(0);
            left += n.max(0) as u64;
        }
        // Tables partly copied count their rows twice otherwise: what is done is subtracted.
        let partly: u64 = self.partly_copied;
        self.status.rows_total =
            Some(self.status.rows_copied + self.status.rows_deferred + left.saturating_sub(partly));
        Ok(())
    }

    /// Copies the next chunk (its progress stored with it).
    pub(crate) async fn step(&mut self) -> Result<()> {
        let Some((spec, after, prune)) = self.left.first() else {
            return Ok(());
        };
        if !self.checked {
            check_table(
                &self.link.dest,
                &self.link.destination,
                spec,
                &self.link.rules,
            )
            .await?;
            tracing::debug!(table = %spec.table, resumed = after.is_some(), "snapshot: copying");
            self.checked = true;
        }
        let parents = parents(&self.tables, spec);
        let Chunk {
            last_key,
            copied,
            deferred,
            deleted,
        } = copy::copy_chunk(
            &self.link.source,
            &self.link.dest,
            &self.link.source_id,
            &self.link.fence,
            spec,
            &self.link.rules,
            *prune,
            &parents,
            after.as_deref(),
            &mut self.budget,
        )
        .await?;
        let s = &mut self.status;
        s.rows_copied += copied;
        s.rows_deferred += deferred;
        s.rows_deleted += deleted;
        s.chunks += 1;
        self.this_run += copied;
        self.table_rows += copied;
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            s.rows_per_second = self.this_run as f64 / secs;
        }
        match last_key {
            Some(k) => self.left[0].1 = Some(k),
            None => {
                let (spec, _, _) = self.left.remove(0);
                self.checked = false;
                self.budget = ReadBudget::new(self.link.chunk_rows);
                tracing::info!(table = %spec.table, rows = self.table_rows, "snapshot: table copied");
                s.tables_done += 1;
                s.table = self.left.first().map(|(s, _, _)| s.table.clone());
                self.table_rows = s
                    .table
                    .as_ref()
                    .and_then(|t| self.copied_before.get(t).copied())
                    .unwrap_or(0);
            }
        }
        Ok(())
    }
}

/// Refuses to copy into a table the destination lacks, or that lacks a shipped column, with
/// an error saying which, rather than the driver's.
async fn check_table(
    dest: &DatabaseConnection,
    destination: &str,
    spec: &TableSpec,
    rules: &Rules,
) -> Result<()> {
    let dropped = rules.tables.get(&spec.table).map(|t| t.drop.as_slice());
    let problem = match crate::apply::table_columns(dest, &spec.table).await? {
        None => "does not exist".to_string(),
        Some(present) => match spec
            .columns
            .iter()
            .filter(|c| !dropped.is_some_and(|d| d.contains(*c)))
            .find(|c| !present.contains_key(*c))
        {
            Some(c) => format!("has no column `{c}`, which the source ships"),
            None => return Ok(()),
        },
    };
    Err(Error::SnapshotTable {
        destination: destination.to_string(),
        table: spec.table.clone(),
        problem,
    })
}

/// The references of `spec` to tables the destination receives, its own table's last,
/// with the type tags of their referencing columns.
fn parents<'s>(
    tables: &HashMap<String, TableSpec>,
    spec: &'s TableSpec,
) -> Vec<(&'s Reference, Vec<String>)> {
    let others = spec.references.iter().filter(|r| r.table != spec.table);
    let own = spec.references.iter().filter(|r| r.table == spec.table);
    others
        .chain(own)
        .filter(|r| tables.contains_key(&r.table))
        .filter_map(|r| {
            let tags: Option<Vec<String>> = r
                .columns
                .iter()
                .map(|c| {
                    spec.columns
                        .iter()
                        .position(|x| x == c)
                        .and_then(|i| spec.types.get(i).cloned())
                })
                .collect();
            tags.map(|t| (r, t))
        })
        .collect()
}
