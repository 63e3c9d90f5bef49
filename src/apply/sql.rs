//! The SQL sink: applies batches to a PostgreSQL, MySQL/MariaDB or SQLite database.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, TransactionTrait,
};
use tracing::Instrument;

use super::conflict::Conflict;
use super::mapped::{RowByRow, RowByRowError};
use super::plan::{self, Step};
use super::rules::Rules;
use super::statement;
use super::{checkpoint, columns, evolve, parallel, shape};
use crate::change::{Batch, Change};
use crate::classify::{ErrorKind, classify, is_foreign_key};
use crate::entity::ddl::TableDef;
use crate::error::{Error, Result};
use crate::position::Position;
use crate::redact::redact;
use crate::value::canonical;

use super::sink::Sink;

/// Applies batches to a database through sea-orm, with multi-row upserts and deletes.
///
/// A batch, collapsed to the last change of each row within runs of the same table and
/// kind, applies in one transaction that also advances `ormsync_checkpoint`. When that
/// fails for a reason other than the connection, it is retried change by change so the
/// error names the change at fault.
///
/// A large batch may first go through several connections at once, in parts that each
/// mark their changes in the checkpoint (`Destination::apply_connections`); the one
/// transaction then finishes it.
pub struct SqlSink {
    pub(super) name: String,
    pub(super) db: DatabaseConnection,
    /// Columns of each destination table, read on first use and forgotten after an error.
    columns: HashMap<String, HashMap<String, String>>,
    pub(super) rules: Arc<Rules>,
    on_conflict: Option<OnConflict>,
    /// The entities' table definitions, when a column a change carries and a table lacks
    /// is added rather than refused (`Destination::evolve_schema`).
    evolve: Option<Arc<HashMap<String, TableDef>>>,
    /// How many connections a batch may apply through at once (see [`parallel`]).
    connections: usize,
}

/// Called with each conflict decision once its batch has committed.
pub(crate) type OnConflict = Arc<dyn Fn(&Conflict) + Send + Sync>;

impl SqlSink {
    /// A sink writing to `db`, called `name` in messages.
    pub fn new(name: impl Into<String>, db: DatabaseConnection) -> Self {
        SqlSink {
            name: name.into(),
            db,
            columns: HashMap::new(),
            rules: Arc::default(),
            on_conflict: None,
            evolve: None,
            connections: 1,
        }
    }

    /// Applies a large batch through up to `k` connections at once (see [`parallel`]);
    /// 1, the default, applies every batch in one transaction.
    pub(crate) fn connections(mut self, k: usize) -> Self {
        self.connections = k.max(1);
        self
    }

    /// Adds a column a change carries and its table lacks, as `defs` defines it, before
    /// applying the change (see [`evolve`](super::evolve)), instead of refusing the change.
    pub(crate) fn evolving(mut self, defs: Arc<HashMap<String, TableDef>>) -> Self {
        self.evolve = Some(defs);
        self
    }

    /// Applies changes under `rules` (keys, conflicts, filters), telling `on_conflict` of
    /// each conflict decided.
    pub(crate) fn with_rules(mut self, rules: Rules, on_conflict: Option<OnConflict>) -> Self {
        self.rules = Arc::new(rules);
        self.on_conflict = on_conflict;
        self
    }

