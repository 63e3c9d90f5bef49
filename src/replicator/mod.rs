//! The replicator: one worker per destination shipping the source's outbox.

pub(crate) mod alert;
mod builder;
mod control;
mod destination;
mod lease;
mod retention;
mod schedule;
pub(crate) mod status;
mod wake;
mod worker;

pub use worker::parked::replay as replay_dead_letters;

pub use alert::{Alert, AlertKind};
pub use builder::ReplicatorBuilder;
pub use destination::{Destination, OnPermanentError};
pub use retention::RetentionPolicy;
pub use schedule::Schedule;
pub use status::{DestinationStatus, State, Status};
pub use wake::notify_replicators;
pub use worker::ReplayReport;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::apply::{self, SharedSink, Sink, SqlSink};
use crate::bootstrap::Preparation;
use crate::entity::TableSpec;
use crate::entity::ddl::TableDef;
use crate::error::{DbContext, Error, Result};
use crate::outbox::dead_letters::{self, DeadLetter};
use crate::outbox::retention as outbox_retention;
use crate::outbox::{OutboxReader, progress};
use crate::sql_text::marks;
use alert::Alerts;
use lease::{HeldUntil, Lease};
use worker::{Command, CopyTarget, Settings, Worker};

/// A running replicator: ships every captured change of the source to each destination.
///
/// Made by [`Replicator::builder`]. Each destination has its own worker, which polls the
/// outbox, applies batches in transactions that also record its position, and retries
/// with backoff when anything fails. Several instances (one per copy of the application)
/// may run on one source: a lease per destination makes one of them ship.
///
/// Dropping the handle stops the workers after the batch each has in flight, without
/// waiting; call [`shutdown`](Replicator::shutdown) to wait for that and release the leases.
///
/// # Examples
///
/// ```no_run
/// # mod customers {
/// #     use sea_orm::entity::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
/// #     #[sea_orm(table_name = "customers")]
/// #     pub struct Model { #[sea_orm(primary_key)] pub id: i64, pub name: String }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// # }
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use ormsync::{Destination, Replicator};
///
/// let source = sea_orm::Database::connect("postgres://app@primary/app").await?;
/// let backup = sea_orm::Database::connect("postgres://app@backup/app").await?;
/// let replicator = Replicator::builder(source)
///     .entity::<customers::Entity>()
///     .destination(Destination::new("backup", backup))
///     .on_alert(|alert| tracing::warn!(%alert))
///     .start()
///     .await?;
/// replicator.sync_now().await?;
/// println!("{}", replicator.status());
/// replicator.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Replicator {
    shared: Arc<Shared>,
    workers: Mutex<Vec<WorkerHandle>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What every worker of a replicator shares, and what a worker added later needs.
pub(crate) struct Shared {
    source: DatabaseConnection,
    source_id: String,
    instance: String,
    tables: Arc<HashMap<String, TableSpec>>,
    defs: Arc<HashMap<String, TableDef>>,
    settings: Settings,
    alerts: Alerts,
    batch_size: u64,
    gap_timeout: Duration,
    notified: Option<watch::Receiver<u64>>,
    outbox_size: Arc<AtomicI64>,
    cancel: CancellationToken,
}

