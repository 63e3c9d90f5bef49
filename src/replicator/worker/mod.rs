//! One worker per destination: hold the lease, read a batch, apply it, repeat; wait; on
//! failure retry, alert, halt or park the change, as the destination's policy says.
//!
//! This file is the loop; each concern it turns to has a file of its own.

mod backlog;
mod copy;
mod drain;
mod failure;
pub(crate) mod parked;
mod policy;
mod progress;
mod requests;
mod resync;
mod standby;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::FutureExt;
use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;

use super::alert::Alerts;
use super::control::ControlWatch;
use super::destination::OnPermanentError;
use super::lease::Lease;
use super::schedule::Schedule;
use super::status::{DestinationStatus, State};
use crate::apply::Sink;
use crate::entity::TableSpec;
use crate::error::{Error, Result};
use crate::outbox::OutboxReader;
use crate::signal;
use failure::FailureStreak;

pub(crate) use copy::CopyTarget;

/// What a [`Replicator`](crate::Replicator) asks of a worker; each carries its answer's channel.
pub(crate) enum Command {
    /// Run a pass now; answer when the outbox has nothing more (or it failed).
    SyncNow(oneshot::Sender<Result<()>>),
    /// Leave the halted or paused state and ship again.
    Resume(oneshot::Sender<Result<()>>),
    /// Stop shipping for a while, keeping the lease; pending counts stay up to date.
    Pause(oneshot::Sender<Result<()>>),
    /// Stop shipping until enabled; lag alerts stop too.
    Disable(oneshot::Sender<Result<()>>),
    /// Ship again after `Disable`.
    Enable(oneshot::Sender<Result<()>>),
    /// Apply the parked changes again.
    Replay(oneshot::Sender<Result<ReplayReport>>),
    /// Drop parked changes without applying them.
    Discard(Vec<i64>, oneshot::Sender<Result<u64>>),
    /// Copy these tables again.
    Resync(Vec<String>, oneshot::Sender<Result<()>>),
}

pub use crate::outbox::dead_letters::ReplayReport;

/// Settings every worker shares.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) poll_interval: Duration,
    pub(crate) retry_min: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) unavailable_after_attempts: u64,
    pub(crate) unavailable_after: Duration,
    pub(crate) lease_ttl: Duration,
    pub(crate) lag_rows: Option<u64>,
    pub(crate) lag_age: Option<Duration>,
}

/// Ships the outbox to one destination; the replicator runs one per destination.
pub(crate) struct Worker {
    pub(crate) name: String,
    pub(crate) source: DatabaseConnection,
    pub(crate) source_id: String,
    pub(crate) reader: OutboxReader,
    pub(crate) sink: Box<dyn Sink>,
    pub(crate) tables: Arc<HashMap<String, TableSpec>>,
    pub(crate) skip: HashSet<String>,
    pub(crate) policy: OnPermanentError,
    pub(crate) settings: Settings,
    pub(crate) alerts: Alerts,
    pub(crate) lease: Lease,
    /// Requests from other processes: pause, resume, dead letters changed or to replay.
    pub(crate) control: ControlWatch,
    pub(crate) status: watch::Sender<DestinationStatus>,
    pub(crate) schedule: Schedule,
    /// Wake-ups from the source's PostgreSQL `NOTIFY` listener, if there is one.
    pub(crate) notified: Option<watch::Receiver<u64>>,
    /// The source's outbox row count, shared by the workers for status.
    pub(crate) outbox_size: Arc<std::sync::atomic::AtomicI64>,
    pub(crate) requests: mpsc::Receiver<Command>,
    pub(crate) cancel: CancellationToken,
    pub(crate) target: CopyTarget,
}

/// Why an operator keeps a worker from shipping; it holds its lease meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Suspension {
    /// For a while: pending counts and lag alerts stay up to date.
    Paused,
    /// Until enabled: lag alerts stop too.
    Disabled,
}

/// What the worker carries from one turn of its loop to the next, by concern.
#[derive(Default)]
struct WorkerState {
    /// Why it stopped on a change it cannot apply; only a resume clears it.
    halted: Option<String>,
    /// Set while an operator keeps it from shipping.
    suspended: Option<Suspension>,
    /// A resync asked through `ormsync_control` and not run yet: the request's number.
    resync_request: Option<i64>,
    readiness: copy::Readiness,
    drain: drain::DrainState,
    backlog: backlog::BacklogWatch,
    reported: progress::Reported,
}

/// What the loop keeps between turns besides the worker's state.
struct Turns {
    /// Callers of `sync_now` waiting for the end of the next pass.
    waiting: Vec<oneshot::Sender<Result<()>>>,
    /// The failures since the last pass that succeeded, if the last one failed.
    streak: Option<FailureStreak>,
    /// When the next turn runs unless something wakes the worker first.
    next: TokioInstant,
    /// A wake-up by a capture may come before the capture commits: after one found
    /// nothing, how soon to look again.
    recheck: Option<Duration>,
}

/// What wakes an idle realtime worker besides its commands and its clock.
struct Wakes {
    /// Captures in this process.
    captures: Option<watch::Receiver<u64>>,
    /// Captures in other processes, through the source's `NOTIFY`.
    notified: Option<watch::Receiver<u64>>,
}

/// Why the worker woke up.
enum Woken {
    Command(Command),
    Capture,
    Tick,
}

