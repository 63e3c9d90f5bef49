//! Copying one chunk of a table: the source's rows in a key range written over the
//! destination's rows in the same range, in one destination transaction that holds the
//! checkpoint's lock and records the chunk.

use std::collections::HashSet;

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait};

use super::store;
use crate::apply;
use crate::apply::Rules;
use crate::bounded_read::ReadBudget;
use crate::change::Row;
use crate::entity::{Reference, TableSpec};
use crate::error::{DbContext, Error, Result};
use crate::keyset;
use crate::value::Value;

/// What one chunk did.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    /// The last key of the chunk; `None` when the table is done.
    pub(crate) last_key: Option<Vec<Value>>,
    /// Rows written.
    pub(crate) copied: u64,
    /// Rows left to the stream: their parent row is not at the destination yet.
    pub(crate) deferred: u64,
    /// Destination rows in the chunk's key range that the source lacks, deleted.
    pub(crate) deleted: u64,
}

/// Copies the rows of `spec`'s table after `after` (at most `limit`) from `source` to
/// `dest`, and records the chunk in `ormsync_snapshot`.
///
/// The chunk runs in a destination transaction that first locks `source_id`'s checkpoint,
/// the lock every batch takes to apply, so no batch lands while the chunk is read and
/// written: the chunk holds the source rows as they are *after* every batch applied so far,
/// and every change committed after the read is still ahead in the stream, which replays it
/// over the copy (upserts and deletes by key are idempotent). Destination rows in the
/// chunk's key range that the source lacks are deleted, so a resync also removes rows.
///
/// Rows are written as the destination's `rules` say (filters, dropped columns, transforms,
/// its own keys; see [`apply::copied`]). A row whose foreign key (among `parents`) names a parent row the destination lacks is
/// *deferred*: left to the stream. Its parent was written at the source after its own
/// table's copy, and so was this row (after its parent), so both are in the stream, in order.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn copy_chunk(
    source: &DatabaseConnection,
    dest: &DatabaseConnection,
    source_id: &str,
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
        &txn, source, source_id, spec, rules, prune, parents, after, budget,
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
    spec: &TableSpec,
    rules: &Rules,
    prune: bool,
    parents: &[(&Reference, Vec<String>)],
    after: Option<&[Value]>,
    budget: &mut ReadBudget,
) -> Result<Chunk> {
    apply::lock_checkpoint(txn, source_id).await?;
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
    // when the rows are placed.
    for (reference, tags) in parents.iter().filter(|(r, _)| !rules.is_mapped(&r.table)) {
        keep = with_parent(txn, reference, tags, keep).await?;
    }
    let deferred = (rows.len() - keep.len()) as u64;
    let written = keep.len() as u64;
    let unplaced =
        apply::copied::write(txn, source_id, rules, &spec.table, &spec.key, &keep, &extra)
            .await
            .context(|| format!("snapshot `{}`: writing a chunk", spec.table))?;
    let deferred = deferred + unplaced;
    let last_row = last_key
        .as_ref()
        .map(|k| Row(spec.key.iter().cloned().zip(k.iter().cloned()).collect()));
    store::advance(
        txn,
        source_id,
        &spec.table,
        last_row.as_ref(),
        written - unplaced,
        deferred,
    )
    .await?;
    Ok(Chunk {
        last_key,
        copied: written - unplaced,
        deferred,
        deleted: extra.len() as u64,
    })
}

/// A key's identity, equal for equal typed values.
pub(super) fn identity(key: &[Value]) -> String {
    serde_json::to_string(key).unwrap_or_default()
}

/// The rows of `rows` whose reference `r` is NULL or names a row the destination holds.
pub(super) async fn with_parent<'a>(
    txn: &DatabaseTransaction,
    r: &Reference,
    tags: &[String],
    rows: Vec<&'a Row>,
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
            found.insert(identity(&k));
        }
    }
    Ok(rows
        .into_iter()
        .filter(|row| wanted(row).is_none_or(|v| found.contains(&identity(&v))))
        .collect())
}
