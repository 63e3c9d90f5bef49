//! `ormsync pause|resume <destination>`: recorded at the source, honoured by every running
//! replicator within about its poll interval.

use std::process::ExitCode;

use ormsync::outbox::{control, progress};
use ormsync::{Error, Result};

use crate::config::Urls;

pub async fn run(urls: &Urls, destination: &str, pause: bool) -> Result<ExitCode> {
    let source = urls.source().await?;
    // A typo must not pause nothing and report success.
    let known = progress::read_all(&source)
        .await?
        .iter()
        .any(|(name, _, _)| name == destination);
    if !known {
        return Err(Error::UnknownDestination(destination.to_string()));
    }
    if pause {
        control::pause(&source, destination).await?;
        println!(
            "paused `{destination}`: running replicators stop shipping to it within their poll interval"
        );
    } else {
        control::resume(&source, destination).await?;
        println!("resumed `{destination}`");
    }
    Ok(ExitCode::SUCCESS)
}
