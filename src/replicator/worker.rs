//! One worker per destination: hold the lease, read a batch, apply it, repeat; wait; on
//! failure retry, alert, halt or park the change, as the destination's policy says.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use futures_util::FutureExt;
use sea_orm::{DatabaseConnection, TransactionTrait};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::alert::{Alert, AlertKind, Alerts};
use super::control::ControlWatch;
use super::destination::OnPermanentError;
use super::lease::Lease;
use super::schedule::Schedule;
use super::status::{DestinationStatus, State};
use crate::apply::{self, Rules, Sink};
use crate::bootstrap::{self, Preparation};
use crate::change::{Batch, Change};
use crate::entity::TableSpec;
use crate::error::{DbContext, Error, Result};
use crate::outbox::{OutboxReader, control, dead_letters, progress};
use crate::position::Position;
use crate::redact::redact;
use crate::schema;
use crate::signal;
use crate::snapshot::{self, SnapshotStatus};

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

/// A run of failed passes, from the first failure to the next success.
struct Episode {
    attempts: u64,
    since: Instant,
    alerted: bool,
    backoff: backon::ExponentialBackoff,
}

pub(crate) struct Worker {
    pub(crate) name: String,
    pub(crate) source: DatabaseConnection,
    pub(crate) source_id: String,
    pub(crate) destination: DatabaseConnection,
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
    pub(crate) status: Arc<Mutex<DestinationStatus>>,
    pub(crate) schedule: Schedule,
    /// Wake-ups from the source's PostgreSQL `NOTIFY` listener, if there is one.
    pub(crate) notified: Option<watch::Receiver<u64>>,
    /// The source's outbox row count, shared by the workers for status.
    pub(crate) outbox_size: Arc<std::sync::atomic::AtomicI64>,
    pub(crate) requests: mpsc::Receiver<Command>,
    pub(crate) cancel: CancellationToken,
    /// Whether a destination without a checkpoint is copied first.
    pub(crate) initial_snapshot: bool,
    /// How the destination takes rows (for the rows a snapshot copies).
    pub(crate) rules: Arc<Rules>,
    /// Rows per snapshot chunk.
    pub(crate) chunk_rows: u64,
    /// What to do to the destination's tables before shipping: create, evolve.
    pub(crate) prepare: Option<Preparation>,
}

/// Why a worker is not shipping, when it is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    Paused,
    Disabled,
}

/// What the loop carries from one pass to the next.
#[derive(Default)]
struct Memory {
    installed: bool,
    /// A resync asked through `ormsync_control` and not run yet: the request's number.
    resync: Option<i64>,
    /// Whether a snapshot to start or resume was looked for since start.
    snapshot_checked: bool,
    position: Option<Position>,
    /// Rows with a parked change: their later changes are parked behind it.
    blocked: Option<HashSet<(String, String)>>,
    /// The changes of the batch whose apply failed last, to park the one that fails.
    in_flight: Vec<Change>,
    halted: Option<String>,
    hold: Option<Hold>,
    lag_high: bool,
    last_backlog_check: Option<Instant>,
    /// When the position was last copied to `ormsync_progress`, and its watermark.
    recorded: Option<(Instant, i64)>,
    /// What the last backlog check saw: the watermark and whether anything was pending.
    last_backlog: Option<(i64, bool)>,
    /// The state and last error last recorded in `ormsync_progress`.
    published: Option<(State, Option<String>)>,
}

