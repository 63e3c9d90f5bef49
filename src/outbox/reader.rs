//! Reading the outbox in a gap-safe order.

use std::collections::HashSet;
use std::time::Duration;

use sea_orm::sea_query::{Condition, Expr, Order, Query, SelectStatement};
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DbBackend, IsolationLevel, QueryResult,
    TransactionTrait,
};

use super::OUTBOX;
use super::gaps::{self, Proof};
use crate::bounded_read::{self, ReadBudget};
use crate::change::{Batch, Change, Op, Row};
use crate::error::{DbContext, Error, Result};
use crate::position::{Anchor, Position};

/// Gap ranges probed with one statement; more than that and the read takes a snapshot
/// transaction and probes them in several statements.
const GAPS_PER_STATEMENT: usize = 100;

#[derive(Clone, Debug)]
struct Gap {
    lo: i64,
    hi: i64,
    proof: Option<Proof>,
}

/// Reads a source's outbox for one destination without ever skipping a change whose
/// transaction commits late.
///
/// Outbox ids are taken when a transaction writes, not when it commits: transaction A can
/// take id 10, B id 11, and B commit first. The reader ships 11 at once and remembers 10
/// as a *gap*; every later read probes the gaps in the same statement (one snapshot) as
/// new ids, so 10 is shipped when A commits, and never after a later change of the same
/// row (row locks order those). A gap becomes a *hole*, and is skipped, only once the
/// backend proves its transaction ended (see the `gaps` module).
pub struct OutboxReader {
    db: DatabaseConnection,
    /// `batch_size` changes a read, fewer when they are wide (see [`bounded_read`]).
    budget: ReadBudget,
    gap_timeout: Duration,
    /// Highest id examined: ids up to it are shipped, holes, or gaps.
    scanned: i64,
    gaps: Vec<Gap>,
    /// What the last read returned; if the next position lacks any of it, that batch was
    /// not applied and is read again.
    outstanding: Vec<(i64, i64)>,
    /// An anchor found missing from an outbox that goes past it (pruned by a version that
    /// kept no anchors): not looked for again.
    unverifiable: Option<i64>,
    /// Ids of rows that do not decode and that the destination parked as they are: read
    /// past as done, where any other such row fails the read.
    parked: HashSet<i64>,
}

impl OutboxReader {
    /// A reader of `db`'s outbox returning at most `batch_size` changes a read, and fewer
    /// when their payloads add up to more than about 8 MiB.
    /// `gap_timeout` bounds the wait for a gap where the backend cannot prove its owner ended.
    pub fn new(db: DatabaseConnection, batch_size: u64, gap_timeout: Duration) -> Self {
        OutboxReader::with_budget(db, ReadBudget::new(batch_size), gap_timeout)
    }

    fn with_budget(db: DatabaseConnection, budget: ReadBudget, gap_timeout: Duration) -> Self {
        OutboxReader {
            db,
            budget,
            gap_timeout,
            scanned: 0,
            gaps: Vec::new(),
            outstanding: Vec::new(),
            unverifiable: None,
            parked: HashSet::new(),
        }
    }

    /// Reads past the row `id`, which does not decode and was parked in the dead letters
    /// as it is (see [`Error::Decode`]), as done.
    pub(crate) fn read_past(&mut self, id: i64) {
        self.parked.insert(id);
    }

    /// Forgets what was read and the gaps it saw: the next read starts from the position
    /// it is given, as after a restart. For a caller that read ahead of a position it then
    /// failed to store.
    pub fn restart(&mut self) {
        self.scanned = 0;
        self.gaps.clear();
        self.outstanding.clear();
    }

    /// Moves this reader out, to read on another task, leaving in its place one that starts
    /// again from the position it is given (as after [`restart`](Self::restart)); put the
    /// moved one back when its read returns.
    pub(crate) fn take(&mut self) -> OutboxReader {
        let mut fresh =
            OutboxReader::with_budget(self.db.clone(), self.budget.clone(), self.gap_timeout);
        fresh.parked = self.parked.clone();
        std::mem::replace(self, fresh)
    }

    /// Ids in gaps: taken by transactions not known to have ended.
    pub fn pending_gaps(&self) -> u64 {
        self.gaps.iter().map(|g| (g.hi - g.lo + 1) as u64).sum()
    }

    /// Reads the next changes after `position` (what the destination has applied).
    ///
    /// The same statement reads the change at the position's anchor, which must still be
    /// the one the destination took.
    ///
    /// # Errors
    ///
    /// [`Error::Db`] on a failed query; [`Error::Decode`] when a row cannot be decoded (it
    /// stays in the outbox); [`Error::SourceRewound`] when the source no longer holds the
    /// anchor's change.
    pub async fn read(&mut self, position: &Position) -> Result<Batch> {
        use tracing::Instrument;
        self.read_inner(position)
            .instrument(tracing::debug_span!("ormsync.read_batch"))
            .await
    }

