//! Reads that stop at a byte budget as well as a row count: an outbox batch, a snapshot
//! chunk, a verify chunk.
//!
//! A count alone bounds memory only for narrow rows. 3,000 changes of a table with 60 KB
//! documents are 180 MB of payload, held twice over while the next batch is read ahead,
//! then copied again into statements. So each read also stops at [`MAX_READ_BYTES`], and
//! asks for fewer rows when the last read's rows were wide, so the server does not send
//! rows only to have them dropped.

use futures_util::StreamExt;
use sea_orm::{QueryResult, Statement, StreamTrait};

use crate::error::{DbContext, Result};

/// Bytes of rows one read holds at most, by estimate: what the rows' text and binary
/// values take. Narrow rows stop at their row count long before this.
pub(crate) const MAX_READ_BYTES: usize = 8 << 20;

/// The row count to ask for next: the configured count, lowered so rows as wide as the
/// last read's fit in [`MAX_READ_BYTES`].
#[derive(Clone, Debug)]
pub(crate) struct ReadBudget {
    max_rows: u64,
    max_bytes: usize,
    /// Average size of the last read's rows; 0 before the first.
    row_bytes: usize,
}

impl ReadBudget {
    /// A budget of `max_rows` rows and [`MAX_READ_BYTES`].
    pub(crate) fn new(max_rows: u64) -> Self {
        ReadBudget::with_bytes(max_rows, MAX_READ_BYTES)
    }

    /// A budget of `max_rows` rows and `max_bytes`.
    pub(crate) fn with_bytes(max_rows: u64, max_bytes: usize) -> Self {
        ReadBudget {
            max_rows: max_rows.max(1),
            max_bytes: max_bytes.max(1),
            row_bytes: 0,
        }
    }

    /// Rows to ask for in the next read.
    pub(crate) fn rows(&self) -> u64 {
        match self.row_bytes {
            0 => self.max_rows,
            b => ((self.max_bytes / b) as u64).clamp(1, self.max_rows),
        }
    }

    fn observe(&mut self, rows: usize, bytes: usize) {
        if rows > 0 {
            self.row_bytes = bytes.div_ceil(rows).max(1);
        }
    }
}

/// Runs `stmt`, which asks for at most `limit` rows, and decodes its rows one by one with
/// `decode` (a row and its size in bytes), stopping once they reach the budget's bytes.
/// Returns the rows and whether the read was cut, by `limit` or by bytes: more rows may
/// follow the last. At least one row is read if there is one, however big.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) (with `what` as context) when the query fails; what
/// `decode` returns.
pub(crate) async fn read<C, T>(
    db: &C,
    stmt: Statement,
    limit: u64,
    budget: &mut ReadBudget,
    what: impl Fn() -> String,
    mut decode: impl FnMut(&QueryResult) -> Result<(T, usize)>,
) -> Result<(Vec<T>, bool)>
where
    C: StreamTrait,
{
    let mut out = Vec::with_capacity(limit.min(budget.max_rows) as usize);
    let more = read_each(db, stmt, limit, budget, what, |row| {
        let (item, size) = decode(row)?;
        out.push(item);
        Ok(size)
    })
    .await?;
    Ok((out, more))
}

/// [`read`] for a caller that keeps each row its own way: `take` consumes a row and says
/// how many bytes it took. Returns whether more rows may follow.
///
/// # Errors
///
/// As for [`read`].
pub(crate) async fn read_each<C>(
    db: &C,
    stmt: Statement,
    limit: u64,
    budget: &mut ReadBudget,
    what: impl Fn() -> String,
    mut take: impl FnMut(&QueryResult) -> Result<usize>,
) -> Result<bool>
where
    C: StreamTrait,
{
    let stream = db.stream_raw(stmt).await.context(&what)?;
    let mut stream = std::pin::pin!(stream);
    let (mut rows, mut bytes) = (0u64, 0usize);
    let mut cut = false;
    while let Some(row) = stream.next().await {
        bytes += take(&row.context(&what)?)?;
        rows += 1;
        if bytes >= budget.max_bytes {
            // Dropping the stream leaves the rest of the result to the driver, which
            // discards it before the connection's next use.
            cut = true;
            break;
        }
    }
    budget.observe(rows as usize, bytes);
    Ok(cut || rows >= limit)
}

#[cfg(test)]
mod tests {
    use super::ReadBudget;

    #[test]
    fn wide_rows_lower_the_count_asked_for() {
        let mut b = ReadBudget::with_bytes(3000, 1000);
        assert_eq!(b.rows(), 3000, "nothing known yet: the configured count");
        b.observe(10, 100);
        assert_eq!(b.rows(), 100, "10-byte rows: 100 fit");
        b.observe(2, 5000);
        assert_eq!(b.rows(), 1, "a row over the budget still goes, alone");
        b.observe(0, 0);
        assert_eq!(b.rows(), 1, "an empty read teaches nothing");
        b.observe(100, 100);
        assert_eq!(b.rows(), 1000);
        b.observe(1000, 1);
        assert_eq!(b.rows(), 1000, "never more than the configured count");
    }
}
