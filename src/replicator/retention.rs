//! The retention task: deletes what every destination has applied, and, past the maximum
//! retention, what a disabled or removed destination never will.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tokio_util::sync::CancellationToken;

use super::alert::{Alert, AlertKind, Alerts};
use super::lease::Lease;
use crate::error::{DbContext, Result};
use crate::outbox::retention;

/// How retention runs; see [`ReplicatorBuilder::retention`](crate::ReplicatorBuilder::retention).
#[derive(Clone, Debug)]
pub struct RetentionPolicy {
    pub(crate) every: Duration,
    pub(crate) max_age: Duration,
    pub(crate) step: i64,
}

impl Default for RetentionPolicy {
    /// Every 30 s, rows kept at most 7 days, 1000 ids per delete.
    fn default() -> Self {
        RetentionPolicy {
            every: Duration::from_secs(30),
            max_age: Duration::from_secs(7 * 24 * 3600),
            step: 1000,
        }
    }
}

impl RetentionPolicy {
    /// How often retention runs. Default: 30 s.
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    /// How long an outbox row is kept for a destination that has not applied it (one that
    /// is down, disabled or removed). Past half of it an alert warns; past it the row is
    /// deleted, with an alert naming the destination, which then needs a resync.
    /// Default: 7 days.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Ids deleted per statement at most. Default: 1000.
    pub fn step(mut self, ids: i64) -> Self {
        self.step = ids.max(1);
        self
    }
}

pub(crate) struct Retention {
    /// Every destination registers its progress at the source when it is configured, so
    /// `ormsync_progress` lists all of them, including those other instances configured.
    pub(crate) source: DatabaseConnection,
    pub(crate) policy: RetentionPolicy,
    pub(crate) lease: Lease,
    pub(crate) alerts: Alerts,
    pub(crate) cancel: CancellationToken,
}

impl Retention {
    pub(crate) async fn run(mut self) {
        let mut warned: HashSet<String> = HashSet::new();
        let mut dropped: BTreeMap<String, i64> = BTreeMap::new();
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = tokio::time::sleep(self.policy.every) => {}
            }
            match self.lease.ensure().await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::trace!("retention: another instance holds its lease");
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "retention: cannot take its lease");
                    continue;
                }
            }
            if let Err(e) = self.once(&mut warned, &mut dropped).await {
                tracing::warn!(error = %e, "retention failed; it will try again");
            }
        }
        self.lease.release().await;
    }

    /// One round. `warned` and `dropped` keep each alert to once per episode.
    async fn once(
        &self,
        warned: &mut HashSet<String>,
        dropped: &mut BTreeMap<String, i64>,
    ) -> Result<u64> {
        let progress = self.progress().await?;
        // Below each destination's watermark, except its anchor (see `Anchor`).
        let Some(slowest) = progress.values().map(|&(_, keep)| keep).min() else {
            return Ok(0);
        };
        let watermarks: BTreeMap<&String, i64> =
            progress.iter().map(|(n, &(w, _))| (n, w)).collect();
        let expired = retention::last_id_older_than(&self.source, self.policy.max_age).await?;
        let soon = retention::last_id_older_than(&self.source, self.policy.max_age / 2).await?;
        for (&name, &w) in &watermarks {
            if soon.is_some_and(|s| w < s) {
                if warned.insert(name.clone()) {
                    self.alerts
                        .raise(Alert::new(name, AlertKind::RetentionWarning));
                }
            } else {
                warned.remove(name);
            }
        }
        let up_to = slowest.max(expired.unwrap_or(0));
        tracing::trace!(?watermarks, ?expired, ?soon, up_to, "retention round");
        for (&name, &w) in &watermarks {
            let already = dropped.get(name).copied().unwrap_or(w).max(w);
            if already < up_to {
                self.alerts.raise(Alert::new(
                    name,
                    AlertKind::RetentionDropped {
                        rows: (up_to - already) as u64,
                    },
                ));
                dropped.insert(name.clone(), up_to);
            }
        }
        let deleted = retention::purge(&self.source, up_to, self.policy.step).await?;
        if deleted > 0 {
            tracing::debug!(deleted, up_to, "retention deleted applied outbox rows");
        }
        Ok(deleted)
    }

    /// Each destination's watermark, and the id up to which its progress lets retention
    /// delete: the watermark, or below its anchor when that is lower.
    async fn progress(&self) -> Result<BTreeMap<String, (i64, i64)>> {
        let rows = self
            .source
            .query_all_raw(Statement::from_string(
                self.source.get_database_backend(),
                "SELECT destination, watermark, anchor_id FROM ormsync_progress",
            ))
            .await
            .context(|| "reading destinations' progress".into())?;
        let mut out = BTreeMap::new();
        for row in rows {
            let name: String = row
                .try_get("", "destination")
                .context(|| "reading progress".into())?;
            let w: i64 = row
                .try_get("", "watermark")
                .context(|| "reading progress".into())?;
            let anchor: Option<i64> = row
                .try_get("", "anchor_id")
                .context(|| "reading progress".into())?;
            let keep = anchor.map_or(w, |a| w.min(a - 1));
            out.insert(name, (w, keep));
        }
        Ok(out)
    }
}
