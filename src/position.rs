//! How far a destination has applied a source's outbox.

use serde::{Deserialize, Serialize};

/// A set of outbox ids, kept as sorted, disjoint, inclusive ranges.
///
/// Outbox ids are applied mostly in runs, so a handful of ranges describes millions of ids.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdSet(Vec<(i64, i64)>);

impl IdSet {
    /// Whether `id` is in the set.
    pub fn contains(&self, id: i64) -> bool {
        let i = self.0.partition_point(|&(_, hi)| hi < id);
        self.0.get(i).is_some_and(|&(lo, _)| lo <= id)
    }

    /// Adds `lo..=hi`.
    pub fn insert_range(&mut self, lo: i64, hi: i64) {
        if lo > hi {
            return;
        }
        // Ranges that touch or overlap [lo, hi] merge with it.
        let start = self.0.partition_point(|&(_, h)| h < lo.saturating_sub(1));
        let mut end = start;
        let (mut nlo, mut nhi) = (lo, hi);
        while end < self.0.len() && self.0[end].0 <= hi.saturating_add(1) {
            nlo = nlo.min(self.0[end].0);
            nhi = nhi.max(self.0[end].1);
            end += 1;
        }
        self.0.splice(start..end, [(nlo, nhi)]);
    }

    /// Adds one id.
    pub fn insert(&mut self, id: i64) {
        self.insert_range(id, id);
    }

    /// The largest id, if any.
    pub fn max(&self) -> Option<i64> {
        self.0.last().map(|&(_, hi)| hi)
    }

    /// The ranges, in order.
    pub fn ranges(&self) -> &[(i64, i64)] {
        &self.0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many ids the set holds.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|&(lo, hi)| (hi - lo + 1) as u64).sum()
    }

    /// The ranges of ids in `lo..=hi` that are *not* in the set.
    pub fn missing_in(&self, lo: i64, hi: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        let mut next = lo;
        for &(a, b) in &self.0 {
            if b < next {
                continue;
            }
            if a > hi {
                break;
            }
            if a > next {
                out.push((next, (a - 1).min(hi)));
            }
            next = next.max(b.saturating_add(1));
            if next > hi {
                return out;
            }
        }
        if next <= hi {
            out.push((next, hi));
        }
        out
    }
}

/// A destination's position in a source's outbox: every id at or below `watermark` is
/// applied (or was proven to be a hole that no transaction will ever fill), and `above`
/// holds the ids past the watermark that are applied too.
///
/// Ids above the watermark appear when a transaction that took a lower id commits later
/// than one that took a higher id; the watermark waits for the lower id while the higher
/// one is shipped. The position moves forward only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Every id at or below this is done.
    pub watermark: i64,
    /// Ids above the watermark that are done.
    pub above: IdSet,
    /// The last change done, as the source held it: how a source that went back in time
    /// is recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<Anchor>,
}

/// A change a destination has taken, by outbox id and a digest of its content.
///
/// A source restored from a backup, or replaced by a replica that was behind, has an
/// outbox that ends earlier than what its destinations took, and its next changes take
/// ids they have already passed: a position alone would skip them for good. The change
/// at the anchor's id is still in the outbox (retention keeps it) and still the same, or
/// the source is not the one the destination followed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The change's outbox id.
    pub id: i64,
    /// [`Change::digest`](crate::change::Change::digest) of the change.
    pub digest: String,
}

impl Position {
    /// Whether the change with this id has been applied (or skipped as a hole).
    pub fn contains(&self, id: i64) -> bool {
        id <= self.watermark || self.above.contains(id)
    }

    /// The highest id done.
    pub fn frontier(&self) -> i64 {
        self.above
            .max()
            .unwrap_or(self.watermark)
            .max(self.watermark)
    }

    /// Marks `lo..=hi` done and moves the watermark over every run that became contiguous.
    pub fn mark(&mut self, lo: i64, hi: i64) {
        let lo = lo.max(self.watermark + 1);
        if lo <= hi {
            self.above.insert_range(lo, hi);
        }
        if let Some(&(first_lo, first_hi)) = self.above.ranges().first()
            && first_lo <= self.watermark + 1
        {
            self.watermark = first_hi;
            self.above.0.remove(0);
        }
    }

    /// Takes `anchor` if it is later than the one held.
    pub fn anchor_at(&mut self, anchor: Option<&Anchor>) {
        if let Some(a) = anchor
            && self.anchor.as_ref().is_none_or(|held| held.id < a.id)
        {
            self.anchor = Some(a.clone());
        }
    }

    /// The union of two positions: what either says is done (and the later anchor).
    pub fn merge(&mut self, other: &Position) {
        self.anchor_at(other.anchor.as_ref());
        if other.watermark > self.watermark {
            let w = other.watermark;
            self.mark(self.watermark + 1, w);
        }
        for &(lo, hi) in other.above.ranges() {
            self.mark(lo, hi);
        }
    }

    /// The JSON stored in `ormsync_checkpoint.applied`.
    pub fn above_json(&self) -> String {
        serde_json::to_string(&self.above).unwrap_or_else(|_| "[]".into())
    }

    /// Rebuilds a position from its stored columns.
    pub fn from_stored(watermark: i64, above: &str) -> Result<Self, serde_json::Error> {
        let mut p = Position {
            watermark,
            above: serde_json::from_str(above)?,
            anchor: None,
        };
        p.mark(0, -1);
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_split_correctly() {
        let mut s = IdSet::default();
        s.insert(5);
        s.insert(7);
        s.insert(6);
        s.insert_range(10, 12);
        assert_eq!(s.ranges(), &[(5, 7), (10, 12)]);
        s.insert_range(8, 9);
        assert_eq!(s.ranges(), &[(5, 12)]);
        s.insert_range(1, 2);
        s.insert_range(20, 30);
        assert_eq!(s.ranges(), &[(1, 2), (5, 12), (20, 30)]);
        assert!(s.contains(1) && s.contains(12) && s.contains(25));
        assert!(!s.contains(3) && !s.contains(13) && !s.contains(31));
        assert_eq!(s.missing_in(1, 32), vec![(3, 4), (13, 19), (31, 32)]);
        assert_eq!(s.missing_in(6, 11), Vec::<(i64, i64)>::new());
        assert_eq!(s.len(), 2 + 8 + 11);
        s.insert_range(0, 40);
        assert_eq!(s.ranges(), &[(0, 40)]);
    }

    #[test]
    fn watermark_waits_for_a_late_id_then_jumps() {
        let mut p = Position::default();
        p.mark(1, 3);
        assert_eq!(p.watermark, 3);
        p.mark(5, 9); // 4 is still open somewhere
        assert_eq!((p.watermark, p.frontier()), (3, 9));
        assert!(!p.contains(4) && p.contains(7));
        p.mark(4, 4);
        assert_eq!(p.watermark, 9);
        assert!(p.above.is_empty());

        let stored = Position::from_stored(p.watermark, &p.above_json()).unwrap();
        assert_eq!(stored, p);
    }

    #[test]
    fn merge_takes_the_union() {
        let mut a = Position::default();
        a.mark(1, 5);
        a.mark(8, 8);
        let mut b = Position::default();
        b.mark(1, 2);
        b.mark(6, 7);
        a.merge(&b);
        assert_eq!(a.watermark, 8);
        assert!(a.above.is_empty());
    }
}
