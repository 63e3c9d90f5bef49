//! The merge-join of two key-ordered streams of entries into a [`Report`].

use std::cmp::Ordering;

use tokio::sync::mpsc;

use super::report::{Report, RowDiff, ValueDiff};
use super::scan::{Chunk, Rows};
use crate::change::Row;
use crate::error::Result;
use crate::value::Value;
use crate::value::canonical;

/// One side's stream: the chunk being consumed, where in it, and the channel the next
/// ones come from.
struct Stream {
    rx: mpsc::Receiver<Chunk>,
    chunk: Rows,
    next: usize,
    done: bool,
}

impl Stream {
    fn new(rx: mpsc::Receiver<Chunk>) -> Self {
        Stream {
            rx,
            chunk: Rows::default(),
            next: 0,
            done: false,
        }
    }

    /// Makes the next row available in the chunk, unless the stream has ended.
    async fn fill(&mut self) -> Result<()> {
        while self.next >= self.chunk.len() && !self.done {
            match self.rx.recv().await {
                Some(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.next = 0;
                }
                Some(Err(e)) => return Err(e),
                None => self.done = true,
            }
        }
        Ok(())
    }

    /// The next row's key, if the stream holds one (after [`fill`](Self::fill)).
    fn head(&self) -> Option<&[Value]> {
        (self.next < self.chunk.len()).then(|| self.chunk.key(self.next))
    }
}

/// Compares the source stream with the destination stream, both in key order, filling
/// `report`; at most `max_reported` rows of each kind are listed. `columns` names the
/// rows' values, in order.
///
/// Holds one chunk of each side (plus what the channels buffer), however long the table.
pub(crate) async fn merge(
    source: mpsc::Receiver<Chunk>,
    dest: mpsc::Receiver<Chunk>,
    columns: &[String],
    report: &mut Report,
    max_reported: usize,
    show_values: bool,
) -> Result<()> {
    let (mut s, mut d) = (Stream::new(source), Stream::new(dest));
    loop {
        // Waiting only at a chunk's end: most rows are a comparison away from the next.
        if s.next >= s.chunk.len() {
            s.fill().await?;
        }
        if d.next >= d.chunk.len() {
            d.fill().await?;
        }
        let order = match (s.head(), d.head()) {
            (None, None) => return Ok(()),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => canonical::cmp_keys(a, b),
        };
        match order {
            Ordering::Less => {
                report.source_rows += 1;
                report.missing_count += 1;
                if report.missing.len() < max_reported {
                    let key = key_row(&report.key_columns, s.chunk.key(s.next));
                    report.missing.push(key);
                }
                s.next += 1;
            }
            Ordering::Greater => {
                report.dest_rows += 1;
                report.extra_count += 1;
                if report.extra.len() < max_reported {
                    let key = key_row(&report.key_columns, d.chunk.key(d.next));
                    report.extra.push(key);
                }
                d.next += 1;
            }
            Ordering::Equal => {
                report.source_rows += 1;
                report.dest_rows += 1;
                let (a, b) = (s.chunk.encoding(s.next), d.chunk.encoding(d.next));
                if a == b {
                    report.matching += 1;
                } else {
                    report.different_count += 1;
                    if report.different.len() < max_reported {
                        let differing = differing_columns(columns, a, b);
                        report.different.push(RowDiff {
                            key: key_row(&report.key_columns, s.chunk.key(s.next)),
                            columns: differing.iter().map(|v| v.column.clone()).collect(),
                            values: if show_values { differing } else { Vec::new() },
                        });
                    }
                }
                s.next += 1;
                d.next += 1;
            }
        }
    }
}

fn key_row(names: &[String], values: &[Value]) -> Row {
    Row(names.iter().cloned().zip(values.iter().cloned()).collect())
}

