//! `ormsync dead-letters list|replay|discard`.

use std::process::ExitCode;

use ormsync::Result;
use ormsync::apply::SqlSink;
use ormsync::outbox::dead_letters::{self, DeadLetter};

use super::error_code;
use crate::args::DeadLetters;
use crate::config::Urls;
use crate::output;

pub async fn run(urls: &Urls, action: DeadLetters) -> Result<ExitCode> {
    let source = urls.source().await?;
    match action {
        DeadLetters::List { destination, json } => {
            let names = match destination {
                Some(name) => vec![name],
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
        DeadLetters::Replay { destination } => {
            let db = urls.dest(&destination).await?;
            let mut sink = SqlSink::new(destination.clone(), db);
            let source_id = ormsync::outbox::node_id(&source).await?;
            let report = dead_letters::replay(&source, &source_id, &destination, &mut sink).await?;
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
        DeadLetters::Discard {
            destination,
            ids,
            all,
        } => {
            let ids = (!all).then_some(ids.as_slice());
            let removed = dead_letters::discard(&source, &destination, ids).await?;
            println!("`{destination}`: {removed} discarded");
            Ok(ExitCode::SUCCESS)
        }
    }
}
