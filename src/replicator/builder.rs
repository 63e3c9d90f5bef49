//! Configuring and starting a replicator.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{DatabaseConnection, DbBackend};
use tokio_util::sync::CancellationToken;

use super::alert::{Alert, Alerts};
use super::destination::Destination;
use super::lease::Lease;
use super::retention::{Retention, RetentionPolicy};
use super::worker::Settings;
use super::{Replicator, Shared, wake};
use crate::entity::ddl::TableDef;
use crate::entity::{Replicated, TableSpec};
use crate::error::{Error, Result};
use crate::outbox;
use crate::outbox::entities::RecordedTable;
use crate::schema;

/// The lease name of the retention task, beside the destinations' names.
pub(crate) const RETENTION_LEASE: &str = "__ormsync_retention";

/// Configures a [`Replicator`]; made by [`Replicator::builder`].
#[must_use = "a builder does nothing until `.start()` is awaited"]
pub struct ReplicatorBuilder {
    source: DatabaseConnection,
    tables: HashMap<String, TableSpec>,
    defs: HashMap<String, TableDef>,
    destinations: Vec<Destination>,
    settings: Settings,
    batch_size: u64,
    gap_timeout: Duration,
    alerts: Alerts,
    instance: String,
    retention: Option<RetentionPolicy>,
}

/// The environment variable that names a replicator instance when the builder is not told.
const INSTANCE_ID_VAR: &str = "ORMSYNC_INSTANCE_ID";

