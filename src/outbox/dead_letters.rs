//! `ormsync_dead_letters`: changes a destination refused for good, parked at the source
//! with the error, until a person replays or discards them.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement, Value as SeaValue};
use serde::Serialize;

use crate::change::{Change, Op, Row};
use crate::error::{DbContext, Error, Result};
use crate::outbox::control;
use crate::sql_text::{insert_if_absent, marks};

/// What a dead-letter replay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Parked changes applied and removed from `ormsync_dead_letters`.
    pub replayed: u64,
    /// Parked changes that failed again and stay parked.
    pub failed: u64,
}

/// A parked change.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetter {
    /// The destination that refused it.
    pub destination: String,
    /// Its outbox id.
    pub outbox_id: i64,
    /// The table.
    pub table: String,
    /// Insert, update or delete.
    pub op: Op,
    /// The primary key, as the outbox's JSON.
    pub key: String,
    /// The last error (redacted).
    pub error: String,
    /// How many times it was tried (parking and replays).
    pub attempts: i32,
    /// When it was first parked.
    pub created_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub(crate) payload: String,
}

impl DeadLetter {
    /// The change, as it can be applied again.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when the stored key or payload is not valid.
    pub fn change(&self) -> Result<Change> {
        let bad = |reason: String| Error::Decode {
            id: self.outbox_id,
            reason,
        };
        Ok(Change {
            id: self.outbox_id,
            table: self.table.clone(),
            op: self.op,
            key: Row::from_json(&self.key).map_err(|e| bad(format!("key: {e}")))?,
            row: Row::from_json(&self.payload).map_err(|e| bad(format!("payload: {e}")))?,
            origin: None,
            created_at: self.created_at,
        })
    }
}

fn sql(backend: DbBackend, mysql: &str, other: &str) -> String {
    marks(
        backend,
        if backend == DbBackend::MySql {
            mysql
        } else {
            other
        },
    )
}

/// Parks `change` for `destination` with `error`, or counts one more attempt if it is
/// parked already (parking twice after a crash is harmless).
pub(crate) async fn park<C: ConnectionTrait>(
    db: &C,
    destination: &str,
    change: &Change,
    error: &str,
) -> Result<()> {
    let backend = db.get_database_backend();
    let stmt = sql(
        backend,
        "INSERT INTO ormsync_dead_letters (destination, outbox_id, table_name, op, pk, payload, error, attempts) \
         VALUES (?, ?, ?, ?, ?, ?, ?, 1) ON DUPLICATE KEY UPDATE error = VALUES(error), attempts = attempts + 1",
        "INSERT INTO ormsync_dead_letters (destination, outbox_id, table_name, op, pk, payload, error, attempts) \
         VALUES (?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (destination, outbox_id) \
         DO UPDATE SET error = excluded.error, attempts = ormsync_dead_letters.attempts + 1",
    );
    insert(db, &stmt, destination, change, error).await
}

async fn insert<C: ConnectionTrait>(
    db: &C,
    stmt: &str,
    destination: &str,
    change: &Change,
    error: &str,
) -> Result<()> {
    let backend = db.get_database_backend();
    let values: [SeaValue; 7] = [
        destination.into(),
        change.id.into(),
        change.table.clone().into(),
        change.op.code().into(),
        change.key.to_json().into(),
        change.row.to_json().into(),
        error.into(),
    ];
    db.execute_raw(Statement::from_sql_and_values(backend, stmt, values))
        .await
        .context(|| {
            format!(
                "parking change {} of `{destination}` in ormsync_dead_letters",
                change.id
            )
        })?;
    Ok(())
}

/// Parks the outbox row `outbox_id` for `destination` as it is stored, with `error`: for a
/// row that does not decode into a change (a corrupt payload, an unknown table), or that an
/// operator parks on purpose (`ormsync dead-letters park`). Parking it again counts one more
/// attempt. Returns whether the outbox holds the row.
///
/// # Errors
///
/// [`Error::Db`] when the source cannot be read or written.
pub async fn park_stored<C: ConnectionTrait>(
    db: &C,
    destination: &str,
    outbox_id: i64,
    error: &str,
) -> Result<bool> {
    let backend = db.get_database_backend();
    let select = "SELECT ?, id, table_name, op, pk, payload, ?, 1 FROM ormsync_outbox WHERE id = ?";
    let stmt = sql(
        backend,
        &format!(
            "INSERT INTO ormsync_dead_letters (destination, outbox_id, table_name, op, pk, payload, error, attempts) \
             {select} ON DUPLICATE KEY UPDATE error = VALUES(error), attempts = attempts + 1"
        ),
        // `WHERE true` keeps SQLite from reading `ON CONFLICT` as part of a join.
        &format!(
            "INSERT INTO ormsync_dead_letters (destination, outbox_id, table_name, op, pk, payload, error, attempts) \
             {select} AND true ON CONFLICT (destination, outbox_id) \
             DO UPDATE SET error = excluded.error, attempts = ormsync_dead_letters.attempts + 1"
        ),
    );
    let done = db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            stmt,
            [destination.into(), error.into(), outbox_id.into()],
        ))
        .await
        .context(|| format!("parking outbox row {outbox_id} of `{destination}` as it is stored"))?;
    Ok(done.rows_affected() > 0)
}

