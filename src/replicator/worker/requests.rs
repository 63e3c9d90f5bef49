//! What the worker is asked: commands from its [`Replicator`](crate::Replicator), and
//! requests through `ormsync_control` from the command line or another instance.

use super::failure::FailureStreak;
use super::{Command, Suspension, Turns, Worker, WorkerState};
use crate::outbox::control;

impl Worker {
    /// Carries out `command`; returns whether the turn goes on to ship.
    pub(super) async fn obey(
        &mut self,
        command: Command,
        state: &mut WorkerState,
        turns: &mut Turns,
    ) -> bool {
        match command {
            Command::SyncNow(reply) => turns.waiting.push(reply),
            Command::Resume(reply) => {
                // Persisted first, so the next read of the control row agrees.
                let stored = control::unpause(&self.source, &self.name).await;
                if stored.is_ok()
                    && (state.halted.take().is_some() || state.suspended.take().is_some())
                {
                    tracing::info!(destination = %self.name, "resumed");
                }
                turns.streak = None;
                // What it halted on may have been parked by hand meanwhile.
                state.drain.blocked = None;
                let _ = reply.send(stored);
            }
            Command::Pause(reply) => {
                let stored = control::pause(&self.source, &self.name).await;
                if stored.is_ok() {
                    state.suspended.get_or_insert(Suspension::Paused);
                }
                let _ = reply.send(stored);
            }
            Command::Disable(reply) => {
                state.suspended = Some(Suspension::Disabled);
                let _ = reply.send(Ok(()));
            }
            Command::Enable(reply) => {
                if state.suspended == Some(Suspension::Disabled) {
                    state.suspended = None;
                }
                let _ = reply.send(Ok(()));
            }
            Command::Replay(reply) => {
                let _ = reply.send(self.replay(state).await);
                return false;
            }
            Command::Discard(ids, reply) => {
                let _ = reply.send(self.discard(state, &ids).await);
                return false;
            }
            Command::Resync(tables, reply) => {
                let answer = self.resync(state, &tables).await;
                if let Err(e) = &answer {
                    self.forget_lease_if_lost(e);
                }
                let _ = reply.send(answer);
                return false;
            }
        }
        true
    }

    /// Takes in what was asked through `ormsync_control` (by the command line or another
    /// instance) since it was last read.
    pub(super) async fn follow_control(
        &mut self,
        state: &mut WorkerState,
        streak: &mut Option<FailureStreak>,
    ) {
        let Some(asked) = self.control.poll().await else {
            return;
        };
        if asked.resumed {
            if state.halted.take().is_some() {
                tracing::info!(destination = %self.name, "resumed through ormsync_control");
            }
            *streak = None;
            state.drain.blocked = None;
        }
        if asked.letters {
            // Read again before the next batch is routed.
            state.drain.blocked = None;
        }
        // Asked by `ormsync dead-letters replay`: the shipping instance replays, through
        // its sink with this destination's rules.
        if let Some(request) = asked.replay
            && self.lease.ensure().await.unwrap_or(false)
        {
            self.replay_asked(state, request).await;
        }
        // Asked by `ormsync resync`: run between passes by the main loop.
        if asked.resync.is_some() {
            state.resync_request = asked.resync;
        }
        match (asked.paused, state.suspended) {
            (true, None) => {
                tracing::info!(destination = %self.name, "paused through ormsync_control");
                state.suspended = Some(Suspension::Paused);
            }
            (false, Some(Suspension::Paused)) => {
                tracing::info!(destination = %self.name, "resumed through ormsync_control");
                state.suspended = None;
            }
            _ => {}
        }
    }

    /// Replays the parked changes for request `request` of `ormsync_control`, and records
    /// the outcome there.
    async fn replay_asked(&mut self, state: &mut WorkerState, request: i64) {
        let (replayed, failed) = match self.replay(state).await {
            Ok(r) => (r.replayed as i64, r.failed as i64),
            Err(e) => {
                tracing::warn!(destination = %self.name, error = %e, "dead-letter replay failed");
                (0, -1)
            }
        };
        let done = control::replay_done(&self.source, &self.name, request, replayed, failed).await;
        if let Err(e) = done {
            tracing::warn!(destination = %self.name, error = %e, "cannot record a replay");
        }
    }
}
