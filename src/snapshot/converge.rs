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
//! rows are written parents first, the keys the snapshot lacks are deleted children first,
//! and the checkpoint becomes the base plus the snapshot's ids, with the base's record
//! removed in the same transaction. The destination then holds the source as of that one
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

use super::copy::{identity, with_parent};
use super::order;
use super::run::{Link, parents};
use super::store;
use crate::apply;
use crate::change::{Change, Row};
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
    /// Each key once, in the order first seen, with the row its last delete carried.
    keys: Vec<(Vec<Value>, Option<Row>)>,
    index: HashMap<String, usize>,
    /// The rows present in the snapshot.
    present: Vec<Row>,
    /// The keys absent from it, each as the whole row of its last delete where there is one.
    gone: Vec<Row>,
}

/// Converges the destination of `link` from `base` (see the module's documentation):
/// `tables` are those it receives, `skipped` those registered but left out for it.
///
/// # Errors
///
/// A change of a table not registered ([`Error::UnknownTable`]), and any failed read or
/// write; nothing of the checkpoint has moved then, and running it again is safe.
pub(crate) async fn converge(
    link: &Link,
    tables: &HashMap<String, TableSpec>,
    skipped: &HashSet<String>,
    base: &Position,
) -> Result<Converged> {
    let (visible, mut touched, parked) = read_at_one_snapshot(link, tables, skipped, base).await?;
    let mut done = Converged::default();
    let specs = order::parents_first(tables.values());
    for spec in &specs {
        let Some(t) = touched.get_mut(&spec.table) else {
            continue;
        };
        let present = std::mem::take(&mut t.present);
        let parents = parents(tables, spec);
        for chunk in present.chunks(link.chunk_rows.max(1) as usize) {
            done.refreshed += write(link, spec, &parents, chunk, &[]).await?;
        }
    }
    for spec in specs.iter().rev() {
        let Some(t) = touched.get_mut(&spec.table) else {
            continue;
        };
        let gone = std::mem::take(&mut t.gone);
        for chunk in gone.chunks(link.chunk_rows.max(1) as usize) {
            write(link, spec, &[], &[], chunk).await?;
            done.deleted += chunk.len() as u64;
        }
    }
    for change in &parked {
        if !dead_letters::park_behind(&link.source, &link.destination, change).await? {
            // Released since the snapshot was read: still behind it in order.
            let why = "parked behind an earlier change of the same row";
            dead_letters::park(&link.source, &link.destination, change, why).await?;
        }
        done.parked += 1;
    }
    let mut position = base.clone();
    position.merge(&visible);
    // The snapshot's last change, whatever the base held: after a source went back in
    // time, the base's anchor is a change the source no longer has.
    position.anchor = visible.anchor;
    done.position = finish(link, position).await?;
    Ok(done)
}

/// Reads, in one snapshot of the source, the outbox ids it holds, the changes outside
/// `base` (those of rows with a dead letter set apart, to park), and the rows of their keys.
async fn read_at_one_snapshot(
    link: &Link,
    tables: &HashMap<String, TableSpec>,
    skipped: &HashSet<String>,
    base: &Position,
) -> Result<(Position, HashMap<String, Touched>, Vec<Change>)> {
    let txn = snapshot_of(&link.source).await?;
    let read = async {
        let mut visible = visible::position(&txn).await?;
        visible.anchor = visible::anchor_of(&txn, &visible).await?;
        let blocked = dead_letters::blocked_rows(&txn, &link.destination).await?;
        let mut touched: HashMap<String, Touched> = HashMap::new();
        let mut parked = Vec::new();
        visible::each_change_outside(&txn, base, |change| {
            if skipped.contains(&change.table) {
                return Ok(());
            }
            let Some(spec) = tables.get(&change.table) else {
                return Err(Error::UnknownTable {
                    destination: link.destination.clone(),
                    table: change.table,
                    id: change.id,
                });
            };
            if !blocked.is_empty()
                && blocked.contains(&(change.table.clone(), change.key.to_json()))
            {
                parked.push(change);
                return Ok(());
            }
            let key = keyset::key_of(spec, &change.key)?;
            let t = touched.entry(change.table.clone()).or_default();
            let deleted = (change.op == crate::change::Op::Delete).then_some(change.row);
            match t.index.get(&identity(&key)) {
                Some(&i) => {
                    if deleted.is_some() {
                        t.keys[i].1 = deleted;
                    }
                }
                None => {
                    t.index.insert(identity(&key), t.keys.len());
                    t.keys.push((key, deleted));
                }
            }
            Ok(())
        })
        .await?;
        for (table, t) in &mut touched {
            read_rows(&txn, &tables[table], t).await?;
        }
        Ok::<_, Error>((visible, touched, parked))
    }
    .await;
    // Read-only: the snapshot ends either way.
    let _ = txn.commit().await;
    read
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
        let refs: Vec<&[Value]> = chunk.iter().map(|(k, _)| k.as_slice()).collect();
        let mut q = keyset::select(backend, &spec.table, &columns, &spec.key);
        q.cond_where(keyset::keys_condition(backend, &spec.key, &refs));
        let rows = txn
            .query_all(&q)
            .await
            .context(|| format!("snapshot: reading changed rows of `{}`", spec.table))?;
        let mut found = HashSet::with_capacity(rows.len());
        for r in &rows {
            let row = decoder.row(r)?;
            found.insert(identity(&keyset::key_of(spec, &row)?));
            t.present.push(row);
        }
        for (key, deleted) in chunk {
            if !found.contains(&identity(key)) {
                let row = deleted
                    .clone()
                    .unwrap_or_else(|| Row(spec.key.iter().cloned().zip(key.clone()).collect()));
                t.gone.push(row);
            }
        }
    }
    Ok(())
}

/// Writes `rows` (leaving out those whose parent row the destination lacks, as a copy
/// does) and deletes `gone`, in one destination transaction holding the checkpoint's
/// lock; returns the rows written.
async fn write(
    link: &Link,
    spec: &TableSpec,
    parents: &[(&crate::entity::Reference, Vec<String>)],
    rows: &[Row],
    gone: &[Row],
) -> Result<u64> {
    let txn = link
        .dest
        .begin()
        .await
        .context(|| format!("snapshot `{}`: beginning a transaction", spec.table))?;
    let written = async {
        apply::lock_checkpoint(&txn, &link.source_id).await?;
        let mut keep: Vec<&Row> = rows.iter().collect();
        for (reference, tags) in parents
            .iter()
            .filter(|(r, _)| !link.rules.is_mapped(&r.table))
        {
            keep = with_parent(&txn, reference, tags, keep).await?;
        }
        let left_out = (rows.len() - keep.len()) as u64;
        let unplaced = apply::copied::write(
            &txn,
            &link.source_id,
            &link.rules,
            &spec.table,
            &spec.key,
            &keep,
            gone,
        )
        .await
        .context(|| format!("snapshot `{}`: writing changed rows", spec.table))?;
        if left_out + unplaced > 0 {
            tracing::debug!(table = %spec.table, rows = left_out + unplaced,
                "snapshot: rows the destination's rules cannot place left out");
        }
        Ok::<_, Error>(keep.len() as u64 - unplaced)
    }
    .await;
    match written {
        Ok(n) => {
            txn.commit()
                .await
                .context(|| format!("snapshot `{}`: committing changed rows", spec.table))?;
            Ok(n)
        }
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e)
        }
    }
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
        let anchor = position.anchor.take();
        position.merge(&current);
        position.anchor = anchor;
        apply::store_checkpoint(&txn, &link.source_id, &position).await?;
        store::clear_base(&txn, &link.source_id).await?;
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
