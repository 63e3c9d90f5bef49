//! The replicator: one worker per destination shipping the source's outbox.

mod alert;
mod builder;
mod destination;
mod lease;
mod retention;
mod status;
mod worker;

pub use alert::{Alert, AlertKind};
pub use builder::ReplicatorBuilder;
pub use destination::{Destination, OnPermanentError};
pub use retention::RetentionPolicy;
pub use status::{DestinationStatus, State, Status};
pub use worker::ReplayReport;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::apply;
use crate::error::{DbContext, Error, Result};
use crate::outbox::dead_letters::{self, DeadLetter};
use crate::outbox::retention as outbox_retention;
use crate::sql_text::marks;
use worker::Command;

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
    source: DatabaseConnection,
    source_id: String,
    instance: String,
    workers: Vec<WorkerHandle>,
    tasks: Vec<JoinHandle<()>>,
    cancel: CancellationToken,
}

struct WorkerHandle {
    name: String,
    destination: DatabaseConnection,
    status: Arc<Mutex<status::DestinationStatus>>,
    requests: mpsc::Sender<Command>,
    task: Option<JoinHandle<()>>,
}

impl Replicator {
    /// Starts configuring a replicator of `source`.
    pub fn builder(source: DatabaseConnection) -> ReplicatorBuilder {
        ReplicatorBuilder::new(source)
    }

    /// The source's node id: the key of its checkpoints at every destination.
    pub fn source_id(&self) -> &str {
        &self.source_id
    }

    /// This instance's name in `ormsync_leases`.
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// Runs a pass on every destination now and returns when each has applied what the
    /// outbox held at the call (changes of transactions still open are not waited for).
    ///
    /// # Errors
    ///
    /// The first destination's error, if any failed (each keeps retrying on its own);
    /// [`Error::Standby`] where another instance ships; [`Error::Shutdown`] after shutdown.
    pub async fn sync_now(&self) -> Result<()> {
        let mut replies = Vec::with_capacity(self.workers.len());
        for w in &self.workers {
            let (tx, rx) = oneshot::channel();
            self.send(w, Command::SyncNow(tx)).await?;
            replies.push(rx);
        }
        let mut first = Ok(());
        for reply in replies {
            let r = reply.await.map_err(|_| Error::Shutdown)?;
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
        let (tx, rx) = oneshot::channel();
        self.send(self.worker(name)?, Command::SyncNow(tx)).await?;
        rx.await.map_err(|_| Error::Shutdown)?
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
        let w = self.worker(name)?;
        let target = outbox_retention::last_id(&self.source).await?.unwrap_or(0);
        // The checkpoint table may not exist yet if no batch was ever applied there.
        crate::schema::install(&w.destination).await?;
        let mut pause = Duration::from_millis(10);
        loop {
            let position = apply::read_checkpoint(&w.destination, &self.source_id)
                .await?
                .unwrap_or_default();
            if self.covers(&position, target).await? {
                return Ok(());
            }
            match self.sync_destination(name).await {
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
        let backend = self.source.get_database_backend();
        let row = self
            .source
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                marks(
                    backend,
                    "SELECT COUNT(*) FROM ormsync_outbox WHERE id > ? AND id <= ?",
                ),
                [position.watermark.into(), target.into()],
            ))
            .await
            .context(|| "counting the changes still to drain".into())?;
        let present = row
            .and_then(|r| r.try_get_by_index::<i64>(0).ok())
            .unwrap_or(0)
            .max(0) as u64;
        let mut applied = crate::position::IdSet::default();
        for &(lo, hi) in position.above.ranges() {
            if lo <= target {
                applied.insert_range(lo, hi.min(target));
            }
        }
        // Every id present up to the target is in the applied set above the watermark.
        Ok(present <= applied.len() && {
            let missing = position.above.missing_in(position.watermark + 1, target);
            self.none_present(&missing).await?
        })
    }

    async fn none_present(&self, ranges: &[(i64, i64)]) -> Result<bool> {
        let backend = self.source.get_database_backend();
        for &(lo, hi) in ranges {
            let row = self
                .source
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

    /// Takes a halted destination out of its halt; it retries the change it stopped on.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDestination`] or [`Error::Shutdown`].
    pub async fn resume(&self, name: &str) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(self.worker(name)?, Command::Resume(tx)).await?;
        rx.await.map_err(|_| Error::Shutdown)?
    }

    /// The changes `name` refused and parked (policy
    /// [`OnPermanentError::DeadLetter`]), oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Db`] when the source cannot be read.
    pub async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>> {
        dead_letters::list(&self.source, name).await
    }

    /// Applies `name`'s parked changes again, row by row in outbox order; those that
    /// apply leave `ormsync_dead_letters`, the others stay with their new error.
    ///
    /// # Errors
    ///
    /// [`Error::Db`] when the dead letters cannot be read or removed.
    pub async fn replay_dead_letters(&self, name: &str) -> Result<ReplayReport> {
        let (tx, rx) = oneshot::channel();
        self.send(self.worker(name)?, Command::Replay(tx)).await?;
        rx.await.map_err(|_| Error::Shutdown)?
    }

    /// Drops parked changes of `name` without applying them; returns how many went.
    ///
    /// # Errors
    ///
    /// [`Error::Db`] when they cannot be removed.
    pub async fn discard_dead_letters(&self, name: &str, outbox_ids: &[i64]) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.send(
            self.worker(name)?,
            Command::Discard(outbox_ids.to_vec(), tx),
        )
        .await?;
        rx.await.map_err(|_| Error::Shutdown)?
    }

    fn worker(&self, name: &str) -> Result<&WorkerHandle> {
        self.workers
            .iter()
            .find(|w| w.name == name)
            .ok_or_else(|| Error::UnknownDestination(name.to_string()))
    }

    async fn send(&self, w: &WorkerHandle, command: Command) -> Result<()> {
        w.requests.send(command).await.map_err(|_| Error::Shutdown)
    }

    /// Each destination's state, position and counters.
    pub fn status(&self) -> Status {
        Status {
            destinations: self
                .workers
                .iter()
                .map(|w| match w.status.lock() {
                    Ok(s) => s.clone(),
                    Err(poisoned) => poisoned.into_inner().clone(),
                })
                .collect(),
        }
    }

    /// Stops taking batches, lets each worker finish the one in flight, releases the
    /// leases, and waits for all of it.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for w in &mut self.workers {
            if let Some(task) = w.task.take() {
                let _ = task.await;
            }
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    /// Stops every task at once, wherever it is, as a crash would: a batch in flight is
    /// rolled back with its transaction and leases are left to expire. For tests of crash
    /// safety.
    #[doc(hidden)]
    pub async fn abort(mut self) {
        let tasks = self
            .workers
            .iter_mut()
            .filter_map(|w| w.task.take())
            .chain(self.tasks.drain(..));
        for task in tasks.collect::<Vec<_>>() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
