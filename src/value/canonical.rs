//! A canonical byte encoding of typed values, so that equal values read from different
//! engines hash equally, and the order of primary keys the merge-join relies on. Verify
//! compares rows by it; a batch's plan and the conflict rules tell keys and values apart
//! by it.
//!
//! Engines return the same value in different shapes: PostgreSQL keeps a `NUMERIC(20,4)`
//! as `10.5000` where SQLite hands back `10.5`; a `TIMESTAMPTZ` comes with an offset,
//! MariaDB's `DATETIME` without; MariaDB keeps a `JSON` document's text as written while
//! `jsonb` reorders its keys. The encoding removes those differences and nothing else:
//!
//! | value | encoded as |
//! |---|---|
//! | NULL (any type) | its own tag, distinct from every non-NULL value (`''` included) |
//! | integers of any width and sign | the number, as 128 bits |
//! | `f32`, `f64` | the bits of the `f64`; one NaN, `-0.0` as `0.0` |
//! | decimal | normalized (`1.50` and `1.5` are equal) |
//! | text, char, enum variant | UTF-8 bytes |
//! | binary | the bytes |
//! | JSON | canonical text: keys sorted, numbers by value (`1.0` and `1` are equal); the document `null` is text like any other, apart from SQL NULL |
//! | zoned timestamps | the UTC instant, to the nanosecond (the offset is not part of it) |
//! | naive timestamps, dates, times | as stored, to the nanosecond |
//! | UUID | its 16 bytes |
//! | array | its elements' encodings, in order |
//!
//! Each encoded value carries its length, so the concatenation of a row's values is
//! unambiguous (verify compares rows by it, and [`split`] takes it apart again to name the
//! columns that differ); where a row must be summed up in a few bytes, its hash is the
//! first 128 bits of its SHA-256.

use std::cmp::Ordering;

use chrono::{Datelike, Timelike};
use sha2::{Digest, Sha256};

use super::Value;

/// The hash of a row: the first 16 bytes of the SHA-256 of its canonical encoding.
pub(crate) type RowHash = [u8; 16];

const NULL: u8 = 0;
const BOOL: u8 = 1;
const INT: u8 = 2;
const FLOAT: u8 = 3;
const TEXT: u8 = 4;
const ENUM: u8 = 5;
const BYTES: u8 = 6;
const JSON: u8 = 7;
const DATE: u8 = 8;
const TIME: u8 = 9;
const NAIVE_TS: u8 = 10;
const INSTANT: u8 = 11;
const UUID: u8 = 12;
const DECIMAL: u8 = 13;
const ARRAY: u8 = 14;
const WIDE_DECIMAL: u8 = 15;

