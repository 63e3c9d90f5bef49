//! Applying one batch through several connections of the destination at once.
//!
//! One connection applies a batch's statements one after another, and the destination
//! waits on each round trip; a second connection writing other rows at the same time
//! keeps the destination busy meanwhile. The batch is split so that its meaning holds:
//!
//! - **Rows.** The changes are split by table and key into parts, one per connection:
//!   every change of a row goes, in order, through the same connection.
//! - **Foreign keys.** The batch is cut into *segments*, in order, wherever a change's
//!   table is related by a foreign key to a table already in the segment; a segment's
//!   parts all commit before the next segment starts. A parent is then never written after
//!   a child of the same batch that references it, or deleted before it. The rows of a
//!   table that references itself all go through one connection, parents first.
//! - **Exactly once.** Each part commits in a transaction of its own that also marks its
//!   changes' ids applied in the checkpoint, under the checkpoint's lock, after checking
//!   that no other caller marked any of them meanwhile. A crash leaves each part applied
//!   and marked, or neither. The batch is then marked done (its skipped ids, its anchor)
//!   by the ordinary one-transaction path, which finds every change already applied.
//! - **A refusal.** A segment's parts commit only once all have run their statements, so
//!   a change the destination refuses rolls its whole segment back: what is committed is
//!   a prefix of the batch, as through one connection, and a halted destination holds
//!   the source's rows as of some moment, never later rows of others without the refused
//!   one.
//!
//! Whatever the split cannot promise goes by that one-transaction path instead: a batch
//! too small for the extra commits to pay, tables that go row by row (own keys, conflict
//! policies), SQLite (one writer at a time), and a segment the destination refused, after
//! which the path applies the rest in order and names the change at fault.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use futures_util::future::join_all;
use sea_orm::{DatabaseTransaction, DbErr, TransactionTrait};

use super::checkpoint;
use super::plan;
use super::rules::Rules;
use super::sql::SqlSink;
use crate::change::Change;
use crate::classify::{ErrorKind, classify};
use crate::error::{Error, Result};
use crate::redact::redact;
use crate::value::canonical;

/// The fewest changes per segment for which a commit on each connection pays: below it,
/// the batch goes through one transaction.
const MIN_SEGMENT: usize = 128;

/// The parts of each segment of `changes` (in id order) for `k` connections, or `None`
/// when the batch goes through one transaction.
pub(crate) fn split<'a>(
    changes: &[&'a Change],
    rules: &Rules,
    k: usize,
) -> Option<Vec<Vec<Vec<&'a Change>>>> {
    if k < 2
        || changes.len() < MIN_SEGMENT
        || changes.iter().any(|c| rules.goes_row_by_row(&c.table))
    {
        return None;
    }
    let mut segments = Vec::new();
    let mut tables: Vec<&str> = Vec::new();
    let mut parts: Vec<Vec<&Change>> = vec![Vec::new(); k];
    for &change in changes {
        let table = change.table.as_str();
        if tables
            .iter()
            .any(|t| *t != table && related(rules, t, table))
        {
            segments.push(std::mem::replace(&mut parts, vec![Vec::new(); k]));
            tables.clear();
        }
        if !tables.contains(&table) {
            tables.push(table);
        }
        parts[part_of(change, rules, k)].push(change);
    }
    segments.push(parts);
    (segments.len() * MIN_SEGMENT <= changes.len()).then_some(segments)
}

/// Whether a foreign key joins tables `a` and `b`, either way; a table without a known
/// description may hold any, so it is taken as related.
fn related(rules: &Rules, a: &str, b: &str) -> bool {
    let (Some(sa), Some(sb)) = (rules.specs.get(a), rules.specs.get(b)) else {
        return true;
    };
    sa.references.iter().any(|r| r.table == b) || sb.references.iter().any(|r| r.table == a)
}

/// The connection that applies `change`: by its table and key, or by its table alone when
/// the table references itself, so that a parent row goes before its children.
fn part_of(change: &Change, rules: &Rules, k: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    change.table.hash(&mut hasher);
    let tree = rules
        .specs
        .get(&change.table)
        .is_none_or(|s| s.references.iter().any(|r| r.table == s.table));
    if !tree {
        canonical::encode_all(change.key.values()).hash(&mut hasher);
    }
    (hasher.finish() % k as u64) as usize
}

