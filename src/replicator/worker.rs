//! One worker per destination: read a batch, apply it, repeat; wait; retry on failure.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::status::{DestinationStatus, State};
use crate::apply::Sink;
use crate::change::Batch;
use crate::entity::TableSpec;
use crate::error::{Error, Result};
use crate::outbox::{OutboxReader, progress};
use crate::position::Position;
use crate::redact::redact;
use crate::schema;

/// Asks a worker for a pass now; the answer comes when it is done.
pub(crate) struct SyncNow(pub(crate) oneshot::Sender<Result<()>>);

/// Settings every worker shares.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) poll_interval: Duration,
    pub(crate) retry_min: Duration,
    pub(crate) retry_max: Duration,
}

pub(crate) struct Worker {
    pub(crate) name: String,
    pub(crate) source: DatabaseConnection,
    pub(crate) source_id: String,
    pub(crate) destination: DatabaseConnection,
    pub(crate) reader: OutboxReader,
    pub(crate) sink: Box<dyn Sink>,
    pub(crate) tables: Arc<HashMap<String, TableSpec>>,
    pub(crate) skip: HashSet<String>,
    pub(crate) settings: Settings,
    pub(crate) status: Arc<Mutex<DestinationStatus>>,
    pub(crate) requests: mpsc::Receiver<SyncNow>,
    pub(crate) cancel: CancellationToken,
}

impl Worker {
    pub(crate) async fn run(mut self) {
        let mut installed = false;
        let mut position: Option<Position> = None;
        let mut backoff: Option<backon::ExponentialBackoff> = None;
        let mut delay = Duration::ZERO;
        loop {
            let request = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                r = self.requests.recv() => r,
                _ = tokio::time::sleep(delay) => None,
            };
            let result = self.pass(&mut installed, &mut position).await;
            match &result {
                Ok(()) => {
                    backoff = None;
                    delay = self.settings.poll_interval;
                    self.update(|s| {
                        s.state = State::Idle;
                        s.last_error = None;
                    });
                }
                Err(e) => {
                    position = None;
                    let b = backoff.get_or_insert_with(|| {
                        ExponentialBuilder::default()
                            .with_min_delay(self.settings.retry_min)
                            .with_max_delay(self.settings.retry_max)
                            .with_jitter()
                            .without_max_times()
                            .build()
                    });
                    delay = b.next().unwrap_or(self.settings.retry_max);
                    let message = redact(&e.to_string());
                    tracing::warn!(destination = %self.name, error = %message, retry_in = ?delay, "replication pass failed");
                    self.update(|s| {
                        s.state = State::Retrying;
                        s.errors += 1;
                        s.last_error = Some(message);
                    });
                }
            }
            if let Some(SyncNow(reply)) = request {
                let _ = reply.send(result);
            }
        }
        self.update(|s| s.state = State::Stopped);
    }

    /// Ships batches until the outbox has nothing more for this destination.
    async fn pass(&mut self, installed: &mut bool, position: &mut Option<Position>) -> Result<()> {
        if !*installed {
            schema::install(&self.destination)
                .await
                .map_err(|e| in_destination(&self.name, e))?;
            *installed = true;
        }
        loop {
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            let current = match position {
                Some(p) => p.clone(),
                None => self.sink.position(&self.source_id).await?,
            };
            let batch = self.reader.read(&current).await?;
            let pending_gaps = self.reader.pending_gaps();
            if batch.is_empty() {
                *position = Some(current.clone());
                self.update(|s| {
                    s.watermark = current.watermark;
                    s.frontier = current.frontier();
                    s.pending_gaps = pending_gaps;
                });
                return Ok(());
            }
            self.update(|s| s.state = State::Running);
            let batch = self.route(batch)?;
            let applied = batch.changes.len() as u64;
            let stored = self.sink.apply(&self.source_id, &batch).await?;
            if let Err(e) = progress::record(&self.source, &self.name, &stored).await {
                tracing::debug!(destination = %self.name, error = %e, "could not record progress at the source");
            }
            self.update(|s| {
                s.watermark = stored.watermark;
                s.frontier = stored.frontier();
                s.pending_gaps = pending_gaps;
                s.applied += applied;
                s.last_success = Some(Utc::now());
            });
            *position = Some(stored);
        }
    }

    /// Keeps the changes this destination takes; the rest count as done without applying.
    fn route(&self, mut batch: Batch) -> Result<Batch> {
        let mut keep = Vec::with_capacity(batch.changes.len());
        for change in batch.changes {
            if self.skip.contains(&change.table) {
                batch.skipped.push((change.id, change.id));
            } else if self.tables.contains_key(&change.table) {
                keep.push(change);
            } else {
                return Err(Error::UnknownTable {
                    destination: self.name.clone(),
                    table: change.table,
                    id: change.id,
                });
            }
        }
        batch.changes = keep;
        Ok(batch)
    }

    fn update(&self, f: impl FnOnce(&mut DestinationStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }
}

fn in_destination(name: &str, e: Error) -> Error {
    match e {
        Error::Db { context, source } => Error::Db {
            context: format!("destination `{name}`: {context}"),
            source,
        },
        other => other,
    }
}
