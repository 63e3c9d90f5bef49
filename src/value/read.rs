//! A column's type as a tag, and reading a column of a query result by its tag: what lets
//! the command line, snapshots and verify read a table without the application's types.

use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use rust_decimal::Decimal;
use sea_orm::sea_query::ArrayType;
use sea_orm::{ColIdx, DbErr, QueryResult};
use uuid::Uuid;

use super::Value;

impl Value {
    /// The NULL of the Rust type whose sea-query array type is `ty`, or `None` for a type
    /// ormsync does not carry.
    pub fn null_of(ty: &ArrayType) -> Option<Value> {
        Some(match ty {
            ArrayType::Bool => Value::Bool(None),
            ArrayType::TinyInt => Value::TinyInt(None),
            ArrayType::SmallInt => Value::SmallInt(None),
            ArrayType::Int => Value::Int(None),
            ArrayType::BigInt => Value::BigInt(None),
            ArrayType::TinyUnsigned => Value::TinyUnsigned(None),
            ArrayType::SmallUnsigned => Value::SmallUnsigned(None),
            ArrayType::Unsigned => Value::Unsigned(None),
            ArrayType::BigUnsigned => Value::BigUnsigned(None),
            ArrayType::Float => Value::Float(None),
            ArrayType::Double => Value::Double(None),
            ArrayType::String => Value::String(None),
            ArrayType::Char => Value::Char(None),
            ArrayType::Enum(name) => Value::Enum {
                type_name: name.to_string(),
                value: None,
            },
            ArrayType::Bytes => Value::Bytes(None),
            ArrayType::Json => Value::Json(None),
            ArrayType::ChronoDate => Value::Date(None),
            ArrayType::ChronoTime => Value::Time(None),
            ArrayType::ChronoDateTime => Value::DateTime(None),
            ArrayType::ChronoDateTimeUtc => Value::DateTimeUtc(None),
            ArrayType::ChronoDateTimeLocal => Value::DateTimeLocal(None),
            ArrayType::ChronoDateTimeWithTimeZone => Value::DateTimeWithTimeZone(None),
            ArrayType::Uuid => Value::Uuid(None),
            ArrayType::Decimal => Value::Decimal(None),
            #[allow(unreachable_patterns)]
            _ => return None,
        })
    }

