//! `ormsync resync`: asks the running replicator to copy tables again, as
//! `dead-letters replay` asks it to replay, and waits for the outcome.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ormsync::outbox::{control, overview};
use ormsync::{Error, Result};
use sea_orm::DatabaseConnection;

use super::registered;
use super::verify::tables;
use crate::config::Urls;
use crate::output::Progress;

pub async fn run(urls: &Urls, destination: &str, only: &[String], wait: u64) -> Result<ExitCode> {
    let source = urls.source().await?;
    registered(&source, destination).await?;
    // Unknown tables are refused here, before anything is asked of the replicator.
    let specs = tables(&source, only).await?;
    let holder = overview::overview(&source)
        .await?
        .destinations
        .into_iter()
        .find(|d| d.name == destination)
        .ok_or_else(|| Error::UnknownDestination(destination.to_string()))?
        .lease_holder
        .ok_or_else(|| Error::NoReplicator {
            destination: destination.to_string(),
            remedy: "start the application's replicator, which resyncs with the destination's \
                     key mapping, filters and transforms, then run this again"
                .into(),
        })?;
    let request = control::request_resync(&source, destination, only).await?;
    eprintln!("asked `{holder}` to resync `{destination}`…");
    // The copy's progress is at the destination: shown only when its URL is configured.
    let watch = match urls.dest(destination).await {
        Ok(db) => Some((db, ormsync::outbox::node_id(&source).await?)),
        Err(e) => {
            tracing::debug!(error = %e, "no progress to show without the destination's URL");
            None
        }
    };
    let names: Vec<String> = specs.into_iter().map(|s| s.table).collect();
    let mut progress = Progress::new(&format!("resync {destination}"), names.len() as u64);
    let mut shown = Shown::default();
    let started = Instant::now();
    let wait = Duration::from_secs(wait);
    loop {
        let c = control::read(&source, destination).await?;
        if let Some((db, source_id)) = &watch {
            shown.update(db, source_id, &names, &mut progress).await;
        }
        if c.resyncs_done >= request {
            progress.finish();
            if let Some(error) = control::resync_request(&source, destination).await?.error {
                return Err(Error::RemoteFailed {
                    holder,
                    action: format!("resync `{destination}`"),
                    reason: error,
                });
            }
            println!("`{destination}`: resynced {}", names.join(", "));
            return Ok(ExitCode::SUCCESS);
        }
        if overview::lease_holder(&source, destination)
            .await?
            .is_none()
        {
            progress.finish();
            return Err(super::holder_gone(&holder, destination, "resync"));
        }
        if started.elapsed() >= wait {
            progress.finish();
            return Err(Error::Timeout {
                what: format!("the resync of `{destination}` by `{holder}`"),
                seconds: wait.as_secs(),
                after: "it goes on (see `ormsync status`)".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Which tables' copies the progress has shown starting and ending.
#[derive(Default)]
struct Shown {
    started: HashSet<String>,
    ended: HashSet<String>,
}

impl Shown {
    /// Reads `ormsync_snapshot` at the destination and shows what changed. A table is shown
    /// ending only after it was seen copying, so the previous copy's rows do not count.
    async fn update(
        &mut self,
        db: &DatabaseConnection,
        source_id: &str,
        names: &[String],
        progress: &mut Progress,
    ) {
        let copies = match ormsync::snapshot::progress(db, source_id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the resync's progress");
                return;
            }
        };
        for copy in copies.iter().filter(|c| names.contains(&c.table)) {
            if !copy.done && self.started.insert(copy.table.clone()) {
                progress.start(&copy.table);
            }
            if copy.done
                && self.started.contains(&copy.table)
                && self.ended.insert(copy.table.clone())
            {
                progress.step_done(&format!("`{}`: {} rows copied", copy.table, copy.copied));
            }
        }
    }
}
