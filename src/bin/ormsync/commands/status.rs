//! `ormsync status`: each destination as the source records it.

use std::process::ExitCode;

use ormsync::Result;
use ormsync::jetstream::{self, SubscriberInfo};
use ormsync::outbox::overview;

use super::age;
use crate::config::Urls;
use crate::output;

/// `subscribers`: the NATS URL and stream whose subscribers to list too.
pub async fn run(urls: &Urls, json: bool, subscribers: Option<(&str, &str)>) -> Result<ExitCode> {
    let source = urls.source().await?;
    let o = overview::overview(&source).await?;
    let children = match subscribers {
        Some((url, stream)) => Some((stream, list_subscribers(url, stream).await?)),
        None => None,
    };
    if json {
        let mut value = serde_json::to_value(&o)
            .map_err(|e| ormsync::Error::Config(format!("cannot write JSON: {e}")))?;
        if let (Some((_, list)), Some(map)) = (&children, value.as_object_mut()) {
            map.insert("subscribers".into(), serde_json::json!(list));
        }
        output::json(&value)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("outbox: {} rows", o.outbox_size);
    if let Some((stream, list)) = &children {
        print_subscribers(stream, list);
    }
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

/// The subscribers of `stream` at the NATS server `url` (which may hold credentials: it is
/// never printed).
async fn list_subscribers(url: &str, stream: &str) -> Result<Vec<SubscriberInfo>> {
    let unreachable = |e: String| ormsync::Error::Stream {
        stream: stream.to_string(),
        context: "connecting to NATS (--nats)".into(),
        reason: ormsync::redact::redact(&e),
        id: None,
        transient: true,
    };
    let connect = async_nats::ConnectOptions::new().connect(url);
    let client = match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(_) => return Err(unreachable("timed out after 10 s".into())),
    };
    jetstream::subscribers(&async_nats::jetstream::new(client), stream).await
}

fn print_subscribers(stream: &str, list: &[SubscriberInfo]) {
    if list.is_empty() {
        println!("stream `{stream}`: no subscriber yet");
        return;
    }
    println!(
        "{:<24} {:>10} {:>14} {:>14} {:>12}",
        format!("subscribers of `{stream}`"),
        "pending",
        "unacknowledged",
        "acknowledged",
        "stream last"
    );
    for c in list {
        println!(
            "{:<24} {:>10} {:>14} {:>14} {:>12}",
            c.name, c.pending, c.unacknowledged, c.acknowledged, c.stream_last
        );
    }
}
