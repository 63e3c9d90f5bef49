//! A destination's tables against what the source records of its entities: the tables and
//! columns it lacks, the columns it has beyond them, the types that differ, and which of
//! these [`Destination::evolve_schema`](crate::Destination::evolve_schema) mends. What
//! `ormsync schema` shows.

use std::collections::HashMap;
use std::fmt;

use sea_orm::DatabaseConnection;
use serde::Serialize;

use super::column_type::{self, Verdict};
use super::{columns, evolve};
use crate::error::{Error, Result};
use crate::outbox::entities::RecordedTable;

/// How one replicated table at a destination differs from what its entity records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableDifferences {
    /// The table.
    pub table: String,
    /// The destination lacks the table (`create_tables` creates it).
    pub missing_table: bool,
    /// Its columns that differ, when it exists.
    pub columns: Vec<ColumnDifference>,
}

impl TableDifferences {
    /// Whether the table is as its entity records it.
    pub fn is_same(&self) -> bool {
        !self.missing_table && self.columns.is_empty()
    }
}

/// One column of a destination table that differs from its entity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ColumnDifference {
    /// The column.
    pub column: String,
    /// How it differs.
    #[serde(flatten)]
    pub difference: Difference,
    /// Whether `evolve_schema` mends it.
    pub evolves: bool,
    /// Why not, and what to do, when it does not.
    pub note: Option<String>,
}

/// How a column differs from its entity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    /// The entity ships it; the table lacks it.
    Missing,
    /// The table has it; the entity does not.
    Extra,
    /// Declared otherwise than a created table would declare it.
    Type {
        /// As a created table declares it.
        expected: String,
        /// As the destination declares it.
        actual: String,
    },
}

impl fmt::Display for ColumnDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.difference {
            Difference::Missing => write!(f, "missing column `{}`", self.column)?,
            Difference::Extra => write!(f, "extra column `{}`", self.column)?,
            Difference::Type { expected, actual } => write!(
                f,
                "column `{}` is `{actual}`, its entity's is `{expected}`",
                self.column
            )?,
        }
        if self.evolves {
            write!(f, " (evolve_schema adds it)")?;
        }
        if let Some(note) = &self.note {
            write!(f, ": {note}")?;
        }
        Ok(())
    }
}

/// How each of `tables` (as [`load_recorded`](crate::outbox::entities::load_recorded)
/// reads them at the source) differs at `dest`.
///
/// # Errors
///
/// [`Error::Db`] when the destination's columns cannot be read.
///
/// # Examples
///
/// ```no_run
/// # async fn f(source: sea_orm::DatabaseConnection, dest: sea_orm::DatabaseConnection) -> ormsync::Result<()> {
/// let tables = ormsync::outbox::entities::load_recorded(&source).await?;
/// for t in ormsync::apply::differences(&dest, &tables).await? {
///     for c in &t.columns {
///         println!("{}: {c}", t.table);
///     }
/// }
/// # Ok(()) }
/// ```
pub async fn differences(
    dest: &DatabaseConnection,
    tables: &[RecordedTable],
) -> Result<Vec<TableDifferences>> {
    let backend = dest.get_database_backend();
    let mut out = Vec::with_capacity(tables.len());
    for recorded in tables {
        let spec = &recorded.spec;
        let mut diff = TableDifferences {
            table: spec.table.clone(),
            missing_table: false,
            columns: Vec::new(),
        };
        let Some(present) = columns::of(dest, &spec.table).await? else {
            diff.missing_table = true;
            out.push(diff);
            continue;
        };
        let unrecorded = recorded.definitions.is_none();
        let defined = |c: &str| recorded.column(backend, c);
        for column in &spec.columns {
            let mut verdict = |difference: Difference| {
                let (evolves, note) = if unrecorded {
                    (
                        false,
                        Some(
                            "the source holds no column definitions of this table: start the \
                             application's replicator of this version once to record them"
                                .to_string(),
                        ),
                    )
                } else {
                    match evolve::plan(backend, "", &spec.table, &defined, &[column], &present) {
                        Ok(added) if !added.is_empty() => (true, None),
                        // A type that differs without altering values (a shorter text).
                        Ok(_) => (
                            false,
                            Some(
                                "not refused: a value the column cannot hold is refused when \
                                 it comes"
                                    .to_string(),
                            ),
                        ),
                        // The types are in the difference itself; the remedy says what to do.
                        Err(Error::SchemaEvolution { remedy, .. })
                            if matches!(difference, Difference::Type { .. }) =>
                        {
                            (false, Some(remedy))
                        }
                        Err(Error::SchemaEvolution {
                            problem, remedy, ..
                        }) => (false, Some(format!("{problem}; {remedy}"))),
                        Err(e) => (false, Some(e.to_string())),
                    }
                };
                diff.columns.push(ColumnDifference {
                    column: column.clone(),
                    difference,
                    evolves,
                    note,
                });
            };
            match (present.get(column), defined(column)) {
                (None, _) => verdict(Difference::Missing),
                (Some(actual), Some(new)) => {
                    if column_type::compare(backend, &new.declared, actual) != Verdict::Holds {
                        verdict(Difference::Type {
                            expected: new.declared,
                            actual: actual.clone(),
                        })
                    }
                }
                (Some(_), None) => {}
            }
        }
        diff.columns
            .extend(
                extras(recorded, &present)
                    .into_iter()
                    .map(|column| ColumnDifference {
                        column,
                        difference: Difference::Extra,
                        evolves: false,
                        note: Some("left alone: ormsync never writes it".into()),
                    }),
            );
        out.push(diff);
    }
    Ok(out)
}

