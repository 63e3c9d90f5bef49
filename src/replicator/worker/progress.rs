//! What the worker records at the source for retention, other instances and `ormsync
//! status`: its position and its state.

use std::time::{Duration, Instant};

use super::super::status::State;
use super::{Worker, WorkerState};
use crate::outbox::progress;
use crate::position::Position;

/// What was last recorded in `ormsync_progress`, so unchanged values are not written again.
#[derive(Default)]
pub(super) struct Reported {
    /// When the position was last recorded, and its watermark.
    pub(super) position: Option<(Instant, i64)>,
    /// The state and last error last recorded.
    pub(super) state: Option<(State, Option<String>)>,
}

impl Worker {
    /// Copies the position to `ormsync_progress` at the source, for retention and other
    /// instances: at most once a second while draining (it is one more round trip per
    /// batch), and whenever a pass ends on a position not recorded yet.
    pub(super) async fn record_progress(
        &self,
        state: &mut WorkerState,
        position: &Position,
        pass_end: bool,
    ) {
        let recorded = &mut state.reported.position;
        let moved = recorded.is_none_or(|(_, w)| w != position.watermark);
        let due = recorded.is_none_or(|(t, _)| t.elapsed() >= Duration::from_secs(1));
        if !moved || !(due || pass_end) {
            return;
        }
        match progress::record(&self.source, &self.name, position).await {
            Ok(()) => *recorded = Some((Instant::now(), position.watermark)),
            Err(e) => {
                tracing::debug!(destination = %self.name, error = %e, "could not record progress at the source")
            }
        }
    }

    /// Records the state and last error at the source when they changed, for `ormsync
    /// status`; only the instance that ships does, so a standby never overwrites it.
    pub(super) async fn publish_state(&mut self, state: &mut WorkerState) {
        let (shown, error) = {
            let s = self.status.borrow();
            (s.state, s.last_error.clone())
        };
        // Idle and running alternate with every batch: both are "shipping" to a reader.
        let shown = if shown == State::Running {
            State::Idle
        } else {
            shown
        };
        if shown == State::Standby || state.reported.state.as_ref() == Some(&(shown, error.clone()))
        {
            return;
        }
        match progress::record_state(
            &self.source,
            &self.name,
            &shown.to_string(),
            error.as_deref(),
        )
        .await
        {
            Ok(()) => state.reported.state = Some((shown, error)),
            Err(e) => {
                tracing::debug!(destination = %self.name, error = %e, "could not record the state at the source")
            }
        }
    }
}
