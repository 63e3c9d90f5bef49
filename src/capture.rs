//! What the derived hooks call: write the outbox row on the caller's connection.
//!
//! The outbox row is written with the same connection the application passed to
//! `insert`, `update`, `save` or `delete`. Inside a transaction that is the transaction,
//! so the row and its change commit or roll back together. On a bare pooled connection
//! they would be two separate autocommits, and a crash between them loses the change;
//! by default ormsync refuses such a write *before* it happens (see [`guard`]).

use std::sync::atomic::{AtomicBool, Ordering};

use sea_orm::sea_query::Query;
use sea_orm::{
    ActiveModelTrait, ActiveValue, Condition, ConnectionTrait, DbBackend, DbErr, IntoActiveModel,
    Iterable, PrimaryKeyToColumn, QueryFilter, QuerySelect,
};
use tracing::Instrument;

use crate::bulk;
use crate::change::{Op, Row};
use crate::entity::Replicated;
use crate::error::Error;
use crate::outbox::OUTBOX;

static NON_ATOMIC: AtomicBool = AtomicBool::new(false);

/// Allows writes of replicated entities through a pooled connection, outside a transaction.
///
/// Each such write and its outbox row then commit separately: a crash between the two
/// loses the change at every destination (until a verify finds the drift). Call this only
/// if the application cannot use transactions and accepts that risk.
///
/// ```
/// ormsync::capture::allow_non_atomic_writes();
/// ```
pub fn allow_non_atomic_writes() {
    NON_ATOMIC.store(true, Ordering::Relaxed);
}

/// Goes back to refusing writes outside a transaction (the default).
pub fn refuse_non_atomic_writes() {
    NON_ATOMIC.store(false, Ordering::Relaxed);
}

/// Whether [`allow_non_atomic_writes`] is in force.
pub(crate) fn non_atomic_allowed() -> bool {
    NON_ATOMIC.load(Ordering::Relaxed)
}

/// Refuses a write of `E` through a pooled connection unless
/// [`allow_non_atomic_writes`] was called. Runs in `before_save` and `before_delete`, so a
/// refused write never reaches the database.
///
/// # Errors
///
/// [`Error::NonAtomicWrite`] (as `DbErr::Custom`) when `C` is a pool.
pub fn guard<E: Replicated, C: ConnectionTrait>(_db: &C) -> Result<(), DbErr> {
    // sea-orm's ConnectionTrait does not say whether it is a transaction, and `C` is not
    // 'static, so the type's name is the one thing to go by. Pools are `DatabaseConnection`,
    // `RestrictedConnection` and ormsync's `GuardedConnection`; transactions, executors and
    // user wrappers pass.
    let name = std::any::type_name::<C>();
    let pooled = [
        "::DatabaseConnection",
        "::RestrictedConnection",
        "::GuardedConnection",
    ]
    .iter()
    .any(|pool| name.ends_with(pool));
    if pooled && !non_atomic_allowed() {
        return Err(Error::NonAtomicWrite {
            table: E::default().table_name().to_string(),
        }
        .into());
    }
    Ok(())
}

/// Locks the row of an update that sets no column (called from the derived `before_save`,
/// after the entity's own hook).
///
/// sea-orm runs no `UPDATE` for such a model and reads the row back with a plain `SELECT`,
/// so nothing orders its capture after another transaction's pending change of the same
/// row: that change could commit after the read yet hold the lower outbox id, and every
/// destination would end with the older row. The lock an `UPDATE` would have taken puts
/// the capture after it. An insert, or an update that sets a column, costs nothing.
///
/// # Errors
///
/// A database error taking the lock.
pub async fn lock_unchanged<E: Replicated, C: ConnectionTrait>(
    db: &C,
    model: &E::ActiveModel,
    insert: bool,
) -> Result<(), DbErr> {
    let sets_a_column = E::Column::iter().any(|c| {
        E::PrimaryKey::from_column(c).is_none() && matches!(model.get(c), ActiveValue::Set(_))
    });
    if insert || sets_a_column {
        return Ok(());
    }
    if let Some(key) = active_key::<E>(model) {
        locked_row::<E, C>(db, bulk::keys_condition::<E>(std::iter::once(key))).await?;
    }
    Ok(())
}

