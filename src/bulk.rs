//! Replicated bulk writes: `insert_many`, `update_many` and `delete_many` that capture every
//! row they touch.
//!
//! ormsync captures changes in the entity's `ActiveModelBehavior` hooks, and sea-orm runs
//! those hooks only for `ActiveModel::insert`, `update`, `save`, `delete` and
//! `Model::delete`. Its bulk operations go straight to SQL and are **not captured**:
//!
//! | sea-orm (not captured)                          | replicated replacement                        |
//! |-------------------------------------------------|-----------------------------------------------|
//! | `Entity::insert_many(models).exec(db)`          | [`insert_many::<Entity, _>(db, models)`](insert_many) |
//! | `Entity::insert(model).exec(db)`                | [`insert_many`] with one model, or `model.insert(db)` |
//! | `Entity::update_many().set(..).filter(c).exec(db)` | [`update_many::<Entity, _>(db, c, set)`](update_many) |
//! | `Entity::delete_many().filter(c).exec(db)`      | [`delete_many::<Entity, _>(db, c)`](delete_many) |
//! | `Entity::delete_by_id(id).exec(db)`             | [`delete_many`] with the key as condition, or `model.delete(db)` |
//! | raw SQL (`execute_unprepared`, `Statement`)     | none: ormsync cannot see it                   |
//!
//! A change made through the left column reaches no destination, and the destinations
//! silently drift from the source (until a verify finds it). The opt-in
//! [`GuardedConnection`](crate::guard::GuardedConnection) catches the query-builder ones
//! and refuses their transaction.
//!
//! Each function here runs the bulk statement and writes one outbox row per affected row,
//! on the connection it is given, so inside a transaction the rows and their outbox entries
//! commit or roll back together. How the affected rows are found depends on the backend:
//!
//! - **PostgreSQL and SQLite**: the statement itself reports them with `RETURNING` (SQLite
//!   has it since 3.35; the SQLite that sqlx bundles is newer).
//! - **MySQL / MariaDB**: MySQL has no `RETURNING`, and MariaDB none for `UPDATE`, so the
//!   rows are found by a keyed read in the same transaction: an update or delete first
//!   locks the matching rows with `SELECT … FOR UPDATE`, then changes exactly those keys,
//!   so the rows changed are the rows captured even if another transaction commits a
//!   matching row in between; an update then reads the locked rows back for their new
//!   values, and an insert reads its rows back by key.
//!
//! The outbox rows of one call are written with multi-row `INSERT`s (up to 500 rows a
//! statement), not one statement per row.
//!
//! Like the hooks, every function refuses to run on a bare pool (`DatabaseConnection`)
//! unless [`allow_non_atomic_writes`](crate::capture::allow_non_atomic_writes) was called:
//! see [`ormsync::capture::require_transaction`](crate::capture::require_transaction).
//!
//! What they do not do, as sea-orm's bulk operations do not either:
//!
//! - run `ActiveModelBehavior` or [`ReplicatedHooks`](crate::ReplicatedHooks) methods;
//! - capture rows that the database changes on its own, through `ON DELETE CASCADE`,
//!   `ON UPDATE CASCADE` or triggers.
//!
//! [`update_many`] refuses to assign a primary key column: the change would have to travel
//! as a delete of the old key and an insert of the new one, and the outbox records the row
//! by the key it has after the change.

use sea_orm::sea_query::{Expr, IntoCondition, Query, ReturningClause};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr,
    EntityTrait, FromQueryResult, IdenStatic, Iterable, QueryFilter, QuerySelect, QueryTrait,
    Value,
};

use crate::capture::require_transaction;
use crate::change::{Op, Row};
use crate::entity::{Replicated, key_columns, key_condition, keys_condition};

/// Keys per `WHERE key IN (…)` of the keyed reads and writes on MySQL / MariaDB.
const KEYS_PER_STATEMENT: usize = 500;

