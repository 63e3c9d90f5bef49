//! `ormsync_progress`: a copy, at the source, of each destination's position, for status
//! and retention.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{ConnectionTrait, Statement};

use crate::error::{DbContext, Result};
use crate::position::Position;
use crate::sql_text::{insert_if_absent, marks};

/// Registers `destination` at zero unless it has progress already, so retention keeps
/// its changes from the moment it is configured.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the source cannot be written.
pub async fn register<C: ConnectionTrait>(db: &C, destination: &str) -> Result<()> {
    let backend = db.get_database_backend();
    let sql = insert_if_absent(
        backend,
        "ormsync_progress (destination, watermark, frontier) VALUES (?, 0, 0)",
    );
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [destination.into()],
    ))
    .await
    .context(|| format!("registering `{destination}` at the source"))?;
    Ok(())
}

/// Records the state of `destination` as the instance shipping to it sees it, with its
/// last error (redacted), for `ormsync status` to show without a running replicator.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the source cannot be written.
pub async fn record_state<C: ConnectionTrait>(
    db: &C,
    destination: &str,
    state: &str,
    last_error: Option<&str>,
) -> Result<()> {
    let backend = db.get_database_backend();
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        marks(
            backend,
            "UPDATE ormsync_progress SET state = ?, last_error = ? WHERE destination = ?",
        ),
        [
            state.into(),
            last_error.map(str::to_string).into(),
            destination.into(),
        ],
    ))
    .await
    .context(|| format!("recording the state of `{destination}` at the source"))?;
    Ok(())
}

/// The state and last error each destination's shipping instance last recorded, by name.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the source cannot be read.
pub async fn states<C: ConnectionTrait>(
    db: &C,
) -> Result<Vec<(String, Option<String>, Option<String>)>> {
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT destination, state, last_error FROM ormsync_progress ORDER BY destination",
        ))
        .await
        .context(|| "reading `ormsync_progress`".into())?;
    rows.iter()
        .map(|r| {
            let read = || "reading `ormsync_progress`".to_string();
            Ok((
                r.try_get("", "destination").context(read)?,
                r.try_get("", "state").context(read)?,
                r.try_get("", "last_error").context(read)?,
            ))
        })
        .collect()
}

/// Forgets `destination`'s progress, so it no longer holds back retention.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the source cannot be written.
pub async fn forget<C: ConnectionTrait>(db: &C, destination: &str) -> Result<()> {
    let backend = db.get_database_backend();
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        marks(
            backend,
            "DELETE FROM ormsync_progress WHERE destination = ?",
        ),
        [destination.into()],
    ))
    .await
    .context(|| format!("forgetting `{destination}` at the source"))?;
    Ok(())
}

/// Every destination's recorded progress: name, watermark and frontier, by name.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the source cannot be read.
pub async fn read_all<C: ConnectionTrait>(db: &C) -> Result<Vec<(String, i64, i64)>> {
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT destination, watermark, frontier FROM ormsync_progress ORDER BY destination",
        ))
        .await
        .context(|| "reading `ormsync_progress`".into())?;
    rows.iter()
        .map(|r| {
            let get = |c: &str| {
                r.try_get::<i64>("", c)
                    .context(|| "reading `ormsync_progress`".into())
            };
            Ok((
                r.try_get("", "destination")
                    .context(|| "reading `ormsync_progress`".into())?,
                get("watermark")?,
                get("frontier")?,
            ))
        })
        .collect()
}

/// Records `position` as the progress of `destination`.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the source cannot be written.
pub async fn record<C: ConnectionTrait>(
    db: &C,
    destination: &str,
    position: &Position,
) -> Result<()> {
    let q = Query::insert()
        .into_table("ormsync_progress")
        .columns(["destination", "watermark", "frontier", "anchor_id"])
        .values_panic([
            destination.into(),
            position.watermark.into(),
            position.frontier().into(),
            position.anchor.as_ref().map(|a| a.id).into(),
        ])
        .on_conflict(
            OnConflict::column("destination")
                .update_columns(["watermark", "frontier", "anchor_id"])
                .to_owned(),
        )
        .to_owned();
    db.execute(&q)
        .await
        .context(|| format!("recording the progress of `{destination}` at the source"))?;
    Ok(())
}

/// How many outbox changes `position` has not applied, when the oldest was captured, and
/// how many rows the outbox holds.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the outbox cannot be read.
pub async fn backlog<C: ConnectionTrait>(
    db: &C,
    position: &Position,
) -> Result<(u64, Option<DateTime<Utc>>, u64)> {
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            marks(
                backend,
                "SELECT COUNT(*) AS n, MIN(created_at) AS oldest, \
                 (SELECT COUNT(*) FROM ormsync_outbox) AS total FROM ormsync_outbox WHERE id > ?",
            ),
            [position.watermark.into()],
        ))
        .await
        .context(|| "counting the backlog".into())?;
    let Some(row) = row else {
        return Ok((0, None, 0));
    };
    let total: i64 = row
        .try_get("", "total")
        .context(|| "counting the outbox".into())?;
    let above_watermark: i64 = row
        .try_get("", "n")
        .context(|| "counting the backlog".into())?;
    // Ids above the watermark that are applied are still in the outbox; they are not pending.
    let pending = (above_watermark.max(0) as u64).saturating_sub(position.above.len());
    let oldest = if pending == 0 {
        None
    } else {
        row.try_get::<Option<DateTime<Utc>>>("", "oldest")
            .ok()
            .flatten()
    };
    Ok((pending, oldest, total.max(0) as u64))
}
