//! Fixing the rows a [`Report`] found.

use std::collections::HashMap;
use std::fmt;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::report::{KeyDisplay, Report};
use crate::apply::plan::Step;
use crate::apply::{self, statement};
use crate::capture;
use crate::change::{Op, Row};
use crate::entity::{Replicated, TableSpec};
use crate::error::{DbContext, Error, Result};
use crate::keyset;
use crate::value::Value;
use crate::value::canonical;

/// How [`repair`] fixes a row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RepairMode {
    /// Queue each fix as a change in the source's outbox, in a source transaction that
    /// locks the source row (`SELECT … FOR UPDATE`) while it reads it. The replicator then
    /// ships the fixes like any other change, in order with the live ones, to **every**
    /// destination (they apply as idempotent upserts and deletes). Needs a running
    /// replicator (or a `sync_now`) to take effect. The default.
    #[default]
    Outbox,
    /// Write straight into the destination: all upserts and deletes in one destination
    /// transaction, touching no other destination and no outbox. Meant for a destination
    /// no replicator is writing to at the moment: a change in flight could otherwise land
    /// before the fix and be overwritten by the older value read for it.
    Direct,
}

/// How [`repair`] runs.
///
/// ```
/// use ormsync::verify::{RepairMode, RepairOptions};
///
/// let opts = RepairOptions::default().mode(RepairMode::Direct).dry_run(true);
/// assert!(opts.dry_run);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairOptions {
    /// Outbox (default) or direct.
    pub mode: RepairMode,
    /// Work out what would be done, reading the source, without writing anything.
    pub dry_run: bool,
    /// Rows read, and in outbox mode queued, per source transaction. Default: 500.
    pub batch_size: usize,
}

impl Default for RepairOptions {
    fn default() -> Self {
        RepairOptions {
            mode: RepairMode::Outbox,
            dry_run: false,
            batch_size: 500,
        }
    }
}

impl RepairOptions {
    /// Sets [`mode`](RepairOptions::mode).
    #[must_use]
    pub fn mode(mut self, mode: RepairMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets [`dry_run`](RepairOptions::dry_run).
    #[must_use]
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Sets [`batch_size`](RepairOptions::batch_size) (at least 1).
    #[must_use]
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }
}

/// What a verify found wrong with a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Drift {
    /// The source holds the row, the destination does not.
    Missing,
    /// The destination holds the row, the source does not.
    Extra,
    /// Both hold the row, with different values.
    Different,
}

/// What a repair does to a row at the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Fix {
    /// Write the source's row (insert, or update where the key exists).
    Upsert,
    /// Delete the row.
    Delete,
}

/// One row a repair fixed (or, in a dry run, would fix).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RepairAction {
    /// The row's primary key.
    pub key: Row,
    /// What the report found.
    pub drift: Drift,
    /// What the repair does. Decided by reading the source at repair time: a row the
    /// source holds now is upserted, one it lacks is deleted, whatever the report said,
    /// so a row that changed since the verify gets its current state.
    pub fix: Fix,
}

/// What [`repair`] did, or in a dry run would do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RepairOutcome {
    /// The table repaired.
    pub table: String,
    /// How the fixes were written.
    pub mode: RepairMode,
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Every row fixed, in the report's order (missing, extra, different).
    pub actions: Vec<RepairAction>,
    /// Rows upserted (or queued as upserts).
    pub upserts: u64,
    /// Rows deleted (or queued as deletes).
    pub deletes: u64,
}

impl fmt::Display for RepairOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.mode {
            RepairMode::Outbox => "queued in the source's outbox",
            RepairMode::Direct => "written to the destination",
        };
        let verb = if self.dry_run { "would be" } else { "were" };
        write!(
            f,
            "`{}`: {} upserts and {} deletes {verb} {how}",
            self.table, self.upserts, self.deletes
        )?;
        for a in &self.actions {
            write!(f, "\n  {:?} {} ({:?})", a.fix, KeyDisplay(&a.key), a.drift)?;
        }
        Ok(())
    }
}

