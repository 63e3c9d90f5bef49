//! Reading one side of a table in primary-key order, a chunk at a time (keyset
//! pagination, see [`crate::keyset`]), as (key, row hash, row) entries.

use std::fmt;

use sea_orm::{ConnectionTrait, DatabaseConnection, QueryResult};
use tokio::sync::mpsc;

use super::canonical::{self, RowHash};
use crate::entity::TableSpec;
use crate::error::{DbContext, Error, Result};
use crate::keyset;
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
    /// The shipped columns' values in the spec's column order, to name those that differ
    /// (the names are the spec's, not repeated per row).
    pub(crate) values: Vec<Value>,
}

/// A chunk of entries in key order, or what stopped the reader.
pub(crate) type Chunk = Result<Vec<Entry>>;

/// Reads all of `spec`'s table at `db` in key order and sends it down `tx` a chunk at a
/// time.
///
/// Stops at the end of the table (dropping `tx`), when the merge stops listening, or at an
/// error, which it sends. Holds one chunk at a time; the channel bounds how far it runs
/// ahead of the merge.
pub(crate) async fn feed(
    db: DatabaseConnection,
    spec: TableSpec,
    side: Side,
    chunk_size: u64,
    tx: mpsc::Sender<Chunk>,
) {
    let table = spec.table.as_str();
    let decoder = match keyset::Decoder::new(&spec) {
        Ok(d) => d,
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return;
        }
    };
    let backend = db.get_database_backend();
    let mut after: Option<Vec<Value>> = None;
    let mut scratch = Vec::with_capacity(256);
    let mut chunks = 0u64;
    loop {
        let read = match keyset::next_chunk(backend, &spec, after.as_deref(), chunk_size) {
            Ok(q) => db.query_all(&q).await.context(|| {
                format!("verify `{table}`: reading `{table}` at the {side}")
            }),
            Err(e) => Err(e),
        };
        let rows = match read {
            Ok(m) => m,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let full = rows.len() as u64 >= chunk_size;
        let entries = match entries(&spec, &decoder, rows, after.as_deref(), side, &mut scratch)
        {
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

/// The entries of `rows`, checking that each key is above the one before (`after` for
/// the first).
fn entries(
    spec: &TableSpec,
    decoder: &keyset::Decoder,
    rows: Vec<QueryResult>,
    after: Option<&[Value]>,
    side: Side,
    scratch: &mut Vec<u8>,
) -> Result<Vec<Entry>> {
    let mut entries: Vec<Entry> = Vec::with_capacity(rows.len());
    for row in rows {
        let values = decoder.values(&row)?;
        let key = decoder.key(&values);
        let hash = canonical::hash_values(&values, scratch);
        let previous = entries.last().map(|p| p.key.as_slice()).or(after);
        if let Some(prev) = previous
            && canonical::cmp_keys(prev, &key) != std::cmp::Ordering::Less
        {
            return Err(out_of_order(&spec.table, side, prev, &key));
        }
        entries.push(Entry { key, hash, values });
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
