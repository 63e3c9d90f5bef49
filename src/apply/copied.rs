//! Writing rows copied from the source by a snapshot or resync as this destination takes
//! them: through the same shaping as the stream (filters, dropped columns, transforms) and,
//! for tables whose rows the destination keys or resolves itself, the same row-by-row
//! placement (key map, translated foreign keys, conflict policy).

use std::collections::HashMap;

use sea_orm::{DatabaseTransaction, DbErr};

use super::columns;
use super::mapped::{RowByRow, RowByRowError};
use super::plan;
use super::rules::Rules;
use super::shape;
use super::statement;
use crate::change::{Change, Op, Row};

/// Writes the copied `rows` of `table` (each whole, with its `key` columns) and deletes
/// the destination rows keyed `gone`, inside `txn`.
///
/// Each copied row travels as an update: a row the filter leaves out becomes a delete,
/// so a resync also removes rows that left the filter.
///
/// Returns the keys of the rows the rules could not place (a parent row this destination
/// does not have, an ambiguous match, a failing resolver): those are left out here, for the
/// caller to take to the destination's policy.
///
/// # Errors
///
/// The first statement that fails.
pub(crate) async fn write(
    txn: &DatabaseTransaction,
    source: &str,
    rules: &Rules,
    table: &str,
    key: &[String],
    rows: &[&Row],
    gone: &[Row],
) -> Result<Vec<Row>, DbErr> {
    let as_change = |op: Op, row: &Row| Change {
        id: 0,
        table: table.to_string(),
        op,
        key: Row(key
            .iter()
            .filter_map(|k| row.get(k).map(|v| (k.clone(), v.clone())))
            .collect()),
        row: row.clone(),
        origin: None,
        created_at: None,
    };
    let changes: Vec<Change> = gone
        .iter()
        .map(|k| as_change(Op::Delete, k))
        .chain(rows.iter().map(|r| as_change(Op::Update, r)))
        .collect();
    let refs: Vec<&Change> = changes.iter().collect();
    let shaped = shape::shape(&refs, rules, true);
    // The destination's column types: what each column keeps of a value, and on
    // PostgreSQL what lets a chunk go as a few big statements, as the stream's batches do.
    let types = columns::of(txn, table)
        .await
        .map_err(|e| DbErr::Custom(e.to_string()))?;
    if rules.goes_row_by_row(table) {
        let types: HashMap<String, HashMap<String, String>> =
            types.into_iter().map(|t| (table.to_string(), t)).collect();
        let mut placer = RowByRow {
            db: txn,
            source,
            rules,
            types: &types,
            conflicts: Vec::new(),
        };
        let mut unplaced = Vec::new();
        for change in &shaped {
            match placer.apply(change).await {
                Ok(()) => {}
                Err(RowByRowError::Db(e)) => return Err(e),
                Err(RowByRowError::Unresolved(reason)) => {
                    tracing::debug!(table, key = %change.key.to_json(), %reason,
                        "snapshot: a copied row cannot be placed here yet");
                    unplaced.push(change.key.clone());
                }
            }
        }
        return Ok(unplaced);
    }
    let shaped: Vec<&Change> = shaped.iter().map(|c| c.as_ref()).collect();
    let mut steps = plan::plan(&shaped);
    plan::parents_first(&mut steps, &rules.specs);
    for step in steps {
        statement::execute(txn, &step, types.as_ref()).await?;
    }
    Ok(Vec::new())
}