/// Inserts `models` and captures every inserted row.
///
/// The replicated counterpart of `Entity::insert_many(models).exec(db)`, which bypasses
/// the hooks and so is not captured. Returns the inserted rows as the database stored
/// them, with generated keys and column defaults filled in, in no guaranteed order (match
/// them by key). It returns the rows rather than a count because they are read anyway, to
/// be captured, and a caller inserting rows with generated keys needs them.
///
/// As with sea-orm's `insert_many`, a column set in some models and not in others is
/// inserted as `NULL` where it is not set, and no `ActiveModelBehavior` hook runs. An empty
/// `models` does nothing. The insert is one statement, as sea-orm's is, so the values of
/// `models` must stay within the backend's limit of bound parameters (65 535 on PostgreSQL
/// and MySQL, 32 766 on SQLite): split a larger input into several calls in the same
/// transaction.
///
/// On PostgreSQL and SQLite the rows come back from `INSERT … RETURNING`. On MySQL /
/// MariaDB, when every model has its whole primary key set, one `INSERT` is followed by one
/// keyed `SELECT` (per 500 rows); when some model leaves its key to the database
/// (`AUTO_INCREMENT`), each model is inserted and read back on its own, since a multi-row
/// insert reports only the first generated id.
///
/// # Errors
///
/// - [`Error::NonAtomicWrite`](crate::Error::NonAtomicWrite) (as `DbErr::Custom`) on a
///   bare pool, before anything is written;
/// - the database's error for the insert, the read or the outbox write; the transaction
///   should then be rolled back, as for any failed statement;
/// - `DbErr::RecordNotFound` on MySQL / MariaDB when the rows read back by key are not the
///   rows inserted (the database changed a key on insert, e.g. a `0` into an
///   `AUTO_INCREMENT` column): nothing was captured, roll back.
///
/// # Examples
///
/// ```no_run
/// use ormsync::Replicated;
/// use sea_orm::entity::prelude::*;
/// use sea_orm::{Set, TransactionTrait};
///
/// #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Replicated)]
/// #[sea_orm(table_name = "customers")]
/// pub struct Model {
///     #[sea_orm(primary_key)]
///     pub id: i64,
///     pub name: String,
/// }
///
/// #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// pub enum Relation {}
///
/// # async fn run(db: sea_orm::DatabaseConnection) -> Result<(), DbErr> {
/// let txn = db.begin().await?;
/// let rows = ormsync::bulk::insert_many::<Entity, _>(
///     &txn,
///     ["Ada", "Grace", "Edsger"].map(|name| ActiveModel {
///         name: Set(name.into()),
///         ..Default::default()
///     }),
/// )
/// .await?;
/// assert_eq!(rows.len(), 3); // with their generated ids
/// txn.commit().await?; // the rows and their three outbox entries commit together
/// # Ok(()) }
/// ```
pub async fn insert_many<E, C>(
    db: &C,
    models: impl IntoIterator<Item = E::ActiveModel>,
) -> Result<Vec<E::Model>, DbErr>
where
    E: Replicated,
    C: ConnectionTrait,
{
    require_transaction::<E, C>(db)?;
    let models: Vec<E::ActiveModel> = models.into_iter().collect();
    if models.is_empty() {
        return Ok(Vec::new());
    }
    let rows = match db.get_database_backend() {
        DbBackend::MySql => insert_then_read::<E, C>(db, models).await?,
        backend => {
            let mut stmt = E::insert_many(models).into_query();
            stmt.returning(returning_all::<E>(backend));
            read_models::<E, C>(db, &stmt).await?
        }
    };
    capture::<E, C>(db, Op::Insert, &rows).await?;
    Ok(rows)
}