impl ReplicatorBuilder {
    pub(crate) fn new(source: DatabaseConnection) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
        let tag = uuid::Uuid::new_v4().simple().to_string();
        ReplicatorBuilder {
            source,
            tables: HashMap::new(),
            defs: HashMap::new(),
            destinations: Vec::new(),
            settings: Settings {
                poll_interval: Duration::from_millis(500),
                retry_min: Duration::from_millis(100),
                retry_max: Duration::from_secs(30),
                unavailable_after_attempts: 5,
                unavailable_after: Duration::from_secs(30),
                lease_ttl: Duration::from_secs(10),
                lag_rows: None,
                lag_age: None,
            },
            batch_size: 3000,
            gap_timeout: Duration::from_secs(600),
            alerts: Alerts::default(),
            instance: std::env::var(INSTANCE_ID_VAR)
                .ok()
                .map(|id| id.trim().to_string())
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("{host}:{}:{}", std::process::id(), &tag[..8])),
            retention: Some(RetentionPolicy::default()),
        }
    }

    /// Ships the changes of entity `E`. Every replicated entity must be registered: a
    /// change of an unregistered table stops its destination with an error naming it.
    pub fn entity<E: Replicated>(mut self) -> Self {
        let spec = E::table_spec();
        self.defs.insert(spec.table.clone(), TableDef::of::<E>());
        self.tables.insert(spec.table.clone(), spec);
        self
    }

    /// Adds a destination. Each gets its own worker, checkpoint, lease and retry state.
    pub fn destination(mut self, destination: Destination) -> Self {
        self.destinations.push(destination);
        self
    }

    /// How often an idle worker looks for new changes. Default: 500 ms.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.settings.poll_interval = every;
        self
    }

    /// Changes read and applied per batch at most. Default: 3000.
    ///
    /// Each batch costs a few round trips and a commit at the destination whatever its
    /// size, so bigger batches drain a backlog faster, at the cost of memory (two batches
    /// of decoded changes are held: one applying, one read ahead) and of a longer
    /// destination transaction. Draining a million changes PostgreSQL → PostgreSQL in the
    /// backlog bench: 1000 gave 15k changes/s at 30 MiB peak RSS; 3000, 44k at 47 MiB;
    /// 4000, 45k at 58 MiB; 5000, 47k at 68 MiB. Real-time shipping is not slowed by a big
    /// value: a batch holds what is there, up to this many.
    ///
    /// A batch also stops at about 8 MiB of payload, so a table of wide rows (long text,
    /// blobs) comes a few hundred rows a batch rather than this many: memory stays
    /// bounded whatever the rows hold.
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

    /// Raises [`AlertKind::Unavailable`](crate::AlertKind::Unavailable) once a destination
    /// has failed this many times in a row, or for this long, whichever comes first.
    /// Default: 5 attempts or 30 s.
    pub fn unavailable_after(mut self, attempts: u64, time: Duration) -> Self {
        self.settings.unavailable_after_attempts = attempts.max(1);
        self.settings.unavailable_after = time;
        self
    }

    /// Raises [`AlertKind::LagHigh`](crate::AlertKind::LagHigh) when a destination has at
    /// least `rows` changes waiting, or its oldest waiting change is `age` old (either may
    /// be `None`), and `LagNormal` when it is back under. Default: no lag alerts.
    pub fn lag_alert(mut self, rows: Option<u64>, age: Option<Duration>) -> Self {
        self.settings.lag_rows = rows;
        self.settings.lag_age = age;
        self
    }

    /// Calls `f` with every [`Alert`]. Several may be added. `f` runs on the worker's task:
    /// keep it quick, or use [`on_alert_async`](Self::on_alert_async).
    ///
    /// ```no_run
    /// # async fn f(source: sea_orm::DatabaseConnection) {
    /// let builder = ormsync::Replicator::builder(source).on_alert(|alert| eprintln!("{alert}"));
    /// # }
    /// ```
    pub fn on_alert(mut self, f: impl Fn(&Alert) + Send + Sync + 'static) -> Self {
        self.alerts.add_sync(f);
        self
    }

    /// Calls the async `f` with every [`Alert`], each call on a task of its own (to post
    /// to a chat or a pager without holding up replication).
    pub fn on_alert_async<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Alert) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.alerts.add_async(f);
        self
    }

    /// How long a destination's lease lasts without renewal. Of several replicator
    /// instances on one source, the lease holder ships to the destination; when it dies,
    /// another takes over within about this time and a third of it. Default: 10 s.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.settings.lease_ttl = ttl.max(Duration::from_millis(100));
        self
    }

    /// This instance's name in `ormsync_leases` and in messages. Default: the environment
    /// variable `ORMSYNC_INSTANCE_ID`, else the host name, the process id and a random tag.
    ///
    /// A stable name (a pod's or a service's, one per running copy of the application)
    /// lets a process that restarts after a crash take its leases back at once, where a
    /// new random name waits for the old leases to expire (`lease_ttl`). Two live
    /// processes must not share one: both would ship, and only the destination's
    /// checkpoint lock would keep them from applying anything twice.
    ///
    /// ```
    /// # fn f(source: sea_orm::DatabaseConnection) {
    /// let builder = ormsync::Replicator::builder(source).instance_id("orders-api-0");
    /// # }
    /// ```
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance = id.into();
        self
    }

    /// How the outbox is cleaned up. Default: [`RetentionPolicy::default`].
    pub fn retention(mut self, policy: RetentionPolicy) -> Self {
        self.retention = Some(policy);
        self
    }

    /// Keeps every outbox row forever (for audits, or when another tool cleans it).
    pub fn without_retention(mut self) -> Self {
        self.retention = None;
        self
    }

    /// On MySQL/MariaDB, how long an outbox id missing below newer ones is waited for
    /// before it is taken for a rolled-back transaction, when the row-lock probe that
    /// normally proves it cannot run (a user without the privilege to lock outbox rows).
    /// Keep it far above the longest transaction the application runs. PostgreSQL and
    /// SQLite always prove it and never wait longer than needed. Default: 10 minutes.
    pub fn gap_timeout(mut self, timeout: Duration) -> Self {
        self.gap_timeout = timeout;
        self
    }

    /// Creates the source's `ormsync_*` tables if missing and starts one worker per
    /// destination, and the retention task.
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
            if d.name == RETENTION_LEASE {
                return Err(Error::Config(format!("`{RETENTION_LEASE}` is reserved")));
            }
        }
        schema::install(&self.source).await?;
        // Definitions for the destinations' backends only: sea-query cannot write some types
        // for others (a PostgreSQL `inet` at MySQL).
        let mut backends: Vec<DbBackend> = Vec::new();
        for d in &self.destinations {
            let backend = d.db.get_database_backend();
            if !backends.contains(&backend) {
                backends.push(backend);
            }
        }
        let recorded: Vec<RecordedTable> = self
            .tables
            .values()
            .map(|spec| RecordedTable {
                definitions: self
                    .defs
                    .get(&spec.table)
                    .map(|d| d.definitions(&d.columns, &backends)),
                spec: spec.clone(),
            })
            .collect();
        outbox::entities::record_tables(&self.source, &recorded).await?;
        let source_id = outbox::node_id(&self.source).await?;
        let cancel = CancellationToken::new();
        // Realtime workers of other instances learn of this one's captures.
        wake::notify_after_captures(&self.source, cancel.child_token());
        let shared = Arc::new(Shared {
            notified: wake::listen(&self.source, cancel.child_token()),
            source: self.source.clone(),
            source_id,
            instance: self.instance.clone(),
            tables: Arc::new(self.tables),
            defs: Arc::new(self.defs),
            settings: self.settings.clone(),
            alerts: self.alerts.clone(),
            batch_size: self.batch_size,
            gap_timeout: self.gap_timeout,
            outbox_size: Arc::default(),
            cancel: cancel.clone(),
        });
        let mut workers = Vec::with_capacity(self.destinations.len());
        for d in self.destinations {
            workers.push(shared.spawn(d).await?);
        }
        let mut tasks = Vec::new();
        if let Some(policy) = self.retention {
            let retention = Retention {
                source: self.source.clone(),
                lease: Lease::new(
                    self.source.clone(),
                    RETENTION_LEASE,
                    self.instance.clone(),
                    self.settings.lease_ttl.max(policy.every * 3),
                ),
                policy,
                alerts: self.alerts.clone(),
                cancel: cancel.child_token(),
            };
            tasks.push(tokio::spawn(retention.run()));
        }
        Ok(Replicator {
            shared,
            workers: Mutex::new(workers),
            tasks: Mutex::new(tasks),
        })
    }
}
