//! Where changes go.

use std::collections::HashSet;
use std::fmt;

use sea_orm::{ColumnTrait, DatabaseConnection, EntityName};

use super::schedule::Schedule;
use crate::apply::{
    ConflictPolicy, KeyStrategy, RowFilter, Rules, SharedSink, Sink, TableRules, Transform,
};
use crate::entity::Replicated;

/// A database that receives a source's changes, and how.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), sea_orm::DbErr> {
/// use ormsync::Destination;
///
/// let backup = sea_orm::Database::connect("postgres://app@backup/app").await?;
/// let dest = Destination::new("backup", backup).skip_table("sessions");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Destination {
    pub(crate) name: String,
    pub(crate) db: DatabaseConnection,
    pub(crate) skip: HashSet<String>,
    pub(crate) on_permanent_error: OnPermanentError,
    pub(crate) schedule: Schedule,
    pub(crate) disabled: bool,
    pub(crate) initial_snapshot: bool,
    pub(crate) chunk_rows: u64,
    pub(crate) apply_connections: usize,
    pub(crate) create_tables: bool,
    pub(crate) evolve_schema: bool,
    pub(crate) rules: Rules,
    /// Where batches go instead of a [`SqlSink`](crate::apply::SqlSink) on `db`.
    pub(crate) sink: Option<SharedSink>,
}

/// What a destination does with a change it refuses for good (a constraint it violates, a
/// column it lacks, a value of the wrong type): errors that retrying will not fix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnPermanentError {
    /// Stop applying to this destination, raise an alert, and wait for
    /// [`Replicator::resume`](crate::Replicator::resume) once the cause is fixed. Nothing
    /// after the change is applied out of order. The default.
    #[default]
    Halt,
    /// Park the change in `ormsync_dead_letters` at the source, raise an alert, and go on
    /// with later changes. Later changes of the same row are parked behind it, so none
    /// overtakes it; [`Replicator::replay_dead_letters`](crate::Replicator::replay_dead_letters)
    /// applies them again in order once the cause is fixed.
    DeadLetter,
}

impl Destination {
    /// A destination called `name` (in status, alerts and errors), writing through `db`.
    pub fn new(name: impl Into<String>, db: DatabaseConnection) -> Self {
        Destination {
            name: name.into(),
            db,
            skip: HashSet::new(),
            on_permanent_error: OnPermanentError::Halt,
            schedule: Schedule::poll(),
            disabled: false,
            initial_snapshot: true,
            chunk_rows: 3000,
            apply_connections: 1,
            create_tables: false,
            evolve_schema: false,
            rules: Rules::default(),
            sink: None,
        }
    }

    /// Applies batches through `sink` instead of SQL statements on the connection: for a
    /// destination that is not a SQL database (a queue, a search index), and for tests of
    /// the worker without a destination server.
    ///
    /// The connection given to [`new`](Self::new) still holds ormsync's bookkeeping
    /// tables for this destination (`ormsync_snapshot` and the others, installed when the
    /// worker starts), while the sink stores the changes and its position, as the
    /// [`Sink`] contract says. The sink receives every change of the tables this
    /// destination takes, as captured, and dead-letter replays.
    ///
    /// Copying rows is done with SQL at the connection, so it turns the
    /// [initial snapshot](Self::initial_snapshot) off, and
    /// [`ReplicatorBuilder::start`](crate::ReplicatorBuilder::start) refuses it turned on
    /// again, as it refuses [`create_tables`](Self::create_tables),
    /// [`evolve_schema`](Self::evolve_schema) and per-table rules ([`keys`](Self::keys),
    /// [`filter`](Self::filter), [`drop_column`](Self::drop_column),
    /// [`transform`](Self::transform), [`conflicts_for`](Self::conflicts_for)), which the
    /// SQL sink applies. [`Replicator::resync`](crate::Replicator::resync),
    /// [`create_tables`](crate::Replicator::create_tables) and
    /// [`evolve_schema`](crate::Replicator::evolve_schema) fail with
    /// [`Error::Config`](crate::Error::Config).
    ///
    /// Clones of the destination share the sink.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use ormsync::{Result, change::{Batch, Change}, position::Position};
    /// # struct Queue;
    /// # #[async_trait::async_trait]
    /// # impl ormsync::apply::Sink for Queue {
    /// #     async fn position(&mut self, _: &str) -> Result<Position> { todo!() }
    /// #     async fn apply(&mut self, _: &str, _: &Batch) -> Result<Position> { todo!() }
    /// #     async fn replay(&mut self, _: &str, _: &[Change]) -> Result<()> { todo!() }
    /// # }
    /// # async fn f() -> std::result::Result<(), sea_orm::DbErr> {
    /// use ormsync::Destination;
    ///
    /// // ormsync's own tables for the destination `queue` live in this database.
    /// let bookkeeping = sea_orm::Database::connect("sqlite://queue-state.db?mode=rwc").await?;
    /// let dest = Destination::new("queue", bookkeeping).with_sink(Queue);
    /// # Ok(()) }
    /// ```
    pub fn with_sink(mut self, sink: impl Sink + 'static) -> Self {
        self.sink = Some(SharedSink::new(sink));
        self.initial_snapshot = false;
        self
    }

