//! The hub's side: a [`Sink`] that publishes each batch to a JetStream stream instead of
//! writing it to a database.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, message::PublishMessage, stream};
use async_trait::async_trait;
use bytes::Bytes;

use super::message::{self, position_header};
use super::names::{self, Names};
use crate::apply::Sink;
use crate::change::{Batch, Change};
use crate::error::{Error, Result};
use crate::position::Position;

/// A change message stops growing at about this many bytes, well under the server's
/// default `max_payload` of 1 MiB.
const MESSAGE_BYTES: usize = 256 * 1024;

/// Publishes a hub's changes to a NATS JetStream stream, for children that apply them
/// with a [`Subscriber`](super::Subscriber).
///
/// Give it to a destination with [`Destination::jetstream`](crate::Destination::jetstream):
/// the replicator then ships to the stream as to a database, in the same gap-safe order,
/// with the same retries, alerts and dead letters, and retention prunes the outbox once
/// the stream has acknowledged a change.
///
/// Two streams are kept:
///
/// - **`STREAM`**: the changes, on subject `STREAM.c.<source>.<table>`, a run of one
///   table's changes per message. Each message carries the hub's position before and after
///   it, so a child knows it missed nothing. Its message id is built from the source's id
///   and the outbox ids, so a publish repeated after a crash is de-duplicated within the
///   stream's duplicate window, and a child skips any change its position already holds.
/// - **`STREAM_STATE`**: the last version of each row (subject
///   `STREAM.s.<source>.<table>.<key>`, one message kept per subject) and the hub's
///   position (`STREAM.pos`): what a new child, or one that fell behind what `STREAM`
///   retains, copies without a connection to the hub's database.
///
/// A stream takes no transaction, so unlike a SQL sink the publisher cannot store its
/// position with the changes: a batch published and not yet recorded (a crash between) is
/// published again, and dropped by the stream's de-duplication or skipped by every child's
/// position. What the [`Sink`] contract asks, nothing applied twice, holds at the children.
///
/// # Examples
///
/// ```no_run
/// # async fn f(source: sea_orm::DatabaseConnection) -> Result<(), Box<dyn std::error::Error>> {
/// use ormsync::Destination;
/// use ormsync::jetstream::Publisher;
///
/// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let publisher = Publisher::builder(async_nats::jetstream::new(client), "HUB")
///     .replicas(3)
///     .create()
///     .await?;
/// let destination = Destination::jetstream("children", source.clone(), publisher).realtime();
/// # Ok(()) }
/// ```
pub struct Publisher {
    js: jetstream::Context,
    names: Names,
}

/// Row versions published before their acknowledgements are awaited.
const ROWS_IN_FLIGHT: usize = 1000;

/// Configures a [`Publisher`]; made by [`Publisher::builder`].
#[must_use = "a builder does nothing until `.create()` is awaited"]
pub struct PublisherBuilder {
    js: jetstream::Context,
    stream: String,
    replicas: usize,
    max_age: Duration,
    duplicate_window: Duration,
}

impl PublisherBuilder {
    /// How many servers of a cluster keep each stream. Default: 1.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// How long the change stream keeps a change; a child offline for longer copies the
    /// current rows from the state stream instead. Default: 7 days.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// How long JetStream remembers a message id to drop a repeated publish. Default:
    /// 2 minutes. Children skip repeats older than that by their position.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// Creates the two streams where missing, and checks the ones found.
    ///
    /// # Errors
    ///
    /// [`Error::Stream`] when the server cannot be reached; [`Error::Config`] when a stream
    /// of that name exists and takes other subjects.
    pub async fn create(self) -> Result<Publisher> {
        let names = Names::new(&self.stream);
        let changes = stream::Config {
            name: names.stream.clone(),
            subjects: vec![names.change_subjects()],
            max_age: self.max_age,
            // JetStream refuses a window longer than what the stream keeps.
            duplicate_window: self.duplicate_window.min(self.max_age),
            num_replicas: self.replicas,
            storage: stream::StorageType::File,
            description: Some("ormsync: a hub's changes, in the order they apply".into()),
            ..Default::default()
        };
        let state = stream::Config {
            name: names.state_stream(),
            subjects: names.state_subjects(),
            max_messages_per_subject: 1,
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas,
            storage: stream::StorageType::File,
            description: Some("ormsync: the last version of each row of a hub".into()),
            ..Default::default()
        };
        for config in [changes, state] {
            let name = config.name.clone();
            let wanted = config.subjects.clone();
            let mut found = self
                .js
                .get_or_create_stream(config)
                .await
                .map_err(|e| stream_error(&name, "creating the stream", e, true))?;
            let info = found
                .info()
                .await
                .map_err(|e| stream_error(&name, "reading the stream's configuration", e, true))?;
            if info.config.subjects != wanted {
                return Err(Error::Config(format!(
                    "stream `{name}` exists with subjects {:?}, not {wanted:?}: give the hub a \
                     stream name of its own",
                    info.config.subjects
                )));
            }
        }
        Ok(Publisher { js: self.js, names })
    }
}