    /// Refuses a batch whose tables or columns the destination lacks, before writing; adds
    /// the columns instead when the sink evolves its destination's schema (returns how many
    /// it added).
    async fn check_columns(&mut self, changes: &[&Change]) -> Result<usize> {
        let mut added = 0;
        // A batch is mostly runs of one table with one column list: a change shaped like the
        // one before it passes without a lookup of each column.
        let mut last: Option<&Change> = None;
        for &change in changes {
            if last.is_some_and(|l| {
                l.table == change.table && l.row.columns().eq(change.row.columns())
            }) {
                continue;
            }
            last = Some(change);
            if !self.columns.contains_key(&change.table) {
                let found = columns::of(&self.db, &change.table).await?;
                let found = found.ok_or_else(|| Error::MissingTable {
                    destination: self.name.clone(),
                    table: change.table.clone(),
                    id: change.id,
                })?;
                self.columns.insert(change.table.clone(), found);
            }
            let known = &self.columns[&change.table];
            let Some(column) = change.row.columns().find(|c| !known.contains_key(*c)) else {
                continue;
            };
            let Some(defs) = &self.evolve else {
                return Err(Error::MissingColumn {
                    destination: self.name.clone(),
                    table: change.table.clone(),
                    column: column.to_string(),
                    id: change.id,
                });
            };
            let wanted: Vec<&str> = change.row.columns().collect();
            let collation = columns::byte_collation(&self.db).await?;
            added += evolve::evolve_table(
                &self.db,
                &self.name,
                &change.table,
                &|c| {
                    defs.get(&change.table)
                        .and_then(|d| (d.column)(self.db.get_database_backend(), c))
                },
                &wanted,
                known,
                collation,
            )
            .await?
            .len();
            let found = columns::of(&self.db, &change.table).await?;
            self.columns
                .insert(change.table.clone(), found.unwrap_or_default());
        }
        Ok(added)
    }

    /// Checks `changes` (the batch shaped) against the destination's columns, then applies
    /// the batch collapsed, or change by change when a statement of the collapsed plan
    /// fails, so the error names the change at fault.
    async fn try_apply(
        &mut self,
        source: &str,
        batch: &Batch,
        changes: &[&Change],
        span: &tracing::Span,
    ) -> Result<Position> {
        self.check_columns(changes).await?;
        // SQLite lets one transaction write at a time: parts would wait on each other.
        if self.connections > 1 && self.db.get_database_backend() != DbBackend::Sqlite {
            let position = checkpoint::read(&self.db, source)
                .await?
                .unwrap_or_default();
            let todo: Vec<&Change> = changes
                .iter()
                .copied()
                .filter(|c| !position.contains(c.id))
                .collect();
            if let Some(segments) = parallel::split(&todo, &self.rules, self.connections) {
                // Whether or not every part committed, the transaction below finishes the
                // batch: it applies what no part did, and marks the batch done.
                self.apply_parallel(source, &segments)
                    .instrument(span.clone())
                    .await?;
            }
        }
        match self
            .apply_steps(source, batch, false)
            .instrument(span.clone())
            .await
        {
            Ok(p) => Ok(p),
            Err(Failure::Other(e)) => Err(e),
            Err(Failure::Statement(e)) => {
                tracing::debug!(destination = %self.name, error = %redact(&e.to_string()),
                    "batched apply failed; retrying change by change");
                match self
                    .apply_steps(source, batch, true)
                    .instrument(span.clone())
                    .await
                {
                    Ok(p) => Ok(p),
                    Err(Failure::Other(e)) => Err(e),
                    Err(Failure::Statement(e)) => {
                        Err(Error::db(format!("destination `{}`", self.name), e))
                    }
                }
            }
        }
    }

    /// Applies `batch` in one transaction with the checkpoint; rolls back on any failure.
    async fn apply_steps(
        &self,
        source: &str,
        batch: &Batch,
        one_by_one: bool,
    ) -> std::result::Result<Position, Failure> {
        let mut conflicts = Vec::new();
        let txn = self.db.begin().await.map_err(|e| {
            Failure::Other(Error::db(
                format!("destination `{}`: beginning a transaction", self.name),
                e,
            ))
        })?;
        match self
            .apply_in(&txn, source, batch, one_by_one, &mut conflicts)
            .await
        {
            Ok(position) => {
                txn.commit().await.map_err(|e| {
                    Failure::Other(Error::db(
                        format!("destination `{}`: committing a batch", self.name),
                        e,
                    ))
                })?;
                self.tell(&conflicts);
                Ok(position)
            }
            Err(failure) => {
                // Explicitly: a dropped transaction holds its connection (SQLite pools
                // have one) until the pool next hands it out.
                let _ = txn.rollback().await;
                Err(failure)
            }
        }
    }