    async fn read_inner(&mut self, position: &Position) -> Result<Batch> {
        self.align(position);
        let frontier = self.scanned.max(position.frontier());

        let settled_before = self.settle_pending().await?;
        let anchor = position
            .anchor
            .as_ref()
            .filter(|a| self.unverifiable != Some(a.id));
        let (read, mut full) = self.query(frontier, anchor.map(|a| a.id)).await?;

        let mut changes = Vec::with_capacity(read.len());
        let mut returned = Vec::with_capacity(read.len());
        let mut anchored = None;
        let mut parked = Vec::new();
        for change in read {
            let change = match change {
                Read::Change(change) => change,
                Read::Parked(id) => {
                    returned.push(id);
                    if !position.contains(id) {
                        parked.push((id, id));
                    }
                    continue;
                }
                // The changes before a row that does not decode are shipped, as a read cut
                // there; the next read starts with that row and fails on it.
                Read::Bad(e) if returned.is_empty() => return Err(e),
                Read::Bad(_) => {
                    full = true;
                    break;
                }
            };
            if anchor.is_some_and(|a| a.id == change.id) {
                anchored = Some(change.digest());
                continue;
            }
            returned.push(change.id);
            if !position.contains(change.id) {
                changes.push(change);
            }
        }
        if let Some(a) = anchor {
            self.check_anchor(a, anchored).await?;
        }
        let last = returned.last().copied().unwrap_or(frontier).max(frontier);
        // Absence is certain only up to the last id a full read returned: a read cut by its
        // limit returns the lowest matching ids, gap ids below the frontier first, and says
        // nothing of the ids above its last one, in a gap or not.
        let bound = if full {
            returned.last().copied().unwrap_or(frontier)
        } else {
            i64::MAX
        };

        // Settled gaps still absent are holes; the rest of each gap waits.
        let mut holes = Vec::new();
        let mut still = Vec::new();
        for gap in std::mem::take(&mut self.gaps) {
            for (lo, hi) in subtract(gap.lo, gap.hi, &returned) {
                let judged_hi = hi.min(bound);
                if settled_before.iter().any(|&(a, b)| a <= lo && hi <= b) && lo <= judged_hi {
                    holes.push((lo, judged_hi));
                    if judged_hi < hi {
                        still.push(Gap {
                            lo: judged_hi + 1,
                            hi,
                            proof: gap.proof.clone(),
                        });
                    }
                } else {
                    still.push(Gap {
                        lo,
                        hi,
                        proof: gap.proof.clone(),
                    });
                }
            }
        }
        // New gaps between the old frontier and the highest id this read saw.
        let seen_up_to = last;
        let fresh: Vec<i64> = returned
            .iter()
            .copied()
            .filter(|&id| id > frontier)
            .collect();
        let mut new_gaps = subtract(frontier + 1, seen_up_to, &fresh);
        new_gaps.retain(|&(lo, hi)| lo <= hi);
        if !new_gaps.is_empty() {
            let proof = gaps::take(&self.db).await?;
            for (lo, hi) in new_gaps {
                if matches!(proof, Proof::Immediate) {
                    holes.push((lo, hi));
                } else {
                    still.push(Gap {
                        lo,
                        hi,
                        proof: Some(proof.clone()),
                    });
                }
            }
        }
        still.sort_by_key(|g| g.lo);
        self.gaps = still;
        self.scanned = self.scanned.max(seen_up_to).max(frontier);
        if !holes.is_empty() {
            tracing::debug!(?holes, "outbox ids proven to be holes");
        }
        self.outstanding = returned.iter().map(|&id| (id, id)).collect();
        self.outstanding.extend(holes.iter().copied());
        holes.extend(parked);
        Ok(Batch {
            anchor: changes.last().map(Change::anchor),
            changes,
            skipped: holes,
            restates: false,
        })
    }

    /// Fails when the source does not hold `anchor`'s change as the destination took it
    /// (`found` is the digest of what it holds at that id).
    async fn check_anchor(&mut self, anchor: &Anchor, found: Option<String>) -> Result<()> {
        let found = match found {
            Some(digest) if digest == anchor.digest => return Ok(()),
            Some(_) => "a different change".to_string(),
            None => {
                let last = super::retention::last_id(&self.db).await?;
                if last.is_some_and(|last| last >= anchor.id) {
                    // Retention removed it before anchors were kept: nothing to compare.
                    tracing::debug!(
                        id = anchor.id,
                        "the anchor's change is gone from the outbox"
                    );
                    self.unverifiable = Some(anchor.id);
                    return Ok(());
                }
                match last {
                    Some(last) => format!("its outbox ends at {last}"),
                    None => "its outbox is empty".to_string(),
                }
            }
        };
        Err(Error::SourceRewound {
            id: anchor.id,
            found,
        })
    }