/// The row an update left, as its capture must ship it (called from the derived
/// `after_save`, before the entity's own hook).
///
/// MySQL and MariaDB have no `UPDATE … RETURNING`, so sea-orm reads the row back with a
/// plain `SELECT`. Under REPEATABLE READ, their default, that answers from the snapshot the
/// transaction took at its first read; a row the `UPDATE` matched but did not change (it
/// already held the new values, written by a transaction that committed since) has no
/// version of this transaction's, so the read-back is the row from before that other
/// transaction, and shipping it would undo that transaction's change at every destination.
/// A locking read returns the latest version, and the `UPDATE` already holds its lock.
/// Elsewhere sea-orm's model came from `RETURNING` and is returned as it is.
///
/// # Errors
///
/// A database error reading the row.
pub async fn current<E: Replicated, C: ConnectionTrait>(
    db: &C,
    model: E::Model,
    insert: bool,
) -> Result<E::Model, DbErr> {
    if insert || db.get_database_backend() != DbBackend::MySql {
        return Ok(model);
    }
    let key = bulk::key_condition::<E>(std::slice::from_ref(&model));
    Ok(locked_row::<E, C>(db, key).await?.unwrap_or(model))
}

/// The key of `model`, a value per primary-key column in key order; `None` when one is
/// not set.
fn active_key<E: Replicated>(model: &E::ActiveModel) -> Option<Vec<sea_orm::Value>> {
    E::PrimaryKey::iter()
        .map(|k| match model.get(k.into_column()) {
            ActiveValue::Set(v) | ActiveValue::Unchanged(v) => Some(v),
            ActiveValue::NotSet => None,
        })
        .collect()
}

/// `E`'s row matching `key` (a key condition), locked until the transaction ends. A
/// locking read returns the latest version of the row whatever the transaction's
/// snapshot; SQLite has no row locks, so there the transaction takes the database's write
/// lock before a plain read.
async fn locked_row<E: Replicated, C: ConnectionTrait>(
    db: &C,
    key: Condition,
) -> Result<Option<E::Model>, DbErr> {
    let mut find = E::find().filter(key);
    if db.get_database_backend() == DbBackend::Sqlite {
        // SQLite locks the whole database, and only for writing. Were this read a
        // transaction's first statement, a writer committing before the delete or the
        // outbox insert that follows would make SQLite refuse that write
        // (`SQLITE_BUSY_SNAPSHOT`) instead of waiting. A write that touches nothing takes
        // the lock first, waiting for any writer as `busy_timeout` allows; the read is
        // then current too.
        db.execute_unprepared("UPDATE ormsync_outbox SET id = id WHERE 0")
            .await?;
    } else {
        find = find.lock_exclusive();
    }
    find.one(db).await
}

/// Captures an insert or update of `model` (called from the derived `after_save`).
///
/// # Errors
///
/// A database error writing the outbox row; the application's transaction should then be
/// rolled back, as for any failed statement.
pub async fn save<E: Replicated, C: ConnectionTrait>(
    db: &C,
    model: &E::Model,
    insert: bool,
) -> Result<(), DbErr> {
    let op = if insert { Op::Insert } else { Op::Update };
    let row = E::to_row(model)?;
    let key = E::key_of(model)?;
    write::<E, C>(db, op, &key, &row).await
}

