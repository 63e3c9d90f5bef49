//! What the source alone tells about each destination: pause, lease, progress, backlog
//! and dead letters, read from the `ormsync_*` tables without a running replicator (the
//! `ormsync status` and `ormsync outbox` commands).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde::Serialize;

use crate::error::{DbContext, Result};
use crate::outbox::{control, dead_letters, progress};
use crate::position::Position;

/// The retention task's lease, which is no destination.
const RETENTION_LEASE: &str = "__ormsync_retention";

/// One destination, as recorded at the source.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DestinationOverview {
    /// The destination's name.
    pub name: String,
    /// Paused through `ormsync_control` (by `ormsync pause` or `Replicator::pause`).
    pub paused: bool,
    /// The replicator instance holding its lease now, if one does.
    pub lease_holder: Option<String>,
    /// What it is doing: the state its shipping instance recorded (`idle`, `copying`,
    /// `retrying`, `halted`, `disabled`…), `paused` when paused, and `not running` when
    /// no replicator holds its lease.
    pub state: String,
    /// The last error its shipping instance recorded (passwords redacted), until a pass
    /// succeeds again; kept when no replicator runs, as the last word on it.
    pub last_error: Option<String>,
    /// Every outbox id at or below this is applied (the progress copy at the source,
    /// refreshed at most once a second by the shipping instance).
    pub watermark: i64,
    /// The highest outbox id applied.
    pub frontier: i64,
    /// Outbox changes above the watermark (some may be applied already, above it).
    pub pending: u64,
    /// When the oldest of them was captured.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// How long ago that was, in seconds (by this machine's clock).
    pub lag_seconds: Option<f64>,
    /// Changes parked in `ormsync_dead_letters`.
    pub dead_letters: u64,
}

/// Every destination the source knows of, and the outbox's size.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overview {
    /// Rows in `ormsync_outbox`.
    pub outbox_size: u64,
    /// One entry per destination, by name.
    pub destinations: Vec<DestinationOverview>,
}

/// The pending changes of one table for one destination.
#[derive(Clone, Debug, Serialize)]
pub struct TableBacklog {
    /// The table.
    pub table: String,
    /// Outbox changes of it above the destination's watermark.
    pub pending: u64,
    /// When the oldest of them was captured.
    pub oldest: Option<DateTime<Utc>>,
}

/// Reads the overview of every destination registered, paused, leased or with dead
/// letters at the source.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the `ormsync_*` tables cannot be read.
pub async fn overview<C: ConnectionTrait>(db: &C) -> Result<Overview> {
    let mut all: BTreeMap<String, DestinationOverview> = BTreeMap::new();
    let entry = |all: &mut BTreeMap<String, DestinationOverview>, name: &str| {
        all.entry(name.to_string())
            .or_insert_with(|| DestinationOverview {
                name: name.to_string(),
                ..Default::default()
            })
            .name
            .clone()
    };
    for (name, watermark, frontier) in progress::read_all(db).await? {
        entry(&mut all, &name);
        if let Some(d) = all.get_mut(&name) {
            d.watermark = watermark;
            d.frontier = frontier;
        }
    }
    for (name, holder) in live_leases(db).await? {
        entry(&mut all, &name);
        if let Some(d) = all.get_mut(&name) {
            d.lease_holder = Some(holder);
        }
    }
    for name in control::paused(db).await? {
        entry(&mut all, &name);
        if let Some(d) = all.get_mut(&name) {
            d.paused = true;
        }
    }
    for (name, n) in dead_letters::counts(db).await? {
        entry(&mut all, &name);
        if let Some(d) = all.get_mut(&name) {
            d.dead_letters = n;
        }
    }
    // Recorded by replicators of this version on: a source whose replicator has not been
    // upgraded yet lacks the columns, and shows no state rather than failing the overview.
    let states = progress::states(db).await.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "no state recorded at the source");
        Vec::new()
    });
    for (name, state, last_error) in states {
        if let Some(d) = all.get_mut(&name) {
            d.state = state.unwrap_or_default();
            d.last_error = last_error;
        }
    }
    let mut outbox_size = 0;
    for d in all.values_mut() {
        d.state = if d.paused {
            "paused".into()
        } else if d.lease_holder.is_none() {
            "not running".into()
        } else if d.state.is_empty() {
            "starting".into()
        } else {
            std::mem::take(&mut d.state)
        };
        let position = Position {
            watermark: d.watermark,
            ..Position::default()
        };
        let (pending, oldest, total) = progress::backlog(db, &position).await?;
        d.pending = pending;
        d.oldest_pending = oldest;
        d.lag_seconds = oldest.map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0);
        outbox_size = total;
    }
    Ok(Overview {
        outbox_size,
        destinations: all.into_values().collect(),
    })
}

/// The changes above `watermark`, counted per table, with the oldest capture time.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the outbox cannot be read.
pub async fn backlog_by_table<C: ConnectionTrait>(
    db: &C,
    watermark: i64,
) -> Result<Vec<TableBacklog>> {
    let backend = db.get_database_backend();
    let sql = crate::sql_text::marks(
        backend,
        "SELECT table_name, COUNT(*) AS n, MIN(created_at) AS oldest FROM ormsync_outbox \
         WHERE id > ? GROUP BY table_name ORDER BY table_name",
    );
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [watermark.into()],
        ))
        .await
        .context(|| "counting the outbox per table".into())?;
    rows.iter()
        .map(|r| {
            let n: i64 = r
                .try_get("", "n")
                .context(|| "counting the outbox per table".into())?;
            Ok(TableBacklog {
                table: r
                    .try_get("", "table_name")
                    .context(|| "counting the outbox per table".into())?,
                pending: n.max(0) as u64,
                oldest: r
                    .try_get::<Option<DateTime<Utc>>>("", "oldest")
                    .ok()
                    .flatten(),
            })
        })
        .collect()
}

/// The replicator instance holding `destination`'s lease now, if one does: a lease its
/// holder stopped renewing (the process died) is nobody's once it expires.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the leases cannot be read.
pub async fn lease_holder<C: ConnectionTrait>(db: &C, destination: &str) -> Result<Option<String>> {
    Ok(live_leases(db)
        .await?
        .into_iter()
        .find(|(name, _)| name == destination)
        .map(|(_, holder)| holder))
}

/// Destinations whose lease has not expired, by the database's clock, and its holder.
async fn live_leases<C: ConnectionTrait>(db: &C) -> Result<Vec<(String, String)>> {
    let backend = db.get_database_backend();
    let now = match backend {
        DbBackend::MySql => "NOW(6)",
        DbBackend::Postgres => "now()",
        _ => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
    };
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            format!(
                "SELECT destination, holder FROM ormsync_leases WHERE expires_at > {now} AND holder <> ''"
            ),
        ))
        .await
        .context(|| "reading the leases".into())?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let name: String = r
            .try_get("", "destination")
            .context(|| "reading the leases".into())?;
        let holder: String = r
            .try_get("", "holder")
            .context(|| "reading the leases".into())?;
        if name != RETENTION_LEASE {
            out.push((name, holder));
        }
    }
    Ok(out)
}
