//! What the derived hooks call: write the outbox row on the caller's connection.
//!
//! The outbox row is written with the same connection the application passed to
//! `insert`, `update`, `save` or `delete`. Inside a transaction that is the transaction,
//! so the row and its change commit or roll back together. On a bare pooled connection
//! they would be two separate autocommits, and a crash between them loses the change;
//! by default ormsync refuses such a write *before* it happens (see [`require_transaction`]).

use std::sync::atomic::{AtomicBool, Ordering};

use sea_orm::sea_query::Query;
use sea_orm::{
    ActiveModelTrait, ActiveValue, Condition, ConnectionTrait, DbBackend, DbErr, IntoActiveModel,
    Iterable, PrimaryKeyToColumn, QueryFilter, QuerySelect,
};
use tracing::Instrument;

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
pub fn require_transaction<E: Replicated, C: ConnectionTrait>(_db: &C) -> Result<(), DbErr> {
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
/// A row the locked read does not find is not updated: the call fails as sea-orm's own
/// read-back would, with `DbErr::RecordNotFound`. Letting sea-orm's later, unlocked read
/// find a row that another transaction inserted in between would capture that row without
/// holding its lock, so a third transaction could change it and take a lower outbox id.
///
/// # Errors
///
/// A database error taking the lock; `DbErr::RecordNotFound` when there is no such row.
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
    if let Some(key) = active_key::<E>(model)
        && locked_current::<E, C>(db, key).await?.is_none()
    {
        return Err(DbErr::RecordNotFound(format!(
            "`{}`: the row to update does not exist",
            E::default().table_name()
        )));
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
    let key = crate::entity::key_condition::<E>(std::slice::from_ref(&model));
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

/// `E`'s row keyed `key`, locked, as [`locked_row`] reads it; on PostgreSQL a row not found
/// is looked for once more.
///
/// PostgreSQL's locked read, under READ COMMITTED, waits for a transaction holding the row
/// and then skips the row if that transaction deleted it, even if it inserted the same key
/// again: the new row is not in the statement's snapshot. A second statement sees it, so a
/// delete (or an update that sets no column) racing a delete and re-insert of its key acts
/// on the row the source ends with, instead of finding nothing.
async fn locked_current<E: Replicated, C: ConnectionTrait>(
    db: &C,
    key: Vec<sea_orm::Value>,
) -> Result<Option<E::Model>, DbErr> {
    let condition = || crate::entity::keys_condition::<E>(std::iter::once(key.clone()));
    let found = locked_row::<E, C>(db, condition()).await?;
    if found.is_some() || db.get_database_backend() != DbBackend::Postgres {
        return Ok(found);
    }
    locked_row::<E, C>(db, condition()).await
}

/// How many rows of `E`'s table this PostgreSQL transaction has deleted so far.
async fn deleted_so_far<E: Replicated, C: ConnectionTrait>(db: &C) -> Result<i64, DbErr> {
    let entity = E::default();
    let table = quoted(entity.table_name());
    let name = match entity.schema_name() {
        Some(schema) => format!("{}.{table}", quoted(schema)),
        None => table,
    };
    let row = db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT COALESCE((SELECT n_tup_del FROM pg_stat_xact_user_tables \
             WHERE relid = to_regclass($1)), 0)::int8",
            [name.into()],
        ))
        .await?;
    Ok(row
        .and_then(|r| r.try_get_by_index::<i64>(0).ok())
        .unwrap_or(0))
}

/// `name` as a PostgreSQL quoted identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Where a delete whose row was not found is recognised from `before_delete` to
/// `after_delete`: the transaction it runs in, its table and its key.
fn unfound_key<E: Replicated>(model: &E::ActiveModel) -> String {
    let key: Vec<String> = E::PrimaryKey::iter()
        .map(|k| format!("{:?}", model.get(k.into_column())))
        .collect();
    format!("{}\u{0}{}", E::default().table_name(), key.join("\u{0}"))
}

