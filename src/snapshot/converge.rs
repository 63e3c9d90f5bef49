//! After a copy: every row the copy may hold older than the source, and every row changed
//! since the stream stopped, read again at one snapshot of the source; then the checkpoint
//! set to exactly what that snapshot holds.
//!
//! A copy reads each chunk at its own moment, while the application writes, so the copied
//! rows come from many moments. Replaying the outbox over them would apply changes older
//! than some rows it meets: a parent's delete while a newer child row the copy holds still
//! references it, an update that regresses a row for a while. Instead, a copy starts from a
//! *base*, a position whose changes the destination already holds (a new destination: the
//! outbox ids committed when the copy began, which every chunk read afterwards contains; a
//! resync: the destination's checkpoint, which the stream applied to every other table).
//! Once every table is copied, one source snapshot gives the outbox ids it holds and,
//! for every key of every change outside the base, the row as that snapshot holds it. Those
//! rows go to the destination's sink as changes, parents' rows first and the keys the
//! snapshot lacks deleted children first, each under the id of its key's last change, so a
//! row the destination refuses meets its policy (halt, or park that change) as it would in
//! the stream. Then the checkpoint becomes the base plus the snapshot's ids, with the
//! base's record removed in the same transaction. The destination then holds the source as of that one
//! snapshot, foreign keys included, and the stream goes on from there: nothing is replayed
//! over a newer row. A row no change touched since the base is the same at every moment the
//! copy could have read it.
//!
//! Every write is idempotent and the checkpoint moves last, so a converge interrupted
//! halfway is simply run again, from the same base, at a later snapshot.

use std::collections::{HashMap, HashSet};

use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend,
    IsolationLevel, TransactionTrait,
};

use super::copy::identity;
use super::order;
use super::run::Link;
use super::store;
use crate::apply::{self, Sink};
use crate::change::{Batch, Change, Op, Row};
use crate::entity::TableSpec;
use crate::error::{DbContext, Error, Result};
use crate::keyset::{self, Decoder};
use crate::outbox::{dead_letters, visible};
use crate::position::Position;
use crate::value::Value;

/// Keys per keyed read of the source.
const KEYS_PER_READ: usize = 500;

/// What a converge did.
#[derive(Debug, Default)]
pub(crate) struct Converged {
    /// The checkpoint stored.
    pub(crate) position: Position,
    /// Rows written as the snapshot holds them.
    pub(crate) refreshed: u64,
    /// Keys the snapshot lacks, deleted.
    pub(crate) deleted: u64,
    /// Changes parked behind a dead letter of their row.
    pub(crate) parked: u64,
}

/// The keys one table's changes touched outside the base, and what the snapshot holds of
/// them.
#[derive(Default)]
struct Touched {
    /// Each key once, in the order first seen, with its last change and the ids of its
    /// earlier ones.
    keys: Vec<(Vec<Value>, Change, Vec<i64>)>,
    index: HashMap<String, usize>,
    /// The rows present in the snapshot, as updates under their key's last change id.
    present: Vec<Refreshed>,
    /// The keys absent from it, as deletes under their key's last change id, each with the
    /// whole row its last delete carried where there is one.
    gone: Vec<Refreshed>,
}

/// A row as the snapshot holds it, as a change, with the ids of the changes of its key it
/// supersedes: they are marked done in the same destination transaction. So a converge
/// run from an older snapshot by an instance that lost its lease finds every change it
/// would write already done by the newer one, and writes nothing.
struct Refreshed {
    change: Change,
    supersedes: Vec<i64>,
}

