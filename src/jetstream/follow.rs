//! The subscriber's task: copy when it must, then follow the change stream, applying each
//! run of messages in one child transaction and acknowledging it after the commit.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, context::ConsumerInfoErrorKind};
use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::{FutureExt, StreamExt};
use sea_orm::{DatabaseConnection, TransactionTrait};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::message::{self, covers, ranges};
use super::names::{self, Names};
use super::publisher::{read_hub_position, stream_error};
use super::subscriber::Settings;
use super::{converge, state};
use crate::apply::{Sink, SqlSink};
use crate::bootstrap::{self, Preparation};
use crate::change::{Batch, Change};
use crate::entity::TableSpec;
use crate::error::{DbContext, Error, Result};
use crate::outbox::dead_letters::{self, ReplayReport};
use crate::position::Position;
use crate::redact::redact;
use crate::replicator::OnPermanentError;
use crate::replicator::alert::{Alert, AlertKind, Alerts};
use crate::replicator::status::{DestinationStatus, State};

/// Messages taken into one child transaction at most. A hub that keeps up publishes a
/// message per change or few, so a child behind it catches up by taking many at once: one
/// commit for hundreds of changes rather than one for each.
const MESSAGES_PER_RUN: usize = 512;

/// Payload bytes taken into one child transaction, past which a run ends (each message
/// holds up to 256 KiB of changes). No byte limit goes with a pull: a message over it
/// (a replayed change, up to the server's `max_payload`) would never be delivered.
const BYTES_PER_RUN: usize = 8 << 20;

/// What became of a run of messages.
enum Taken {
    /// Applied: acknowledge them.
    Applied,
    /// They began past what the child holds: the consumer is removed, and the child copies
    /// the rows again when it opens the stream anew.
    Recopy,
}

/// What the application asks of a running subscriber.
pub(crate) enum Command {
    Pause,
    Resume,
    Replay(oneshot::Sender<Result<ReplayReport>>),
}

/// The subscriber's task and what it holds.
pub(crate) struct Follower {
    pub(crate) name: String,
    pub(crate) names: Names,
    pub(crate) js: jetstream::Context,
    pub(crate) db: DatabaseConnection,
    pub(crate) sink: SqlSink,
    pub(crate) tables: HashMap<String, TableSpec>,
    pub(crate) skip: HashSet<String>,
    pub(crate) policy: OnPermanentError,
    pub(crate) prepare: Option<Preparation>,
    pub(crate) settings: Settings,
    pub(crate) alerts: Alerts,
    pub(crate) status: watch::Sender<DestinationStatus>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) cancel: CancellationToken,
}

/// A child following the stream: where it stands and the consumer it reads.
struct Session {
    source: String,
    messages: pull::Stream,
    /// The position stored at the child.
    position: Position,
    /// Rows with a parked change, whose later changes park behind it.
    blocked: HashSet<(String, String)>,
    /// Messages read and not applied (the child failed): the next turn takes them first.
    held: Vec<jetstream::Message>,
    /// Right after a copy, the first message's "since" is taken, not checked: the copy
    /// holds everything before the point the stream is read from.
    trust_since: bool,
}

/// What stops the follower short of an error.
#[derive(Default)]
struct Flags {
    paused: bool,
    halted: bool,
    prepared: bool,
}

/// A run of messages read at once, as one batch for the child.
struct Run {
    batch: Batch,
    /// Parked changes replayed at the hub: applied whatever the position says.
    replays: Vec<Change>,
    pending: u64,
    newest: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether it took the "since" of its first message after a copy (done once applied).
    trusted: bool,
}

