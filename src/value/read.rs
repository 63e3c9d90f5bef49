//! A column's type as a tag, and reading a column of a query result by its tag: what lets
//! the command line, snapshots and verify read a table without the application's types.

use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, NaiveTime, Utc};
#[cfg(not(feature = "with-bigdecimal"))]
use rust_decimal::Decimal;
use sea_orm::sea_query::ArrayType;
use sea_orm::{ColIdx, DbErr, QueryResult};
use uuid::Uuid;

use super::Value;
use super::wire::Tag;

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
            #[cfg(feature = "with-time")]
            ArrayType::TimeDate => Value::Date(None),
            #[cfg(feature = "with-time")]
            ArrayType::TimeTime => Value::Time(None),
            #[cfg(feature = "with-time")]
            ArrayType::TimeDateTime => Value::DateTime(None),
            #[cfg(feature = "with-time")]
            ArrayType::TimeDateTimeWithTimeZone => Value::DateTimeWithTimeZone(None),
            #[cfg(feature = "with-bigdecimal")]
            ArrayType::BigDecimal => Value::Decimal(None),
            #[allow(unreachable_patterns)]
            _ => return None,
        })
    }

    /// The value's type as a tag: its key in the JSON payload (`"i8"`, `"dec"`, `"tsu"`,
    /// …), and `"en:<type name>"` for a database enum. A JSON column's tag is `"j"`,
    /// whatever document it holds.
    ///
    /// ```
    /// use ormsync::value::Value;
    ///
    /// assert_eq!(Value::BigInt(Some(7)).type_tag(), "i8");
    /// assert_eq!(Value::Json(Some(serde_json::Value::Null)).type_tag(), "j");
    /// assert_eq!(Value::null_for_tag("dec"), Some(Value::Decimal(None)));
    /// ```
    pub fn type_tag(&self) -> String {
        match self {
            Value::Enum { type_name, .. } => format!("en:{type_name}"),
            Value::Array { of, .. } => format!("a:{of}"),
            Value::Json(_) => Tag::Json.name().to_string(),
            other => Tag::of(other).name().to_string(),
        }
    }

    /// The NULL of the type `tag` names (see [`type_tag`](Self::type_tag)), or `None` for
    /// an unknown tag.
    pub fn null_for_tag(tag: &str) -> Option<Value> {
        if let Some(of) = tag.strip_prefix("a:") {
            super::array::element_null(of)?;
            return Some(Value::Array {
                of: of.to_string(),
                items: None,
            });
        }
        if let Some(type_name) = tag.strip_prefix("en:") {
            return Some(Value::Enum {
                type_name: type_name.to_string(),
                value: None,
            });
        }
        Tag::from_name(tag)?.null()
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
    /// A reader of many rows resolves each column's tag once and calls this per row.
    ///
    /// Where sea-orm's own reading is not faithful (SQLite decimals, which it converts
    /// from a double with all its binary digits) or missing (PostgreSQL has no one-byte or
    /// unsigned integers, SQLite no `u64`), the column is read by the type the database
    /// actually returns.
    pub(crate) fn read_as<I: ColIdx>(
        res: &QueryResult,
        at: I,
        column: &str,
        null: &Value,
    ) -> Result<Value, String> {
        let failed = |e: String| format!("reading column `{column}`: {e}");
        if let Some(row) = res.try_as_sqlite_row()
            && let Some(v) = sqlite::read(row, at, null)
        {
            return v.map_err(failed);
        }
        if let Some(row) = res.try_as_pg_row()
            && let Some(v) = postgres::read(row, at, null)
        {
            return v.map_err(failed);
        }
        let get = |e: DbErr| failed(e.to_string());
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
            // Read as the exact decimal the server sends and kept as a `Decimal` where it
            // fits: the drivers' `Decimal` decoding rounds a wider `numeric`/`DECIMAL`
            // to 28 digits without a word.
            #[cfg(feature = "with-bigdecimal")]
            Value::Decimal(_) | Value::BigDecimal(_) => get!(Option<bigdecimal::BigDecimal>)
                .map_or(Value::Decimal(None), |b| {
                    crate::value::crates::big_decimal::to_value(&b)
                }),
            #[cfg(not(feature = "with-bigdecimal"))]
            Value::Decimal(_) | Value::BigDecimal(_) => Value::Decimal(get!(Option<Decimal>)),
            // No array outside PostgreSQL: its JSON form.
            Value::Array { of, .. } => Value::Array {
                of: of.clone(),
                items: get!(Option<serde_json::Value>)
                    .map(|json| super::array::from_json(of, json))
                    .transpose()
                    .map_err(failed)?,
            },
        })
    }
}