/// Fixes exactly the rows `report` lists, for entity `E`.
///
/// Each listed row is read again at the source. Where the source holds it, its current
/// values are written to the destination; where it does not, the destination's row is
/// deleted. How depends on [`RepairOptions::mode`]:
///
/// - [`RepairMode::Outbox`] (default): an outbox change per row, written with
///   [`capture::save`] / [`capture::delete`] in a source transaction per
///   [`batch_size`](RepairOptions::batch_size) rows that locks the rows it reads, so a
///   concurrent application write of the same row is ordered after the fix, not before.
///   The fixes reach the destination when the replicator next ships (`sync_now()`), and
///   reach every other destination of the source too. `dest` is not touched.
/// - [`RepairMode::Direct`]: upserts and deletes straight into `dest`, in one transaction.
///
/// A dry run reads the source and returns the same outcome without writing. Only the rows
/// listed are fixed: after repairing a report that is not
/// [complete](Report::is_complete), verify again.
///
/// Limitation (outbox mode): the delete queued for a row the source lacks cannot lock a
/// row that is not there; if the application inserts that very key while the repair
/// runs, the delete may be shipped after the insert. A verify afterwards finds it.
///
/// # Errors
///
/// [`Error::Config`] when the report is of another table or key; [`Error::Db`] when
/// reading the source or writing fails (an outbox batch or the direct transaction is then
/// rolled back; batches committed before stay).
///
/// # Examples
///
/// ```no_run
/// # mod customers {
/// #     use sea_orm::entity::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
/// #     #[sea_orm(table_name = "customers")]
/// #     pub struct Model { #[sea_orm(primary_key)] pub id: i64, pub name: String }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// # }
/// # async fn run(source: sea_orm::DatabaseConnection, backup: sea_orm::DatabaseConnection,
/// #              replicator: ormsync::Replicator) -> ormsync::Result<()> {
/// use ormsync::verify::{RepairOptions, VerifyOptions, repair, verify};
///
/// let report = verify::<customers::Entity>(&source, &backup, &VerifyOptions::default()).await?;
/// if !report.is_clean() {
///     let opts = RepairOptions::default();
///     let done = repair::<customers::Entity>(&source, &backup, &report, &opts).await?;
///     println!("{done}");
///     replicator.sync_now().await?; // ship the queued fixes
/// }
/// # Ok(()) }
/// ```
pub async fn repair<E: Replicated>(
    source: &DatabaseConnection,
    dest: &DatabaseConnection,
    report: &Report,
    opts: &RepairOptions,
) -> Result<RepairOutcome> {
    repair_table(source, dest, &E::table_spec(), report, opts).await
}

/// [`repair`] of the table `spec` describes, without the entity's Rust type: what the
/// command line uses. Same behaviour, errors and options.
///
/// # Errors
///
/// As for [`repair`]; also [`Error::Read`] when a source column does not decode as its type.
pub async fn repair_table(
    source: &DatabaseConnection,
    dest: &DatabaseConnection,
    spec: &TableSpec,
    report: &Report,
    opts: &RepairOptions,
) -> Result<RepairOutcome> {
    if report.table != spec.table || report.key_columns != spec.key {
        return Err(Error::Config(format!(
            "repair of `{}` (key {:?}) was given a report of `{}` (key {:?})",
            spec.table, spec.key, report.table, report.key_columns
        )));
    }
    keyset::typed_key(spec)?;
    let span = tracing::info_span!(
        "ormsync.repair",
        table = %spec.table,
        mode = ?opts.mode,
        dry_run = opts.dry_run
    );
    run(source, dest, spec, report, opts).instrument(span).await
}