impl Publisher {
    /// Starts configuring a publisher to the stream `stream` (a JetStream stream name:
    /// letters, digits, `-` and `_`).
    pub fn builder(js: jetstream::Context, stream: impl Into<String>) -> PublisherBuilder {
        PublisherBuilder {
            js,
            stream: stream.into(),
            replicas: 1,
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
        }
    }

    /// The change stream's name.
    pub fn stream(&self) -> &str {
        &self.names.stream
    }

    /// Publishes one message and waits for the stream to store it.
    /// A message that holds the one change `alone` and is larger than the server takes is
    /// refused for good, by that change's id, so it can be parked.
    async fn publish(
        &self,
        subject: String,
        message: PublishMessage,
        what: &str,
        alone: Option<i64>,
    ) -> Result<()> {
        let refused = |e| publish_error(&self.names.stream, what, e, alone);
        self.js
            .send_publish(subject, message)
            .await
            .map_err(refused)?
            .await
            .map_err(refused)?;
        Ok(())
    }

    /// Publishes the last version of each row `changes` touch to the state stream, all at
    /// once: a row appears once, so no two of them can land out of order.
    async fn publish_rows(&self, source: &str, changes: &[&Change]) -> Result<()> {
        let mut last: HashMap<(&str, String), &Change> = HashMap::new();
        for c in changes {
            last.insert((c.table.as_str(), c.key.to_json()), c);
        }
        let state = self.names.state_stream();
        let what = "publishing a row's last version";
        let mut acks = Vec::with_capacity(last.len());
        for ((table, key), change) in last {
            let message = PublishMessage::build()
                .payload(Bytes::from(message::encode(change)))
                .message_id(names::row_id(source, change.id))
                .header(names::SOURCE, source);
            let ack = self
                .js
                .send_publish(self.names.row(source, table, &key), message)
                .await
                .map_err(|e| publish_error(&state, what, e, Some(change.id)))?;
            acks.push((change.id, ack));
            // Within any client's limit of acknowledgements in flight.
            if acks.len() == ROWS_IN_FLIGHT {
                for (id, ack) in acks.drain(..) {
                    ack.await
                        .map_err(|e| publish_error(&state, what, e, Some(id)))?;
                }
            }
        }
        for (id, ack) in acks {
            ack.await
                .map_err(|e| publish_error(&state, what, e, Some(id)))?;
        }
        Ok(())
    }

    /// Publishes `changes` to the change stream as runs of one table, one message after
    /// another: each waits for the one before it to be stored, so a lost publish can never
    /// let a later one land first. `before` is the position before the first; `after`, the
    /// position once all are done (holes included).
    async fn publish_changes(
        &self,
        source: &str,
        changes: &[&Change],
        before: &Position,
        after: &Position,
    ) -> Result<()> {
        let mut since = before.clone();
        let mut start = 0;
        while start < changes.len() {
            let table = &changes[start].table;
            let mut end = start;
            let mut encoded = Vec::new();
            let mut bytes = 0;
            while end < changes.len() && &changes[end].table == table {
                let one = message::encode(changes[end]);
                if end > start && bytes + one.len() > MESSAGE_BYTES {
                    break;
                }
                bytes += one.len() + 1;
                encoded.push(one);
                end += 1;
            }
            let payload = message::encode_all(&encoded);
            let run = &changes[start..end];
            let mut until = since.clone();
            if end == changes.len() {
                until = after.clone();
            } else {
                for c in run {
                    until.mark(c.id, c.id);
                }
            }
            let (first, last) = (run[0].id, run[run.len() - 1].id);
            let message = PublishMessage::build()
                .payload(Bytes::from(payload))
                .message_id(format!("{}-{last}", names::change_id(source, first)))
                .header(names::SOURCE, source)
                .header(names::SINCE, position_header(&since).as_str())
                .header(names::POSITION, position_header(&until).as_str());
            let what = format!("publishing changes {first}..={last}");
            let alone = (run.len() == 1).then_some(first);
            self.publish(self.names.change(source, table), message, &what, alone)
                .await?;
            since = until;
            start = end;
        }
        Ok(())
    }

    /// Records `position` as the hub's, for its next start and for new children.
    async fn store_position(&self, source: &str, position: &Position) -> Result<()> {
        // The whole position, anchor included: what tells the replicator that its source
        // went back in time, as a SQL destination's checkpoint does.
        let body = serde_json::json!({
            "source": source,
            "position": position,
        });
        let message = PublishMessage::build()
            .payload(Bytes::from(body.to_string()))
            .header(names::SOURCE, source);
        let subject = self.names.position_subject();
        self.js
            .send_publish(subject, message)
            .await
            .map_err(|e| stream_error(&self.names.state_stream(), "storing the position", e, true))?
            .await
            .map_err(|e| {
                stream_error(&self.names.state_stream(), "storing the position", e, true)
            })?;
        Ok(())
    }
}