impl Follower {
    pub(crate) async fn run(mut self, disabled: bool) {
        let mut flags = Flags {
            paused: disabled,
            ..Flags::default()
        };
        let mut session: Option<Session> = None;
        let (mut failures, mut unavailable) = (0u64, false);
        // The worker's backoff: exponential with jitter, from the first delay to the most.
        let mut backoff: Option<backon::ExponentialBackoff> = None;
        while !self.cancel.is_cancelled() {
            if flags.paused || flags.halted {
                let state = if flags.halted {
                    State::Halted
                } else {
                    State::Paused
                };
                self.update(|s| s.state = state);
                tokio::select! {
                    _ = self.cancel.cancelled() => break,
                    command = self.commands.recv() => match command {
                        Some(c) => self.command(c, &mut flags, &mut session).await,
                        None => break,
                    },
                }
                continue;
            }
            match self.step(&mut session, &mut flags).await {
                Ok(()) => {
                    if failures > 0 && unavailable {
                        self.alerts
                            .raise(Alert::new(&self.name, AlertKind::Recovered));
                    }
                    (failures, unavailable) = (0, false);
                    backoff = None;
                }
                Err(e) => {
                    // The child's database failing leaves the stream as it was; a failed
                    // stream is opened again.
                    if matches!(e, Error::Stream { .. }) {
                        session = None;
                    }
                    let message = redact(&e.to_string());
                    self.update(|s| {
                        s.errors += 1;
                        s.last_error = Some(message.clone());
                    });
                    metrics::counter!("ormsync_apply_failures_total", "destination" => self.name.clone())
                        .increment(1);
                    if e.is_transient() {
                        failures += 1;
                        self.update(|s| {
                            s.state = State::Retrying;
                            s.retries += 1;
                        });
                        if failures == self.settings.unavailable_after_attempts {
                            unavailable = true;
                            self.alerts.raise(
                                Alert::new(&self.name, AlertKind::Unavailable)
                                    .error(message)
                                    .attempts(failures),
                            );
                        }
                        tracing::warn!(subscriber = %self.name, error = %redact(&e.to_string()), "subscriber failed; retrying");
                        let delay = backoff
                            .get_or_insert_with(|| {
                                ExponentialBuilder::default()
                                    .with_min_delay(self.settings.retry_min)
                                    .with_max_delay(self.settings.retry_max)
                                    .with_jitter()
                                    .without_max_times()
                                    .build()
                            })
                            .next()
                            .unwrap_or(self.settings.retry_max);
                        tokio::select! {
                            _ = self.cancel.cancelled() => break,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    } else {
                        tracing::error!(subscriber = %self.name, error = %message, "subscriber halted");
                        flags.halted = true;
                        self.alerts
                            .raise(Alert::new(&self.name, AlertKind::Halted).error(message));
                    }
                }
            }
        }
        self.update(|s| s.state = State::Stopped);
    }

    async fn command(
        &mut self,
        command: Command,
        flags: &mut Flags,
        session: &mut Option<Session>,
    ) {
        match command {
            Command::Pause => flags.paused = true,
            Command::Resume => {
                flags.paused = false;
                flags.halted = false;
            }
            Command::Replay(reply) => {
                let outcome = self.replay(session).await;
                let _ = reply.send(outcome);
            }
        }
    }

    async fn replay(&mut self, session: &mut Option<Session>) -> Result<ReplayReport> {
        let Some((source, _)) = read_hub_position(&self.js, &self.names).await? else {
            return Ok(ReplayReport::default());
        };
        let report =
            crate::replicator::replay_dead_letters(&self.db, &source, &self.name, &mut self.sink)
                .await?;
        if let Some(s) = session {
            s.blocked = dead_letters::blocked_rows(&self.db, &self.name).await?;
        }
        self.update(|s| s.dead_lettered = s.dead_lettered.saturating_sub(report.replayed));
        Ok(report)
    }

    fn update(&self, f: impl FnOnce(&mut DestinationStatus)) {
        self.status.send_modify(f);
    }

    /// One turn: open the stream if needed, then wait for messages (or a command) and
    /// apply what came.
    async fn step(&mut self, session: &mut Option<Session>, flags: &mut Flags) -> Result<()> {
        if !flags.prepared {
            if let Some(how) = &self.prepare {
                let specs: Vec<&TableSpec> = self
                    .tables
                    .iter()
                    .filter(|(t, _)| !self.skip.contains(*t))
                    .map(|(_, s)| s)
                    .collect();
                bootstrap::prepare_tables(&self.db, &self.name, &specs, how).await?;
            }
            flags.prepared = true;
        }
        if session.is_none() {
            match self.open().await? {
                Some(s) => *session = Some(s),
                None => {
                    // The hub has not started publishing: nothing to follow yet.
                    tokio::select! {
                        _ = self.cancel.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    return Ok(());
                }
            }
        }
        let Some(s) = session.as_mut() else {
            return Ok(());
        };
        if !s.held.is_empty() {
            let held = std::mem::take(&mut s.held);
            if self.take(s, held).await? {
                *session = None;
            }
            return Ok(());
        }
        let first = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Ok(()),
            command = self.commands.recv() => {
                match command {
                    Some(c) => self.command(c, flags, session).await,
                    None => self.cancel.cancel(),
                }
                return Ok(());
            }
            next = s.messages.next() => next,
        };
        let Some(first) = first else {
            return Err(stream_error(
                &self.names.stream,
                "reading the change stream",
                "the consumer's message stream ended",
                true,
            ));
        };
        let mut messages =
            vec![first.map_err(|e| {
                stream_error(&self.names.stream, "reading the change stream", e, true)
            })?];
        // What else is already here joins the same child transaction.
        let mut bytes = messages[0].payload.len();
        while messages.len() < MESSAGES_PER_RUN && bytes < BYTES_PER_RUN {
            match s.messages.next().now_or_never() {
                Some(Some(Ok(m))) => {
                    bytes += m.payload.len();
                    messages.push(m);
                }
                Some(Some(Err(e))) => {
                    return Err(stream_error(
                        &self.names.stream,
                        "reading the change stream",
                        e,
                        true,
                    ));
                }
                _ => break,
            }
        }
        if self.take(s, messages).await? {
            *session = None;
        }
        Ok(())
    }

    /// Finds the hub's source and the child's place in the stream; copies the current
    /// rows first when the child has never applied this stream, or its consumer is gone.
    async fn open(&mut self) -> Result<Option<Session>> {
        let Some((source, _)) = read_hub_position(&self.js, &self.names).await? else {
            return Ok(None);
        };
        let stored = crate::apply::read_checkpoint(&self.db, &source).await?;
        let stream =
            self.js.get_stream(&self.names.stream).await.map_err(|e| {
                stream_error(&self.names.stream, "opening the change stream", e, true)
            })?;
        let consumer = match stream.consumer_info(&self.name).await {
            Ok(_) => Some(
                stream
                    .get_consumer::<pull::Config>(&self.name)
                    .await
                    .map_err(|e| {
                        stream_error(&self.names.stream, "opening the consumer", e, true)
                    })?,
            ),
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => None,
            Err(e) => {
                return Err(stream_error(
                    &self.names.stream,
                    "reading the consumer",
                    e,
                    true,
                ));
            }
        };
        let (consumer, trust_since) = match (stored.is_some(), consumer) {
            (true, Some(c)) => (c, false),
            _ => (self.copy(&source, &stream).await?, true),
        };
        let messages = self.messages(&consumer).await?;
        let position = self.sink.position(&source).await?;
        let pending = consumer.cached_info().num_pending;
        self.update(|s| {
            s.watermark = position.watermark;
            s.frontier = position.frontier();
            s.pending = pending;
            s.state = if pending == 0 {
                State::Idle
            } else {
                State::Running
            };
        });
        Ok(Some(Session {
            source,
            messages,
            position,
            blocked: dead_letters::blocked_rows(&self.db, &self.name).await?,
            held: Vec::new(),
            trust_since,
        }))
    }

    /// The consumer's messages, as they come.
    async fn messages(
        &self,
        consumer: &jetstream::consumer::Consumer<pull::Config>,
    ) -> Result<pull::Stream> {
        consumer
            .stream()
            .max_messages_per_batch(MESSAGES_PER_RUN)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| stream_error(&self.names.stream, "reading the change stream", e, true))
    }

