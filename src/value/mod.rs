//! Typed column values, as they travel in the outbox payload.

use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use rust_decimal::Decimal;
use sea_orm::sea_query::{self, Enum, OptionEnum};
use uuid::Uuid;

pub(crate) mod array;
pub(crate) mod canonical;
pub(crate) mod crates;
pub(crate) mod fit;
mod read;
mod wire;

/// One column value, with its type, including the type of a NULL.
///
/// The payload keeps types exactly: a decimal stays a decimal with its scale, a timestamp
/// keeps its zone and microseconds, an `i64::MAX` stays an integer, binary stays binary.
/// A NULL keeps its type as well, because PostgreSQL refuses an untyped NULL for a `uuid`
/// or `jsonb` column. In JSON a value is a one-key object whose key names the type
/// ([`type_tag`](Value::type_tag)): `{"i8":42}`, `{"dec":"12.50"}`, `{"s":null}`.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `BOOLEAN`.
    Bool(Option<bool>),
    /// `TINYINT`.
    TinyInt(Option<i8>),
    /// `SMALLINT`.
    SmallInt(Option<i16>),
    /// `INTEGER`.
    Int(Option<i32>),
    /// `BIGINT`.
    BigInt(Option<i64>),
    /// Unsigned `TINYINT`.
    TinyUnsigned(Option<u8>),
    /// Unsigned `SMALLINT`.
    SmallUnsigned(Option<u16>),
    /// Unsigned `INTEGER`.
    Unsigned(Option<u32>),
    /// Unsigned `BIGINT`.
    BigUnsigned(Option<u64>),
    /// `REAL`; NaN and infinities travel as strings.
    Float(Option<f32>),
    /// `DOUBLE PRECISION`; NaN and infinities travel as strings.
    Double(Option<f64>),
    /// Text.
    String(Option<String>),
    /// A single character.
    Char(Option<char>),
    /// A database enum value (PostgreSQL `CREATE TYPE … AS ENUM`).
    Enum {
        /// The enum type's name.
        type_name: String,
        /// The variant, or NULL.
        value: Option<String>,
    },
    /// Binary data; base64 in JSON.
    Bytes(Option<Vec<u8>>),
    /// JSON. `None` is SQL NULL, `{"j":null}`; `Some(serde_json::Value::Null)` is the
    /// document `null`, a value like any other, `{"jn":null}`. (A payload captured before
    /// the two had forms of their own holds `{"j":null}` for both, and decodes as SQL NULL.)
    Json(Option<serde_json::Value>),
    /// `DATE`.
    Date(Option<NaiveDate>),
    /// `TIME`.
    Time(Option<NaiveTime>),
    /// `TIMESTAMP` without zone.
    DateTime(Option<NaiveDateTime>),
    /// A timestamp in UTC (`DateTime<Utc>`).
    DateTimeUtc(Option<DateTime<Utc>>),
    /// A timestamp in the local zone (`DateTime<Local>`).
    DateTimeLocal(Option<DateTime<Local>>),
    /// A timestamp with a fixed offset (`DateTime<FixedOffset>`, sea-orm's `DateTimeWithTimeZone`).
    DateTimeWithTimeZone(Option<DateTime<FixedOffset>>),
    /// A UUID.
    Uuid(Option<Uuid>),
    /// An exact decimal, scale included.
    Decimal(Option<Decimal>),
    /// An exact decimal of more digits than [`Decimal`](Value::Decimal) holds (28 or 29
    /// significant, 28 after the point), as its plain text (`-12345…678.90`, scale
    /// included): what a `BigDecimal` field or a wide `numeric`/`DECIMAL` column holds.
    /// A value that fits is always a `Decimal`; NULL is `Decimal(None)`.
    BigDecimal(Option<String>),
    /// A PostgreSQL array (`Vec<T>` in the `Model`) of elements of one type. At MySQL and
    /// SQLite, which have no arrays, it is a JSON array of the elements' plain forms: a
    /// number for integers and finite floats, a string for decimals, timestamps, UUIDs,
    /// NaN and the infinities, base64 for binary.
    Array {
        /// The elements' type tag ([`type_tag`](Value::type_tag)): `"i4"`, `"s"`,
        /// `"en:mood"`.
        of: String,
        /// The elements, or NULL for a NULL array.
        items: Option<Vec<Value>>,
    },
}

