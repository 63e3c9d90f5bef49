//! The child's side: a runner that applies a hub's stream to the child's database.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::follow::{Command, Follower};
use super::names::Names;
use crate::Destination;
use crate::apply::SqlSink;
use crate::bootstrap::Preparation;
use crate::entity::ddl::TableDef;
use crate::entity::{Replicated, TableSpec};
use crate::error::{Error, Result};
use crate::outbox::dead_letters::ReplayReport;
use crate::replicator::alert::{Alert, Alerts};
use crate::replicator::status::{DestinationStatus, State};

/// Applies a hub's changes from a NATS JetStream stream to a child's database.
///
/// Each child runs one next to its application. It reads the stream through a durable
/// consumer named after the child, so the stream keeps its place while it is offline, and
/// applies through the same SQL sink and per-destination rules as a
/// [`Destination`](crate::Destination) of a replicator: key strategies with foreign-key
/// translation, conflict policies, filters, masking and dropped columns.
///
/// **Exactly once.** The hub's outbox position is stored in the child's
/// `ormsync_checkpoint` in the same transaction as the changes, and messages are
/// acknowledged only after that commit: a redelivery, or a crash between commit and
/// acknowledgement, applies nothing twice. Each message says where the hub stood before
/// it; a child whose position does not hold that missed messages the stream no longer
/// retains, and copies the current rows again from the hub's state stream (with an
/// [`AlertKind::RetentionDropped`](crate::AlertKind::RetentionDropped) alert) instead of
/// going on with a gap. A new child copies them first too. The copy needs no connection to
/// the hub's database.
///
/// # Examples
///
/// ```no_run
/// # mod orders {
/// #     use sea_orm::entity::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
/// #     #[sea_orm(table_name = "orders")]
/// #     pub struct Model { #[sea_orm(primary_key)] pub id: i64, pub total: i64 }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// # }
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use ormsync::Destination;
/// use ormsync::jetstream::Subscriber;
///
/// let child_db = sea_orm::Database::connect("sqlite://child-7.db?mode=rwc").await?;
/// let client = async_nats::connect("nats://hub.example:4222").await?;
/// let subscriber = Subscriber::builder(
///     async_nats::jetstream::new(client),
///     "HUB",
///     Destination::new("child-7", child_db).create_tables(),
/// )
/// .entity::<orders::Entity>()
/// .start()
/// .await?;
/// println!("{}", subscriber.status().state);
/// subscriber.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Subscriber {
    name: String,
    status: watch::Receiver<DestinationStatus>,
    commands: mpsc::Sender<Command>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// Configures a [`Subscriber`]; made by [`Subscriber::builder`].
#[must_use = "a builder does nothing until `.start()` is awaited"]
pub struct SubscriberBuilder {
    js: jetstream::Context,
    stream: String,
    destination: Destination,
    tables: HashMap<String, TableSpec>,
    defs: HashMap<String, TableDef>,
    alerts: Alerts,
    settings: Settings,
}

/// How a subscriber paces itself.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Rows per child transaction when copying from the state stream.
    pub(crate) copy_chunk: usize,
    pub(crate) retry_min: Duration,
    pub(crate) retry_max: Duration,
    /// Failed attempts in a row before an [`AlertKind::Unavailable`].
    pub(crate) unavailable_after_attempts: u64,
}

impl SubscriberBuilder {
    /// Applies the changes of entity `E`. Every table the stream carries must be registered
    /// or skipped ([`Destination::skip_table`](crate::Destination::skip_table)): a change of
    /// another table stops the child with an error naming it.
    pub fn entity<E: Replicated>(mut self) -> Self {
        let spec = E::table_spec();
        self.defs.insert(spec.table.clone(), TableDef::of::<E>());
        self.tables.insert(spec.table.clone(), spec);
        self
    }

    /// Calls `f` with every [`Alert`]: unavailable and recovered, halted, dead-lettered,
    /// and a copy after the child fell behind what the stream retains.
    pub fn on_alert(mut self, f: impl Fn(&Alert) + Send + Sync + 'static) -> Self {
        self.alerts.add_sync(f);
        self
    }