    /// Copies the hub's current rows from the state stream, then (re)creates the child's
    /// consumer at the change stream's end as it was before the copy.
    async fn copy(
        &mut self,
        source: &str,
        stream: &jetstream::stream::Stream,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>> {
        self.update(|s| s.state = State::Copying);
        match stream.delete_consumer(&self.name).await {
            Ok(_) => {}
            Err(e) if e.to_string().contains("not found") => {}
            Err(e) => {
                return Err(stream_error(
                    &self.names.stream,
                    "removing the old consumer",
                    e,
                    true,
                ));
            }
        }
        let tables: Vec<&TableSpec> = self
            .tables
            .values()
            .filter(|s| !self.skip.contains(&s.table))
            .collect();
        // Until the converge is written, the child's position says nothing it holds, so a
        // copy cut short (a crash, a halt) starts over rather than skip what it had not
        // written.
        forget_position(&self.db, source).await?;
        let copied = state::copy_rows(
            &self.js,
            &self.names,
            source,
            &tables,
            self.settings.copy_chunk,
            &mut self.sink,
        )
        .await?;
        let rows = copied.rows;
        let cut = converge::to_cut(
            &self.js,
            &self.names,
            &self.name,
            copied,
            &self.tables,
            &self.skip,
        )
        .await?;
        let (end, written) = (cut.end, cut.changes.len());
        let mut blocked = dead_letters::blocked_rows(&self.db, &self.name).await?;
        let mut changes = cut.changes.into_iter().peekable();
        while changes.peek().is_some() {
            let batch = Batch {
                changes: changes
                    .by_ref()
                    .take(self.settings.copy_chunk.max(1))
                    .collect(),
                restates: true,
                ..Batch::default()
            };
            self.apply(source, &mut blocked, batch).await?;
        }
        // The rows hold every change up to the cut: the child's position says so, so it
        // shows where it stands, and a restart does not copy again.
        let done = Batch {
            skipped: ranges(&cut.position),
            ..Batch::default()
        };
        let position = self.sink.apply(source, &done).await?;
        self.update(|s| {
            s.watermark = position.watermark;
            s.frontier = position.frontier();
            s.state = State::Idle;
        });
        tracing::info!(subscriber = %self.name, rows, converged = written, from = end + 1, "copied the hub's rows; streaming");
        stream
            .create_consumer(pull::Config {
                durable_name: Some(self.name.clone()),
                description: Some("ormsync subscriber".into()),
                filter_subject: self.names.change_subjects(),
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: end + 1,
                },
                ack_policy: jetstream::consumer::AckPolicy::All,
                ack_wait: Duration::from_secs(60),
                max_deliver: -1,
                ..Default::default()
            })
            .await
            .map_err(|e| stream_error(&self.names.stream, "creating the consumer", e, true))
    }

