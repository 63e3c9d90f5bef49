//! Parked changes as the worker handles them: parking a change the destination refuses
//! for good, and replaying or discarding what is parked. The table itself is
//! [`outbox::dead_letters`](crate::outbox::dead_letters).

use std::collections::HashSet;

use sea_orm::ConnectionTrait;

use super::super::alert::{Alert, AlertKind};
use super::{Worker, WorkerState};
use crate::apply::Sink;
use crate::change::Change;
use crate::error::Result;
use crate::outbox::control;
use crate::outbox::dead_letters::{self, ReplayReport};
use crate::redact::redact;

impl Worker {
    /// Parks change `id` of the failed pass: from the batch in flight when it is there,
    /// else as it is stored in the outbox.
    pub(super) async fn park_failed(
        &mut self,
        state: &mut WorkerState,
        id: i64,
        message: &str,
    ) -> Result<()> {
        match state.drain.in_flight.iter().find(|c| c.id == id).cloned() {
            Some(change) => self.park(state, &change, message).await,
            None => self.park_stored(state, id, message).await,
        }
    }

    /// Parks a change the destination refuses for good; later changes of its row follow it.
    async fn park(
        &mut self,
        state: &mut WorkerState,
        change: &Change,
        message: &str,
    ) -> Result<()> {
        dead_letters::park(&self.source, &self.name, change, message).await?;
        state
            .drain
            .blocked
            .get_or_insert_with(HashSet::new)
            .insert((change.table.clone(), change.key.to_json()));
        self.update(|s| s.dead_lettered += 1);
        self.alerts.raise(
            Alert::new(
                &self.name,
                AlertKind::DeadLettered {
                    outbox_id: change.id,
                },
            )
            .error(message),
        );
        Ok(())
    }

    /// Parks the outbox row `id`, which did not decode or names a table this destination
    /// does not know, as it is stored, unless it is parked already; then reads past it.
    async fn park_stored(&mut self, state: &mut WorkerState, id: i64, message: &str) -> Result<()> {
        if !dead_letters::is_parked(&self.source, &self.name, id).await? {
            dead_letters::park_stored(&self.source, &self.name, id, message).await?;
            self.update(|s| s.dead_lettered += 1);
            self.alerts.raise(
                Alert::new(&self.name, AlertKind::DeadLettered { outbox_id: id }).error(message),
            );
        }
        self.read_past(state, id);
        Ok(())
    }

    /// Reads past the outbox row `id` if an operator parked it; returns whether it did.
    pub(super) async fn read_past_if_parked(
        &mut self,
        state: &mut WorkerState,
        id: i64,
    ) -> Result<bool> {
        if !dead_letters::is_parked(&self.source, &self.name, id).await? {
            return Ok(false);
        }
        self.read_past(state, id);
        Ok(true)
    }

    fn read_past(&mut self, state: &mut WorkerState, id: i64) {
        self.reader.read_past(id);
        // Read again, with the row's key if it has one, so later changes of the row park
        // behind it.
        state.drain.blocked = None;
    }

    /// Applies the parked changes again (see [`replay`]).
    pub(super) async fn replay(&mut self, state: &mut WorkerState) -> Result<ReplayReport> {
        let report = replay(
            &self.source,
            &self.source_id,
            &self.name,
            self.sink.as_mut(),
        )
        .await?;
        state.drain.blocked = Some(dead_letters::blocked_rows(&self.source, &self.name).await?);
        Ok(report)
    }

    /// Drops the parked changes `ids` without applying them.
    pub(super) async fn discard(&mut self, state: &mut WorkerState, ids: &[i64]) -> Result<u64> {
        let removed = dead_letters::discard(&self.source, &self.name, Some(ids)).await?;
        state.drain.blocked = Some(dead_letters::blocked_rows(&self.source, &self.name).await?);
        Ok(removed)
    }
}

/// One row's parked changes: its table and key, their outbox ids, and the changes, or why
/// one of them does not decode.
type RowLetters = ((String, String), Vec<i64>, Result<Vec<Change>>);

/// Applies the changes parked for `destination` again through `sink` (`source_id` is the
/// source's [`node_id`](crate::outbox::node_id)), row by row in
/// outbox order; those that apply leave `ormsync_dead_letters`, the others stay with their
/// new error. Running replicators are told to read the dead letters again.
///
/// The replicator's [`replay_dead_letters`](crate::Replicator::replay_dead_letters) and the
/// command line both come here; the sink is the destination's
/// [`SqlSink`](crate::apply::SqlSink).
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the dead letters cannot be read or updated;
/// [`Error::Decode`](crate::Error::Decode) when a parked change is not valid.
pub async fn replay<C: ConnectionTrait>(
    source: &C,
    source_id: &str,
    destination: &str,
    sink: &mut dyn Sink,
) -> Result<ReplayReport> {
    let letters = dead_letters::list(source, destination).await?;
    // Each row's changes together and in order: later ones were parked behind the first.
    let mut rows: Vec<RowLetters> = Vec::new();
    for letter in &letters {
        let key = (letter.table.clone(), letter.key.clone());
        let i = match rows.iter().position(|(k, _, _)| *k == key) {
            Some(i) => i,
            None => {
                rows.push((key, Vec::new(), Ok(Vec::new())));
                rows.len() - 1
            }
        };
        let (_, ids, changes) = &mut rows[i];
        ids.push(letter.outbox_id);
        // A letter that does not decode (parked as it was stored) fails its whole row.
        if let Ok(list) = changes {
            match letter.change() {
                Ok(change) => list.push(change),
                Err(e) => *changes = Err(e),
            }
        }
    }
    let mut report = ReplayReport::default();
    for (_, ids, changes) in rows {
        let outcome = match changes {
            Ok(changes) => sink.replay(source_id, &changes).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                dead_letters::remove(source, destination, &ids).await?;
                report.replayed += ids.len() as u64;
            }
            Err(e) => {
                // The change the error names carries it; the others of its row wait behind
                // it and say so, rather than carrying an error that is not theirs.
                let message = redact(&e.to_string());
                let at_fault = e
                    .change_id()
                    .filter(|id| ids.contains(id))
                    .unwrap_or(ids[0]);
                let behind: Vec<i64> = ids.iter().copied().filter(|&id| id != at_fault).collect();
                dead_letters::failed_again(source, destination, &[at_fault], &message).await?;
                let waiting = format!("parked behind change {at_fault} of the same row");
                dead_letters::failed_again(source, destination, &behind, &waiting).await?;
                report.failed += ids.len() as u64;
            }
        }
    }
    if report.replayed > 0 {
        control::letters_changed(source, destination).await?;
    }
    Ok(report)
}
