//! Deleting outbox rows every destination has applied, in bounded steps.

use std::time::Duration;

use chrono::Utc;
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use crate::error::{DbContext, Result};
use crate::sql_text::marks;

/// Deletes the outbox rows with ids up to `up_to`, at most `step` ids per statement, so no
/// statement holds locks on more than `step` rows and writers never wait long. Returns the
/// rows deleted.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when a delete fails; what was deleted stays deleted.
pub async fn purge<C: ConnectionTrait>(db: &C, up_to: i64, step: i64) -> Result<u64> {
    let backend = db.get_database_backend();
    let Some(mut lo) = scalar_id(db, "SELECT MIN(id) FROM ormsync_outbox", None).await? else {
        return Ok(0);
    };
    let step = step.max(1);
    let mut deleted = 0;
    while lo <= up_to {
        let hi = (lo + step - 1).min(up_to);
        deleted += db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                marks(
                    backend,
                    "DELETE FROM ormsync_outbox WHERE id >= ? AND id <= ?",
                ),
                [lo.into(), hi.into()],
            ))
            .await
            .context(|| "deleting applied outbox rows".into())?
            .rows_affected();
        lo = hi + 1;
    }
    Ok(deleted)
}

/// The highest outbox id captured more than `age` ago.
pub(crate) async fn last_id_older_than<C: ConnectionTrait>(
    db: &C,
    age: Duration,
) -> Result<Option<i64>> {
    let cutoff = Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    let bound: Value = match db.get_database_backend() {
        // Stored as text in this format, so it compares as text.
        DbBackend::Sqlite => cutoff.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string().into(),
        _ => cutoff.into(),
    };
    scalar_id(
        db,
        "SELECT MAX(id) FROM ormsync_outbox WHERE created_at < ?",
        Some(bound),
    )
    .await
}

/// The highest outbox id.
pub(crate) async fn last_id<C: ConnectionTrait>(db: &C) -> Result<Option<i64>> {
    scalar_id(db, "SELECT MAX(id) FROM ormsync_outbox", None).await
}

async fn scalar_id<C: ConnectionTrait>(
    db: &C,
    sql: &str,
    value: Option<Value>,
) -> Result<Option<i64>> {
    let backend = db.get_database_backend();
    let stmt = match value {
        Some(v) => Statement::from_sql_and_values(backend, marks(backend, sql), [v]),
        None => Statement::from_string(backend, sql),
    };
    let row = db
        .query_one_raw(stmt)
        .await
        .context(|| "reading outbox ids".into())?;
    Ok(row.and_then(|r| r.try_get_by_index::<Option<i64>>(0).ok().flatten()))
}