    async fn apply_in(
        &self,
        txn: &DatabaseTransaction,
        source: &str,
        batch: &Batch,
        one_by_one: bool,
        conflicts: &mut Vec<Conflict>,
    ) -> std::result::Result<Position, Failure> {
        let mut position = checkpoint::lock(txn, source)
            .await
            .map_err(Failure::Other)?;
        let todo: Vec<&Change> = batch
            .changes
            .iter()
            .filter(|c| !position.contains(c.id))
            .collect();
        *conflicts = self
            .apply_changes(txn, source, &todo, one_by_one, batch.restates)
            .await?;
        batch.mark_done(&mut position);
        checkpoint::store(txn, source, &position)
            .await
            .map_err(Failure::Other)?;
        Ok(position)
    }

    /// Applies `changes` (in id order) as this destination takes them: runs of plain tables
    /// as multi-row statements (or one by one), changes of tables that go row by row (own
    /// keys, translated foreign keys, conflict policies reading the current row) one at a
    /// time. Returns the conflicts decided.
    async fn apply_changes(
        &self,
        txn: &DatabaseTransaction,
        source: &str,
        changes: &[&Change],
        one_by_one: bool,
        restates: bool,
    ) -> std::result::Result<Vec<Conflict>, Failure> {
        let shaped = shape::shape(changes, &self.rules, restates);
        let mut placer = RowByRow {
            db: txn,
            source,
            rules: &self.rules,
            types: &self.columns,
            conflicts: Vec::new(),
        };
        let mut rest: &[Cow<'_, Change>] = &shaped;
        while let Some(first) = rest.first() {
            if self.rules.goes_row_by_row(&first.table) {
                placer.apply(first).await.map_err(|fault| match fault {
                    RowByRowError::Db(e) => self.statement_failure(first, e, one_by_one),
                    RowByRowError::Unresolved(reason) => Failure::Other(Error::Unresolved {
                        destination: self.name.clone(),
                        id: first.id,
                        table: first.table.clone(),
                        reason,
                    }),
                })?;
                rest = &rest[1..];
                continue;
            }
            let end = rest
                .iter()
                .position(|c| self.rules.goes_row_by_row(&c.table))
                .unwrap_or(rest.len());
            let run: Vec<&Change> = rest[..end].iter().map(|c| c.as_ref()).collect();
            rest = &rest[end..];
            if one_by_one {
                self.one_by_one(txn, &run).await?;
            } else {
                let mut steps = plan::plan(&run);
                plan::parents_first(&mut steps, &self.rules.specs);
                for step in steps {
                    if let Err(e) = self.run(txn, &step).await {
                        return Err(match classify(&e) {
                            ErrorKind::Transient => Failure::Other(Error::db(
                                format!(
                                    "destination `{}`: applying to `{}`",
                                    self.name,
                                    step.table()
                                ),
                                e,
                            )),
                            ErrorKind::Permanent => Failure::Statement(e),
                        });
                    }
                }
            }
        }
        Ok(placer.conflicts)
    }

    /// Applies `run` change by change, so that a failure names its change.
    ///
    /// A change a foreign key refuses waits, with every later change of its row, until the
    /// rest of the run has applied, and is tried again as long as that makes progress: the
    /// run may hold a row's parent after it (a source transaction under a deferred
    /// constraint, or a child table's change before its parent table's) or delete a
    /// parent before the rows naming it. Between tries a row's waiting changes collapse to
    /// the last one (see [`plan::supersede`]); the ones it stands for are done when it is,
    /// as the whole batch is marked done with the checkpoint in the same transaction. Each
    /// change runs under a savepoint, so a refusal undoes that change alone. A change still
    /// refused is reported with its error, under the id of the earliest change it stands
    /// for: the changes before that one are what may land without it.
    async fn one_by_one(
        &self,
        txn: &DatabaseTransaction,
        run: &[&Change],
    ) -> std::result::Result<(), Failure> {
        let mut waiting: Vec<plan::Waiting<'_>> = run
            .iter()
            .map(|&change| plan::Waiting::new(change))
            .collect();
        let mut first_pass = true;
        loop {
            let mut still: Vec<plan::Waiting<'_>> = Vec::new();
            let mut still_rows: HashSet<(&str, Vec<u8>)> = HashSet::new();
            let mut refused: Option<(plan::Waiting<'_>, DbErr)> = None;
            let before = waiting.len();
            for w in waiting {
                let row = (
                    w.change.table.as_str(),
                    canonical::encode_all(w.change.key.values()),
                );
                if still_rows.contains(&row) {
                    still.push(w);
                    continue;
                }
                if let Some(e) = self.try_change(txn, w.change).await? {
                    refused.get_or_insert((w, e));
                    still.push(w);
                    still_rows.insert(row);
                }
            }
            let Some((w, e)) = refused else {
                return Ok(());
            };
            let waited = still.len();
            let still = plan::supersede(still);
            if still.len() < waited {
                tracing::debug!(destination = %self.name, superseded = waited - still.len(),
                    "waiting changes collapse to the last change of their row");
            }
            if still.len() == before && !first_pass {
                if w.since != w.change.id {
                    tracing::debug!(destination = %self.name, change = w.change.id, since = w.since,
                        "a row's last change, standing for its earlier ones, is refused");
                }
                return Err(Failure::Other(Error::Apply {
                    destination: self.name.clone(),
                    id: w.since,
                    table: w.change.table.clone(),
                    source: e,
                }));
            }
            first_pass = false;
            waiting = still;
        }
    }

    /// Applies one change under a savepoint: `None` when it applied, the error when a
    /// foreign key refused it (and it was undone), a failure otherwise.
    async fn try_change(
        &self,
        txn: &DatabaseTransaction,
        change: &Change,
    ) -> std::result::Result<Option<DbErr>, Failure> {
        let savepoint_failed = |e: DbErr| {
            Failure::Other(Error::db(
                format!("destination `{}`: a savepoint", self.name),
                e,
            ))
        };
        let savepoint = txn.begin().await.map_err(savepoint_failed)?;
        for step in plan::one_by_one(std::slice::from_ref(&change)) {
            if let Err(e) = self.run(&savepoint, &step).await {
                let _ = savepoint.rollback().await;
                if is_foreign_key(&e) {
                    return Ok(Some(e));
                }
                return Err(self.statement_failure(change, e, true));
            }
        }
        savepoint.commit().await.map_err(savepoint_failed)?;
        Ok(None)
    }

    /// What a failed statement of `change` means: in batched mode a permanent error is
    /// worth a change-by-change retry; one by one, it names the change.
    fn statement_failure(&self, change: &Change, e: DbErr, one_by_one: bool) -> Failure {
        if one_by_one {
            Failure::Other(Error::Apply {
                destination: self.name.clone(),
                id: change.id,
                table: change.table.clone(),
                source: e,
            })
        } else if classify(&e) == ErrorKind::Transient {
            Failure::Other(Error::db(
                format!(
                    "destination `{}`: applying to `{}`",
                    self.name, change.table
                ),
                e,
            ))
        } else {
            Failure::Statement(e)
        }
    }

    fn tell(&self, conflicts: &[Conflict]) {
        if let Some(f) = &self.on_conflict {
            conflicts.iter().for_each(|c| f(c));
        }
    }

    pub(super) async fn run<C: ConnectionTrait>(
        &self,
        txn: &C,
        step: &Step<'_>,
    ) -> std::result::Result<(), DbErr> {
        let types = match step {
            Step::Upsert { table, .. } => self.columns.get(*table),
            _ => None,
        };
        statement::execute(txn, step, types).await
    }
}

/// The part of `batch` before outbox id `id`.
fn prefix(batch: &Batch, id: i64) -> Batch {
    let changes: Vec<Change> = batch
        .changes
        .iter()
        .filter(|c| c.id < id)
        .cloned()
        .collect();
    Batch {
        anchor: changes.last().map(Change::anchor),
        changes,
        skipped: batch
            .skipped
            .iter()
            .filter(|&&(lo, _)| lo < id)
            .map(|&(lo, hi)| (lo, hi.min(id - 1)))
            .collect(),
        restates: batch.restates,
    }
}

enum Failure {
    /// A statement of the collapsed plan failed: worth a change-by-change retry.
    Statement(DbErr),
    Other(Error),
}

#[async_trait]
impl Sink for SqlSink {
    async fn position(&mut self, source: &str) -> Result<Position> {
        Ok(checkpoint::read(&self.db, source)
            .await?
            .unwrap_or_default())
    }

    async fn apply(&mut self, source: &str, batch: &Batch) -> Result<Position> {
        let all: Vec<&Change> = batch.changes.iter().collect();
        let shaped = shape::shape(&all, &self.rules, batch.restates);
        let changes: Vec<&Change> = shaped.iter().map(|c| c.as_ref()).collect();
        let span = tracing::debug_span!("ormsync.apply_batch", destination = %self.name, changes = batch.changes.len());
        let mut outcome = self.try_apply(source, batch, &changes, &span).await;
        if let Err(e) = &outcome
            && self.evolve.is_some()
            && !e.is_transient()
        {
            // A table that lost a column after its columns were read (restored from an
            // older backup, say) fails on that column: read them again, add what it lacks,
            // and try once more.
            self.columns.clear();
            if matches!(self.check_columns(&changes).await, Ok(added) if added > 0) {
                outcome = self.try_apply(source, batch, &changes, &span).await;
            }
        }
        let error = match outcome {
            Ok(position) => return Ok(position),
            Err(e) => e,
        };
        self.columns.clear();
        // Whatever precedes the change at fault is fine: land it, so the destination stops
        // right before that change rather than before the whole batch.
        if let Some(id) = error.change_id().filter(|_| !error.is_transient()) {
            let before = prefix(batch, id);
            if !before.is_empty()
                && self
                    .apply_steps(source, &before, false)
                    .instrument(span)
                    .await
                    .is_err()
            {
                tracing::debug!(destination = %self.name, "could not apply the changes before the one at fault");
            }
        }
        Err(error)
    }

    async fn replay(&mut self, source: &str, changes: &[Change]) -> Result<()> {
        let refs: Vec<&Change> = changes.iter().collect();
        let shaped = shape::shape(&refs, &self.rules, false);
        let shaped: Vec<&Change> = shaped.iter().map(|c| c.as_ref()).collect();
        if let Err(e) = self.check_columns(&shaped).await {
            self.columns.clear();
            return Err(e);
        }
        let txn = self.db.begin().await.map_err(|e| {
            Error::db(
                format!("destination `{}`: beginning a transaction", self.name),
                e,
            )
        })?;
        let conflicts = match self.apply_changes(&txn, source, &refs, true, false).await {
            Ok(conflicts) => conflicts,
            Err(failure) => {
                let _ = txn.rollback().await;
                self.columns.clear();
                return Err(match failure {
                    Failure::Other(e) => e,
                    Failure::Statement(e) => Error::db(format!("destination `{}`", self.name), e),
                });
            }
        };
        txn.commit().await.map_err(|e| {
            Error::db(
                format!("destination `{}`: committing a replay", self.name),
                e,
            )
        })?;
        self.tell(&conflicts);
        Ok(())
    }
}