/// Appends the canonical encoding of `value` to `out`.
pub(crate) fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Bool(Some(b)) => {
            out.push(BOOL);
            out.push(u8::from(*b));
        }
        Value::TinyInt(Some(v)) => int(i128::from(*v), out),
        Value::SmallInt(Some(v)) => int(i128::from(*v), out),
        Value::Int(Some(v)) => int(i128::from(*v), out),
        Value::BigInt(Some(v)) => int(i128::from(*v), out),
        Value::TinyUnsigned(Some(v)) => int(i128::from(*v), out),
        Value::SmallUnsigned(Some(v)) => int(i128::from(*v), out),
        Value::Unsigned(Some(v)) => int(i128::from(*v), out),
        Value::BigUnsigned(Some(v)) => int(i128::from(*v), out),
        Value::Float(Some(f)) => float(f64::from(*f), out),
        Value::Double(Some(f)) => float(*f, out),
        Value::String(Some(s)) => bytes(TEXT, s.as_bytes(), out),
        Value::Char(Some(c)) => bytes(TEXT, c.encode_utf8(&mut [0; 4]).as_bytes(), out),
        Value::Enum { value: Some(v), .. } => bytes(ENUM, v.as_bytes(), out),
        Value::Bytes(Some(b)) => bytes(BYTES, b, out),
        Value::Json(Some(j)) => {
            let mut text = String::new();
            json(j, &mut text);
            bytes(JSON, text.as_bytes(), out);
        }
        Value::Date(Some(d)) => {
            out.push(DATE);
            out.extend_from_slice(&d.num_days_from_ce().to_le_bytes());
        }
        Value::Time(Some(t)) => {
            out.push(TIME);
            out.extend_from_slice(&t.num_seconds_from_midnight().to_le_bytes());
            out.extend_from_slice(&t.nanosecond().to_le_bytes());
        }
        Value::DateTime(Some(t)) => {
            let utc = t.and_utc();
            seconds_nanos(NAIVE_TS, utc.timestamp(), utc.timestamp_subsec_nanos(), out);
        }
        Value::DateTimeUtc(Some(t)) => {
            seconds_nanos(INSTANT, t.timestamp(), t.timestamp_subsec_nanos(), out)
        }
        Value::DateTimeLocal(Some(t)) => {
            seconds_nanos(INSTANT, t.timestamp(), t.timestamp_subsec_nanos(), out)
        }
        Value::DateTimeWithTimeZone(Some(t)) => {
            seconds_nanos(INSTANT, t.timestamp(), t.timestamp_subsec_nanos(), out)
        }
        Value::Uuid(Some(u)) => {
            out.push(UUID);
            out.extend_from_slice(u.as_bytes());
        }
        Value::Decimal(Some(d)) => {
            // normalize() drops trailing zeros; a zero of any scale or sign is the one zero.
            let n = if d.is_zero() {
                rust_decimal::Decimal::ZERO
            } else {
                d.normalize()
            };
            out.push(DECIMAL);
            out.extend_from_slice(&n.mantissa().to_le_bytes());
            out.extend_from_slice(&n.scale().to_le_bytes());
        }
        // Never equal to a `Decimal`: a value that fits one is always one.
        Value::BigDecimal(Some(text)) => bytes(WIDE_DECIMAL, plain_decimal(text).as_bytes(), out),
        Value::Array {
            items: Some(items), ..
        } => {
            // Each element carries its length, so their concatenation is unambiguous.
            let mut elements = Vec::with_capacity(items.len() * 17);
            for item in items {
                encode(item, &mut elements);
            }
            bytes(ARRAY, &elements, out);
        }
        Value::Bool(None)
        | Value::TinyInt(None)
        | Value::SmallInt(None)
        | Value::Int(None)
        | Value::BigInt(None)
        | Value::TinyUnsigned(None)
        | Value::SmallUnsigned(None)
        | Value::Unsigned(None)
        | Value::BigUnsigned(None)
        | Value::Float(None)
        | Value::Double(None)
        | Value::String(None)
        | Value::Char(None)
        | Value::Enum { value: None, .. }
        | Value::Bytes(None)
        | Value::Json(None)
        | Value::Date(None)
        | Value::Time(None)
        | Value::DateTime(None)
        | Value::DateTimeUtc(None)
        | Value::DateTimeLocal(None)
        | Value::DateTimeWithTimeZone(None)
        | Value::Uuid(None)
        | Value::Decimal(None)
        | Value::BigDecimal(None)
        | Value::Array { items: None, .. } => out.push(NULL),
    }
}

/// A decimal's plain text without what does not change its value: trailing zeros after
/// the point (and the point itself when nothing follows), leading zeros, the sign of zero.
fn plain_decimal(text: &str) -> String {
    let (negative, digits) = match text.trim().strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.trim().trim_start_matches('+')),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let mut out = String::with_capacity(digits.len() + 1);
    if negative && !(int.is_empty() && frac.is_empty()) {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// The encoding of `values`, in order: a key's or a row's identity for lookups and
/// comparisons.
pub(crate) fn encode_all<'a>(values: impl IntoIterator<Item = &'a Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    for v in values {
        encode(v, &mut out);
    }
    out
}

