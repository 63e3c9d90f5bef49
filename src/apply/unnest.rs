//! PostgreSQL upserts that carry a chunk of rows as one binary array per column:
//! `INSERT … SELECT … FROM unnest($1, $2, …) … ON CONFLICT … DO UPDATE`.
//!
//! The server then reads each value in its binary form. Measured on the bench table
//! (1,000 rows of 9 columns, `benches/ship.rs`), the same upsert with the rows as one JSON
//! parameter (`jsonb_to_recordset`) spent more time turning JSON text into typed values
//! than writing the rows, and 1,000-row `VALUES` lists of 9,000 parameters spend it parsing
//! and planning; see BENCHMARKS.md. Arrays keep the statement text and its plan the same
//! for any number of rows.
//!
//! sqlx binds an array parameter only without NULL elements, so a column holding NULLs in
//! the chunk travels with a second, boolean array that marks them, and a column that is
//! entirely NULL travels as no parameter at all. A value type without a faithful binary
//! array here (unsigned and 8-bit integers, characters, enums, local or offset timestamps)
//! makes [`upsert`] return `None`, and the chunk goes by the JSON statement instead.

use std::mem::discriminant;

use sea_orm::sea_query::{self, ArrayType};
use sea_orm::{DbBackend, Statement};

use super::pg_text::{on_conflict, quote};
use crate::change::Row;
use crate::value::Value;

/// The upsert of `rows` into `table` (`columns`, of destination types `types` as
/// PostgreSQL spells them), or `None` when a column's values cannot travel as an array.
pub(crate) fn upsert(
    table: &str,
    key: &[&str],
    columns: &[&str],
    types: &[&str],
    rows: &[&Row],
) -> Option<Statement> {
    let mut params: Vec<sea_query::Value> = Vec::with_capacity(columns.len() * 2);
    let mut aliases = Vec::with_capacity(columns.len() * 2);
    let mut select = Vec::with_capacity(columns.len());
    for (i, (column, ty)) in columns.iter().zip(types).enumerate() {
        let values = rows
            .iter()
            .map(|row| row.get(column))
            .collect::<Option<Vec<&Value>>>()?;
        let Some(first) = values.iter().find(|v| !v.is_null()) else {
            select.push(format!("NULL::{ty}"));
            continue;
        };
        if values
            .iter()
            .any(|v| !v.is_null() && discriminant(*v) != discriminant(*first))
        {
            return None;
        }
        let (array, element) = element_type(first, ty)?;
        let mut nulls = Vec::new();
        let mut items = Vec::with_capacity(values.len());
        for value in &values {
            if value.is_null() {
                nulls.push(items.len());
                items.push(filler(&array)?);
            } else {
                items.push(element(value));
            }
        }
        params.push(sea_query::Value::Array(array, Some(Box::new(items))));
        aliases.push(format!("c{i}"));
        if nulls.is_empty() {
            select.push(format!("u.c{i}::{ty}"));
        } else {
            let mut mask = vec![sea_query::Value::Bool(Some(false)); values.len()];
            for n in nulls {
                mask[n] = sea_query::Value::Bool(Some(true));
            }
            params.push(sea_query::Value::Array(
                ArrayType::Bool,
                Some(Box::new(mask)),
            ));
            aliases.push(format!("n{i}"));
            select.push(format!(
                "(CASE WHEN u.n{i} THEN NULL ELSE u.c{i} END)::{ty}"
            ));
        }
    }
    let placeholders: Vec<String> = (1..=params.len()).map(|n| format!("${n}")).collect();
    let from = if params.is_empty() {
        // Every column NULL: one row per change all the same.
        format!("generate_series(1, {}) AS u", rows.len())
    } else {
        format!(
            "unnest({}) AS u({})",
            placeholders.join(", "),
            aliases.join(", ")
        )
    };
    let sql = format!(
        "INSERT INTO {} ({}) SELECT {} FROM {from} {}",
        quote(table),
        columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", "),
        select.join(", "),
        on_conflict(key, columns),
    );
    Some(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        params,
    ))
}

type Element = fn(&Value) -> sea_query::Value;

/// The array type a column of values like `sample` travels as into a `target` column,
/// and how one value becomes an element.
fn element_type(sample: &Value, target: &str) -> Option<(ArrayType, Element)> {
    use sea_query::Value as V;
    Some(match sample {
        Value::Bool(_) => (ArrayType::Bool, |v| v.to_sea()),
        Value::SmallInt(_) => (ArrayType::SmallInt, |v| v.to_sea()),
        Value::Int(_) => (ArrayType::Int, |v| v.to_sea()),
        Value::BigInt(_) => (ArrayType::BigInt, |v| v.to_sea()),
        Value::Float(_) => (ArrayType::Float, |v| v.to_sea()),
        Value::Double(_) => (ArrayType::Double, |v| v.to_sea()),
        Value::String(_) => (ArrayType::String, |v| v.to_sea()),
        Value::Bytes(_) => (ArrayType::Bytes, |v| v.to_sea()),
        Value::Json(_) => (ArrayType::Json, |v| v.to_sea()),
        Value::Date(_) => (ArrayType::ChronoDate, |v| v.to_sea()),
        Value::Time(_) => (ArrayType::ChronoTime, |v| v.to_sea()),
        Value::DateTime(_) => (ArrayType::ChronoDateTime, |v| v.to_sea()),
        Value::Uuid(_) => (ArrayType::Uuid, |v| v.to_sea()),
        Value::Decimal(_) => (ArrayType::Decimal, |v| v.to_sea()),
        // A cast between `timestamptz` and `timestamp` goes through the session's time
        // zone, so the instant travels as the type of the column it lands in: UTC wall
        // time into a zoneless column, as the JSON statement's text does.
        Value::DateTimeUtc(_) if target.starts_with("timestamp with time zone") => {
            (ArrayType::ChronoDateTimeUtc, |v| v.to_sea())
        }
        Value::DateTimeUtc(_) if target.starts_with("timestamp without time zone") => {
            (ArrayType::ChronoDateTime, |v| match v {
                Value::DateTimeUtc(t) => V::ChronoDateTime(t.map(|t| t.naive_utc())),
                other => other.to_sea(),
            })
        }
        _ => return None,
    })
}

