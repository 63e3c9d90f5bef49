//! Reading one side of a table in primary-key order, a chunk at a time (keyset
//! pagination), as (key, row hash, row) entries.

use std::fmt;

use sea_orm::sea_query::{Expr, ExprTrait, ValueTuple};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbBackend, Iterable, PrimaryKeyToColumn,
    QueryFilter, QueryOrder, QuerySelect, Select,
};
use tokio::sync::mpsc;

use super::canonical::{self, RowHash};
use crate::change::Row;
use crate::entity::Replicated;
use crate::error::{DbContext, Error, Result};
use crate::value::Value;

/// Which database a reader reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Source,
    Destination,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

/// One row as the merge-join sees it.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The primary key's values, in key order.
    pub(crate) key: Vec<Value>,
    /// The hash of the row's shipped columns.
    pub(crate) hash: RowHash,
    /// The shipped columns, to name those that differ.
    pub(crate) row: Row,
}

/// A chunk of entries in key order, or what stopped the reader.
pub(crate) type Chunk = Result<Vec<Entry>>;

/// The primary key columns of `E`, in order.
pub(crate) fn key_columns<E: Replicated>() -> Vec<E::Column> {
    E::PrimaryKey::iter().map(|k| k.into_column()).collect()
}

fn bind<C: ColumnTrait>(col: &C, v: &Value, backend: DbBackend) -> Expr {
    col.save_as(Expr::val(v.to_sea_for(backend)))
}

/// Rows whose key is above `after`, in a form each engine runs as an index range.
///
/// PostgreSQL and SQLite get a row-value comparison, `(a, b) > (?, ?)`. MariaDB scans the
/// whole index for that form, so it gets `a > ? OR (a = ? AND b > ?)`, which its range
/// optimizer turns into ranges of the key.
pub(crate) fn after_condition<E: Replicated>(
    backend: DbBackend,
    cols: &[E::Column],
    after: &[Value],
) -> Condition {
    if cols.len() == 1 {
        return Condition::all().add(cols[0].into_expr().gt(bind(&cols[0], &after[0], backend)));
    }
    if backend == DbBackend::MySql {
        let mut any = Condition::any();
        for i in 0..cols.len() {
            let mut all = Condition::all();
            for j in 0..i {
                all = all.add(cols[j].into_expr().eq(bind(&cols[j], &after[j], backend)));
            }
            all = all.add(cols[i].into_expr().gt(bind(&cols[i], &after[i], backend)));
            any = any.add(all);
        }
        return any;
    }
    let lhs = Expr::tuple(cols.iter().map(|c| c.into_expr()));
    let rhs = Expr::tuple(cols.iter().zip(after).map(|(c, v)| bind(c, v, backend)));
    Condition::all().add(lhs.gt(rhs))
}

/// Rows whose key is one of `keys`.
pub(crate) fn keys_condition<E: Replicated>(
    backend: DbBackend,
    cols: &[E::Column],
    keys: &[&[Value]],
) -> Condition {
    if cols.len() == 1 {
        let values: Vec<Expr> = keys
            .iter()
            .map(|k| bind(&cols[0], &k[0], backend))
            .collect();
        return Condition::all().add(cols[0].into_expr().is_in(values));
    }
    let lhs = Expr::tuple(cols.iter().map(|c| c.into_expr()));
    let tuples = keys
        .iter()
        .map(|k| ValueTuple::Many(k.iter().map(|v| v.to_sea_for(backend)).collect()));
    Condition::all().add(lhs.in_tuples(tuples))
}

/// The next `limit` rows of `E` after `after` (from the start when `None`), in key order.
pub(crate) fn next_chunk<E: Replicated>(
    backend: DbBackend,
    cols: &[E::Column],
    after: Option<&[Value]>,
    limit: u64,
) -> Select<E> {
    let mut q = E::find();
    if let Some(after) = after {
        q = q.filter(after_condition::<E>(backend, cols, after));
    }
    for c in cols {
        q = q.order_by_asc(*c);
    }
    q.limit(limit)
}

/// The key, hash and shipped columns of `model`.
pub(crate) fn entry<E: Replicated>(model: &E::Model, scratch: &mut Vec<u8>) -> Result<Entry> {
    let row = E::to_row(model)?;
    let key = E::key_of(model)?.0.into_iter().map(|(_, v)| v).collect();
    let hash = canonical::hash_values(row.values(), scratch);
    Ok(Entry { key, hash, row })
}

/// Reads all of `E` at `db` in key order and sends it down `tx` a chunk at a time.
///
/// Stops at the end of the table (dropping `tx`), when the merge stops listening, or at an
/// error, which it sends. Holds one chunk at a time; the channel bounds how far it runs
/// ahead of the merge.
pub(crate) async fn feed<E: Replicated>(
    db: &DatabaseConnection,
    side: Side,
    chunk_size: u64,
    tx: mpsc::Sender<Chunk>,
) {
    let table = E::default().table_name();
    let backend = db.get_database_backend();
    let cols = key_columns::<E>();
    let mut after: Option<Vec<Value>> = None;
    let mut scratch = Vec::with_capacity(256);
    let mut chunks = 0u64;
    loop {
        let read = next_chunk::<E>(backend, &cols, after.as_deref(), chunk_size)
            .all(db)
            .await
            .context(|| format!("verify `{table}`: reading the {side}"));
        let models = match read {
            Ok(m) => m,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let full = models.len() as u64 >= chunk_size;
        // No await until the models are gone: a Model need not be Sync.
        let entries = entries::<E>(models, after.as_deref(), side, &mut scratch);
        let entries = match entries {
            Ok(e) => e,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        chunks += 1;
        if let Some(last) = entries.last() {
            after = Some(last.key.clone());
        }
        tracing::trace!(table, %side, chunks, rows = entries.len(), "chunk read");
        if tx.send(Ok(entries)).await.is_err() || !full {
            return;
        }
    }
}

/// The entries of `models`, checking that each key is above the one before (`after` for
/// the first).
fn entries<E: Replicated>(
    models: Vec<E::Model>,
    after: Option<&[Value]>,
    side: Side,
    scratch: &mut Vec<u8>,
) -> Result<Vec<Entry>> {
    let mut entries: Vec<Entry> = Vec::with_capacity(models.len());
    for model in &models {
        let e = entry::<E>(model, scratch)?;
        let previous = entries.last().map(|p| p.key.as_slice()).or(after);
        if let Some(prev) = previous
            && canonical::cmp_keys(prev, &e.key) != std::cmp::Ordering::Less
        {
            return Err(out_of_order(E::default().table_name(), side, prev, &e.key));
        }
        entries.push(e);
    }
    Ok(entries)
}

fn out_of_order(table: &str, side: Side, prev: &[Value], next: &[Value]) -> Error {
    let show = |k: &[Value]| {
        k.iter()
            .map(|v| v.to_sea().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Error::Config(format!(
        "verify `{table}`: the {side} returned key ({}) after ({}), which is not the byte order \
         of the keys; verify compares both sides in that order, so the key's text columns need \
         a binary collation there (`COLLATE \"C\"` in PostgreSQL, a `*_bin` collation in \
         MariaDB/MySQL; SQLite's default is binary)",
        show(next),
        show(prev)
    ))
}
