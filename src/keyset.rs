//! Reading a table in primary-key order, a chunk at a time (keyset pagination), from its
//! [`TableSpec`] alone: no Rust entity type, so verify, repair, snapshots and the command
//! line read any registered table the same way.
//!
//! A chunk is `SELECT <shipped columns> FROM <table> WHERE (key) > (last key) ORDER BY key
//! LIMIT n`, built with sea-query for the backend (identifiers quoted, values bound), and
//! each column is decoded by its type tag with [`Value::read`].

use sea_orm::sea_query::{
    Alias, Condition, Expr, ExprTrait, Order, Query, SelectStatement, ValueTuple,
};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, StreamTrait};

use crate::bounded_read::{self, ReadBudget};
use crate::change::Row;
use crate::entity::TableSpec;
use crate::error::{DbContext, Error, Result};
use crate::value::Value;

fn col(name: &str) -> Expr {
    Expr::col(Alias::new(name))
}

fn bind(v: &Value, backend: DbBackend) -> Expr {
    Expr::val(v.to_sea_for(backend))
}

/// Key column `name` (of type tag `tag`) of `table` as chunks order and compare it: the
/// `ORDER BY` of a chunk and the `WHERE` that starts the next one must agree on one order,
/// or rows are skipped.
///
/// - PostgreSQL: the column itself, qualified by its table, since a chunk's select list
///   names an enum's text cast after the column and an unqualified `ORDER BY` would sort
///   by that text while the `WHERE` compares enum values (in declaration order).
/// - MySQL/MariaDB: an `ENUM` column sorts by declaration but compares with a string as a
///   string, so both sides use its text (`CAST(… AS CHAR)`). That order has no index: each
///   chunk of an enum-keyed table sorts the table.
/// - Otherwise the column, whose order and comparisons agree.
fn key_expr(backend: DbBackend, table: &str, name: &str, tag: &str) -> Expr {
    match backend {
        DbBackend::Postgres => Expr::col((Alias::new(table), Alias::new(name))),
        DbBackend::MySql if tag.starts_with("en:") => col(name).cast_as(Alias::new("CHAR")),
        _ => col(name),
    }
}

/// Rows whose key (its columns with their type tags) is above `after`, in a form each
/// engine runs as an index range.
///
/// PostgreSQL and SQLite get a row-value comparison, `(a, b) > (?, ?)`. MariaDB scans the
/// whole index for that form, so it gets `a > ? OR (a = ? AND b > ?)`, which its range
/// optimizer turns into ranges of the key.
pub(crate) fn after_condition(
    backend: DbBackend,
    table: &str,
    key: &[(&str, &str)],
    after: &[Value],
) -> Condition {
    let expr = |(name, tag): &(&str, &str)| key_expr(backend, table, name, tag);
    if key.len() == 1 {
        return Condition::all().add(expr(&key[0]).gt(bind(&after[0], backend)));
    }
    if backend == DbBackend::MySql {
        let mut any = Condition::any();
        for i in 0..key.len() {
            let mut all = Condition::all();
            for j in 0..i {
                all = all.add(expr(&key[j]).eq(bind(&after[j], backend)));
            }
            all = all.add(expr(&key[i]).gt(bind(&after[i], backend)));
            any = any.add(all);
        }
        return any;
    }
    let lhs = Expr::tuple(key.iter().map(expr));
    let rhs = Expr::tuple(after.iter().map(|v| bind(v, backend)));
    Condition::all().add(lhs.gt(rhs))
}

/// Rows whose key is at or below `upto`: the negation of [`after_condition`].
pub(crate) fn up_to_condition(
    backend: DbBackend,
    table: &str,
    key: &[(&str, &str)],
    upto: &[Value],
) -> Condition {
    after_condition(backend, table, key, upto).not()
}

/// Rows whose key is one of `keys` (each in key order).
pub(crate) fn keys_condition(backend: DbBackend, key: &[String], keys: &[&[Value]]) -> Condition {
    if key.len() == 1 {
        let values: Vec<Expr> = keys.iter().map(|k| bind(&k[0], backend)).collect();
        return Condition::all().add(col(&key[0]).is_in(values));
    }
    let lhs = Expr::tuple(key.iter().map(|c| col(c)));
    let tuples = keys
        .iter()
        .map(|k| ValueTuple::Many(k.iter().map(|v| v.to_sea_for(backend)).collect()));
    Condition::all().add(lhs.in_tuples(tuples))
}