/// The hash of a row's values, in order; `scratch` is reused between calls.
pub(crate) fn hash_values<'a>(
    values: impl IntoIterator<Item = &'a Value>,
    scratch: &mut Vec<u8>,
) -> RowHash {
    scratch.clear();
    for v in values {
        encode(v, scratch);
    }
    let digest = Sha256::digest(scratch.as_slice());
    let mut hash = [0u8; 16];
    hash.copy_from_slice(&digest[..16]);
    hash
}

/// Whether two values are equal under the canonical encoding.
pub(crate) fn same(a: &Value, b: &Value) -> bool {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    encode(a, &mut x);
    encode(b, &mut y);
    x == y
}

/// The encodings of the values whose encodings `row` holds end to end, in order: the
/// inverse of encoding values one after the other with [`encode`].
///
/// Each tag has a fixed length or carries one, so the values separate without decoding.
/// Bytes that are not such an encoding come out as one last piece.
pub(crate) fn split(row: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = row;
    std::iter::from_fn(move || {
        let tag = *rest.first()?;
        let len = match tag {
            NULL => Some(1),
            BOOL => Some(2),
            INT | UUID => Some(17),
            FLOAT | TIME => Some(9),
            DATE => Some(5),
            NAIVE_TS | INSTANT => Some(13),
            DECIMAL => Some(21),
            TEXT | ENUM | BYTES | JSON | ARRAY => rest
                .get(1..9)
                .and_then(|n| <[u8; 8]>::try_from(n).ok())
                .and_then(|n| usize::try_from(u64::from_le_bytes(n)).ok())
                .and_then(|n| n.checked_add(9)),
            _ => None,
        };
        let len = len.filter(|&n| n <= rest.len()).unwrap_or(rest.len());
        let (value, tail) = rest.split_at(len);
        rest = tail;
        Some(value)
    })
}

/// One encoded value (a piece of [`split`]) as a person reads it: numbers and text as
/// they are, timestamps in ISO 8601 (UTC for zoned ones), binary in hex.
pub(crate) fn show(piece: &[u8]) -> String {
    fn le<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
        b.get(..N).and_then(|b| <[u8; N]>::try_from(b).ok())
    }
    let Some((&tag, body)) = piece.split_first() else {
        return "?".into();
    };
    let shown = match tag {
        NULL => Some("NULL".to_string()),
        BOOL => body.first().map(|b| (*b != 0).to_string()),
        INT => le::<16>(body).map(|b| i128::from_le_bytes(b).to_string()),
        FLOAT => le::<8>(body).map(|b| f64::from_bits(u64::from_le_bytes(b)).to_string()),
        TEXT | ENUM | JSON => body
            .get(8..)
            .map(|t| format!("{:?}", String::from_utf8_lossy(t))),
        BYTES => body.get(8..).map(|t| {
            let hex: String = t.iter().map(|b| format!("{b:02x}")).collect();
            format!("x'{hex}'")
        }),
        DATE => le::<4>(body)
            .and_then(|b| chrono::NaiveDate::from_num_days_from_ce_opt(i32::from_le_bytes(b)))
            .map(|d| d.to_string()),
        TIME => le::<8>(body).and_then(|b| {
            let secs = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let nanos = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            chrono::NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)
                .map(|t| t.to_string())
        }),
        NAIVE_TS | INSTANT => le::<12>(body).and_then(|b| {
            let secs = i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            let nanos = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
            chrono::DateTime::from_timestamp(secs, nanos).map(|t| {
                if tag == INSTANT {
                    t.to_rfc3339()
                } else {
                    t.naive_utc().to_string()
                }
            })
        }),
        UUID => le::<16>(body).map(|b| uuid::Uuid::from_bytes(b).to_string()),
        ARRAY => body.get(8..).map(|elements| {
            format!(
                "[{}]",
                split(elements).map(show).collect::<Vec<_>>().join(", ")
            )
        }),
        WIDE_DECIMAL => body
            .get(8..)
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_string),
        DECIMAL => le::<16>(body).and_then(|m| {
            let scale = u32::from_le_bytes(le::<4>(body.get(16..)?)?);
            rust_decimal::Decimal::try_from_i128_with_scale(i128::from_le_bytes(m), scale)
                .ok()
                .map(|d| d.to_string())
        }),
        _ => None,
    };
    shown.unwrap_or_else(|| "?".into())
}

