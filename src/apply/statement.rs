//! The SQL of a step, built with sea-query for the destination's backend: identifiers
//! quoted, values bound, never formatted into the text.

use sea_orm::sea_query::{
    Alias, Condition, DeleteStatement, Expr, ExprTrait, InsertStatement, OnConflict, Query,
    SelectStatement, SimpleExpr, UpdateStatement, ValueTuple,
};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use std::collections::HashMap;

use super::pg_text::{on_conflict, quote};
use super::plan::Step;
use crate::change::Row;
use crate::error::Error;
use crate::value::Value;
use crate::value::fit::{self, Column};

/// Rows per statement at most (the parameter limit may allow fewer): more than a default
/// batch holds, so a batch of one table is one statement, and pays one round trip.
const MAX_ROWS: usize = 5000;

/// Bytes of values a statement carries at most, by estimate ([`Row::value_bytes`]), so that a
/// batch of wide rows goes as several statements: MySQL refuses a packet above
/// `max_allowed_packet` (4 MiB by default up to 5.7, 16 MiB in MariaDB), PostgreSQL a
/// message above 1 GiB. A single row bigger than this still goes, alone.
const MAX_BYTES: usize = 4 << 20;

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
            runs(rows, per)
                .into_iter()
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

/// Refuses `rows` of `table` when `backend` would store one of their values altered
/// ([`fit::refusal`]), judging each column by its declared type in `types` (column name to
/// type, as [`columns::of`](super::columns::of) reads them) where known.
///
/// # Errors
///
/// [`Error::Unrepresentable`] for the first such value, as a `DbErr::Custom`: a permanent
/// error, which the sink pins on its change.
pub(crate) fn check_rows(
    table: &str,
    rows: &[&Row],
    backend: DbBackend,
    types: Option<&HashMap<String, String>>,
) -> Result<(), DbErr> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let columns: Vec<Column> = first
        .columns()
        .map(|c| {
            types
                .and_then(|t| t.get(c))
                .map_or(Column::Other, |t| Column::parse(backend, t))
        })
        .collect();
    for row in rows {
        for ((name, value), column) in row.0.iter().zip(&columns) {
            if let Some(reason) = fit::refusal(value, backend, *column) {
                return Err(Error::Unrepresentable {
                    table: table.to_string(),
                    column: name.clone(),
                    reason,
                }
                .into());
            }
        }
    }
    Ok(())
}

/// Runs the statements of `step` on `db`, in order, after [`check_rows`] on an upsert's
/// rows.
///
/// On PostgreSQL, when the destination's column `types` are known, an upsert goes as few
/// big statements instead ([`pg_upserts`]).
pub(crate) async fn execute<C: ConnectionTrait>(
    db: &C,
    step: &Step<'_>,
    types: Option<&HashMap<String, String>>,
) -> Result<(), DbErr> {
    if let Step::Upsert { table, rows, .. } = step {
        check_rows(table, rows, db.get_database_backend(), types)?;
    }
    if db.get_database_backend() == DbBackend::Postgres
        && let Some(statements) = types.and_then(|types| pg_upserts(step, types))
    {
        for stmt in statements {
            db.execute_raw(stmt).await?;
        }
        return Ok(());
    }
    for built in build(step, db.get_database_backend()) {
        match built {
            Built::Insert(q) => db.execute(&q).await?,
            Built::Delete(q) => db.execute(&q).await?,
        };
    }
    Ok(())
}

/// A PostgreSQL upsert step as statements of up to [`MAX_ROWS`] rows and about
/// [`MAX_BYTES`] of values, each carrying its rows as one array per column
/// ([`unnest::upsert`](super::unnest::upsert)), or else as one JSON parameter
/// ([`upsert_json`]); `None` (bound `VALUES` then) for a step that is no upsert, a column
/// whose type is unknown, or a chunk neither can carry.
fn pg_upserts(step: &Step<'_>, types: &HashMap<String, String>) -> Option<Vec<Statement>> {
    let Step::Upsert { table, key, rows } = step else {
        return None;
    };
    let columns: Vec<&str> = rows.first()?.columns().collect();
    let typed = columns
        .iter()
        .map(|c| types.get(*c).map(String::as_str))
        .collect::<Option<Vec<&str>>>()?;
    // No parameter limit applies (one array per column), so only MAX_ROWS and MAX_BYTES.
    runs(rows, MAX_ROWS)
        .into_iter()
        .map(|chunk| {
            super::unnest::upsert(table, key, &columns, &typed, chunk)
                .or_else(|| upsert_json(table, key, &columns, &typed, chunk))
        })
        .collect()
}