/// `SELECT` of `columns` (with their type tags) of `table`, in key order; PostgreSQL enum
/// columns are cast to text (and enum arrays to `text[]`), which is how [`Value::read`]
/// takes them.
pub(crate) fn select(
    backend: DbBackend,
    table: &str,
    columns: &[(&str, &str)],
    key: &[String],
) -> SelectStatement {
    let mut q = Query::select();
    for (name, tag) in columns {
        if backend == DbBackend::Postgres && tag.starts_with("en:") {
            q.expr_as(col(name).cast_as(Alias::new("text")), Alias::new(*name));
        } else if backend == DbBackend::Postgres && tag.starts_with("a:en:") {
            q.expr_as(col(name).cast_as(Alias::new("text[]")), Alias::new(*name));
        } else {
            q.column(Alias::new(*name));
        }
    }
    q.from(Alias::new(table));
    for k in key {
        let tag = columns
            .iter()
            .find(|(name, _)| name == k)
            .map_or("", |(_, tag)| *tag);
        q.order_by_expr(key_expr(backend, table, k, tag), Order::Asc);
    }
    q
}

/// The shipped columns of `spec` with their type tags.
pub(crate) fn typed_columns(spec: &TableSpec) -> Result<Vec<(&str, &str)>> {
    if spec.types.len() != spec.columns.len() {
        return Err(Error::Config(format!(
            "the description of `{}` has {} columns but {} column types",
            spec.table,
            spec.columns.len(),
            spec.types.len()
        )));
    }
    Ok(spec
        .columns
        .iter()
        .map(String::as_str)
        .zip(spec.types.iter().map(String::as_str))
        .collect())
}

/// The key columns of `spec` with their type tags.
pub(crate) fn typed_key(spec: &TableSpec) -> Result<Vec<(&str, &str)>> {
    let columns = typed_columns(spec)?;
    spec.key
        .iter()
        .map(|k| {
            columns
                .iter()
                .find(|(c, _)| c == k)
                .copied()
                .ok_or_else(|| {
                    Error::Config(format!(
                        "key column `{k}` of `{}` is not among its shipped columns",
                        spec.table
                    ))
                })
        })
        .collect()
}

/// The next `limit` rows of `spec`'s table after `after` (from the start when `None`), in
/// key order, every shipped column.
pub(crate) fn next_chunk(
    backend: DbBackend,
    spec: &TableSpec,
    after: Option<&[Value]>,
    limit: u64,
) -> Result<SelectStatement> {
    let mut q = select(backend, &spec.table, &typed_columns(spec)?, &spec.key);
    if let Some(after) = after {
        q.cond_where(after_condition(
            backend,
            &spec.table,
            &typed_key(spec)?,
            after,
        ));
    }
    q.limit(limit);
    Ok(q)
}

/// Reads the shipped columns of `spec`'s table from the rows of its chunk `SELECT`s.
///
/// Each column's type tag is resolved once, here, and columns are read by position: per
/// row and column, a tag costs a serde round trip and a name a lookup, which used to be
/// most of the time of reading a table.
pub(crate) struct Decoder {
    table: String,
    /// Each shipped column's name and the NULL of its type, in the order [`select`] puts
    /// them.
    columns: Vec<(String, Value)>,
    /// Where each key column sits among `columns`, in key order.
    key: Vec<usize>,
}

