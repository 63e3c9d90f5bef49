//! The JSON form of a [`Value`] in the outbox payload: a one-key object whose key names the
//! type (`{"i8":42}`, `{"dec":"12.50"}`, `{"s":null}`).
//!
//! A JSON column has two empty states that must not meet: SQL NULL, `{"j":null}`, and a
//! document that is the JSON value `null`, `{"jn":null}`. Every other document travels as
//! itself under `"j"`. Payloads written before `"jn"` existed used `{"j":null}` for both;
//! they decode as SQL NULL, which is what the stream applied for them then (snapshots,
//! `repair` and `verify` read the source table itself and see the JSON `null`).
//!
//! Serialisation is written out rather than derived so that one Rust value
//! (`Value::Json(Some(serde_json::Value::Null))`) can take a key of its own, and so that
//! the tag of a value is a `match`, not a serde round trip.

use std::fmt;

use base64::Engine as _;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Value;

/// A value's type as it is named in the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tag {
    Bool,
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    TinyUnsigned,
    SmallUnsigned,
    Unsigned,
    BigUnsigned,
    Float,
    Double,
    String,
    Char,
    Enum,
    Bytes,
    Json,
    /// A JSON column holding the document `null` (not SQL NULL).
    JsonNull,
    Date,
    Time,
    DateTime,
    DateTimeUtc,
    DateTimeLocal,
    DateTimeWithTimeZone,
    Uuid,
    Decimal,
    /// A decimal too wide for `Decimal`, as text.
    BigDecimal,
    /// An array; its elements' type travels with it.
    Array,
}

/// Every tag, in payload order.
const ALL: [Tag; 27] = [
    Tag::Bool,
    Tag::TinyInt,
    Tag::SmallInt,
    Tag::Int,
    Tag::BigInt,
    Tag::TinyUnsigned,
    Tag::SmallUnsigned,
    Tag::Unsigned,
    Tag::BigUnsigned,
    Tag::Float,
    Tag::Double,
    Tag::String,
    Tag::Char,
    Tag::Enum,
    Tag::Bytes,
    Tag::Json,
    Tag::JsonNull,
    Tag::Date,
    Tag::Time,
    Tag::DateTime,
    Tag::DateTimeUtc,
    Tag::DateTimeLocal,
    Tag::DateTimeWithTimeZone,
    Tag::Uuid,
    Tag::Decimal,
    Tag::BigDecimal,
    Tag::Array,
];

/// The names of [`ALL`], for the error that lists them.
const TAG_NAMES: [&str; 27] = {
    let mut out = [""; 27];
    let mut i = 0;
    while i < ALL.len() {
        out[i] = ALL[i].name();
        i += 1;
    }
    out
};

impl Tag {
    pub(super) fn of(value: &Value) -> Tag {
        match value {
            Value::Bool(_) => Tag::Bool,
            Value::TinyInt(_) => Tag::TinyInt,
            Value::SmallInt(_) => Tag::SmallInt,
            Value::Int(_) => Tag::Int,
            Value::BigInt(_) => Tag::BigInt,
            Value::TinyUnsigned(_) => Tag::TinyUnsigned,
            Value::SmallUnsigned(_) => Tag::SmallUnsigned,
            Value::Unsigned(_) => Tag::Unsigned,
            Value::BigUnsigned(_) => Tag::BigUnsigned,
            Value::Float(_) => Tag::Float,
            Value::Double(_) => Tag::Double,
            Value::String(_) => Tag::String,
            Value::Char(_) => Tag::Char,
            Value::Enum { .. } => Tag::Enum,
            Value::Bytes(_) => Tag::Bytes,
            Value::Json(Some(serde_json::Value::Null)) => Tag::JsonNull,
            Value::Json(_) => Tag::Json,
            Value::Date(_) => Tag::Date,
            Value::Time(_) => Tag::Time,
            Value::DateTime(_) => Tag::DateTime,
            Value::DateTimeUtc(_) => Tag::DateTimeUtc,
            Value::DateTimeLocal(_) => Tag::DateTimeLocal,
            Value::DateTimeWithTimeZone(_) => Tag::DateTimeWithTimeZone,
            Value::Uuid(_) => Tag::Uuid,
            Value::Decimal(_) => Tag::Decimal,
            Value::BigDecimal(_) => Tag::BigDecimal,
            Value::Array { .. } => Tag::Array,
        }
    }