impl Value {
    /// About how many bytes the value takes, in a statement or in memory: the length of
    /// text, bytes and JSON, a flat 16 for anything else. Cheap, and close enough to stay
    /// under a limit.
    pub(crate) fn size_bytes(&self) -> usize {
        fn json(j: &serde_json::Value) -> usize {
            use serde_json::Value as J;
            match j {
                J::String(s) => s.len() + 2,
                J::Array(items) => items.iter().map(json).sum::<usize>() + 2,
                J::Object(map) => {
                    map.iter()
                        .map(|(k, v)| k.len() + 3 + json(v))
                        .sum::<usize>()
                        + 2
                }
                _ => 16,
            }
        }
        match self {
            Value::String(Some(s)) | Value::BigDecimal(Some(s)) => s.len(),
            Value::Bytes(Some(b)) => b.len(),
            Value::Json(Some(j)) => json(j),
            Value::Array {
                items: Some(items), ..
            } => items.iter().map(Value::size_bytes).sum::<usize>() + 2,
            _ => 16,
        }
    }

    /// [`from_sea`](Self::from_sea) of a value read from or written to a database on
    /// `at`. At SQLite a decimal is a double, which sea-orm hands over as a `BigDecimal`
    /// of all the double's binary digits (0.1 as 0.1000000000000000055511…): it is taken
    /// as the value the double stands for, to 15 significant digits, as a `Decimal` from
    /// SQLite is when it is shipped.
    pub(crate) fn from_sea_at(
        value: sea_query::Value,
        at: Option<sea_orm::DbBackend>,
    ) -> Result<Self, String> {
        #[cfg(feature = "with-bigdecimal")]
        if at == Some(sea_orm::DbBackend::Sqlite)
            && let sea_query::Value::BigDecimal(Some(b)) = &value
            && crates::big_decimal::to_decimal(b).is_none()
        {
            use bigdecimal::ToPrimitive;
            if let Some(d) = b.to_f64().and_then(fit::decimal_of_sqlite_real) {
                return Ok(Value::Decimal(Some(d)));
            }
        }
        let _ = at;
        Value::from_sea(value)
    }

    /// Converts a sea-query value, or names its type when ormsync cannot carry it.
    pub fn from_sea(value: sea_query::Value) -> Result<Self, String> {
        use sea_query::Value as V;
        Ok(match value {
            V::Bool(v) => Value::Bool(v),
            V::TinyInt(v) => Value::TinyInt(v),
            V::SmallInt(v) => Value::SmallInt(v),
            V::Int(v) => Value::Int(v),
            V::BigInt(v) => Value::BigInt(v),
            V::TinyUnsigned(v) => Value::TinyUnsigned(v),
            V::SmallUnsigned(v) => Value::SmallUnsigned(v),
            V::Unsigned(v) => Value::Unsigned(v),
            V::BigUnsigned(v) => Value::BigUnsigned(v),
            V::Float(v) => Value::Float(v),
            V::Double(v) => Value::Double(v),
            V::String(v) => Value::String(v),
            V::Char(v) => Value::Char(v),
            V::Enum(OptionEnum::Some(e)) => Value::Enum {
                type_name: e.type_name.to_string(),
                value: Some(e.value.to_string()),
            },
            V::Enum(OptionEnum::None(type_name)) => Value::Enum {
                type_name: type_name.to_string(),
                value: None,
            },
            V::Bytes(v) => Value::Bytes(v),
            V::Json(v) => Value::Json(v.map(|j| *j)),
            V::ChronoDate(v) => Value::Date(v),
            V::ChronoTime(v) => Value::Time(v),
            V::ChronoDateTime(v) => Value::DateTime(v),
            V::ChronoDateTimeUtc(v) => Value::DateTimeUtc(v),
            V::ChronoDateTimeLocal(v) => Value::DateTimeLocal(v),
            V::ChronoDateTimeWithTimeZone(v) => Value::DateTimeWithTimeZone(v),
            V::Uuid(v) => Value::Uuid(v),
            V::Decimal(v) => Value::Decimal(v),
            V::Array(ty, items) => array::from_sea(&ty, items.map(|b| *b))?,
            #[cfg(feature = "with-time")]
            V::TimeDate(v) => Value::Date(chrono_of(v, crates::time_crate::date)?),
            #[cfg(feature = "with-time")]
            V::TimeTime(v) => Value::Time(chrono_of(v, crates::time_crate::time_of_day)?),
            #[cfg(feature = "with-time")]
            V::TimeDateTime(v) => Value::DateTime(chrono_of(v, crates::time_crate::datetime)?),
            #[cfg(feature = "with-time")]
            V::TimeDateTimeWithTimeZone(v) => {
                Value::DateTimeWithTimeZone(chrono_of(v, crates::time_crate::zoned)?)
            }
            #[cfg(feature = "with-bigdecimal")]
            V::BigDecimal(None) => Value::Decimal(None),
            #[cfg(feature = "with-bigdecimal")]
            V::BigDecimal(Some(b)) => crates::big_decimal::to_value(&b),
            #[allow(unreachable_patterns)]
            other => return Err(sea_type_name(&other)),
        })
    }

