//! A child's copy of the hub's current rows, from the state stream: how a new child, or
//! one that fell behind what the change stream retains, catches up without a connection
//! to the hub's database.
//!
//! The hub publishes a batch's row versions before its changes, so every change at or
//! below the change stream's last sequence, read before the copy, has its row version
//! (or a later one) in the state stream by the time the copy reads it. The child then
//! streams from the next sequence: a change it copied a later version of lands again and
//! the later version follows, so the rows converge as a resync's do. On the way, such an
//! older change can meet a row the copy took later (a delete of a parent that a copied
//! child row points at again), which a foreign key refuses: the child halts there rather
//! than diverge.

use std::collections::HashMap;

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;

use super::message;
use super::names::Names;
use super::publisher::{read_hub_position, stream_error};
use crate::apply::Sink;
use crate::change::{Change, Op};
use crate::entity::TableSpec;
use crate::error::Result;
use crate::position::Position;
use crate::snapshot::order::parents_first;

/// What a copy found and did.
pub(crate) struct Copied {
    /// The change stream's last sequence before the copy: streaming resumes after it.
    pub(crate) end: u64,
    /// The hub's position before that: every change it holds is in the rows copied.
    pub(crate) position: Position,
    /// Row versions written.
    pub(crate) rows: u64,
}

/// Copies every row version of `tables` in the state stream through `sink`, parents
/// first, then the deletions, children first.
pub(crate) async fn copy_rows(
    js: &jetstream::Context,
    names: &Names,
    source: &str,
    tables: &[&TableSpec],
    chunk: usize,
    sink: &mut dyn Sink,
) -> Result<Copied> {
    let position = read_hub_position(js, names)
        .await?
        .map(|(_, p)| p)
        .unwrap_or_default();
    let mut changes = js
        .get_stream(&names.stream)
        .await
        .map_err(|e| stream_error(&names.stream, "opening the change stream", e, true))?;
    let end = changes
        .info()
        .await
        .map_err(|e| stream_error(&names.stream, "reading the change stream's end", e, true))?
        .state
        .last_sequence;
    let state_name = names.state_stream();
    let state = js
        .get_stream(&state_name)
        .await
        .map_err(|e| stream_error(&state_name, "opening the state stream", e, true))?;
    let order = parents_first(tables.iter().copied());
    let mut deletes: Vec<Vec<Change>> = Vec::with_capacity(order.len());
    let mut rows = 0;
    for spec in &order {
        // Deletions by key: a version of the row read after its deletion (the hub wrote it
        // again while the copy read) takes it back.
        let mut gone: HashMap<String, Change> = HashMap::new();
        // A plain ephemeral pull consumer, which nats-server 2.9 serves as any later one.
        let consumer = state
            .create_consumer(pull::Config {
                filter_subject: names.table_rows(source, &spec.table),
                ack_policy: jetstream::consumer::AckPolicy::None,
                inactive_threshold: std::time::Duration::from_secs(60),
                ..Default::default()
            })
            .await
            .map_err(|e| stream_error(&state_name, "reading the rows", e, true))?;
        tracing::debug!(table = %spec.table, "copying row versions from the state stream");
        // A fetch answers with what there is, so an empty one ends the table. (A consumer's
        // pending count cannot: a version replaced meanwhile under the one-per-subject limit
        // is counted and never delivered.) nats-server 2.9 leaves an empty fetch to expire.
        let mut upserts = Vec::with_capacity(chunk);
        loop {
            let mut messages = consumer
                .fetch()
                .max_messages(chunk.min(1000))
                .expires(std::time::Duration::from_millis(300))
                .messages()
                .await
                .map_err(|e| stream_error(&state_name, "reading the rows", e, true))?;
            let mut fetched = 0;
            while let Some(m) = messages.next().await {
                let m = m.map_err(|e| stream_error(&state_name, "reading the rows", e, true))?;
                fetched += 1;
                let seq = m.info().map(|i| i.stream_sequence).unwrap_or_default();
                let change = message::decode(&m.payload, &state_name, seq)?;
                if change.op == Op::Delete {
                    gone.insert(change.key.to_json(), change);
                } else {
                    gone.remove(&change.key.to_json());
                    upserts.push(change);
                }
                if upserts.len() >= chunk {
                    rows += upserts.len() as u64;
                    sink.replay(source, &upserts).await?;
                    upserts.clear();
                }
            }
            tracing::debug!(table = %spec.table, fetched, "copying: fetched");
            if fetched == 0 {
                break;
            }
        }
        rows += upserts.len() as u64;
        if !upserts.is_empty() {
            sink.replay(source, &upserts).await?;
        }
        let mut gone: Vec<Change> = gone.into_values().collect();
        gone.sort_by_key(|c| c.id);
        deletes.push(gone);
    }
    tracing::debug!(rows, "copying: deletions");
    for gone in deletes.iter().rev() {
        for part in gone.chunks(chunk) {
            sink.replay(source, part).await?;
        }
    }
    Ok(Copied {
        end,
        position,
        rows,
    })
}