async fn run(
    source: &DatabaseConnection,
    dest: &DatabaseConnection,
    spec: &TableSpec,
    report: &Report,
    opts: &RepairOptions,
) -> Result<RepairOutcome> {
    // The extra rows first: their deletes are written (or queued) before the upserts of
    // missing rows that a destination's collation may take for the same key (`foo` and
    // `Foo`), which the deletes would otherwise remove. The actions keep the report's order.
    let mut indexed: Vec<(usize, (Vec<Value>, Drift))> =
        targets(report)?.into_iter().enumerate().collect();
    indexed.sort_by_key(|(_, (_, drift))| *drift != Drift::Extra);
    let (order, targets): (Vec<usize>, Vec<(Vec<Value>, Drift)>) = indexed.into_iter().unzip();
    let mut outcome = RepairOutcome {
        table: report.table.clone(),
        mode: opts.mode,
        dry_run: opts.dry_run,
        actions: Vec::with_capacity(targets.len()),
        upserts: 0,
        deletes: 0,
    };
    // Direct mode: what to write, gathered from every batch, then one destination transaction.
    let mut upserts: Vec<Row> = Vec::new();
    let mut deletes: Vec<Row> = Vec::new();
    let backend = source.get_database_backend();
    let columns = keyset::typed_columns(spec)?;
    let decoder = keyset::Decoder::new(spec)?;
    for batch in targets.chunks(opts.batch_size.max(1)) {
        let keys: Vec<&[Value]> = batch.iter().map(|(k, _)| k.as_slice()).collect();
        let mut query = keyset::select(backend, &spec.table, &columns, &spec.key);
        query.cond_where(keyset::keys_condition(backend, &spec.key, &keys));
        let queue = opts.mode == RepairMode::Outbox && !opts.dry_run;
        let txn = if queue {
            let txn = source
                .begin()
                .await
                .context(|| format!("repair `{}`: beginning a source transaction", report.table))?;
            // The PostgreSQL gap proof needs an outbox row's owner to have its xid
            // before it takes the row's id (`outbox::gaps`). Captures get it from their
            // row change; a batch of fixes may lock no row (deletes of rows the source
            // lacks) and write only the outbox, so it takes its xid first.
            if backend == DbBackend::Postgres {
                txn.execute_unprepared("SELECT pg_current_xact_id()")
                    .await
                    .context(|| format!("repair `{}`: taking a transaction id", report.table))?;
            }
            Some(txn)
        } else {
            None
        };
        let rows = match &txn {
            Some(txn) => {
                // SQLite has no row locks: its transaction holds the write lock instead.
                if backend != DbBackend::Sqlite {
                    query.lock_exclusive();
                }
                txn.query_all(&query).await
            }
            None => source.query_all(&query).await,
        }
        .context(|| format!("repair `{}`: reading the source", report.table))?;
        let mut found: HashMap<Vec<u8>, Row> = HashMap::with_capacity(rows.len());
        for r in &rows {
            let row = decoder.row(r)?;
            found.insert(canonical::encode_all(&keyset::key_of(spec, &row)?), row);
        }
        let result = fix_batch(
            txn.as_ref(),
            batch,
            &found,
            report,
            opts,
            &mut outcome,
            &mut upserts,
            &mut deletes,
        )
        .await;
        if let Some(txn) = txn {
            match result {
                Ok(()) => txn.commit().await.context(|| {
                    format!("repair `{}`: committing the queued fixes", report.table)
                })?,
                Err(e) => {
                    let _ = txn.rollback().await;
                    return Err(e);
                }
            }
        } else {
            result?;
        }
    }
    let mut actions: Vec<(usize, RepairAction)> = order.into_iter().zip(outcome.actions).collect();
    actions.sort_by_key(|(i, _)| *i);
    outcome.actions = actions.into_iter().map(|(_, a)| a).collect();
    if opts.mode == RepairMode::Direct && !opts.dry_run {
        write_direct(dest, &report.table, &report.key_columns, &upserts, &deletes).await?;
    }
    tracing::info!(
        table = %report.table,
        upserts = outcome.upserts,
        deletes = outcome.deletes,
        "repair {}",
        if opts.dry_run { "planned (dry run)" } else { "done" }
    );
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)]
async fn fix_batch(
    txn: Option<&DatabaseTransaction>,
    batch: &[(Vec<Value>, Drift)],
    found: &HashMap<Vec<u8>, Row>,
    report: &Report,
    opts: &RepairOptions,
    outcome: &mut RepairOutcome,
    upserts: &mut Vec<Row>,
    deletes: &mut Vec<Row>,
) -> Result<()> {
    for (key, drift) in batch {
        let key_row = Row(report
            .key_columns
            .iter()
            .cloned()
            .zip(key.iter().cloned())
            .collect());
        let fix = match found.get(&canonical::encode_all(key)) {
            Some(row) => {
                if let Some(txn) = txn {
                    let op = if *drift == Drift::Missing {
                        Op::Insert
                    } else {
                        Op::Update
                    };
                    capture::write_many(txn, &report.table, op, &[(&key_row, row)])
                        .await
                        .context(|| {
                            format!(
                                "repair `{}`: queuing the row {}",
                                report.table,
                                KeyDisplay(&key_row)
                            )
                        })?;
                } else if opts.mode == RepairMode::Direct {
                    upserts.push(row.clone());
                }
                outcome.upserts += 1;
                Fix::Upsert
            }
            None => {
                if let Some(txn) = txn {
                    capture::write_many(txn, &report.table, Op::Delete, &[(&key_row, &key_row)])
                        .await
                        .context(|| {
                            format!(
                                "repair `{}`: queuing the delete of {}",
                                report.table,
                                KeyDisplay(&key_row)
                            )
                        })?;
                } else if opts.mode == RepairMode::Direct {
                    deletes.push(key_row.clone());
                }
                outcome.deletes += 1;
                Fix::Delete
            }
        };
        tracing::debug!(table = %report.table, key = %KeyDisplay(&key_row), ?drift, ?fix, "repair");
        outcome.actions.push(RepairAction {
            key: key_row,
            drift: *drift,
            fix,
        });
    }
    Ok(())
}

