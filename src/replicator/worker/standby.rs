//! The lease from the worker's side: keep it while not shipping, stand by while another
//! instance holds it, and how often an idle worker looks again.

use std::time::Duration;

use tokio::sync::oneshot;

use super::super::status::State;
use super::{Suspension, Worker, WorkerState, in_destination};
use crate::error::{Error, Result};
use crate::snapshot::Fence;

impl Worker {
    /// Keeps the lease while not shipping, so no other instance takes over a destination
    /// that is halted, paused or disabled on purpose.
    pub(super) async fn keep_lease(&mut self) {
        if let Err(e) = self.lease.ensure().await {
            tracing::debug!(destination = %self.name, error = %e, "cannot renew the lease");
        }
    }

    /// While halted or suspended: shows why, answers the waiting callers, keeps the lease
    /// and, paused, the backlog; returns whether it is held so.
    pub(super) async fn idle_if_held(
        &mut self,
        state: &mut WorkerState,
        waiting: &mut Vec<oneshot::Sender<Result<()>>>,
    ) -> bool {
        if let Some(reason) = &state.halted {
            for reply in waiting.drain(..) {
                let _ = reply.send(Err(Error::Halted {
                    destination: self.name.clone(),
                    reason: reason.clone(),
                }));
            }
            self.keep_lease().await;
            return true;
        }
        let Some(suspension) = state.suspended else {
            return false;
        };
        let shown = if suspension == Suspension::Paused {
            State::Paused
        } else {
            State::Disabled
        };
        self.update(|s| s.state = shown);
        for reply in waiting.drain(..) {
            let _ = reply.send(Err(Error::NotShipping {
                destination: self.name.clone(),
                state: shown.to_string(),
            }));
        }
        self.keep_lease().await;
        if suspension == Suspension::Paused
            && let Ok(p) = self.sink.position(&self.source_id).await
        {
            // Pending keeps growing visibly, and lag alerts still fire.
            state.backlog.seen = None;
            self.check_backlog(state, &p).await;
        }
        true
    }

    /// While another instance holds the lease: shows it and answers the waiting callers.
    pub(super) async fn stand_by(
        &mut self,
        state: &mut WorkerState,
        waiting: &mut Vec<oneshot::Sender<Result<()>>>,
    ) {
        let holder = self.lease.holder().await.ok().flatten().unwrap_or_default();
        self.update(|s| s.state = State::Standby);
        state.drain.position = None;
        for reply in waiting.drain(..) {
            let _ = reply.send(Err(self.standby(holder.clone())));
        }
    }

    /// Fails with [`Error::Standby`] when another instance has taken the lease.
    pub(super) async fn still_shipping(&mut self) -> Result<()> {
        if self.lease.ensure().await? {
            return Ok(());
        }
        let holder = self.lease.holder().await?.unwrap_or_default();
        Err(self.standby(holder))
    }

    /// The fence of the lease generation held, the destination claimed for it once, before
    /// a copy's state is read there (see [`Fence::claim`]).
    pub(super) async fn claim(&mut self, state: &mut WorkerState) -> Result<Fence> {
        let Some(generation) = self.lease.generation() else {
            return Err(Error::LeaseLost {
                destination: self.name.clone(),
            });
        };
        let fence = Fence {
            destination: self.name.clone(),
            generation,
        };
        if state.readiness.claimed != Some(generation) {
            fence
                .claim(&self.target.db, &self.source_id)
                .await
                .map_err(|e| in_destination(&self.name, e))?;
            state.readiness.claimed = Some(generation);
        }
        Ok(fence)
    }

    /// After `error`: when the destination refused a write of this lease generation, asks
    /// the source about the lease on the next turn instead of trusting it until it lapses.
    pub(super) fn forget_lease_if_lost(&mut self, error: &Error) {
        if matches!(error, Error::LeaseLost { .. }) {
            self.lease.forget();
        }
    }

    /// The answer while `holder` ships to this destination.
    fn standby(&self, holder: String) -> Error {
        Error::Standby {
            destination: self.name.clone(),
            holder,
        }
    }

    /// How long a worker that is not draining (halted, held, on standby) waits before it
    /// looks again: a poll, but often enough to renew its lease, which lapses after
    /// `lease_ttl`.
    pub(super) fn idle_tick(&self) -> Duration {
        self.settings.poll_interval.min(self.settings.lease_ttl / 3)
    }
}