fn int(v: i128, out: &mut Vec<u8>) {
    out.push(INT);
    out.extend_from_slice(&v.to_le_bytes());
}

fn float(f: f64, out: &mut Vec<u8>) {
    let canonical = if f.is_nan() {
        f64::NAN
    } else if f == 0.0 {
        0.0
    } else {
        f
    };
    out.push(FLOAT);
    out.extend_from_slice(&canonical.to_bits().to_le_bytes());
}

fn bytes(tag: u8, b: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

fn seconds_nanos(tag: u8, secs: i64, nanos: u32, out: &mut Vec<u8>) {
    out.push(tag);
    out.extend_from_slice(&secs.to_le_bytes());
    out.extend_from_slice(&nanos.to_le_bytes());
}

/// Writes `v` as canonical JSON text: object keys sorted by their UTF-8 bytes (whatever
/// map serde_json was built with), no whitespace, numbers by value.
fn json(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value as J;
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => json_number(n, out),
        J::String(s) => json_string(s, out),
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json(item, out);
            }
            out.push(']');
        }
        J::Object(map) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(k, out);
                out.push(':');
                json(item, out);
            }
            out.push('}');
        }
    }
}

fn json_number(n: &serde_json::Number, out: &mut String) {
    use std::fmt::Write as _;
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        // A float with an integral value in i64's range is that integer (`2.0` is `2`), so a
        // document does not differ by how an engine spelled a number.
        if f.fract() == 0.0 && f.abs() < 9.2e18 {
            #[allow(clippy::cast_possible_truncation)]
            let i = f as i64;
            let _ = write!(out, "{i}");
        } else {
            // Rust's shortest round-trip form.
            let _ = write!(out, "{f:?}");
        }
    } else {
        // Only with serde_json's arbitrary precision: keep the text as the number.
        out.push_str(&n.to_string());
    }
}

