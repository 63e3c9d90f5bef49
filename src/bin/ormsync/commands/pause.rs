//! `ormsync pause|resume <destination>`: recorded at the source, honoured by every running
//! replicator within about its poll interval.

use std::process::ExitCode;

use ormsync::Result;
use ormsync::outbox::control;

use super::registered;
use crate::config::Urls;

pub async fn run(urls: &Urls, destination: &str, pause: bool) -> Result<ExitCode> {
    let source = urls.source().await?;
    registered(&source, destination).await?;
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
