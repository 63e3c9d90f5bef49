//! Source side: the outbox table, the source's identity, and gap-safe reading.

pub mod control;
pub mod dead_letters;
pub mod entities;
mod gaps;
pub mod overview;
pub mod progress;
mod reader;
pub mod retention;
pub(crate) mod visible;

pub use reader::OutboxReader;

use sea_orm::{ConnectionTrait, Statement};

use crate::error::{DbContext, Error, Result};
use crate::sql_text::insert_if_absent;

/// The outbox table's name.
pub(crate) const OUTBOX: &str = "ormsync_outbox";

/// The source's stable identity, created on first use.
///
/// Destinations key their checkpoint by it, so two sources feeding one destination keep
/// separate positions, and a source that is re-created from scratch starts a new one.
///
/// # Errors
///
/// [`Error::Db`] when `ormsync_node` cannot be read or written.
pub async fn node_id<C: ConnectionTrait>(db: &C) -> Result<String> {
    let backend = db.get_database_backend();
    let candidate = uuid::Uuid::new_v4().to_string();
    let insert = insert_if_absent(backend, "ormsync_node (singleton, id) VALUES (1, ?)");
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        insert,
        [candidate.into()],
    ))
    .await
    .context(|| "recording the source's node id in `ormsync_node`".into())?;
    let row = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT id FROM ormsync_node WHERE singleton = 1",
        ))
        .await
        .context(|| "reading the source's node id".into())?
        .ok_or_else(|| Error::Config("`ormsync_node` is empty after insert".into()))?;
    row.try_get::<String>("", "id")
        .context(|| "decoding the source's node id".into())
}
