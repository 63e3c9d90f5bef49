//! Alerts: what the replicator tells the application when something needs attention.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::apply::{Conflict, OnConflict};

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum AlertKind {
    /// The destination has failed for the configured number of attempts or time; the
    /// worker keeps retrying. Fires once per outage.
    Unavailable,
    /// A destination that was reported unavailable applied a batch again.
    Recovered,
    /// A change the destination refuses for good was parked in `ormsync_dead_letters`
    /// (policy `DeadLetter`); later changes go on.
    DeadLettered {
        /// The outbox id of the parked change.
        outbox_id: i64,
    },
    /// The destination stopped on a change it refuses for good (policy `Halt`).
    Halted,
    /// The destination's backlog went above the configured rows or age.
    LagHigh,
    /// The backlog is back under the thresholds.
    LagNormal,
    /// Outbox rows this destination has not applied will be dropped by retention once
    /// they are older than the maximum retention.
    RetentionWarning,
    /// A conflict policy kept the destination's version of a row, or wrote another than the
    /// source's (only for destinations with
    /// [`alert_on_conflicts`](crate::Destination::alert_on_conflicts)); the decision is also
    /// in the destination's `ormsync_conflicts`.
    Conflict {
        /// The table.
        table: String,
        /// The row's key at the source, as JSON.
        key: String,
        /// What was decided (see [`Conflict::outcome`](crate::Conflict::outcome)).
        outcome: String,
    },
    /// Retention dropped outbox rows this destination had not applied; it needs a resync.
    RetentionDropped {
        /// How many ids were dropped that it had not applied.
        rows: u64,
    },
}

/// An alert, as passed to the callbacks of
/// [`ReplicatorBuilder::on_alert`](crate::ReplicatorBuilder::on_alert).
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    /// The destination concerned.
    pub destination: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: AlertKind,
    /// The error behind it, passwords redacted.
    pub error: Option<String>,
    /// Failed attempts in this episode.
    pub attempts: u64,
    /// Changes waiting for this destination, when known.
    pub pending: Option<u64>,
    /// Age of the oldest waiting change in seconds, when known.
    pub lag_seconds: Option<f64>,
    /// When it happened.
    pub at: DateTime<Utc>,
}

impl Alert {
    pub(crate) fn new(destination: &str, kind: AlertKind) -> Self {
        Alert {
            destination: destination.to_string(),
            kind,
            error: None,
            attempts: 0,
            pending: None,
            lag_seconds: None,
            at: Utc::now(),
        }
    }

    pub(crate) fn error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    pub(crate) fn attempts(mut self, attempts: u64) -> Self {
        self.attempts = attempts;
        self
    }

    pub(crate) fn backlog(mut self, pending: u64, lag_seconds: Option<f64>) -> Self {
        self.pending = Some(pending);
        self.lag_seconds = lag_seconds;
        self
    }
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.destination;
        match &self.kind {
            AlertKind::Unavailable => write!(
                f,
                "destination `{d}` unavailable after {} attempts",
                self.attempts
            )?,
            AlertKind::Recovered => write!(
                f,
                "destination `{d}` recovered after {} attempts",
                self.attempts
            )?,
            AlertKind::DeadLettered { outbox_id } => write!(
                f,
                "destination `{d}`: change {outbox_id} parked in ormsync_dead_letters"
            )?,
            AlertKind::Halted => write!(f, "destination `{d}` halted")?,
            AlertKind::Conflict {
                table,
                key,
                outcome,
            } => write!(
                f,
                "destination `{d}`: conflict on `{table}` {key}: {outcome} (see ormsync_conflicts)"
            )?,
            AlertKind::LagHigh => write!(f, "destination `{d}` is falling behind")?,
            AlertKind::LagNormal => write!(f, "destination `{d}` caught up")?,
            AlertKind::RetentionWarning => write!(
                f,
                "destination `{d}` has not applied outbox rows that retention will drop soon"
            )?,
            AlertKind::RetentionDropped { rows } => write!(
                f,
                "retention dropped {rows} outbox rows destination `{d}` had not applied; resync it"
            )?,
        }
        if let Some(p) = self.pending {
            write!(f, " ({p} pending")?;
            if let Some(l) = self.lag_seconds {
                write!(f, ", oldest {l:.1} s")?;
            }
            write!(f, ")")?;
        }
        if let Some(e) = &self.error {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}

type SyncHandler = Arc<dyn Fn(&Alert) + Send + Sync>;
type AsyncHandler = Arc<dyn Fn(Alert) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The alert callbacks, shared by every worker.
#[derive(Clone, Default)]
pub(crate) struct Alerts {
    sync: Vec<SyncHandler>,
    r#async: Vec<AsyncHandler>,
}

impl Alerts {
    pub(crate) fn add_sync(&mut self, f: impl Fn(&Alert) + Send + Sync + 'static) {
        self.sync.push(Arc::new(f));
    }

    pub(crate) fn add_async<F, Fut>(&mut self, f: F)
    where
        F: Fn(Alert) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.r#async.push(Arc::new(move |a| Box::pin(f(a))));
    }

    /// A conflict callback for a sink that raises a [`AlertKind::Conflict`] for
    /// `destination` with each decision.
    pub(crate) fn on_conflict(&self, destination: &str) -> OnConflict {
        let (alerts, name) = (self.clone(), destination.to_string());
        Arc::new(move |c: &Conflict| {
            alerts.raise(Alert::new(
                &name,
                AlertKind::Conflict {
                    table: c.table.clone(),
                    key: c.key.to_json(),
                    outcome: c.outcome.clone(),
                },
            ))
        })
    }

    /// Logs the alert and hands it to every callback; async ones run on their own task.
    pub(crate) fn raise(&self, alert: Alert) {
        match alert.kind {
            AlertKind::Recovered | AlertKind::LagNormal => {
                tracing::info!(destination = %alert.destination, kind = ?alert.kind, "{alert}")
            }
            _ => tracing::warn!(destination = %alert.destination, kind = ?alert.kind, "{alert}"),
        }
        for f in &self.sync {
            f(&alert);
        }
        for f in &self.r#async {
            tokio::spawn(f(alert.clone()));
        }
    }
}
