//! What travels from a source to its destinations.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::position::{Anchor, Position};
use crate::value::Value;

/// The kind of a captured change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// A row was inserted.
    Insert,
    /// A row was updated.
    Update,
    /// A row was deleted.
    Delete,
}

impl Op {
    /// The one-letter code stored in `ormsync_outbox.op`.
    pub fn code(self) -> &'static str {
        match self {
            Op::Insert => "I",
            Op::Update => "U",
            Op::Delete => "D",
        }
    }

    /// Parses [`Op::code`].
    pub fn from_code(code: &str) -> Option<Self> {
        match code.trim() {
            "I" => Some(Op::Insert),
            "U" => Some(Op::Update),
            "D" => Some(Op::Delete),
            _ => None,
        }
    }
}

/// Column values by name, in the entity's column order.
///
/// Encoded as a JSON object whose values are typed [`Value`]s.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row(pub Vec<(String, Value)>);

impl Row {
    /// The value of `column`, if the row holds it.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.0.iter().find(|(c, _)| c == column).map(|(_, v)| v)
    }

    /// The column names, in order.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(c, _)| c.as_str())
    }

    /// The values, in order.
    pub fn values(&self) -> impl Iterator<Item = &Value> {
        self.0.iter().map(|(_, v)| v)
    }

    /// About how many bytes the row's values take, in a statement or in memory (see
    /// [`Value::size_bytes`]).
    pub(crate) fn value_bytes(&self) -> usize {
        self.values().map(Value::size_bytes).sum()
    }

    /// Encodes the row as its JSON payload.
    pub fn to_json(&self) -> String {
        // A Row holds only strings and serde-derived values: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Encodes the row as the payload of a change captured at a `backend` source.
    ///
    /// At a SQLite source a decimal is a double, which sea-orm hands over converted with
    /// all its binary digits (4134.3406 as 4134.340600000001): it is shipped as the value
    /// the double stands for, to 15 significant digits, which is also how snapshots and
    /// verify read it.
    pub fn to_payload(&self, backend: sea_orm::DbBackend) -> String {
        let from_sqlite = backend == sea_orm::DbBackend::Sqlite
            && self.values().any(|v| matches!(v, Value::Decimal(Some(_))));
        if !from_sqlite {
            return self.to_json();
        }
        Row(self
            .0
            .iter()
            .map(|(c, v)| match v {
                Value::Decimal(Some(d)) => (
                    c.clone(),
                    Value::Decimal(Some(crate::value::fit::sqlite_source_decimal(*d))),
                ),
                other => (c.clone(), other.clone()),
            })
            .collect())
        .to_json()
    }

    /// Decodes a JSON payload.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

impl Serialize for Row {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (c, v) in &self.0 {
            map.serialize_entry(c, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = Row;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of typed column values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
                let mut cols = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((c, v)) = map.next_entry::<String, Value>()? {
                    cols.push((c, v));
                }
                Ok(Row(cols))
            }
        }
        d.deserialize_map(RowVisitor)
    }
}

/// One captured change, as read back from the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The outbox id: the change's position in the source's order.
    pub id: i64,
    /// The table changed.
    pub table: String,
    /// Insert, update or delete.
    pub op: Op,
    /// The primary key values.
    pub key: Row,
    /// The row after the change; for a delete, what the application held of the row (at
    /// least the key).
    pub row: Row,
    /// The node that made the change, for loop control between two-way peers.
    pub origin: Option<String>,
    /// When the change was captured.
    pub created_at: Option<DateTime<Utc>>,
}

impl Change {
    /// A digest of what the change says (table, operation, key and row), the same for the
    /// same change read again: 32 hex digits of its SHA-256.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [
            self.table.as_str(),
            self.op.code(),
            &self.key.to_json(),
            &self.row.to_json(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// This change as an [`Anchor`].
    pub fn anchor(&self) -> Anchor {
        Anchor {
            id: self.id,
            digest: self.digest(),
        }
    }
}

/// What one read of the outbox yields for a destination.
#[derive(Debug, Default)]
pub struct Batch {
    /// New changes, in id order.
    pub changes: Vec<Change>,
    /// Id ranges done without applying anything: holes (ids of transactions that rolled
    /// back) and changes this destination does not take.
    pub skipped: Vec<(i64, i64)>,
    /// The last change read, whether this destination applies it or not: the position's
    /// new anchor.
    pub anchor: Option<Anchor>,
    /// The changes state what each row is now rather than what happened to it, as a copy's
    /// converge writes them: a delete then removes the row whatever a destination's filter
    /// says of it, since the destination may hold an earlier version the filter took.
    pub restates: bool,
}

impl Batch {
    /// Whether the batch moves nothing forward.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.skipped.is_empty()
    }

    /// The part of the batch before the change `id`: its earlier changes and skipped
    /// ranges, anchored at the last of those changes. What an apply that failed at `id`
    /// can still store, so that the next batch starts at the failing change.
    pub(crate) fn before(mut self, id: i64) -> Batch {
        self.changes.retain(|c| c.id < id);
        self.skipped.retain(|&(_, hi)| hi < id);
        self.anchor = self.changes.last().map(Change::anchor);
        self
    }

    /// Marks everything this batch covers as done in `position`.
    pub fn mark_done(&self, position: &mut Position) {
        for c in &self.changes {
            position.mark(c.id, c.id);
        }
        for &(lo, hi) in &self.skipped {
            position.mark(lo, hi);
        }
        position.anchor_at(self.anchor.as_ref());
    }
}
