//! What the replicator reports about itself.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::snapshot::SnapshotStatus;

/// What a destination's worker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not yet through its first pass.
    Starting,
    /// Shipping a batch.
    Running,
    /// Copying tables (initial snapshot or resync); see [`DestinationStatus::snapshot`].
    Copying,
    /// Caught up, waiting for changes.
    Idle,
    /// The last pass failed; waiting to try again.
    Retrying,
    /// Stopped on a change the destination refuses for good; waits for `resume`.
    Halted,
    /// Another instance holds this destination's lease, or may: this one's ran out before
    /// it could renew it (held up by a slow database, say). It takes over if the holder
    /// stops, and renews its own when it can.
    Standby,
    /// Paused by `pause`; `resume` ships again.
    Paused,
    /// Disabled by `disable`; `enable` ships again.
    Disabled,
    /// Shut down.
    Stopped,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Copying => "copying",
            State::Idle => "idle",
            State::Retrying => "retrying",
            State::Halted => "halted",
            State::Standby => "standby",
            State::Paused => "paused",
            State::Disabled => "disabled",
            State::Stopped => "stopped",
        };
        f.pad(s)
    }
}

/// One destination's status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DestinationStatus {
    /// The destination's name.
    pub name: String,
    /// What its worker is doing.
    pub state: State,
    /// Every outbox id at or below this is applied (or a proven hole).
    pub watermark: i64,
    /// The highest outbox id applied.
    pub frontier: i64,
    /// Ids below the frontier still waited for: taken by transactions not known to have ended.
    pub pending_gaps: u64,
    /// Changes waiting for this destination (refreshed at most once a second).
    pub pending: u64,
    /// Age in seconds of the oldest waiting change, if any.
    pub lag_seconds: Option<f64>,
    /// Changes applied since start.
    pub applied: u64,
    /// Failed passes since start.
    pub errors: u64,
    /// Retries after transient failures since start.
    pub retries: u64,
    /// Changes parked in `ormsync_dead_letters` since start.
    pub dead_lettered: u64,
    /// When a batch last applied.
    pub last_success: Option<DateTime<Utc>>,
    /// The last error, passwords redacted; cleared by the next success.
    pub last_error: Option<String>,
    /// When a scheduled destination ships next.
    pub next_run: Option<DateTime<Utc>>,
    /// The progress of the snapshot or resync running or last run since start, if any.
    pub snapshot: Option<SnapshotStatus>,
}

impl DestinationStatus {
    pub(crate) fn new(name: &str) -> Self {
        DestinationStatus {
            name: name.to_string(),
            state: State::Starting,
            watermark: 0,
            frontier: 0,
            pending_gaps: 0,
            pending: 0,
            lag_seconds: None,
            applied: 0,
            errors: 0,
            retries: 0,
            dead_lettered: 0,
            last_success: None,
            last_error: None,
            next_run: None,
            snapshot: None,
        }
    }
}

/// The status of every destination, as [`Replicator::status`](crate::Replicator::status)
/// returns it. `Display` prints a compact table.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Rows in the source's outbox (refreshed at most once a second by the workers).
    pub outbox_size: u64,
    /// One entry per destination, in the order they were added.
    pub destinations: Vec<DestinationStatus>,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "outbox: {} rows", self.outbox_size)?;
        writeln!(
            f,
            "{:<16} {:<9} {:>10} {:>9} {:>8} {:>10} {:>7} {:>5}  last error",
            "destination", "state", "watermark", "pending", "lag (s)", "applied", "retries", "dead"
        )?;
        for d in &self.destinations {
            let lag = d
                .lag_seconds
                .map(|l| format!("{l:.1}"))
                .unwrap_or_else(|| "-".into());
            writeln!(
                f,
                "{:<16} {:<9} {:>10} {:>9} {:>8} {:>10} {:>7} {:>5}  {}",
                d.name,
                d.state,
                d.watermark,
                d.pending,
                lag,
                d.applied,
                d.retries,
                d.dead_lettered,
                d.last_error.as_deref().unwrap_or("-")
            )?;
            if let Some(s) = &d.snapshot {
                writeln!(
                    f,
                    "  snapshot: {}/{} tables, {} rows copied ({:.0}/s), {} deferred{}",
                    s.tables_done,
                    s.tables_total,
                    s.rows_copied,
                    s.rows_per_second,
                    s.rows_deferred,
                    s.table
                        .as_deref()
                        .map(|t| format!(", copying `{t}`"))
                        .unwrap_or_default()
                )?;
            }
        }
        Ok(())
    }
}
