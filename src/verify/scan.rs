//! Reading one side of a table in primary-key order, a chunk at a time (keyset
//! pagination, see [`crate::keyset`]), as packed (key, canonical encoding) rows.

use std::fmt;

use sea_orm::{ConnectionTrait, DatabaseConnection};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::canonical;
use crate::bounded_read::ReadBudget;
use crate::entity::TableSpec;
use crate::error::{DbContext, Error, Result};
use crate::keyset;
use crate::value::Value;

/// Rows of a table's first chunk, before anything is known of their size.
const FIRST_CHUNK_ROWS: u64 = 100;

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

/// A chunk of one side's rows in key order, packed: the keys side by side in one vector,
/// the rows' canonical encodings end to end in one buffer.
///
/// The merge needs a row's key to join it and its canonical encoding to compare it, which
/// also splits into the columns to name when rows differ. Comparing the encodings
/// themselves is exact and costs less than hashing both sides; packing them spares an
/// allocation per row, and the decoded values are dropped on the reader's thread.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    key_len: usize,
    keys: Vec<Value>,
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Rows {
    /// An empty chunk for keys of `key_len` columns, with room for `rows` rows.
    pub(crate) fn with_capacity(key_len: usize, rows: usize) -> Rows {
        Rows {
            key_len,
            keys: Vec::with_capacity(key_len * rows),
            // About what a row of a dozen ordinary columns encodes to.
            bytes: Vec::with_capacity(rows * 160),
            ends: Vec::with_capacity(rows),
        }
    }

    /// Appends a row: its key (`key_len` values, in key order) and its shipped columns'
    /// values, which are encoded.
    pub(crate) fn push(&mut self, key: impl IntoIterator<Item = Value>, values: &[Value]) {
        self.keys.extend(key);
        for v in values {
            canonical::encode(v, &mut self.bytes);
        }
        self.ends.push(self.bytes.len());
    }

    /// How many rows the chunk holds.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Row `i`'s key.
    pub(crate) fn key(&self, i: usize) -> &[Value] {
        &self.keys[i * self.key_len..(i + 1) * self.key_len]
    }

    /// Row `i`'s canonical encoding: its values' encodings end to end
    /// ([`canonical::split`] separates them).
    pub(crate) fn encoding(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// The last row's key.
    pub(crate) fn last_key(&self) -> Option<&[Value]> {
        self.len().checked_sub(1).map(|i| self.key(i))
    }
}

/// A chunk of rows in key order, or what stopped the reader.
pub(crate) type Chunk = Result<Rows>;

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
    let mut buffers = Buffers::default();
    let mut chunks = 0u64;
    // Each chunk is asked for before the one before it is decoded, so it cannot be cut
    // short as it streams in: its row count is sized from the rows seen so far instead.
    let mut budget = ReadBudget::starting_at(chunk_size, FIRST_CHUNK_ROWS);
    let read = |after: Option<&[Value]>, limit: u64| {
        let (db, table) = (db.clone(), table.to_string());
        let q = keyset::next_chunk(backend, &spec, after, limit);
        async move {
            db.query_all(&q?)
                .await
                .context(|| format!("verify `{table}`: reading `{table}` at the {side}"))
        }
    };
    let mut limit = budget.rows();
    let mut next = tokio::spawn(read(None, limit).in_current_span());
    loop {
        let rows = match next.await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            // The read panicked: an error, never a silent end of the table, which the
            // merge would take for rows missing on this side.
            Err(e) => {
                let what = format!("verify `{table}`: reading `{table}` at the {side}");
                let _ = tx
                    .send(Err(Error::db(what, sea_orm::DbErr::Custom(e.to_string()))))
                    .await;
                return;
            }
        };
        let full = rows.len() as u64 >= limit;
        // The next chunk is asked for before this one is decoded, so the server reads it
        // meanwhile: its key bound is this chunk's last row's key.
        let ahead = match rows.last().filter(|_| full) {
            Some(last) => match decoder.values_into(last, &mut buffers.values) {
                Ok(()) => {
                    let last_key: Vec<Value> = decoder.key_of(&buffers.values).cloned().collect();
                    budget.sample(buffers.values.iter().map(Value::size_bytes).sum());
                    limit = budget.rows();
                    Some(tokio::spawn(read(Some(&last_key), limit).in_current_span()))
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            },
            None => None,
        };
        let packed = match pack(&spec, &decoder, rows, after.as_deref(), side, &mut buffers) {
            Ok(p) => p,
            Err(e) => {
                ahead.inspect(|h| h.abort());
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        chunks += 1;
        budget.observe(packed.len(), packed.bytes.len());
        if let Some(last) = packed.last_key() {
            after = Some(last.to_vec());
        }
        tracing::trace!(table, %side, chunks, rows = packed.len(), "chunk read");
        let Some(ahead) = ahead else {
            let _ = tx.send(Ok(packed)).await;
            return;
        };
        if tx.send(Ok(packed)).await.is_err() {
            ahead.abort();
            return;
        }
        next = ahead;
    }
}

/// What [`pack`] reuses from row to row.
#[derive(Default)]
struct Buffers {
    values: Vec<Value>,
    key: Vec<Value>,
}

/// The rows of a chunk, packed, checking that each key is above the one before (`after`
/// for the first).
fn pack(
    spec: &TableSpec,
    decoder: &keyset::Decoder,
    rows: Vec<sea_orm::QueryResult>,
    after: Option<&[Value]>,
    side: Side,
    buffers: &mut Buffers,
) -> Result<Rows> {
    let mut packed = Rows::with_capacity(spec.key.len(), rows.len());
    for row in rows {
        decoder.values_into(&row, &mut buffers.values)?;
        buffers.key.clear();
        buffers.key.extend(decoder.key_of(&buffers.values).cloned());
        if let Some(prev) = packed.last_key().or(after)
            && canonical::cmp_keys(prev, &buffers.key) != std::cmp::Ordering::Less
        {
            return Err(out_of_order(&spec.table, side, prev, &buffers.key));
        }
        packed.push(buffers.key.drain(..), &buffers.values);
    }
    Ok(packed)
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