/// Where sea-orm's own reading of SQLite is not faithful.
mod sqlite {
    use rust_decimal::Decimal;
    use sea_orm::ColIdx;
    use sea_orm::sqlx::sqlite::SqliteRow;
    use sea_orm::sqlx::{Row, TypeInfo, ValueRef};

    use super::Value;
    use crate::value::fit;

    /// `null`'s type read from `row`, or `None` to read it the ordinary way.
    ///
    /// - A decimal: sea-orm reads it as an `f64` and converts that (4134.3406 comes back
    ///   as 4134.340600000001) and fails on one stored as an integer or text. Here a
    ///   `REAL` is the double to 15 significant digits (what SQLite itself prints), which
    ///   gives back exactly any decimal of up to 15 digits; an integer or text is exact.
    /// - An unsigned 64-bit integer, which sea-orm does not read from SQLite at all.
    pub(super) fn read<I: ColIdx>(
        row: &SqliteRow,
        at: I,
        null: &Value,
    ) -> Option<Result<Value, String>> {
        match null {
            Value::Decimal(_) => Some(decimal(row, at).map(Value::Decimal)),
            Value::BigUnsigned(_) => Some(
                row.try_get::<Option<i64>, _>(at.as_sqlx_sqlite_index())
                    .map_err(|e| e.to_string())
                    .and_then(|v| {
                        v.map(|v| u64::try_from(v).map_err(|_| format!("{v} is not unsigned")))
                            .transpose()
                    })
                    .map(Value::BigUnsigned),
            ),
            _ => None,
        }
    }

    fn decimal<I: ColIdx>(row: &SqliteRow, at: I) -> Result<Option<Decimal>, String> {
        let raw = row
            .try_get_raw(at.as_sqlx_sqlite_index())
            .map_err(|e| e.to_string())?;
        if raw.is_null() {
            return Ok(None);
        }
        let class = raw.type_info().name().to_string();
        let err = |e: sea_orm::sqlx::Error| e.to_string();
        match class.as_str() {
            "REAL" => {
                let f: f64 = row.try_get(at.as_sqlx_sqlite_index()).map_err(err)?;
                fit::decimal_of_sqlite_real(f)
                    .map(Some)
                    .ok_or_else(|| format!("the REAL {f} is no decimal"))
            }
            "INTEGER" => Ok(Some(Decimal::from(
                row.try_get::<i64, _>(at.as_sqlx_sqlite_index())
                    .map_err(err)?,
            ))),
            "TEXT" => {
                let text: String = row.try_get(at.as_sqlx_sqlite_index()).map_err(err)?;
                let text = text.trim();
                text.parse::<Decimal>()
                    .or_else(|_| Decimal::from_scientific(text))
                    .map(Some)
                    .map_err(|e| format!("the text {text:?} is no decimal: {e}"))
            }
            other => Err(format!("a decimal stored as {other}")),
        }
    }
}

/// Where sea-orm does not read PostgreSQL at all: it has no one-byte or unsigned integer
/// types, so a column for an `i8` or an unsigned value is a wider signed integer or a
/// `numeric`, read here by its actual type and checked into range.
mod postgres {
    use rust_decimal::Decimal;
    use rust_decimal::prelude::ToPrimitive;
    use sea_orm::ColIdx;
    use sea_orm::sqlx::postgres::PgRow;
    use sea_orm::sqlx::{Row, TypeInfo, ValueRef};

    use super::Value;

