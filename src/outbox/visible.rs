//! What one snapshot of the source holds of its outbox: the ids present, as a position,
//! and the changes a position lacks. A copy converges on these (see `snapshot`).

use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use sea_orm::{ConnectionTrait, DbBackend, Statement, StreamTrait};

use super::reader::{decode, select};
use crate::bounded_read::{self, ReadBudget};
use crate::change::Change;
use crate::error::{DbContext, Result};
use crate::position::{Anchor, Position};

/// Changes read per statement by [`each_change_outside`].
const PAGE: u64 = 5000;

/// The outbox ids visible to `db` (inside a transaction: its snapshot), as a position
/// whose watermark is zero: every id present is done; ids missing between them, and below
/// the first, are not, for an open transaction may still commit them. A reader starting
/// from it treats those as gaps and proves them holes as usual.
///
/// One statement groups the ids into runs, so a big outbox answers with a few ranges.
pub(crate) async fn position<C: ConnectionTrait>(db: &C) -> Result<Position> {
    let backend = db.get_database_backend();
    // MySQL's ROW_NUMBER() is unsigned; the difference is never negative, but typed signed.
    let rank = match backend {
        DbBackend::MySql => "CAST(ROW_NUMBER() OVER (ORDER BY id) AS SIGNED)",
        _ => "ROW_NUMBER() OVER (ORDER BY id)",
    };
    let sql = format!(
        "SELECT MIN(id) AS lo, MAX(id) AS hi FROM \
         (SELECT id, id - {rank} AS run FROM ormsync_outbox) runs GROUP BY run ORDER BY lo"
    );
    let rows = db
        .query_all_raw(Statement::from_string(backend, sql))
        .await
        .context(|| "reading which outbox ids are committed".into())?;
    let mut position = Position::default();
    for row in rows {
        let lo: i64 = row
            .try_get("", "lo")
            .context(|| "decoding the outbox's id runs".into())?;
        let hi: i64 = row
            .try_get("", "hi")
            .context(|| "decoding the outbox's id runs".into())?;
        position.mark(lo, hi);
    }
    Ok(position)
}

/// The anchor of `position` as `db` sees the outbox: its last change.
pub(crate) async fn anchor_of<C: ConnectionTrait>(
    db: &C,
    position: &Position,
) -> Result<Option<Anchor>> {
    let id = position.frontier();
    if id <= 0 {
        return Ok(None);
    }
    let q = db.get_database_backend().build(&select(
        Condition::all().add(Expr::col("id").eq(id)),
        Some(1),
    ));
    let row = db
        .query_one_raw(q)
        .await
        .context(|| "reading the outbox".into())?;
    Ok(match row {
        Some(row) => Some(decode(&row)?.0.anchor()),
        None => None,
    })
}

/// Calls `each` with every change visible to `db` that `base` does not hold, in id order,
/// reading a page at a time.
///
/// # Errors
///
/// A failed query, a change that does not decode, or what `each` returns.
pub(crate) async fn each_change_outside<C>(
    db: &C,
    base: &Position,
    mut each: impl FnMut(Change) -> Result<()>,
) -> Result<()>
where
    C: ConnectionTrait + StreamTrait,
{
    let backend = ConnectionTrait::get_database_backend(db);
    let mut after = base.watermark;
    let mut budget = ReadBudget::new(PAGE);
    loop {
        let limit = budget.rows();
        let q = backend.build(&select(
            Condition::all().add(Expr::col("id").gt(after)),
            Some(limit),
        ));
        let (page, more) = bounded_read::read(
            db,
            q,
            limit,
            &mut budget,
            || "reading the outbox".into(),
            decode,
        )
        .await?;
        let Some(last) = page.last().map(|c| c.id) else {
            return Ok(());
        };
        after = last;
        for change in page {
            if !base.contains(change.id) {
                each(change)?;
            }
        }
        if !more {
            return Ok(());
        }
    }
}
