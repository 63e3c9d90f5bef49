//! Copying one chunk of a table: the source's rows in a key range written over the
//! destination's rows in the same range, in one destination transaction that holds the
//! checkpoint's lock and records the chunk.

use std::collections::HashSet;

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait};

use super::fence::Fence;
use super::store;
use crate::apply;
use crate::apply::Rules;
use crate::bounded_read::ReadBudget;
use crate::change::Row;
use crate::entity::{Reference, TableSpec};
use crate::error::{DbContext, Error, Result};
use crate::keyset;
use crate::value::{Value, canonical};

/// What one chunk did.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    /// The last key of the chunk; `None` when the table is done.
    pub(crate) last_key: Option<Vec<Value>>,
    /// Rows written.
    pub(crate) copied: u64,
    /// Rows left out, for the converge: their parent row is not at the destination yet,
    /// or the rules cannot place them.
    pub(crate) deferred: u64,
    /// Destination rows in the chunk's key range that the source lacks, to delete once
    /// every table is copied.
    pub(crate) deleted: u64,
}

/// Copies the rows of `spec`'s table after `after` (at most `limit`) from `source` to
/// `dest`, and records the chunk in `ormsync_snapshot`.
///
/// The chunk runs in a destination transaction that first locks `source_id`'s checkpoint,
/// the lock every batch takes to apply, and holds `fence` under it, so a chunk of an
/// instance that lost its lease is refused; so no batch lands while the chunk is read and
/// written: the chunk holds the source rows as they are *after* every batch applied so far,
/// and every change committed after the read is still ahead in the stream, which replays it
/// over the copy (upserts and deletes by key are idempotent). Destination rows in the
/// chunk's key range that the source lacks are recorded, for the converge to delete, so a
/// resync also removes rows.
///
/// Rows are written as the destination's `rules` say (filters, dropped columns, transforms,
/// its own keys; see [`apply::copied`]). A row whose foreign key (among `parents`) names a
/// parent row the destination lacks, or that the rules cannot place, is *left out*: its key
/// is recorded for the converge that ends the copy, which writes it through the sink, so
/// that a row still refused meets the destination's policy. (Usually its parent was written
/// at the source after its own table's copy, and so was this row: both changed after the
/// base, and the converge brings them in order.)
#[allow(clippy::too_many_arguments)]
pub(crate) async fn copy_chunk(
    source: &DatabaseConnection,
    dest: &DatabaseConnection,
    source_id: &str,
    fence: &Fence,
    spec: &TableSpec,
    rules: &Rules,
    prune: bool,
    parents: &[(&Reference, Vec<String>)],
    after: Option<&[Value]>,
    budget: &mut ReadBudget,
) -> Result<Chunk> {
    let txn = dest
        .begin()
        .await
        .context(|| format!("snapshot `{}`: beginning a transaction", spec.table))?;
    match copy_in(
        &txn, source, source_id, fence, spec, rules, prune, parents, after, budget,
    )
    .await
    {
        Ok(chunk) => {
            txn.commit()
                .await
                .context(|| format!("snapshot `{}`: committing a chunk", spec.table))?;
            Ok(chunk)
        }
        Err(e) => {
            // Explicitly: a dropped transaction holds its connection until the pool reuses it.
            let _ = txn.rollback().await;
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn copy_in(
    txn: &DatabaseTransaction,
    source: &DatabaseConnection,
    source_id: &str,
    fence: &Fence,
    spec: &TableSpec,
    rules: &Rules,
    prune: bool,
    parents: &[(&Reference, Vec<String>)],
    after: Option<&[Value]>,
    budget: &mut ReadBudget,
) -> Result<Chunk> {
    apply::lock_checkpoint(txn, source_id).await?;
    fence.hold(txn, source_id).await?;
    let (rows, full) = keyset::read_chunk(source, spec, after, budget).await?;
    let last_key = match rows.last() {
        Some(last) if full => Some(keyset::key_of(spec, last)?),
        _ => None,
    };
    // The destination's rows in the same range: (after, last key], or to the end.
    // Only a resync prunes: a new destination may hold rows of its own. And a table whose
    // rows the destination keys itself holds other keys: nothing to match.
    let present = if !prune || rules.is_mapped(&spec.table) {
        Vec::new()
    } else {
        keyset::read_keys(txn, spec, after, last_key.as_deref()).await?
    };
    let mut at_source = HashSet::with_capacity(rows.len());
    for row in &rows {
        at_source.insert(identity(&keyset::key_of(spec, row)?));
    }
    let extra: Vec<Row> = present
        .into_iter()
        .filter(|k| !at_source.contains(&identity(k)))
        .map(|k| Row(spec.key.iter().cloned().zip(k).collect()))
        .collect();

    let mut keep: Vec<&Row> = rows.iter().collect();
    // References to a table the destination keys itself are translated (and waited for)
    // when the rows are placed. A table's references to itself come last, once the rows
    // the others leave out are known.
    for (reference, tags) in parents.iter().filter(|(r, _)| !rules.is_mapped(&r.table)) {
        keep = with_parent(txn, reference, tags, keep, reference.table == spec.table).await?;
    }
    let mut left: Vec<Row> = Vec::new();
    if keep.len() < rows.len() {
        let mut kept = HashSet::with_capacity(keep.len());
        for row in &keep {
            kept.insert(identity(&keyset::key_of(spec, row)?));
        }
        for row in &rows {
            let key = keyset::key_of(spec, row)?;
            if !kept.contains(&identity(&key)) {
                left.push(Row(spec.key.iter().cloned().zip(key).collect()));
            }
        }
    }
    let written = keep.len() as u64;
    let unplaced = apply::copied::write(txn, source_id, rules, &spec.table, &spec.key, &keep, &[])
        .await
        .context(|| format!("snapshot `{}`: writing a chunk", spec.table))?;
    let placed = written - unplaced.len() as u64;
    left.extend(unplaced);
    store::leave_out(txn, source_id, &spec.table, &left, false).await?;
    // Deleted once every table is copied, children first: a row of another table copied
    // later may still reference one of them now.
    store::leave_out(txn, source_id, &spec.table, &extra, true).await?;
    let deferred = left.len() as u64;
    let last_row = last_key
        .as_ref()
        .map(|k| Row(spec.key.iter().cloned().zip(k.iter().cloned()).collect()));
    store::advance(
        txn,
        source_id,
        &spec.table,
        last_row.as_ref(),
        placed,
        deferred,
    )
    .await?;
    Ok(Chunk {
        last_key,
        copied: placed,
        deferred,
        deleted: extra.len() as u64,
    })
}

/// A key's identity, equal for equal typed values.
pub(super) fn identity(key: &[Value]) -> String {
    serde_json::to_string(key).unwrap_or_default()
}

/// The rows of `rows` whose reference `r` is NULL or names a row the destination holds;
/// for a reference of the table to itself (`own`), or a row kept among `rows`, which the
/// write then puts first ([`parents_first`](crate::apply::plan::parents_first)).
///
/// A row whose parent has a higher key than the chunk's rows is left out for the converge,
/// which writes it once its parent is in place.
async fn with_parent<'a>(
    txn: &DatabaseTransaction,
    r: &Reference,
    tags: &[String],
    rows: Vec<&'a Row>,
    own: bool,
) -> Result<Vec<&'a Row>> {
    let wanted = |row: &Row| -> Option<Vec<Value>> {
        let values: Option<Vec<Value>> = r.columns.iter().map(|c| row.get(c).cloned()).collect();
        values.filter(|v| !v.iter().any(Value::is_null))
    };
    let mut distinct: Vec<Vec<Value>> = Vec::new();
    let mut seen = HashSet::new();
    for row in &rows {
        if let Some(v) = wanted(row)
            && seen.insert(identity(&v))
        {
            distinct.push(v);
        }
    }
    if distinct.is_empty() {
        return Ok(rows);
    }
    // The parent's key columns, typed as the referencing columns are.
    let parent = TableSpec {
        table: r.table.clone(),
        key: r.to_columns.clone(),
        columns: r.to_columns.clone(),
        types: tags.to_vec(),
        sync_key: None,
        references: Vec::new(),
    };
    let backend = txn.get_database_backend();
    let key = keyset::typed_key(&parent)?;
    let mut found = HashSet::with_capacity(distinct.len());
    for chunk in distinct.chunks(500) {
        let mut q = keyset::select(backend, &parent.table, &key, &parent.key);
        let refs: Vec<&[Value]> = chunk.iter().map(Vec::as_slice).collect();
        q.cond_where(keyset::keys_condition(backend, &parent.key, &refs));
        let present = txn
            .query_all(&q)
            .await
            .context(|| format!("snapshot: looking up parent rows in `{}`", r.table))?;
        for res in &present {
            let k: Vec<Value> = key
                .iter()
                .map(|(name, tag)| {
                    Value::read(res, name, tag).map_err(|reason| Error::Read {
                        table: r.table.clone(),
                        reason,
                    })
                })
                .collect::<Result<_>>()?;
            found.insert(canonical::encode_all(&k));
        }
    }
    // By canonical encoding: a reference and the key it names may differ in width.
    let placed = |row: &Row, found: &HashSet<Vec<u8>>| {
        wanted(row).is_none_or(|v| found.contains(&canonical::encode_all(&v)))
    };
    if !own {
        return Ok(rows.into_iter().filter(|row| placed(row, &found)).collect());
    }
    // Rows whose parent is kept among them, until no more are: a row whose own parent is
    // left out is left out with it.
    let mut keep = rows;
    loop {
        let mut among = found.clone();
        for row in &keep {
            let own_key: Option<Vec<&Value>> = r.to_columns.iter().map(|c| row.get(c)).collect();
            if let Some(k) = own_key {
                among.insert(canonical::encode_all(k));
            }
        }
        let before = keep.len();
        keep.retain(|row| placed(row, &among));
        if keep.len() == before {
            return Ok(keep);
        }
    }
}
