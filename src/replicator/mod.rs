//! The replicator: one worker per destination shipping the source's outbox.

mod builder;
mod destination;
mod status;
mod worker;

pub use builder::ReplicatorBuilder;
pub use destination::Destination;
pub use status::{DestinationStatus, State, Status};

use std::sync::{Arc, Mutex};

use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use worker::SyncNow;

/// A running replicator: ships every captured change of the source to each destination.
///
/// Made by [`Replicator::builder`]. Each destination has its own worker, which polls the
/// outbox, applies batches in transactions that also record its position, and retries
/// with backoff when anything fails.
///
/// Dropping the handle stops the workers after the batch each has in flight, without
/// waiting; call [`shutdown`](Replicator::shutdown) to wait for that.
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
///     .start()
///     .await?;
/// replicator.sync_now().await?;
/// println!("{}", replicator.status());
/// replicator.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Replicator {
    source_id: String,
    workers: Vec<WorkerHandle>,
    cancel: CancellationToken,
}

struct WorkerHandle {
    name: String,
    status: Arc<Mutex<status::DestinationStatus>>,
    requests: mpsc::Sender<SyncNow>,
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

    /// Runs a pass on every destination now and returns when each has applied what the
    /// outbox held at the call (changes of transactions still open are not waited for).
    ///
    /// # Errors
    ///
    /// The first destination's error, if any failed (each keeps retrying on its own);
    /// [`Error::Shutdown`] after shutdown.
    pub async fn sync_now(&self) -> Result<()> {
        let mut replies = Vec::with_capacity(self.workers.len());
        for w in &self.workers {
            replies.push(self.request(w).await?);
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
        let w = self
            .workers
            .iter()
            .find(|w| w.name == name)
            .ok_or_else(|| Error::UnknownDestination(name.to_string()))?;
        self.request(w).await?.await.map_err(|_| Error::Shutdown)?
    }

    async fn request(&self, w: &WorkerHandle) -> Result<oneshot::Receiver<Result<()>>> {
        let (tx, rx) = oneshot::channel();
        w.requests
            .send(SyncNow(tx))
            .await
            .map_err(|_| Error::Shutdown)?;
        Ok(rx)
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

    /// Stops taking batches, lets each worker finish the one in flight, and waits for them.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for w in &mut self.workers {
            if let Some(task) = w.task.take() {
                let _ = task.await;
            }
        }
    }

    /// Stops every worker at once, wherever it is, as a crash would: a batch in flight is
    /// rolled back with its transaction. For tests of crash safety.
    #[doc(hidden)]
    pub async fn abort(mut self) {
        for w in &mut self.workers {
            if let Some(task) = w.task.take() {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
