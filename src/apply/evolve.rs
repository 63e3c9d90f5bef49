//! Growing a destination's table to its entity: the columns a change or the entity ships
//! and the table lacks are added as `create_tables` would define them, and what cannot be
//! evolved safely is refused by name before anything is altered.
//!
//! Evolution only adds. A column the table has and the entity no longer does is left
//! alone (changes never carry it, so nothing writes NULL into it); a type is never
//! changed, since narrowing one loses values and widening one rewrites a table the
//! application may be reading.

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use super::column_type::{self, Verdict};
use crate::entity::ddl::NewColumn;
use crate::error::{DbContext, Error, Result};

/// Adds to `table` at `db` the columns of `wanted` it lacks (`present` are the columns it
/// has, with their declared types), as `defined` defines them; returns the columns added.
///
/// Everything is checked before the first `ALTER`: a column of `wanted` the table has
/// with a type narrower than the entity's or of another kind, or one it lacks and cannot
/// take (see [`plan`]), fails with [`Error::SchemaEvolution`] and alters nothing.
pub(crate) async fn evolve_table<C: ConnectionTrait>(
    db: &C,
    destination: &str,
    table: &str,
    defined: &(dyn Fn(&str) -> Option<NewColumn> + Sync),
    wanted: &[&str],
    present: &HashMap<String, String>,
    key_collation: &str,
) -> Result<Vec<String>> {
    let backend = db.get_database_backend();
    let additions = plan(backend, destination, table, defined, wanted, present)?;
    let mut added = Vec::with_capacity(additions.len());
    for (column, new) in additions {
        let context =
            || format!("destination `{destination}`: adding column `{column}` to `{table}`");
        if let Some((type_name, create)) = &new.enum_type
            && !pg_type_exists(db, type_name).await.context(context)?
        {
            db.execute_unprepared(create).await.context(context)?;
        }
        if let Err(e) = db
            .execute_raw(new.add_statement(backend, key_collation))
            .await
        {
            // Another instance evolving the same table at once (MySQL's DDL is not
            // transactional, so no lock spans its check and its ALTER) added it first.
            let now = super::columns::of(db, table).await?;
            if now.is_some_and(|c| c.contains_key(&column)) {
                continue;
            }
            return Err(Error::db(context(), e));
        }
        tracing::info!(destination, table, column, declared = %new.declared, "added a column the entity has");
        added.push(column);
    }
    Ok(added)
}

/// The columns `evolve_table` would add, or why it refuses.
pub(crate) fn plan(
    backend: DbBackend,
    destination: &str,
    table: &str,
    defined: &(dyn Fn(&str) -> Option<NewColumn> + Sync),
    wanted: &[&str],
    present: &HashMap<String, String>,
) -> Result<Vec<(String, NewColumn)>> {
    let refuse = |column: &str, problem: String, remedy: String| Error::SchemaEvolution {
        destination: destination.to_string(),
        table: table.to_string(),
        column: column.to_string(),
        problem,
        remedy,
    };
    let mut additions = Vec::new();
    for &column in wanted {
        let new = defined(column);
        match (present.get(column), new) {
            (Some(actual), Some(new)) => {
                if let Verdict::Narrower(why) = column_type::compare(backend, &new.declared, actual)
                {
                    return Err(refuse(
                        column,
                        format!("{why}; evolving never changes a column's type"),
                        format!(
                            "alter the column at the destination to `{}` (or wider)",
                            new.declared
                        ),
                    ));
                }
            }
            (Some(_), None) => {}
            (None, None) => {
                return Err(refuse(
                    column,
                    "the changes carry this column, which the table lacks and this \
                     replicator's entity does not define (an older version of the application \
                     ships to this destination)"
                        .into(),
                    "run the replicator from the version whose entity has the column, which \
                     adds it, or add it at the destination by hand"
                        .into(),
                ));
            }
            (None, Some(new)) => {
                if let Some(old) = new
                    .renamed_from
                    .as_deref()
                    .filter(|old| present.contains_key(*old))
                {
                    return Err(refuse(
                        column,
                        format!(
                            "the entity renamed `{old}` to it, and the table still has `{old}`"
                        ),
                        format!(
                            "rename the column at the destination (`ALTER TABLE … RENAME COLUMN \
                             {old} TO {column}`)"
                        ),
                    ));
                }
                if new.keyed {
                    return Err(refuse(
                        column,
                        "it is part of the entity's primary key, unique or auto-incremented, \
                         which a table with rows cannot take as a new column"
                            .into(),
                        "migrate the table at the destination by hand (or drop it and let \
                         `create_tables` create it, then resync it)"
                            .into(),
                    ));
                }
                if new.not_null && !new.default {
                    return Err(refuse(
                        column,
                        "it is NOT NULL without a default, so the rows the table has would have \
                         no value for it"
                            .into(),
                        "give the field a default (`#[sea_orm(default_value = …)]`) or make it \
                         an `Option`, or add the column at the destination by hand"
                            .into(),
                    ));
                }
                additions.push((column.to_string(), new));
            }
        }
    }
    Ok(additions)
}

async fn pg_type_exists<C: ConnectionTrait>(
    db: &C,
    name: &str,
) -> std::result::Result<bool, sea_orm::DbErr> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 AS found FROM pg_type WHERE typname = $1",
            [name.into()],
        ))
        .await?;
    Ok(row.is_some())
}
