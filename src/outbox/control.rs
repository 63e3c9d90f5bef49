//! `ormsync_control`: what an operator asks of the replicators of a source, from any
//! process (the `ormsync` command line, or [`Replicator`](crate::Replicator) methods).
//!
//! A row per destination holds a persistent pause flag and two counters: `resumes` tells
//! a halted worker to try again, `letters` tells workers that the dead letters changed
//! (replayed or discarded elsewhere) and must be read again, and `replays` asks the
//! instance that ships to the destination to replay its dead letters, with the
//! destination's own rules (key mapping, filters, transforms), and to record the outcome;
//! `resyncs` asks the same instance to copy tables again (see
//! [`Replicator::resync`](crate::Replicator::resync)) and to record whether it succeeded.
//! Workers read their row about
//! once per poll interval (at most once a second), so a request takes effect within that.

use sea_orm::{ConnectionTrait, Statement};
use serde::Serialize;

use crate::error::{DbContext, Result};
use crate::sql_text::{insert_if_absent, marks};

/// A destination's row in `ormsync_control`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Control {
    /// Paused by an operator: no instance ships to it until resumed.
    pub paused: bool,
    /// How many times it was resumed (a change tells a halted worker to retry).
    pub resumes: i64,
    /// How many times its dead letters were replayed or discarded.
    pub letters: i64,
    /// How many replays of its dead letters were asked of the running replicator.
    pub replays: i64,
    /// Up to which request the replicator has replayed them.
    pub replays_done: i64,
    /// Changes the last replay applied.
    pub replayed: i64,
    /// Changes that failed again in the last replay (-1: the replay itself failed).
    pub replay_failed: i64,
    /// How many resyncs were asked of the running replicator.
    pub resyncs: i64,
    /// Up to which request the replicator has finished (or failed) a resync.
    pub resyncs_done: i64,
}

/// The last resync asked through `ormsync_control`, and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ResyncRequest {
    /// The tables to copy again; empty for every table the destination receives.
    pub tables: Vec<String>,
    /// Why the last finished resync failed (passwords redacted); `None` when it succeeded
    /// or none finished yet.
    pub error: Option<String>,
}

/// Pauses `destination` for every replicator instance of this source, until [`resume`].
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the source cannot be written.
pub async fn pause<C: ConnectionTrait>(db: &C, destination: &str) -> Result<()> {
    update(db, destination, "paused = 1").await
}

/// Resumes a paused or halted `destination` (a halted one retries the change it stopped on).
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the source cannot be written.
pub async fn resume<C: ConnectionTrait>(db: &C, destination: &str) -> Result<()> {
    update(db, destination, "paused = 0, resumes = resumes + 1").await
}

/// Clears the pause flag of `destination` without asking a halted worker to retry.
pub(crate) async fn unpause<C: ConnectionTrait>(db: &C, destination: &str) -> Result<()> {
    update(db, destination, "paused = 0").await
}

/// Asks the replicator instance shipping to `destination` to replay its dead letters;
/// returns the request's number, which [`Control::replays_done`] reaches once it is done.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the source cannot be written.
pub async fn request_replay<C: ConnectionTrait>(db: &C, destination: &str) -> Result<i64> {
    update(db, destination, "replays = replays + 1").await?;
    Ok(read(db, destination).await?.replays)
}

/// Records the outcome of the replay asked by request `request`.
pub(crate) async fn replay_done<C: ConnectionTrait>(
    db: &C,
    destination: &str,
    request: i64,
    replayed: i64,
    failed: i64,
) -> Result<()> {
    let backend = db.get_database_backend();
    let sql = marks(
        backend,
        "UPDATE ormsync_control SET replays_done = ?, replayed = ?, replay_failed = ? \
         WHERE destination = ?",
    );
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [
            request.into(),
            replayed.into(),
            failed.into(),
            destination.into(),
        ],
    ))
    .await
    .context(|| format!("recording a replay of `{destination}`"))?;
    Ok(())
}

/// Asks the replicator instance shipping to `destination` to copy `tables` again (all it
/// receives when empty); returns the request's number, which [`Control::resyncs_done`]
/// reaches once the resync finished, [`resync_request`] telling whether it failed.
///
/// A later request replaces the tables of one not taken in yet.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the source cannot be written.
pub async fn request_resync<C: ConnectionTrait>(
    db: &C,
    destination: &str,
    tables: &[String],
) -> Result<i64> {
    // Serializing a list of strings cannot fail.
    let list = serde_json::to_string(tables).unwrap_or_else(|_| "[]".into());
    update(db, destination, "resync_error = NULL").await?;
    let backend = db.get_database_backend();
    let sql = marks(
        backend,
        "UPDATE ormsync_control SET resyncs = resyncs + 1, resync_tables = ? \
         WHERE destination = ?",
    );
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [list.into(), destination.into()],
    ))
    .await
    .context(|| format!("asking for a resync of `{destination}`"))?;
    Ok(read(db, destination).await?.resyncs)
}

