//! What creating or growing an entity's table takes at a destination, built from the
//! Rust type while it is at hand: the `CREATE TABLE` of `create_tables`, and the
//! definition of one column that `evolve_schema` adds to a table that exists.

use sea_orm::sea_query::{
    ColumnType, Index, MysqlQueryBuilder, PostgresQueryBuilder, SqliteQueryBuilder, StringLen,
    Table, TableBuilder, TableCreateStatement,
};
use sea_orm::{
    ColumnTrait, DbBackend, EntityTrait, IdenStatic, Iterable, PrimaryKeyToColumn, RelationTrait,
    Schema, Statement,
};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Replicated;

/// What creating one entity's table takes, registered by
/// [`ReplicatorBuilder::entity`](crate::ReplicatorBuilder::entity) while the Rust type is
/// at hand.
#[derive(Clone, Debug)]
pub(crate) struct TableDef {
    /// Every column of the entity, skipped ones included: what a created table holds.
    pub(crate) columns: Vec<String>,
    /// The statements that create the table (and its enum types and indexes) on a backend,
    /// with text key columns under the given byte-order collation (MySQL/MariaDB only).
    pub(crate) create: fn(DbBackend, &str) -> Vec<Statement>,
    /// How a created table defines the named column on a backend; `None` for a name the
    /// entity does not have.
    pub(crate) column: fn(DbBackend, &str) -> Option<NewColumn>,
}

impl TableDef {
    pub(crate) fn of<E: Replicated>() -> TableDef {
        TableDef {
            columns: E::Column::iter().map(|c| c.as_str().to_string()).collect(),
            create: create_statements::<E>,
            column: new_column::<E>,
        }
    }
}

/// sea-orm's `CREATE TABLE` for `E` on `backend`, with its foreign keys, preceded by its
/// PostgreSQL enum types and followed by its indexes. On MySQL/MariaDB, text columns of a
/// key, an index or a foreign key get `key_collation` (see `apply::byte_collation`).
fn create_statements<E: EntityTrait>(backend: DbBackend, key_collation: &str) -> Vec<Statement> {
    let schema = Schema::new(backend);
    let mut out: Vec<Statement> = schema
        .create_enum_from_entity(E::default())
        .iter()
        .map(|t| backend.build(t))
        .collect();
    let table = if backend != DbBackend::Postgres
        && E::Column::iter().any(|c| matches!(c.def().get_column_type(), ColumnType::Array(_)))
    {
        table_with_json_arrays::<E>(&schema)
    } else {
        schema.create_table_from_entity(E::default())
    };
    let indexes = schema.create_index_from_entity(E::default());
    let mut create = backend.build(&table);
    if backend == DbBackend::MySql {
        // Columns a key, an index or a foreign key uses keep a type MySQL can index.
        let keyed: Vec<String> = table
            .get_indexes()
            .iter()
            .chain(&indexes)
            .flat_map(|i| i.get_index_spec().get_column_names())
            .chain(
                table
                    .get_foreign_key_create_stmts()
                    .iter()
                    .flat_map(|f| f.get_foreign_key().get_columns()),
            )
            .collect();
        for column in table.get_columns() {
            let name = column.get_column_name();
            let spec = column.get_column_spec();
            let free = !spec.primary_key && !spec.unique && !keyed.contains(&name);
            let quoted = format!("`{}`", name.replace('`', "``"));
            if let Some((from, to)) = column
                .get_column_type()
                .and_then(|ty| mysql_faithful(ty, free))
            {
                create.sql = retype(&create.sql, &quoted, from, to);
            } else if !free && let Some(from) = column.get_column_type().and_then(mysql_text_key) {
                let to = format!("{from} COLLATE {key_collation}");
                create.sql = retype(&create.sql, &quoted, &from, &to);
            }
        }
    }
    out.push(create);
    out.extend(indexes.iter().map(|i| backend.build(i)));
    out
}