impl Shared {
    /// Registers `d` at the source and starts its worker.
    async fn spawn(&self, d: Destination) -> Result<WorkerHandle> {
        if d.name == builder::RETENTION_LEASE {
            return Err(Error::Config(format!("`{}` is a reserved name", d.name)));
        }
        if let Some(why) = d.sink_refusal() {
            return Err(Error::Config(why));
        }
        let mut rules = d.rules.clone();
        rules.specs = self.tables.as_ref().clone();
        rules.validate(&d.name)?;
        let shared_rules = Arc::new(rules.clone());
        let on_conflict = rules
            .alert_conflicts
            .then(|| self.alerts.on_conflict(&d.name));
        progress::register(&self.source, &d.name).await?;
        let (status, _) = watch::channel(status::DestinationStatus::new(&d.name));
        let (tx, rx) = mpsc::channel(8);
        let cancel = self.cancel.child_token();
        let lease = Lease::new(
            self.source.clone(),
            d.name.clone(),
            self.instance.clone(),
            self.settings.lease_ttl,
        );
        let held_until = lease.held_until();
        let worker = Worker {
            name: d.name.clone(),
            source: self.source.clone(),
            source_id: self.source_id.clone(),
            reader: OutboxReader::new(self.source.clone(), self.batch_size, self.gap_timeout),
            sink: match &d.sink {
                Some(own) => Box::new(own.clone()),
                None => Box::new({
                    let sink = SqlSink::new(d.name.clone(), d.db.clone())
                        .with_rules(rules, on_conflict)
                        .connections(d.apply_connections);
                    if d.evolve_schema {
                        sink.evolving(self.defs.clone())
                    } else {
                        sink
                    }
                }),
            },
            tables: self.tables.clone(),
            skip: d.skip.clone(),
            policy: d.on_permanent_error,
            settings: self.settings.clone(),
            alerts: self.alerts.clone(),
            lease,
            control: control::ControlWatch::new(
                self.source.clone(),
                &d.name,
                self.settings.poll_interval,
            ),
            status: status.clone(),
            schedule: d.schedule.clone(),
            notified: self.notified.clone(),
            outbox_size: self.outbox_size.clone(),
            requests: rx,
            cancel: cancel.clone(),
            target: CopyTarget {
                db: d.db.clone(),
                initial_snapshot: d.initial_snapshot,
                rules: shared_rules,
                chunk_rows: d.chunk_rows,
                copies: d.sink.is_none(),
                prepare: (d.create_tables || d.evolve_schema).then(|| Preparation {
                    defs: self.defs.clone(),
                    create: d.create_tables,
                    evolve: d.evolve_schema,
                }),
            },
        };
        tracing::info!(destination = %d.name, instance = %self.instance, "starting replication worker");
        Ok(WorkerHandle {
            initial_snapshot: d.initial_snapshot,
            skip: d.skip.clone(),
            name: d.name,
            destination: d.db,
            sink: d.sink,
            status,
            held_until,
            requests: tx,
            cancel,
            task: Some(tokio::spawn(worker.run(d.disabled))),
        })
    }
}