/// The report's rows as (key values in key order, drift), checking each key's columns.
fn targets(report: &Report) -> Result<Vec<(Vec<Value>, Drift)>> {
    let lists = report
        .missing
        .iter()
        .map(|k| (k, Drift::Missing))
        .chain(report.extra.iter().map(|k| (k, Drift::Extra)))
        .chain(report.different.iter().map(|d| (&d.key, Drift::Different)));
    let mut out = Vec::new();
    for (key, drift) in lists {
        let values = report
            .key_columns
            .iter()
            .map(|c| {
                key.get(c).cloned().ok_or_else(|| {
                    Error::Config(format!(
                        "repair `{}`: a key in the report lacks column `{c}`",
                        report.table
                    ))
                })
            })
            .collect::<Result<Vec<Value>>>()?;
        out.push((values, drift));
    }
    Ok(out)
}

/// Upserts `upserts` and deletes `deletes` at `dest`, in one transaction, with the
/// statements the stream uses (and its refusal of values the destination would alter).
async fn write_direct(
    dest: &DatabaseConnection,
    table: &str,
    key: &[String],
    upserts: &[Row],
    deletes: &[Row],
) -> Result<()> {
    if upserts.is_empty() && deletes.is_empty() {
        return Ok(());
    }
    let types = apply::table_columns(dest, table).await?;
    let txn = dest
        .begin()
        .await
        .context(|| format!("repair `{table}`: beginning a destination transaction"))?;
    // Deletes first: where the key's collation makes `foo` and `Foo` the same key, the
    // upsert of `Foo` would land on the extra row `foo` (keeping its key) and the delete of
    // `foo` then remove it.
    let steps = [
        Step::Delete {
            table,
            keys: deletes.iter().collect(),
        },
        Step::Upsert {
            table,
            key: key.iter().map(String::as_str).collect(),
            rows: upserts.iter().collect(),
        },
    ];
    let written = async {
        for step in &steps {
            statement::execute(&txn, step, types.as_ref()).await?;
        }
        Ok::<(), sea_orm::DbErr>(())
    }
    .await;
    match written {
        Ok(()) => txn
            .commit()
            .await
            .context(|| format!("repair `{table}`: committing at the destination")),
        Err(e) => {
            let _ = txn.rollback().await;
            Err(Error::db(
                format!("repair `{table}`: writing at the destination"),
                e,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_of_another_key_is_refused() {
        let mut report = Report::new("t".into(), vec!["id".into()]);
        report
            .missing
            .push(Row(vec![("other".into(), Value::Int(Some(1)))]));
        report.missing_count = 1;
        assert!(matches!(targets(&report), Err(Error::Config(_))));
    }
}