    /// The value's type as a tag: its key in the JSON payload (`"i8"`, `"dec"`, `"tsu"`,
    /// …), and `"en:<type name>"` for a database enum.
    ///
    /// ```
    /// use ormsync::value::Value;
    ///
    /// assert_eq!(Value::BigInt(Some(7)).type_tag(), "i8");
    /// assert_eq!(Value::null_for_tag("dec"), Some(Value::Decimal(None)));
    /// ```
    pub fn type_tag(&self) -> String {
        if let Value::Enum { type_name, .. } = self {
            return format!("en:{type_name}");
        }
        // The serde name is the tag; a value always serialises to a one-key object.
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map.keys().next().cloned().unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// The NULL of the type `tag` names (see [`type_tag`](Self::type_tag)), or `None` for
    /// an unknown tag.
    pub fn null_for_tag(tag: &str) -> Option<Value> {
        if let Some(type_name) = tag.strip_prefix("en:") {
            return Some(Value::Enum {
                type_name: type_name.to_string(),
                value: None,
            });
        }
        serde_json::from_value(serde_json::json!({ tag: null })).ok()
    }

    /// Reads `column` of `res` as the type `tag` names.
    ///
    /// # Errors
    ///
    /// A message naming the column when the tag is unknown or the database value does not
    /// decode as that type. A PostgreSQL enum column must be selected cast to text.
    pub fn read(res: &QueryResult, column: &str, tag: &str) -> Result<Value, String> {
        let null = Value::null_for_tag(tag)
            .ok_or_else(|| format!("column `{column}` has an unknown type tag `{tag}`"))?;
        Value::read_as(res, column, column, &null)
    }

    /// Reads the column at `at` (a name or a position) of `res` as the type of `null`, the
    /// NULL [`null_for_tag`](Self::null_for_tag) gave for its tag; `column` names it in
    /// errors.
    ///
    /// Resolving the tag costs a serde round trip; a reader of many rows resolves it once
    /// and calls this per row.
    pub(crate) fn read_as<I: ColIdx>(
        res: &QueryResult,
        at: I,
        column: &str,
        null: &Value,
    ) -> Result<Value, String> {
        let get = |e: DbErr| format!("reading column `{column}`: {e}");
        macro_rules! get {
            ($t:ty) => {
                res.try_get_by::<$t, I>(at).map_err(get)?
            };
        }
        Ok(match null {
            Value::Bool(_) => Value::Bool(get!(Option<bool>)),
            Value::TinyInt(_) => Value::TinyInt(get!(Option<i8>)),
            Value::SmallInt(_) => Value::SmallInt(get!(Option<i16>)),
            Value::Int(_) => Value::Int(get!(Option<i32>)),
            Value::BigInt(_) => Value::BigInt(get!(Option<i64>)),
            Value::TinyUnsigned(_) => Value::TinyUnsigned(get!(Option<u8>)),
            Value::SmallUnsigned(_) => Value::SmallUnsigned(get!(Option<u16>)),
            Value::Unsigned(_) => Value::Unsigned(get!(Option<u32>)),
            Value::BigUnsigned(_) => Value::BigUnsigned(get!(Option<u64>)),
            Value::Float(_) => Value::Float(get!(Option<f32>)),
            Value::Double(_) => Value::Double(get!(Option<f64>)),
            Value::String(_) => Value::String(get!(Option<String>)),
            Value::Char(_) => Value::Char(get!(Option<String>).and_then(|s| s.chars().next())),
            Value::Enum { type_name, .. } => Value::Enum {
                type_name: type_name.clone(),
                value: get!(Option<String>),
            },
            Value::Bytes(_) => Value::Bytes(get!(Option<Vec<u8>>)),
            Value::Json(_) => Value::Json(get!(Option<serde_json::Value>)),
            Value::Date(_) => Value::Date(get!(Option<NaiveDate>)),
            Value::Time(_) => Value::Time(get!(Option<NaiveTime>)),
            Value::DateTime(_) => Value::DateTime(get!(Option<NaiveDateTime>)),
            Value::DateTimeUtc(_) => Value::DateTimeUtc(get!(Option<DateTime<Utc>>)),
            Value::DateTimeLocal(_) => Value::DateTimeLocal(get!(Option<DateTime<Local>>)),
            Value::DateTimeWithTimeZone(_) => {
                Value::DateTimeWithTimeZone(get!(Option<DateTime<FixedOffset>>))
            }
            Value::Uuid(_) => Value::Uuid(get!(Option<Uuid>)),
            Value::Decimal(_) => Value::Decimal(get!(Option<Decimal>)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_names_its_own_null() {
        let nulls = [
            Value::Bool(None),
            Value::TinyInt(None),
            Value::BigUnsigned(None),
            Value::Double(None),
            Value::String(None),
            Value::Char(None),
            Value::Bytes(None),
            Value::Json(None),
            Value::Date(None),
            Value::Time(None),
            Value::DateTime(None),
            Value::DateTimeUtc(None),
            Value::DateTimeLocal(None),
            Value::DateTimeWithTimeZone(None),
            Value::Uuid(None),
            Value::Decimal(None),
            Value::Enum {
                type_name: "mood".into(),
                value: None,
            },
        ];
        for null in nulls {
            let tag = null.type_tag();
            assert_eq!(Value::null_for_tag(&tag), Some(null), "tag {tag}");
        }
        assert_eq!(Value::null_for_tag("nope"), None);
    }
}