/// How long a part waits for a connection of the pool: longer means the pool has fewer
/// connections to spare than parts, and the batch goes through one transaction instead.
const POOL_WAIT: Duration = Duration::from_secs(2);

impl SqlSink {
    /// Applies `segments` (from [`split`]), one after the other.
    ///
    /// A segment's parts run their statements at once, each in a transaction of its own,
    /// and commit only once all of them have: a part the destination refuses rolls the
    /// whole segment back, so what is committed stays a prefix of the batch, as it would
    /// be through one connection, and the one-transaction path goes on from there to name
    /// the change at fault. The parts then commit one by one, each marking its ids in the
    /// checkpoint under its lock.
    pub(super) async fn apply_parallel(
        &self,
        source: &str,
        segments: &[Vec<Vec<&Change>>],
    ) -> Result<()> {
        for segment in segments {
            let parts: Vec<&[&Change]> = segment
                .iter()
                .filter(|part| !part.is_empty())
                .map(Vec::as_slice)
                .collect();
            // Every part holds its connection until the segment commits: take them all
            // first, so a pool too small to give them cannot leave parts waiting on each
            // other.
            let mut txns = Vec::with_capacity(parts.len());
            for _ in &parts {
                match tokio::time::timeout(POOL_WAIT, self.db.begin()).await {
                    Ok(Ok(txn)) => txns.push(txn),
                    Ok(Err(e)) => {
                        roll_back(txns).await;
                        return Err(self.failed("beginning a transaction", e));
                    }
                    Err(_) => {
                        roll_back(txns).await;
                        tracing::warn!(destination = %self.name, connections = parts.len(),
                            "the connection pool has fewer connections to spare than the \
                             destination's apply_connections; the batch goes through one");
                        return Ok(());
                    }
                }
            }
            let ran = join_all(
                parts
                    .iter()
                    .zip(&txns)
                    .map(|(part, txn)| self.run_part(txn, part)),
            )
            .await;
            let mut refused = false;
            for outcome in ran {
                match outcome {
                    Ok(done) => refused |= !done,
                    Err(e) => {
                        roll_back(txns).await;
                        return Err(e);
                    }
                }
            }
            if refused {
                roll_back(txns).await;
                return Ok(());
            }
            let mut txns = txns.into_iter();
            for part in &parts {
                let Some(txn) = txns.next() else { break };
                if !self.commit_part(source, txn, part).await? {
                    roll_back(txns.collect()).await;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Runs the statements of `part` in `txn`: `Ok(false)` when the destination refused
    /// one.
    async fn run_part(&self, txn: &DatabaseTransaction, part: &[&Change]) -> Result<bool> {
        let mut steps = plan::plan(part);
        plan::parents_first(&mut steps, &self.rules.specs);
        for step in &steps {
            if let Err(e) = self.run(txn, step).await {
                if classify(&e) == ErrorKind::Transient {
                    return Err(self.failed(&format!("applying to `{}`", step.table()), e));
                }
                tracing::debug!(destination = %self.name, table = step.table(), error = %redact(&e.to_string()),
                    "a part of a batch was refused; the batch goes through one transaction");
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Marks the ids of `part` in the checkpoint and commits `txn`: `Ok(false)`, rolled
    /// back, when another caller marked any of them meanwhile.
    async fn commit_part(
        &self,
        source: &str,
        txn: DatabaseTransaction,
        part: &[&Change],
    ) -> Result<bool> {
        let mut position = match checkpoint::lock(&txn, source).await {
            Ok(p) => p,
            Err(e) => {
                let _ = txn.rollback().await;
                return Err(e);
            }
        };
        if part.iter().any(|c| position.contains(c.id)) {
            let _ = txn.rollback().await;
            tracing::debug!(destination = %self.name,
                "changes of a part were applied by another caller meanwhile");
            return Ok(false);
        }
        for change in part {
            position.mark(change.id, change.id);
        }
        if let Err(e) = checkpoint::store(&txn, source, &position).await {
            let _ = txn.rollback().await;
            return Err(e);
        }
        txn.commit()
            .await
            .map_err(|e| self.failed("committing a part of a batch", e))?;
        Ok(true)
    }

    fn failed(&self, what: &str, e: DbErr) -> Error {
        Error::db(format!("destination `{}`: {what}", self.name), e)
    }
}

async fn roll_back(txns: Vec<DatabaseTransaction>) {
    for txn in txns {
        // Explicitly: a dropped transaction holds its connection until the pool next
        // hands it out.
        let _ = txn.rollback().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Op, Row};
    use crate::entity::{TableSpec, test_spec};
    use crate::value::Value;

    fn change(id: i64, table: &str, key: i64) -> Change {
        let key = Row(vec![("id".into(), Value::BigInt(Some(key)))]);
        Change {
            id,
            table: table.into(),
            op: Op::Insert,
            row: key.clone(),
            key,
            origin: None,
            created_at: None,
        }
    }

    fn rules(specs: &[TableSpec]) -> Rules {
        let mut rules = Rules::default();
        for s in specs {
            rules.specs.insert(s.table.clone(), s.clone());
        }
        rules
    }

    fn ids(parts: &[Vec<&Change>]) -> Vec<Vec<i64>> {
        parts
            .iter()
            .map(|p| p.iter().map(|c| c.id).collect())
            .collect()
    }

    #[test]
    fn a_rows_changes_stay_on_one_connection_in_order() {
        let rules = rules(&[test_spec("t", &[])]);
        let cs: Vec<Change> = (1..=400).map(|id| change(id, "t", id % 50)).collect();
        let refs: Vec<&Change> = cs.iter().collect();
        let segments = split(&refs, &rules, 3).expect("a batch this big splits");
        assert_eq!(segments.len(), 1);
        let parts = ids(&segments[0]);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 400);
        assert!(parts.iter().filter(|p| !p.is_empty()).count() > 1);
        for part in &parts {
            assert!(part.windows(2).all(|w| w[0] < w[1]), "in id order");
        }
        for key in 0..50 {
            let holding = parts
                .iter()
                .filter(|p| p.iter().any(|id| id % 50 == key))
                .count();
            assert_eq!(holding, 1, "key {key} goes through one connection");
        }
    }

    #[test]
    fn related_tables_are_cut_into_segments_in_order() {
        let rules = rules(&[
            test_spec("a", &[]),
            test_spec("b", &["a"]),
            test_spec("c", &[]),
        ]);
        let mut cs = Vec::new();
        let mut id = 0;
        for (table, n) in [("a", 200), ("c", 150), ("b", 200), ("a", 150)] {
            for key in 0..n {
                id += 1;
                cs.push(change(id, table, key));
            }
        }
        let refs: Vec<&Change> = cs.iter().collect();
        let segments = split(&refs, &rules, 2).expect("segments this big split");
        let tables: Vec<Vec<&str>> = segments
            .iter()
            .map(|s| {
                let mut t: Vec<&str> = s.iter().flatten().map(|c| c.table.as_str()).collect();
                t.dedup();
                t.sort();
                t.dedup();
                t
            })
            .collect();
        assert_eq!(tables, [vec!["a", "c"], vec!["b"], vec!["a"]]);
    }

    #[test]
    fn a_table_that_references_itself_goes_through_one_connection() {
        let rules = rules(&[test_spec("tree", &["tree"])]);
        let cs: Vec<Change> = (1..=300).map(|id| change(id, "tree", id)).collect();
        let refs: Vec<&Change> = cs.iter().collect();
        let segments = split(&refs, &rules, 4).expect("splits");
        let used = segments[0].iter().filter(|p| !p.is_empty()).count();
        assert_eq!(used, 1);
    }

    #[test]
    fn small_or_choppy_batches_go_through_one_transaction() {
        let rules = rules(&[test_spec("a", &[]), test_spec("b", &["a"])]);
        let few: Vec<Change> = (1..=20).map(|id| change(id, "a", id)).collect();
        let refs: Vec<&Change> = few.iter().collect();
        assert!(split(&refs, &rules, 4).is_none());
        // Parent and child alternating: a segment per change.
        let choppy: Vec<Change> = (1..=400)
            .map(|id| change(id, if id % 2 == 0 { "a" } else { "b" }, id))
            .collect();
        let refs: Vec<&Change> = choppy.iter().collect();
        assert!(split(&refs, &rules, 4).is_none());
        let plain: Vec<Change> = (1..=400).map(|id| change(id, "a", id)).collect();
        let refs: Vec<&Change> = plain.iter().collect();
        assert!(split(&refs, &rules, 1).is_none());
    }
}
