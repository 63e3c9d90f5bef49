//! The SQL of a step, built with sea-query for the destination's backend: identifiers
//! quoted, values bound, never formatted into the text.

use sea_orm::DbBackend;
use sea_orm::sea_query::{
    Alias, Condition, DeleteStatement, Expr, ExprTrait, InsertStatement, OnConflict, Query,
    SelectStatement, SimpleExpr, UpdateStatement, ValueTuple,
};

use super::plan::Step;
use crate::change::Row;

/// Rows per statement at most: past this, bigger statements stop paying off.
const MAX_ROWS: usize = 1000;

/// Bind parameters a statement may carry on `backend`.
fn max_params(backend: DbBackend) -> usize {
    match backend {
        DbBackend::Sqlite => 32_766,
        // PostgreSQL and MySQL count parameters in an unsigned 16-bit field.
        _ => 65_535,
    }
}

/// A built statement.
pub(crate) enum Built {
    Insert(InsertStatement),
    Delete(DeleteStatement),
}

/// The statements that carry out `step` on `backend`, split to fit its parameter limit.
pub(crate) fn build(step: &Step<'_>, backend: DbBackend) -> Vec<Built> {
    match step {
        Step::Upsert { table, key, rows } => {
            let Some(first) = rows.first() else {
                return Vec::new();
            };
            let columns: Vec<&str> = first.columns().collect();
            let per = chunk_rows(columns.len(), backend);
            rows.chunks(per)
                .map(|chunk| Built::Insert(upsert(table, key, &columns, chunk, backend)))
                .collect()
        }
        Step::Delete { table, keys } => {
            let Some(first) = keys.first() else {
                return Vec::new();
            };
            let per = chunk_rows(first.0.len(), backend);
            keys.chunks(per)
                .map(|chunk| Built::Delete(delete(table, chunk, backend)))
                .collect()
        }
    }
}

fn chunk_rows(columns: usize, backend: DbBackend) -> usize {
    (max_params(backend) / columns.max(1)).clamp(1, MAX_ROWS)
}

fn upsert(
    table: &str,
    key: &[&str],
    columns: &[&str],
    rows: &[&Row],
    backend: DbBackend,
) -> InsertStatement {
    let mut q = Query::insert();
    q.into_table(Alias::new(table))
        .columns(columns.iter().map(|c| Alias::new(*c)));
    for row in rows {
        q.values_panic(
            row.values()
                .map(|v| SimpleExpr::Value(v.to_sea_for(backend))),
        );
    }
    let rest: Vec<Alias> = columns
        .iter()
        .filter(|c| !key.contains(c))
        .map(|c| Alias::new(*c))
        .collect();
    let mut on_conflict = OnConflict::columns(key.iter().map(|c| Alias::new(*c)));
    if rest.is_empty() {
        on_conflict.do_nothing_on(key.iter().map(|c| Alias::new(*c)));
    } else {
        on_conflict.update_columns(rest);
    }
    q.on_conflict(on_conflict);
    q
}

fn delete(table: &str, keys: &[&Row], backend: DbBackend) -> DeleteStatement {
    let mut q = Query::delete();
    q.from_table(Alias::new(table));
    let columns: Vec<&str> = keys[0].columns().collect();
    if columns.len() == 1 {
        let values = keys
            .iter()
            .filter_map(|k| k.values().next().map(|v| v.to_sea_for(backend)));
        q.and_where(Expr::col(Alias::new(columns[0])).is_in(values));
    } else {
        let tuple = Expr::tuple(columns.iter().map(|c| Expr::col(Alias::new(*c))));
        let values = keys
            .iter()
            .map(|k| ValueTuple::Many(k.values().map(|v| v.to_sea_for(backend)).collect()));
        q.and_where(tuple.in_tuples(values));
    }
    q
}

/// `WHERE` on each `(column, value)` of `row`.
fn matching(row: &Row, backend: DbBackend) -> Condition {
    row.0.iter().fold(Condition::all(), |all, (c, v)| {
        all.add(Expr::col(Alias::new(c.as_str())).eq(v.to_sea_for(backend)))
    })
}

