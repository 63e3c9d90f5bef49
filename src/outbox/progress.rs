//! `ormsync_progress`: a copy, at the source, of each destination's position, for status
//! and (later) retention.

use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{OnConflict, Query};

use crate::error::{DbContext, Result};
use crate::position::Position;

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