fn json_string(s: &str, out: &mut String) {
    // serde_json's escaping is deterministic; a &str always serialises.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// Compares two primary keys in the order verify reads them from every database.
///
/// Numbers, timestamps, UUIDs and decimals compare by value, text and binary by their
/// bytes, which is the order of a binary collation (SQLite's default, PostgreSQL's `"C"`,
/// MariaDB's `*_bin`). Verify reads a side whose key sorts otherwise sorted by bytes, and
/// checks that every key it reads is above the one before.
pub(crate) fn cmp_keys(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = cmp_value(x, y);
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// The order of one key value; NULL first (a key should hold none).
fn cmp_value(a: &Value, b: &Value) -> Ordering {
    match (Key::of(a), Key::of(b)) {
        (Key::Int(x), Key::Int(y)) => x.cmp(&y),
        (Key::Float(x), Key::Float(y)) => x.total_cmp(&y),
        (Key::Bytes(x), Key::Bytes(y)) => x.cmp(y),
        (Key::Instant(x), Key::Instant(y)) => x.cmp(&y),
        (Key::Other, Key::Other) => {
            // Same type on both sides (both come from one Model): order by the encoding of
            // its natural value where it has one.
            match (a, b) {
                (Value::Bool(Some(x)), Value::Bool(Some(y))) => x.cmp(y),
                (Value::Decimal(Some(x)), Value::Decimal(Some(y))) => x.cmp(y),
                (Value::Date(Some(x)), Value::Date(Some(y))) => x.cmp(y),
                (Value::Time(Some(x)), Value::Time(Some(y))) => x.cmp(y),
                (Value::DateTime(Some(x)), Value::DateTime(Some(y))) => x.cmp(y),
                (Value::Uuid(Some(x)), Value::Uuid(Some(y))) => x.cmp(y),
                _ => {
                    let (mut x, mut y) = (Vec::new(), Vec::new());
                    encode(a, &mut x);
                    encode(b, &mut y);
                    x.cmp(&y)
                }
            }
        }
        (x, y) => x.rank().cmp(&y.rank()),
    }
}

enum Key<'a> {
    Null,
    Int(i128),
    Float(f64),
    Bytes(&'a [u8]),
    Instant((i64, u32)),
    Other,
}

impl<'a> Key<'a> {
    fn of(v: &'a Value) -> Key<'a> {
        match v {
            Value::TinyInt(Some(x)) => Key::Int(i128::from(*x)),
            Value::SmallInt(Some(x)) => Key::Int(i128::from(*x)),
            Value::Int(Some(x)) => Key::Int(i128::from(*x)),
            Value::BigInt(Some(x)) => Key::Int(i128::from(*x)),
            Value::TinyUnsigned(Some(x)) => Key::Int(i128::from(*x)),
            Value::SmallUnsigned(Some(x)) => Key::Int(i128::from(*x)),
            Value::Unsigned(Some(x)) => Key::Int(i128::from(*x)),
            Value::BigUnsigned(Some(x)) => Key::Int(i128::from(*x)),
            Value::Float(Some(x)) => Key::Float(f64::from(*x)),
            Value::Double(Some(x)) => Key::Float(*x),
            Value::String(Some(s)) => Key::Bytes(s.as_bytes()),
            Value::Enum { value: Some(s), .. } => Key::Bytes(s.as_bytes()),
            Value::Bytes(Some(b)) => Key::Bytes(b),
            Value::DateTimeUtc(Some(t)) => {
                Key::Instant((t.timestamp(), t.timestamp_subsec_nanos()))
            }
            Value::DateTimeLocal(Some(t)) => {
                Key::Instant((t.timestamp(), t.timestamp_subsec_nanos()))
            }
            Value::DateTimeWithTimeZone(Some(t)) => {
                Key::Instant((t.timestamp(), t.timestamp_subsec_nanos()))
            }
            v if v.is_null() => Key::Null,
            _ => Key::Other,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Key::Null => 0,
            Key::Int(_) => 1,
            Key::Float(_) => 2,
            Key::Bytes(_) => 3,
            Key::Instant(_) => 4,
            Key::Other => 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
    use rust_decimal::Decimal;
    use std::str::FromStr;

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out);
        out
    }

    #[test]
    fn show_reads_each_encoding_back() {
        let date = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
        let ts = date.and_hms_nano_opt(13, 4, 5, 6_000).unwrap();
        for (value, shown) in [
            (Value::Int(None), "NULL"),
            (Value::Bool(Some(true)), "true"),
            (Value::BigInt(Some(-42)), "-42"),
            (Value::Double(Some(1.5)), "1.5"),
            (Value::String(Some("a \"b\"".into())), "\"a \\\"b\\\"\""),
            (Value::Bytes(Some(vec![0, 255])), "x'00ff'"),
            (Value::Date(Some(date)), "2024-02-29"),
            (Value::Time(Some(ts.time())), "13:04:05.000006"),
            (Value::DateTime(Some(ts)), "2024-02-29 13:04:05.000006"),
            (
                Value::DateTimeUtc(Some(ts.and_utc())),
                "2024-02-29T13:04:05.000006+00:00",
            ),
            (
                Value::Decimal(Some(Decimal::from_str("10.500").unwrap())),
                "10.5",
            ),
            (
                Value::Uuid(Some(uuid::Uuid::nil())),
                "00000000-0000-0000-0000-000000000000",
            ),
            (
                Value::Array {
                    of: "s".into(),
                    items: Some(vec![Value::String(Some("a".into())), Value::String(None)]),
                },
                "[\"a\", NULL]",
            ),
        ] {
            assert_eq!(show(&enc(&value)), shown, "{value:?}");
        }
        assert_eq!(show(&[]), "?");
    }

    #[test]
    fn null_is_not_the_empty_string() {
        assert_ne!(
            enc(&Value::String(None)),
            enc(&Value::String(Some(String::new())))
        );
        assert_ne!(enc(&Value::Int(None)), enc(&Value::Int(Some(0))));
        assert_ne!(enc(&Value::Bytes(None)), enc(&Value::Bytes(Some(vec![]))));
        assert_ne!(
            enc(&Value::Json(None)),
            enc(&Value::Json(Some(serde_json::Value::Null)))
        );
        assert_ne!(
            enc(&Value::Json(Some(serde_json::Value::Null))),
            enc(&Value::Json(Some(serde_json::json!("null"))))
        );
    }

    #[test]
    fn decimals_compare_by_value() {
        let d = |s: &str| Value::Decimal(Some(Decimal::from_str(s).unwrap()));
        assert_eq!(enc(&d("10.5000")), enc(&d("10.5")));
        assert_eq!(enc(&d("-0.0000")), enc(&d("0")));
        assert_eq!(enc(&d("100")), enc(&d("100.00")));
        assert_ne!(enc(&d("10.5")), enc(&d("10.50001")));
        assert_ne!(enc(&d("1")), enc(&d("10")));
    }

    #[test]
    fn zoned_timestamps_compare_as_instants() {
        let utc = DateTime::<Utc>::from_str("2024-02-29T18:29:59.123456Z").unwrap();
        let zoned: DateTime<FixedOffset> =
            DateTime::parse_from_rfc3339("2024-02-29T23:59:59.123456+05:30").unwrap();
        assert_eq!(
            enc(&Value::DateTimeUtc(Some(utc))),
            enc(&Value::DateTimeWithTimeZone(Some(zoned)))
        );
        let later = utc + chrono::Duration::microseconds(1);
        assert_ne!(
            enc(&Value::DateTimeUtc(Some(utc))),
            enc(&Value::DateTimeUtc(Some(later)))
        );
        let naive = NaiveDate::from_ymd_opt(2024, 1, 1)
            .unwrap()
            .and_hms_nano_opt(0, 0, 0, 1)
            .unwrap();
        assert_ne!(
            enc(&Value::DateTime(Some(naive))),
            enc(&Value::DateTime(Some(
                naive - chrono::Duration::nanoseconds(1)
            )))
        );
    }

    #[test]
    fn json_is_canonical() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2.0], "x": null}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":{"x":null,"y":[1,2]},"b":1.0}"#).unwrap();
        assert_eq!(
            enc(&Value::Json(Some(a.clone()))),
            enc(&Value::Json(Some(b)))
        );
        let c: serde_json::Value =
            serde_json::from_str(r#"{"a":{"x":null,"y":[2,1]},"b":1}"#).unwrap();
        assert_ne!(enc(&Value::Json(Some(a))), enc(&Value::Json(Some(c))));
        let mut text = String::new();
        json(
            &serde_json::json!({"ü": "🚀\"", "big": 9007199254740993i64, "f": 0.1}),
            &mut text,
        );
        assert_eq!(text, r#"{"big":9007199254740993,"f":0.1,"ü":"🚀\""}"#);
    }

    #[test]
    fn floats_by_bits_with_one_nan_and_one_zero() {
        assert_eq!(
            enc(&Value::Double(Some(-0.0))),
            enc(&Value::Double(Some(0.0)))
        );
        assert_eq!(
            enc(&Value::Double(Some(f64::NAN))),
            enc(&Value::Double(Some(-f64::NAN)))
        );
        assert_ne!(
            enc(&Value::Double(Some(0.1 + 0.2))),
            enc(&Value::Double(Some(0.3)))
        );
        assert_eq!(
            enc(&Value::Float(Some(1.5))),
            enc(&Value::Double(Some(1.5)))
        );
    }

    #[test]
    fn integers_of_any_width_are_equal_by_value() {
        assert_eq!(enc(&Value::Int(Some(7))), enc(&Value::BigInt(Some(7))));
        assert_eq!(
            enc(&Value::BigUnsigned(Some(7))),
            enc(&Value::TinyInt(Some(7)))
        );
    }

    #[test]
    fn row_hash_separates_columns() {
        let mut scratch = Vec::new();
        let a = [
            Value::String(Some("ab".into())),
            Value::String(Some("c".into())),
        ];
        let b = [
            Value::String(Some("a".into())),
            Value::String(Some("bc".into())),
        ];
        assert_ne!(hash_values(&a, &mut scratch), hash_values(&b, &mut scratch));
        assert_eq!(hash_values(&a, &mut scratch), hash_values(&a, &mut scratch));
    }

    #[test]
    fn a_row_splits_into_its_values() {
        let values = [
            Value::Bool(Some(true)),
            Value::Int(Some(-3)),
            Value::Double(Some(1.5)),
            Value::String(Some("héllo".into())),
            Value::String(None),
            Value::String(Some(String::new())),
            Value::Enum {
                type_name: "mood".into(),
                value: Some("ok".into()),
            },
            Value::Bytes(Some(vec![0, 1, 2])),
            Value::Json(Some(serde_json::json!({"b": [1, 2], "a": null}))),
            Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29)),
            Value::Time(chrono::NaiveTime::from_hms_nano_opt(23, 59, 59, 5)),
            Value::DateTime(
                NaiveDate::from_ymd_opt(2024, 2, 29).and_then(|d| d.and_hms_opt(1, 2, 3)),
            ),
            Value::DateTimeUtc(Some(
                DateTime::<Utc>::from_str("2024-02-29T18:29:59.123456Z").unwrap(),
            )),
            Value::Uuid(Some(uuid::Uuid::from_u128(7))),
            Value::Decimal(Some(Decimal::from_str("-10.5000").unwrap())),
        ];
        let mut row = Vec::new();
        for v in &values {
            encode(v, &mut row);
        }
        let pieces: Vec<&[u8]> = split(&row).collect();
        let each: Vec<Vec<u8>> = values.iter().map(enc).collect();
        assert_eq!(pieces, each);
        assert_eq!(split(&[]).count(), 0);
        // Not an encoding: the rest is one piece, nothing is lost.
        assert_eq!(
            split(&[TEXT, 200, 0]).collect::<Vec<_>>(),
            [&[TEXT, 200, 0][..]]
        );
    }

    #[test]
    fn keys_order_like_the_databases() {
        let k = |a: i64, b: &str| [Value::BigInt(Some(a)), Value::String(Some(b.into()))];
        assert_eq!(cmp_keys(&k(1, "b"), &k(2, "a")), Ordering::Less);
        assert_eq!(cmp_keys(&k(2, "a"), &k(2, "a")), Ordering::Equal);
        assert_eq!(cmp_keys(&k(2, "B"), &k(2, "a")), Ordering::Less);
        assert_eq!(
            cmp_keys(&[Value::BigInt(Some(-5))], &[Value::BigInt(Some(3))]),
            Ordering::Less
        );
        let u = |s: &str| [Value::Uuid(Some(uuid::Uuid::from_str(s).unwrap()))];
        assert_eq!(
            cmp_keys(
                &u("00000000-0000-0000-0000-0000000000ff"),
                &u("10000000-0000-0000-0000-000000000000")
            ),
            Ordering::Less
        );
    }
}
