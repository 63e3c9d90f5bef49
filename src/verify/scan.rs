//! Reading one side of a table in byte order of its primary key, a chunk at a time, as
//! packed (key, canonical encoding) rows: by keyset pagination (see [`crate::keyset`])
//! where the key sorts by bytes there, otherwise in one statement sorted by bytes (see
//! [`key_order`]).

use std::fmt;

use sea_orm::DatabaseConnection;
use tokio::sync::mpsc;

use futures_util::StreamExt;
use sea_orm::StreamTrait;
use sea_orm::sea_query::Order;

use super::key_order::{self, KeyOrder};
use crate::bounded_read::{self, ReadBudget};
use crate::entity::TableSpec;
use crate::error::{DbContext, Error, Result};
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

/// Reads all of `spec`'s table at `db` in byte order of its key and sends it down `tx` a
/// chunk at a time.
///
/// A side whose key sorts by bytes there is read by keyset pagination, a short indexed
/// statement per chunk. Any other is read in one statement sorted by bytes
/// ([`key_order::order_by`]): pagination would compare by the native order too, and
/// forcing byte order into each chunk's `WHERE` and `ORDER BY` makes every chunk a full
/// scan and sort. That statement stays open for the whole read, its rows taken as the
/// merge consumes them, so on MariaDB the merge must keep pace within `net_write_timeout`;
/// both sides advance together, so it does.
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
    if let Err(e) = read(&db, &spec, side, chunk_size, &tx).await {
        let _ = tx.send(Err(e)).await;
    }
}

async fn read(
    db: &DatabaseConnection,
    spec: &TableSpec,
    side: Side,
    chunk_size: u64,
    tx: &mpsc::Sender<Chunk>,
) -> Result<()> {
    let decoder = keyset::Decoder::new(spec)?;
    let order = key_order::key_order(db, spec).await?;
    let reader = Reader {
        spec,
        decoder: &decoder,
        side,
        order: &order,
    };
    let table = spec.table.as_str();
    if order.is_bytes() {
        tracing::debug!(table, %side, "key sorts by bytes: reading by keyset pagination");
        paged(db, &reader, chunk_size, tx).await
    } else {
        tracing::info!(
            table,
            %side,
            key = %order.describe(),
            "key does not sort by bytes: reading in one statement sorted by bytes"
        );
        sorted(db, &reader, chunk_size, tx).await
    }
}

/// What every row of one side's read is decoded and checked with.
struct Reader<'a> {
    spec: &'a TableSpec,
    decoder: &'a keyset::Decoder,
    side: Side,
    order: &'a KeyOrder,
}

impl Reader<'_> {
    fn what(&self) -> String {
        let table = &self.spec.table;
        format!("verify `{table}`: reading `{table}` at the {}", self.side)
    }
}

/// Keyset pagination: one statement per chunk, each resuming after the last key read.
async fn paged(
    db: &DatabaseConnection,
    reader: &Reader<'_>,
    chunk_size: u64,
    tx: &mpsc::Sender<Chunk>,
) -> Result<()> {
    let spec = reader.spec;
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
        let q = keyset::next_chunk(backend, spec, after.as_deref(), limit)?;
        let more = bounded_read::read_each(
            db,
            backend.build(&q),
            limit,
            &mut budget,
            || reader.what(),
            |row| pack(reader, row, after.as_deref(), &mut buffers, &mut packed),
        )
        .await?;
        chunks += 1;
        if let Some(last) = packed.last_key() {
            after = Some(last.to_vec());
        }
        tracing::trace!(table = %spec.table, side = %reader.side, chunks, rows = packed.len(), "chunk read");
        if tx.send(Ok(packed)).await.is_err() || !more {
            return Ok(());
        }
    }
}