    /// The sea-query value to bind at a destination.
    pub fn to_sea(&self) -> sea_query::Value {
        use sea_query::Value as V;
        match self {
            Value::Bool(v) => V::Bool(*v),
            Value::TinyInt(v) => V::TinyInt(*v),
            Value::SmallInt(v) => V::SmallInt(*v),
            Value::Int(v) => V::Int(*v),
            Value::BigInt(v) => V::BigInt(*v),
            Value::TinyUnsigned(v) => V::TinyUnsigned(*v),
            Value::SmallUnsigned(v) => V::SmallUnsigned(*v),
            Value::Unsigned(v) => V::Unsigned(*v),
            Value::BigUnsigned(v) => V::BigUnsigned(*v),
            Value::Float(v) => V::Float(*v),
            Value::Double(v) => V::Double(*v),
            Value::String(v) => V::String(v.clone()),
            Value::Char(v) => V::Char(*v),
            Value::Enum { type_name, value } => match value {
                Some(value) => V::Enum(OptionEnum::Some(Box::new(Enum {
                    type_name: type_name.clone().into(),
                    value: value.clone().into(),
                }))),
                None => V::Enum(OptionEnum::None(type_name.clone().into())),
            },
            Value::Bytes(v) => V::Bytes(v.clone()),
            Value::Json(v) => V::Json(v.clone().map(Box::new)),
            Value::Date(v) => V::ChronoDate(*v),
            Value::Time(v) => V::ChronoTime(*v),
            Value::DateTime(v) => V::ChronoDateTime(*v),
            Value::DateTimeUtc(v) => V::ChronoDateTimeUtc(*v),
            Value::DateTimeLocal(v) => V::ChronoDateTimeLocal(*v),
            Value::DateTimeWithTimeZone(v) => V::ChronoDateTimeWithTimeZone(*v),
            Value::Uuid(v) => V::Uuid(*v),
            Value::Decimal(v) => V::Decimal(*v),
            Value::BigDecimal(v) => big_to_sea(v.as_deref()),
            Value::Array { of, items } => array::to_sea(of, items.as_deref(), None),
        }
    }

