//! What a destination's tables look like, to refuse a change with a precise message
//! rather than a driver error.

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::error::{DbContext, Result};

/// The columns of `table` at `db`, each with its declared SQL type: PostgreSQL's
/// `format_type` (with modifiers, `numeric(18,4)`), MySQL's `COLUMN_TYPE`
/// (`datetime(6)`), SQLite's declared type; `None` when the table does not exist.
///
/// PostgreSQL's is what a batch of rows is cast to; on every backend the type tells what
/// a column keeps of a value (see `value::fit`).
pub(crate) async fn of<C: ConnectionTrait>(
    db: &C,
    table: &str,
) -> Result<Option<HashMap<String, String>>> {
    let backend = db.get_database_backend();
    let sql = match backend {
        // The exact type (with its modifiers) is what a batch of JSON rows is read as.
        DbBackend::Postgres => {
            "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type \
             FROM pg_attribute a WHERE a.attrelid = to_regclass(quote_ident($1)) \
             AND a.attnum > 0 AND NOT a.attisdropped"
        }
        DbBackend::MySql => {
            "SELECT CAST(column_name AS CHAR) AS name, CAST(column_type AS CHAR) AS type \
             FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = ?"
        }
        _ => "SELECT name, type FROM pragma_table_info(?)",
    };
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(backend, sql, [table.into()]))
        .await
        .context(|| format!("reading the columns of `{table}`"))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut columns = HashMap::with_capacity(rows.len());
    for row in rows {
        let name = row
            .try_get::<String>("", "name")
            .context(|| format!("reading the columns of `{table}`"))?;
        let ty = row
            .try_get::<Option<String>>("", "type")
            .context(|| format!("reading the columns of `{table}`"))?
            .unwrap_or_default();
        columns.insert(name, ty);
    }
    Ok(Some(columns))
}

/// The collation a created table's text key columns get at a MySQL/MariaDB `db`: the
/// first of these the server has.
///
/// - `utf8mb4_nopad_bin` (MariaDB): bytes, with trailing spaces significant, as at
///   PostgreSQL and SQLite: `a` and `a ` are two keys.
/// - `utf8mb4_0900_bin` (MySQL 8): the same.
/// - `utf8mb4_bin`: bytes, but `a` and `a ` are one key.
pub(crate) async fn byte_collation<C: ConnectionTrait>(db: &C) -> Result<&'static str> {
    const PREFERRED: [&str; 3] = ["utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb4_bin"];
    if db.get_database_backend() != DbBackend::MySql {
        return Ok("");
    }
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::MySql,
            "SELECT COLLATION_NAME FROM information_schema.COLLATIONS \
             WHERE COLLATION_NAME IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin')",
        ))
        .await
        .context(|| "reading the server's collations".into())?;
    let present: Vec<String> = rows
        .iter()
        .filter_map(|r| r.try_get_by_index::<String>(0).ok())
        .collect();
    Ok(PREFERRED
        .into_iter()
        .find(|c| present.iter().any(|p| p == c))
        .unwrap_or("utf8mb4_bin"))
}
