//! A failed pass: count it, then retry with backoff, park the change, or halt, as
//! [`policy::decide`] says; alert when the destination stays unavailable or halts.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::oneshot;

use super::super::alert::{Alert, AlertKind};
use super::super::status::State;
use super::policy::{self, Next};
use super::{Turns, Worker, WorkerState};
use crate::error::{Error, Result};
use crate::redact::redact;

/// A run of failed passes, from the first failure to the next success: it paces the
/// retries and raises the unavailable alert once.
pub(super) struct FailureStreak {
    attempts: u64,
    since: Instant,
    alerted: bool,
    backoff: backon::ExponentialBackoff,
}

impl Worker {
    /// Acts on a failed pass; returns how long to wait before the next.
    pub(super) async fn failed(
        &mut self,
        error: Error,
        state: &mut WorkerState,
        turns: &mut Turns,
    ) -> Duration {
        self.forget_lease_if_lost(&error);
        state.drain.position = None;
        let message = redact(&error.to_string());
        metrics::counter!("ormsync_apply_failures_total", "destination" => self.name.clone())
            .increment(1);
        self.update(|s| {
            s.errors += 1;
            s.last_error = Some(message.clone());
        });
        let in_flight = &state.drain.in_flight;
        let next = policy::decide(&error, self.policy, |id| {
            in_flight.iter().any(|c| c.id == id)
        });
        let parked = match next {
            Next::Retry => return self.retry(error, turns),
            Next::Halt => Ok(false),
            Next::Park(id) => self.park_failed(state, id, &message).await.map(|()| true),
            Next::HaltUnlessParked(id) => self.read_past_if_parked(state, id).await,
        };
        match parked {
            // Go on at once with the rest of the batch.
            Ok(true) => Duration::ZERO,
            Ok(false) => self.halt(error, message, state, &mut turns.waiting).await,
            Err(e) => self.retry(e, turns),
        }
    }

    /// Stops shipping on `error` until a resume; returns how long to wait before the
    /// next turn.
    async fn halt(
        &mut self,
        error: Error,
        message: String,
        state: &mut WorkerState,
        waiting: &mut Vec<oneshot::Sender<Result<()>>>,
    ) -> Duration {
        // What landed before the change at fault shows at the source, for status and
        // for an operator who parks that change by hand.
        if let Ok(position) = self.sink.position(&self.source_id).await {
            self.record_progress(state, &position, true).await;
        }
        tracing::error!(destination = %self.name, error = %message, "halted");
        self.update(|s| {
            s.state = State::Halted;
            // A copy that failed is not "copying" any more; a resume takes it up again.
            s.snapshot = None;
        });
        self.alerts
            .raise(Alert::new(&self.name, AlertKind::Halted).error(message.clone()));
        state.halted = Some(message);
        answer(waiting, error, &self.name);
        // Halted, it still wakes each poll tick to keep its lease and to read
        // `ormsync_control`, where `ormsync resume` asks it to retry.
        self.idle_tick()
    }

    /// Counts a failure that may pass, alerting once it lasts; returns the backoff.
    fn retry(&mut self, error: Error, turns: &mut Turns) -> Duration {
        let message = redact(&error.to_string());
        let s = &self.settings;
        let e = turns.streak.get_or_insert_with(|| FailureStreak {
            attempts: 0,
            since: Instant::now(),
            alerted: false,
            backoff: ExponentialBuilder::default()
                .with_min_delay(s.retry_min)
                .with_max_delay(s.retry_max)
                .with_jitter()
                .without_max_times()
                .build(),
        });
        e.attempts += 1;
        if !e.alerted
            && (e.attempts >= s.unavailable_after_attempts
                || e.since.elapsed() >= s.unavailable_after)
        {
            e.alerted = true;
            self.alerts.raise(
                Alert::new(&self.name, AlertKind::Unavailable)
                    .attempts(e.attempts)
                    .error(message.clone()),
            );
        }
        let delay = e.backoff.next().unwrap_or(s.retry_max);
        tracing::warn!(destination = %self.name, error = %message, attempt = e.attempts, retry_in = ?delay, "replication pass failed");
        self.update(|st| {
            st.state = State::Retrying;
            st.retries += 1;
        });
        answer(&mut turns.waiting, error, &self.name);
        delay
    }

    /// Ends a streak after a pass that succeeded, saying so if it was alerted.
    pub(super) fn recovered(&self, streak: Option<FailureStreak>) {
        if let Some(e) = streak
            && e.alerted
        {
            self.alerts
                .raise(Alert::new(&self.name, AlertKind::Recovered).attempts(e.attempts));
        }
    }
}

/// Gives the first waiting caller the error itself (errors do not clone) and the others
/// its message.
fn answer(waiting: &mut Vec<oneshot::Sender<Result<()>>>, error: Error, name: &str) {
    let message = redact(&error.to_string());
    let mut error = Some(error);
    for reply in waiting.drain(..) {
        let e = error.take().unwrap_or_else(|| Error::Retrying {
            destination: name.to_string(),
            reason: message.clone(),
        });
        let _ = reply.send(Err(e));
    }
}