    /// The sea-query value to bind at a destination of `backend`.
    ///
    /// - MySQL/MariaDB keep no zone, and sqlx sends a zoned timestamp as a `TIMESTAMP`
    ///   parameter, which the server turns into NULL past 2038-01-19. There it is bound as
    ///   the UTC wall time instead (sqlx's sessions run in UTC), which `DATETIME` and
    ///   `TIMESTAMP` columns both take, over their whole range.
    /// - PostgreSQL has no one-byte integer: sqlx would send an `i8` as the type `"char"`,
    ///   which no integer column takes, so it goes as a `smallint`.
    /// - An unsigned 64-bit integer above `i64::MAX` fits no signed parameter: it goes as a
    ///   decimal, which a `numeric` column takes and a `bigint` one refuses with an error
    ///   (never wrapped). SQLite's integers cannot hold it at all: ormsync refuses such a
    ///   change for a SQLite destination before binding anything.
    /// - An array is a PostgreSQL array of its elements as PostgreSQL takes them, and a
    ///   JSON array at MySQL and SQLite.
    pub fn to_sea_for(&self, backend: sea_orm::DbBackend) -> sea_query::Value {
        use sea_orm::DbBackend;
        use sea_query::Value as V;
        match (backend, self) {
            (DbBackend::MySql, Value::DateTimeUtc(v)) => {
                V::ChronoDateTime(v.map(|t| t.naive_utc()))
            }
            (DbBackend::MySql, Value::DateTimeLocal(v)) => {
                V::ChronoDateTime(v.map(|t| t.naive_utc()))
            }
            (DbBackend::MySql, Value::DateTimeWithTimeZone(v)) => {
                V::ChronoDateTime(v.map(|t| t.naive_utc()))
            }
            (DbBackend::Postgres, Value::TinyInt(v)) => V::SmallInt(v.map(i16::from)),
            (DbBackend::Postgres | DbBackend::Sqlite, Value::BigUnsigned(Some(v)))
                if i64::try_from(*v).is_err() =>
            {
                V::Decimal(Some(Decimal::from(*v)))
            }
            (DbBackend::Postgres | DbBackend::Sqlite, Value::BigUnsigned(v)) => {
                V::BigInt(v.and_then(|v| i64::try_from(v).ok()))
            }
            (DbBackend::Postgres, Value::Array { of, items }) => {
                array::to_sea(of, items.as_deref(), Some(backend))
            }
            (DbBackend::MySql | DbBackend::Sqlite, Value::Array { items, .. }) => V::Json(
                items
                    .as_deref()
                    .map(|items| Box::new(array::to_json(items))),
            ),
            _ => self.to_sea(),
        }
    }

    /// Whether this is a NULL (of any type).
    pub fn is_null(&self) -> bool {
        match self {
            Value::Bool(v) => v.is_none(),
            Value::TinyInt(v) => v.is_none(),
            Value::SmallInt(v) => v.is_none(),
            Value::Int(v) => v.is_none(),
            Value::BigInt(v) => v.is_none(),
            Value::TinyUnsigned(v) => v.is_none(),
            Value::SmallUnsigned(v) => v.is_none(),
            Value::Unsigned(v) => v.is_none(),
            Value::BigUnsigned(v) => v.is_none(),
            Value::Float(v) => v.is_none(),
            Value::Double(v) => v.is_none(),
            Value::String(v) => v.is_none(),
            Value::Char(v) => v.is_none(),
            Value::Enum { value, .. } => value.is_none(),
            Value::Bytes(v) => v.is_none(),
            Value::Json(v) => v.is_none(),
            Value::Date(v) => v.is_none(),
            Value::Time(v) => v.is_none(),
            Value::DateTime(v) => v.is_none(),
            Value::DateTimeUtc(v) => v.is_none(),
            Value::DateTimeLocal(v) => v.is_none(),
            Value::DateTimeWithTimeZone(v) => v.is_none(),
            Value::Uuid(v) => v.is_none(),
            Value::Decimal(v) => v.is_none(),
            Value::BigDecimal(v) => v.is_none(),
            Value::Array { items, .. } => items.is_none(),
        }
    }
}

/// The chrono value equal to the `time` crate's `v`.
#[cfg(feature = "with-time")]
fn chrono_of<T: std::fmt::Debug + Copy, C>(
    v: Option<T>,
    convert: fn(T) -> Option<C>,
) -> Result<Option<C>, String> {
    v.map(|t| convert(t).ok_or_else(|| format!("the time value {t:?}, outside chrono's range")))
        .transpose()
}

/// "a `Vector` value": what sea-query calls a value of a type ormsync does not carry.
fn sea_type_name(v: &sea_query::Value) -> String {
    let debug = format!("{v:?}");
    format!("a `{}` value", debug.split('(').next().unwrap_or("unknown"))
}

