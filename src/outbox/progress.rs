//! `ormsync_progress`: a copy, at the source, of each destination's position, for status
//! and retention.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{ConnectionTrait, Statement};

use crate::error::{DbContext, Result};
use crate::position::Position;
use crate::sql_text::marks;

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
        .columns(["destination", "watermark", "frontier"])
        .values_panic([
            destination.into(),
            position.watermark.into(),
            position.frontier().into(),
        ])
        .on_conflict(
            OnConflict::column("destination")
                .update_columns(["watermark", "frontier"])
                .to_owned(),
        )
        .to_owned();
    db.execute(&q)
        .await
        .context(|| format!("recording the progress of `{destination}` at the source"))?;
    Ok(())
}

/// How many outbox changes `position` has not applied, and when the oldest was captured.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the outbox cannot be read.
pub async fn backlog<C: ConnectionTrait>(
    db: &C,
    position: &Position,
) -> Result<(u64, Option<DateTime<Utc>>)> {
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            marks(
                backend,
                "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM ormsync_outbox WHERE id > ?",
            ),
            [position.watermark.into()],
        ))
        .await
        .context(|| "counting the backlog".into())?;
    let Some(row) = row else {
        return Ok((0, None));
    };
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
    Ok((pending, oldest))
}