    pub(super) const fn name(self) -> &'static str {
        match self {
            Tag::Bool => "b",
            Tag::TinyInt => "i1",
            Tag::SmallInt => "i2",
            Tag::Int => "i4",
            Tag::BigInt => "i8",
            Tag::TinyUnsigned => "u1",
            Tag::SmallUnsigned => "u2",
            Tag::Unsigned => "u4",
            Tag::BigUnsigned => "u8",
            Tag::Float => "f4",
            Tag::Double => "f8",
            Tag::String => "s",
            Tag::Char => "c",
            Tag::Enum => "en",
            Tag::Bytes => "y",
            Tag::Json => "j",
            Tag::JsonNull => "jn",
            Tag::Date => "d",
            Tag::Time => "t",
            Tag::DateTime => "ts",
            Tag::DateTimeUtc => "tsu",
            Tag::DateTimeLocal => "tsl",
            Tag::DateTimeWithTimeZone => "tsz",
            Tag::Uuid => "uuid",
            Tag::Decimal => "dec",
            Tag::BigDecimal => "bdec",
            Tag::Array => "a",
        }
    }

    pub(super) fn from_name(name: &str) -> Option<Tag> {
        Some(match name {
            "b" => Tag::Bool,
            "i1" => Tag::TinyInt,
            "i2" => Tag::SmallInt,
            "i4" => Tag::Int,
            "i8" => Tag::BigInt,
            "u1" => Tag::TinyUnsigned,
            "u2" => Tag::SmallUnsigned,
            "u4" => Tag::Unsigned,
            "u8" => Tag::BigUnsigned,
            "f4" => Tag::Float,
            "f8" => Tag::Double,
            "s" => Tag::String,
            "c" => Tag::Char,
            "en" => Tag::Enum,
            "y" => Tag::Bytes,
            "j" => Tag::Json,
            "jn" => Tag::JsonNull,
            "d" => Tag::Date,
            "t" => Tag::Time,
            "ts" => Tag::DateTime,
            "tsu" => Tag::DateTimeUtc,
            "tsl" => Tag::DateTimeLocal,
            "tsz" => Tag::DateTimeWithTimeZone,
            "uuid" => Tag::Uuid,
            "dec" => Tag::Decimal,
            "bdec" => Tag::BigDecimal,
            "a" => Tag::Array,
            _ => return None,
        })
    }

    /// The NULL of this tag's type; `None` for [`Tag::JsonNull`], which names a document,
    /// for [`Tag::Enum`], whose NULL needs the enum's name, and for [`Tag::Array`], whose
    /// NULL needs its elements' type.
    pub(super) fn null(self) -> Option<Value> {
        Some(match self {
            Tag::Bool => Value::Bool(None),
            Tag::TinyInt => Value::TinyInt(None),
            Tag::SmallInt => Value::SmallInt(None),
            Tag::Int => Value::Int(None),
            Tag::BigInt => Value::BigInt(None),
            Tag::TinyUnsigned => Value::TinyUnsigned(None),
            Tag::SmallUnsigned => Value::SmallUnsigned(None),
            Tag::Unsigned => Value::Unsigned(None),
            Tag::BigUnsigned => Value::BigUnsigned(None),
            Tag::Float => Value::Float(None),
            Tag::Double => Value::Double(None),
            Tag::String => Value::String(None),
            Tag::Char => Value::Char(None),
            Tag::Bytes => Value::Bytes(None),
            Tag::Json => Value::Json(None),
            Tag::Date => Value::Date(None),
            Tag::Time => Value::Time(None),
            Tag::DateTime => Value::DateTime(None),
            Tag::DateTimeUtc => Value::DateTimeUtc(None),
            Tag::DateTimeLocal => Value::DateTimeLocal(None),
            Tag::DateTimeWithTimeZone => Value::DateTimeWithTimeZone(None),
            Tag::Uuid => Value::Uuid(None),
            Tag::Decimal | Tag::BigDecimal => Value::Decimal(None),
            Tag::Enum | Tag::JsonNull | Tag::Array => return None,
        })
    }
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tag, D::Error> {
        struct TagVisitor;
        impl Visitor<'_> for TagVisitor {
            type Value = Tag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value's type tag")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Tag, E> {
                Tag::from_name(s).ok_or_else(|| E::unknown_variant(s, &TAG_NAMES))
            }
        }
        d.deserialize_identifier(TagVisitor)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        let tag = Tag::of(self).name();
        match self {
            Value::Bool(v) => map.serialize_entry(tag, v)?,
            Value::TinyInt(v) => map.serialize_entry(tag, v)?,
            Value::SmallInt(v) => map.serialize_entry(tag, v)?,
            Value::Int(v) => map.serialize_entry(tag, v)?,
            Value::BigInt(v) => map.serialize_entry(tag, v)?,
            Value::TinyUnsigned(v) => map.serialize_entry(tag, v)?,
            Value::SmallUnsigned(v) => map.serialize_entry(tag, v)?,
            Value::Unsigned(v) => map.serialize_entry(tag, v)?,
            Value::BigUnsigned(v) => map.serialize_entry(tag, v)?,
            Value::Float(v) => map.serialize_entry(tag, &Float32(*v))?,
            Value::Double(v) => map.serialize_entry(tag, &Float64(*v))?,
            Value::String(v) => map.serialize_entry(tag, v)?,
            Value::Char(v) => map.serialize_entry(tag, v)?,
            Value::Enum { type_name, value } => map.serialize_entry(
                tag,
                &EnumRef {
                    type_name,
                    value: value.as_deref(),
                },
            )?,
            Value::Bytes(v) => map.serialize_entry(tag, &v.as_deref().map(Base64))?,
            Value::Json(Some(serde_json::Value::Null)) => map.serialize_entry(tag, &())?,
            Value::Json(v) => map.serialize_entry(tag, v)?,
            Value::Date(v) => map.serialize_entry(tag, v)?,
            Value::Time(v) => map.serialize_entry(tag, v)?,
            Value::DateTime(v) => map.serialize_entry(tag, v)?,
            Value::DateTimeUtc(v) => map.serialize_entry(tag, v)?,
            Value::DateTimeLocal(v) => map.serialize_entry(tag, v)?,
            Value::DateTimeWithTimeZone(v) => map.serialize_entry(tag, v)?,
            Value::Uuid(v) => map.serialize_entry(tag, v)?,
            Value::Decimal(v) => map.serialize_entry(tag, v)?,
            Value::BigDecimal(v) => map.serialize_entry(tag, v)?,
            Value::Array { of, items } => map.serialize_entry(
                tag,
                &ArrayRef {
                    of,
                    items: items.as_deref().map(super::array::to_json),
                },
            )?,
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_map(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a typed value: an object of one type tag, such as {\"i8\":42}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Some(tag) = map.next_key::<Tag>()? else {
            return Err(de::Error::invalid_length(0, &self));
        };
        let value = match tag {
            Tag::Bool => Value::Bool(map.next_value()?),
            Tag::TinyInt => Value::TinyInt(map.next_value()?),
            Tag::SmallInt => Value::SmallInt(map.next_value()?),
            Tag::Int => Value::Int(map.next_value()?),
            Tag::BigInt => Value::BigInt(map.next_value()?),
            Tag::TinyUnsigned => Value::TinyUnsigned(map.next_value()?),
            Tag::SmallUnsigned => Value::SmallUnsigned(map.next_value()?),
            Tag::Unsigned => Value::Unsigned(map.next_value()?),
            Tag::BigUnsigned => Value::BigUnsigned(map.next_value()?),
            Tag::Float => Value::Float(map.next_value::<Float32>()?.0),
            Tag::Double => Value::Double(map.next_value::<Float64>()?.0),
            Tag::String => Value::String(map.next_value()?),
            Tag::Char => Value::Char(map.next_value()?),
            Tag::Enum => {
                let e: EnumOwned = map.next_value()?;
                Value::Enum {
                    type_name: e.type_name,
                    value: e.value,
                }
            }
            Tag::Bytes => Value::Bytes(map.next_value::<Option<Base64Owned>>()?.map(|b| b.0)),
            // `null` here is SQL NULL, in today's payloads and in older ones alike.
            Tag::Json => Value::Json(map.next_value()?),
            Tag::JsonNull => {
                map.next_value::<()>()?;
                Value::Json(Some(serde_json::Value::Null))
            }
            Tag::Date => Value::Date(map.next_value()?),
            Tag::Time => Value::Time(map.next_value()?),
            Tag::DateTime => Value::DateTime(map.next_value()?),
            Tag::DateTimeUtc => Value::DateTimeUtc(map.next_value()?),
            Tag::DateTimeLocal => Value::DateTimeLocal(map.next_value()?),
            Tag::DateTimeWithTimeZone => Value::DateTimeWithTimeZone(map.next_value()?),
            Tag::Uuid => Value::Uuid(map.next_value()?),
            Tag::Decimal => Value::Decimal(map.next_value()?),
            Tag::BigDecimal => match map.next_value::<Option<String>>()? {
                Some(text) => Value::BigDecimal(Some(text)),
                None => Value::Decimal(None),
            },
            Tag::Array => {
                let a: ArrayOwned = map.next_value()?;
                let items = a
                    .items
                    .map(|items| super::array::from_json(&a.of, items))
                    .transpose()
                    .map_err(de::Error::custom)?;
                if items.is_none() && super::array::element_null(&a.of).is_none() {
                    return Err(de::Error::custom(format!(
                        "no array holds elements of `{}`",
                        a.of
                    )));
                }
                Value::Array { of: a.of, items }
            }
        };
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(2, &self));
        }
        Ok(value)
    }
}

