//! Where each child of a stream stands, read from the stream's durable consumers: what an
//! operator at the hub sees without a connection to any child.

use async_nats::jetstream;
use futures_util::StreamExt;
use serde::Serialize;

use super::names::Names;
use super::publisher::{stream_end, stream_error};
use crate::error::Result;

/// One subscriber of a stream, as its durable consumer reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SubscriberInfo {
    /// The child's name (its consumer's).
    pub name: String,
    /// Messages the stream holds that the child has not been sent yet.
    pub pending: u64,
    /// Messages sent and not yet acknowledged (being applied, or lost with a crash and due
    /// again).
    pub unacknowledged: u64,
    /// The last stream sequence the child acknowledged.
    pub acknowledged: u64,
    /// The change stream's last sequence.
    pub stream_last: u64,
}

/// The subscribers of `stream` (the name given to the hub's
/// [`Publisher`](super::Publisher)), by name.
///
/// # Errors
///
/// [`Error::Stream`](crate::Error::Stream) when the stream cannot be read.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let js = async_nats::jetstream::new(async_nats::connect("nats://127.0.0.1:4222").await?);
/// for child in ormsync::jetstream::subscribers(&js, "HUB").await? {
///     println!("{}: {} behind", child.name, child.pending + child.unacknowledged);
/// }
/// # Ok(()) }
/// ```
pub async fn subscribers(js: &jetstream::Context, stream: &str) -> Result<Vec<SubscriberInfo>> {
    let names = Names::new(stream);
    let mut found = js
        .get_stream(&names.stream)
        .await
        .map_err(|e| stream_error(stream, "opening the change stream", e, true))?;
    let last = stream_end(&mut found, stream, "reading the change stream").await?;
    let mut consumers = found.consumers();
    let mut out = Vec::new();
    while let Some(info) = consumers.next().await {
        let info = info.map_err(|e| stream_error(stream, "listing the subscribers", e, true))?;
        // Children are durable consumers; the ephemeral ones are copies in progress.
        if info.config.durable_name.is_none() {
            continue;
        }
        out.push(SubscriberInfo {
            name: info.name,
            pending: info.num_pending,
            unacknowledged: info.num_ack_pending as u64,
            acknowledged: info.ack_floor.stream_sequence,
            stream_last: last,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