/// sea-orm's `CREATE TABLE` for `E`, but with each array column (`Vec<T>`) of JSON type:
/// MySQL and SQLite have no arrays (sea-query panics on writing one for them), and an
/// array travels to them as a JSON array (see [`Value::to_sea_for`](crate::value::Value::to_sea_for)).
/// Built as sea-orm builds it, from its own column definitions.
fn table_with_json_arrays<E: EntityTrait>(schema: &Schema) -> TableCreateStatement {
    let entity = E::default();
    let mut stmt = TableCreateStatement::new();
    if let Some(comment) = entity.comment() {
        stmt.comment(comment);
    }
    for column in E::Column::iter() {
        let mut def = schema.get_column_def::<E>(column);
        if matches!(column.def().get_column_type(), ColumnType::Array(_)) {
            def.json();
        }
        stmt.col(&mut def);
    }
    if E::PrimaryKey::iter().count() > 1 {
        let mut pk = Index::create();
        for key in E::PrimaryKey::iter() {
            pk.col(key);
        }
        stmt.primary_key(pk.name(format!("pk-{}", entity.to_string())).primary());
    }
    for relation in E::Relation::iter() {
        let relation = relation.def();
        if relation.is_owner || relation.skip_fk {
            continue;
        }
        stmt.foreign_key(&mut relation.into());
    }
    stmt.table(entity.table_ref()).take()
}

/// The MySQL/MariaDB type sea-query writes for `ty` and the one a created table gets
/// instead, where sea-orm's would alter values or refuse them:
///
/// - `DATETIME`, `TIME` and `TIMESTAMP` keep whole seconds unless declared with fractional
///   digits; `TIMESTAMP` ends on 2038-01-19 (and MariaDB may give a table's first one an
///   `ON UPDATE CURRENT_TIMESTAMP`). Zoned timestamps are written as UTC wall time at
///   MySQL (see [`Value::to_sea_for`](crate::value::Value::to_sea_for)), so `DATETIME(6)`
///   holds them over its whole range.
/// - `DECIMAL` without precision is `DECIMAL(10,0)`; `DECIMAL(65,30)` holds every
///   `rust_decimal` value.
/// - A `String` or `Vec<u8>` without a length is `VARCHAR(255)` or `VARBINARY(255)`, which
///   refuse longer values: a `free` column (in no key, index or foreign key) is
///   `LONGTEXT` or `LONGBLOB`, which hold what the field can.
fn mysql_faithful(ty: &ColumnType, free: bool) -> Option<(&'static str, &'static str)> {
    Some(match ty {
        ColumnType::DateTime => ("datetime", "datetime(6)"),
        ColumnType::Timestamp | ColumnType::TimestampWithTimeZone => ("timestamp", "datetime(6)"),
        ColumnType::Time => ("time", "time(6)"),
        ColumnType::Decimal(None) => ("decimal", "decimal(65, 30)"),
        ColumnType::String(StringLen::None) if free => ("varchar(255)", "longtext"),
        ColumnType::VarBinary(StringLen::None) if free => ("varbinary(255)", "longblob"),
        _ => return None,
    })
}

/// The MySQL/MariaDB type sea-query writes for `ty` when it is a text type a key can
/// hold.
///
/// Such a column takes the database's default collation, which on most servers ignores
/// case and accents (`utf8mb4_general_ci`, `uca1400_ai_ci`): keys the source holds as two
/// rows (`Rust` and `rust`) would be one row there, and an upsert of one silently
/// overwrite the other. So a created table's text key columns compare bytes.
fn mysql_text_key(ty: &ColumnType) -> Option<String> {
    Some(match ty {
        ColumnType::String(StringLen::N(n)) => format!("varchar({n})"),
        ColumnType::String(StringLen::None) => "varchar(255)".to_string(),
        ColumnType::Char(Some(n)) => format!("char({n})"),
        _ => return None,
    })
}