/// `SELECT columns FROM table WHERE row's columns match`, locked where the engine can.
pub(crate) fn select_where(
    table: &str,
    columns: &[&str],
    by: &Row,
    limit: Option<u64>,
    backend: DbBackend,
) -> SelectStatement {
    let mut q = Query::select();
    q.columns(columns.iter().map(|c| Alias::new(*c)))
        .from(Alias::new(table))
        .cond_where(matching(by, backend));
    if let Some(n) = limit {
        q.limit(n);
    }
    // SQLite has no row locks: the batch's transaction holds the database's write lock.
    if backend != DbBackend::Sqlite {
        q.lock_exclusive();
    }
    q
}

/// `UPDATE table SET row WHERE key`.
pub(crate) fn update(table: &str, row: &Row, key: &Row, backend: DbBackend) -> UpdateStatement {
    let mut q = Query::update();
    q.table(Alias::new(table))
        .values(row.0.iter().map(|(c, v)| {
            (
                Alias::new(c.as_str()),
                SimpleExpr::Value(v.to_sea_for(backend)),
            )
        }))
        .cond_where(matching(key, backend));
    q
}

/// `INSERT INTO table (row's columns) VALUES (row)`, returning `returning` where the
/// engine can (not MySQL/MariaDB: read `last_insert_id` there).
pub(crate) fn insert(
    table: &str,
    row: &Row,
    returning: &[&str],
    backend: DbBackend,
) -> InsertStatement {
    let mut q = Query::insert();
    q.into_table(Alias::new(table))
        .columns(row.columns().map(Alias::new))
        .values_panic(
            row.values()
                .map(|v| SimpleExpr::Value(v.to_sea_for(backend))),
        );
    if backend != DbBackend::MySql {
        q.returning(Query::returning().columns(returning.iter().map(|c| Alias::new(*c))));
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;
    use sea_orm::sea_query::{MysqlQueryBuilder, PostgresQueryBuilder, SqliteQueryBuilder};

    fn row(id: i64, name: &str) -> Row {
        Row(vec![
            ("id".into(), Value::BigInt(Some(id))),
            ("name".into(), Value::String(Some(name.into()))),
        ])
    }

    #[test]
    fn upserts_quote_identifiers_and_bind_values() {
        let (a, b) = (row(1, "x'); DROP TABLE t; --"), row(2, "y"));
        let stmt = upsert(
            "order",
            &["id"],
            &["id", "name"],
            &[&a, &b],
            DbBackend::Postgres,
        );
        let (pg, values) = stmt.build(PostgresQueryBuilder);
        assert_eq!(
            pg,
            r#"INSERT INTO "order" ("id", "name") VALUES ($1, $2), ($3, $4) ON CONFLICT ("id") DO UPDATE SET "name" = "excluded"."name""#
        );
        assert_eq!(values.0.len(), 4);
        let (my, _) = stmt.build(MysqlQueryBuilder);
        assert!(my.starts_with(
            "INSERT INTO `order` (`id`, `name`) VALUES (?, ?), (?, ?) ON DUPLICATE KEY UPDATE"
        ));
        let (lite, _) = stmt.build(SqliteQueryBuilder);
        assert!(lite.contains(r#"ON CONFLICT ("id") DO UPDATE"#));
    }

    #[test]
    fn deletes_by_single_and_composite_keys() {
        let k1 = Row(vec![("id".into(), Value::BigInt(Some(1)))]);
        let (sql, _) = delete("t", &[&k1], DbBackend::Postgres).build(PostgresQueryBuilder);
        assert_eq!(sql, r#"DELETE FROM "t" WHERE "id" IN ($1)"#);
        let k2 = Row(vec![
            ("a".into(), Value::Int(Some(1))),
            ("b".into(), Value::String(Some("x".into()))),
        ]);
        let (sql, _) = delete("t", &[&k2, &k2], DbBackend::Sqlite).build(SqliteQueryBuilder);
        assert_eq!(
            sql,
            r#"DELETE FROM "t" WHERE ("a", "b") IN ((?, ?), (?, ?))"#
        );
        let (sql, _) = delete("t", &[&k2], DbBackend::MySql).build(MysqlQueryBuilder);
        assert_eq!(sql, "DELETE FROM `t` WHERE (`a`, `b`) IN ((?, ?))");
    }

    #[test]
    fn statements_fit_the_parameter_limit() {
        assert_eq!(chunk_rows(40, DbBackend::Sqlite), 819);
        assert_eq!(chunk_rows(100, DbBackend::Postgres), 655);
        assert_eq!(chunk_rows(2, DbBackend::MySql), MAX_ROWS);
    }
}
