//! `ormsync status`: each destination as the source records it.

use std::process::ExitCode;

use ormsync::Result;
use ormsync::outbox::overview;

use super::age;
use crate::config::Urls;
use crate::output;

pub async fn run(urls: &Urls, json: bool) -> Result<ExitCode> {
    let source = urls.source().await?;
    let o = overview::overview(&source).await?;
    if json {
        output::json(&o)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("outbox: {} rows", o.outbox_size);
    if o.destinations.is_empty() {
        println!("no destination is registered at the source yet");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:<12} {:<28} {:>10} {:>9} {:>14} {:>12}",
        "destination",
        "state",
        "lease holder",
        "watermark",
        "pending",
        "oldest pending",
        "dead letters"
    );
    for d in &o.destinations {
        println!(
            "{:<16} {:<12} {:<28} {:>10} {:>9} {:>14} {:>12}",
            d.name,
            d.state,
            d.lease_holder.as_deref().unwrap_or("-"),
            d.watermark,
            d.pending,
            age(d.lag_seconds),
            d.dead_letters
        );
    }
    for d in &o.destinations {
        if let Some(error) = &d.last_error {
            println!("`{}`: last error: {error}", d.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}