/// `rows` cut into runs of at most `max_rows` rows and about [`MAX_BYTES`] of values each.
fn runs<'r, 'a>(rows: &'r [&'a Row], max_rows: usize) -> Vec<&'r [&'a Row]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let size = row.value_bytes();
        if i > start && (i - start >= max_rows || bytes + size > MAX_BYTES) {
            out.push(&rows[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
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

/// On PostgreSQL, the upsert of `rows` as one statement with a single parameter: the rows
/// as a JSON array, read back by `jsonb_to_recordset` as the destination's own column
/// `types`. A `VALUES` list binds one parameter per value, and parsing and binding ten
/// thousand parameters costs the server more than inserting the rows. `None` when a value
/// has no faithful JSON text: a JSON column holding the document `null`, which
/// `jsonb_to_recordset` reads as SQL NULL, or a NUL character.
pub(crate) fn upsert_json(
    table: &str,
    key: &[&str],
    columns: &[&str],
    types: &[&str],
    rows: &[&Row],
) -> Option<Statement> {
    let mut json = String::with_capacity(rows.len() * columns.len() * 16);
    json.push('[');
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push('{');
        for (j, (c, v)) in row.0.iter().enumerate() {
            if j > 0 {
                json.push(',');
            }
            push_json_string(&mut json, c);
            json.push(':');
            push_json_value(&mut json, v)?;
        }
        json.push('}');
    }
    json.push(']');
    let quoted: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    let list = quoted.join(", ");
    let typed: Vec<String> = quoted
        .iter()
        .zip(types)
        .map(|(c, t)| format!("{c} {t}"))
        .collect();
    let sql = format!(
        "INSERT INTO {} ({list}) SELECT {list} FROM jsonb_to_recordset($1::jsonb) AS x({}) {}",
        quote(table),
        typed.join(", "),
        on_conflict(key, columns),
    );
    Some(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        [json.into()],
    ))
}

fn push_json_string(out: &mut String, s: &str) {
    // serde_json escapes exactly as JSON needs; writing to a String cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// `v` as the JSON text PostgreSQL's input function of its type reads back exactly.
fn push_json_value(out: &mut String, v: &Value) -> Option<()> {
    use std::fmt::Write;
    if v.is_null() {
        out.push_str("null");
        return Some(());
    }
    let text = |out: &mut String, s: &str| -> Option<()> {
        if s.contains('\0') {
            return None;
        }
        push_json_string(out, s);
        Some(())
    };
    let float = |out: &mut String, f: f64| {
        if f.is_nan() {
            out.push_str("\"NaN\"");
        } else if f.is_infinite() {
            out.push_str(if f > 0.0 {
                "\"Infinity\""
            } else {
                "\"-Infinity\""
            });
        } else {
            let _ = write!(out, "{}", serde_json::Number::from_f64(f)?);
        }
        Some(())
    };
    match v {
        Value::Bool(Some(b)) => out.push_str(if *b { "true" } else { "false" }),
        Value::TinyInt(Some(n)) => {
            let _ = write!(out, "{n}");
        }
        Value::SmallInt(Some(n)) => {
            let _ = write!(out, "{n}");
        }
        Value::Int(Some(n)) => {
            let _ = write!(out, "{n}");
        }
        Value::BigInt(Some(n)) => {
            let _ = write!(out, "{n}");
        }
        Value::TinyUnsigned(Some(n)) => {
            let _ = write!(out, "{n}");
        }
        Value::SmallUnsigned(Some(n)) => {
            let _ = write!(out, "{n}");
        }
        Value::Unsigned(Some(n)) => {
            let _ = write!(out, "{n}");
        }
        Value::BigUnsigned(Some(n)) => {
            let _ = write!(out, "{n}");
        }
        Value::Float(Some(f)) => float(out, f64::from(*f))?,
        Value::Double(Some(f)) => float(out, *f)?,
        Value::String(Some(s)) => text(out, s)?,
        Value::Char(Some(c)) => text(out, &c.to_string())?,
        Value::Enum { value: Some(s), .. } => text(out, s)?,
        Value::Bytes(Some(b)) => {
            out.push_str("\"\\\\x");
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
            out.push('"');
        }
        Value::Json(Some(j)) => {
            // `jsonb_to_recordset` reads a field holding `null` as SQL NULL, whatever the
            // column's type: the document `null` cannot travel this way.
            if j.is_null() || j.to_string().contains("\\u0000") {
                return None;
            }
            out.push_str(&j.to_string());
        }
        Value::Date(Some(d)) => text(out, &d.to_string())?,
        Value::Time(Some(t)) => text(out, &t.format("%H:%M:%S%.6f").to_string())?,
        Value::DateTime(Some(t)) => text(out, &t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())?,
        Value::DateTimeUtc(Some(t)) => {
            text(out, &t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))?
        }
        Value::DateTimeLocal(Some(t)) => {
            text(out, &t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))?
        }
        Value::DateTimeWithTimeZone(Some(t)) => {
            text(out, &t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))?
        }
        Value::Uuid(Some(u)) => text(out, &u.to_string())?,
        Value::Decimal(Some(d)) => text(out, &d.to_string())?,
        Value::BigDecimal(Some(t)) => text(out, t)?,
        // `jsonb_to_recordset` reads a JSON array into an array column, each element by
        // its type's input function, as above.
        Value::Array {
            items: Some(items), ..
        } => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if matches!(item, Value::Json(Some(_))) {
                    // A JSON element would be taken as part of the array's structure.
                    return None;
                }
                push_json_value(out, item)?;
            }
            out.push(']');
        }
        _ => return None,
    }
    Some(())
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

