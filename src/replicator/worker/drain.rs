//! A pass: ship batches until the outbox has nothing more for this destination, reading
//! the next batch while one applies, keeping out what this destination does not take.

use std::collections::HashSet;
use std::time::Instant;

use chrono::Utc;
use tracing::Instrument;

use super::super::status::State;
use super::{Worker, WorkerState};
use crate::change::{Batch, Change};
use crate::error::{Error, Result};
use crate::outbox::dead_letters::{self, Behind};
use crate::position::Position;

/// Where the drain stands between batches and passes.
#[derive(Default)]
pub(super) struct DrainState {
    /// The position stored last, to read from without asking the destination; `None`
    /// after a failure or a standby, when it may have moved.
    pub(super) position: Option<Position>,
    /// Rows with a parked change: their later changes are parked behind it.
    pub(super) blocked: Option<HashSet<(String, String)>>,
    /// The changes of the batch whose apply failed last, to park the one that fails.
    pub(super) in_flight: Vec<Change>,
}

impl Worker {
    /// Ships batches until the outbox has nothing more for this destination; returns how
    /// many changes it applied.
    pub(super) async fn pass(&mut self, state: &mut WorkerState) -> Result<u64> {
        if !self.prepare(state).await? {
            return Ok(0);
        }
        let mut total = 0;
        // The next batch, read while the previous one applied.
        let mut prefetched: Option<Batch> = None;
        loop {
            if !self.between_batches(state).await? {
                return Ok(total);
            }
            let current = match &state.drain.position {
                Some(p) => p.clone(),
                None => self.sink.position(&self.source_id).await?,
            };
            let batch = match prefetched.take() {
                Some(batch) => batch,
                None => self.reader.read(&current).await?,
            };
            let pending_gaps = self.reader.pending_gaps();
            if batch.is_empty() {
                self.caught_up(state, current, pending_gaps).await;
                return Ok(total);
            }
            let (applied, next) = self.ship(state, &current, batch, pending_gaps).await?;
            total += applied;
            prefetched = next;
        }
    }

    /// Between batches: stops for a shutdown or a pause asked elsewhere, renews the lease,
    /// and loads the parked rows; returns whether the drain goes on.
    async fn between_batches(&mut self, state: &mut WorkerState) -> Result<bool> {
        if self.cancel.is_cancelled() {
            return Ok(false);
        }
        // A long drain outlives a lease: renew it between batches (a database round
        // trip only once a third of it has gone), and stop if another instance took it.
        self.still_shipping().await?;
        // A pause asked elsewhere stops a long drain between batches.
        self.follow_control(state, &mut None).await;
        if state.suspended.is_some() {
            return Ok(false);
        }
        if state.drain.blocked.is_none() {
            state.drain.blocked = Some(dead_letters::blocked_rows(&self.source, &self.name).await?);
        }
        Ok(true)
    }

    /// The outbox has nothing more: shows the position and the backlog.
    async fn caught_up(&mut self, state: &mut WorkerState, current: Position, pending_gaps: u64) {
        state.drain.position = Some(current.clone());
        self.update(|s| {
            s.watermark = current.watermark;
            s.frontier = current.frontier();
            s.pending_gaps = pending_gaps;
        });
        self.record_progress(state, &current, true).await;
        state.backlog.drain_ended(current.watermark);
        self.check_backlog(state, &current).await;
    }