/// Converges the destination of `link` from `base` through `sink` (see the module's
/// documentation), `batch_size` changes a batch: `tables` are those it receives, `skipped`
/// those registered but left out for it.
///
/// # Errors
///
/// A change of a table not registered ([`Error::UnknownTable`]), a change the sink refuses
/// (its batch is left in `in_flight`, for the caller's policy to park the change at fault),
/// and any failed read or write. The checkpoint has not moved to the snapshot then, and
/// running it again is safe.
pub(crate) async fn converge(
    link: &Link,
    sink: &mut dyn Sink,
    tables: &HashMap<String, TableSpec>,
    skipped: &HashSet<String>,
    base: &Position,
    batch_size: u64,
    in_flight: &mut Vec<Change>,
) -> Result<Converged> {
    let (visible, mut touched, parked, extra) =
        read_at_one_snapshot(link, tables, skipped, base).await?;
    let mut done = Converged::default();
    for change in &parked {
        if !dead_letters::park_behind(&link.source, &link.destination, change)
            .await?
            .parked()
        {
            // Released since the snapshot was read: still behind it in order.
            let why = "parked behind an earlier change of the same row";
            dead_letters::park(&link.source, &link.destination, change, why).await?;
        }
        done.parked += 1;
    }
    // Rows parents first, then deletes children first: each write finds what it references.
    let specs = order::parents_first(tables.values());
    let mut upserts = Vec::new();
    for spec in &specs {
        if let Some(t) = touched.get_mut(&spec.table) {
            done.refreshed += t.present.len() as u64;
            upserts.extend(order::in_tree_order(
                spec,
                std::mem::take(&mut t.present),
                |r| &r.change.row,
            ));
        }
    }
    apply_in_batches(link, sink, upserts, batch_size, in_flight).await?;
    for spec in specs.iter().rev() {
        let t = touched.get_mut(&spec.table);
        // Rows a resync found the source lacks and no change since brought back.
        let mut stray = Vec::new();
        for pk in extra.get(&spec.table).into_iter().flatten() {
            let key = Row::from_json(pk).map_err(|e| {
                Error::Config(format!(
                    "a row of `{}` left out by the copy has a corrupt key ({e}); resync it",
                    spec.table
                ))
            })?;
            let id = identity(&keyset::key_of(spec, &key)?);
            if !t.as_ref().is_some_and(|t| t.index.contains_key(&id)) {
                stray.push(key);
            }
        }
        for chunk in stray.chunks(link.chunk_rows.max(1) as usize) {
            delete_stray(link, spec, chunk).await?;
            done.deleted += chunk.len() as u64;
        }
        if let Some(t) = t {
            done.deleted += t.gone.len() as u64;
            let gone = std::mem::take(&mut t.gone);
            apply_in_batches(link, sink, gone, batch_size, in_flight).await?;
        }
    }
    let mut position = base.clone();
    position.merge(&visible);
    // The snapshot's last change, whatever the base held: after a source went back in
    // time, the base's anchor is a change the source no longer has.
    position.anchor = visible.anchor;
    done.position = finish(link, position).await?;
    Ok(done)
}

/// Applies `rows` through `sink`, `batch_size` a batch, each batch marking done the ids its
/// rows supersede; on failure the batch is left in `in_flight`.
async fn apply_in_batches(
    link: &Link,
    sink: &mut dyn Sink,
    rows: Vec<Refreshed>,
    batch_size: u64,
    in_flight: &mut Vec<Change>,
) -> Result<()> {
    let per_batch = batch_size.max(1) as usize;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut batch = Batch {
            restates: true,
            ..Batch::default()
        };
        for r in rows.by_ref().take(per_batch) {
            batch.changes.push(r.change);
            batch
                .skipped
                .extend(r.supersedes.into_iter().map(|id| (id, id)));
        }
        if let Err(e) = sink.apply(&link.source_id, &batch).await {
            *in_flight = batch.changes;
            return Err(e);
        }
    }
    Ok(())
}

/// Deletes the destination rows keyed `keys`, which the source lacks, as the destination's
/// rules say, in one transaction holding the checkpoint's lock.
async fn delete_stray(link: &Link, spec: &TableSpec, keys: &[Row]) -> Result<()> {
    let txn = link
        .dest
        .begin()
        .await
        .context(|| format!("snapshot `{}`: beginning a transaction", spec.table))?;
    let deleted = async {
        apply::lock_checkpoint(&txn, &link.source_id).await?;
        link.fence.hold(&txn, &link.source_id).await?;
        apply::copied::write(
            &txn,
            &link.source_id,
            &link.rules,
            &spec.table,
            &spec.key,
            &[],
            keys,
        )
        .await
        .context(|| format!("snapshot `{}`: deleting rows the source lacks", spec.table))?;
        Ok::<_, Error>(())
    }
    .await;
    match deleted {
        Ok(()) => txn
            .commit()
            .await
            .context(|| format!("snapshot `{}`: deleting rows the source lacks", spec.table)),
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e)
        }
    }
}

