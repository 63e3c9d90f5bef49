//! Whether a side sorts a table's primary key in byte order, from its catalog.
//!
//! The merge compares keys as [`canonical::cmp_keys`](crate::value::canonical) does:
//! numbers, timestamps and UUIDs by value, text and enum labels by their bytes. A key
//! column whose native order is another (text under a linguistic or case-insensitive
//! collation, a native enum in declaration order) cannot be read by keyset pagination in
//! that order, since `WHERE key > ?` compares by the collation too; such a side is read
//! instead in one statement sorted by an expression that orders by bytes ([`order_by`]).
//!
//! The catalog is a guide, not a proof: the reader still checks every key it reads is
//! above the one before, so a collation taken for byte order that is not quite (a `_bin`
//! collation that pads with spaces) is refused rather than mis-merged.

use sea_orm::sea_query::{Alias, Expr, ExprTrait};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement};

use crate::entity::TableSpec;
use crate::error::{DbContext, Result};

/// How one key column sorts at a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ColumnOrder {
    /// As the merge compares: by value, or by bytes for text and binary.
    Bytes,
    /// Text under a collation that does not sort by bytes (named).
    Collation(String),
    /// A native enum (or MariaDB `SET`), sorted by declaration.
    Enum,
    /// A type whose own order is neither (MariaDB `UUID`, PostgreSQL `citext`).
    Type(String),
}

impl ColumnOrder {
    fn why(&self) -> Option<String> {
        match self {
            ColumnOrder::Bytes => None,
            ColumnOrder::Collation(c) => Some(format!("collation `{c}`")),
            ColumnOrder::Enum => Some("a native enum, in declaration order".into()),
            ColumnOrder::Type(t) => Some(format!("type `{t}`")),
        }
    }
}

/// How each key column of a table sorts at one database, in key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyOrder(pub(crate) Vec<(String, ColumnOrder)>);

impl KeyOrder {
    /// Whether the whole key sorts as the merge compares.
    pub(crate) fn is_bytes(&self) -> bool {
        self.0.iter().all(|(_, o)| *o == ColumnOrder::Bytes)
    }

    /// What sorts otherwise, for a log line or an error: "`name` (collation `x`)".
    pub(crate) fn describe(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .filter_map(|(c, o)| o.why().map(|w| format!("`{c}` ({w})")))
            .collect();
        if parts.is_empty() {
            "byte order".into()
        } else {
            parts.join(", ")
        }
    }
}

/// How `spec`'s key columns sort at `db`, read from its catalog.
///
/// A column the catalog does not list (the table is missing there) counts as
/// [`ColumnOrder::Bytes`]: reading the table then fails with the error that says so.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when the catalog cannot be read.
pub(crate) async fn key_order<C: ConnectionTrait>(db: &C, spec: &TableSpec) -> Result<KeyOrder> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::MySql => MYSQL,
        DbBackend::Postgres => POSTGRES,
        _ => SQLITE,
    };
    let what = || format!("reading how `{}` sorts its key", spec.table);
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [spec.table.as_str().into()],
        ))
        .await
        .context(what)?;
    let mut listed = Vec::with_capacity(rows.len());
    for row in &rows {
        listed.push(classify(backend, row).context(what)?);
    }
    Ok(KeyOrder(
        spec.key
            .iter()
            .map(|k| {
                let order = listed
                    .iter()
                    .find(|(name, _)| name == k)
                    .map_or(ColumnOrder::Bytes, |(_, o)| o.clone());
                (k.clone(), order)
            })
            .collect(),
    ))
}

const MYSQL: &str = "SELECT CAST(COLUMN_NAME AS CHAR) AS name, CAST(DATA_TYPE AS CHAR) AS data_type, \
     CAST(COLLATION_NAME AS CHAR) AS collation FROM information_schema.COLUMNS \
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?";