/// `sql` with the type `from` of the column quoted as `name` replaced by `to`: the column
/// definition `name from` followed by a space, a comma or a parenthesis.
fn retype(sql: &str, name: &str, from: &str, to: &str) -> String {
    let def = format!("{name} {from}");
    let mut at = 0;
    while let Some(found) = sql[at..].find(&def) {
        let start = at + found;
        let end = start + def.len();
        if matches!(sql[end..].chars().next(), Some(' ' | ',' | ')') | None) {
            return format!("{}{name} {to}{}", &sql[..start], &sql[end..]);
        }
        at = end;
    }
    sql.to_string()
}

impl TableDef {
    /// How a created table defines each of `columns` on each of `backends`: what the
    /// replicator records at the source for tools without the Rust types.
    ///
    /// sea-query panics on a type a backend lacks (PostgreSQL's `inet` at MySQL): such a
    /// column is left without a definition there rather than stopping the replicator.
    pub(crate) fn definitions(&self, columns: &[String], backends: &[DbBackend]) -> Definitions {
        backends
            .iter()
            .map(|&backend| {
                let defs = columns
                    .iter()
                    .filter_map(|c| {
                        let column = self.column;
                        let built = std::panic::catch_unwind(|| column(backend, c));
                        Some((c.clone(), built.ok().flatten()?))
                    })
                    .collect();
                (backend_key(backend).to_string(), defs)
            })
            .collect()
    }
}

/// Each column's [`NewColumn`], by backend ([`backend_key`]) and column.
pub(crate) type Definitions = BTreeMap<String, BTreeMap<String, NewColumn>>;

/// The name of `backend` in [`Definitions`].
pub(crate) fn backend_key(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "postgres",
        DbBackend::MySql => "mysql",
        _ => "sqlite",
    }
}

/// Stands in a [`NewColumn::add`] for the byte-order collation of a MySQL/MariaDB server,
/// which only the server says (see `apply::byte_collation`).
const KEY_COLLATION: &str = "ormsync_key_collation";

/// One column of an entity as a created table defines it on one backend, for adding it to
/// a table that lacks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NewColumn {
    /// The column's type as a created table declares it: `bigint`, `datetime(6)`,
    /// `varchar(40)`; what a destination's type is compared with.
    pub(crate) declared: String,
    /// `ALTER TABLE … ADD COLUMN …` with the type, nullability and default a created
    /// table gives the column; see [`NewColumn::add_statement`].
    add: String,
    /// The PostgreSQL enum type the column is of, and the statement creating it.
    pub(crate) enum_type: Option<(String, String)>,
    /// Declared `NOT NULL`.
    pub(crate) not_null: bool,
    /// The entity gives it a default value.
    pub(crate) default: bool,
    /// Part of the primary key, unique or auto-incremented: a table with rows cannot take
    /// it as a new column.
    pub(crate) keyed: bool,
    /// The column the entity says it was renamed from (`renamed_from = "…"`).
    pub(crate) renamed_from: Option<String>,
}

impl NewColumn {
    /// The `ALTER TABLE` adding the column at a `backend` database whose byte-order
    /// collation (for a text column a key, an index or a foreign key uses) is `collation`.
    pub(crate) fn add_statement(&self, backend: DbBackend, collation: &str) -> Statement {
        Statement::from_string(backend, self.add.replace(KEY_COLLATION, collation))
    }
}

