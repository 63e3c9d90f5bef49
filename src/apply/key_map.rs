//! `ormsync_key_map` at a destination: which source key became which destination key, and
//! the hash of what ormsync last wrote to the row (how a local edit is told).

use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DbErr};

use crate::change::Row;
use crate::value::Value;

const TABLE: &str = "ormsync_key_map";

/// What the key map holds of one source row.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The row's primary key at the destination.
    pub(crate) dest_key: Row,
    /// The hash of the columns ormsync last wrote to it.
    pub(crate) hash: Option<String>,
}

/// A key's text in the map: its values as a JSON array, without types, so a foreign key
/// column of another integer width finds its parent's entry.
pub(crate) fn key_text<'a>(values: impl IntoIterator<Item = &'a Value>) -> String {
    let plain: Vec<serde_json::Value> = values
        .into_iter()
        .map(|v| match serde_json::to_value(v) {
            Ok(serde_json::Value::Object(map)) => map.into_iter().next().map(|(_, v)| v),
            _ => None,
        })
        .map(Option::unwrap_or_default)
        .collect();
    serde_json::Value::Array(plain).to_string()
}

fn matches(source: &str, table: &str, key: &str) -> sea_orm::sea_query::Condition {
    sea_orm::sea_query::Condition::all()
        .add(Expr::col(Alias::new("source")).eq(source))
        .add(Expr::col(Alias::new("table_name")).eq(table))
        .add(Expr::col(Alias::new("source_key")).eq(key))
}

/// The entry of `key` of `table` from `source`, if any.
pub(crate) async fn get<C: ConnectionTrait>(
    db: &C,
    source: &str,
    table: &str,
    key: &str,
) -> Result<Option<Entry>, DbErr> {
    let mut q = Query::select();
    q.columns([Alias::new("dest_key"), Alias::new("row_hash")])
        .from(Alias::new(TABLE))
        .cond_where(matches(source, table, key));
    let Some(res) = db.query_one(&q).await? else {
        return Ok(None);
    };
    let text: String = res.try_get("", "dest_key")?;
    let dest_key = Row::from_json(&text).map_err(|e| {
        DbErr::Custom(format!(
            "{TABLE}: the destination key of {table} {key} is not readable: {e}"
        ))
    })?;
    Ok(Some(Entry {
        dest_key,
        hash: res.try_get("", "row_hash")?,
    }))
}

/// Records that `key` of `table` from `source` is `dest_key` here, last written as `hash`.
pub(crate) async fn put<C: ConnectionTrait>(
    db: &C,
    source: &str,
    table: &str,
    key: &str,
    dest_key: &Row,
    hash: &str,
) -> Result<(), DbErr> {
    let mut q = Query::insert();
    q.into_table(Alias::new(TABLE))
        .columns(["source", "table_name", "source_key", "dest_key", "row_hash"].map(Alias::new))
        .values_panic([
            source.into(),
            table.into(),
            key.into(),
            dest_key.to_json().into(),
            hash.into(),
        ])
        .on_conflict(
            OnConflict::columns(["source", "table_name", "source_key"].map(Alias::new))
                .update_columns(["dest_key", "row_hash"].map(Alias::new))
                .to_owned(),
        );
    db.execute(&q).await.map(|_| ())
}

/// Forgets `key` of `table` from `source` (its row was deleted).
pub(crate) async fn remove<C: ConnectionTrait>(
    db: &C,
    source: &str,
    table: &str,
    key: &str,
) -> Result<(), DbErr> {
    let mut q = Query::delete();
    q.from_table(Alias::new(TABLE))
        .cond_where(matches(source, table, key));
    db.execute(&q).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_ignores_integer_width() {
        assert_eq!(
            key_text([&Value::Int(Some(5))]),
            key_text([&Value::BigInt(Some(5))])
        );
        assert_eq!(
            key_text([&Value::BigInt(Some(5)), &Value::String(Some("a".into()))]),
            r#"[5,"a"]"#
        );
    }
}