    /// Drops gaps that `position` already covers (another shipper applied them, or a
    /// restart began from a stored position) and adds those a restart forgot.
    fn align(&mut self, position: &Position) {
        let unapplied = self.outstanding.iter().any(|&(lo, hi)| {
            !position
                .above
                .missing_in(lo.max(position.watermark + 1), hi)
                .is_empty()
        });
        if unapplied {
            // The last batch did not land: forget what was scanned and read it again. Gaps
            // are recomputed from the position, with fresh (later, so safe) proofs.
            self.scanned = 0;
            self.gaps.clear();
        }
        self.outstanding.clear();
        let frontier = position.frontier();
        if self.scanned < frontier {
            // Everything below the stored frontier that is not applied is a gap to watch.
            for (lo, hi) in position.above.missing_in(position.watermark + 1, frontier) {
                if !self.gaps.iter().any(|g| g.lo <= lo && hi <= g.hi) {
                    self.gaps.push(Gap {
                        lo,
                        hi,
                        proof: None,
                    });
                }
            }
            self.scanned = frontier;
        }
        let mut kept = Vec::with_capacity(self.gaps.len());
        for gap in std::mem::take(&mut self.gaps) {
            for (lo, hi) in position
                .above
                .missing_in(gap.lo.max(position.watermark + 1), gap.hi)
            {
                kept.push(Gap {
                    lo,
                    hi,
                    proof: gap.proof.clone(),
                });
            }
        }
        kept.sort_by_key(|g| g.lo);
        self.gaps = kept;
    }

    /// Checks the pending gaps' proofs; returns the ranges settled *before* this read.
    async fn settle_pending(&mut self) -> Result<Vec<(i64, i64)>> {
        if self.gaps.is_empty() {
            return Ok(Vec::new());
        }
        if self.gaps.iter().any(|g| g.proof.is_none()) {
            // Gaps inherited from a stored position: their owners started before now.
            let proof = gaps::take(&self.db).await?;
            for g in self.gaps.iter_mut().filter(|g| g.proof.is_none()) {
                g.proof = Some(proof.clone());
            }
        }
        let pending: Vec<(i64, i64, &Proof)> = self
            .gaps
            .iter()
            .filter_map(|g| g.proof.as_ref().map(|p| (g.lo, g.hi, p)))
            .collect();
        let settled = gaps::settled(&self.db, &pending, self.gap_timeout).await?;
        tracing::trace!(gaps = ?self.gaps, ?settled, "checked outbox gaps");
        Ok(settled)
    }

    /// New ids above `frontier`, every gap and the `anchor` id, seen in one snapshot,
    /// decoded, in id order; and whether the read was cut (by the batch size or the byte
    /// budget).
    async fn query(&mut self, frontier: i64, anchor: Option<i64>) -> Result<(Vec<Read>, bool)> {
        // Scoped here: its `min`/`max` would shadow `Ord`'s on integers elsewhere.
        use sea_orm::sea_query::ExprTrait;
        let backend = self.db.get_database_backend();
        let parked = &self.parked;
        let decode = |row: &QueryResult| match decode(row) {
            Ok((change, size)) => Ok((Read::Change(change), size)),
            Err(Error::Decode { id, .. }) if parked.contains(&id) => Ok((Read::Parked(id), 0)),
            Err(e @ Error::Decode { .. }) => Ok((Read::Bad(e), 0)),
            Err(e) => Err(e),
        };
        let with_anchor = |cond: Condition| match anchor {
            Some(id) => cond.add(Expr::col("id").eq(id)),
            None => cond,
        };
        // The ids asked for, OR-ed, bounded below by the lowest of them: PostgreSQL's
        // generic plan of a prepared statement otherwise scans the key index from its start
        // and filters, which costs the whole outbox on every read.
        let bounded = |cond: Condition, lowest: i64| {
            Condition::all().add(Expr::col("id").gte(lowest)).add(cond)
        };
        let lowest_of =
            |gaps: &[Gap], from: i64| gaps.iter().map(|g| g.lo).chain(anchor).fold(from, Ord::min);
        if self.gaps.len() <= GAPS_PER_STATEMENT {
            let mut cond = with_anchor(Condition::any().add(Expr::col("id").gt(frontier)));
            for g in &self.gaps {
                cond = cond.add(Expr::col("id").between(g.lo, g.hi));
            }
            let cond = bounded(cond, lowest_of(&self.gaps, frontier.saturating_add(1)));
            // The anchor's row, below every other, must not take a changed row's place.
            let limit = self.budget.rows() + u64::from(anchor.is_some());
            let q = backend.build(&select(cond, Some(limit)));
            // Each raw row is dropped once decoded, so a batch is not held twice at once.
            return bounded_read::read(
                &self.db,
                q,
                limit,
                &mut self.budget,
                || "reading the outbox".into(),
                decode,
            )
            .await;
        }
        // Many gaps: one repeatable-read snapshot for the new ids and every gap probe.
        let isolation = match self.db.get_database_backend() {
            DbBackend::Sqlite => None,
            _ => Some(IsolationLevel::RepeatableRead),
        };
        let txn = self
            .db
            .begin_with_config(isolation, Some(AccessMode::ReadOnly))
            .await
            .context(|| "opening a snapshot of the outbox".into())?;
        let mut rows = Vec::new();
        for (i, chunk) in self.gaps.chunks(GAPS_PER_STATEMENT).enumerate() {
            let mut cond = Condition::any();
            if i == 0 {
                cond = with_anchor(cond);
            }
            for g in chunk {
                cond = cond.add(Expr::col("id").between(g.lo, g.hi));
            }
            let lowest = if i == 0 {
                lowest_of(chunk, i64::MAX)
            } else {
                chunk.iter().map(|g| g.lo).fold(i64::MAX, Ord::min)
            };
            let q = select(bounded(cond, lowest), None);
            for row in txn
                .query_all(&q)
                .await
                .context(|| "probing outbox gaps".into())?
            {
                rows.push(decode(&row)?.0);
            }
        }
        let room = Ord::max(self.budget.rows().saturating_sub(rows.len() as u64), 1);
        let q = backend.build(&select(
            Condition::all().add(Expr::col("id").gt(frontier)),
            Some(room),
        ));
        let (newer, full) = bounded_read::read(
            &txn,
            q,
            room,
            &mut self.budget,
            || "reading the outbox".into(),
            decode,
        )
        .await?;
        txn.commit()
            .await
            .context(|| "closing the outbox snapshot".into())?;
        // Gap rows are all below the frontier, so appending keeps id order.
        rows.extend(newer);
        Ok((rows, full))
    }
}

