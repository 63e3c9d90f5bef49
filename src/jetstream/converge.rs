//! After a copy from the state stream: what the hub changed while the copy read, set right
//! at one point of the change stream.
//!
//! The copy reads each row at its own moment, so it holds rows from many moments.
//! Streaming from the point read before the copy would replay changes older than some rows
//! they meet: a parent's delete while a newer child row the copy holds references the
//! parent again, which a foreign key refuses; an update that regresses a row for a while.
//! Instead, the change stream is read past that point to a *cut*: the first moment it
//! holds the change of every version the copy read (the hub publishes a batch's versions
//! just before its changes, so the cut comes within a batch's publishing). Each row
//! changed before the cut gets its last change before it, rows parents first and deletions
//! children first, with the rows the child refused as copied; a row not changed there was
//! copied as the cut holds it. The child then holds the hub as of the cut, foreign keys
//! included, and streams from there: nothing is replayed over a newer row.
//!
//! This is the converge of a SQL destination's snapshot, with the change stream in place
//! of one snapshot of the source.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;

use super::message;
use super::names::{self, Names};
use super::publisher::{read_hub_position, stream_end, stream_error};
use super::state::Copied;
use crate::change::{Change, Op};
use crate::entity::TableSpec;
use crate::error::{Error, Result};
use crate::position::Position;
use crate::snapshot::order::{in_tree_order, parents_first};

/// How long the converge waits for the changes of versions the copy read before it gives
/// up (and the child copies again): the hub publishes them right after the versions, so
/// only a hub stopped in between makes it wait.
const PATIENCE: Duration = Duration::from_secs(60);

/// Messages per read of the change stream (each up to 256 KiB of changes).
const MESSAGES_PER_READ: usize = 64;

/// The point the child converges to.
pub(crate) struct Cut {
    /// The change stream's last sequence read: streaming resumes after it.
    pub(crate) end: u64,
    /// Every change the child holds once `changes` are written.
    pub(crate) position: Position,
    /// What to write, in order: each row's last change before the cut, and the rows the
    /// child refused as copied, parents' rows first, then deletions children first.
    pub(crate) changes: Vec<Change>,
}

