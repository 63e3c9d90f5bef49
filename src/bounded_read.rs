//! Reads that stop at a byte budget as well as a row count: an outbox batch, a snapshot
//! chunk.
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
    /// Rows asked for while nothing is known of their size.
    first_rows: u64,
    /// Average size of the last read's rows; 0 before the first.
    row_bytes: usize,
}

impl ReadBudget {
    /// A budget of `max_rows` rows and [`MAX_READ_BYTES`].
    pub(crate) fn new(max_rows: u64) -> Self {
        ReadBudget::with_bytes(max_rows, MAX_READ_BYTES)
    }

    pub(crate) fn with_bytes(max_rows: u64, max_bytes: usize) -> Self {
        ReadBudget {
            max_rows: max_rows.max(1),
            max_bytes: max_bytes.max(1),
            first_rows: max_rows.max(1),
            row_bytes: 0,
        }
    }

    /// A budget of `max_rows` rows and [`MAX_READ_BYTES`] whose first read asks for at most
    /// `first` rows: for a reader that cannot cut a read short, so that rows of unknown
    /// size cost at most `first` of them.
    pub(crate) fn starting_at(max_rows: u64, first: u64) -> Self {
        let mut budget = ReadBudget::new(max_rows);
        budget.first_rows = first.clamp(1, budget.max_rows);
        budget
    }

    /// Rows to ask for in the next read.
    pub(crate) fn rows(&self) -> u64 {
        match self.row_bytes {
            0 => self.first_rows,
            b => ((self.max_bytes / b) as u64).clamp(1, self.max_rows),
        }
    }

    /// Records a read of `rows` rows of `bytes` in all.
    pub(crate) fn observe(&mut self, rows: usize, bytes: usize) {
        if rows > 0 {
            self.row_bytes = bytes.div_ceil(rows).max(1);
        }
    }

    /// Records one row of `bytes` seen ahead of its read's total: the next read is sized
    /// for rows at least that big.
    pub(crate) fn sample(&mut self, bytes: usize) {
        self.row_bytes = self.row_bytes.max(bytes.max(1));
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
    let stream = db.stream_raw(stmt).await.context(&what)?;
    let mut stream = std::pin::pin!(stream);
    let mut out = Vec::with_capacity(limit.min(budget.max_rows) as usize);
    let mut bytes = 0;
    let mut cut = false;
    while let Some(row) = stream.next().await {
        let (item, size) = decode(&row.context(&what)?)?;
        out.push(item);
        bytes += size;
        if bytes >= budget.max_bytes {
            // Dropping the stream leaves the rest of the result to the driver, which
            // discards it before the connection's next use.
            cut = true;
            break;
        }
    }
    budget.observe(out.len(), bytes);
    let more = cut || out.len() as u64 >= limit;
    Ok((out, more))
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
        b.sample(100);
        assert_eq!(b.rows(), 10, "one wide row seen ahead sizes the next read");
    }

    #[test]
    fn a_cautious_budget_starts_small() {
        let mut b = ReadBudget::starting_at(5000, 100);
        assert_eq!(b.rows(), 100);
        b.observe(100, 100 * 150);
        assert_eq!(b.rows(), 5000, "narrow rows: the full count");
    }
}