/// A value of `array`'s element type that stands in for a NULL (masked out by the query).
fn filler(array: &ArrayType) -> Option<sea_query::Value> {
    use sea_query::Value as V;
    Some(match array {
        ArrayType::Bool => V::Bool(Some(false)),
        ArrayType::SmallInt => V::SmallInt(Some(0)),
        ArrayType::Int => V::Int(Some(0)),
        ArrayType::BigInt => V::BigInt(Some(0)),
        ArrayType::Float => V::Float(Some(0.0)),
        ArrayType::Double => V::Double(Some(0.0)),
        ArrayType::String => V::String(Some(String::new())),
        ArrayType::Bytes => V::Bytes(Some(Vec::new())),
        ArrayType::Json => V::Json(Some(Box::new(serde_json::Value::Null))),
        ArrayType::ChronoDate => V::ChronoDate(Some(chrono::NaiveDate::default())),
        ArrayType::ChronoTime => V::ChronoTime(Some(chrono::NaiveTime::default())),
        ArrayType::ChronoDateTime => V::ChronoDateTime(Some(chrono::NaiveDateTime::default())),
        ArrayType::ChronoDateTimeUtc => V::ChronoDateTimeUtc(Some(chrono::DateTime::default())),
        ArrayType::Uuid => V::Uuid(Some(uuid::Uuid::nil())),
        ArrayType::Decimal => V::Decimal(Some(rust_decimal::Decimal::ZERO)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, name: Option<&str>, note: Option<&str>) -> Row {
        Row(vec![
            ("id".into(), Value::BigInt(Some(id))),
            ("name".into(), Value::String(name.map(String::from))),
            ("note".into(), Value::String(note.map(String::from))),
        ])
    }

    #[test]
    fn columns_travel_as_arrays_with_a_mask_only_where_null() {
        let rows = [row(1, Some("a"), None), row(2, None, None)];
        let refs: Vec<&Row> = rows.iter().collect();
        let stmt = upsert(
            "t",
            &["id"],
            &["id", "name", "note"],
            &["bigint", "text", "text"],
            &refs,
        )
        .expect("arrays");
        assert_eq!(
            stmt.sql,
            "INSERT INTO \"t\" (\"id\", \"name\", \"note\") SELECT u.c0::bigint, \
             (CASE WHEN u.n1 THEN NULL ELSE u.c1 END)::text, NULL::text \
             FROM unnest($1, $2, $3) AS u(c0, c1, n1) \
             ON CONFLICT (\"id\") DO UPDATE SET \"name\" = EXCLUDED.\"name\", \
             \"note\" = EXCLUDED.\"note\""
        );
        let values = stmt.values.expect("bound").0;
        assert_eq!(values.len(), 3);
        let sea_query::Value::Array(ArrayType::Bool, Some(mask)) = &values[2] else {
            panic!("a mask: {:?}", values[2]);
        };
        assert_eq!(
            **mask,
            vec![
                sea_query::Value::Bool(Some(false)),
                sea_query::Value::Bool(Some(true))
            ]
        );
    }

    #[test]
    fn a_json_null_document_is_an_element_and_sql_null_is_masked() {
        let rows = [
            Row(vec![(
                "j".into(),
                Value::Json(Some(serde_json::Value::Null)),
            )]),
            Row(vec![("j".into(), Value::Json(None))]),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let stmt = upsert("t", &["id"], &["j"], &["jsonb"], &refs).expect("arrays");
        let values = stmt.values.expect("bound").0;
        let sea_query::Value::Array(ArrayType::Json, Some(items)) = &values[0] else {
            panic!("a JSON array: {:?}", values[0]);
        };
        assert_eq!(
            items[0],
            sea_query::Value::Json(Some(Box::new(serde_json::Value::Null)))
        );
        let sea_query::Value::Array(ArrayType::Bool, Some(mask)) = &values[1] else {
            panic!("a mask: {:?}", values[1]);
        };
        assert_eq!(
            **mask,
            vec![
                sea_query::Value::Bool(Some(false)),
                sea_query::Value::Bool(Some(true))
            ]
        );
    }

    #[test]
    fn types_without_a_faithful_array_fall_back() {
        let rows = [Row(vec![("id".into(), Value::BigUnsigned(Some(1)))])];
        let refs: Vec<&Row> = rows.iter().collect();
        assert!(upsert("t", &["id"], &["id"], &["numeric"], &refs).is_none());
        let zoned = [Row(vec![(
            "at".into(),
            Value::DateTimeUtc(Some(chrono::Utc::now())),
        )])];
        let refs: Vec<&Row> = zoned.iter().collect();
        assert!(upsert("t", &["at"], &["at"], &["text"], &refs).is_none());
        assert!(upsert("t", &["at"], &["at"], &["timestamp with time zone"], &refs).is_some());
    }
}
