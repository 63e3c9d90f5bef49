//! What a verify found.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::change::Row;

/// The outcome of [`verify`](super::verify) for one table: how many rows each side holds
/// and which rows differ.
///
/// The lists hold at most [`VerifyOptions::max_reported`](super::VerifyOptions) keys each,
/// in key order; the counts are always complete. [`is_complete`](Report::is_complete)
/// says whether the lists hold every row found, which matters for
/// [`repair`](super::repair): it fixes the rows listed, so after repairing a truncated
/// report, verify again.
///
/// A report serializes (with serde) so it can be saved and repaired later, and
/// [`Display`](fmt::Display) prints a summary a person can read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// The table compared.
    pub table: String,
    /// Its primary key columns, in order.
    pub key_columns: Vec<String>,
    /// Rows read at the source.
    pub source_rows: u64,
    /// Rows read at the destination.
    pub dest_rows: u64,
    /// Rows equal on both sides.
    pub matching: u64,
    /// Keys of source rows the destination lacks (the first `max_reported`).
    pub missing: Vec<Row>,
    /// How many source rows the destination lacks.
    pub missing_count: u64,
    /// Keys of destination rows the source lacks (the first `max_reported`).
    pub extra: Vec<Row>,
    /// How many destination rows the source lacks.
    pub extra_count: u64,
    /// Rows both sides hold with different values (the first `max_reported`).
    pub different: Vec<RowDiff>,
    /// How many rows both sides hold with different values.
    pub different_count: u64,
    /// How long the comparison took.
    pub elapsed: Duration,
}

/// A row both sides hold, with different values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RowDiff {
    /// The row's primary key.
    pub key: Row,
    /// The shipped columns whose values differ, in the entity's column order.
    pub columns: Vec<String>,
    /// The differing values, when [`VerifyOptions::show_values`](super::VerifyOptions)
    /// asked for them; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<ValueDiff>,
}

/// One column of a [`RowDiff`] with its value on each side, as text a person reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ValueDiff {
    /// The column.
    pub column: String,
    /// Its value at the source.
    pub source: String,
    /// Its value at the destination.
    pub destination: String,
}

impl Report {
    /// An empty report for `table`.
    pub(crate) fn new(table: String, key_columns: Vec<String>) -> Self {
        Report {
            table,
            key_columns,
            ..Report::default()
        }
    }

    /// Whether both sides hold exactly the same rows.
    pub fn is_clean(&self) -> bool {
        self.drift_count() == 0
    }

    /// Rows missing, extra or different, in all.
    pub fn drift_count(&self) -> u64 {
        self.missing_count + self.extra_count + self.different_count
    }

    /// Whether the lists hold every row found (none was left out by `max_reported`).
    pub fn is_complete(&self) -> bool {
        self.missing.len() as u64 == self.missing_count
            && self.extra.len() as u64 == self.extra_count
            && self.different.len() as u64 == self.different_count
    }

    /// Rows compared per second: the larger side's rows over the elapsed time.
    pub fn rows_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.source_rows.max(self.dest_rows) as f64 / secs
        } else {
            0.0
        }
    }
}

impl fmt::Display for Report {
    /// A summary: counts, then the listed rows (keys as `col=value`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}`: source {} rows, destination {} rows, {} matching",
            self.table, self.source_rows, self.dest_rows, self.matching
        )?;
        if self.is_clean() {
            return write!(f, ", no drift ({:.1?})", self.elapsed);
        }
        write!(
            f,
            "; {} missing, {} extra, {} different at the destination ({:.1?})",
            self.missing_count, self.extra_count, self.different_count, self.elapsed
        )?;
        for key in &self.missing {
            write!(f, "\n  missing   {}", KeyDisplay(key))?;
        }
        more(f, self.missing.len(), self.missing_count)?;
        for key in &self.extra {
            write!(f, "\n  extra     {}", KeyDisplay(key))?;
        }
        more(f, self.extra.len(), self.extra_count)?;
        for d in &self.different {
            write!(
                f,
                "\n  different {} in {}",
                KeyDisplay(&d.key),
                d.columns.join(", ")
            )?;
            for v in &d.values {
                write!(
                    f,
                    "\n    {}: source {}, destination {}",
                    v.column, v.source, v.destination
                )?;
            }
        }
        more(f, self.different.len(), self.different_count)
    }
}

fn more(f: &mut fmt::Formatter<'_>, listed: usize, count: u64) -> fmt::Result {
    if (listed as u64) < count {
        write!(f, "\n  … and {} more", count - listed as u64)?;
    }
    Ok(())
}

/// A key as `col=value, col=value`.
pub(crate) struct KeyDisplay<'a>(pub(crate) &'a Row);

impl fmt::Display for KeyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (c, v)) in self.0.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            // sea-query prints values as SQL literals, which reads well in a key.
            write!(f, "{c}={}", v.to_sea())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    #[test]
    fn a_report_saves_and_loads_and_reads_well() {
        let key = |id: i64| Row(vec![("id".into(), Value::BigInt(Some(id)))]);
        let mut r = Report::new("accounts".into(), vec!["id".into()]);
        r.source_rows = 3;
        r.dest_rows = 3;
        r.matching = 1;
        r.missing = vec![key(1)];
        r.missing_count = 1;
        r.extra = vec![key(9)];
        r.extra_count = 1;
        r.different = vec![RowDiff {
            key: key(2),
            columns: vec!["name".into(), "note".into()],
            values: Vec::new(),
        }];
        r.different_count = 2;
        let json = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        assert!(!r.is_clean() && !r.is_complete());
        assert_eq!(r.drift_count(), 4);
        let text = r.to_string();
        assert!(text.contains("missing   id=1"), "{text}");
        assert!(text.contains("extra     id=9"), "{text}");
        assert!(text.contains("different id=2 in name, note"), "{text}");
        assert!(text.contains("… and 1 more"), "{text}");
    }
}
