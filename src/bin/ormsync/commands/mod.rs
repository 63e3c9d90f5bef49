//! One file per command; `run` dispatches.

mod dead_letters;
mod outbox;
mod pause;
mod resync;
mod schema;
mod status;
mod verify;

use std::process::ExitCode;

use ormsync::outbox::progress;
use ormsync::{Error, Result};
use sea_orm::DatabaseConnection;

use crate::args::{Cli, Command};
use crate::config::Urls;

/// The exit code of an error.
pub fn error_code() -> ExitCode {
    ExitCode::from(2)
}

/// The error of a request whose replicator stopped holding the destination's lease before
/// it answered: it died or lost the source, and no other instance took over.
fn holder_gone(holder: &str, destination: &str, what: &str) -> ormsync::Error {
    ormsync::Error::NoReplicator {
        destination: destination.to_string(),
        remedy: format!(
            "`{holder}` stopped renewing its lease before it finished the {what}, and no other \
             instance took it over (it stopped, or lost the source); start the application's \
             replicator, then run this again"
        ),
    }
}

/// Runs the command; `Err` exits with [`error_code`].
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let urls = Urls::resolve(&cli.connections)?;
    match cli.command {
        Command::Status { json, nats, stream } => {
            let subscribers = nats.as_deref().zip(stream.as_deref());
            status::run(&urls, json, subscribers).await
        }
        Command::Outbox { json } => outbox::run(&urls, json).await,
        Command::DeadLetters(action) => dead_letters::run(&urls, action).await,
        Command::Pause { destination } => pause::run(&urls, &destination, true).await,
        Command::Resume { destination } => pause::run(&urls, &destination, false).await,
        Command::Verify {
            scope,
            json,
            show_values,
        } => verify::verify(&urls, &scope, json, show_values).await,
        Command::Schema {
            scope,
            json,
            evolve,
        } => schema::run(&urls, &scope, json, evolve).await,
        Command::Repair {
            scope,
            dry_run,
            direct,
            json,
        } => verify::repair(&urls, &scope, dry_run, direct, json).await,
        Command::Resync {
            destination,
            tables,
            wait,
        } => resync::run(&urls, &destination, &tables, wait).await,
    }
}

/// Refuses a destination the source does not record: a typo must not act on nothing and
/// report success.
pub async fn registered(source: &DatabaseConnection, name: &str) -> Result<()> {
    let known: Vec<String> = progress::read_all(source)
        .await?
        .into_iter()
        .map(|(known, _, _)| known)
        .collect();
    if known.iter().any(|known| known == name) {
        Ok(())
    } else {
        Err(Error::UnregisteredDestination {
            name: name.to_string(),
            known,
        })
    }
}

/// Age in seconds, for people.
pub fn age(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.1} s"),
        Some(s) if s < 7200.0 => format!("{:.1} min", s / 60.0),
        Some(s) => format!("{:.1} h", s / 3600.0),
    }
}
