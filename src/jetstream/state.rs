//! A child's copy of the hub's current rows, from the state stream: how a new child, or
//! one that fell behind what the change stream retains, catches up without a connection
//! to the hub's database.
//!
//! The hub publishes a batch's row versions before its changes, so every change at or
//! below the change stream's last sequence, read before the copy, has its row version
//! (or a later one) in the state stream by the time the copy reads it. The rows copied
//! come from many moments, though: what the hub changed while the copy read is set
//! right by the [converge](super::converge) that follows, not by replaying those changes
//! one by one over rows the copy may hold newer.

use std::collections::HashMap;

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;

use super::message;
use super::names::Names;
use super::publisher::{read_hub_position, stream_end, stream_error};
use crate::apply::Sink;
use crate::change::{Change, Op};
use crate::entity::TableSpec;
use crate::error::{Error, Result};
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
    /// Ids of the versions copied that `position` lacks: the hub published them while the
    /// copy read, and the converge waits until the change stream holds their changes.
    pub(crate) fresh: Vec<i64>,
    /// Rows the child refused as copied (usually a row whose parent the hub wrote after
    /// the copy read the parent's table), left for the converge.
    pub(crate) deferred: Vec<Change>,
    /// The rows the hub deleted, for the converge to delete after the rows it writes.
    pub(crate) gone: Vec<Change>,
}

/// Copies every row version of `tables` in the state stream through `sink`, parents
/// first; the deletions it finds are left for the converge, which writes them after the
/// rows it writes. Each version goes as an update ("the row is now this"), so a row
/// outside a destination's filter is removed from it, as after a change that moved it out.
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
    let end = stream_end(
        &mut changes,
        &names.stream,
        "reading the change stream's end",
    )
    .await?;
    let state_name = names.state_stream();
    let mut state = js
        .get_stream(&state_name)
        .await
        .map_err(|e| stream_error(&state_name, "opening the state stream", e, true))?;
    let order = parents_first(tables.iter().copied());
    let mut deletes: Vec<Change> = Vec::new();
    let mut done = Done {
        rows: 0,
        fresh: Vec::new(),
        deferred: Vec::new(),
    };
    for spec in &order {
        // The table is read up to the state stream's end as it is now: a busy hub would
        // otherwise keep the copy from ever reaching the end. A row the hub changes while
        // the table is read may then be missed (its version replaced before it was
        // delivered, the new one past that end): its change, published before the copy
        // ends, is inside the converge's cut, which holds the hub's position read once
        // the copy has ended.
        let target = stream_end(&mut state, &state_name, "reading the state stream's end").await?;
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
        // A fetch answers with what there is, so an empty one ends the table, as does a
        // version past the end read above. (A consumer's pending count cannot: a version
        // replaced meanwhile under the one-per-subject limit is counted and never
        // delivered.) nats-server 2.9 leaves an empty fetch to expire.
        let mut upserts = Vec::with_capacity(chunk);
        let mut reached = target == 0;
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
                reached |= seq >= target;
                let mut change = message::decode(&m.payload, &state_name, seq)?;
                if !position.contains(change.id) {
                    done.fresh.push(change.id);
                }
                if change.op == Op::Delete {
                    gone.insert(change.key.to_json(), change);
                } else {
                    gone.remove(&change.key.to_json());
                    change.op = Op::Update;
                    upserts.push(change);
                }
                if upserts.len() >= chunk {
                    done.write(source, std::mem::take(&mut upserts), sink)
                        .await?;
                }
            }
            tracing::debug!(table = %spec.table, fetched, "copying: fetched");
            if fetched == 0 || reached {
                break;
            }
        }
        done.write(source, upserts, sink).await?;
        deletes.extend(gone.into_values());
    }
    Ok(Copied {
        end,
        position,
        rows: done.rows,
        fresh: done.fresh,
        deferred: done.deferred,
        gone: deletes,
    })
}

/// What the copy has written so far, and left for the converge.
struct Done {
    rows: u64,
    fresh: Vec<i64>,
    deferred: Vec<Change>,
}

impl Done {
    /// Writes `changes` in one child transaction; a row the child refuses (its foreign key,
    /// a constraint, a rule that cannot place it) is left for the converge, which writes it
    /// after its parents, or meets the destination's policy for it there.
    async fn write(
        &mut self,
        source: &str,
        mut changes: Vec<Change>,
        sink: &mut dyn Sink,
    ) -> Result<()> {
        while !changes.is_empty() {
            let error = match sink.replay(source, &changes).await {
                Ok(()) => {
                    self.rows += changes.len() as u64;
                    return Ok(());
                }
                Err(e) => e,
            };
            let refused = match &error {
                Error::Apply { id, .. } | Error::Unresolved { id, .. } if !error.is_transient() => {
                    changes.iter().position(|c| c.id == *id)
                }
                _ => None,
            };
            let Some(i) = refused else {
                return Err(error);
            };
            tracing::debug!(change = changes[i].id, table = %changes[i].table, error = %crate::redact::redact(&error.to_string()),
                "copying: a row refused, left for the converge");
            self.deferred.push(changes.remove(i));
        }
        Ok(())
    }
}