/// Updates the rows of `E` matching `condition` with the assignments `set`, and captures
/// every updated row. Returns the number of rows updated (matched by the condition, whether
/// or not their values changed).
///
/// The replicated counterpart of
/// `Entity::update_many().col_expr(..).filter(condition).exec(db)`, which bypasses the hooks
/// and so is not captured. `set` pairs a column with its new value or an expression
/// (`Expr::value(..)`, `Expr::col(..).add(1)`, …); [`assignments`] turns an `ActiveModel`'s
/// set columns into such pairs, as `UpdateMany::set` does. A `condition` with nothing in it
/// matches every row. An empty `set` changes nothing and returns 0. A condition that
/// matches nothing writes no outbox row.
///
/// On PostgreSQL and SQLite the updated rows come back from `UPDATE … RETURNING`. On
/// MySQL / MariaDB the matching rows are locked first (`SELECT … FOR UPDATE`), the update
/// is applied to exactly those keys, and the rows are read back for their new values.
///
/// # Errors
///
/// - [`Error::NonAtomicWrite`](crate::Error::NonAtomicWrite) (as `DbErr::Custom`) on a
///   bare pool, before anything is written;
/// - `DbErr::Custom` when `set` assigns a primary key column (refused before anything is
///   written: delete the old rows and insert new ones instead);
/// - the database's error for any statement; roll the transaction back.
///
/// # Examples
///
/// ```no_run
/// use ormsync::Replicated;
/// use sea_orm::entity::prelude::*;
/// use sea_orm::TransactionTrait;
/// use sea_orm::sea_query::{Expr, ExprTrait};
///
/// #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Replicated)]
/// #[sea_orm(table_name = "accounts")]
/// pub struct Model {
///     #[sea_orm(primary_key)]
///     pub id: i64,
///     pub balance: i64,
///     pub note: Option<String>,
/// }
///
/// #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// pub enum Relation {}
///
/// # async fn run(db: sea_orm::DatabaseConnection) -> Result<(), DbErr> {
/// let txn = db.begin().await?;
/// let n = ormsync::bulk::update_many::<Entity, _>(
///     &txn,
///     Column::Balance.lt(0),
///     [
///         (Column::Balance, Expr::col(Column::Balance).add(100)),
///         (Column::Note, Expr::value("topped up")),
///     ],
/// )
/// .await?;
/// txn.commit().await?; // `n` rows and `n` outbox entries commit together
/// # Ok(()) }
/// ```
pub async fn update_many<E, C>(
    db: &C,
    condition: impl IntoCondition,
    set: impl IntoIterator<Item = (E::Column, Expr)>,
) -> Result<u64, DbErr>
where
    E: Replicated,
    C: ConnectionTrait,
{
    require_transaction::<E, C>(db)?;
    let set: Vec<(E::Column, Expr)> = set.into_iter().collect();
    let key: Vec<E::Column> = key_columns::<E>();
    if let Some((c, _)) = set
        .iter()
        .find(|(c, _)| key.iter().any(|k| k.as_str() == c.as_str()))
    {
        return Err(DbErr::Custom(format!(
            "ormsync::bulk::update_many refused to assign `{}.{}`, a primary key column: \
             delete the old rows and insert the new ones instead, so that the destinations \
             see both",
            E::default().table_name(),
            c.as_str()
        )));
    }
    if set.is_empty() {
        return Ok(0);
    }
    let assign = |mut update: sea_orm::UpdateMany<E>| {
        for (c, e) in &set {
            update = update.col_expr(*c, e.clone());
        }
        update
    };
    let condition = condition.into_condition();
    let rows = match db.get_database_backend() {
        DbBackend::MySql => {
            let locked = lock_matching::<E, C>(db, condition).await?;
            let mut rows = Vec::with_capacity(locked.len());
            for chunk in locked.chunks(KEYS_PER_STATEMENT) {
                let keys = key_condition::<E>(chunk);
                assign(E::update_many())
                    .filter(keys.clone())
                    .exec(db)
                    .await?;
                // Locked (they already are) so the read returns each row's latest version:
                // a plain read under REPEATABLE READ shows a row the update left unchanged
                // as the transaction's first snapshot saw it (see `capture::current`).
                rows.extend(E::find().filter(keys).lock_exclusive().all(db).await?);
            }
            rows
        }
        backend => {
            let mut stmt = assign(E::update_many()).filter(condition).into_query();
            stmt.returning(returning_all::<E>(backend));
            read_models::<E, C>(db, &stmt).await?
        }
    };
    capture::<E, C>(db, Op::Update, &rows).await?;
    Ok(rows.len() as u64)
}