/// A column's type (a domain's base type), and for text its collation's provider and
/// locale: a column's own collation, or for `default` the database's.
const POSTGRES: &str = "WITH d AS (SELECT datcollate::text AS dcollate, \
       to_jsonb(pg_database) ->> 'datlocprovider' AS provider, \
       COALESCE(to_jsonb(pg_database) ->> 'datlocale', \
                to_jsonb(pg_database) ->> 'daticulocale') AS locale \
     FROM pg_database WHERE datname = current_database()) \
     SELECT a.attname::text AS name, \
       (CASE WHEN t.typtype = 'd' THEN b.typtype ELSE t.typtype END)::text AS typtype, \
       (CASE WHEN t.typtype = 'd' THEN b.typname ELSE t.typname END)::text AS typname, \
       c.collname::text AS collname, \
       (CASE WHEN c.collprovider = 'd' THEN COALESCE(d.provider, 'c') \
             ELSE c.collprovider::text END) AS provider, \
       (CASE WHEN c.collprovider = 'd' THEN \
               (CASE WHEN COALESCE(d.provider, 'c') = 'c' THEN d.dcollate \
                     ELSE COALESCE(d.locale, d.dcollate) END) \
             WHEN c.collprovider = 'c' THEN c.collcollate::text \
             ELSE COALESCE(to_jsonb(c) ->> 'colllocale', to_jsonb(c) ->> 'colliculocale', \
                           c.collcollate::text) END) AS locale \
     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
     LEFT JOIN pg_type b ON b.oid = t.typbasetype \
     LEFT JOIN pg_collation c ON c.oid = a.attcollation AND a.attcollation <> 0 \
     CROSS JOIN d \
     WHERE a.attrelid = to_regclass(quote_ident($1)) AND a.attnum > 0 AND NOT a.attisdropped";

/// The collation of each column of the primary key's index; a rowid table keyed by its
/// `INTEGER PRIMARY KEY` has no such index, and no text to sort.
const SQLITE: &str = "SELECT x.name AS name, x.coll AS coll \
     FROM pragma_index_list(?) AS l JOIN pragma_index_xinfo(l.name) AS x \
     WHERE l.origin = 'pk' AND x.key = 1 AND x.name IS NOT NULL";

fn classify(
    backend: DbBackend,
    row: &QueryResult,
) -> std::result::Result<(String, ColumnOrder), sea_orm::DbErr> {
    let text = |c: &str| row.try_get::<Option<String>>("", c);
    let name = row.try_get::<String>("", "name")?;
    let order = match backend {
        DbBackend::MySql => mysql(
            &text("data_type")?.unwrap_or_default(),
            text("collation")?.as_deref(),
        ),
        DbBackend::Postgres => postgres(&PgColumn {
            typtype: &text("typtype")?.unwrap_or_default(),
            typname: &text("typname")?.unwrap_or_default(),
            collname: text("collname")?.as_deref(),
            provider: text("provider")?.as_deref(),
            locale: text("locale")?.as_deref(),
        }),
        _ => sqlite(text("coll")?.as_deref()),
    };
    Ok((name, order))
}

/// A MariaDB/MySQL column by its `DATA_TYPE` and `COLLATION_NAME`.
fn mysql(data_type: &str, collation: Option<&str>) -> ColumnOrder {
    let data_type = data_type.to_ascii_lowercase();
    match data_type.as_str() {
        "enum" | "set" => return ColumnOrder::Enum,
        // Stored (and sorted) with its time fields first, not as its bytes.
        "uuid" => return ColumnOrder::Type(data_type),
        _ => {}
    }
    match collation {
        Some(c) if !(c.ends_with("_bin") || c.eq_ignore_ascii_case("binary")) => {
            ColumnOrder::Collation(c.to_string())
        }
        _ => ColumnOrder::Bytes,
    }
}

/// What the PostgreSQL catalog says of a column.
struct PgColumn<'a> {
    /// `pg_type.typtype` of the column's type, or of a domain's base type.
    typtype: &'a str,
    typname: &'a str,
    /// The column's collation; `None` for a type that has none.
    collname: Option<&'a str>,
    /// `c` (libc), `i` (ICU) or `b` (builtin): the collation's, or the database's for
    /// `default`.
    provider: Option<&'a str>,
    locale: Option<&'a str>,
}