macro_rules! float {
    ($name:ident, $t:ty) => {
        /// A float as its JSON number, or as a string for NaN and the infinities, which
        /// serde_json would otherwise write as `null` and so turn into NULL.
        struct $name(Option<$t>);

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self.0 {
                    Some(f) if !f.is_finite() => s.serialize_some(&f.to_string()),
                    Some(f) => s.serialize_some(&f),
                    None => s.serialize_none(),
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Repr {
                    Num($t),
                    Text(String),
                }
                Ok($name(match Option::<Repr>::deserialize(d)? {
                    None => None,
                    Some(Repr::Num(f)) => Some(f),
                    Some(Repr::Text(t)) => Some(t.parse::<$t>().map_err(de::Error::custom)?),
                }))
            }
        }
    };
}
float!(Float32, f32);
float!(Float64, f64);

#[derive(Serialize)]
struct EnumRef<'a> {
    #[serde(rename = "t")]
    type_name: &'a str,
    #[serde(rename = "v")]
    value: Option<&'a str>,
}

#[derive(Deserialize)]
struct EnumOwned {
    #[serde(rename = "t")]
    type_name: String,
    #[serde(rename = "v")]
    value: Option<String>,
}

/// An array: its elements' type tag, and the elements in their plain JSON forms (see
/// [`array`](mod@super::array)).
#[derive(Serialize)]
struct ArrayRef<'a> {
    #[serde(rename = "t")]
    of: &'a str,
    #[serde(rename = "v")]
    items: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ArrayOwned {
    #[serde(rename = "t")]
    of: String,
    #[serde(rename = "v")]
    items: Option<serde_json::Value>,
}

