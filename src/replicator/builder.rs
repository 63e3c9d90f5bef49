//! Configuring and starting a replicator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::destination::Destination;
use super::status::DestinationStatus;
use super::worker::{Settings, Worker};
use super::{Replicator, WorkerHandle};
use crate::apply::SqlSink;
use crate::entity::{Replicated, TableSpec};
use crate::error::{Error, Result};
use crate::outbox::{self, OutboxReader};
use crate::schema;

/// Configures a [`Replicator`]; made by [`Replicator::builder`].
#[must_use = "a builder does nothing until `.start()` is awaited"]
pub struct ReplicatorBuilder {
    source: DatabaseConnection,
    tables: HashMap<String, TableSpec>,
    destinations: Vec<Destination>,
    settings: Settings,
    batch_size: u64,
    gap_timeout: Duration,
}

impl ReplicatorBuilder {
    pub(crate) fn new(source: DatabaseConnection) -> Self {
        ReplicatorBuilder {
            source,
            tables: HashMap::new(),
            destinations: Vec::new(),
            settings: Settings {
                poll_interval: Duration::from_millis(500),
                retry_min: Duration::from_millis(100),
                retry_max: Duration::from_secs(30),
            },
            batch_size: 1000,
            gap_timeout: Duration::from_secs(600),
        }
    }

    /// Ships the changes of entity `E`. Every replicated entity must be registered: a
    /// change of an unregistered table stops its destination with an error naming it.
    pub fn entity<E: Replicated>(mut self) -> Self {
        let spec = E::table_spec();
        self.tables.insert(spec.table.clone(), spec);
        self
    }

    /// Adds a destination. Each gets its own worker, checkpoint and retry state.
    pub fn destination(mut self, destination: Destination) -> Self {
        self.destinations.push(destination);
        self
    }

    /// How often an idle worker looks for new changes. Default: 500 ms.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.settings.poll_interval = every;
        self
    }

    /// Changes read and applied per batch at most. Default: 1000.
    pub fn batch_size(mut self, changes: u64) -> Self {
        self.batch_size = changes.max(1);
        self
    }

    /// The delay before the first retry of a failed pass, and the most it grows to (it
    /// doubles, with jitter; retries never stop). Default: 100 ms and 30 s.
    pub fn retry_delays(mut self, first: Duration, max: Duration) -> Self {
        self.settings.retry_min = first;
        self.settings.retry_max = max.max(first);
        self
    }

    /// How long an outbox id missing below newer ones is waited for before it is taken for
    /// a rolled-back transaction, on MySQL/MariaDB when the row-lock probe that normally
    /// proves it cannot run (a user without the privilege to lock outbox rows). Keep it far
    /// above the longest transaction the application runs. PostgreSQL and SQLite always
    /// prove it and never wait longer than needed. Default: 10 minutes.
    pub fn gap_timeout(mut self, timeout: Duration) -> Self {
        self.gap_timeout = timeout;
        self
    }

    /// Creates the source's `ormsync_*` tables if missing and starts one worker per
    /// destination.
    ///
    /// A destination that is down or misconfigured does not stop the others: its worker
    /// reports the error in [`Replicator::status`] and retries.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] without entities or destinations, or with two destinations of one
    /// name; [`Error::Db`] when the source's tables cannot be created or read.
    pub async fn start(self) -> Result<Replicator> {
        if self.tables.is_empty() {
            return Err(Error::Config(
                "no entity registered: add `.entity::<your_entity::Entity>()` for each replicated entity".into(),
            ));
        }
        if self.destinations.is_empty() {
            return Err(Error::Config(
                "no destination: add `.destination(Destination::new(name, connection))`".into(),
            ));
        }
        for (i, d) in self.destinations.iter().enumerate() {
            if self.destinations[..i].iter().any(|o| o.name == d.name) {
                return Err(Error::Config(format!(
                    "two destinations are named `{}`",
                    d.name
                )));
            }
        }
        schema::install(&self.source).await?;
        let source_id = outbox::node_id(&self.source).await?;
        let tables = Arc::new(self.tables);
        let cancel = CancellationToken::new();
        let mut workers = Vec::with_capacity(self.destinations.len());
        for d in self.destinations {
            let status = Arc::new(Mutex::new(DestinationStatus::new(&d.name)));
            let (tx, rx) = mpsc::channel(8);
            let worker = Worker {
                name: d.name.clone(),
                source: self.source.clone(),
                source_id: source_id.clone(),
                destination: d.db.clone(),
                reader: OutboxReader::new(self.source.clone(), self.batch_size, self.gap_timeout),
                sink: Box::new(SqlSink::new(d.name.clone(), d.db.clone())),
                tables: tables.clone(),
                skip: d.skip.clone(),
                settings: self.settings.clone(),
                status: status.clone(),
                requests: rx,
                cancel: cancel.child_token(),
            };
            tracing::info!(destination = %d.name, "starting replication worker");
            workers.push(WorkerHandle {
                name: d.name,
                status,
                requests: tx,
                task: Some(tokio::spawn(worker.run())),
            });
        }
        Ok(Replicator {
            source_id,
            workers,
            cancel,
        })
    }
}