/// Parks the change `outbox_id` for `destination` on an operator's word, as it is stored,
/// so that destination goes on without it: for a change it halts on, or one that does not
/// even decode. It can be replayed or discarded like any parked change, and later changes
/// of its row wait behind it. Running replicators are told to read the dead letters again;
/// a halted destination then needs [`control::resume`].
///
/// # Errors
///
/// [`Error::UnknownDestination`] when the source has no progress recorded for
/// `destination`; [`Error::NotParkable`] when the outbox has no such change or the
/// destination applied it already; [`Error::Db`] when the source cannot be read or
/// written.
pub async fn park_by_hand<C: ConnectionTrait>(
    db: &C,
    destination: &str,
    outbox_id: i64,
) -> Result<()> {
    let progress = crate::outbox::progress::read_all(db).await?;
    let (_, watermark, _) = progress
        .iter()
        .find(|(name, _, _)| name == destination)
        .ok_or_else(|| Error::UnknownDestination(destination.to_string()))?;
    if outbox_id <= *watermark {
        return Err(Error::NotParkable {
            destination: destination.to_string(),
            id: outbox_id,
            reason: format!("it applied every change up to {watermark} already"),
        });
    }
    if !park_stored(db, destination, outbox_id, "parked by an operator").await? {
        return Err(Error::NotParkable {
            destination: destination.to_string(),
            id: outbox_id,
            reason: "the outbox holds no change with that id".into(),
        });
    }
    control::letters_changed(db, destination).await
}

/// Whether the outbox row `outbox_id` is parked for `destination`.
pub(crate) async fn is_parked<C: ConnectionTrait>(
    db: &C,
    destination: &str,
    outbox_id: i64,
) -> Result<bool> {
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            marks(
                backend,
                "SELECT COUNT(*) AS n FROM ormsync_dead_letters WHERE destination = ? AND outbox_id = ?",
            ),
            [destination.into(), outbox_id.into()],
        ))
        .await
        .context(|| format!("reading the dead letters of `{destination}`"))?;
    Ok(row
        .and_then(|r| r.try_get_by_index::<i64>(0).ok())
        .is_some_and(|n| n > 0))
}

/// What [`park_behind`] did with a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Behind {
    /// Its row has no parked change: it goes on.
    Free,
    /// It was parked already: a batch read again met the change that was parked itself.
    Already,
    /// It is parked now, behind an earlier change of its row.
    Now,
}

impl Behind {
    /// Whether the change is parked.
    pub(crate) fn parked(self) -> bool {
        self != Behind::Free
    }
}

/// Parks `change` behind the parked changes of its row, if its row still has any (they
/// may have been replayed or discarded by another process since the caller looked). A
/// change parked already stays as it is, with its own error.
pub(crate) async fn park_behind<C: ConnectionTrait>(
    db: &C,
    destination: &str,
    change: &Change,
) -> Result<Behind> {
    let backend = db.get_database_backend();
    let key = change.key.to_json();
    let parked = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            marks(
                backend,
                "SELECT outbox_id FROM ormsync_dead_letters \
                 WHERE destination = ? AND table_name = ? AND pk = ?",
            ),
            [destination.into(), change.table.clone().into(), key.into()],
        ))
        .await
        .context(|| format!("reading the dead letters of `{destination}`"))?;
    let ids: Vec<i64> = parked
        .iter()
        .filter_map(|r| r.try_get::<i64>("", "outbox_id").ok())
        .collect();
    if ids.is_empty() {
        return Ok(Behind::Free);
    }
    if ids.contains(&change.id) {
        return Ok(Behind::Already);
    }
    let stmt = insert_if_absent(
        backend,
        "ormsync_dead_letters (destination, outbox_id, table_name, op, pk, payload, error, attempts) \
         VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
    );
    let why = "parked behind an earlier change of the same row";
    insert(db, &stmt, destination, change, why).await?;
    Ok(Behind::Now)
}

/// The changes parked for `destination`, oldest first.
///
/// # Errors
///
/// [`Error::Db`] when the table cannot be read.
pub async fn list<C: ConnectionTrait>(db: &C, destination: &str) -> Result<Vec<DeadLetter>> {
    let backend = db.get_database_backend();
    let stmt = marks(
        backend,
        "SELECT destination, outbox_id, table_name, op, pk, payload, error, attempts, created_at \
         FROM ormsync_dead_letters WHERE destination = ? ORDER BY outbox_id",
    );
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            stmt,
            [destination.into()],
        ))
        .await
        .context(|| format!("reading the dead letters of `{destination}`"))?;
    rows.iter().map(decode).collect()
}