/// Fails the transaction of a delete whose row [`complete`] did not find, if its `DELETE`
/// removed a row all the same (called from the derived `after_delete`, first).
///
/// That row was committed by another transaction between the locked read and the
/// `DELETE`; its delete was not captured, so every destination would keep it. On
/// PostgreSQL the transaction is aborted with a serialization failure (SQLSTATE `40001`),
/// which an application that retries those retries, and which no commit can get past. On
/// MySQL and MariaDB (under READ COMMITTED; REPEATABLE READ, their default, locks the gap
/// and never gets here) the call fails with [`Error::UncapturedDelete`], and the
/// application must roll back. Elsewhere, and when the `DELETE` removed nothing, it does
/// nothing.
///
/// # Errors
///
/// As said; or a database error reading the count.
pub async fn check_unfound_delete<E: Replicated, C: ConnectionTrait>(
    db: &C,
    model: &E::ActiveModel,
) -> Result<(), DbErr> {
    if deletes_a_row::<E>(model) || active_key::<E>(model).is_none() {
        return Ok(());
    }
    let table = E::default().table_name().to_string();
    let removed = match db.get_database_backend() {
        DbBackend::Postgres => {
            let Some(before) = unfound::take(db, &unfound_key::<E>(model)) else {
                return Ok(());
            };
            deleted_so_far::<E, C>(db).await? > before
        }
        DbBackend::MySql => {
            // Without bound values: the text protocol, so nothing is prepared between the
            // `DELETE` and this (a prepared statement resets the count).
            let row = db
                .query_one_raw(sea_orm::Statement::from_string(
                    DbBackend::MySql,
                    "SELECT ROW_COUNT()",
                ))
                .await?;
            row.and_then(|r| r.try_get_by_index::<i64>(0).ok())
                .unwrap_or(0)
                > 0
        }
        _ => false,
    };
    if !removed {
        return Ok(());
    }
    let error = Error::UncapturedDelete { table };
    if db.get_database_backend() == DbBackend::Postgres {
        let message = error.to_string().replace('\'', "''");
        db.execute_unprepared(&format!(
            "DO $$ BEGIN RAISE EXCEPTION '{}' USING ERRCODE = '40001'; END $$",
            message.replace('$', "")
        ))
        .await?;
    }
    Err(error.into())
}

/// The deleted-row counts taken when a PostgreSQL delete's locked read found no row, until
/// its `after_delete` compares them: sea-orm hands the hooks nothing else to carry them.
mod unfound {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// An entry whose `DELETE` failed is never taken; it is dropped once this old.
    const STALE: Duration = Duration::from_secs(600);

    type Entries = HashMap<(usize, String), (i64, Instant)>;
    static COUNTS: Mutex<Option<Entries>> = Mutex::new(None);

    fn address<C>(db: &C) -> usize {
        db as *const C as usize
    }

    pub(super) fn remember<C>(db: &C, key: &str, count: i64) {
        if let Ok(mut guard) = COUNTS.lock() {
            let map = guard.get_or_insert_with(HashMap::new);
            if map.len() > 1024 {
                map.retain(|_, (_, at)| at.elapsed() < STALE);
            }
            map.insert((address(db), key.to_string()), (count, Instant::now()));
        }
    }

    pub(super) fn take<C>(db: &C, key: &str) -> Option<i64> {
        COUNTS
            .lock()
            .ok()?
            .as_mut()?
            .remove(&(address(db), key.to_string()))
            .map(|(count, _)| count)
    }
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
    let at = Some(db.get_database_backend());
    let row = crate::entity::row_at::<E>(model, at)?;
    let key = crate::entity::key_at::<E>(model, at)?;
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
/// That locked read decides the delete, and sea-orm's `DELETE`, a later statement, must
/// agree with it:
///
/// - **Found**: the row stays locked, so the `DELETE` removes exactly the row captured.
/// - **Not found**: nothing is captured (another transaction may be inserting that key,
///   unseen by this one, and a captured delete would land after its insert at every
///   destination). The `DELETE` must then remove nothing, but PostgreSQL cannot lock a
///   missing row, nor can MySQL under READ COMMITTED: a row of that key committed by
///   another transaction between the read and the `DELETE` would be removed with no
///   captured delete, and stay at every destination. [`check_unfound_delete`] sees that
///   happen and fails the transaction.
///
/// On PostgreSQL a locked read that waited for another transaction which deleted the row
/// and inserted the key again returns nothing: the new row is not in the statement's
/// snapshot. The read is then made once more, and finds and locks the new row.
///
/// [`deletes_a_row`] tells the derived `after_delete` which case it was.
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
    match locked_current::<E, C>(db, key).await? {
        // Every value `Unchanged`, the key's included: the mark of a row found.
        Some(found) => Ok(found.into_active_model()),
        None => {
            // A `Set` key: the mark of a row not found.
            for k in E::PrimaryKey::iter() {
                model.reset(k.into_column());
            }
            if db.get_database_backend() == DbBackend::Postgres {
                let before = deleted_so_far::<E, C>(db).await?;
                unfound::remember(db, &unfound_key::<E>(&model), before);
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
    let row = crate::entity::active_row_at::<E>(model, Some(db.get_database_backend()))?;
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