/// `UPDATE table SET row WHERE key`, after [`check_rows`] on `row`.
pub(crate) fn update(
    table: &str,
    row: &Row,
    key: &Row,
    backend: DbBackend,
) -> Result<UpdateStatement, DbErr> {
    check_rows(table, &[row], backend, None)?;
    let mut q = Query::update();
    q.table(Alias::new(table))
        .values(row.0.iter().map(|(c, v)| {
            (
                Alias::new(c.as_str()),
                SimpleExpr::Value(v.to_sea_for(backend)),
            )
        }))
        .cond_where(matching(key, backend));
    Ok(q)
}

/// `INSERT INTO table (row's columns) VALUES (row)`, returning `returning` where the
/// engine can (not MySQL/MariaDB: read `last_insert_id` there), after [`check_rows`] on
/// `row`.
pub(crate) fn insert(
    table: &str,
    row: &Row,
    returning: &[&str],
    backend: DbBackend,
) -> Result<InsertStatement, DbErr> {
    check_rows(table, &[row], backend, None)?;
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
    Ok(q)
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
    fn json_upserts_carry_the_rows_as_one_parameter() {
        let mut a = row(1, "x\"y");
        a.0.push(("raw".into(), Value::Bytes(Some(vec![0, 255]))));
        a.0.push(("f".into(), Value::Double(Some(f64::NEG_INFINITY))));
        a.0.push((
            "at".into(),
            Value::DateTimeUtc(Some(chrono::DateTime::UNIX_EPOCH)),
        ));
        let stmt = upsert_json(
            "order",
            &["id"],
            &["id", "name", "raw", "f", "at"],
            &[
                "bigint",
                "text",
                "bytea",
                "double precision",
                "timestamp with time zone",
            ],
            &[&a],
        )
        .unwrap();
        assert_eq!(
            stmt.sql,
            r#"INSERT INTO "order" ("id", "name", "raw", "f", "at") SELECT "id", "name", "raw", "f", "at" FROM jsonb_to_recordset($1::jsonb) AS x("id" bigint, "name" text, "raw" bytea, "f" double precision, "at" timestamp with time zone) ON CONFLICT ("id") DO UPDATE SET "name" = EXCLUDED."name", "raw" = EXCLUDED."raw", "f" = EXCLUDED."f", "at" = EXCLUDED."at""#
        );
        let values = stmt.values.unwrap().0;
        assert_eq!(
            values,
            [sea_orm::Value::from(
                r#"[{"id":1,"name":"x\"y","raw":"\\x00ff","f":"-Infinity","at":"1970-01-01T00:00:00.000000Z"}]"#
            )]
        );
        let null_json = Row(vec![(
            "j".into(),
            Value::Json(Some(serde_json::Value::Null)),
        )]);
        assert!(upsert_json("t", &["j"], &["j"], &["jsonb"], &[&null_json]).is_none());
    }

    #[test]
    fn statements_fit_the_parameter_limit() {
        assert_eq!(chunk_rows(40, DbBackend::Sqlite), 819);
        assert_eq!(chunk_rows(100, DbBackend::Postgres), 655);
        assert_eq!(chunk_rows(2, DbBackend::MySql), MAX_ROWS);
    }

    #[test]
    fn wide_rows_go_as_several_statements_under_the_packet_limit() {
        let wide = "x".repeat(MAX_BYTES / 3);
        let rows: Vec<Row> = (0..10).map(|id| row(id, &wide)).collect();
        let refs: Vec<&Row> = rows.iter().collect();
        let step = Step::Upsert {
            table: "t",
            key: vec!["id"],
            rows: refs.clone(),
        };
        let built = build(&step, DbBackend::MySql);
        // Two wide rows fit in MAX_BYTES, a third does not: five statements, none over.
        assert_eq!(built.len(), 5);
        let split = runs(&refs, MAX_ROWS);
        assert_eq!(split.iter().map(|r| r.len()).sum::<usize>(), 10);
        for run in &split {
            assert!(run.iter().map(|r| r.value_bytes()).sum::<usize>() <= MAX_BYTES);
        }
        // A row bigger than the limit still goes, on its own.
        let huge = row(1, &"y".repeat(MAX_BYTES + 1));
        let small = row(2, "z");
        assert_eq!(runs(&[&small, &huge, &small], MAX_ROWS).len(), 3);
        // Narrow rows are cut by count alone.
        let narrow: Vec<Row> = (0..12).map(|id| row(id, "n")).collect();
        let narrow: Vec<&Row> = narrow.iter().collect();
        let lens: Vec<usize> = runs(&narrow, 5).iter().map(|r| r.len()).collect();
        assert_eq!(lens, [5, 5, 2]);
    }
}