/// Binary data as base64 text.
struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

struct Base64Owned(Vec<u8>);

impl<'de> Deserialize<'de> for Base64Owned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Base64Owned, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Base64Owned)
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_has_one_name() {
        for (i, tag) in ALL.iter().enumerate() {
            assert_eq!(Tag::from_name(tag.name()), Some(*tag));
            assert_eq!(TAG_NAMES[i], tag.name());
            assert!(ALL[..i].iter().all(|t| t != tag && t.name() != tag.name()));
        }
        assert_eq!(Tag::from_name("nope"), None);
    }

    #[test]
    fn json_null_and_sql_null_travel_apart() {
        let sql_null = Value::Json(None);
        let json_null = Value::Json(Some(serde_json::Value::Null));
        assert_eq!(serde_json::to_string(&sql_null).unwrap(), r#"{"j":null}"#);
        assert_eq!(serde_json::to_string(&json_null).unwrap(), r#"{"jn":null}"#);
        for v in [sql_null, json_null] {
            let text = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
            let tree = serde_json::to_value(&v).unwrap();
            assert_eq!(serde_json::from_value::<Value>(tree).unwrap(), v);
        }
        // A document that merely contains nulls stays under "j".
        let doc = Value::Json(Some(serde_json::json!([null, {"a": null}])));
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"j":[null,{"a":null}]}"#
        );
    }

    #[test]
    fn payloads_written_before_jn_decode_as_they_applied() {
        // The old ambiguous form is SQL NULL.
        assert_eq!(
            serde_json::from_str::<Value>(r#"{"j":null}"#).unwrap(),
            Value::Json(None)
        );
        // Every other old form is unchanged.
        let old = [
            (r#"{"i8":42}"#, Value::BigInt(Some(42))),
            (r#"{"f8":"NaN"}"#, Value::Double(Some(f64::NAN))),
            (r#"{"f4":1.1}"#, Value::Float(Some(1.1))),
            (r#"{"y":"AP8="}"#, Value::Bytes(Some(vec![0, 255]))),
            (r#"{"y":null}"#, Value::Bytes(None)),
            (
                r#"{"en":{"t":"mood","v":"ok"}}"#,
                Value::Enum {
                    type_name: "mood".into(),
                    value: Some("ok".into()),
                },
            ),
            (
                r#"{"j":{"a":1}}"#,
                Value::Json(Some(serde_json::json!({"a": 1}))),
            ),
        ];
        for (text, value) in old {
            let back: Value = serde_json::from_str(text).unwrap();
            match (&back, &value) {
                (Value::Double(Some(a)), Value::Double(Some(b))) if b.is_nan() => {
                    assert!(a.is_nan())
                }
                _ => assert_eq!(back, value, "{text}"),
            }
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
        }
    }

    #[test]
    fn malformed_values_are_refused() {
        for text in [
            r#"{}"#,
            r#"{"zz":1}"#,
            r#"{"i8":1,"i4":2}"#,
            r#"{"jn":1}"#,
            "7",
        ] {
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
        }
    }
}