/// One statement sorted by bytes, its rows packed into chunks of `chunk_size` rows or
/// [`MAX_READ_BYTES`](bounded_read::MAX_READ_BYTES), each sent as it fills.
async fn sorted(
    db: &DatabaseConnection,
    reader: &Reader<'_>,
    chunk_size: u64,
    tx: &mpsc::Sender<Chunk>,
) -> Result<()> {
    let spec = reader.spec;
    let backend = db.get_database_backend();
    let mut q = keyset::select(backend, &spec.table, &keyset::typed_columns(spec)?, &[]);
    for (name, order) in &reader.order.0 {
        q.order_by_expr(key_order::order_by(backend, name, order), Order::Asc);
    }
    let stream = db
        .stream_raw(backend.build(&q))
        .await
        .context(|| reader.what())?;
    let mut stream = std::pin::pin!(stream);
    let rows = usize::try_from(chunk_size).unwrap_or(usize::MAX).max(1);
    let new_chunk = || Rows::with_capacity(spec.key.len(), rows.min(MAX_PREALLOCATED_ROWS));
    let mut buffers = Buffers::default();
    let mut packed = new_chunk();
    let mut after: Option<Vec<Value>> = None;
    let (mut bytes, mut chunks) = (0usize, 0u64);
    while let Some(row) = stream.next().await {
        let row = row.context(|| reader.what())?;
        bytes += pack(reader, &row, after.as_deref(), &mut buffers, &mut packed)?;
        if packed.len() >= rows || bytes >= bounded_read::MAX_READ_BYTES {
            after = packed.last_key().map(<[Value]>::to_vec);
            chunks += 1;
            tracing::trace!(table = %spec.table, side = %reader.side, chunks, rows = packed.len(), "chunk read");
            let full = std::mem::replace(&mut packed, new_chunk());
            bytes = 0;
            if tx.send(Ok(full)).await.is_err() {
                return Ok(());
            }
        }
    }
    if packed.len() > 0 {
        let _ = tx.send(Ok(packed)).await;
    }
    Ok(())
}

/// Rows a chunk makes room for up front; a larger chunk grows as it fills.
const MAX_PREALLOCATED_ROWS: usize = 10_000;

/// What [`pack`] reuses from row to row.
#[derive(Default)]
struct Buffers {
    values: Vec<Value>,
    key: Vec<Value>,
}

/// Packs one result row into `packed`, checking that its key is above the one before
/// (`after` for a chunk's first); returns the bytes it took.
fn pack(
    reader: &Reader<'_>,
    row: &sea_orm::QueryResult,
    after: Option<&[Value]>,
    buffers: &mut Buffers,
    packed: &mut Rows,
) -> Result<usize> {
    reader.decoder.values_into(row, &mut buffers.values)?;
    buffers.key.clear();
    buffers
        .key
        .extend(reader.decoder.key_of(&buffers.values).cloned());
    if let Some(prev) = packed.last_key().or(after)
        && canonical::cmp_keys(prev, &buffers.key) != std::cmp::Ordering::Less
    {
        return Err(out_of_order(reader, prev, &buffers.key));
    }
    let before = packed.bytes.len();
    packed.push(buffers.key.drain(..), &buffers.values);
    Ok(packed.bytes.len() - before)
}

/// The refusal of a side that returned its keys out of the byte order asked of it: what
/// the catalog said of the key did not hold, and the merge would report rows as missing
/// and extra that are not.
fn out_of_order(reader: &Reader<'_>, prev: &[Value], next: &[Value]) -> Error {
    let show = |k: &[Value]| {
        k.iter()
            .map(|v| v.to_sea().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let asked = if reader.order.is_bytes() {
        "its catalog shows the key sorting by bytes, so it was read in its own order".to_string()
    } else {
        format!("it was asked to sort {} by bytes", reader.order.describe())
    };
    Error::Config(format!(
        "verify `{}`: the {} returned key ({}) after ({}), out of byte order ({asked}); \
         verify merges both sides in byte order, so it cannot compare this table: give the \
         key a collation that sorts by bytes without padding there (`\"C\"` at PostgreSQL, \
         `utf8mb4_nopad_bin` at MariaDB/MySQL, `BINARY` at SQLite)",
        reader.spec.table,
        reader.side,
        show(next),
        show(prev)
    ))
}
