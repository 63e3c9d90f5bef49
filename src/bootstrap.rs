//! Schema bootstrap: creating the replicated tables a destination lacks from the entity
//! definitions, parents first, and refusing (never altering) a table whose columns differ.

use std::collections::HashMap;

use sea_orm::sea_query::{ColumnType, Index, StringLen, TableCreateStatement};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, Iterable,
    RelationTrait, Schema, Statement, TransactionTrait,
};

use crate::apply;
use crate::entity::{Replicated, TableSpec};
use crate::error::{DbContext, Error, Result};

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
}

impl TableDef {
    pub(crate) fn of<E: Replicated>() -> TableDef {
        TableDef {
            columns: E::Column::iter()
                .map(|c| sea_orm::IdenStatic::as_str(&c).to_string())
                .collect(),
            create: create_statements::<E>,
        }
    }
}

/// sea-orm's `CREATE TABLE` for `E` on `backend`, with its foreign keys, preceded by its
/// PostgreSQL enum types and followed by its indexes. On MySQL/MariaDB, text columns of a
/// key, an index or a foreign key get `key_collation` (see [`byte_collation`]).
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

/// Creates each table of `specs` (in foreign-key order) that `db` lacks, and checks the
/// others: returns the tables created.
///
/// # Errors
///
/// [`Error::SchemaMismatch`] for the first existing table whose columns differ from its
/// entity's: shipped columns it lacks, or columns the entity does not have; nothing is
/// altered. [`Error::Db`] when a statement fails.
pub(crate) async fn ensure_tables(
    db: &DatabaseConnection,
    destination: &str,
    specs: &[&TableSpec],
    defs: &HashMap<String, TableDef>,
) -> Result<Vec<String>> {
    if db.get_database_backend() != DbBackend::Postgres {
        return ensure_tables_in(db, destination, specs, defs).await;
    }
    // Two processes creating the same tables at once (a replicator handing over, or one
    // instance's `create_tables` beside another's worker) would both find a table missing
    // and the second fail on the catalog: on PostgreSQL, where DDL is transactional, the
    // check and the creation run under ormsync's DDL lock.
    let context = || format!("destination `{destination}`: creating tables");
    let txn = db.begin().await.context(context)?;
    let created = async {
        txn.execute_unprepared(&format!(
            "SELECT pg_advisory_xact_lock({})",
            crate::schema::DDL_LOCK
        ))
        .await
        .context(context)?;
        ensure_tables_in(&txn, destination, specs, defs).await
    }
    .await;
    match created {
        Ok(created) => {
            txn.commit().await.context(context)?;
            Ok(created)
        }
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e)
        }
    }
}

async fn ensure_tables_in<C: ConnectionTrait>(
    db: &C,
    destination: &str,
    specs: &[&TableSpec],
    defs: &HashMap<String, TableDef>,
) -> Result<Vec<String>> {
    let mut created = Vec::new();
    let mut key_collation = None;
    for spec in crate::snapshot::parents_first(specs.iter().copied()) {
        let Some(def) = defs.get(&spec.table) else {
            continue;
        };
        match apply::table_columns(db, &spec.table).await? {
            None => {
                let collation = match key_collation {
                    Some(c) => c,
                    None => *key_collation.insert(byte_collation(db).await?),
                };
                for stmt in (def.create)(db.get_database_backend(), collation) {
                    db.execute_raw(stmt).await.context(|| {
                        format!(
                            "destination `{destination}`: creating table `{}` from its entity",
                            spec.table
                        )
                    })?;
                }
                tracing::info!(destination, table = %spec.table, "created the table from its entity");
                created.push(spec.table.clone());
            }
            Some(present) => {
                let mut missing: Vec<String> = spec
                    .columns
                    .iter()
                    .filter(|c| !present.contains_key(*c))
                    .cloned()
                    .collect();
                missing.sort();
                let mut unexpected: Vec<String> = present
                    .keys()
                    .filter(|c| !def.columns.contains(c))
                    .cloned()
                    .collect();
                unexpected.sort();
                if !missing.is_empty() || !unexpected.is_empty() {
                    return Err(Error::SchemaMismatch {
                        destination: destination.to_string(),
                        table: spec.table.clone(),
                        missing,
                        unexpected,
                    });
                }
            }
        }
    }
    Ok(created)
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