/// A row the reader read: a change, or a row that does not decode and was parked as it is.
enum Read {
    Change(Change),
    Parked(i64),
    /// A row that does not decode, and was not parked.
    Bad(Error),
}

/// The outbox rows matching `cond`, in id order, at most `limit` of them.
pub(super) fn select(cond: Condition, limit: Option<u64>) -> SelectStatement {
    let mut q = Query::select();
    q.columns([
        "id",
        "table_name",
        "op",
        "pk",
        "payload",
        "origin",
        "created_at",
    ])
    .from(OUTBOX)
    .cond_where(cond)
    .order_by("id", Order::Asc);
    if let Some(n) = limit {
        q.limit(n);
    }
    q
}

/// `lo..=hi` minus the sorted `ids`.
fn subtract(lo: i64, hi: i64, ids: &[i64]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut next = lo;
    let start = ids.partition_point(|&id| id < lo);
    for &id in &ids[start..] {
        if id > hi {
            break;
        }
        if id > next {
            out.push((next, id - 1));
        }
        next = id + 1;
    }
    if next <= hi {
        out.push((next, hi));
    }
    out
}

/// An outbox row as a change, and its size: the length of its key and payload.
pub(super) fn decode(row: &QueryResult) -> Result<(Change, usize)> {
    let id: i64 = row
        .try_get("", "id")
        .context(|| "decoding an outbox id".into())?;
    let bad = |reason: String| Error::Decode { id, reason };
    let table: String = row
        .try_get("", "table_name")
        .map_err(|e| bad(e.to_string()))?;
    let op_code: String = row.try_get("", "op").map_err(|e| bad(e.to_string()))?;
    let op = Op::from_code(&op_code).ok_or_else(|| bad(format!("unknown op `{op_code}`")))?;
    let pk: String = row.try_get("", "pk").map_err(|e| bad(e.to_string()))?;
    let payload: String = row.try_get("", "payload").map_err(|e| bad(e.to_string()))?;
    let size = pk.len() + payload.len();
    let change = Change {
        id,
        table,
        op,
        key: Row::from_json(&pk).map_err(|e| bad(format!("key: {e}")))?,
        row: Row::from_json(&payload).map_err(|e| bad(format!("payload: {e}")))?,
        origin: row.try_get::<Option<String>>("", "origin").ok().flatten(),
        created_at: row.try_get("", "created_at").ok(),
    };
    Ok((change, size))
}

#[cfg(test)]
mod tests {
    use super::subtract;

    #[test]
    fn subtract_leaves_the_missing_runs() {
        assert_eq!(subtract(1, 10, &[2, 3, 7]), vec![(1, 1), (4, 6), (8, 10)]);
        assert_eq!(subtract(5, 6, &[1, 5, 6, 9]), Vec::<(i64, i64)>::new());
        assert_eq!(subtract(5, 4, &[]), Vec::<(i64, i64)>::new());
    }
}
