//! `ormsync outbox`: pending changes per table, per destination.

use std::process::ExitCode;

use chrono::Utc;
use ormsync::Result;
use ormsync::outbox::overview::{self, TableBacklog};
use serde::Serialize;

use super::age;
use crate::config::Urls;
use crate::output;

#[derive(Serialize)]
struct Pending {
    destination: String,
    watermark: i64,
    tables: Vec<TableBacklog>,
}

pub async fn run(urls: &Urls, json: bool) -> Result<ExitCode> {
    let source = urls.source().await?;
    let o = overview::overview(&source).await?;
    let mut all = Vec::with_capacity(o.destinations.len());
    for d in &o.destinations {
        all.push(Pending {
            destination: d.name.clone(),
            watermark: d.watermark,
            tables: overview::backlog_by_table(&source, d.watermark).await?,
        });
    }
    if json {
        output::json(&all)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("outbox: {} rows", o.outbox_size);
    if all.is_empty() {
        println!("no destination is registered at the source yet");
    }
    for p in &all {
        println!(
            "destination `{}` (watermark {}):",
            p.destination, p.watermark
        );
        if p.tables.is_empty() {
            println!("  nothing pending");
            continue;
        }
        println!(
            "  {:<32} {:>9} {:>14}",
            "table", "pending", "oldest pending"
        );
        for t in &p.tables {
            let lag = t
                .oldest
                .map(|at| (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0);
            println!("  {:<32} {:>9} {:>14}", t.table, t.pending, age(lag));
        }
    }
    Ok(ExitCode::SUCCESS)
}