/// Records the outcome of the resync asked by request `request`: `error` is `None` on
/// success, else a message already redacted.
pub(crate) async fn resync_done<C: ConnectionTrait>(
    db: &C,
    destination: &str,
    request: i64,
    error: Option<String>,
) -> Result<()> {
    let backend = db.get_database_backend();
    let sql = marks(
        backend,
        "UPDATE ormsync_control SET resyncs_done = ?, resync_error = ? WHERE destination = ?",
    );
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [request.into(), error.into(), destination.into()],
    ))
    .await
    .context(|| format!("recording a resync of `{destination}`"))?;
    Ok(())
}

/// The tables of the last resync asked for `destination`, and how the last finished one
/// ended.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the source cannot be read, or its list of tables
/// is not a JSON array of names.
pub async fn resync_request<C: ConnectionTrait>(
    db: &C,
    destination: &str,
) -> Result<ResyncRequest> {
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            marks(
                backend,
                "SELECT resync_tables, resync_error FROM ormsync_control WHERE destination = ?",
            ),
            [destination.into()],
        ))
        .await
        .context(|| format!("reading the resync asked of `{destination}`"))?;
    let Some(row) = row else {
        return Ok(ResyncRequest::default());
    };
    let decode = || format!("decoding the resync asked of `{destination}`");
    let tables: Option<String> = row.try_get("", "resync_tables").context(decode)?;
    let error: Option<String> = row.try_get("", "resync_error").context(decode)?;
    let tables = match tables {
        Some(t) => serde_json::from_str(&t).map_err(|e| {
            crate::Error::Config(format!(
                "the resync asked of `{destination}` names no valid list of tables: {e}"
            ))
        })?,
        None => Vec::new(),
    };
    Ok(ResyncRequest { tables, error })
}

/// Tells the workers of `destination` that its dead letters changed.
pub(crate) async fn letters_changed<C: ConnectionTrait>(db: &C, destination: &str) -> Result<()> {
    update(db, destination, "letters = letters + 1").await
}

/// The control row of `destination`; the default when none was written.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the source cannot be read.
pub async fn read<C: ConnectionTrait>(db: &C, destination: &str) -> Result<Control> {
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            marks(
                backend,
                "SELECT paused, resumes, letters, replays, replays_done, replayed, replay_failed, \
                 resyncs, resyncs_done FROM ormsync_control WHERE destination = ?",
            ),
            [destination.into()],
        ))
        .await
        .context(|| format!("reading the control row of `{destination}`"))?;
    let Some(row) = row else {
        return Ok(Control::default());
    };
    let get = |c: &str| {
        row.try_get::<i64>("", c)
            .or_else(|_| row.try_get::<i32>("", c).map(i64::from))
            .context(|| format!("decoding the control row of `{destination}`"))
    };
    Ok(Control {
        paused: get("paused")? != 0,
        resumes: get("resumes")?,
        letters: get("letters")?,
        replays: get("replays")?,
        replays_done: get("replays_done")?,
        replayed: get("replayed")?,
        replay_failed: get("replay_failed")?,
        resyncs: get("resyncs")?,
        resyncs_done: get("resyncs_done")?,
    })
}

/// The destinations paused through `ormsync_control`.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the source cannot be read.
pub async fn paused<C: ConnectionTrait>(db: &C) -> Result<Vec<String>> {
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT destination FROM ormsync_control WHERE paused <> 0 ORDER BY destination",
        ))
        .await
        .context(|| "reading `ormsync_control`".into())?;
    rows.iter()
        .map(|r| {
            r.try_get::<String>("", "destination")
                .context(|| "reading `ormsync_control`".into())
        })
        .collect()
}

async fn update<C: ConnectionTrait>(db: &C, destination: &str, set: &str) -> Result<()> {
    let backend = db.get_database_backend();
    let create = insert_if_absent(backend, "ormsync_control (destination) VALUES (?)");
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        create,
        [destination.into()],
    ))
    .await
    .context(|| format!("writing the control row of `{destination}`"))?;
    let sql = marks(
        backend,
        &format!("UPDATE ormsync_control SET {set} WHERE destination = ?"),
    );
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [destination.into()],
    ))
    .await
    .context(|| format!("writing the control row of `{destination}`"))?;
    Ok(())
}
