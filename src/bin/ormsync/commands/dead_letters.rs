//! `ormsync dead-letters list|replay|discard`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ormsync::apply::SqlSink;
use ormsync::outbox::dead_letters::{self, DeadLetter, ReplayReport};
use ormsync::outbox::{control, overview};
use ormsync::{Error, Result};
use sea_orm::DatabaseConnection;

use super::{error_code, registered};
use crate::args::DeadLetters;
use crate::config::Urls;
use crate::output;

pub async fn run(urls: &Urls, action: DeadLetters) -> Result<ExitCode> {
    let source = urls.source().await?;
    match action {
        DeadLetters::List { destination, json } => {
            let names = match destination {
                Some(name) => {
                    registered(&source, &name).await?;
                    vec![name]
                }
                None => dead_letters::counts(&source)
                    .await?
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect(),
            };
            let mut letters: Vec<DeadLetter> = Vec::new();
            for name in &names {
                letters.extend(dead_letters::list(&source, name).await?);
            }
            if json {
                output::json(&letters)?;
            } else if letters.is_empty() {
                println!("no dead letters");
            } else {
                println!(
                    "{:<16} {:>10} {:<24} {:<6} {:>8}  {:<24} error",
                    "destination", "outbox id", "table", "op", "attempts", "key"
                );
                for d in &letters {
                    println!(
                        "{:<16} {:>10} {:<24} {:<6} {:>8}  {:<24} {}",
                        d.destination,
                        d.outbox_id,
                        d.table,
                        format!("{:?}", d.op).to_lowercase(),
                        d.attempts,
                        d.key,
                        d.error
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DeadLetters::Replay {
            destination,
            direct,
            wait,
        } => {
            registered(&source, &destination).await?;
            let report = if direct {
                replay_here(urls, &source, &destination).await?
            } else {
                replay_by_replicator(&source, &destination, Duration::from_secs(wait)).await?
            };
            println!(
                "`{destination}`: {} replayed, {} failed again and stay parked",
                report.replayed, report.failed
            );
            // A change that still does not apply needs a person: not a success.
            Ok(if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                error_code()
            })
        }
        DeadLetters::Park {
            destination,
            outbox_id,
        } => {
            registered(&source, &destination).await?;
            dead_letters::park_by_hand(&source, &destination, outbox_id).await?;
            println!(
                "`{destination}`: change {outbox_id} parked; if the destination halted on it, \
                 `ormsync resume {destination}` lets it go on"
            );
            Ok(ExitCode::SUCCESS)
        }
        DeadLetters::Discard {
            destination,
            ids,
            all,
        } => {
            registered(&source, &destination).await?;
            let ids = (!all).then_some(ids.as_slice());
            let removed = dead_letters::discard(&source, &destination, ids).await?;
            println!("`{destination}`: {removed} discarded");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Applies the parked changes from this process, through a plain sink.
async fn replay_here(
    urls: &Urls,
    source: &DatabaseConnection,
    destination: &str,
) -> Result<ReplayReport> {
    let db = urls.dest(destination).await?;
    let mut sink = SqlSink::new(destination.to_string(), db);
    let source_id = ormsync::outbox::node_id(source).await?;
    ormsync::replay_dead_letters(source, &source_id, destination, &mut sink).await
}

/// Asks the replicator instance shipping to `destination` to replay, and waits for it.
async fn replay_by_replicator(
    source: &DatabaseConnection,
    destination: &str,
    wait: Duration,
) -> Result<ReplayReport> {
    let overview = overview::overview(source).await?;
    let holder = overview
        .destinations
        .iter()
        .find(|d| d.name == destination)
        .ok_or_else(|| Error::UnknownDestination(destination.to_string()))?
        .lease_holder
        .clone()
        .ok_or_else(|| Error::NoReplicator {
            destination: destination.to_string(),
            remedy: format!(
                "start the application to have its replicator replay the dead letters, or pass \
                 --direct (with --dest {destination}=URL) to apply them from here without the \
                 rules the application configures for it"
            ),
        })?;
    let request = control::request_replay(source, destination).await?;
    eprintln!("asked `{holder}` to replay the dead letters of `{destination}`…");
    let started = Instant::now();
    loop {
        let c = control::read(source, destination).await?;
        if c.replays_done >= request {
            if c.replay_failed < 0 {
                return Err(Error::RemoteFailed {
                    holder,
                    action: format!("replay the dead letters of `{destination}`"),
                    reason: "its log says why".into(),
                });
            }
            return Ok(ReplayReport {
                replayed: c.replayed.max(0) as u64,
                failed: c.replay_failed as u64,
            });
        }
        if overview::lease_holder(source, destination).await?.is_none() {
            return Err(super::holder_gone(
                &holder,
                destination,
                "replay of the dead letters",
            ));
        }
        if started.elapsed() >= wait {
            return Err(Error::Timeout {
                what: format!("the replay of the dead letters of `{destination}` by `{holder}`"),
                seconds: wait.as_secs(),
                after: "the replicator replays them when it reads the request (see `ormsync \
                        dead-letters list`)"
                    .into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
