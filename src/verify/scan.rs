//! Reading one side of a table in primary-key order, a chunk at a time (keyset
//! pagination, see [`crate::keyset`]), as packed (key, canonical encoding) rows.

use std::fmt;

use sea_orm::DatabaseConnection;
use tokio::sync::mpsc;

use crate::bounded_read::{self, ReadBudget};
use crate::entity::TableSpec;
use crate::error::{Error, Result};
use crate::keyset;
use crate::value::Value;
use crate::value::canonical;

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
    let mut budget = ReadBudget::new(chunk_size);
    let mut chunks = 0u64;
    loop {
        // Streamed and packed row by row: the server sends the chunk while the rows before
        // are decoded, and a chunk of wide rows stops at the budget's bytes.
        let limit = budget.rows();
        let mut packed = Rows::with_capacity(spec.key.len(), limit as usize);
        let read = match keyset::next_chunk(backend, &spec, after.as_deref(), limit) {
            Ok(q) => {
                bounded_read::read_each(
                    &db,
                    backend.build(&q),
                    limit,
                    &mut budget,
                    || format!("verify `{table}`: reading `{table}` at the {side}"),
                    |row| {
                        pack(
                            &spec,
                            &decoder,
                            row,
                            after.as_deref(),
                            side,
                            &mut buffers,
                            &mut packed,
                        )
                    },
                )
                .await
            }
            Err(e) => Err(e),
        };
        let more = match read {
            Ok(more) => more,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        chunks += 1;
        if let Some(last) = packed.last_key() {
            after = Some(last.to_vec());
        }
        tracing::trace!(table, %side, chunks, rows = packed.len(), "chunk read");
        if tx.send(Ok(packed)).await.is_err() || !more {
            return;
        }
    }
}

/// What [`pack`] reuses from row to row.
#[derive(Default)]
struct Buffers {
    values: Vec<Value>,
    key: Vec<Value>,
}

/// Packs one result row into `packed`, checking that its key is above the one before
/// (`after` for a chunk's first); returns the bytes it took.
fn pack(
    spec: &TableSpec,
    decoder: &keyset::Decoder,
    row: &sea_orm::QueryResult,
    after: Option<&[Value]>,
    side: Side,
    buffers: &mut Buffers,
    packed: &mut Rows,
) -> Result<usize> {
    decoder.values_into(row, &mut buffers.values)?;
    buffers.key.clear();
    buffers.key.extend(decoder.key_of(&buffers.values).cloned());
    if let Some(prev) = packed.last_key().or(after)
        && canonical::cmp_keys(prev, &buffers.key) != std::cmp::Ordering::Less
    {
        return Err(out_of_order(&spec.table, side, prev, &buffers.key));
    }
    let before = packed.bytes.len();
    packed.push(buffers.key.drain(..), &buffers.values);
    Ok(packed.bytes.len() - before)
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