/// Deletes the rows of `E` matching `condition` and captures every deleted row. Returns the
/// number of rows deleted.
///
/// The replicated counterpart of `Entity::delete_many().filter(condition).exec(db)` and of
/// `Entity::delete_by_id(id).exec(db)` (pass the key as the condition), which bypass the
/// hooks and so are not captured. A `condition` with nothing in it matches every row. A
/// condition that matches nothing writes no outbox row. Each delete is captured with the
/// whole row as it was.
///
/// On PostgreSQL and SQLite the deleted rows come back from `DELETE … RETURNING`. On MySQL /
/// MariaDB the matching rows are read and locked first (`SELECT … FOR UPDATE`), then
/// exactly those keys are deleted.
///
/// # Errors
///
/// - [`Error::NonAtomicWrite`](crate::Error::NonAtomicWrite) (as `DbErr::Custom`) on a
///   bare pool, before anything is written;
/// - the database's error for any statement; roll the transaction back.
///
/// # Examples
///
/// ```no_run
/// use ormsync::Replicated;
/// use sea_orm::entity::prelude::*;
/// use sea_orm::{Condition, TransactionTrait};
///
/// #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Replicated)]
/// #[sea_orm(table_name = "sessions")]
/// pub struct Model {
///     #[sea_orm(primary_key)]
///     pub id: i64,
///     pub user_id: i64,
///     pub expired: bool,
/// }
///
/// #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// pub enum Relation {}
///
/// # async fn run(db: sea_orm::DatabaseConnection) -> Result<(), DbErr> {
/// let txn = db.begin().await?;
/// let gone = ormsync::bulk::delete_many::<Entity, _>(
///     &txn,
///     Condition::any().add(Column::Expired.eq(true)).add(Column::UserId.eq(7)),
/// )
/// .await?;
/// // Instead of `Entity::delete_by_id(42).exec(&txn)`:
/// ormsync::bulk::delete_many::<Entity, _>(&txn, Column::Id.eq(42)).await?;
/// txn.commit().await?;
/// # let _ = gone; Ok(()) }
/// ```
pub async fn delete_many<E, C>(db: &C, condition: impl IntoCondition) -> Result<u64, DbErr>
where
    E: Replicated,
    C: ConnectionTrait,
{
    require_transaction::<E, C>(db)?;
    let condition = condition.into_condition();
    let rows = match db.get_database_backend() {
        DbBackend::MySql => {
            let locked = lock_matching::<E, C>(db, condition).await?;
            for chunk in locked.chunks(KEYS_PER_STATEMENT) {
                E::delete_many()
                    .filter(key_condition::<E>(chunk))
                    .exec(db)
                    .await?;
            }
            locked
        }
        backend => {
            let mut stmt = E::delete_many().filter(condition).into_query();
            stmt.returning(returning_all::<E>(backend));
            read_models::<E, C>(db, &stmt).await?
        }
    };
    capture::<E, C>(db, Op::Delete, &rows).await?;
    Ok(rows.len() as u64)
}

/// The `set` columns of `model` as assignments for [`update_many`], as sea-orm's
/// `UpdateMany::set` takes them (`Set` columns only; `Unchanged` and `NotSet` ones are left
/// out).
///
/// ```
/// use ormsync::Replicated;
/// use sea_orm::entity::prelude::*;
/// use sea_orm::Set;
///
/// #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Replicated)]
/// #[sea_orm(table_name = "accounts")]
/// pub struct Model {
///     #[sea_orm(primary_key)]
///     pub id: i64,
///     pub note: Option<String>,
/// }
///
/// #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// pub enum Relation {}
///
/// let set = ormsync::bulk::assignments::<Entity>(&ActiveModel {
///     note: Set(Some("closed".into())),
///     ..Default::default()
/// });
/// assert_eq!(set.len(), 1);
/// assert!(matches!(set[0].0, Column::Note));
/// ```
pub fn assignments<E: EntityTrait>(model: &E::ActiveModel) -> Vec<(E::Column, Expr)> {
    E::Column::iter()
        .filter_map(|c| match model.get(c) {
            ActiveValue::Set(v) => Some((c, c.save_as(Expr::val(v)))),
            ActiveValue::Unchanged(_) | ActiveValue::NotSet => None,
        })
        .collect()
}

