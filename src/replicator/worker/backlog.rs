//! The backlog: pending counts and lag for status and metrics, and the lag alerts.

use std::time::{Duration, Instant};

use chrono::Utc;

use super::super::alert::{Alert, AlertKind};
use super::{Suspension, Worker, WorkerState};
use crate::outbox::progress;
use crate::position::Position;

/// What the backlog checks saw, so they run seldom while idle and alert on changes only.
#[derive(Default)]
pub(super) struct BacklogWatch {
    /// Whether the last check found the lag over a threshold.
    lag_high: bool,
    /// When the backlog was last counted.
    pub(super) checked: Option<Instant>,
    /// What the last check saw: the watermark and whether anything was pending.
    pub(super) seen: Option<(i64, bool)>,
}

impl BacklogWatch {
    /// A drain ended at `watermark`: if it moved since the last check, the next one
    /// runs at once, so a drain that just ended shows as such.
    pub(super) fn drain_ended(&mut self, watermark: i64) {
        if self.seen.is_some_and(|(w, _)| w != watermark) {
            self.checked = None;
        }
    }
}

impl Worker {
    /// Refreshes pending counts and raises lag alerts, at most once a second, and only
    /// every 30 s while caught up and idle: idle costs a read per poll tick and little more.
    pub(super) async fn check_backlog(&mut self, state: &mut WorkerState, position: &Position) {
        let watch = &mut state.backlog;
        let since = watch.checked.map(|t| t.elapsed());
        let idle = watch.seen == Some((position.watermark, false));
        let every = if idle {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(1)
        };
        if since.is_some_and(|t| t < every) {
            return;
        }
        watch.checked = Some(Instant::now());
        let (pending, oldest, outbox) = match progress::backlog(&self.source, position).await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(destination = %self.name, error = %e, "could not count the backlog");
                return;
            }
        };
        watch.seen = Some((position.watermark, pending > 0));
        let lag = oldest.map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0);
        self.outbox_size
            .store(outbox as i64, std::sync::atomic::Ordering::Relaxed);
        let labels = [("destination", self.name.clone())];
        metrics::gauge!("ormsync_pending_changes", &labels).set(pending as f64);
        metrics::gauge!("ormsync_lag_seconds", &labels).set(lag.unwrap_or(0.0));
        self.update(|s| {
            s.pending = pending;
            s.lag_seconds = lag;
        });
        let s = &self.settings;
        let high = s.lag_rows.is_some_and(|r| pending >= r)
            || s.lag_age
                .is_some_and(|a| lag.is_some_and(|l| l >= a.as_secs_f64()));
        if high != watch.lag_high && state.suspended != Some(Suspension::Disabled) {
            watch.lag_high = high;
            let kind = if high {
                AlertKind::LagHigh
            } else {
                AlertKind::LagNormal
            };
            self.alerts
                .raise(Alert::new(&self.name, kind).backlog(pending, lag));
        }
    }
}