    /// Applies `messages` in one child transaction and acknowledges them after it commits.
    ///
    /// Messages it could not apply stay with the session, to be tried again first: handed
    /// back to the stream, they would come again only once their acknowledgement is due.
    ///
    /// Returns whether the session must open again (to copy).
    async fn take(&mut self, s: &mut Session, messages: Vec<jetstream::Message>) -> Result<bool> {
        match self.apply_run(s, &messages).await {
            // Their consumer is gone: the session opens again and copies.
            Ok(Taken::Recopy) => Ok(true),
            Ok(Taken::Applied) => {
                if let Some(last) = messages.last() {
                    // With "ack all", the last acknowledges every message before it.
                    last.ack().await.map_err(|e| {
                        stream_error(&self.names.stream, "acknowledging messages", e, true)
                    })?;
                }
                Ok(false)
            }
            Err(e) => {
                s.held = messages;
                Err(e)
            }
        }
    }

    async fn apply_run(
        &mut self,
        s: &mut Session,
        messages: &[jetstream::Message],
    ) -> Result<Taken> {
        let run = match self.read_run(s, messages)? {
            Ok(run) => run,
            Err(missing) => {
                // Messages the child never saw are gone from the stream: copy again rather
                // than go on with a gap.
                tracing::warn!(subscriber = %self.name, missing, "fell behind what the stream retains; copying the hub's rows again");
                self.alerts.raise(Alert::new(
                    &self.name,
                    AlertKind::RetentionDropped { rows: missing },
                ));
                // The copy runs when the session opens again, once this consumer's message
                // stream is gone: left running, it would go on asking for messages by the
                // consumer's name, and take those of the new one the copy creates.
                let stream = self.js.get_stream(&self.names.stream).await.map_err(|e| {
                    stream_error(&self.names.stream, "opening the change stream", e, true)
                })?;
                if let Err(e) = stream.delete_consumer(&self.name).await
                    && !e.to_string().contains("not found")
                {
                    return Err(stream_error(
                        &self.names.stream,
                        "removing the consumer",
                        e,
                        true,
                    ));
                }
                return Ok(Taken::Recopy);
            }
        };
        self.update(|st| st.state = State::Running);
        let applied = run.batch.changes.len() as u64;
        let started = std::time::Instant::now();
        if !run.batch.is_empty() {
            s.position = self.apply(&s.source, &mut s.blocked, run.batch).await?;
        }
        if !run.replays.is_empty() {
            self.sink.replay(&s.source, &run.replays).await?;
        }
        if run.trusted {
            s.trust_since = false;
        }
        let (position, pending) = (s.position.clone(), run.pending);
        let lag = run
            .newest
            .map(|t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0);
        // The replicator's metrics, under the child's name: one dashboard serves both.
        let labels = [("destination", self.name.clone())];
        metrics::counter!("ormsync_changes_applied_total", &labels).increment(applied);
        metrics::histogram!("ormsync_batch_size", &labels).record(applied as f64);
        metrics::histogram!("ormsync_batch_duration_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        metrics::gauge!("ormsync_pending_changes", &labels).set(pending as f64);
        metrics::gauge!("ormsync_lag_seconds", &labels).set(if pending == 0 {
            0.0
        } else {
            lag.unwrap_or(0.0)
        });
        self.update(|st| {
            st.watermark = position.watermark;
            st.frontier = position.frontier();
            st.pending = pending;
            st.applied += applied;
            st.lag_seconds = if pending == 0 { Some(0.0) } else { lag };
            st.last_success = Some(chrono::Utc::now());
            st.last_error = None;
            st.state = if pending == 0 {
                State::Idle
            } else {
                State::Running
            };
        });
        Ok(Taken::Applied)
    }

    /// Decodes `messages` into one batch; `Err(missing)` (inside `Ok`) when one begins
    /// past what the child holds.
    fn read_run(
        &self,
        s: &Session,
        messages: &[jetstream::Message],
    ) -> Result<std::result::Result<Run, u64>> {
        let mut local = s.position.clone();
        let mut trust = s.trust_since;
        let mut run = Run {
            batch: Batch::default(),
            replays: Vec::new(),
            pending: 0,
            newest: None,
            trusted: false,
        };
        for m in messages {
            let (seq, pending) = match m.info() {
                Ok(info) => (info.stream_sequence, info.pending),
                Err(e) => {
                    return Err(stream_error(
                        &self.names.stream,
                        "reading a message",
                        e,
                        false,
                    ));
                }
            };
            let header = |name: &str| {
                m.headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_string())
            };
            let since = header(names::SINCE).and_then(|h| message::parse_position(&h));
            let after = header(names::POSITION).and_then(|h| message::parse_position(&h));
            if let Some(since) = since {
                if trust {
                    run.batch.skipped.extend(ranges(&since));
                    local.merge(&since);
                    trust = false;
                    run.trusted = true;
                } else if !covers(&local, &since) {
                    let missing = ranges(&since)
                        .into_iter()
                        .map(|(lo, hi)| {
                            let lo = lo.max(local.watermark + 1);
                            local
                                .above
                                .missing_in(lo, hi)
                                .iter()
                                .map(|&(a, b)| (b - a + 1) as u64)
                                .sum::<u64>()
                        })
                        .sum();
                    return Ok(Err(missing));
                }
            }
            let replay = header(names::REPLAY).is_some();
            for change in message::decode_all(&m.payload, &self.names.stream, seq)? {
                run.newest = change.created_at.or(run.newest);
                if replay {
                    if self.tables.contains_key(&change.table) && !self.skip.contains(&change.table)
                    {
                        run.replays.push(change);
                    }
                    continue;
                }
                if local.contains(change.id) {
                    continue;
                }
                local.mark(change.id, change.id);
                if self.skip.contains(&change.table) {
                    run.batch.skipped.push((change.id, change.id));
                } else if !self.tables.contains_key(&change.table) {
                    return Err(Error::UnknownTable {
                        destination: self.name.clone(),
                        table: change.table,
                        id: change.id,
                    });
                } else {
                    run.batch.changes.push(change);
                }
            }
            if let Some(after) = after {
                run.batch.skipped.extend(ranges(&after));
                local.merge(&after);
            }
            run.pending = pending;
        }
        Ok(Ok(run))
    }