fn postgres(c: &PgColumn<'_>) -> ColumnOrder {
    if c.typtype == "e" {
        return ColumnOrder::Enum;
    }
    // Compares lower-cased whatever its collation.
    if c.typname == "citext" {
        return ColumnOrder::Type(c.typname.to_string());
    }
    let Some(collname) = c.collname else {
        return ColumnOrder::Bytes;
    };
    let locale = c.locale.unwrap_or_default();
    let bytes = match c.provider.unwrap_or("c") {
        "c" | "b" => matches!(locale, "C" | "POSIX" | "C.UTF-8" | "C.utf8"),
        _ => false,
    };
    if bytes {
        ColumnOrder::Bytes
    } else if collname == "default" {
        ColumnOrder::Collation(format!("default ({locale})"))
    } else {
        ColumnOrder::Collation(collname.to_string())
    }
}

/// A SQLite key column by its index's collation.
fn sqlite(coll: Option<&str>) -> ColumnOrder {
    match coll {
        Some(c) if !c.eq_ignore_ascii_case("BINARY") => ColumnOrder::Collation(c.to_string()),
        _ => ColumnOrder::Bytes,
    }
}

/// The `ORDER BY` expression that sorts key column `name` by bytes at `backend`, given how
/// it sorts natively: the column itself when that is byte order already.
///
/// MariaDB: `CAST(col AS BINARY)`, the exact bytes with no padding (an enum's label).
/// PostgreSQL: `col COLLATE "C"`, through `text` for an enum or `citext`. SQLite:
/// `col COLLATE BINARY`.
pub(crate) fn order_by(backend: DbBackend, name: &str, order: &ColumnOrder) -> Expr {
    let col = Expr::col(Alias::new(name));
    match (backend, order) {
        (_, ColumnOrder::Bytes) => col,
        (DbBackend::MySql, _) => col.cast_as(Alias::new("BINARY")),
        (DbBackend::Postgres, ColumnOrder::Collation(_)) => {
            Expr::cust_with_expr(r#"$1 COLLATE "C""#, col)
        }
        (DbBackend::Postgres, _) => {
            Expr::cust_with_expr(r#"$1 COLLATE "C""#, col.cast_as(Alias::new("text")))
        }
        // sea-query's placeholder for the expression is `?` here, `$1` for PostgreSQL.
        _ => Expr::cust_with_expr("? COLLATE BINARY", col),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::sea_query::{MysqlQueryBuilder, PostgresQueryBuilder, Query, SqliteQueryBuilder};

    #[test]
    fn mariadb_binary_collations_and_non_text_sort_by_bytes() {
        assert_eq!(mysql("bigint", None), ColumnOrder::Bytes);
        assert_eq!(mysql("varbinary", None), ColumnOrder::Bytes);
        assert_eq!(mysql("varchar", Some("utf8mb4_bin")), ColumnOrder::Bytes);
        assert_eq!(
            mysql("varchar", Some("utf8mb4_nopad_bin")),
            ColumnOrder::Bytes
        );
        assert_eq!(
            mysql("varchar", Some("utf8mb4_general_ci")),
            ColumnOrder::Collation("utf8mb4_general_ci".into())
        );
        assert_eq!(
            mysql("char", Some("utf8mb4_uca1400_ai_ci")),
            ColumnOrder::Collation("utf8mb4_uca1400_ai_ci".into())
        );
        assert_eq!(mysql("ENUM", Some("utf8mb4_bin")), ColumnOrder::Enum);
        assert_eq!(mysql("set", Some("latin1_swedish_ci")), ColumnOrder::Enum);
        assert_eq!(mysql("uuid", None), ColumnOrder::Type("uuid".into()));
    }

    fn pg(
        typtype: &str,
        typname: &str,
        coll: Option<&str>,
        provider: &str,
        locale: &str,
    ) -> ColumnOrder {
        postgres(&PgColumn {
            typtype,
            typname,
            collname: coll,
            provider: Some(provider),
            locale: Some(locale),
        })
    }

    #[test]
    fn postgres_c_locales_sort_by_bytes_others_do_not() {
        assert_eq!(pg("b", "int8", None, "c", ""), ColumnOrder::Bytes);
        assert_eq!(pg("b", "uuid", None, "c", ""), ColumnOrder::Bytes);
        assert_eq!(
            pg("b", "text", Some("default"), "c", "C.UTF-8"),
            ColumnOrder::Bytes
        );
        assert_eq!(pg("b", "text", Some("C"), "c", "C"), ColumnOrder::Bytes);
        assert_eq!(
            pg("b", "text", Some("ucs_basic"), "c", "C"),
            ColumnOrder::Bytes
        );
        assert_eq!(
            pg("b", "text", Some("pg_c_utf8"), "b", "C.UTF-8"),
            ColumnOrder::Bytes
        );
        assert_eq!(
            pg("b", "text", Some("default"), "c", "en_US.UTF-8"),
            ColumnOrder::Collation("default (en_US.UTF-8)".into())
        );
        assert_eq!(
            pg("b", "varchar", Some("und-x-icu"), "i", "und"),
            ColumnOrder::Collation("und-x-icu".into())
        );
        // An ICU locale named like C is still ICU's order.
        assert!(matches!(
            pg("b", "text", Some("x"), "i", "C"),
            ColumnOrder::Collation(_)
        ));
        assert_eq!(pg("e", "mood", None, "c", ""), ColumnOrder::Enum);
        assert_eq!(
            pg("b", "citext", Some("default"), "c", "C"),
            ColumnOrder::Type("citext".into())
        );
    }

    #[test]
    fn sqlite_binary_is_byte_order() {
        assert_eq!(sqlite(None), ColumnOrder::Bytes);
        assert_eq!(sqlite(Some("BINARY")), ColumnOrder::Bytes);
        assert_eq!(
            sqlite(Some("NOCASE")),
            ColumnOrder::Collation("NOCASE".into())
        );
    }

    #[test]
    fn order_by_expressions_quote_the_column() {
        let sql = |backend: DbBackend, order: ColumnOrder| {
            let mut q = Query::select();
            q.column(Alias::new("k")).from(Alias::new("t"));
            q.order_by_expr(
                order_by(backend, "we\"ird`k", &order),
                sea_orm::sea_query::Order::Asc,
            );
            match backend {
                DbBackend::MySql => q.to_string(MysqlQueryBuilder),
                DbBackend::Postgres => q.to_string(PostgresQueryBuilder),
                _ => q.to_string(SqliteQueryBuilder),
            }
        };
        let ci = || ColumnOrder::Collation("x".into());
        assert_eq!(
            sql(DbBackend::MySql, ci()),
            "SELECT `k` FROM `t` ORDER BY CAST(`we\"ird``k` AS BINARY) ASC"
        );
        assert_eq!(
            sql(DbBackend::Postgres, ci()),
            r#"SELECT "k" FROM "t" ORDER BY "we""ird`k" COLLATE "C" ASC"#
        );
        assert_eq!(
            sql(DbBackend::Postgres, ColumnOrder::Enum),
            r#"SELECT "k" FROM "t" ORDER BY CAST("we""ird`k" AS text) COLLATE "C" ASC"#
        );
        assert_eq!(
            sql(DbBackend::Sqlite, ci()),
            r#"SELECT "k" FROM "t" ORDER BY "we""ird`k" COLLATE BINARY ASC"#
        );
        assert_eq!(
            sql(DbBackend::MySql, ColumnOrder::Bytes),
            "SELECT `k` FROM `t` ORDER BY `we\"ird``k` ASC"
        );
    }

    #[test]
    fn a_key_is_bytes_only_when_every_column_is() {
        let k = KeyOrder(vec![
            ("a".into(), ColumnOrder::Bytes),
            ("b".into(), ColumnOrder::Enum),
        ]);
        assert!(!k.is_bytes());
        assert_eq!(k.describe(), "`b` (a native enum, in declaration order)");
        assert!(KeyOrder(vec![("a".into(), ColumnOrder::Bytes)]).is_bytes());
    }
}