    /// Routes and applies `batch`, read from `current`; returns how many changes it
    /// applied, and the next batch when the one read ahead follows what was stored.
    async fn ship(
        &mut self,
        state: &mut WorkerState,
        current: &Position,
        batch: Batch,
        pending_gaps: u64,
    ) -> Result<(u64, Option<Batch>)> {
        self.update(|s| s.state = State::Running);
        let batch = self.route(batch, state).await?;
        let started = Instant::now();
        let mut expected = current.clone();
        batch.mark_done(&mut expected);
        let (stored, next) = self.apply_reading_ahead(&batch, &expected).await;
        let (batch, stored, next) = match (stored, next) {
            (Err(e @ Error::Apply { .. }), next) => {
                let (batch, stored) = self
                    .apply_around(state, current, batch, next, e, &mut expected)
                    .await?;
                (batch, stored, None)
            }
            (stored, next) => (batch, stored, next),
        };
        let applied = batch.changes.len() as u64;
        let next = match &stored {
            Ok(stored) if *stored == expected && next.is_some() => next,
            // The read ran ahead of a position that was not stored (or was used up
            // above): start it again from the stored one.
            _ => {
                self.reader.restart();
                None
            }
        };
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => {
                // Handed to `failed`, which parks the change the error names; kept only
                // then, as a copy of every batch would double a batch's memory.
                state.drain.in_flight = batch.changes;
                return Err(e);
            }
        };
        state.drain.in_flight = Vec::new();
        // Freeing a batch's thousands of rows took about 8% of the worker's time
        // shipping into MariaDB: let another thread do it while the next batch applies.
        tokio::task::spawn_blocking(move || drop(batch));
        self.landed(state, &stored, applied, started, pending_gaps)
            .await;
        Ok((applied, next))
    }

    /// Applies `batch` while the next one is read from `expected`, the position `batch`
    /// stores, so the source and the destination work at once; returns what the apply
    /// stored and the batch read ahead, if its read succeeded.
    ///
    /// The read assumes this batch lands; if it does not, the caller drops it and the
    /// reader starts again from the stored position.
    async fn apply_reading_ahead(
        &mut self,
        batch: &Batch,
        expected: &Position,
    ) -> (Result<Position>, Option<Batch>) {
        // On a task of its own, so decoding the next batch runs on another core instead
        // of holding up this one's statements.
        let mut reader = self.reader.take();
        let ahead = expected.clone();
        let read_ahead = tokio::spawn(
            async move {
                let next = reader.read(&ahead).await;
                (reader, next)
            }
            .in_current_span(),
        );
        let stored = self.sink.apply(&self.source_id, batch).await;
        let next = match read_ahead.await {
            Ok((reader, next)) => {
                self.reader = reader;
                next.ok()
            }
            // The read panicked: the reader left in its place starts from the position.
            Err(_) => None,
        };
        (stored, next)
    }

    /// A batch of `applied` changes stored `stored`: counts it and shows the position.
    async fn landed(
        &mut self,
        state: &mut WorkerState,
        stored: &Position,
        applied: u64,
        started: Instant,
        pending_gaps: u64,
    ) {
        let labels = [("destination", self.name.clone())];
        metrics::counter!("ormsync_changes_applied_total", &labels).increment(applied);
        metrics::histogram!("ormsync_batch_size", &labels).record(applied as f64);
        metrics::histogram!("ormsync_batch_duration_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        self.record_progress(state, stored, false).await;
        self.update(|s| {
            s.watermark = stored.watermark;
            s.frontier = stored.frontier();
            s.pending_gaps = pending_gaps;
            s.applied += applied;
            s.last_success = Some(Utc::now());
        });
        state.drain.position = Some(stored.clone());
        self.check_backlog(state, stored).await;
    }

    /// After `batch` failed at change `failed`: applies what can be applied around it,
    /// and returns the batch last tried with its result; `expected` becomes the position
    /// that batch would store.
    ///
    /// The outbox keeps no transaction boundary, so the batch size may cut a source
    /// transaction, and under a deferred constraint its first part alone can break a
    /// foreign key that the whole satisfies (a child inserted before its parent). So the
    /// changes before the failing one are applied as a batch of their own, and the next
    /// batch starts at it; refused by a foreign key as the first change of its batch, it is
    /// tried together with the changes after it, up to eight batches' worth, and at most 16
    /// tries in all.
    /// A change that fails on its own fails each time, and its error is returned as before.
    async fn apply_around(
        &mut self,
        state: &mut WorkerState,
        current: &Position,
        mut batch: Batch,
        mut next: Option<Batch>,
        mut error: Error,
        expected: &mut Position,
    ) -> Result<(Batch, Result<Position>)> {
        let limit = batch.changes.len().max(1) * 8;
        for _ in 0..16 {
            let Error::Apply {
                id: failed,
                source: ref cause,
                ..
            } = error
            else {
                break;
            };
            let starts_at_failure = batch.changes.first().is_none_or(|c| c.id >= failed);
            // Only a foreign key's refusal can be lifted by a change that follows.
            if starts_at_failure && !crate::classify::is_foreign_key(cause) {
                break;
            }
            if !starts_at_failure {
                tracing::debug!(destination = %self.name, change = failed,
                    "a batch failed; storing the changes before the one that failed");
                batch = batch.before(failed);
            } else {
                let more = match next.take() {
                    Some(more) => more,
                    None if batch.changes.len() < limit => {
                        let mut after = current.clone();
                        batch.mark_done(&mut after);
                        self.reader.read(&after).await?
                    }
                    None => Batch::default(),
                };
                if more.changes.is_empty() {
                    return Ok((batch, Err(error)));
                }
                tracing::debug!(destination = %self.name, change = failed,
                    "a batch failed at its first change; trying it with the changes after it");
                let more = self.route(more, state).await?;
                batch.changes.extend(more.changes);
                batch.skipped.extend(more.skipped);
                batch.anchor = more.anchor.or(batch.anchor);
            }
            *expected = current.clone();
            batch.mark_done(expected);
            match self.sink.apply(&self.source_id, &batch).await {
                Err(e @ Error::Apply { .. }) => error = e,
                stored => return Ok((batch, stored)),
            }
        }
        Ok((batch, Err(error)))
    }

    /// Keeps the changes this destination takes. Skipped tables count as done; changes of
    /// rows with a parked change are parked behind it.
    async fn route(&self, mut batch: Batch, state: &mut WorkerState) -> Result<Batch> {
        let mut keep = Vec::with_capacity(batch.changes.len());
        for change in batch.changes {
            if self.skip.contains(&change.table) {
                batch.skipped.push((change.id, change.id));
            } else if !self.tables.contains_key(&change.table)
                && !dead_letters::is_parked(&self.source, &self.name, change.id).await?
            {
                return Err(Error::UnknownTable {
                    destination: self.name.clone(),
                    table: change.table,
                    id: change.id,
                });
            } else if !self.tables.contains_key(&change.table) {
                batch.skipped.push((change.id, change.id));
            } else if let Some(behind) = self.park_behind(state, &change).await? {
                // Counted once, when parked: a batch read again meets the parked one too.
                if behind == Behind::Now {
                    self.update(|s| s.dead_lettered += 1);
                }
                batch.skipped.push((change.id, change.id));
            } else {
                keep.push(change);
            }
        }
        batch.changes = keep;
        Ok(batch)
    }

    /// Parks `change` behind the parked changes of its row, if it has any; returns how,
    /// or `None` when it goes on.
    async fn park_behind(&self, state: &WorkerState, change: &Change) -> Result<Option<Behind>> {
        let blocked = state.drain.blocked.as_ref().is_some_and(|b| {
            // Most of the time nothing is parked: then no key is encoded to look it up.
            !b.is_empty() && b.contains(&(change.table.clone(), change.key.to_json()))
        });
        if !blocked {
            return Ok(None);
        }
        // The set may be stale (replayed or discarded elsewhere): the table decides.
        let behind = dead_letters::park_behind(&self.source, &self.name, change).await?;
        Ok(behind.parked().then_some(behind))
    }
}
