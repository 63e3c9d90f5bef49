//! Readying a destination for the stream: its ormsync tables and, where it should, its
//! replicated tables; then the initial snapshot, or an unfinished snapshot or resync,
//! copied and converged to one snapshot of the source.

use std::collections::HashMap;
use std::sync::Arc;

use sea_orm::{DatabaseConnection, TransactionTrait};

use super::super::status::State;
use super::{Worker, WorkerState, in_destination};
use crate::apply::{self, Rules};
use crate::bootstrap::{self, Preparation};
use crate::entity::TableSpec;
use crate::error::{DbContext, Result};
use crate::outbox::progress;
use crate::position::Position;
use crate::schema;
use crate::snapshot::{self, Fence, SnapshotStatus};

/// What readying and copying into the destination take besides the sink, which takes
/// batches only.
pub(crate) struct CopyTarget {
    /// The destination's connection, for ormsync's tables, a copy's plan and its rows.
    pub(crate) db: DatabaseConnection,
    /// Whether a destination without a checkpoint is copied first.
    pub(crate) initial_snapshot: bool,
    /// How the destination takes rows (for the rows a snapshot copies).
    pub(crate) rules: Arc<Rules>,
    /// Rows per snapshot chunk.
    pub(crate) chunk_rows: u64,
    /// Whether rows can be copied into `db`: not when the destination applies through a
    /// sink of its own, which `db` does not hold the tables of.
    pub(crate) copies: bool,
    /// What to do to the destination's tables before shipping (create, evolve), when
    /// anything.
    pub(crate) prepare: Option<Preparation>,
}

/// How far the destination was readied for the stream since the worker started.
#[derive(Default)]
pub(super) struct Readiness {
    /// Whether ormsync's tables at the destination were installed.
    pub(super) installed: bool,
    /// Whether a snapshot to start or resume was looked for.
    pub(super) snapshot_checked: bool,
    /// The lease generation the destination was claimed for (see [`Worker::claim`]).
    pub(super) claimed: Option<i64>,
}

impl Worker {
    /// Readies the destination before the first pass; returns whether the stream may
    /// start (`false` when a copy stopped for a shutdown).
    pub(super) async fn prepare(&mut self, state: &mut WorkerState) -> Result<bool> {
        if !state.readiness.installed {
            self.install().await?;
            if let Some(how) = &self.target.prepare {
                let tables = self.shipped_tables();
                let specs: Vec<&TableSpec> = tables.values().collect();
                bootstrap::prepare_tables(&self.target.db, &self.name, &specs, how).await?;
            }
            state.readiness.installed = true;
        }
        if state.readiness.claimed != self.lease.generation() {
            // Taken (again) after another instance held the lease: that one may have
            // planned a copy meanwhile, or left one unfinished, for this one to resume.
            state.readiness.snapshot_checked = false;
        }
        if !state.readiness.snapshot_checked {
            if !self.snapshot(state).await? {
                return Ok(false);
            }
            state.readiness.snapshot_checked = true;
        }
        Ok(true)
    }

    /// Installs ormsync's tables at the destination.
    pub(super) async fn install(&self) -> Result<()> {
        schema::install(&self.target.db)
            .await
            .map_err(|e| in_destination(&self.name, e))
    }

    /// The tables this destination receives.
    pub(super) fn shipped_tables(&self) -> HashMap<String, TableSpec> {
        self.tables
            .iter()
            .filter(|(t, _)| !self.skip.contains(*t))
            .map(|(t, s)| (t.clone(), s.clone()))
            .collect()
    }

    /// Starts the initial snapshot of a destination that has no checkpoint, or resumes an
    /// unfinished snapshot or resync, and converges it; returns whether the copy is complete
    /// (`false` when it stopped for a shutdown, to resume on the next start).
    pub(super) async fn snapshot(&mut self, state: &mut WorkerState) -> Result<bool> {
        let fence = self.claim(state).await?;
        let tables = self.shipped_tables();
        let mut progress = snapshot::list(&self.target.db, &self.source_id)
            .await
            .map_err(|e| in_destination(&self.name, e))?;
        let copied_before = !progress.is_empty();
        progress.retain(|p| tables.contains_key(&p.table));
        let mut base = snapshot::base(&self.target.db, &self.source_id)
            .await
            .map_err(|e| in_destination(&self.name, e))?;
        if progress.iter().all(|p| p.done) {
            let new = self.target.initial_snapshot
                && progress.is_empty()
                && apply::read_checkpoint(&self.target.db, &self.source_id)
                    .await?
                    .is_none();
            if new {
                base = Some(self.plan_snapshot(state, &tables, &fence).await?);
                progress = snapshot::list(&self.target.db, &self.source_id).await?;
                progress.retain(|p| tables.contains_key(&p.table));
            } else {
                if let Some(base) = base {
                    self.update(|s| s.state = State::Copying);
                    self.converge(state, &tables, &base, &fence).await?;
                }
                // Tables the destination never had copied: an entity registered since its
                // snapshot, or a table it skipped and no longer does. Their rows written
                // before (or skipped) would never reach it by the stream alone.
                let unseen: Vec<&str> = tables
                    .keys()
                    .filter(|t| !progress.iter().any(|p| &p.table == *t))
                    .map(String::as_str)
                    .collect();
                if !self.target.initial_snapshot || !copied_before || unseen.is_empty() {
                    return Ok(true);
                }
                base = Some(self.plan_backfill(&unseen, &fence).await?);
                progress = snapshot::list(&self.target.db, &self.source_id).await?;
                progress.retain(|p| tables.contains_key(&p.table) && !p.done);
            }
        }
        let done = self.copy_tables(state, &tables, &progress, &fence).await?;
        if done {
            // A copy begun by a version that kept no base converges from nothing: every
            // change still in the outbox is read again.
            self.converge(state, &tables, &base.unwrap_or_default(), &fence)
                .await?;
            tracing::info!(destination = %self.name, "snapshot: done; streaming");
        }
        Ok(done)
    }

