//! `ormsync_checkpoint`: how far a destination has applied each source, stored in the
//! destination and moved in the same transaction as the changes it records.

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::error::{DbContext, Error, Result};
use crate::position::{Anchor, Position};
use crate::sql_text::{insert_if_absent, marks};

/// Reads and locks the checkpoint of `source` inside the caller's transaction, creating it
/// at zero the first time.
///
/// The lock is what makes two shippers racing at a lease hand-over safe: the second waits
/// for the first to commit, then sees its position and skips what it applied.
pub(crate) async fn lock<C: ConnectionTrait>(txn: &C, source: &str) -> Result<Position> {
    let backend = txn.get_database_backend();
    if backend != DbBackend::MySql {
        // One round trip: the upsert creates the row or locks it (SQLite: takes the write
        // lock), and returns it.
        let sql = marks(
            backend,
            "INSERT INTO ormsync_checkpoint (source, watermark, applied) VALUES (?, 0, '[]') \
             ON CONFLICT (source) DO UPDATE SET source = excluded.source \
             RETURNING watermark, applied, anchor_id, anchor_digest",
        );
        return read_with(txn, &sql, source)
            .await?
            .ok_or_else(|| Error::Config("the checkpoint upsert returned no row".into()));
    }
    // MySQL has no RETURNING: read with a lock, and create the row the first time. Not
    // the other way round: `INSERT IGNORE` of a row that exists takes a shared lock on
    // it, and two transactions each holding one and asking for the exclusive lock
    // deadlock (the parts of a batch applied at once all lock the checkpoint).
    let select = "SELECT watermark, applied, anchor_id, anchor_digest FROM ormsync_checkpoint \
                  WHERE source = ? FOR UPDATE";
    if let Some(position) = read_with(txn, select, source).await? {
        return Ok(position);
    }
    let create = insert_if_absent(
        backend,
        "ormsync_checkpoint (source, watermark, applied) VALUES (?, 0, '[]')",
    );
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        create,
        [source.into()],
    ))
    .await
    .context(|| "creating the destination's checkpoint".into())?;
    read_with(txn, select, source).await?.ok_or_else(|| {
        Error::Config("the checkpoint row vanished inside its own transaction".into())
    })
}

/// The checkpoint of `source`, without locking; `None` before the first batch.
pub async fn read<C: ConnectionTrait>(db: &C, source: &str) -> Result<Option<Position>> {
    let sql = match db.get_database_backend() {
        DbBackend::Postgres => {
            "SELECT watermark, applied, anchor_id, anchor_digest FROM ormsync_checkpoint \
             WHERE source = $1"
        }
        _ => {
            "SELECT watermark, applied, anchor_id, anchor_digest FROM ormsync_checkpoint \
             WHERE source = ?"
        }
    };
    read_with(db, sql, source).await
}

async fn read_with<C: ConnectionTrait>(
    db: &C,
    sql: &str,
    source: &str,
) -> Result<Option<Position>> {
    let backend = db.get_database_backend();
    let Some(row) = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [source.into()],
        ))
        .await
        .context(|| "reading the destination's checkpoint".into())?
    else {
        return Ok(None);
    };
    let watermark: i64 = row
        .try_get("", "watermark")
        .context(|| "decoding the checkpoint".into())?;
    let applied: String = row
        .try_get("", "applied")
        .context(|| "decoding the checkpoint".into())?;
    let mut position = Position::from_stored(watermark, &applied)
        .map_err(|e| Error::Config(format!("the checkpoint of source {source} is corrupt: {e}")))?;
    let anchor_id: Option<i64> = row
        .try_get("", "anchor_id")
        .context(|| "decoding the checkpoint".into())?;
    let digest: Option<String> = row
        .try_get("", "anchor_digest")
        .context(|| "decoding the checkpoint".into())?;
    if let (Some(id), Some(digest)) = (anchor_id, digest) {
        position.anchor = Some(Anchor { id, digest });
    }
    Ok(Some(position))
}

/// Writes `position` as the checkpoint of `source`, inside the caller's transaction.
pub(crate) async fn store<C: ConnectionTrait>(
    txn: &C,
    source: &str,
    position: &Position,
) -> Result<()> {
    let backend = txn.get_database_backend();
    let now = match backend {
        DbBackend::Postgres => "now()",
        DbBackend::MySql => "CURRENT_TIMESTAMP(6)",
        _ => "strftime('%Y-%m-%dT%H:%M:%fZ','now')",
    };
    let sql = marks(
        backend,
        &format!(
            "UPDATE ormsync_checkpoint SET watermark = ?, applied = ?, anchor_id = ?, \
             anchor_digest = ?, updated_at = {now} WHERE source = ?"
        ),
    );
    let anchor = position.anchor.as_ref();
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [
            position.watermark.into(),
            position.above_json().into(),
            anchor.map(|a| a.id).into(),
            anchor.map(|a| a.digest.clone()).into(),
            source.into(),
        ],
    ))
    .await
    .context(|| "advancing the destination's checkpoint".into())?;
    Ok(())
}
