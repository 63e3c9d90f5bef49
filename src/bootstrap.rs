//! Schema bootstrap: creating the replicated tables a destination lacks from the entity
//! definitions, parents first, and refusing (never altering) a table whose columns differ.

use std::collections::HashMap;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, Iterable, Schema, Statement,
    TransactionTrait,
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
    /// The statements that create the table (and its enum types and indexes) on a backend.
    pub(crate) create: fn(DbBackend) -> Vec<Statement>,
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
/// PostgreSQL enum types and followed by its indexes.
fn create_statements<E: EntityTrait>(backend: DbBackend) -> Vec<Statement> {
    let schema = Schema::new(backend);
    let mut out: Vec<Statement> = schema
        .create_enum_from_entity(E::default())
        .iter()
        .map(|t| backend.build(t))
        .collect();
    out.push(backend.build(&schema.create_table_from_entity(E::default())));
    out.extend(
        schema
            .create_index_from_entity(E::default())
            .iter()
            .map(|i| backend.build(i)),
    );
    out
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
    for spec in crate::snapshot::parents_first(specs.iter().copied()) {
        let Some(def) = defs.get(&spec.table) else {
            continue;
        };
        match apply::table_columns(db, &spec.table).await? {
            None => {
                for stmt in (def.create)(db.get_database_backend()) {
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
