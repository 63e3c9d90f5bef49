//! `ormsync schema`: each destination's replicated tables against what the source records
//! of their entities, and, with `--evolve`, the columns `evolve_schema` adds.

use std::process::ExitCode;

use ormsync::apply::{self, TableDifferences};
use ormsync::outbox::entities::{self, RecordedTable};
use ormsync::{Error, Result};
use serde::Serialize;

use crate::args::Scope;
use crate::config::Urls;
use crate::output;

/// What one destination's tables look like against their entities.
#[derive(Serialize)]
struct Schema {
    destination: String,
    same: bool,
    tables: Vec<TableDifferences>,
    /// Columns added by `--evolve`, as (table, column).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    added: Vec<(String, String)>,
}

/// Exit code when a destination differs.
const DIFFERS: u8 = 1;

pub async fn run(urls: &Urls, scope: &Scope, json: bool, evolve: bool) -> Result<ExitCode> {
    let source = urls.source().await?;
    let tables = recorded(&source, &scope.tables).await?;
    let mut all = Vec::new();
    for name in urls.scope(scope.destination.as_deref())? {
        let dest = urls.dest(&name).await?;
        let added = if evolve {
            apply::evolve_recorded(&dest, &name, &tables).await?
        } else {
            Vec::new()
        };
        let differences = apply::differences(&dest, &tables).await?;
        all.push(Schema {
            same: differences.iter().all(TableDifferences::is_same),
            destination: name,
            tables: differences,
            added,
        });
    }
    if json {
        output::json(&all)?;
    } else {
        for s in &all {
            for (table, column) in &s.added {
                println!("{}: added column `{column}` to `{table}`", s.destination);
            }
            if s.same {
                println!("{}: every table as its entity records it", s.destination);
            }
            for t in &s.tables {
                if t.missing_table {
                    println!(
                        "{}: missing table `{}` (create_tables creates it)",
                        s.destination, t.table
                    );
                }
                for c in &t.columns {
                    println!("{}: `{}`: {c}", s.destination, t.table);
                }
            }
        }
    }
    Ok(if all.iter().all(|s| s.same) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DIFFERS)
    })
}

/// The recorded tables, or only `only` of them.
async fn recorded(
    source: &sea_orm::DatabaseConnection,
    only: &[String],
) -> Result<Vec<RecordedTable>> {
    let all = entities::load_recorded(source).await?;
    if all.is_empty() {
        return Err(Error::NothingRecorded);
    }
    if let Some(unknown) = only
        .iter()
        .find(|t| !all.iter().any(|r| &r.spec.table == *t))
    {
        return Err(Error::NotReplicated {
            table: unknown.clone(),
            known: all.iter().map(|r| r.spec.table.clone()).collect(),
        });
    }
    Ok(all
        .into_iter()
        .filter(|r| only.is_empty() || only.contains(&r.spec.table))
        .collect())
}