/// Reads, in one snapshot of the source, the outbox ids it holds, the changes outside
/// `base` (those of rows with a dead letter set apart, to park), and the rows of their keys;
/// with the destination rows a resync found the source lacks.
#[allow(clippy::type_complexity)]
async fn read_at_one_snapshot(
    link: &Link,
    tables: &HashMap<String, TableSpec>,
    skipped: &HashSet<String>,
    base: &Position,
) -> Result<(
    Position,
    HashMap<String, Touched>,
    Vec<Change>,
    HashMap<String, HashSet<String>>,
)> {
    let store::LeftOut {
        rows: mut left_out,
        mut extra,
    } = store::left_out(&link.dest, &link.source_id).await?;
    let txn = snapshot_of(&link.source).await?;
    let read = async {
        let mut visible = visible::position(&txn).await?;
        visible.anchor = visible::anchor_of(&txn, &visible).await?;
        let blocked = dead_letters::blocked_rows(&txn, &link.destination).await?;
        let mut touched: HashMap<String, Touched> = HashMap::new();
        let mut parked = Vec::new();
        // The last change of each row the copy left out, for the sink to judge it by.
        let mut last_of_left_out: HashMap<(String, String), Change> = HashMap::new();
        // Rows left out may have changes the base holds: then the whole outbox is read.
        let from = if left_out.is_empty() {
            base.watermark
        } else {
            0
        };
        visible::each_change_above(&txn, from, base, |change, held| {
            if skipped.contains(&change.table) {
                return Ok(());
            }
            let key = (change.table.clone(), change.key.to_json());
            // A row with a dead letter: its changes wait behind it, as in the stream.
            let behind_a_letter = !blocked.is_empty() && blocked.contains(&key);
            if held {
                if !behind_a_letter
                    && left_out
                        .get(&key.0)
                        .is_some_and(|keys| keys.contains(&key.1))
                {
                    last_of_left_out.insert(key, change);
                }
                return Ok(());
            }
            let Some(spec) = tables.get(&change.table) else {
                return Err(Error::UnknownTable {
                    destination: link.destination.clone(),
                    table: change.table,
                    id: change.id,
                });
            };
            if behind_a_letter {
                parked.push(change);
                return Ok(());
            }
            touch(&mut touched, spec, change)
        })
        .await?;
        // A row left out whose changes all precede the base is taken through the sink
        // under its last one; one without any change in the outbox cannot be.
        for ((table, pk), change) in last_of_left_out {
            if let Some(keys) = left_out.get_mut(&table) {
                keys.remove(&pk);
            }
            let spec = &tables[&table];
            let key = keyset::key_of(spec, &change.key)?;
            if !touched
                .get(&table)
                .is_some_and(|t| t.index.contains_key(&identity(&key)))
            {
                touch(&mut touched, spec, change)?;
            }
        }
        for (table, keys) in &left_out {
            for pk in keys {
                let touched_here = Row::from_json(pk).ok().and_then(|k| {
                    let key = keyset::key_of(&tables.get(table)?.clone(), &k).ok()?;
                    Some(touched.get(table)?.index.contains_key(&identity(&key)))
                });
                if touched_here != Some(true) {
                    tracing::warn!(destination = %link.destination, table, key = %pk,
                        "snapshot: a copied row cannot be placed at this destination and has \
                         no change in the outbox to park; left out");
                }
            }
        }
        for (table, t) in &mut touched {
            read_rows(&txn, &tables[table], t).await?;
        }
        for (table, keys) in &mut extra {
            if let Some(spec) = tables.get(table) {
                keep_absent(&txn, spec, keys).await?;
            }
        }
        Ok::<_, Error>((visible, touched, parked, extra))
    }
    .await;
    // Read-only: the snapshot ends either way.
    let _ = txn.commit().await;
    read
}

/// Records `change` as the last one of its key so far.
fn touch(touched: &mut HashMap<String, Touched>, spec: &TableSpec, change: Change) -> Result<()> {
    let key = keyset::key_of(spec, &change.key)?;
    let t = touched.entry(change.table.clone()).or_default();
    match t.index.get(&identity(&key)) {
        Some(&i) => {
            let (_, last, earlier) = &mut t.keys[i];
            earlier.push(last.id);
            *last = change;
        }
        None => {
            t.index.insert(identity(&key), t.keys.len());
            t.keys.push((key, change, Vec::new()));
        }
    }
    Ok(())
}

/// A transaction on `source` whose reads all see one snapshot.
async fn snapshot_of(source: &DatabaseConnection) -> Result<DatabaseTransaction> {
    let (isolation, access) = match source.get_database_backend() {
        // One writer at a time: a read transaction sees one state. Short, since in a
        // rollback-journal database it holds writers' commits back.
        DbBackend::Sqlite => (None, None),
        _ => (
            Some(IsolationLevel::RepeatableRead),
            Some(AccessMode::ReadOnly),
        ),
    };
    source
        .begin_with_config(isolation, access)
        .await
        .context(|| "snapshot: opening a snapshot of the source".into())
}