    /// A destination that publishes to a NATS JetStream stream for children to subscribe
    /// to, instead of writing to a database (feature `jetstream`); see
    /// [`jetstream`](crate::jetstream).
    ///
    /// `bookkeeping` keeps ormsync's tables for this destination (its progress and dead
    /// letters): pass the source's own connection. The stream keeps the position, so the
    /// source's retention prunes a change once the stream has stored it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(source: sea_orm::DatabaseConnection) -> Result<(), Box<dyn std::error::Error>> {
    /// use ormsync::Destination;
    /// use ormsync::jetstream::Publisher;
    ///
    /// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    /// let publisher = Publisher::builder(async_nats::jetstream::new(client), "HUB")
    ///     .create()
    ///     .await?;
    /// let children = Destination::jetstream("children", source.clone(), publisher).realtime();
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "jetstream")]
    pub fn jetstream(
        name: impl Into<String>,
        bookkeeping: DatabaseConnection,
        publisher: crate::jetstream::Publisher,
    ) -> Self {
        Destination::new(name, bookkeeping).with_sink(publisher)
    }

    /// Why this destination cannot start with the sink it was given, if it cannot.
    pub(crate) fn sink_refusal(&self) -> Option<String> {
        self.sink.as_ref()?;
        let what = if self.initial_snapshot {
            "an initial snapshot"
        } else if self.create_tables {
            "create_tables"
        } else if self.evolve_schema {
            "evolve_schema"
        } else if !self.rules.tables.is_empty() {
            "per-table rules (keys, filter, drop_column, transform, conflicts_for)"
        } else {
            return None;
        };
        Some(format!(
            "destination `{}` applies through a sink of its own (`with_sink`), which {what} \
             does not reach: turn it off for this destination",
            self.name
        ))
    }

    /// Ships within milliseconds of each commit; see [`Schedule::realtime`].
    pub fn realtime(self) -> Self {
        self.schedule(Schedule::realtime())
    }

    /// When this destination ships. Default: [`Schedule::poll`], at the builder's poll
    /// interval.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Starts the destination disabled: it keeps its checkpoint and ships nothing until
    /// [`Replicator::enable`](crate::Replicator::enable).
    pub fn disabled(mut self) -> Self {
        self.disabled = true;
        self
    }

    /// What to do with a change this destination refuses for good. Default:
    /// [`OnPermanentError::Halt`].
    pub fn on_permanent_error(mut self, policy: OnPermanentError) -> Self {
        self.on_permanent_error = policy;
        self
    }

    /// Never ships changes of `table` to this destination (they count as done for it).
    ///
    /// Default: every registered entity's table is shipped.
    pub fn skip_table(mut self, table: impl Into<String>) -> Self {
        self.skip.insert(table.into());
        self
    }

    /// Whether a destination that has no checkpoint for this source (one that never
    /// received anything from it) first gets a copy of every replicated table, then
    /// streams. Default: `true`, so a new backup holds the rows that existed before it
    /// was added. With `false` it only receives changes captured from then on.
    ///
    /// The copy runs while the application writes, chunk by chunk in key order, and
    /// resumes from its last chunk when interrupted; see [`crate::snapshot`]. Its progress
    /// shows in [`DestinationStatus::snapshot`](crate::DestinationStatus::snapshot). A
    /// destination that has a checkpoint is never copied again on its own: use
    /// [`Replicator::resync`](crate::Replicator::resync).
    pub fn initial_snapshot(mut self, on: bool) -> Self {
        self.initial_snapshot = on;
        self
    }

    /// Rows per chunk of a snapshot or resync: each chunk is one query at the source and
    /// one destination transaction. Default: 3000.
    ///
    /// Each chunk pays fixed round trips and a commit, so bigger chunks copy faster: in the
    /// snapshot bench, PostgreSQL → PostgreSQL went from about 20,000 to 45,000 rows/s
    /// between 1,000 and 3,000 (MariaDB did not change). Memory holds about one chunk,
    /// and a chunk also stops at about 8 MiB of row data, so wide rows come fewer a chunk.
    pub fn snapshot_chunk_rows(mut self, rows: u64) -> Self {
        self.chunk_rows = rows.max(1);
        self
    }

    /// Applies a large batch through up to `k` connections of the destination at once.
    /// Default: 1, every batch in one transaction.
    ///
    /// One connection waits on the destination for each statement in turn; several can
    /// keep a server destination with cores to spare busier while it catches up on a
    /// backlog. Each batch then commits once per connection and once more, so measure
    /// before turning it on: on a 2-core machine running both servers it did not beat
    /// one connection.
    ///
    /// A batch is split by table and key, so every change of a row goes through one
    /// connection in order; it is cut into segments wherever a foreign key joins its
    /// tables, so a parent is never written after its child or deleted before it; and
    /// each part marks what it applied in the checkpoint in its own transaction, so a
    /// crash at any moment loses nothing and applies nothing twice. A batch with fewer
    /// than 128 changes a segment, and tables that go row by row ([own keys](Self::keys),
    /// a [conflict policy](Self::conflicts) other than `SourceWins`), still apply in one
    /// transaction. The foreign keys seen are the entities' `belongs_to` relations.
    ///
    /// A change the destination refuses rolls back the parts written beside it, so a
    /// halted destination holds the changes before that one and none after.
    ///
    /// The connection pool given to [`new`](Self::new) needs `k` connections to spare; a
    /// batch that cannot have them within two seconds goes through one. SQLite lets one
    /// transaction write at a time, so a SQLite destination applies through one whatever
    /// `k` is.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(backup: sea_orm::DatabaseConnection) {
    /// use ormsync::Destination;
    ///
    /// let dest = Destination::new("backup", backup).apply_connections(2);
    /// # }
    /// ```
    pub fn apply_connections(mut self, k: usize) -> Self {
        self.apply_connections = k.max(1);
        self
    }

    /// Creates the replicated tables the destination lacks, from the entity definitions
    /// (sea-orm's `Schema::create_table_from_entity` for the destination's backend),
    /// parents before the tables that reference them, before anything is copied or
    /// shipped. A table that exists is checked instead: if its columns differ from the
    /// entity's, the destination stops with [`Error::SchemaMismatch`](crate::Error::SchemaMismatch)
    /// naming them, and nothing is altered (unless it [evolves its schema](Self::evolve_schema)).
    /// Default: off (the application's migrations create the tables).
    pub fn create_tables(mut self) -> Self {
        self.create_tables = true;
        self
    }

    /// Adds to the destination's tables the columns their entities ship and they lack, so
    /// a migration at the source (a new field) does not stop replication until someone
    /// alters each destination by hand.
    ///
    /// Columns are added with `ALTER TABLE … ADD COLUMN` as [`create_tables`](Self::create_tables)
    /// would define them: the same type, nullable or with the entity's default. The worker
    /// adds the columns of every registered entity when it starts, and before it applies a
    /// change that carries a column the table lacks. The rows the table has take the
    /// default (or NULL), as the source's migration gives its own rows when it declares the
    /// same; [`verify`](crate::verify) finds any that differ.
    ///
    /// Evolution only adds. A column the table has and the entity does not is left alone,
    /// and never written. What cannot be added safely stops the destination with
    /// [`Error::SchemaEvolution`](crate::Error::SchemaEvolution) naming the table, the
    /// column and what to do, before anything is altered, and the changes wait in the
    /// outbox:
    ///
    /// - a column the table has with a narrower type than the entity's, or another kind;
    /// - a new column that is `NOT NULL` without a default, or part of a key;
    /// - a column the entity says it was renamed from (`renamed_from`), still at the
    ///   destination under its old name;
    /// - a column the changes carry that this replicator's entities do not define (a
    ///   newer application version writes while an older one replicates).
    ///
    /// Default: off; a change carrying a column the table lacks then stops the destination
    /// with [`Error::MissingColumn`](crate::Error::MissingColumn).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(backup: sea_orm::DatabaseConnection) {
    /// use ormsync::Destination;
    ///
    /// let backup = Destination::new("backup", backup).create_tables().evolve_schema();
    /// # }
    /// ```
    pub fn evolve_schema(mut self) -> Self {
        self.evolve_schema = true;
        self
    }

    /// How this destination finds the rows of `E`. Default: [`KeyStrategy::SameKey`].
    ///
    /// Foreign keys of other entities that point at `E`'s rows follow: they are written
    /// with the destination's keys of those rows, and a row whose parent has not arrived
    /// waits (by [`on_permanent_error`](Self::on_permanent_error)) instead of pointing at
    /// the wrong row.
    ///
    /// ```no_run
    /// # mod customers { use sea_orm::entity::prelude::*;
    /// #   #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    /// #   #[sea_orm(table_name = "customers")]
    /// #   pub struct Model { #[sea_orm(primary_key)] pub id: i64, pub email: String }
    /// #   #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)] pub enum Relation {} }
    /// # fn f(child: sea_orm::DatabaseConnection) {
    /// use ormsync::{Destination, KeyStrategy};
    ///
    /// let child = Destination::new("child", child)
    ///     .keys::<customers::Entity>(KeyStrategy::key_map().matching(["email"]));
    /// # }
    /// ```
    pub fn keys<E: Replicated>(mut self, strategy: KeyStrategy) -> Self {
        self.table::<E>().keys = strategy;
        self
    }

    /// Who wins when a row changed at the source was also changed here. Default:
    /// [`ConflictPolicy::SourceWins`].
    pub fn conflicts(mut self, policy: ConflictPolicy) -> Self {
        self.rules.conflicts = policy;
        self
    }

    /// The conflict policy of `E`'s table, over the destination's.
    pub fn conflicts_for<E: Replicated>(mut self, policy: ConflictPolicy) -> Self {
        self.table::<E>().conflicts = Some(policy);
        self
    }

    /// Raises [`AlertKind::Conflict`](crate::AlertKind::Conflict) for each conflict decision
    /// (they are recorded in the destination's `ormsync_conflicts` either way).
    pub fn alert_on_conflicts(mut self) -> Self {
        self.rules.alert_conflicts = true;
        self
    }

    /// Ships only the rows of `E` that `filter` accepts; see [`RowFilter`].
    pub fn filter<E: Replicated>(mut self, filter: RowFilter) -> Self {
        self.table::<E>().filter = Some(filter);
        self
    }

    /// Never ships `column` to this destination (it need not exist there).
    ///
    /// ```no_run
    /// # mod users { use sea_orm::entity::prelude::*;
    /// #   #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    /// #   #[sea_orm(table_name = "users")]
    /// #   pub struct Model { #[sea_orm(primary_key)] pub id: i64, pub email: String, pub api_token: String }
    /// #   #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)] pub enum Relation {} }
    /// # fn f(staging: sea_orm::DatabaseConnection) {
    /// use ormsync::{Destination, Transform};
    ///
    /// let staging = Destination::new("staging", staging)
    ///     .drop_column(users::Column::ApiToken)
    ///     .transform(users::Column::Email, Transform::mask_email());
    /// # }
    /// ```
    pub fn drop_column<C: ColumnTrait>(mut self, column: C) -> Self {
        let name = column.as_str().to_string();
        self.table_named(C::EntityName::default().table_name())
            .drop
            .push(name);
        self
    }

    /// Ships `column` through `transform` (masking, nulling) to this destination: it never
    /// holds the original value.
    pub fn transform<C: ColumnTrait>(mut self, column: C, transform: Transform) -> Self {
        let name = column.as_str().to_string();
        self.table_named(C::EntityName::default().table_name())
            .transforms
            .push((name, transform));
        self
    }

    fn table<E: Replicated>(&mut self) -> &mut TableRules {
        self.table_named(E::default().table_name())
    }

    fn table_named(&mut self, table: &str) -> &mut TableRules {
        self.rules.tables.entry(table.to_string()).or_default()
    }

    /// The destination's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for Destination {
    // The connection is left out: its options may hold a URL with a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Destination")
            .field("name", &self.name)
            .field("backend", &self.db.get_database_backend())
            .field("skip", &self.skip)
            .field("on_permanent_error", &self.on_permanent_error)
            .field("schedule", &self.schedule)
            .field("disabled", &self.disabled)
            .field("initial_snapshot", &self.initial_snapshot)
            .field("chunk_rows", &self.chunk_rows)
            .field("create_tables", &self.create_tables)
            .field("evolve_schema", &self.evolve_schema)
            .field("conflicts", &self.rules.conflicts)
            .field("own_sink", &self.sink.is_some())
            .finish()
    }
}
