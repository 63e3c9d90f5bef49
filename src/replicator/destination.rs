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
            .finish()
    }
}
