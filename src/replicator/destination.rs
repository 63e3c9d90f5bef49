//! Where changes go.

use std::collections::HashSet;
use std::fmt;

use sea_orm::DatabaseConnection;

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
}

impl Destination {
    /// A destination called `name` (in status, alerts and errors), writing through `db`.
    pub fn new(name: impl Into<String>, db: DatabaseConnection) -> Self {
        Destination {
            name: name.into(),
            db,
            skip: HashSet::new(),
        }
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
            .finish()
    }
}
