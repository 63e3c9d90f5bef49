//! What a destination's tables look like, to refuse a change with a precise message
//! rather than a driver error.

use std::collections::HashSet;

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::error::{DbContext, Result};

/// The column names of `table` at `db`; `None` when the table does not exist.
pub(crate) async fn of<C: ConnectionTrait>(db: &C, table: &str) -> Result<Option<HashSet<String>>> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT column_name::text AS name FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1"
        }
        DbBackend::MySql => {
            "SELECT CAST(column_name AS CHAR) AS name FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = ?"
        }
        _ => "SELECT name FROM pragma_table_info(?)",
    };
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(backend, sql, [table.into()]))
        .await
        .context(|| format!("reading the columns of `{table}`"))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut names = HashSet::with_capacity(rows.len());
    for row in rows {
        names.insert(
            row.try_get::<String>("", "name")
                .context(|| format!("reading the columns of `{table}`"))?,
        );
    }
    Ok(Some(names))
}