/// Fills `t.present` and `t.gone` from the source, for `t.keys`.
async fn read_rows(txn: &DatabaseTransaction, spec: &TableSpec, t: &mut Touched) -> Result<()> {
    let backend = txn.get_database_backend();
    let columns = keyset::typed_columns(spec)?;
    let decoder = Decoder::new(spec)?;
    for chunk in t.keys.chunks(KEYS_PER_READ) {
        let refs: Vec<&[Value]> = chunk.iter().map(|(k, _, _)| k.as_slice()).collect();
        let mut q = keyset::select(backend, &spec.table, &columns, &spec.key);
        q.cond_where(keyset::keys_condition(backend, &spec.key, &refs));
        let rows = txn
            .query_all(&q)
            .await
            .context(|| format!("snapshot: reading changed rows of `{}`", spec.table))?;
        let mut found = HashMap::with_capacity(rows.len());
        for r in &rows {
            let row = decoder.row(r)?;
            found.insert(identity(&keyset::key_of(spec, &row)?), row);
        }
        for (key, last, earlier) in chunk {
            let mut change = last.clone();
            let supersedes = earlier.clone();
            match found.remove(&identity(key)) {
                Some(row) => {
                    change.op = Op::Update;
                    change.row = row;
                    t.present.push(Refreshed { change, supersedes });
                }
                None => {
                    if change.op != Op::Delete {
                        change.op = Op::Delete;
                        change.row = change.key.clone();
                    }
                    t.gone.push(Refreshed { change, supersedes });
                }
            }
        }
    }
    Ok(())
}

/// Drops from `keys` (a resync's destination rows the source lacked, as JSON keys) those
/// the source holds.
///
/// Each chunk finds them among the destination's rows in its key range, and the two sides
/// may bound a range differently: a text key under a case-insensitive collation at one and
/// a binary one at the other puts `"C"` between `"a"` and `"d"` at one side only. A row
/// of another chunk is then taken for one the source lacks. Checked here, at the snapshot
/// the converge reads, a row the source holds is never deleted.
async fn keep_absent(
    txn: &DatabaseTransaction,
    spec: &TableSpec,
    keys: &mut HashSet<String>,
) -> Result<()> {
    let backend = txn.get_database_backend();
    let key = keyset::typed_key(spec)?;
    let listed: Vec<(String, Vec<Value>)> = keys
        .iter()
        .filter_map(|pk| {
            let row = Row::from_json(pk).ok()?;
            Some((pk.clone(), keyset::key_of(spec, &row).ok()?))
        })
        .collect();
    for chunk in listed.chunks(KEYS_PER_READ) {
        let refs: Vec<&[Value]> = chunk.iter().map(|(_, k)| k.as_slice()).collect();
        let mut q = keyset::select(backend, &spec.table, &key, &spec.key);
        q.cond_where(keyset::keys_condition(backend, &spec.key, &refs));
        let rows = txn.query_all(&q).await.context(|| {
            format!(
                "snapshot: checking rows of `{}` the copy found the source lacks",
                spec.table
            )
        })?;
        let mut held = HashSet::with_capacity(rows.len());
        for r in &rows {
            let values = key
                .iter()
                .map(|(name, tag)| {
                    Value::read(r, name, tag).map_err(|reason| Error::Read {
                        table: spec.table.clone(),
                        reason,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            held.insert(identity(&values));
        }
        for (pk, k) in chunk {
            if held.contains(&identity(k)) {
                keys.remove(pk);
            }
        }
    }
    Ok(())
}

/// Stores `position` as the checkpoint (with whatever the stored one holds) and forgets
/// the base, in one transaction; returns the checkpoint stored.
async fn finish(link: &Link, mut position: Position) -> Result<Position> {
    let txn = link
        .dest
        .begin()
        .await
        .context(|| "snapshot: beginning its last transaction".into())?;
    let stored = async {
        let current = apply::lock_checkpoint(&txn, &link.source_id).await?;
        // A converge of an instance that lost its lease sets no checkpoint over the new
        // holder's.
        link.fence.hold(&txn, &link.source_id).await?;
        let anchor = position.anchor.take();
        position.merge(&current);
        position.anchor = anchor;
        apply::store_checkpoint(&txn, &link.source_id, &position).await?;
        store::clear_base(&txn, &link.source_id).await?;
        store::clear_left_out(&txn, &link.source_id, None).await?;
        Ok::<_, Error>(())
    }
    .await;
    match stored {
        Ok(()) => {
            txn.commit()
                .await
                .context(|| "snapshot: storing the checkpoint".into())?;
            Ok(position)
        }
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e)
        }
    }
}
