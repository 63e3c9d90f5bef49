//! The merge-join of two key-ordered streams of entries into a [`Report`].

use std::cmp::Ordering;

use tokio::sync::mpsc;

use super::canonical;
use super::report::{Report, RowDiff};
use super::scan::{Chunk, Entry};
use crate::change::Row;
use crate::error::Result;
use crate::value::Value;

/// One side's stream: the chunk being consumed and the channel the next ones come from.
struct Stream {
    rx: mpsc::Receiver<Chunk>,
    chunk: std::vec::IntoIter<Entry>,
    head: Option<Entry>,
    done: bool,
}

impl Stream {
    fn new(rx: mpsc::Receiver<Chunk>) -> Self {
        Stream {
            rx,
            chunk: Vec::new().into_iter(),
            head: None,
            done: false,
        }
    }

    /// Makes `head` the next entry, unless the stream has ended.
    async fn fill(&mut self) -> Result<()> {
        while self.head.is_none() && !self.done {
            if let Some(e) = self.chunk.next() {
                self.head = Some(e);
                continue;
            }
            match self.rx.recv().await {
                Some(Ok(chunk)) => self.chunk = chunk.into_iter(),
                Some(Err(e)) => return Err(e),
                None => self.done = true,
            }
        }
        Ok(())
    }
}

/// Compares the source stream with the destination stream, both in key order, filling
/// `report`; at most `max_reported` rows of each kind are listed. `columns` names the
/// entries' values, in order.
///
/// Holds one chunk of each side (plus what the channels buffer), however long the table.
pub(crate) async fn merge(
    source: mpsc::Receiver<Chunk>,
    dest: mpsc::Receiver<Chunk>,
    columns: &[String],
    report: &mut Report,
    max_reported: usize,
) -> Result<()> {
    let (mut s, mut d) = (Stream::new(source), Stream::new(dest));
    loop {
        let (fs, fd) = tokio::join!(s.fill(), d.fill());
        fs?;
        fd?;
        let order = match (&s.head, &d.head) {
            (None, None) => return Ok(()),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => canonical::cmp_keys(&a.key, &b.key),
        };
        match order {
            Ordering::Less => {
                let Some(a) = s.head.take() else { continue };
                report.source_rows += 1;
                report.missing_count += 1;
                if report.missing.len() < max_reported {
                    report.missing.push(key_row(&report.key_columns, a.key));
                }
            }
            Ordering::Greater => {
                let Some(b) = d.head.take() else { continue };
                report.dest_rows += 1;
                report.extra_count += 1;
                if report.extra.len() < max_reported {
                    report.extra.push(key_row(&report.key_columns, b.key));
                }
            }
            Ordering::Equal => {
                let (Some(a), Some(b)) = (s.head.take(), d.head.take()) else {
                    continue;
                };
                report.source_rows += 1;
                report.dest_rows += 1;
                if a.hash == b.hash {
                    report.matching += 1;
                    continue;
                }
                report.different_count += 1;
                if report.different.len() < max_reported {
                    report.different.push(RowDiff {
                        key: key_row(&report.key_columns, a.key),
                        columns: differing_columns(columns, &a.values, &b.values),
                    });
                }
            }
        }
    }
}

fn key_row(names: &[String], values: Vec<Value>) -> Row {
    Row(names.iter().cloned().zip(values).collect())
}

/// The `columns` whose values differ between `a` and `b` (both rows of one table, their
/// values in the order of `columns`).
fn differing_columns(columns: &[String], a: &[Value], b: &[Value]) -> Vec<String> {
    columns
        .iter()
        .enumerate()
        .filter(|&(i, _)| match (a.get(i), b.get(i)) {
            (Some(va), Some(vb)) => !canonical::same(va, vb),
            _ => true,
        })
        .map(|(_, c)| c.clone())
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

    fn entry(k: i64, v: &str) -> Entry {
        let values = vec![Value::BigInt(Some(k)), Value::String(Some(v.into()))];
        let mut scratch = Vec::new();
        Entry {
            key: vec![Value::BigInt(Some(k))],
            hash: canonical::hash_values(&values, &mut scratch),
            values,
        }
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
            let entries: Vec<Entry> = map.iter().map(|(k, v)| entry(*k, v)).collect();
            async move {
                let mut it = entries.into_iter().peekable();
                while it.peek().is_some() {
                    let c: Vec<Entry> = it.by_ref().take(chunk).collect();
                    if tx.send(Ok(c)).await.is_err() {
                        return;
                    }
                }
            }
        };
        let mut report = Report::new("t".into(), vec!["id".into()]);
        let (_, _, r) = tokio::join!(
            feed(src, stx),
            feed(dst, dtx),
            merge(srx, drx, &columns(), &mut report, max)
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
        let (_, _, r) = tokio::join!(
            async move {
                let _ = stx.send(Ok(vec![entry(1, "a")])).await;
                let _ = stx
                    .send(Err(crate::error::Error::Config("boom".into())))
                    .await;
            },
            async move {
                for k in 0..100 {
                    if dtx.send(Ok(vec![entry(k, "a")])).await.is_err() {
                        return;
                    }
                }
            },
            merge(srx, drx, &columns(), &mut report, 10)
        );
        assert!(matches!(r, Err(crate::error::Error::Config(m)) if m == "boom"));
    }
}