/// The sea-query value of a [`Value::BigDecimal`]: a `BigDecimal`, which each driver binds
/// as the exact decimal; without the `with-bigdecimal` feature (no such value is then
/// captured here, but a payload may carry one) its text, which MySQL converts and
/// PostgreSQL refuses for a `numeric` column with an error.
fn big_to_sea(text: Option<&str>) -> sea_query::Value {
    #[cfg(feature = "with-bigdecimal")]
    {
        use std::str::FromStr;
        match text.map(bigdecimal::BigDecimal::from_str) {
            None => sea_query::Value::BigDecimal(None),
            Some(Ok(b)) => sea_query::Value::BigDecimal(Some(Box::new(b))),
            Some(Err(_)) => sea_query::Value::String(text.map(str::to_string)),
        }
    }
    #[cfg(not(feature = "with-bigdecimal"))]
    sea_query::Value::String(text.map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn round_trip(v: Value) {
        let json = serde_json::to_string(&v).unwrap();
        let back: Value = serde_json::from_str(&json).unwrap();
        match (&v, &back) {
            (Value::Double(Some(a)), Value::Double(Some(b))) if a.is_nan() => assert!(b.is_nan()),
            _ => assert_eq!(v, back, "through {json}"),
        }
        let sea = v.to_sea();
        let again = Value::from_sea(sea).unwrap();
        match (&v, &again) {
            (Value::Double(Some(a)), Value::Double(Some(b))) if a.is_nan() => assert!(b.is_nan()),
            _ => assert_eq!(v, again),
        }
    }

    #[test]
    fn every_type_survives_json_and_sea_query() {
        round_trip(Value::BigInt(Some(i64::MAX)));
        round_trip(Value::BigInt(Some(i64::MIN)));
        round_trip(Value::BigUnsigned(Some(u64::MAX)));
        round_trip(Value::Double(Some(0.1 + 0.2)));
        round_trip(Value::Double(Some(f64::MIN_POSITIVE)));
        round_trip(Value::Double(Some(f64::NAN)));
        round_trip(Value::Double(Some(f64::NEG_INFINITY)));
        round_trip(Value::Float(Some(1.0e-7)));
        round_trip(Value::Decimal(Some(
            Decimal::from_str("12345678901234.5678900").unwrap(),
        )));
        round_trip(Value::String(Some("ünïcødé 🚀 \u{0}".into())));
        round_trip(Value::String(None));
        round_trip(Value::Uuid(None));
        round_trip(Value::Bytes(Some(vec![0, 255, 1, 2])));
        round_trip(Value::Json(Some(
            serde_json::json!({"a": [1, 2.5, "x", null]}),
        )));
        round_trip(Value::DateTimeUtc(Some(
            DateTime::from_str("2024-02-29T23:59:59.123456Z").unwrap(),
        )));
        round_trip(Value::DateTimeWithTimeZone(Some(
            DateTime::parse_from_rfc3339("2024-02-29T23:59:59.123456+05:30").unwrap(),
        )));
        round_trip(Value::Uuid(Some(Uuid::new_v4())));
        round_trip(Value::Enum {
            type_name: "mood".into(),
            value: Some("happy".into()),
        });
    }

    #[test]
    fn each_backend_gets_a_parameter_it_takes() {
        use sea_orm::DbBackend;
        use sea_query::Value as V;
        assert_eq!(
            Value::TinyInt(Some(-128)).to_sea_for(DbBackend::Postgres),
            V::SmallInt(Some(-128))
        );
        assert_eq!(
            Value::TinyInt(Some(-128)).to_sea_for(DbBackend::MySql),
            V::TinyInt(Some(-128))
        );
        for backend in [DbBackend::Postgres, DbBackend::Sqlite] {
            assert_eq!(
                Value::BigUnsigned(Some(u64::MAX)).to_sea_for(backend),
                V::Decimal(Some(Decimal::from(u64::MAX)))
            );
            assert_eq!(
                Value::BigUnsigned(Some(7)).to_sea_for(backend),
                V::BigInt(Some(7))
            );
            assert_eq!(
                Value::BigUnsigned(None).to_sea_for(backend),
                V::BigInt(None)
            );
        }
        assert_eq!(
            Value::BigUnsigned(Some(u64::MAX)).to_sea_for(DbBackend::MySql),
            V::BigUnsigned(Some(u64::MAX))
        );
    }

    #[test]
    fn decimal_keeps_its_scale() {
        let v = Value::Decimal(Some(Decimal::from_str("1.50").unwrap()));
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"{"dec":"1.50"}"#);
    }
}