/// How a created table of `E` defines the column `name` on `backend`; see [`NewColumn`].
fn new_column<E: EntityTrait>(backend: DbBackend, name: &str) -> Option<NewColumn> {
    let column = E::Column::iter().find(|c| c.as_str() == name)?;
    let schema = Schema::new(backend);
    let mut def = schema.get_column_def::<E>(column);
    let column_type = column.def().get_column_type().clone();
    if backend != DbBackend::Postgres && matches!(column_type, ColumnType::Array(_)) {
        def.json();
    }
    let spec = def.get_column_spec();
    let in_key = E::PrimaryKey::iter().any(|k| k.into_column().as_str() == name);
    let keyed = in_key || spec.primary_key || spec.unique || spec.auto_increment;
    let not_null = spec.nullable == Some(false);
    let default = spec.default.is_some();
    let renamed_from = spec.comment.as_deref().and_then(renamed_from);
    let ty = def.get_column_type()?.clone();
    let mut declared = String::new();
    match backend {
        DbBackend::Postgres => PostgresQueryBuilder.prepare_column_type(&ty, &mut declared),
        DbBackend::MySql => MysqlQueryBuilder.prepare_column_type(&ty, &mut declared),
        _ => SqliteQueryBuilder.prepare_column_type(&ty, &mut declared),
    }
    let mut add = backend.build(
        Table::alter()
            .table(E::default().table_ref())
            .add_column(&mut def),
    );
    if backend == DbBackend::MySql {
        let indexed = schema
            .create_index_from_entity(E::default())
            .iter()
            .any(|i| {
                i.get_index_spec()
                    .get_column_names()
                    .iter()
                    .any(|c| c == name)
            });
        let free = !keyed && !indexed && !references(E::default(), name);
        let quoted = format!("`{}`", name.replace('`', "``"));
        if let Some((from, to)) = mysql_faithful(&ty, free) {
            add.sql = retype(&add.sql, &quoted, from, to);
            declared = to.to_string();
        } else if !free && let Some(from) = mysql_text_key(&ty) {
            let to = format!("{from} COLLATE {KEY_COLLATION}");
            add.sql = retype(&add.sql, &quoted, &from, &to);
        }
    }
    let enum_type = match (&column_type, backend) {
        (
            ColumnType::Enum {
                name: type_name, ..
            },
            DbBackend::Postgres,
        ) => schema
            .create_enum_from_entity(E::default())
            .iter()
            .map(|t| backend.build(t))
            .find(|s| s.sql.contains(&format!("\"{type_name}\"")))
            .map(|s| (type_name.to_string(), s.sql)),
        _ => None,
    };
    Some(NewColumn {
        declared,
        add: add.sql,
        enum_type,
        not_null,
        default,
        keyed,
        renamed_from,
    })
}

/// Whether a foreign key of `entity` (a `belongs_to` relation) holds `column`.
fn references<E: EntityTrait>(_entity: E, column: &str) -> bool {
    E::Relation::iter().any(|r| {
        let r = r.def();
        let (is_owner, skip_fk) = (r.is_owner, r.skip_fk);
        let fk: sea_orm::sea_query::ForeignKeyCreateStatement = r.into();
        !is_owner
            && !skip_fk
            && fk
                .get_foreign_key()
                .get_columns()
                .iter()
                .any(|c| c == column)
    })
}

/// The old name in sea-orm's column comment `renamed_from "old"`.
fn renamed_from(comment: &str) -> Option<String> {
    let rest = &comment[comment.find("renamed_from \"")? + "renamed_from \"".len()..];
    Some(rest[..rest.find('"')?].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_definition_is_retyped_and_nothing_else() {
        let sql = "CREATE TABLE `t` ( `at` timestamp NOT NULL, `at2` timestamp, `d` decimal )";
        let sql = retype(sql, "`at`", "timestamp", "datetime(6)");
        let sql = retype(&sql, "`at2`", "timestamp", "datetime(6)");
        let sql = retype(&sql, "`d`", "decimal", "decimal(65, 30)");
        assert_eq!(
            sql,
            "CREATE TABLE `t` ( `at` datetime(6) NOT NULL, `at2` datetime(6), `d` decimal(65, 30) )"
        );
        // A longer type that starts the same is not touched.
        assert_eq!(
            retype("( `c` timestamp_x )", "`c`", "timestamp", "datetime(6)"),
            "( `c` timestamp_x )"
        );
    }
}