/// Reads the row a delete is about to remove into its `ActiveModel` (called from the
/// derived `before_delete`), so the captured delete carries the whole row as it is: a
/// destination's row filter, sync key and conflict policy all judge a delete by it.
///
/// The model the application holds may lack columns, or be older than the row: read in
/// an earlier transaction, before another one changed the row. A row filter judging the
/// older values could hold the delete back from a destination that holds the row. So the
/// row is read by key, locked (the delete takes that lock anyway) and therefore current
/// on every backend: one read per delete, in the same transaction.
///
/// A row that is not there is deleted by nobody, and its delete must not be captured
/// ([`deletes_a_row`] tells the derived `after_delete`): another transaction may be
/// inserting that key right now, unseen by this one, and a captured delete would land
/// after that insert at every destination.
///
/// # Errors
///
/// A database error reading the row.
pub async fn complete<E: Replicated, C: ConnectionTrait>(
    db: &C,
    mut model: E::ActiveModel,
) -> Result<E::ActiveModel, DbErr>
where
    E::Model: IntoActiveModel<E::ActiveModel>,
{
    // Without its key sea-orm deletes nothing either.
    let Some(key) = active_key::<E>(&model) else {
        return Ok(model);
    };
    let key = bulk::keys_condition::<E>(std::iter::once(key));
    match locked_row::<E, C>(db, key).await? {
        // Every value `Unchanged`, the key's included: the mark of a row found.
        Some(found) => Ok(found.into_active_model()),
        None => {
            // A `Set` key: the mark of a row not found.
            for k in E::PrimaryKey::iter() {
                model.reset(k.into_column());
            }
            Ok(model)
        }
    }
}

/// Whether `model`, as [`complete`] returned it, names a row that was there to delete:
/// the derived `after_delete` captures the delete only then.
pub fn deletes_a_row<E: Replicated>(model: &E::ActiveModel) -> bool {
    E::PrimaryKey::iter().all(|k| matches!(model.get(k.into_column()), ActiveValue::Unchanged(_)))
}

/// Captures a delete (called from the derived `after_delete`).
///
/// # Errors
///
/// As for [`save`].
pub async fn delete<E: Replicated, C: ConnectionTrait>(
    db: &C,
    model: &E::ActiveModel,
) -> Result<(), DbErr> {
    let row = E::active_to_row(model)?;
    let spec_key = E::table_spec().key;
    let key = Row(row
        .0
        .iter()
        .filter(|(c, _)| spec_key.contains(c))
        .cloned()
        .collect());
    write::<E, C>(db, Op::Delete, &key, &row).await
}

async fn write<E: Replicated, C: ConnectionTrait>(
    db: &C,
    op: Op,
    key: &Row,
    row: &Row,
) -> Result<(), DbErr> {
    write_many(db, E::default().table_name(), op, &[(key, row)]).await
}

/// Outbox rows per statement when capturing many changes at once.
const ROWS_PER_STATEMENT: usize = 500;

/// The table whose changes an outbox insert built by [`write_many`] captures.
pub(crate) fn captured_table(stmt: &sea_orm::Statement) -> Option<String> {
    match stmt.values.as_ref()?.0.first()? {
        sea_orm::Value::String(Some(table)) => Some(table.to_string()),
        _ => None,
    }
}

/// Writes one outbox row per `(key, row)` change of `table`, several per statement; the one
/// place that writes the outbox. Every row of a statement is of one table, named by its
/// first value ([`captured_table`] relies on both).
pub(crate) async fn write_many<C: ConnectionTrait>(
    db: &C,
    table: &str,
    op: Op,
    changes: &[(&Row, &Row)],
) -> Result<(), DbErr> {
    if changes.is_empty() {
        return Ok(());
    }
    let backend = db.get_database_backend();
    async {
        for chunk in changes.chunks(ROWS_PER_STATEMENT) {
            let mut stmt = Query::insert();
            stmt.into_table(OUTBOX)
                .columns(["table_name", "op", "pk", "payload"]);
            for (key, row) in chunk {
                stmt.values_panic([
                    table.into(),
                    op.code().into(),
                    key.to_payload(backend).into(),
                    row.to_payload(backend).into(),
                ]);
            }
            db.execute(&stmt).await?;
        }
        Ok::<_, DbErr>(())
    }
    .instrument(tracing::trace_span!(
        "ormsync.capture",
        table,
        op = op.code(),
        rows = changes.len()
    ))
    .await?;
    metrics::counter!("ormsync_changes_captured_total", "table" => table.to_string())
        .increment(changes.len() as u64);
    crate::signal::captured();
    Ok(())
}