/// `RETURNING` every column, read back as sea-orm reads a `SELECT` of the entity.
fn returning_all<E: EntityTrait>(backend: DbBackend) -> ReturningClause {
    Query::returning().exprs(E::Column::iter().map(|c| c.select_as(c.into_returning_expr(backend))))
}

/// Runs a statement that yields whole rows of `E` (a `RETURNING` one) and decodes them.
async fn read_models<E: EntityTrait, C: ConnectionTrait>(
    db: &C,
    stmt: &impl sea_orm::StatementBuilder,
) -> Result<Vec<E::Model>, DbErr> {
    db.query_all(stmt)
        .await?
        .iter()
        .map(|row| E::Model::from_query_result(row, ""))
        .collect()
}

/// MySQL / MariaDB: the rows matching `condition`, locked until the transaction ends.
async fn lock_matching<E: EntityTrait, C: ConnectionTrait>(
    db: &C,
    condition: Condition,
) -> Result<Vec<E::Model>, DbErr> {
    E::find().filter(condition).lock_exclusive().all(db).await
}

/// MySQL / MariaDB: inserts `models` and reads the inserted rows back by key.
async fn insert_then_read<E: Replicated, C: ConnectionTrait>(
    db: &C,
    models: Vec<E::ActiveModel>,
) -> Result<Vec<E::Model>, DbErr> {
    let cols = key_columns::<E>();
    let keyed: Option<Vec<Vec<Value>>> = models
        .iter()
        .map(|m| {
            cols.iter()
                .map(|c| match m.get(*c) {
                    ActiveValue::Set(v) | ActiveValue::Unchanged(v) => Some(v),
                    ActiveValue::NotSet => None,
                })
                .collect()
        })
        .collect();
    let table = E::default().table_name();
    let Some(keys) = keyed else {
        // Some key is left to AUTO_INCREMENT: LAST_INSERT_ID() of a multi-row insert names
        // only the first row, and the others need not be consecutive, so insert one by one.
        let mut rows = Vec::with_capacity(models.len());
        for m in models {
            let id = E::insert(m).exec(db).await?.last_insert_id;
            let row = E::find_by_id(id).one(db).await?.ok_or_else(|| {
                DbErr::RecordNotFound(format!(
                    "ormsync::bulk::insert_many: the row just inserted into `{table}` is not \
                     found by its generated key"
                ))
            })?;
            rows.push(row);
        }
        return Ok(rows);
    };
    let n = models.len();
    E::insert_many(models).exec_without_returning(db).await?;
    let mut rows = Vec::with_capacity(n);
    for chunk in keys.chunks(KEYS_PER_STATEMENT) {
        rows.extend(
            E::find()
                .filter(keys_condition::<E>(chunk.iter().cloned()))
                .all(db)
                .await?,
        );
    }
    if rows.len() != n {
        return Err(DbErr::RecordNotFound(format!(
            "ormsync::bulk::insert_many inserted {n} rows into `{table}` but found {} of them \
             by the keys given (did the database change a key, e.g. a 0 into an AUTO_INCREMENT \
             column?); nothing was captured, roll the transaction back",
            rows.len()
        )));
    }
    Ok(rows)
}

/// Writes one outbox row per model.
async fn capture<E: Replicated, C: ConnectionTrait>(
    db: &C,
    op: Op,
    models: &[E::Model],
) -> Result<(), DbErr> {
    let mut changes = Vec::with_capacity(models.len());
    for m in models {
        changes.push((E::key_of(m)?, E::to_row(m)?));
    }
    let refs: Vec<(&Row, &Row)> = changes.iter().map(|(k, r)| (k, r)).collect();
    crate::capture::write_many(db, E::default().table_name(), op, &refs).await
}