/// Columns of the destination table that the entity does not have (a skipped column the
/// entity declares is the entity's, where the definitions say so).
fn extras(recorded: &RecordedTable, present: &HashMap<String, String>) -> Vec<String> {
    let mut extra: Vec<String> = present
        .keys()
        .filter(|c| {
            !recorded.spec.columns.contains(c)
                && !recorded
                    .definitions
                    .as_ref()
                    .is_some_and(|d| d.values().any(|cols| cols.contains_key(*c)))
        })
        .cloned()
        .collect();
    extra.sort();
    extra
}

/// Adds to `dest`'s tables the columns of `tables` they lack, from the definitions
/// recorded at the source, as [`Destination::evolve_schema`](crate::Destination::evolve_schema)
/// does: every table is checked before the first is altered. Returns the columns added, as
/// (table, column). Tables the destination lacks are left alone.
///
/// # Errors
///
/// [`Error::SchemaEvolution`] for a difference evolving does not mend, or a table whose
/// column definitions the source does not hold (nothing is altered); [`Error::Db`].
pub async fn evolve_recorded(
    dest: &DatabaseConnection,
    destination: &str,
    tables: &[RecordedTable],
) -> Result<Vec<(String, String)>> {
    let backend = dest.get_database_backend();
    let mut work = Vec::new();
    for recorded in tables {
        let spec = &recorded.spec;
        let Some(present) = columns::of(dest, &spec.table).await? else {
            continue;
        };
        let wanted: Vec<&str> = spec.columns.iter().map(String::as_str).collect();
        if recorded.definitions.is_none()
            && let Some(column) = wanted.iter().find(|c| !present.contains_key(**c))
        {
            return Err(Error::SchemaEvolution {
                destination: destination.to_string(),
                table: spec.table.clone(),
                column: column.to_string(),
                problem: "the table lacks it, and the source holds no column definitions of \
                          this table"
                    .into(),
                remedy: "start the application's replicator of this version once to record \
                         them (or let it evolve the destination itself)"
                    .into(),
            });
        }
        let defined = |c: &str| recorded.column(backend, c);
        let additions = evolve::plan(
            backend,
            destination,
            &spec.table,
            &defined,
            &wanted,
            &present,
        )?;
        if !additions.is_empty() {
            work.push((recorded, wanted, present));
        }
    }
    let collation = columns::byte_collation(dest).await?;
    let mut added = Vec::new();
    for (recorded, wanted, present) in work {
        let defined = |c: &str| recorded.column(backend, c);
        let columns = evolve::evolve_table(
            dest,
            destination,
            &recorded.spec.table,
            &defined,
            &wanted,
            &present,
            collation,
        )
        .await?;
        added.extend(
            columns
                .into_iter()
                .map(|c| (recorded.spec.table.clone(), c)),
        );
    }
    Ok(added)
}