#[async_trait]
impl Sink for Publisher {
    async fn position(&mut self, source: &str) -> Result<Position> {
        let state = self.names.state_stream();
        let found = read_hub_position(&self.js, &self.names).await?;
        let position = match found {
            Some((owner, _)) if owner != source => {
                return Err(Error::Config(format!(
                    "stream `{}` carries the changes of source `{owner}`, not of `{source}`: give \
                     each hub a stream of its own",
                    self.names.stream
                )));
            }
            Some((_, p)) => p,
            None => {
                // Recorded at once, so children learn whose changes the stream carries.
                self.store_position(source, &Position::default()).await?;
                Position::default()
            }
        };
        tracing::debug!(stream = %state, watermark = position.watermark, "publisher position");
        Ok(position)
    }

    async fn apply(&mut self, source: &str, batch: &Batch) -> Result<Position> {
        let before = self.position(source).await?;
        let todo: Vec<&Change> = batch
            .changes
            .iter()
            .filter(|c| !before.contains(c.id))
            .collect();
        let mut after = before.clone();
        batch.mark_done(&mut after);
        if todo.is_empty() && after == before {
            return Ok(before);
        }
        // Rows first: a child that copies the rows, then streams from the change stream's
        // end as it was before, finds every change it did not stream in the rows.
        self.publish_rows(source, &todo).await?;
        if todo.is_empty() {
            let message = PublishMessage::build()
                .message_id(names::marker_id(source, after.watermark, after.frontier()))
                .header(names::SOURCE, source)
                .header(names::SINCE, position_header(&before).as_str())
                .header(names::POSITION, position_header(&after).as_str());
            self.publish(
                self.names.marker(source),
                message,
                "publishing the position",
                None,
            )
            .await?;
        } else {
            self.publish_changes(source, &todo, &before, &after).await?;
        }
        self.store_position(source, &after).await?;
        Ok(after)
    }

    async fn replay(&mut self, source: &str, changes: &[Change]) -> Result<()> {
        // Parked changes the position already covers: children apply them whatever their
        // position says, in one message each so a refused one names itself.
        let position = self.position(source).await?;
        let todo: Vec<&Change> = changes.iter().collect();
        self.publish_rows(source, &todo).await?;
        for change in changes {
            let message = PublishMessage::build()
                .payload(Bytes::from(message::encode_all([&message::encode(change)])))
                .header(names::SOURCE, source)
                .header(names::REPLAY, "1")
                .header(names::SINCE, position_header(&position).as_str())
                .header(names::POSITION, position_header(&position).as_str());
            self.publish(
                self.names.change(source, &change.table),
                message,
                &format!("replaying change {}", change.id),
                Some(change.id),
            )
            .await?;
        }
        Ok(())
    }
}

/// The hub's stored position and the source it belongs to, if it stored one.
pub(crate) async fn read_hub_position(
    js: &jetstream::Context,
    names: &Names,
) -> Result<Option<(String, Position)>> {
    let state = names.state_stream();
    let stream = js
        .get_stream_no_info(&state)
        .await
        .map_err(|e| stream_error(&state, "opening the state stream", e, true))?;
    let message = match stream
        .get_last_raw_message_by_subject(&names.position_subject())
        .await
    {
        Ok(m) => m,
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(e) => return Err(stream_error(&state, "reading the hub's position", e, true)),
    };
    let bad = |reason: &str| Error::Stream {
        stream: state.clone(),
        context: "reading the hub's position".into(),
        reason: reason.to_string(),
        id: None,
        transient: false,
    };
    let body: serde_json::Value =
        serde_json::from_slice(&message.payload).map_err(|e| bad(&e.to_string()))?;
    let source = body["source"].as_str().ok_or_else(|| bad("no source"))?;
    let position: Position =
        serde_json::from_value(body["position"].clone()).map_err(|e| bad(&e.to_string()))?;
    Ok(Some((source.to_string(), position)))
}

/// A failed publish as ormsync's error. One larger than the server takes is refused for
/// good, naming the change `alone` in the message, so it can be parked.
fn publish_error(stream: &str, what: &str, e: PublishError, alone: Option<i64>) -> Error {
    let too_large = e.kind() == PublishErrorKind::MaxPayloadExceeded;
    let mut error = stream_error(stream, what, e, !too_large);
    if let (Error::Stream { id, reason, .. }, true) = (&mut error, too_large) {
        *id = alone;
        reason.push_str("; raise the server's max_payload, or park the change");
    }
    error
}

/// The last sequence `stream` (named `name`) holds now; `context` names the read in an
/// error.
pub(crate) async fn stream_end(
    stream: &mut stream::Stream,
    name: &str,
    context: &str,
) -> Result<u64> {
    Ok(stream
        .info()
        .await
        .map_err(|e| stream_error(name, context, e, true))?
        .state
        .last_sequence)
}

/// A NATS error as ormsync's, its text redacted.
pub(crate) fn stream_error(
    stream: &str,
    context: &str,
    error: impl std::fmt::Display,
    transient: bool,
) -> Error {
    Error::Stream {
        stream: stream.to_string(),
        context: context.to_string(),
        reason: crate::redact::redact(&error.to_string()),
        id: None,
        transient,
    }
}