impl Decoder {
    /// The decoder of `spec`'s shipped columns.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the spec's types do not match its columns, a tag is unknown,
    /// or a key column is not shipped.
    pub(crate) fn new(spec: &TableSpec) -> Result<Decoder> {
        let columns = typed_columns(spec)?
            .into_iter()
            .map(|(name, tag)| {
                Value::null_for_tag(tag)
                    .map(|null| (name.to_string(), null))
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "column `{name}` of `{}` has an unknown type tag `{tag}`",
                            spec.table
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let key = spec
            .key
            .iter()
            .map(|k| {
                columns.iter().position(|(c, _)| c == k).ok_or_else(|| {
                    Error::Config(format!(
                        "key column `{k}` of `{}` is not among its shipped columns",
                        spec.table
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Decoder {
            table: spec.table.clone(),
            columns,
            key,
        })
    }

    /// The shipped columns' values of a result row, in column order.
    ///
    /// # Errors
    ///
    /// [`Error::Read`] when a column does not decode as its type.
    pub(crate) fn values(&self, res: &QueryResult) -> Result<Vec<Value>> {
        let mut values = Vec::with_capacity(self.columns.len());
        self.values_into(res, &mut values)?;
        Ok(values)
    }

    /// [`values`](Self::values) into `out`, which is cleared first: a reader of many rows
    /// reuses one vector.
    ///
    /// # Errors
    ///
    /// As for [`values`](Self::values).
    pub(crate) fn values_into(&self, res: &QueryResult, out: &mut Vec<Value>) -> Result<()> {
        out.clear();
        for (i, (name, null)) in self.columns.iter().enumerate() {
            let v = Value::read_as(res, i, name, null).map_err(|reason| Error::Read {
                table: self.table.clone(),
                reason: format!("{reason}, in {}", self.which_row(res)),
            })?;
            out.push(v);
        }
        Ok(())
    }

    /// The row of `res` named by its key, for an error about one of its other columns.
    fn which_row(&self, res: &QueryResult) -> String {
        let mut key = Vec::with_capacity(self.key.len());
        for &i in &self.key {
            let (name, null) = &self.columns[i];
            match Value::read_as(res, i, name, null) {
                Ok(v) => key.push((name.clone(), v)),
                Err(_) => return "a row whose key does not decode either".into(),
            }
        }
        format!("the row keyed {}", Row(key).to_json())
    }

    /// The shipped columns of a result row, with their names.
    ///
    /// # Errors
    ///
    /// As for [`values`](Self::values).
    pub(crate) fn row(&self, res: &QueryResult) -> Result<Row> {
        let values = self.values(res)?;
        Ok(Row(self
            .columns
            .iter()
            .map(|(name, _)| name.clone())
            .zip(values)
            .collect()))
    }

    /// The key of a row's `values` (as [`values`](Self::values) returns them), in key
    /// order.
    pub(crate) fn key_of<'v>(&self, values: &'v [Value]) -> impl Iterator<Item = &'v Value> {
        self.key.iter().filter_map(|&i| values.get(i))
    }
}

/// The key of `row` (a row of `spec`'s table), in key order.
pub(crate) fn key_of(spec: &TableSpec, row: &Row) -> Result<Vec<Value>> {
    spec.key
        .iter()
        .map(|k| {
            row.get(k).cloned().ok_or_else(|| Error::Read {
                table: spec.table.clone(),
                reason: format!("the row lacks its key column `{k}`"),
            })
        })
        .collect()
}

/// Reads the next chunk of rows of `spec`'s table at `db` after `after`, as many as
/// `budget` allows; and whether more may follow.
///
/// # Errors
///
/// [`Error::Db`] when the query fails; [`Error::Read`] when a column does not decode.
pub(crate) async fn read_chunk<C: ConnectionTrait + StreamTrait>(
    db: &C,
    spec: &TableSpec,
    after: Option<&[Value]>,
    budget: &mut ReadBudget,
) -> Result<(Vec<Row>, bool)> {
    let backend = ConnectionTrait::get_database_backend(db);
    let limit = budget.rows();
    let q = backend.build(&next_chunk(backend, spec, after, limit)?);
    let decoder = Decoder::new(spec)?;
    bounded_read::read(
        db,
        q,
        limit,
        budget,
        || format!("reading `{}`", spec.table),
        |r| {
            let row = decoder.row(r)?;
            let size = row.value_bytes();
            Ok((row, size))
        },
    )
    .await
}

/// The keys of the rows of `spec`'s table at `db` above `after` (from the start when
/// `None`) and at or below `upto` (to the end when `None`), in key order.
///
/// # Errors
///
/// [`Error::Db`] when the query fails; [`Error::Read`] when a key does not decode.
pub(crate) async fn read_keys<C: ConnectionTrait>(
    db: &C,
    spec: &TableSpec,
    after: Option<&[Value]>,
    upto: Option<&[Value]>,
) -> Result<Vec<Vec<Value>>> {
    let backend = db.get_database_backend();
    let key = typed_key(spec)?;
    let mut q = select(backend, &spec.table, &key, &spec.key);
    if let Some(after) = after {
        q.cond_where(after_condition(backend, &spec.table, &key, after));
    }
    if let Some(upto) = upto {
        q.cond_where(up_to_condition(backend, &spec.table, &key, upto));
    }
    let rows = db
        .query_all(&q)
        .await
        .context(|| format!("reading the keys of `{}`", spec.table))?;
    rows.iter()
        .map(|r| {
            key.iter()
                .map(|(name, tag)| {
                    Value::read(r, name, tag).map_err(|reason| Error::Read {
                        table: spec.table.clone(),
                        reason,
                    })
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::sea_query::{MysqlQueryBuilder, PostgresQueryBuilder};

    fn spec() -> TableSpec {
        TableSpec {
            table: "line_items".into(),
            key: vec!["order_id".into(), "line_no".into()],
            columns: vec!["order_id".into(), "line_no".into(), "mood".into()],
            types: vec!["i8".into(), "i4".into(), "en:mood".into()],
            sync_key: None,
            references: Vec::new(),
        }
    }

    #[test]
    fn chunks_use_a_row_value_range_or_mysqls_expanded_form() {
        let after = [Value::BigInt(Some(7)), Value::Int(Some(2))];
        let (pg, _) = next_chunk(DbBackend::Postgres, &spec(), Some(&after), 100)
            .unwrap()
            .build(PostgresQueryBuilder);
        assert_eq!(
            pg,
            r#"SELECT "order_id", "line_no", CAST("mood" AS text) AS "mood" FROM "line_items" WHERE ("line_items"."order_id", "line_items"."line_no") > ($1, $2) ORDER BY "line_items"."order_id" ASC, "line_items"."line_no" ASC LIMIT $3"#
        );
        let (my, _) = next_chunk(DbBackend::MySql, &spec(), Some(&after), 100)
            .unwrap()
            .build(MysqlQueryBuilder);
        assert_eq!(
            my,
            "SELECT `order_id`, `line_no`, `mood` FROM `line_items` WHERE `order_id` > ? OR (`order_id` = ? AND `line_no` > ?) ORDER BY `order_id` ASC, `line_no` ASC LIMIT ?"
        );
    }

    /// An enum in the key: PostgreSQL orders and compares the enum itself (not the text
    /// the select list casts it to); MariaDB, whose `ENUM` sorts by declaration but
    /// compares with a string as a string, orders and compares its text.
    #[test]
    fn an_enum_key_is_ordered_as_it_is_compared() {
        let mut s = spec();
        s.key = vec!["mood".into(), "line_no".into()];
        let after = [
            Value::Enum {
                type_name: "mood".into(),
                value: Some("sad".into()),
            },
            Value::Int(Some(2)),
        ];
        let (pg, _) = next_chunk(DbBackend::Postgres, &s, Some(&after), 100)
            .unwrap()
            .build(PostgresQueryBuilder);
        assert_eq!(
            pg,
            r#"SELECT "order_id", "line_no", CAST("mood" AS text) AS "mood" FROM "line_items" WHERE ("line_items"."mood", "line_items"."line_no") > ($1::"mood", $2) ORDER BY "line_items"."mood" ASC, "line_items"."line_no" ASC LIMIT $3"#
        );
        let (my, _) = next_chunk(DbBackend::MySql, &s, Some(&after), 100)
            .unwrap()
            .build(MysqlQueryBuilder);
        assert_eq!(
            my,
            "SELECT `order_id`, `line_no`, `mood` FROM `line_items` WHERE CAST(`mood` AS CHAR) > ? OR (CAST(`mood` AS CHAR) = ? AND `line_no` > ?) ORDER BY CAST(`mood` AS CHAR) ASC, `line_no` ASC LIMIT ?"
        );
    }

    #[test]
    fn a_spec_without_types_is_refused() {
        let mut s = spec();
        s.types.pop();
        assert!(matches!(typed_columns(&s), Err(Error::Config(_))));
        let mut s = spec();
        s.key = vec!["nope".into()];
        assert!(matches!(typed_key(&s), Err(Error::Config(_))));
    }
}
