//! A change as a stream message: the outbox's own typed encoding of its key and row, so
//! every value that survives a SQL destination survives the stream.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::change::{Change, Op, Row};
use crate::error::{Error, Result};
use crate::position::{IdSet, Position};

/// The payload of a change message, and of a row version in the state stream.
#[derive(Serialize, Deserialize)]
struct Wire {
    id: i64,
    table: String,
    op: String,
    key: Row,
    row: Row,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<DateTime<Utc>>,
}

/// Encodes `change` as a message payload.
pub(crate) fn encode(change: &Change) -> Vec<u8> {
    let wire = Wire {
        id: change.id,
        table: change.table.clone(),
        op: change.op.code().to_string(),
        key: change.key.clone(),
        row: change.row.clone(),
        origin: change.origin.clone(),
        created_at: change.created_at,
    };
    // Rows hold strings and serde-derived values only: encoding cannot fail.
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// Encodes `changes` as the payload of one change message: a JSON array.
pub(crate) fn encode_all<'a>(changes: impl IntoIterator<Item = &'a Vec<u8>>) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, encoded) in changes.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(encoded);
    }
    out.push(b']');
    out
}

/// Decodes a row version's payload; `seq` names the message in the error.
pub(crate) fn decode(payload: &[u8], stream: &str, seq: u64) -> Result<Change> {
    let wire: Wire =
        serde_json::from_slice(payload).map_err(|e| bad(stream, seq, e.to_string()))?;
    from_wire(wire, stream, seq)
}

/// Decodes a change message's payload (empty for a message that only moves the position).
pub(crate) fn decode_all(payload: &[u8], stream: &str, seq: u64) -> Result<Vec<Change>> {
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    let wires: Vec<Wire> =
        serde_json::from_slice(payload).map_err(|e| bad(stream, seq, e.to_string()))?;
    wires
        .into_iter()
        .map(|w| from_wire(w, stream, seq))
        .collect()
}

fn bad(stream: &str, seq: u64, reason: String) -> Error {
    Error::Stream {
        stream: stream.to_string(),
        context: format!("decoding message {seq}"),
        reason,
        id: None,
        transient: false,
    }
}

fn from_wire(wire: Wire, stream: &str, seq: u64) -> Result<Change> {
    let op = Op::from_code(&wire.op)
        .ok_or_else(|| bad(stream, seq, format!("unknown op `{}`", wire.op)))?;
    Ok(Change {
        id: wire.id,
        table: wire.table,
        op,
        key: wire.key,
        row: wire.row,
        origin: wire.origin,
        created_at: wire.created_at,
    })
}

/// A position as a header value: its watermark and the ids done above it (its anchor stays
/// at the hub).
pub(crate) fn position_header(p: &Position) -> String {
    serde_json::json!({ "w": p.watermark, "a": p.above }).to_string()
}

/// Reads [`position_header`].
pub(crate) fn parse_position(header: &str) -> Option<Position> {
    #[derive(Deserialize)]
    struct Header {
        w: i64,
        a: IdSet,
    }
    let h: Header = serde_json::from_str(header).ok()?;
    let mut p = Position {
        watermark: h.w,
        above: IdSet::default(),
        anchor: None,
    };
    for &(lo, hi) in h.a.ranges() {
        p.mark(lo, hi);
    }
    Some(p)
}

/// The ranges that mark everything `p` holds as done.
pub(crate) fn ranges(p: &Position) -> Vec<(i64, i64)> {
    let mut out = Vec::with_capacity(p.above.ranges().len() + 1);
    if p.watermark > 0 {
        out.push((1, p.watermark));
    }
    out.extend_from_slice(p.above.ranges());
    out
}

/// Whether `have` holds every id `need` does: a subscriber at `have` missed nothing of a
/// batch that began at `need`.
pub(crate) fn covers(have: &Position, need: &Position) -> bool {
    ranges(need).into_iter().all(|(lo, hi)| {
        let lo = lo.max(have.watermark + 1);
        lo > hi || have.above.missing_in(lo, hi).is_empty()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    #[test]
    fn a_change_comes_back_as_it_went() {
        let change = Change {
            id: 42,
            table: "orders".into(),
            op: Op::Update,
            key: Row(vec![("id".into(), Value::BigInt(Some(7)))]),
            row: Row(vec![
                ("id".into(), Value::BigInt(Some(7))),
                ("note".into(), Value::String(Some("é. >*".into()))),
            ]),
            origin: Some("n1".into()),
            created_at: Some(Utc::now()),
        };
        assert_eq!(decode(&encode(&change), "S", 1).unwrap(), change);
        let two = encode_all([&encode(&change), &encode(&change)]);
        assert_eq!(
            decode_all(&two, "S", 1).unwrap(),
            vec![change.clone(), change]
        );
        assert!(decode_all(b"", "S", 1).unwrap().is_empty());
    }

    #[test]
    fn positions_cover_what_they_hold() {
        let mut have = Position::default();
        have.mark(1, 10);
        have.mark(15, 20);
        let mut need = Position::default();
        need.mark(1, 8);
        need.mark(16, 16);
        assert!(covers(&have, &need));
        need.mark(12, 12);
        assert!(!covers(&have, &need));
        let back = parse_position(&position_header(&have)).unwrap();
        assert_eq!(back, have);
        assert!(covers(&have, &Position::default()));
    }
}