/// The `columns` whose values differ between the rows encoded as `a` and `b` (both rows
/// of one table, their values in the order of `columns`).
fn differing_columns(columns: &[String], a: &[u8], b: &[u8]) -> Vec<ValueDiff> {
    let (mut a, mut b) = (canonical::split(a), canonical::split(b));
    columns
        .iter()
        .filter_map(|column| match (a.next(), b.next()) {
            (Some(x), Some(y)) if x == y => None,
            (None, None) => None,
            (x, y) => Some(ValueDiff {
                column: column.clone(),
                source: x.map_or_else(|| "?".into(), canonical::show),
                destination: y.map_or_else(|| "?".into(), canonical::show),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    fn columns() -> Vec<String> {
        vec!["id".into(), "v".into()]
    }

    fn rows(entries: &[(i64, &str)]) -> Rows {
        let mut rows = Rows::with_capacity(1, entries.len());
        for (k, v) in entries {
            let values = [Value::BigInt(Some(*k)), Value::String(Some((*v).into()))];
            rows.push([Value::BigInt(Some(*k))], &values);
        }
        rows
    }

    async fn run(
        src: &BTreeMap<i64, String>,
        dst: &BTreeMap<i64, String>,
        chunk: usize,
        max: usize,
    ) -> Report {
        let (stx, srx) = mpsc::channel(1);
        let (dtx, drx) = mpsc::channel(1);
        let feed = |map: &BTreeMap<i64, String>, tx: mpsc::Sender<Chunk>| {
            let entries: Vec<(i64, String)> = map.iter().map(|(k, v)| (*k, v.clone())).collect();
            async move {
                let mut it = entries.into_iter().peekable();
                while it.peek().is_some() {
                    let c: Vec<(i64, String)> = it.by_ref().take(chunk).collect();
                    let c: Vec<(i64, &str)> = c.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    if tx.send(Ok(rows(&c))).await.is_err() {
                        return;
                    }
                }
            }
        };
        let mut report = Report::new("t".into(), vec!["id".into()]);
        let columns = columns();
        let (_, _, r) = tokio::join!(
            feed(src, stx),
            feed(dst, dtx),
            merge(srx, drx, &columns, &mut report, max, false)
        );
        r.unwrap();
        report
    }

    fn keys(rows: &[Row]) -> Vec<i64> {
        rows.iter()
            .map(|r| match r.get("id") {
                Some(Value::BigInt(Some(k))) => *k,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn matches_a_naive_comparison_on_random_tables() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..200 {
            let mut src = BTreeMap::new();
            let mut dst = BTreeMap::new();
            for k in 0..rng.random_range(0..60) {
                let roll = rng.random_range(0..10);
                if roll < 7 {
                    src.insert(k, format!("v{k}"));
                    dst.insert(k, format!("v{k}"));
                } else if roll == 7 {
                    src.insert(k, format!("v{k}"));
                } else if roll == 8 {
                    dst.insert(k, format!("v{k}"));
                } else {
                    src.insert(k, format!("v{k}"));
                    dst.insert(k, format!("w{k}"));
                }
            }
            let chunk = rng.random_range(1..8);
            let r = run(&src, &dst, chunk, usize::MAX).await;
            let missing: Vec<i64> = src
                .keys()
                .filter(|k| !dst.contains_key(k))
                .copied()
                .collect();
            let extra: Vec<i64> = dst
                .keys()
                .filter(|k| !src.contains_key(k))
                .copied()
                .collect();
            let different: Vec<i64> = src
                .iter()
                .filter(|(k, v)| dst.get(k).is_some_and(|w| w != *v))
                .map(|(k, _)| *k)
                .collect();
            assert_eq!(keys(&r.missing), missing, "round {round}");
            assert_eq!(keys(&r.extra), extra, "round {round}");
            let diff_keys: Vec<Row> = r.different.iter().map(|d| d.key.clone()).collect();
            assert_eq!(keys(&diff_keys), different, "round {round}");
            assert!(r.different.iter().all(|d| d.columns == ["v"]));
            assert_eq!(r.source_rows, src.len() as u64);
            assert_eq!(r.dest_rows, dst.len() as u64);
            assert_eq!(
                r.matching + r.different_count + r.missing_count,
                src.len() as u64
            );
        }
    }

    #[tokio::test]
    async fn lists_are_capped_counts_are_not() {
        let src: BTreeMap<i64, String> = (0..50).map(|k| (k, "a".to_string())).collect();
        let dst = BTreeMap::new();
        let r = run(&src, &dst, 7, 3).await;
        assert_eq!(r.missing_count, 50);
        assert_eq!(keys(&r.missing), [0, 1, 2]);
        assert!(!r.is_complete());
        assert!(!r.is_clean());
    }

    #[tokio::test]
    async fn a_reader_error_stops_the_merge() {
        let (stx, srx) = mpsc::channel(1);
        let (dtx, drx) = mpsc::channel(1);
        let mut report = Report::new("t".into(), vec!["id".into()]);
        let columns = columns();
        let (_, _, r) = tokio::join!(
            async move {
                let _ = stx.send(Ok(rows(&[(1, "a")]))).await;
                let _ = stx
                    .send(Err(crate::error::Error::Config("boom".into())))
                    .await;
            },
            async move {
                for k in 0..100 {
                    if dtx.send(Ok(rows(&[(k, "a")]))).await.is_err() {
                        return;
                    }
                }
            },
            merge(srx, drx, &columns, &mut report, 10, false)
        );
        assert!(matches!(r, Err(crate::error::Error::Config(m)) if m == "boom"));
    }
}