    /// Applies `batch`, parking a change the child refuses for good under
    /// [`OnPermanentError::DeadLetter`] (and later changes of its row behind it).
    async fn apply(
        &mut self,
        source: &str,
        blocked: &mut HashSet<(String, String)>,
        mut batch: Batch,
    ) -> Result<Position> {
        self.park_blocked(blocked, &mut batch).await?;
        loop {
            let error = match self.sink.apply(source, &batch).await {
                Ok(position) => return Ok(position),
                Err(e) => e,
            };
            let at_fault = error
                .change_id()
                .filter(|_| !error.is_transient() && self.policy == OnPermanentError::DeadLetter)
                .and_then(|id| batch.changes.iter().position(|c| c.id == id));
            let Some(i) = at_fault else {
                return Err(error);
            };
            let change = batch.changes.remove(i);
            dead_letters::park(&self.db, &self.name, &change, &redact(&error.to_string())).await?;
            batch.skipped.push((change.id, change.id));
            blocked.insert((change.table.clone(), change.key.to_json()));
            self.update(|st| st.dead_lettered += 1);
            self.alerts.raise(
                Alert::new(
                    &self.name,
                    AlertKind::DeadLettered {
                        outbox_id: change.id,
                    },
                )
                .error(redact(&error.to_string())),
            );
            self.park_blocked(blocked, &mut batch).await?;
        }
    }