    /// Plans the copy of `tables` into a destination that streams already, converging from
    /// its checkpoint as a resync does (the stream waits meanwhile), but deleting nothing:
    /// rows of the destination's own stay, as in an initial snapshot. Returns the base.
    async fn plan_backfill(&mut self, tables: &[&str], fence: &Fence) -> Result<Position> {
        let base = apply::read_checkpoint(&self.target.db, &self.source_id)
            .await?
            .unwrap_or_default();
        let context = || format!("destination `{}`: starting a backfill", self.name);
        let txn = self.target.db.begin().await.context(context)?;
        apply::lock_checkpoint(&txn, &self.source_id).await?;
        fence.hold(&txn, &self.source_id).await?;
        snapshot::reset(&txn, &self.source_id, tables, false).await?;
        snapshot::set_base(&txn, &self.source_id, &base).await?;
        txn.commit().await.context(context)?;
        tracing::info!(destination = %self.name, ?tables, "backfill: copying tables the destination never had copied");
        Ok(base)
    }

    /// Plans the initial snapshot of `tables`; returns its base, the outbox position every
    /// chunk, read later, contains.
    async fn plan_snapshot(
        &mut self,
        state: &mut WorkerState,
        tables: &HashMap<String, TableSpec>,
        fence: &Fence,
    ) -> Result<Position> {
        // From here on retention keeps every change for this destination. The checkpoint
        // (at zero), the plan and the base are stored together.
        progress::record(&self.source, &self.name, &Position::default()).await?;
        state.reported.position = None;
        let visible = crate::outbox::visible::position(&self.source).await?;
        let names: Vec<&str> = tables.keys().map(String::as_str).collect();
        let txn = self
            .target
            .db
            .begin()
            .await
            .context(|| format!("destination `{}`: starting a snapshot", self.name))?;
        apply::lock_checkpoint(&txn, &self.source_id).await?;
        fence.hold(&txn, &self.source_id).await?;
        snapshot::reset(&txn, &self.source_id, &names, false).await?;
        snapshot::set_base(&txn, &self.source_id, &visible).await?;
        txn.commit()
            .await
            .context(|| format!("destination `{}`: starting a snapshot", self.name))?;
        tracing::info!(destination = %self.name, tables = names.len(), "snapshot: starting");
        Ok(visible)
    }

    /// Copies what `progress` has left of `tables`, chunk by chunk, showing how far it
    /// got; returns whether it finished (`false` when it stopped for a shutdown).
    async fn copy_tables(
        &mut self,
        state: &mut WorkerState,
        tables: &HashMap<String, TableSpec>,
        progress: &[snapshot::TableProgress],
        fence: &Fence,
    ) -> Result<bool> {
        self.update(|s| s.state = State::Copying);
        self.publish_state(state).await;
        let mut copy = snapshot::Copy::new(self.link(fence), tables.clone(), progress)?;
        if let Err(e) = copy.count_rows().await {
            // Only the progress bar's total is missing then.
            tracing::debug!(destination = %self.name, error = %e, "snapshot: cannot count the rows");
        }
        let st: SnapshotStatus = copy.status().clone();
        self.update(|s| s.snapshot = Some(st));
        let mut done = copy.is_done();
        while !done {
            if self.cancel.is_cancelled() {
                break;
            }
            self.still_shipping().await?;
            copy.step()
                .await
                .map_err(|e| in_destination(&self.name, e))?;
            done = copy.is_done();
            let st: SnapshotStatus = copy.status().clone();
            self.update(|s| s.snapshot = Some(st));
        }
        Ok(done)
    }

    /// How a copy reaches the source and this destination.
    fn link(&self, fence: &Fence) -> snapshot::Link {
        snapshot::Link {
            source: self.source.clone(),
            dest: self.target.db.clone(),
            source_id: self.source_id.clone(),
            destination: self.name.clone(),
            rules: self.target.rules.clone(),
            chunk_rows: self.target.chunk_rows,
            fence: fence.clone(),
        }
    }

    /// Brings the copied destination to one snapshot of the source and sets its checkpoint
    /// there (see [`snapshot::converge`]).
    async fn converge(
        &mut self,
        state: &mut WorkerState,
        tables: &HashMap<String, TableSpec>,
        base: &Position,
        fence: &Fence,
    ) -> Result<()> {
        self.still_shipping().await?;
        let done = snapshot::converge(
            &self.link(fence),
            self.sink.as_mut(),
            tables,
            &self.skip,
            base,
            self.target.chunk_rows,
            &mut state.drain.in_flight,
        )
        .await
        .map_err(|e| in_destination(&self.name, e))?;
        state.drain.in_flight = Vec::new();
        if done.parked > 0 {
            state.drain.blocked = None;
        }
        state.drain.position = Some(done.position);
        self.reader.restart();
        tracing::info!(destination = %self.name, rows = done.refreshed, deleted = done.deleted,
            parked = done.parked, "snapshot: converged at one snapshot of the source");
        Ok(())
    }
}