    /// Calls the async `f` with every [`Alert`], each call on a task of its own.
    pub fn on_alert_async<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Alert) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.alerts.add_async(f);
        self
    }

    /// Rows written per child transaction when the child copies the hub's rows from the
    /// state stream (a new child, or one that fell behind what the stream retains).
    /// Default: 1000.
    pub fn copy_chunk(mut self, rows: usize) -> Self {
        self.settings.copy_chunk = rows.max(1);
        self
    }

    /// The delay before the first retry after a failure, and the most it grows to.
    /// Default: 100 ms and 30 s.
    pub fn retry_delays(mut self, first: Duration, max: Duration) -> Self {
        self.settings.retry_min = first;
        self.settings.retry_max = max.max(first);
        self
    }

    /// Failed attempts in a row before an [`AlertKind::Unavailable`](crate::AlertKind::Unavailable) alert. Default: 5.
    pub fn unavailable_after_attempts(mut self, attempts: u64) -> Self {
        self.settings.unavailable_after_attempts = attempts.max(1);
        self
    }

    /// Checks the configuration and starts applying on a task of its own.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for rules that name unregistered tables or columns, or a
    /// destination given a sink of its own; [`Error::Db`] when ormsync's tables cannot be
    /// installed at the child.
    pub async fn start(self) -> Result<Subscriber> {
        let d = self.destination;
        if d.sink.is_some() {
            return Err(Error::Config(format!(
                "subscriber `{}` applies through SQL; give it a destination without `with_sink`",
                d.name
            )));
        }
        let mut rules = d.rules.clone();
        rules.specs = self.tables.clone();
        rules.validate(&d.name)?;
        crate::schema::install(&d.db).await?;
        let (status_tx, status) = watch::channel(DestinationStatus::new(&d.name));
        let on_conflict = rules
            .alert_conflicts
            .then(|| self.alerts.on_conflict(&d.name));
        let defs = Arc::new(self.defs);
        let mut sink = SqlSink::new(d.name.clone(), d.db.clone())
            .with_rules(rules, on_conflict)
            .connections(d.apply_connections);
        if d.evolve_schema {
            sink = sink.evolving(defs.clone());
        }
        let (commands, rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let follower = Follower {
            name: d.name.clone(),
            names: Names::new(&self.stream),
            js: self.js,
            db: d.db.clone(),
            sink,
            tables: self.tables,
            skip: d.skip.clone(),
            policy: d.on_permanent_error,
            prepare: (d.create_tables || d.evolve_schema).then_some(Preparation {
                defs,
                create: d.create_tables,
                evolve: d.evolve_schema,
            }),
            settings: self.settings,
            alerts: self.alerts,
            status: status_tx,
            commands: rx,
            cancel: cancel.clone(),
        };
        tracing::info!(subscriber = %d.name, stream = %self.stream, "starting subscriber");
        Ok(Subscriber {
            name: d.name,
            status,
            commands,
            cancel,
            task: Some(tokio::spawn(follower.run(d.disabled))),
        })
    }
}

impl Subscriber {
    /// Starts configuring a subscriber that applies the stream `stream` (the name given
    /// to the hub's [`Publisher`](super::Publisher)) to `destination`, whose name is the
    /// child's: its durable consumer, status, alerts and dead letters go by it.
    pub fn builder(
        js: jetstream::Context,
        stream: impl Into<String>,
        destination: Destination,
    ) -> SubscriberBuilder {
        SubscriberBuilder {
            js,
            stream: stream.into(),
            destination,
            tables: HashMap::new(),
            defs: HashMap::new(),
            alerts: Alerts::default(),
            settings: Settings {
                copy_chunk: 1000,
                retry_min: Duration::from_millis(100),
                retry_max: Duration::from_secs(30),
                unavailable_after_attempts: 5,
            },
        }
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the child stands: its state, position in the hub's outbox, messages still
    /// in the stream for it (`pending`), the age of the last change applied (`lag_seconds`)
    /// and its counters.
    pub fn status(&self) -> DestinationStatus {
        self.status.borrow().clone()
    }

    /// The status as a watch channel, to wait on a change of it instead of polling.
    pub fn watch_status(&self) -> watch::Receiver<DestinationStatus> {
        self.status.clone()
    }

    /// Stops applying after the batch at hand; the stream keeps the rest for
    /// [`resume`](Self::resume).
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] once shut down.
    pub async fn pause(&self) -> Result<()> {
        self.ask(Command::Pause).await
    }

    /// Applies again after a [`pause`](Self::pause), or after a halt once its cause is
    /// fixed.
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] once shut down.
    pub async fn resume(&self) -> Result<()> {
        self.ask(Command::Resume).await
    }

    /// Applies the child's dead letters again, in order, and removes those that apply.
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] once shut down; [`Error::Db`] when the dead letters cannot be
    /// read.
    pub async fn replay_dead_letters(&self) -> Result<ReplayReport> {
        let (tx, rx) = oneshot::channel();
        self.ask(Command::Replay(tx)).await?;
        rx.await.map_err(|_| Error::Shutdown)?
    }

    /// Waits until the child's status satisfies `done`, for up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when it does not in time; [`Error::Shutdown`] when the
    /// subscriber stops first.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&DestinationStatus) -> bool,
    ) -> Result<DestinationStatus> {
        let mut status = self.status.clone();
        let wait = status.wait_for(|s| done(s) || s.state == State::Stopped);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(s)) if s.state != State::Stopped || done(&s) => Ok(s.clone()),
            Ok(_) => Err(Error::Shutdown),
            Err(_) => Err(Error::Timeout {
                what: format!("waiting on subscriber `{}`", self.name),
                seconds: timeout.as_secs(),
                after: "it goes on applying".into(),
            }),
        }
    }

    /// Stops after the batch at hand and waits for the task to end.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stops the task at once, wherever it is, as a crash would: a batch in flight rolls
    /// back with its transaction and its messages are delivered again. For tests of crash
    /// safety.
    #[doc(hidden)]
    pub async fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    async fn ask(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::Shutdown)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