    /// Parks the changes of `batch` whose row has a parked change, behind it.
    async fn park_blocked(
        &mut self,
        blocked: &HashSet<(String, String)>,
        batch: &mut Batch,
    ) -> Result<()> {
        if blocked.is_empty() {
            return Ok(());
        }
        let mut keep = Vec::with_capacity(batch.changes.len());
        for change in std::mem::take(&mut batch.changes) {
            if blocked.contains(&(change.table.clone(), change.key.to_json())) {
                dead_letters::park(
                    &self.db,
                    &self.name,
                    &change,
                    "parked behind an earlier change of the same row",
                )
                .await?;
                batch.skipped.push((change.id, change.id));
                self.update(|st| st.dead_lettered += 1);
            } else {
                keep.push(change);
            }
        }
        batch.changes = keep;
        Ok(())
    }
}

/// Sets the child's position for `source` back to nothing.
async fn forget_position(db: &DatabaseConnection, source: &str) -> Result<()> {
    let txn = db
        .begin()
        .await
        .context(|| "forgetting the position before a copy".into())?;
    crate::apply::lock_checkpoint(&txn, source).await?;
    crate::apply::store_checkpoint(&txn, source, &Position::default()).await?;
    txn.commit()
        .await
        .context(|| "forgetting the position before a copy".into())
}