impl Worker {
    pub(crate) async fn run(mut self, disabled: bool) {
        let mut state = WorkerState {
            suspended: disabled.then_some(Suspension::Disabled),
            ..WorkerState::default()
        };
        let realtime = self.schedule.is_realtime();
        let mut wakes = Wakes {
            captures: realtime.then(signal::subscribe),
            notified: if realtime { self.notified.take() } else { None },
        };
        let mut turns = Turns {
            waiting: Vec::new(),
            streak: None,
            // A scheduled destination waits for its first time; the others start at once.
            next: self.next_scheduled().unwrap_or_else(TokioInstant::now),
            recheck: None,
        };
        loop {
            self.publish_state(&mut state).await;
            let by_capture = match self.wait(&mut wakes, turns.next).await {
                None => break,
                Some(Woken::Command(command)) => {
                    if !self.obey(command, &mut state, &mut turns).await {
                        continue;
                    }
                    false
                }
                Some(Woken::Capture) => true,
                Some(Woken::Tick) => false,
            };
            self.turn(&mut state, &mut turns, by_capture).await;
        }
        self.lease.release().await;
        self.update(|s| s.state = State::Stopped);
    }

    /// Waits for a command, a capture or the next turn's time; `None` when the worker
    /// is to stop.
    async fn wait(&mut self, wakes: &mut Wakes, until: TokioInstant) -> Option<Woken> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => None,
            c = self.requests.recv() => c.map(Woken::Command),
            _ = changed(&mut wakes.captures) => Some(Woken::Capture),
            // Sent shortly after a capture in another process, maybe before its commit.
            _ = changed(&mut wakes.notified) => Some(Woken::Capture),
            _ = tokio::time::sleep_until(until) => Some(Woken::Tick),
        }
    }

    /// One turn: follow control, idle if held, keep or lose the lease, drain, and on
    /// error act on the failure policy.
    async fn turn(&mut self, state: &mut WorkerState, turns: &mut Turns, by_capture: bool) {
        self.follow_control(state, &mut turns.streak).await;
        // Here, between passes, as `Command::Resync` runs, not in the middle of a drain.
        if let Some(request) = state.resync_request.take() {
            self.resync_asked(state, request).await;
        }
        if self.idle_if_held(state, &mut turns.waiting).await {
            turns.next = TokioInstant::now() + self.idle_tick();
            return;
        }
        match self.lease.ensure().await {
            Ok(true) => {}
            Ok(false) => {
                self.stand_by(state, &mut turns.waiting).await;
                turns.next = TokioInstant::now() + self.idle_tick();
                return;
            }
            Err(e) => {
                let delay = self.failed(e, state, turns).await;
                turns.next = TokioInstant::now() + delay;
                return;
            }
        }
        if !self.due(turns) {
            return;
        }
        match self.guarded_pass(state).await {
            Ok(applied) => self.passed(applied, by_capture, turns),
            Err(e) => {
                let delay = self.failed(e, state, turns).await;
                turns.next = TokioInstant::now() + delay;
            }
        }
    }

    /// Whether this turn ships: a scheduled destination ships at its times, on
    /// `sync_now`, and on retries; a wake-up or poll tick in between is not its time.
    fn due(&self, turns: &Turns) -> bool {
        !self.schedule.is_timed()
            || !turns.waiting.is_empty()
            || turns.streak.is_some()
            || TokioInstant::now() >= turns.next
    }

    /// A pass, where a panic in code ormsync calls (a driver, sea-query) halts this
    /// destination instead of ending its worker, which would leave every later call to
    /// answer "the replicator has shut down".
    async fn guarded_pass(&mut self, state: &mut WorkerState) -> Result<u64> {
        std::panic::AssertUnwindSafe(self.pass(state))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Err(Error::Panicked {
                    destination: self.name.clone(),
                    reason: panic_message(panic.as_ref()),
                })
            })
    }

    /// After a pass that applied `applied` changes: answers the waiting callers and sets
    /// the next turn's time.
    fn passed(&mut self, applied: u64, by_capture: bool, turns: &mut Turns) {
        self.recovered(turns.streak.take());
        self.update(|s| {
            s.state = State::Idle;
            s.last_error = None;
        });
        for reply in turns.waiting.drain(..) {
            let _ = reply.send(Ok(()));
        }
        turns.recheck = match (by_capture || turns.recheck.is_some(), applied) {
            (true, 0) => Some(turns.recheck.map_or(Duration::from_millis(1), |d| d * 2))
                .filter(|d| *d <= Duration::from_millis(64)),
            _ => None,
        };
        turns.next = match turns.recheck {
            Some(d) => TokioInstant::now() + d,
            None => self
                .next_scheduled()
                .unwrap_or_else(|| TokioInstant::now() + self.settings.poll_interval),
        };
    }

    /// When a scheduled destination ships next, which its status shows; `None` for the
    /// others.
    fn next_scheduled(&self) -> Option<TokioInstant> {
        let at = self.schedule.next_after(Utc::now())?;
        self.update(|s| s.next_run = Some(at));
        Some(TokioInstant::now() + (at - Utc::now()).to_std().unwrap_or_default())
    }

    /// Changes the status; watchers hear of it only when it changed.
    fn update(&self, f: impl FnOnce(&mut DestinationStatus)) {
        self.status.send_if_modified(|s| {
            let before = s.clone();
            f(s);
            *s != before
        });
    }
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// Resolves when the receiver sees a new value; never, without a receiver or once its
/// sender is gone.
async fn changed(rx: &mut Option<watch::Receiver<u64>>) {
    if let Some(r) = rx
        && r.changed().await.is_ok()
    {
        return;
    }
    std::future::pending::<()>().await
}

/// Names the destination in the context of a database error.
fn in_destination(name: &str, e: Error) -> Error {
    match e {
        Error::Db { context, source } => Error::Db {
            context: format!("destination `{name}`: {context}"),
            source,
        },
        other => other,
    }
}