/// Reads the change stream after the copy's end up to a cut that holds every version the
/// copy read, and returns what brings the child to that cut.
///
/// `tables` are those the child takes, `skip` those it leaves out; a change of any other
/// table is an error, as in the stream.
pub(crate) async fn to_cut(
    js: &jetstream::Context,
    names: &Names,
    child: &str,
    copied: Copied,
    tables: &HashMap<String, TableSpec>,
    skip: &HashSet<String>,
) -> Result<Cut> {
    let mut changes = js
        .get_stream(&names.stream)
        .await
        .map_err(|e| stream_error(&names.stream, "opening the change stream", e, true))?;
    let consumer = changes
        .create_consumer(pull::Config {
            filter_subject: names.change_subjects(),
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: copied.end + 1,
            },
            ack_policy: jetstream::consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .map_err(|e| {
            stream_error(
                &names.stream,
                "reading the changes made while copying",
                e,
                true,
            )
        })?;
    let mut last: HashMap<(String, String), Change> = HashMap::new();
    let mut position = copied.position.clone();
    let mut end = copied.end;
    let began = Instant::now();
    loop {
        // What the hub had stored when this pass began (the first one: once the copy had
        // ended, so the cut holds the change of every row the copy may have missed): every
        // change it holds is in the stream up to the end read after it. The pass reads to that end, not to whatever
        // end there is when it gets there: a hub that goes on publishing faster than the
        // child reads would keep it from ever getting there.
        let hub = read_hub_position(js, names).await?.map(|(_, p)| p);
        let target = stream_end(
            &mut changes,
            &names.stream,
            "reading the change stream's end",
        )
        .await?;
        while end < target {
            let read = read_some(&consumer, names, &mut end).await?;
            if read.is_empty() {
                // Gone (aged out) meanwhile: nothing more to read up to the target.
                break;
            }
            for (changes, after) in read {
                for change in changes {
                    take(child, change, tables, skip, &mut position, &mut last)?;
                }
                if let Some(after) = after {
                    position.merge(&after);
                }
            }
        }
        if let Some(hub) = &hub {
            position.merge(hub);
        }
        let waiting = copied
            .fresh
            .iter()
            .filter(|&&id| !position.contains(id))
            .count();
        if waiting == 0 {
            break;
        }
        if began.elapsed() > PATIENCE {
            return Err(stream_error(
                &names.stream,
                "converging a copy",
                format!(
                    "the hub has not published the changes of {waiting} row versions the copy \
                     read within {PATIENCE:?}; copying again"
                ),
                true,
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The rows the child refused as copied and the deletions the copy found, each unless
    // its row changed again before the cut.
    for change in copied.deferred.into_iter().chain(copied.gone) {
        keep_last(&mut last, change);
    }
    Ok(Cut {
        end,
        position,
        changes: in_order(last.into_values(), tables),
    })
}

/// Reads what the change stream holds next, up to [`MESSAGES_PER_READ`] messages: each
/// message's changes with the hub's position after them. Empty at the stream's end.
async fn read_some(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    names: &Names,
    end: &mut u64,
) -> Result<Vec<(Vec<Change>, Option<Position>)>> {
    let context = "reading the changes made while copying";
    let mut messages = consumer
        .fetch()
        .max_messages(MESSAGES_PER_READ)
        .expires(Duration::from_millis(300))
        .messages()
        .await
        .map_err(|e| stream_error(&names.stream, context, e, true))?;
    let mut out = Vec::new();
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| stream_error(&names.stream, context, e, true))?;
        let seq = m
            .info()
            .map_err(|e| stream_error(&names.stream, context, e, false))?
            .stream_sequence;
        *end = seq;
        let after = m
            .headers
            .as_ref()
            .and_then(|h| h.get(names::POSITION))
            .and_then(|v| message::parse_position(v.as_str()));
        out.push((message::decode_all(&m.payload, &names.stream, seq)?, after));
    }
    Ok(out)
}

/// Records `change` as done and, for a table the child takes, as its row's last change
/// unless a later one is already there (a dead letter replayed at the hub comes under its
/// old id, after its row's newer changes).
fn take(
    child: &str,
    change: Change,
    tables: &HashMap<String, TableSpec>,
    skip: &HashSet<String>,
    position: &mut Position,
    last: &mut HashMap<(String, String), Change>,
) -> Result<()> {
    position.mark(change.id, change.id);
    if skip.contains(&change.table) {
        return Ok(());
    }
    if !tables.contains_key(&change.table) {
        return Err(Error::UnknownTable {
            destination: child.to_string(),
            table: change.table,
            id: change.id,
        });
    }
    keep_last(last, change);
    Ok(())
}

/// Keeps `change` as its row's last unless a later one is there.
fn keep_last(last: &mut HashMap<(String, String), Change>, change: Change) {
    let key = (change.table.clone(), change.key.to_json());
    match last.get(&key) {
        Some(had) if had.id > change.id => {}
        _ => {
            last.insert(key, change);
        }
    }
}

/// `changes` (one per row) in foreign-key order: rows, as updates ("the row is now this"),
/// parents' tables first and a table's own parents before their children; then deletions,
/// children's tables first.
fn in_order(
    changes: impl IntoIterator<Item = Change>,
    tables: &HashMap<String, TableSpec>,
) -> Vec<Change> {
    let mut rows: HashMap<String, Vec<Change>> = HashMap::new();
    let mut gone: HashMap<String, Vec<Change>> = HashMap::new();
    for mut change in changes {
        if change.op == Op::Delete {
            gone.entry(change.table.clone()).or_default().push(change);
        } else {
            change.op = Op::Update;
            rows.entry(change.table.clone()).or_default().push(change);
        }
    }
    let order = parents_first(tables.values());
    let mut out = Vec::new();
    for spec in &order {
        if let Some(mut rows) = rows.remove(&spec.table) {
            rows.sort_by_key(|c| c.id);
            out.extend(in_tree_order(spec, rows, |c| &c.row));
        }
    }
    for spec in order.iter().rev() {
        if let Some(mut gone) = gone.remove(&spec.table) {
            gone.sort_by_key(|c| c.id);
            out.extend(gone);
        }
    }
    out
}
