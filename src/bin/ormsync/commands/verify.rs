//! `ormsync verify` and `repair`: they read the tables through the descriptions the
//! replicator records at the source (`ormsync_entities`), without the application's types.

use std::process::ExitCode;

use ormsync::outbox::overview;
use ormsync::verify::{self, RepairMode, RepairOptions, Report, VerifyOptions};
use ormsync::{Error, Result, TableSpec};
use sea_orm::DatabaseConnection;
use serde::Serialize;

use crate::args::Scope;
use crate::config::Urls;
use crate::output::{self, Progress};

/// What verify found at one destination.
#[derive(Serialize)]
struct Verified {
    destination: String,
    in_sync: bool,
    tables: Vec<Report>,
}

/// Exit code of a verify that found drift.
const DRIFT: u8 = 1;

pub async fn verify(urls: &Urls, scope: &Scope, json: bool, show_values: bool) -> Result<ExitCode> {
    let source = urls.source().await?;
    let specs = tables(&source, &scope.tables).await?;
    let mut all = Vec::new();
    for name in urls.scope(scope.destination.as_deref())? {
        let dest = urls.dest(&name).await?;
        let tables = check(&source, &dest, &name, &specs, show_values).await?;
        all.push(Verified {
            in_sync: tables.iter().all(Report::is_clean),
            destination: name,
            tables,
        });
    }
    if json {
        output::json(&all)?;
    } else {
        for v in &all {
            for report in &v.tables {
                println!("{}: {report}", v.destination);
            }
        }
    }
    Ok(if all.iter().all(|v| v.in_sync) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DRIFT)
    })
}

pub async fn repair(
    urls: &Urls,
    scope: &Scope,
    dry_run: bool,
    direct: bool,
    json: bool,
) -> Result<ExitCode> {
    let source = urls.source().await?;
    let specs = tables(&source, &scope.tables).await?;
    let opts = RepairOptions::default().dry_run(dry_run).mode(if direct {
        RepairMode::Direct
    } else {
        RepairMode::Outbox
    });
    #[derive(Serialize)]
    struct Repaired {
        destination: String,
        tables: Vec<verify::RepairOutcome>,
    }
    let mut all = Vec::new();
    for name in urls.scope(scope.destination.as_deref())? {
        let dest = urls.dest(&name).await?;
        let reports = check(&source, &dest, &name, &specs, false).await?;
        let mut outcomes = Vec::new();
        for report in reports.iter().filter(|r| !r.is_clean()) {
            let spec = specs
                .iter()
                .find(|s| s.table == report.table)
                .ok_or_else(|| Error::Config(format!("no description of `{}`", report.table)))?;
            outcomes.push(verify::repair_table(&source, &dest, spec, report, &opts).await?);
        }
        all.push(Repaired {
            destination: name,
            tables: outcomes,
        });
    }
    if json {
        output::json(&all)?;
        return Ok(ExitCode::SUCCESS);
    }
    for r in &all {
        if r.tables.is_empty() {
            println!("{}: in sync, nothing to repair", r.destination);
        }
        for outcome in &r.tables {
            println!("{}: {outcome}", r.destination);
        }
    }
    if !dry_run && !direct && all.iter().any(|r| !r.tables.is_empty()) {
        // An outbox fix is a change like any other: every destination receives it.
        let shipping = overview::overview(&source)
            .await?
            .destinations
            .iter()
            .any(|d| d.lease_holder.is_some());
        println!(
            "the fixes are queued in the outbox, as changes every destination receives, not \
             only the one repaired; {}",
            if shipping {
                "the running replicator ships them"
            } else {
                "no replicator runs now: they ship when one starts"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The recorded descriptions of the tables asked for (all when none is named).
pub(super) async fn tables(source: &DatabaseConnection, only: &[String]) -> Result<Vec<TableSpec>> {
    let all = ormsync::outbox::entities::load(source).await?;
    if all.is_empty() {
        return Err(Error::NothingRecorded);
    }
    if let Some(unknown) = only.iter().find(|t| !all.iter().any(|s| &s.table == *t)) {
        return Err(Error::NotReplicated {
            table: unknown.clone(),
            known: all.iter().map(|s| s.table.clone()).collect(),
        });
    }
    Ok(all
        .into_iter()
        .filter(|s| only.is_empty() || only.contains(&s.table))
        .collect())
}

/// Verifies each table at one destination, showing progress.
async fn check(
    source: &DatabaseConnection,
    dest: &DatabaseConnection,
    name: &str,
    specs: &[TableSpec],
    show_values: bool,
) -> Result<Vec<Report>> {
    let opts = VerifyOptions::default().show_values(show_values);
    let mut progress = Progress::new(&format!("verify {name}"), specs.len() as u64);
    let mut reports = Vec::with_capacity(specs.len());
    for spec in specs {
        progress.start(&spec.table);
        let report = verify::verify_table(source, dest, spec, &opts).await?;
        let outcome = if report.is_clean() {
            format!("`{}`: {} rows, in sync", spec.table, report.source_rows)
        } else {
            format!("`{}`: {} rows differ", spec.table, report.drift_count())
        };
        progress.step_done(&outcome);
        reports.push(report);
    }
    progress.finish();
    Ok(reports)
}
