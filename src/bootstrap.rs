//! Schema bootstrap: creating the replicated tables a destination lacks from the entity
//! definitions, parents first, and adding the columns its tables lack (when the
//! destination evolves its schema) or refusing a table whose columns differ.

use std::collections::HashMap;
use std::sync::Arc;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, TransactionTrait};

use crate::apply;
use crate::entity::TableSpec;
use crate::entity::ddl::TableDef;
use crate::error::{DbContext, Error, Result};

/// What a worker does to a destination's tables before it ships to them.
#[derive(Clone, Debug)]
pub(crate) struct Preparation {
    /// The entities' table definitions, by table.
    pub(crate) defs: Arc<HashMap<String, TableDef>>,
    /// Create the tables the destination lacks ([`Destination::create_tables`](crate::Destination::create_tables)).
    pub(crate) create: bool,
    /// Add the columns its tables lack ([`Destination::evolve_schema`](crate::Destination::evolve_schema)).
    pub(crate) evolve: bool,
}

/// What [`prepare_tables`] changed at a destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Prepared {
    /// Tables created, parents first.
    pub(crate) created: Vec<String>,
    /// Columns added, as (table, column).
    pub(crate) added: Vec<(String, String)>,
}

/// Creates each table of `specs` that `db` lacks (when `how.create`), and checks the
/// others against their entities: with `how.evolve`, adds the shipped columns a table
/// lacks; without, refuses a table whose columns differ.
///
/// Every table is checked before the first statement that changes one, so a refusal
/// alters nothing.
///
/// # Errors
///
/// Without `how.evolve`, [`Error::SchemaMismatch`] for the first existing table whose
/// columns differ from its entity's: shipped columns it lacks, or columns the entity does
/// not have. With it, [`Error::SchemaEvolution`] for a difference evolving does not
/// change. [`Error::Db`] when a statement fails.
pub(crate) async fn prepare_tables(
    db: &DatabaseConnection,
    destination: &str,
    specs: &[&TableSpec],
    how: &Preparation,
) -> Result<Prepared> {
    if db.get_database_backend() != DbBackend::Postgres {
        return prepare_tables_in(db, destination, specs, how).await;
    }
    // Two processes creating the same tables at once (a replicator handing over, or one
    // instance's `create_tables` beside another's worker) would both find a table missing
    // and the second fail on the catalog: on PostgreSQL, where DDL is transactional, the
    // check and the creation run under ormsync's DDL lock.
    let context = || format!("destination `{destination}`: creating tables");
    let txn = db.begin().await.context(context)?;
    let prepared = async {
        txn.execute_unprepared(&format!(
            "SELECT pg_advisory_xact_lock({})",
            crate::schema::DDL_LOCK
        ))
        .await
        .context(context)?;
        prepare_tables_in(&txn, destination, specs, how).await
    }
    .await;
    match prepared {
        Ok(prepared) => {
            txn.commit().await.context(context)?;
            Ok(prepared)
        }
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e)
        }
    }
}

async fn prepare_tables_in<C: ConnectionTrait>(
    db: &C,
    destination: &str,
    specs: &[&TableSpec],
    how: &Preparation,
) -> Result<Prepared> {
    let backend = db.get_database_backend();
    let collation = apply::byte_collation(db).await?;
    // First every check, then every change.
    let mut work = Vec::new();
    for spec in crate::snapshot::parents_first(specs.iter().copied()) {
        let Some(def) = how.defs.get(&spec.table) else {
            continue;
        };
        match apply::table_columns(db, &spec.table).await? {
            None if how.create => work.push((spec, def, None)),
            None => {}
            Some(present) if how.evolve => {
                let wanted: Vec<&str> = spec.columns.iter().map(String::as_str).collect();
                let additions = apply::evolve::plan(
                    backend,
                    destination,
                    &spec.table,
                    &|c| (def.column)(backend, c),
                    &wanted,
                    &present,
                )?;
                if !additions.is_empty() {
                    work.push((spec, def, Some(present)));
                }
            }
            Some(present) => mismatch(destination, spec, def, &present)?,
        }
    }
    let mut prepared = Prepared::default();
    for (spec, def, present) in work {
        match present {
            None => {
                for stmt in (def.create)(backend, collation) {
                    db.execute_raw(stmt).await.context(|| {
                        format!(
                            "destination `{destination}`: creating table `{}` from its entity",
                            spec.table
                        )
                    })?;
                }
                tracing::info!(destination, table = %spec.table, "created the table from its entity");
                prepared.created.push(spec.table.clone());
            }
            Some(present) => {
                let wanted: Vec<&str> = spec.columns.iter().map(String::as_str).collect();
                let added = apply::evolve::evolve_table(
                    db,
                    destination,
                    &spec.table,
                    &|c| (def.column)(backend, c),
                    &wanted,
                    &present,
                    collation,
                )
                .await?;
                prepared
                    .added
                    .extend(added.into_iter().map(|c| (spec.table.clone(), c)));
            }
        }
    }
    Ok(prepared)
}

/// Refuses a table whose columns are not its entity's: shipped columns it lacks, or
/// columns the entity does not have.
fn mismatch(
    destination: &str,
    spec: &TableSpec,
    def: &TableDef,
    present: &HashMap<String, String>,
) -> Result<()> {
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
    if missing.is_empty() && unexpected.is_empty() {
        return Ok(());
    }
    Err(Error::SchemaMismatch {
        destination: destination.to_string(),
        table: spec.table.clone(),
        missing,
        unexpected,
    })
}
