//! Arrays: PostgreSQL's `integer[]`, `text[]`, … (a `Vec<T>` field), and their form where
//! a database has none.
//!
//! At PostgreSQL an array is an array. MySQL/MariaDB and SQLite have no arrays: there it is
//! a JSON array of its elements' plain forms, each element's payload form without its type
//! tag. That is a number for integers and finite floats, and a string for everything a
//! JSON number would not keep: decimals (exactly, scale included), NaN and the infinities,
//! dates, times and timestamps (RFC 3339 with the offset for zoned ones), UUIDs, and
//! binary (base64). Text and enum variants are strings, and a JSON element is its
//! document. `create_tables` gives such a column the JSON type (`json` on MySQL, `json_text`
//! on SQLite). Read back with the source's element type, the JSON array gives the source's
//! elements again, so verify and repair compare arrays element by element on every
//! backend.
//!
//! One element does not survive the JSON form: a JSON element that is the document `null`
//! reads back as a NULL element.

use sea_orm::DbBackend;
use sea_orm::sea_query::{self, ArrayType};
use serde_json::Value as J;

use super::Value;

/// The array sea-query holds as `items` of element type `ty`.
pub(super) fn from_sea(
    ty: &ArrayType,
    items: Option<Vec<sea_query::Value>>,
) -> Result<Value, String> {
    let of = Value::null_of(ty)
        .ok_or_else(|| format!("an array of `{ty:?}`"))?
        .type_tag();
    let items = items
        .map(|items| {
            items
                .into_iter()
                .map(Value::from_sea)
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    Ok(Value::Array { of, items })
}

/// The NULL element of an array whose elements' tag is `of`, or `None` when `of` names no
/// type an array holds (an unknown tag, or an array: sea-query has no arrays of arrays).
pub(crate) fn element_null(of: &str) -> Option<Value> {
    if of.starts_with("a:") {
        return None;
    }
    Value::null_for_tag(of)
}

/// The sea-query array of `items` (elements of tag `of`), each element bound as it would
/// be at `backend`.
///
/// sea-query's PostgreSQL binding takes an array only when every element is non-NULL and
/// of the array's type, and panics otherwise. An array a `Vec<T>` field captured is always
/// such; one that is not (NULL elements read from a source table) is bound as its JSON form
/// instead, which PostgreSQL refuses for an array column with an error that names it.
pub(super) fn to_sea(
    of: &str,
    items: Option<&[Value]>,
    backend: Option<DbBackend>,
) -> sea_query::Value {
    let bind = |v: &Value| match backend {
        Some(backend) => v.to_sea_for(backend),
        None => v.to_sea(),
    };
    let null = element_null(of).unwrap_or(Value::String(None));
    let ty = bind(&null).array_type();
    let Some(items) = items else {
        return sea_query::Value::Array(ty, None);
    };
    let values: Vec<sea_query::Value> = items.iter().map(bind).collect();
    if values.iter().any(|v| !v.is_some() || v.array_type() != ty) {
        return sea_query::Value::Json(Some(Box::new(to_json(items))));
    }
    sea_query::Value::Array(ty, Some(Box::new(values)))
}

/// `items` as a JSON array of their plain forms.
pub(crate) fn to_json(items: &[Value]) -> J {
    J::Array(items.iter().map(plain).collect())
}

/// `v` without its type: its payload form's content, an enum's variant, a JSON document.
fn plain(v: &Value) -> J {
    match v {
        Value::Enum { value, .. } => value.clone().map_or(J::Null, J::String),
        Value::Json(j) => j.clone().unwrap_or(J::Null),
        Value::Array { items, .. } => items.as_deref().map_or(J::Null, to_json),
        other => match serde_json::to_value(other) {
            Ok(J::Object(map)) => map.into_iter().next().map_or(J::Null, |(_, v)| v),
            _ => J::Null,
        },
    }
}

/// The elements of tag `of` that the JSON array `json` holds (see [`to_json`]).
///
/// # Errors
///
/// A message saying what does not decode: `json` is no array, or an element is not of
/// the type `of` names.
pub(crate) fn from_json(of: &str, json: J) -> Result<Vec<Value>, String> {
    let null = element_null(of).ok_or_else(|| format!("no array holds elements of `{of}`"))?;
    let J::Array(elements) = json else {
        return Err(format!("expected a JSON array of `{of}`, found {json}"));
    };
    elements
        .into_iter()
        .map(|element| from_plain(&null, element))
        .collect()
}

/// The element of `null`'s type that the plain form `j` holds.
fn from_plain(null: &Value, j: J) -> Result<Value, String> {
    if j.is_null() {
        return Ok(null.clone());
    }
    match null {
        Value::Enum { type_name, .. } => match j {
            J::String(s) => Ok(Value::Enum {
                type_name: type_name.clone(),
                value: Some(s),
            }),
            other => Err(format!("the enum element {other} is not a string")),
        },
        Value::Json(_) => Ok(Value::Json(Some(j))),
        _ => {
            let tag = null.type_tag();
            let shown = j.to_string();
            let mut typed = serde_json::Map::with_capacity(1);
            typed.insert(tag.clone(), j);
            serde_json::from_value(J::Object(typed))
                .map_err(|e| format!("the element {shown} is no `{tag}`: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    fn array(of: &str, items: Vec<Value>) -> Value {
        Value::Array {
            of: of.into(),
            items: Some(items),
        }
    }

    #[test]
    fn every_element_type_comes_back_from_its_json_form() {
        let cases = [
            array("i4", vec![Value::Int(Some(1)), Value::Int(None)]),
            array("i8", vec![Value::BigInt(Some(i64::MIN))]),
            array(
                "f8",
                vec![Value::Double(Some(0.1)), Value::Double(Some(f64::INFINITY))],
            ),
            array(
                "s",
                vec![
                    Value::String(Some("a\"b".into())),
                    Value::String(Some(String::new())),
                ],
            ),
            array(
                "dec",
                vec![Value::Decimal(Some(Decimal::from_str("1.50").unwrap()))],
            ),
            array("y", vec![Value::Bytes(Some(vec![0, 255]))]),
            array(
                "tsz",
                vec![Value::DateTimeWithTimeZone(Some(
                    DateTime::parse_from_rfc3339("2024-02-29T23:59:59.123456+05:30").unwrap(),
                ))],
            ),
            array("uuid", vec![Value::Uuid(Some(uuid::Uuid::new_v4()))]),
            array(
                "en:mood",
                vec![Value::Enum {
                    type_name: "mood".into(),
                    value: Some("happy".into()),
                }],
            ),
            array("j", vec![Value::Json(Some(serde_json::json!({"a": [1]})))]),
            array("b", vec![]),
        ];
        for case in cases {
            let Value::Array {
                of,
                items: Some(items),
            } = &case
            else {
                unreachable!()
            };
            let json = to_json(items);
            assert_eq!(&from_json(of, json.clone()).unwrap(), items, "{json}");
            // And through the outbox payload.
            let text = serde_json::to_string(&case).unwrap();
            assert_eq!(
                serde_json::from_str::<Value>(&text).unwrap(),
                case,
                "{text}"
            );
        }
    }

    #[test]
    fn a_payload_array_keeps_its_element_type_when_null_or_empty() {
        let null = Value::Array {
            of: "uuid".into(),
            items: None,
        };
        let text = serde_json::to_string(&null).unwrap();
        assert_eq!(text, r#"{"a":{"t":"uuid","v":null}}"#);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), null);
        assert_eq!(null.type_tag(), "a:uuid");
        assert_eq!(Value::null_for_tag("a:uuid"), Some(null));
        // Key order does not matter (PostgreSQL's jsonb reorders keys).
        assert_eq!(
            serde_json::from_str::<Value>(r#"{"a":{"v":[1,2],"t":"i2"}}"#).unwrap(),
            array(
                "i2",
                vec![Value::SmallInt(Some(1)), Value::SmallInt(Some(2))]
            )
        );
    }

    #[test]
    fn what_is_no_array_of_its_type_is_refused() {
        assert!(from_json("i4", serde_json::json!({"a": 1})).is_err());
        assert!(from_json("i4", serde_json::json!(["x"])).is_err());
        assert!(from_json("a:i4", serde_json::json!([])).is_err());
        assert!(from_json("nope", serde_json::json!([])).is_err());
        for text in [
            r#"{"a":{"t":"i4","v":["x"]}}"#,
            r#"{"a":{"t":"a:i4","v":[]}}"#,
            r#"{"a":{"v":[]}}"#,
        ] {
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
        }
        assert_eq!(Value::null_for_tag("a:a:i4"), None);
    }

    #[test]
    fn postgresql_gets_an_array_and_the_others_json() {
        use sea_query::Value as V;
        let v = array("i1", vec![Value::TinyInt(Some(-1))]);
        assert_eq!(
            v.to_sea_for(DbBackend::Postgres),
            V::Array(
                ArrayType::SmallInt,
                Some(Box::new(vec![V::SmallInt(Some(-1))]))
            )
        );
        for backend in [DbBackend::MySql, DbBackend::Sqlite] {
            assert_eq!(
                v.to_sea_for(backend),
                V::Json(Some(Box::new(serde_json::json!([-1]))))
            );
        }
        // A NULL element cannot be bound as a PostgreSQL array by sea-query.
        let with_null = array("i4", vec![Value::Int(None)]);
        assert!(matches!(
            with_null.to_sea_for(DbBackend::Postgres),
            V::Json(_)
        ));
    }
}