impl Worker {
    pub(crate) async fn run(mut self, disabled: bool) {
        let mut memory = Memory {
            hold: disabled.then_some(Hold::Disabled),
            ..Memory::default()
        };
        let mut episode: Option<Episode> = None;
        let mut waiting: Vec<oneshot::Sender<Result<()>>> = Vec::new();
        let realtime = self.schedule.is_realtime();
        let mut captures = realtime.then(signal::subscribe);
        let mut notified = if realtime { self.notified.take() } else { None };
        // A scheduled destination waits for its first time; the others start at once.
        let mut next = match self.schedule.next_after(Utc::now()) {
            Some(at) => {
                self.update(|s| s.next_run = Some(at));
                TokioInstant::now() + (at - Utc::now()).to_std().unwrap_or_default()
            }
            None => TokioInstant::now(),
        };
        // After a wake-up by an uncommitted capture found nothing: look again soon.
        let mut linger: Option<Duration> = None;
        loop {
            self.publish_state(&mut memory).await;
            let mut by_capture = false;
            let command = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                c = self.requests.recv() => match c {
                    Some(c) => Some(c),
                    None => break,
                },
                _ = changed(&mut captures) => { by_capture = true; None }
                // Sent shortly after a capture in another process, maybe before its commit.
                _ = changed(&mut notified) => { by_capture = true; None }
                _ = tokio::time::sleep_until(next) => None,
            };
            match command {
                Some(Command::SyncNow(reply)) => waiting.push(reply),
                Some(Command::Resume(reply)) => {
                    // Persisted first, so the next read of the control row agrees.
                    let stored = control::unpause(&self.source, &self.name).await;
                    if stored.is_ok()
                        && (memory.halted.take().is_some() || memory.hold.take().is_some())
                    {
                        tracing::info!(destination = %self.name, "resumed");
                    }
                    episode = None;
                    // What it halted on may have been parked by hand meanwhile.
                    memory.blocked = None;
                    let _ = reply.send(stored);
                }
                Some(Command::Pause(reply)) => {
                    let stored = control::pause(&self.source, &self.name).await;
                    if stored.is_ok() {
                        memory.hold.get_or_insert(Hold::Paused);
                    }
                    let _ = reply.send(stored);
                }
                Some(Command::Disable(reply)) => {
                    memory.hold = Some(Hold::Disabled);
                    let _ = reply.send(Ok(()));
                }
                Some(Command::Enable(reply)) => {
                    if memory.hold == Some(Hold::Disabled) {
                        memory.hold = None;
                    }
                    let _ = reply.send(Ok(()));
                }
                Some(Command::Replay(reply)) => {
                    let _ = reply.send(self.replay(&mut memory).await);
                    continue;
                }
                Some(Command::Discard(ids, reply)) => {
                    let _ = reply.send(self.discard(&mut memory, &ids).await);
                    continue;
                }
                Some(Command::Resync(tables, reply)) => {
                    let _ = reply.send(self.resync(&mut memory, &tables).await);
                    continue;
                }
                None => {}
            }
            self.follow_control(&mut memory, &mut episode).await;
            // Here, between passes, as `Command::Resync` runs, not in the middle of a drain.
            if let Some(request) = memory.resync.take() {
                self.resync_asked(&mut memory, request).await;
            }
            if let Some(reason) = &memory.halted {
                for reply in waiting.drain(..) {
                    let _ = reply.send(Err(Error::Halted {
                        destination: self.name.clone(),
                        reason: reason.clone(),
                    }));
                }
                self.keep_lease().await;
                next = TokioInstant::now() + self.idle_tick();
                continue;
            }
            if let Some(hold) = memory.hold {
                let state = if hold == Hold::Paused {
                    State::Paused
                } else {
                    State::Disabled
                };
                self.update(|s| s.state = state);
                for reply in waiting.drain(..) {
                    let _ = reply.send(Err(Error::NotShipping {
                        destination: self.name.clone(),
                        state: state.to_string(),
                    }));
                }
                self.keep_lease().await;
                if hold == Hold::Paused
                    && let Ok(p) = self.sink.position(&self.source_id).await
                {
                    // Pending keeps growing visibly, and lag alerts still fire.
                    memory.last_backlog = None;
                    self.check_backlog(&mut memory, &p).await;
                }
                next = TokioInstant::now() + self.idle_tick();
                continue;
            }
            match self.lease.ensure().await {
                Ok(true) => {}
                Ok(false) => {
                    let holder = self.lease.holder().await.ok().flatten().unwrap_or_default();
                    self.update(|s| s.state = State::Standby);
                    memory.position = None;
                    for reply in waiting.drain(..) {
                        let _ = reply.send(Err(self.standby(holder.clone())));
                    }
                    next = TokioInstant::now() + self.idle_tick();
                    continue;
                }
                Err(e) => {
                    let delay = self
                        .failed(e, &mut memory, &mut episode, &mut waiting)
                        .await;
                    next = TokioInstant::now() + delay;
                    continue;
                }
            }
            // A scheduled destination ships at its times, on `sync_now`, and on retries;
            // a wake-up or poll tick in between is not its time.
            let due = !self.schedule.is_timed()
                || !waiting.is_empty()
                || episode.is_some()
                || TokioInstant::now() >= next;
            if !due {
                continue;
            }
            // A panic in code ormsync calls (a driver, sea-query) halts this destination
            // instead of ending its worker, which would leave every later call to answer
            // "the replicator has shut down".
            let pass = std::panic::AssertUnwindSafe(self.pass(&mut memory))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    Err(Error::Panicked {
                        destination: self.name.clone(),
                        reason: panic_message(panic.as_ref()),
                    })
                });
            match pass {
                Ok(applied) => {
                    if let Some(e) = episode.take()
                        && e.alerted
                    {
                        self.alerts.raise(
                            Alert::new(&self.name, AlertKind::Recovered).attempts(e.attempts),
                        );
                    }
                    self.update(|s| {
                        s.state = State::Idle;
                        s.last_error = None;
                    });
                    for reply in waiting.drain(..) {
                        let _ = reply.send(Ok(()));
                    }
                    linger = match (by_capture || linger.is_some(), applied) {
                        (true, 0) => Some(linger.map_or(Duration::from_millis(1), |d| d * 2))
                            .filter(|d| *d <= Duration::from_millis(64)),
                        _ => None,
                    };
                    next = match (linger, self.schedule.next_after(Utc::now())) {
                        (Some(d), _) => TokioInstant::now() + d,
                        (None, Some(at)) => {
                            self.update(|s| s.next_run = Some(at));
                            TokioInstant::now() + (at - Utc::now()).to_std().unwrap_or_default()
                        }
                        (None, None) => TokioInstant::now() + self.settings.poll_interval,
                    };
                }
                Err(e) => {
                    let delay = self
                        .failed(e, &mut memory, &mut episode, &mut waiting)
                        .await;
                    next = TokioInstant::now() + delay;
                }
            }
        }
        self.lease.release().await;
        self.update(|s| s.state = State::Stopped);
    }

    /// Takes in what was asked through `ormsync_control` (by the command line or another
    /// instance) since it was last read.
    async fn follow_control(&mut self, memory: &mut Memory, episode: &mut Option<Episode>) {
        let Some(asked) = self.control.poll().await else {
            return;
        };
        if asked.resumed {
            if memory.halted.take().is_some() {
                tracing::info!(destination = %self.name, "resumed through ormsync_control");
            }
            *episode = None;
            memory.blocked = None;
        }
        if asked.letters {
            // Read again before the next batch is routed.
            memory.blocked = None;
        }
        // Asked by `ormsync dead-letters replay`: the shipping instance replays, through
        // its sink with this destination's rules.
        if let Some(request) = asked.replay
            && self.lease.ensure().await.unwrap_or(false)
        {
            let (replayed, failed) = match self.replay(memory).await {
                Ok(r) => (r.replayed as i64, r.failed as i64),
                Err(e) => {
                    tracing::warn!(destination = %self.name, error = %e, "dead-letter replay failed");
                    (0, -1)
                }
            };
            let done =
                control::replay_done(&self.source, &self.name, request, replayed, failed).await;
            if let Err(e) = done {
                tracing::warn!(destination = %self.name, error = %e, "cannot record a replay");
            }
        }
        // Asked by `ormsync resync`: run between passes by the main loop.
        if asked.resync.is_some() {
            memory.resync = asked.resync;
        }
        match (asked.paused, memory.hold) {
            (true, None) => {
                tracing::info!(destination = %self.name, "paused through ormsync_control");
                memory.hold = Some(Hold::Paused);
            }
            (false, Some(Hold::Paused)) => {
                tracing::info!(destination = %self.name, "resumed through ormsync_control");
                memory.hold = None;
            }
            _ => {}
        }
    }

    /// Keeps the lease while not shipping, so no other instance takes over a destination
    /// that is halted, paused or disabled on purpose.
    async fn keep_lease(&mut self) {
        if let Err(e) = self.lease.ensure().await {
            tracing::debug!(destination = %self.name, error = %e, "cannot renew the lease");
        }
    }

    /// Decides what a failed pass leads to; returns how long to wait before the next.
    async fn failed(
        &mut self,
        error: Error,
        memory: &mut Memory,
        episode: &mut Option<Episode>,
        waiting: &mut Vec<oneshot::Sender<Result<()>>>,
    ) -> Duration {
        memory.position = None;
        let message = redact(&error.to_string());
        metrics::counter!("ormsync_apply_failures_total", "destination" => self.name.clone())
            .increment(1);
        self.update(|s| {
            s.errors += 1;
            s.last_error = Some(message.clone());
        });
        if !error.is_transient() {
            if let Some(id) = error.change_id() {
                let parked =
                    if let Some(change) = memory.in_flight.iter().find(|c| c.id == id).cloned() {
                        if self.policy == OnPermanentError::DeadLetter {
                            self.park(memory, &change, &message).await.map(|()| true)
                        } else {
                            Ok(false)
                        }
                    } else {
                        self.park_stored(memory, id, &message).await
                    };
                match parked {
                    // Go on at once with the rest of the batch.
                    Ok(true) => return Duration::ZERO,
                    Ok(false) => {}
                    Err(e) => return self.retry(e, episode, waiting),
                }
            }
            // What landed before the change at fault shows at the source, for status and
            // for an operator who parks that change by hand.
            if let Ok(position) = self.sink.position(&self.source_id).await {
                self.record_progress(memory, &position, true).await;
            }
            tracing::error!(destination = %self.name, error = %message, "halted");
            self.update(|s| {
                s.state = State::Halted;
                // A copy that failed is not "copying" any more; a resume takes it up again.
                s.snapshot = None;
            });
            self.alerts
                .raise(Alert::new(&self.name, AlertKind::Halted).error(message.clone()));
            memory.halted = Some(message);
            answer(waiting, error, &self.name);
            // Halted, it still wakes each poll tick to keep its lease and to read
            // `ormsync_control`, where `ormsync resume` asks it to retry.
            return self.idle_tick();
        }
        self.retry(error, episode, waiting)
    }

    fn retry(
        &mut self,
        error: Error,
        episode: &mut Option<Episode>,
        waiting: &mut Vec<oneshot::Sender<Result<()>>>,
    ) -> Duration {
        let message = redact(&error.to_string());
        let s = &self.settings;
        let e = episode.get_or_insert_with(|| Episode {
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
        answer(waiting, error, &self.name);
        delay
    }

    /// Ships batches until the outbox has nothing more for this destination; returns how
    /// many changes it applied.
    async fn pass(&mut self, memory: &mut Memory) -> Result<u64> {
        if !memory.installed {
            schema::install(&self.destination)
                .await
                .map_err(|e| in_destination(&self.name, e))?;
            if let Some(how) = &self.prepare {
                let tables = self.shipped_tables();
                let specs: Vec<&TableSpec> = tables.values().collect();
                bootstrap::prepare_tables(&self.destination, &self.name, &specs, how).await?;
            }
            memory.installed = true;
        }
        if !memory.snapshot_checked {
            if !self.snapshot(memory).await? {
                return Ok(0);
            }
            memory.snapshot_checked = true;
        }
        let mut total = 0;
        // The next batch, read while the previous one applied.
        let mut prefetched: Option<Batch> = None;
        loop {
            if self.cancel.is_cancelled() {
                return Ok(total);
            }
            // A long drain outlives a lease: renew it between batches (a database round
            // trip only once a third of it has gone), and stop if another instance took it.
            self.still_shipping().await?;
            // A pause asked elsewhere stops a long drain between batches.
            self.follow_control(memory, &mut None).await;
            if memory.hold.is_some() {
                return Ok(total);
            }
            if memory.blocked.is_none() {
                memory.blocked = Some(dead_letters::blocked_rows(&self.source, &self.name).await?);
            }
            let current = match &memory.position {
                Some(p) => p.clone(),
                None => self.sink.position(&self.source_id).await?,
            };
            let batch = match prefetched.take() {
                Some(batch) => batch,
                None => self.reader.read(&current).await?,
            };
            let pending_gaps = self.reader.pending_gaps();
            if batch.is_empty() {
                memory.position = Some(current.clone());
                self.update(|s| {
                    s.watermark = current.watermark;
                    s.frontier = current.frontier();
                    s.pending_gaps = pending_gaps;
                });
                self.record_progress(memory, &current, true).await;
                // Caught up: a drain that just ended shows as such at once.
                if memory
                    .last_backlog
                    .is_some_and(|(w, _)| w != current.watermark)
                {
                    memory.last_backlog_check = None;
                }
                self.check_backlog(memory, &current).await;
                return Ok(total);
            }
            self.update(|s| s.state = State::Running);
            let batch = self.route(batch, memory).await?;
            let started = Instant::now();
            // Read the next batch while this one applies: the source and the destination
            // work at once. The read assumes this batch lands; if it does not, the read is
            // dropped and the reader starts again from the stored position.
            let mut expected = current.clone();
            batch.mark_done(&mut expected);
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
            let stored = self.sink.apply(&self.source_id, &batch).await;
            let next = match read_ahead.await {
                Ok((reader, next)) => {
                    self.reader = reader;
                    next.ok()
                }
                // The read panicked: the reader left in its place starts from the position.
                Err(_) => None,
            };
            let (batch, stored, next) = match (stored, next) {
                (Err(e @ Error::Apply { .. }), next) => {
                    let (batch, stored) = self
                        .apply_around(memory, &current, batch, next, e, &mut expected)
                        .await?;
                    (batch, stored, None)
                }
                (stored, next) => (batch, stored, next),
            };
            let applied = batch.changes.len() as u64;
            match &stored {
                Ok(stored) if *stored == expected && next.is_some() => prefetched = next,
                // The read ran ahead of a position that was not stored (or was used up
                // above): start it again from the stored one.
                _ => self.reader.restart(),
            }
            let stored = match stored {
                Ok(stored) => stored,
                Err(e) => {
                    // Handed to `failed`, which parks the change the error names; kept only
                    // then, as a copy of every batch would double a batch's memory.
                    memory.in_flight = batch.changes;
                    return Err(e);
                }
            };
            memory.in_flight = Vec::new();
            // Freeing a batch's thousands of rows took about 8% of the worker's time
            // shipping into MariaDB: let another thread do it while the next batch applies.
            tokio::task::spawn_blocking(move || drop(batch));
            total += applied;
            let labels = [("destination", self.name.clone())];
            metrics::counter!("ormsync_changes_applied_total", &labels).increment(applied);
            metrics::histogram!("ormsync_batch_size", &labels).record(applied as f64);
            metrics::histogram!("ormsync_batch_duration_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
            self.record_progress(memory, &stored, false).await;
            self.update(|s| {
                s.watermark = stored.watermark;
                s.frontier = stored.frontier();
                s.pending_gaps = pending_gaps;
                s.applied += applied;
                s.last_success = Some(Utc::now());
            });
            memory.position = Some(stored.clone());
            self.check_backlog(memory, &stored).await;
        }
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
        memory: &mut Memory,
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
                let more = self.route(more, memory).await?;
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

    /// Copies the position to `ormsync_progress` at the source, for retention and other
    /// instances: at most once a second while draining (it is one more round trip per
    /// batch), and whenever a pass ends on a position not recorded yet.
    async fn record_progress(&self, memory: &mut Memory, position: &Position, pass_end: bool) {
        let moved = memory.recorded.is_none_or(|(_, w)| w != position.watermark);
        let due = memory
            .recorded
            .is_none_or(|(t, _)| t.elapsed() >= Duration::from_secs(1));
        if !moved || !(due || pass_end) {
            return;
        }
        match progress::record(&self.source, &self.name, position).await {
            Ok(()) => memory.recorded = Some((Instant::now(), position.watermark)),
            Err(e) => {
                tracing::debug!(destination = %self.name, error = %e, "could not record progress at the source")
            }
        }
    }

    /// Keeps the changes this destination takes. Skipped tables count as done; changes of
    /// rows with a parked change are parked behind it.
    async fn route(&self, mut batch: Batch, memory: &mut Memory) -> Result<Batch> {
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
            } else if memory
                .blocked
                .as_ref()
                // Most of the time nothing is parked: then no key is encoded to look it up.
                .is_some_and(|b| {
                    !b.is_empty() && b.contains(&(change.table.clone(), change.key.to_json()))
                })
                // The set may be stale (replayed or discarded elsewhere): the table decides.
                && dead_letters::park_behind(&self.source, &self.name, &change).await?
            {
                self.update(|s| s.dead_lettered += 1);
                batch.skipped.push((change.id, change.id));
            } else {
                keep.push(change);
            }
        }
        batch.changes = keep;
        Ok(batch)
    }

    /// Parks a change the destination refuses for good; later changes of its row follow it.
    async fn park(&mut self, memory: &mut Memory, change: &Change, message: &str) -> Result<()> {
        dead_letters::park(&self.source, &self.name, change, message).await?;
        memory
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
    /// does not know, as it is stored, where the policy says to park; a row an operator
    /// parked already is read past under either policy. Returns whether it is parked.
    async fn park_stored(&mut self, memory: &mut Memory, id: i64, message: &str) -> Result<bool> {
        if !dead_letters::is_parked(&self.source, &self.name, id).await? {
            if self.policy != OnPermanentError::DeadLetter {
                return Ok(false);
            }
            dead_letters::park_stored(&self.source, &self.name, id, message).await?;
            self.update(|s| s.dead_lettered += 1);
            self.alerts.raise(
                Alert::new(&self.name, AlertKind::DeadLettered { outbox_id: id }).error(message),
            );
        }
        self.reader.read_past(id);
        // Read again, with the row's key if it has one, so later changes of the row park
        // behind it.
        memory.blocked = None;
        Ok(true)
    }

    /// Applies the parked changes again (see [`dead_letters::replay`]).
    async fn replay(&mut self, memory: &mut Memory) -> Result<ReplayReport> {
        let report = dead_letters::replay(
            &self.source,
            &self.source_id,
            &self.name,
            self.sink.as_mut(),
        )
        .await?;
        memory.blocked = Some(dead_letters::blocked_rows(&self.source, &self.name).await?);
        Ok(report)
    }

    async fn discard(&mut self, memory: &mut Memory, ids: &[i64]) -> Result<u64> {
        let removed = dead_letters::discard(&self.source, &self.name, Some(ids)).await?;
        memory.blocked = Some(dead_letters::blocked_rows(&self.source, &self.name).await?);
        Ok(removed)
    }

    /// The tables this destination receives.
    fn shipped_tables(&self) -> HashMap<String, TableSpec> {
        self.tables
            .iter()
            .filter(|(t, _)| !self.skip.contains(*t))
            .map(|(t, s)| (t.clone(), s.clone()))
            .collect()
    }

    /// Starts the initial snapshot of a destination that has no checkpoint, or resumes an
    /// unfinished snapshot or resync, and converges it; returns whether the copy is complete
    /// (`false` when it stopped for a shutdown, to resume on the next start).
    async fn snapshot(&mut self, memory: &mut Memory) -> Result<bool> {
        let tables = self.shipped_tables();
        let mut progress = snapshot::list(&self.destination, &self.source_id)
            .await
            .map_err(|e| in_destination(&self.name, e))?;
        let copied_before = !progress.is_empty();
        progress.retain(|p| tables.contains_key(&p.table));
        let mut base = snapshot::base(&self.destination, &self.source_id)
            .await
            .map_err(|e| in_destination(&self.name, e))?;
        if progress.iter().all(|p| p.done) {
            let new = self.initial_snapshot
                && progress.is_empty()
                && apply::read_checkpoint(&self.destination, &self.source_id)
                    .await?
                    .is_none();
            if !new {
                if let Some(base) = base {
                    self.update(|s| s.state = State::Copying);
                    self.converge(memory, &tables, &base).await?;
                }
                // Tables the destination never had copied: an entity registered since its
                // snapshot, or a table it skipped and no longer does. Their rows written
                // before (or skipped) would never reach it by the stream alone.
                let unseen: Vec<&str> = tables
                    .keys()
                    .filter(|t| !progress.iter().any(|p| &p.table == *t))
                    .map(String::as_str)
                    .collect();
                if !self.initial_snapshot || !copied_before || unseen.is_empty() {
                    return Ok(true);
                }
                base = Some(self.start_backfill(&unseen).await?);
                progress = snapshot::list(&self.destination, &self.source_id).await?;
                progress.retain(|p| tables.contains_key(&p.table));
                progress.retain(|p| !p.done);
            } else {
                // From here on retention keeps every change for this destination. The base is
                // what the outbox holds now: every chunk, read later, contains it. Then the
                // checkpoint (at zero), the plan and the base are stored together.
                progress::record(&self.source, &self.name, &Position::default()).await?;
                memory.recorded = None;
                let visible = crate::outbox::visible::position(&self.source).await?;
                let names: Vec<&str> = tables.keys().map(String::as_str).collect();
                let txn = self
                    .destination
                    .begin()
                    .await
                    .context(|| format!("destination `{}`: starting a snapshot", self.name))?;
                apply::lock_checkpoint(&txn, &self.source_id).await?;
                snapshot::reset(&txn, &self.source_id, &names, false).await?;
                snapshot::set_base(&txn, &self.source_id, &visible).await?;
                txn.commit()
                    .await
                    .context(|| format!("destination `{}`: starting a snapshot", self.name))?;
                tracing::info!(destination = %self.name, tables = names.len(), "snapshot: starting");
                base = Some(visible);
                progress = snapshot::list(&self.destination, &self.source_id).await?;
                progress.retain(|p| tables.contains_key(&p.table));
            }
        }
        self.update(|s| s.state = State::Copying);
        self.publish_state(memory).await;
        let mut copy = snapshot::Copy::new(self.link(), tables.clone(), &progress)?;
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
        if done {
            // A copy begun by a version that kept no base converges from nothing: every
            // change still in the outbox is read again.
            self.converge(memory, &tables, &base.unwrap_or_default())
                .await?;
            tracing::info!(destination = %self.name, "snapshot: done; streaming");
        }
        Ok(done)
    }

    /// Plans the copy of `tables` into a destination that streams already, converging from
    /// its checkpoint as a resync does (the stream waits meanwhile), but deleting nothing:
    /// rows of the destination's own stay, as in an initial snapshot. Returns the base.
    async fn start_backfill(&mut self, tables: &[&str]) -> Result<Position> {
        let base = apply::read_checkpoint(&self.destination, &self.source_id)
            .await?
            .unwrap_or_default();
        let context = || format!("destination `{}`: starting a backfill", self.name);
        let txn = self.destination.begin().await.context(context)?;
        apply::lock_checkpoint(&txn, &self.source_id).await?;
        snapshot::reset(&txn, &self.source_id, tables, false).await?;
        snapshot::set_base(&txn, &self.source_id, &base).await?;
        txn.commit().await.context(context)?;
        tracing::info!(destination = %self.name, ?tables, "backfill: copying tables the destination never had copied");
        Ok(base)
    }

    /// How a copy reaches the source and this destination.
    fn link(&self) -> snapshot::Link {
        snapshot::Link {
            source: self.source.clone(),
            dest: self.destination.clone(),
            source_id: self.source_id.clone(),
            destination: self.name.clone(),
            rules: self.rules.clone(),
            chunk_rows: self.chunk_rows,
        }
    }

    /// Fails with [`Error::Standby`] when another instance has taken the lease.
    async fn still_shipping(&mut self) -> Result<()> {
        if self.lease.ensure().await? {
            return Ok(());
        }
        let holder = self.lease.holder().await?.unwrap_or_default();
        Err(self.standby(holder))
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
    fn idle_tick(&self) -> Duration {
        self.settings.poll_interval.min(self.settings.lease_ttl / 3)
    }

    /// Brings the copied destination to one snapshot of the source and sets its checkpoint
    /// there (see [`snapshot::converge`]).
    async fn converge(
        &mut self,
        memory: &mut Memory,
        tables: &HashMap<String, TableSpec>,
        base: &Position,
    ) -> Result<()> {
        self.still_shipping().await?;
        let done = snapshot::converge(
            &self.link(),
            self.sink.as_mut(),
            tables,
            &self.skip,
            base,
            self.chunk_rows,
            &mut memory.in_flight,
        )
        .await
        .map_err(|e| in_destination(&self.name, e))?;
        memory.in_flight = Vec::new();
        if done.parked > 0 {
            memory.blocked = None;
        }
        memory.position = Some(done.position);
        self.reader.restart();
        tracing::info!(destination = %self.name, rows = done.refreshed, deleted = done.deleted,
            parked = done.parked, "snapshot: converged at one snapshot of the source");
        Ok(())
    }

    /// Copies `tables` again (see [`Replicator::resync`](crate::Replicator::resync)).
    async fn resync(&mut self, memory: &mut Memory, tables: &[String]) -> Result<()> {
        let shipped = self.shipped_tables();
        if let Some(t) = tables.iter().find(|t| !shipped.contains_key(*t)) {
            return Err(Error::Config(format!(
                "resync of `{}`: table `{t}` is not replicated to it (register its entity, and \
                 do not skip it for this destination)",
                self.name
            )));
        }
        self.still_shipping().await?;
        if !memory.installed {
            schema::install(&self.destination)
                .await
                .map_err(|e| in_destination(&self.name, e))?;
            memory.installed = true;
        }
        // The stream waits while the copy runs, so every other table stays at the
        // checkpoint: the copy converges from it.
        let base = apply::read_checkpoint(&self.destination, &self.source_id)
            .await?
            .unwrap_or_default();
        let names: Vec<&str> = tables.iter().map(String::as_str).collect();
        let txn = self
            .destination
            .begin()
            .await
            .context(|| format!("destination `{}`: starting a resync", self.name))?;
        snapshot::reset(&txn, &self.source_id, &names, true).await?;
        snapshot::set_base(&txn, &self.source_id, &base).await?;
        txn.commit()
            .await
            .context(|| format!("destination `{}`: starting a resync", self.name))?;
        tracing::info!(destination = %self.name, ?tables, "resync: starting");
        let done = match self.snapshot(memory).await {
            Ok(done) => done,
            Err(e) => {
                // The copy stays planned and the stream waits for it: the next pass resumes
                // it, and a failure there retries or halts as any other, with its error in
                // the status, until a resume after the fix.
                memory.snapshot_checked = false;
                return Err(e);
            }
        };
        // A halted destination stays halted: the copy fixed rows, not the change at fault,
        // which only a resume retries.
        let state = if memory.halted.is_some() {
            State::Halted
        } else {
            State::Idle
        };
        self.update(|s| s.state = state);
        if done { Ok(()) } else { Err(Error::Shutdown) }
    }

    /// Runs the resync asked through `ormsync_control` by request `request`, if this
    /// instance ships to the destination, and records the outcome there.
    async fn resync_asked(&mut self, memory: &mut Memory, request: i64) {
        // Another instance holds the lease: that one answers.
        if !self.lease.ensure().await.unwrap_or(false) {
            return;
        }
        let outcome = match control::resync_request(&self.source, &self.name).await {
            Ok(asked) => {
                let mut tables = asked.tables;
                if tables.is_empty() {
                    tables = self.shipped_tables().into_keys().collect();
                    tables.sort();
                }
                self.resync(memory, &tables).await
            }
            Err(e) => Err(e),
        };
        let error = match outcome {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(destination = %self.name, error = %e, "resync failed");
                Some(redact(&e.to_string()))
            }
        };
        let done = control::resync_done(&self.source, &self.name, request, error).await;
        if let Err(e) = done {
            tracing::warn!(destination = %self.name, error = %e, "cannot record a resync");
        }
    }

    /// Refreshes pending counts and raises lag alerts, at most once a second, and only
    /// every 30 s while caught up and idle: idle costs a read per poll tick and little more.
    async fn check_backlog(&mut self, memory: &mut Memory, position: &Position) {
        let since = memory.last_backlog_check.map(|t| t.elapsed());
        let idle = memory.last_backlog == Some((position.watermark, false));
        let every = if idle {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(1)
        };
        if since.is_some_and(|t| t < every) {
            return;
        }
        memory.last_backlog_check = Some(Instant::now());
        let (pending, oldest, outbox) = match progress::backlog(&self.source, position).await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(destination = %self.name, error = %e, "could not count the backlog");
                return;
            }
        };
        memory.last_backlog = Some((position.watermark, pending > 0));
        let lag = oldest.map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0);
        self.outbox_size
            .store(outbox as i64, std::sync::atomic::Ordering::Relaxed);
        let labels = [("destination", self.name.clone())];
        metrics::gauge!("ormsync_pending_changes", &labels).set(pending as f64);
        metrics::gauge!("ormsync_lag_seconds", &labels).set(lag.unwrap_or(0.0));
        self.update(|s| {
            s.pending = pending;
            s.lag_seconds = lag;
        });
        let s = &self.settings;
        let high = s.lag_rows.is_some_and(|r| pending >= r)
            || s.lag_age
                .is_some_and(|a| lag.is_some_and(|l| l >= a.as_secs_f64()));
        if high != memory.lag_high && memory.hold != Some(Hold::Disabled) {
            memory.lag_high = high;
            let kind = if high {
                AlertKind::LagHigh
            } else {
                AlertKind::LagNormal
            };
            self.alerts
                .raise(Alert::new(&self.name, kind).backlog(pending, lag));
        }
    }

    /// Records the state and last error at the source when they changed, for `ormsync
    /// status`; only the instance that ships does, so a standby never overwrites it.
    async fn publish_state(&mut self, memory: &mut Memory) {
        let Some((state, error)) = self
            .status
            .lock()
            .ok()
            .map(|s| (s.state, s.last_error.clone()))
        else {
            return;
        };
        // Idle and running alternate with every batch: both are "shipping" to a reader.
        let state = if state == State::Running {
            State::Idle
        } else {
            state
        };
        if state == State::Standby || memory.published.as_ref() == Some(&(state, error.clone())) {
            return;
        }
        match progress::record_state(
            &self.source,
            &self.name,
            &state.to_string(),
            error.as_deref(),
        )
        .await
        {
            Ok(()) => memory.published = Some((state, error)),
            Err(e) => {
                tracing::debug!(destination = %self.name, error = %e, "could not record the state at the source")
            }
        }
    }

    fn update(&self, f: impl FnOnce(&mut DestinationStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
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

fn in_destination(name: &str, e: Error) -> Error {
    match e {
        Error::Db { context, source } => Error::Db {
            context: format!("destination `{name}`: {context}"),
            source,
        },
        other => other,
    }
}