struct WorkerHandle {
    name: String,
    destination: DatabaseConnection,
    /// The sink it was given, which stores its position instead of the connection.
    sink: Option<SharedSink>,
    /// Tables this destination does not receive.
    skip: HashSet<String>,
    /// Whether it is copied before it streams, when it has no checkpoint.
    initial_snapshot: bool,
    status: watch::Sender<status::DestinationStatus>,
    /// The worker's lease, for the state its status shows.
    held_until: HeldUntil,
    requests: mpsc::Sender<Command>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Replicator {
    /// Starts configuring a replicator of `source`.
    pub fn builder(source: DatabaseConnection) -> ReplicatorBuilder {
        ReplicatorBuilder::new(source)
    }

    /// The source's node id: the key of its checkpoints at every destination.
    pub fn source_id(&self) -> &str {
        &self.shared.source_id
    }

    /// This instance's name in `ormsync_leases`.
    pub fn instance_id(&self) -> &str {
        &self.shared.instance
    }

    /// The names of the destinations, in the order they were added.
    pub fn destinations(&self) -> Vec<String> {
        self.lock_workers().iter().map(|w| w.name.clone()).collect()
    }

    /// Runs a pass on every destination now and returns when each has applied what the
    /// outbox held at the call (changes of transactions still open are not waited for).
    /// A scheduled destination ships at once too.
    ///
    /// Where another instance ships (this one stands by), it waits for that instance's
    /// checkpoint to cover the same changes instead, as [`drain`](Self::drain) does, for
    /// up to three lease lifetimes and ten seconds.
    ///
    /// # Errors
    ///
    /// The first destination's error, if any failed (each keeps retrying on its own);
    /// [`Error::Standby`] where another instance ships and has not applied those changes
    /// within the bound; [`Error::NotShipping`] for a paused or disabled one;
    /// [`Error::Shutdown`] after shutdown.
    pub async fn sync_now(&self) -> Result<()> {
        let names = self.destinations();
        let target = outbox_retention::last_id(&self.shared.source)
            .await?
            .unwrap_or(0);
        let syncs = names.iter().map(|name| self.sync_to(name, target));
        let mut first = Ok(());
        for r in futures_util::future::join_all(syncs).await {
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// Like [`sync_now`](Self::sync_now), for one destination.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDestination`], the destination's error, or [`Error::Shutdown`].
    pub async fn sync_destination(&self, name: &str) -> Result<()> {
        let target = outbox_retention::last_id(&self.shared.source)
            .await?
            .unwrap_or(0);
        self.sync_to(name, target).await
    }

    /// Asks `name`'s worker for a pass; on standby, waits for the shipping instance to
    /// apply every change up to `target`.
    async fn sync_to(&self, name: &str, target: i64) -> Result<()> {
        match self.ask(name, Command::SyncNow).await {
            Err(standby @ Error::Standby { .. }) => {
                let bound = self.shared.settings.lease_ttl * 3 + Duration::from_secs(10);
                let deadline = tokio::time::Instant::now() + bound;
                match self.wait_applied(name, target, Some(deadline)).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(standby),
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    /// Returns once `name` has applied every change committed before the call: for a
    /// planned switchover to a backup, stop the writers, `drain`, then switch.
    ///
    /// Works on any instance, whether it ships to that destination or stands by: it reads
    /// the destination's checkpoint. Transient failures are waited out.
    ///
    /// # Errors
    ///
    /// [`Error::Halted`] or another error that needs a person; [`Error::Shutdown`].
    pub async fn drain(&self, name: &str) -> Result<()> {
        let target = outbox_retention::last_id(&self.shared.source)
            .await?
            .unwrap_or(0);
        self.wait_applied(name, target, None).await.map(|_| ())
    }

    /// Waits until `name`'s checkpoint covers every change up to `target`, asking for
    /// passes meanwhile (one of which may follow a takeover by this instance); returns
    /// `false` when `deadline` passes first.
    async fn wait_applied(
        &self,
        name: &str,
        target: i64,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<bool> {
        let (destination, initial_snapshot, mut sink) = self.handle(name, |w| {
            (w.destination.clone(), w.initial_snapshot, w.sink.clone())
        })?;
        // The checkpoint table may not exist yet if no batch was ever applied there.
        crate::schema::install(&destination).await?;
        let mut pause = Duration::from_millis(10);
        loop {
            let position = match &mut sink {
                Some(sink) => Some(sink.position(&self.shared.source_id).await?),
                None => apply::read_checkpoint(&destination, &self.shared.source_id).await?,
            };
            // A copy still to come or under way has not applied what the outbox lacks.
            let copied = (position.is_some() || !initial_snapshot)
                && crate::snapshot::progress(&destination, &self.shared.source_id)
                    .await?
                    .iter()
                    .all(|c| c.done);
            if copied && self.covers(&position.unwrap_or_default(), target).await? {
                return Ok(true);
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Ok(false);
            }
            match self.ask(name, Command::SyncNow).await {
                Ok(()) => {}
                Err(e) if e.is_transient() => {}
                Err(e) => return Err(e),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Whether every outbox row up to `target` is applied according to `position`.
    async fn covers(&self, position: &crate::position::Position, target: i64) -> Result<bool> {
        if position.watermark >= target {
            return Ok(true);
        }
        // Every id up to the target that is still missing from the position must be
        // absent from the outbox (a hole, or deleted by retention).
        let source = &self.shared.source;
        let backend = source.get_database_backend();
        for (lo, hi) in position.above.missing_in(position.watermark + 1, target) {
            let row = source
                .query_one_raw(Statement::from_sql_and_values(
                    backend,
                    marks(
                        backend,
                        "SELECT COUNT(*) FROM ormsync_outbox WHERE id >= ? AND id <= ?",
                    ),
                    [lo.into(), hi.into()],
                ))
                .await
                .context(|| "counting the changes still to drain".into())?;
            if row
                .and_then(|r| r.try_get_by_index::<i64>(0).ok())
                .unwrap_or(0)
                > 0
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Takes a halted or paused destination out of its stop; a halted one retries the
    /// change it stopped on. Clears the pause recorded at the source too.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDestination`] or [`Error::Shutdown`].
    pub async fn resume(&self, name: &str) -> Result<()> {
        self.ask(name, Command::Resume).await
    }

    /// Stops shipping to `name` for a while. It keeps its lease (no other instance takes
    /// over), its pending count and lag stay up to date in [`status`](Self::status), and
    /// lag alerts still fire. [`resume`](Self::resume) ships again.
    ///
    /// The pause is recorded at the source (`ormsync_control`): it holds for every
    /// instance and across restarts until resumed, here, by another instance or by
    /// `ormsync resume` (see [`outbox::control`](crate::outbox::control)). A drain under
    /// way stops after the batch at hand; the call returns once it has.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDestination`] or [`Error::Shutdown`].
    pub async fn pause(&self, name: &str) -> Result<()> {
        self.handle(name, |_| ())?;
        // Recorded before the worker is asked: it reads its commands between passes, but
        // `ormsync_control` between batches, so a long drain stops after the batch at hand
        // instead of the backlog.
        crate::outbox::control::pause(&self.shared.source, name).await?;
        self.ask(name, Command::Pause).await
    }

    /// Stops shipping to `name` until [`enable`](Self::enable). Its checkpoint stays, so
    /// enabling it resumes where it stopped, as long as retention has not dropped its
    /// backlog: past the maximum retention it does, after an alert.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDestination`] or [`Error::Shutdown`].
    pub async fn disable(&self, name: &str) -> Result<()> {
        self.ask(name, Command::Disable).await
    }

    /// Ships to a disabled destination again.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDestination`] or [`Error::Shutdown`].
    pub async fn enable(&self, name: &str) -> Result<()> {
        self.ask(name, Command::Enable).await
    }

    /// Adds a destination while the others keep running.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when a destination of that name exists; [`Error::Db`] when it
    /// cannot be registered at the source.
    pub async fn add_destination(&self, destination: Destination) -> Result<()> {
        if self
            .lock_workers()
            .iter()
            .any(|w| w.name == destination.name)
        {
            return Err(Error::Config(format!(
                "a destination named `{}` exists already",
                destination.name
            )));
        }
        let handle = self.shared.spawn(destination).await?;
        self.lock_workers().push(handle);
        Ok(())
    }

    /// Removes a destination while the others keep running: its worker finishes the batch
    /// in flight and stops, and its progress is forgotten at the source so it no longer
    /// holds back retention. Its checkpoint at the destination stays; adding it again
    /// resumes from there if the outbox still holds what it missed.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDestination`]; [`Error::Db`] when the source cannot be written.
    pub async fn remove_destination(&self, name: &str) -> Result<()> {
        let handle = {
            let mut workers = self.lock_workers();
            let i = workers
                .iter()
                .position(|w| w.name == name)
                .ok_or_else(|| Error::UnknownDestination(name.to_string()))?;
            workers.remove(i)
        };
        stop(handle).await;
        progress::forget(&self.shared.source, name).await
    }

    /// The changes `name` refused and parked (policy
    /// [`OnPermanentError::DeadLetter`]), oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Db`] when the source cannot be read.
    pub async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>> {
        dead_letters::list(&self.shared.source, name).await
    }

    /// Applies `name`'s parked changes again, row by row in outbox order; those that
    /// apply leave `ormsync_dead_letters`, the others stay with their new error.
    ///
    /// # Errors
    ///
    /// [`Error::Db`] when the dead letters cannot be read or removed.
    pub async fn replay_dead_letters(&self, name: &str) -> Result<ReplayReport> {
        self.ask(name, Command::Replay).await
    }

    /// Drops parked changes of `name` without applying them; returns how many went.
    ///
    /// # Errors
    ///
    /// [`Error::Db`] when they cannot be removed.
    pub async fn discard_dead_letters(&self, name: &str, outbox_ids: &[i64]) -> Result<u64> {
        let ids = outbox_ids.to_vec();
        self.ask(name, move |tx| Command::Discard(ids, tx)).await
    }

    /// Copies `tables` of destination `name` again from the source, while changes keep
    /// streaming, and returns when the copy is done: for a destination that drifted, was
    /// restored from an old backup, or lost rows to retention.
    ///
    /// Each table is copied in key order, a chunk at a time, the same way as the initial
    /// snapshot (see [`crate::snapshot`]): every chunk is read fresh from the source inside
    /// a destination transaction that holds the checkpoint's lock, so it serializes with
    /// the batches; rows the destination holds in the chunk's key range that the source
    /// lacks are deleted. Its progress shows in
    /// [`DestinationStatus::snapshot`]; if interrupted, the copy resumes from its last
    /// chunk when the destination's worker next starts. Tables are copied parents first.
    ///
    /// A delete the destination refuses because other rows still reference the row (a
    /// foreign key from a table not resynced) stops the resync with that error: resync the
    /// referencing table too.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a table not replicated to `name`; [`Error::Standby`] when
    /// another instance ships to it (call it there), [`Error::LeaseLost`] when one took it
    /// over while this one was about to copy; [`Error::Db`] when a chunk fails;
    /// [`Error::UnknownDestination`]; [`Error::Shutdown`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(replicator: ormsync::Replicator) -> ormsync::Result<()> {
    /// replicator.resync("backup", &["customers", "orders"]).await?;
    /// println!("{}", replicator.status());
    /// # Ok(()) }
    /// ```
    pub async fn resync(&self, name: &str, tables: &[&str]) -> Result<()> {
        let tables: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
        self.ask(name, move |tx| Command::Resync(tables, tx)).await
    }

    /// Creates the replicated tables destination `name` lacks, from the entity definitions,
    /// parents first, and checks those it has: the same as
    /// [`Destination::create_tables`] does when a worker starts, on request. Returns the
    /// tables created.
    ///
    /// # Errors
    ///
    /// [`Error::SchemaMismatch`] for a table that exists with other columns (nothing is
    /// altered); [`Error::Db`] when a statement fails; [`Error::UnknownDestination`];
    /// [`Error::Config`] for a destination with a [sink of its own](Destination::with_sink).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(replicator: ormsync::Replicator) -> ormsync::Result<()> {
    /// let created = replicator.create_tables("backup").await?;
    /// println!("created {created:?}");
    /// # Ok(()) }
    /// ```
    pub async fn create_tables(&self, name: &str) -> Result<Vec<String>> {
        Ok(self.prepare(name, true, false).await?.created)
    }

    /// Adds to destination `name`'s tables the columns their entities ship and they lack,
    /// as [`Destination::evolve_schema`] does when a worker starts, on request, whether or
    /// not the destination evolves by itself. Returns the columns added, as (table,
    /// column). Tables the destination lacks are left to [`create_tables`](Self::create_tables).
    ///
    /// # Errors
    ///
    /// [`Error::SchemaEvolution`] for a difference evolving does not change (nothing is
    /// altered); [`Error::Db`] when a statement fails; [`Error::UnknownDestination`];
    /// [`Error::Config`] for a destination with a [sink of its own](Destination::with_sink).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(replicator: ormsync::Replicator) -> ormsync::Result<()> {
    /// for (table, column) in replicator.evolve_schema("backup").await? {
    ///     println!("added {table}.{column}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn evolve_schema(&self, name: &str) -> Result<Vec<(String, String)>> {
        Ok(self.prepare(name, false, true).await?.added)
    }

    /// Creates the tables destination `name` lacks (`create`) or adds the columns they
    /// lack (`evolve`), as a worker does when it starts.
    async fn prepare(
        &self,
        name: &str,
        create: bool,
        evolve: bool,
    ) -> Result<crate::bootstrap::Prepared> {
        let (db, skip) = self.tables_of(name)?;
        let specs: Vec<&TableSpec> = self
            .shared
            .tables
            .values()
            .filter(|s| !skip.contains(&s.table))
            .collect();
        let how = Preparation {
            defs: self.shared.defs.clone(),
            create,
            evolve,
        };
        crate::bootstrap::prepare_tables(&db, name, &specs, &how).await
    }

    /// `name`'s connection and the tables it skips, for statements on its tables; a
    /// destination applying through a sink of its own has none there.
    fn tables_of(&self, name: &str) -> Result<(DatabaseConnection, HashSet<String>)> {
        let (db, skip, own_sink) = self.handle(name, |w| {
            (w.destination.clone(), w.skip.clone(), w.sink.is_some())
        })?;
        if own_sink {
            return Err(Error::Config(format!(
                "destination `{name}` applies through a sink of its own: its connection holds \
                 none of the replicated tables"
            )));
        }
        Ok((db, skip))
    }

    /// Sends `name`'s worker a command and waits for its answer.
    async fn ask<T>(
        &self,
        name: &str,
        command: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
    ) -> Result<T> {
        let requests = self.handle(name, |w| w.requests.clone())?;
        let (tx, rx) = oneshot::channel();
        requests
            .send(command(tx))
            .await
            .map_err(|_| Error::Shutdown)?;
        rx.await.map_err(|_| Error::Shutdown)?
    }

    fn handle<T>(&self, name: &str, f: impl FnOnce(&WorkerHandle) -> T) -> Result<T> {
        self.lock_workers()
            .iter()
            .find(|w| w.name == name)
            .map(f)
            .ok_or_else(|| Error::UnknownDestination(name.to_string()))
    }

    fn lock_workers(&self) -> std::sync::MutexGuard<'_, Vec<WorkerHandle>> {
        // A worker list is never left half-changed, so a poisoned lock is still usable.
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Each destination's state, position and counters, and the outbox's size.
    pub fn status(&self) -> Status {
        Status {
            outbox_size: self.shared.outbox_size.load(Ordering::Relaxed).max(0) as u64,
            destinations: self
                .lock_workers()
                .iter()
                .map(|w| {
                    let mut s = w.status.borrow().clone();
                    // A worker held up past its lease has not seen the takeover yet: it
                    // no longer ships, whatever it last wrote.
                    if matches!(s.state, State::Running | State::Idle | State::Retrying)
                        && w.held_until.lapsed()
                    {
                        s.state = State::Standby;
                    }
                    s
                })
                .collect(),
        }
    }

    /// Each change of destination `name`'s status as its worker publishes it: to wait for
    /// a state, a position or a counter without polling [`status`](Self::status).
    ///
    /// The receiver sees the latest status, not every step between; it sees the worker's
    /// own view, so unlike [`status`](Self::status) it does not show a worker held up past
    /// its lease as on standby. It ends (`changed` fails) once the worker is removed or the
    /// replicator is shut down, after the status shows [`State::Stopped`]. Keep what
    /// `borrow` returns briefly: the worker waits to publish while it is held.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDestination`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(replicator: ormsync::Replicator) -> ormsync::Result<()> {
    /// use ormsync::State;
    ///
    /// let mut status = replicator.watch_status("backup")?;
    /// if let Ok(s) = status.wait_for(|s| s.state == State::Halted).await {
    ///     eprintln!("halted: {:?}", s.last_error);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn watch_status(&self, name: &str) -> Result<watch::Receiver<DestinationStatus>> {
        self.handle(name, |w| w.status.subscribe())
    }

    /// Stops taking batches, lets each worker finish the one in flight, releases the
    /// leases, and waits for all of it.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        let workers = std::mem::take(&mut *self.lock_workers());
        for w in workers {
            stop(w).await;
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Stops every task at once, wherever it is, as a crash would: a batch in flight is
    /// rolled back with its transaction and leases are left to expire. For tests of crash
    /// safety.
    #[doc(hidden)]
    pub async fn abort(self) {
        let mut tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.lock_workers())
            .into_iter()
            .filter_map(|mut w| w.task.take())
            .collect();
        tasks.extend(std::mem::take(
            &mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()),
        ));
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Stops one worker gracefully and waits for it.
async fn stop(mut w: WorkerHandle) {
    w.cancel.cancel();
    if let Some(task) = w.task.take() {
        let _ = task.await;
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}