fn decode(row: &QueryResult) -> Result<DeadLetter> {
    let get = |c: &str| {
        row.try_get::<String>("", c)
            .context(|| format!("decoding a dead letter's {c}"))
    };
    let outbox_id: i64 = row
        .try_get("", "outbox_id")
        .context(|| "decoding a dead letter".into())?;
    let op = get("op")?;
    Ok(DeadLetter {
        destination: get("destination")?,
        outbox_id,
        table: get("table_name")?,
        op: Op::from_code(&op).ok_or_else(|| Error::Decode {
            id: outbox_id,
            reason: format!("unknown op `{op}`"),
        })?,
        key: get("pk")?,
        payload: get("payload")?,
        error: get("error")?,
        attempts: row
            .try_get("", "attempts")
            .context(|| "decoding a dead letter".into())?,
        created_at: row.try_get("", "created_at").ok(),
    })
}

/// The rows (table and key) that have a change parked for `destination`: later changes of
/// those rows are parked behind it, so none overtakes it.
pub(crate) async fn blocked_rows<C: ConnectionTrait>(
    db: &C,
    destination: &str,
) -> Result<HashSet<(String, String)>> {
    Ok(list(db, destination)
        .await?
        .into_iter()
        .map(|d| (d.table, d.key))
        .collect())
}

/// Removes the given parked changes of `destination`.
pub(crate) async fn remove<C: ConnectionTrait>(
    db: &C,
    destination: &str,
    outbox_ids: &[i64],
) -> Result<u64> {
    let backend = db.get_database_backend();
    let mut removed = 0;
    for chunk in outbox_ids.chunks(500) {
        let list = vec!["?"; chunk.len()].join(", ");
        let stmt = marks(
            backend,
            &format!(
                "DELETE FROM ormsync_dead_letters WHERE destination = ? AND outbox_id IN ({list})"
            ),
        );
        let mut values: Vec<SeaValue> = vec![destination.into()];
        values.extend(chunk.iter().map(|&id| SeaValue::from(id)));
        removed += db
            .execute_raw(Statement::from_sql_and_values(backend, stmt, values))
            .await
            .context(|| format!("removing dead letters of `{destination}`"))?
            .rows_affected();
    }
    Ok(removed)
}

/// Records a failed replay of the given parked changes.
pub(crate) async fn failed_again<C: ConnectionTrait>(
    db: &C,
    destination: &str,
    outbox_ids: &[i64],
    error: &str,
) -> Result<()> {
    let backend = db.get_database_backend();
    for &id in outbox_ids {
        let stmt = marks(
            backend,
            "UPDATE ormsync_dead_letters SET error = ?, attempts = attempts + 1 WHERE destination = ? AND outbox_id = ?",
        );
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            stmt,
            [error.into(), destination.into(), id.into()],
        ))
        .await
        .context(|| format!("recording a failed replay for `{destination}`"))?;
    }
    Ok(())
}

/// Drops the given parked changes of `destination` without applying them (all of them
/// when `outbox_ids` is `None`); returns how many went. Running replicators are told to
/// read the dead letters again, so later changes of those rows ship.
///
/// # Errors
///
/// [`Error::Db`] when they cannot be removed.
pub async fn discard<C: ConnectionTrait>(
    source: &C,
    destination: &str,
    outbox_ids: Option<&[i64]>,
) -> Result<u64> {
    let all: Vec<i64>;
    let ids = match outbox_ids {
        Some(ids) => ids,
        None => {
            all = list(source, destination)
                .await?
                .iter()
                .map(|d| d.outbox_id)
                .collect();
            &all
        }
    };
    let removed = remove(source, destination, ids).await?;
    if removed > 0 {
        control::letters_changed(source, destination).await?;
    }
    Ok(removed)
}

/// How many changes are parked, per destination.
///
/// # Errors
///
/// [`Error::Db`] when the table cannot be read.
pub async fn counts<C: ConnectionTrait>(db: &C) -> Result<Vec<(String, u64)>> {
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT destination, COUNT(*) AS n FROM ormsync_dead_letters GROUP BY destination",
        ))
        .await
        .context(|| "counting the dead letters".into())?;
    rows.iter()
        .map(|r| {
            let name: String = r
                .try_get("", "destination")
                .context(|| "counting the dead letters".into())?;
            let n: i64 = r
                .try_get("", "n")
                .context(|| "counting the dead letters".into())?;
            Ok((name, n.max(0) as u64))
        })
        .collect()
}
