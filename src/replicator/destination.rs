//! Where changes go.

use std::collections::HashSet;
use std::fmt;

use sea_orm::DatabaseConnection;

use super::schedule::Schedule;

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
    pub(crate) create_tables: bool,
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
            chunk_rows: 1000,
            create_tables: false,
        }
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
    /// one destination transaction. Default: 1000.
    pub fn snapshot_chunk_rows(mut self, rows: u64) -> Self {
        self.chunk_rows = rows.max(1);
        self
    }

    /// Creates the replicated tables the destination lacks, from the entity definitions
    /// (sea-orm's `Schema::create_table_from_entity` for the destination's backend),
    /// parents before the tables that reference them, before anything is copied or
    /// shipped. A table that exists is checked instead: if its columns differ from the
    /// entity's, the destination stops with [`Error::SchemaMismatch`](crate::Error::SchemaMismatch)
    /// naming them, and nothing is altered. Default: off (the application's migrations
    /// create the tables).
    pub fn create_tables(mut self) -> Self {
        self.create_tables = true;
        self
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
            .finish()
    }
}