    pub(super) fn read<I: ColIdx>(
        row: &PgRow,
        at: I,
        null: &Value,
    ) -> Option<Result<Value, String>> {
        fn narrow<T: TryFrom<i128>>(v: Option<i128>, ty: &str) -> Result<Option<T>, String> {
            v.map(|v| T::try_from(v).map_err(|_| format!("{v} is out of range for {ty}")))
                .transpose()
        }
        Some(match null {
            Value::TinyInt(_) => integer(row, at).and_then(|v| narrow(v, "i8").map(Value::TinyInt)),
            Value::TinyUnsigned(_) => {
                integer(row, at).and_then(|v| narrow(v, "u8").map(Value::TinyUnsigned))
            }
            Value::SmallUnsigned(_) => {
                integer(row, at).and_then(|v| narrow(v, "u16").map(Value::SmallUnsigned))
            }
            Value::Unsigned(_) => {
                integer(row, at).and_then(|v| narrow(v, "u32").map(Value::Unsigned))
            }
            Value::BigUnsigned(_) => {
                integer(row, at).and_then(|v| narrow(v, "u64").map(Value::BigUnsigned))
            }
            Value::Array { of, .. } => array(row, at, of),
            _ => return None,
        })
    }

    /// A PostgreSQL array of elements of tag `of` (an enum array selected as `text[]`).
    fn array<I: ColIdx>(row: &PgRow, at: I, of: &str) -> Result<Value, String> {
        use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, NaiveTime, Utc};
        use uuid::Uuid;

        let null = crate::value::array::element_null(of)
            .ok_or_else(|| format!("no array holds elements of `{of}`"))?;
        let at = at.as_sqlx_postgres_index();
        macro_rules! get {
            ($t:ty, $wrap:expr) => {
                row.try_get::<Option<Vec<Option<$t>>>, _>(at)
                    .map_err(|e| e.to_string())?
                    .map(|items| items.into_iter().map($wrap).collect())
            };
        }
        let items = match &null {
            Value::Bool(_) => get!(bool, Value::Bool),
            Value::SmallInt(_) => get!(i16, Value::SmallInt),
            Value::Int(_) => get!(i32, Value::Int),
            Value::BigInt(_) => get!(i64, Value::BigInt),
            Value::Float(_) => get!(f32, Value::Float),
            Value::Double(_) => get!(f64, Value::Double),
            Value::String(_) => get!(String, Value::String),
            Value::Enum { type_name, .. } => get!(String, |value| Value::Enum {
                type_name: type_name.clone(),
                value,
            }),
            Value::Bytes(_) => get!(Vec<u8>, Value::Bytes),
            Value::Json(_) => get!(serde_json::Value, Value::Json),
            Value::Date(_) => get!(NaiveDate, Value::Date),
            Value::Time(_) => get!(NaiveTime, Value::Time),
            Value::DateTime(_) => get!(NaiveDateTime, Value::DateTime),
            Value::DateTimeUtc(_) => get!(DateTime<Utc>, Value::DateTimeUtc),
            Value::DateTimeLocal(_) => get!(DateTime<Local>, Value::DateTimeLocal),
            Value::DateTimeWithTimeZone(_) => {
                get!(DateTime<FixedOffset>, Value::DateTimeWithTimeZone)
            }
            Value::Uuid(_) => get!(Uuid, Value::Uuid),
            Value::Decimal(_) => get!(Decimal, Value::Decimal),
            other => {
                return Err(format!("PostgreSQL has no array of `{}`", other.type_tag()));
            }
        };
        Ok(Value::Array {
            of: of.to_string(),
            items,
        })
    }

    fn integer<I: ColIdx>(row: &PgRow, at: I) -> Result<Option<i128>, String> {
        let raw = row
            .try_get_raw(at.as_sqlx_postgres_index())
            .map_err(|e| e.to_string())?;
        if raw.is_null() {
            return Ok(None);
        }
        let ty = raw.type_info().name().to_string();
        let err = |e: sea_orm::sqlx::Error| e.to_string();
        Ok(Some(match ty.as_str() {
            "INT2" => i128::from(
                row.try_get::<i16, _>(at.as_sqlx_postgres_index())
                    .map_err(err)?,
            ),
            "INT4" => i128::from(
                row.try_get::<i32, _>(at.as_sqlx_postgres_index())
                    .map_err(err)?,
            ),
            "INT8" => i128::from(
                row.try_get::<i64, _>(at.as_sqlx_postgres_index())
                    .map_err(err)?,
            ),
            "NUMERIC" => {
                let d: Decimal = row.try_get(at.as_sqlx_postgres_index()).map_err(err)?;
                d.fract()
                    .is_zero()
                    .then(|| d.to_i128())
                    .flatten()
                    .ok_or_else(|| format!("{d} is not an integer"))?
            }
            other => return Err(format!("an integer column of type {other}")),
        }))
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
