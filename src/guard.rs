//! An opt-in connection wrapper that catches writes to replicated tables that bypass
//! capture: sea-orm's own bulk operations and query-builder statements.
//!
//! ormsync captures a change in the entity's hooks (or in [`crate::bulk`]), and sea-orm
//! runs no hook for `Entity::insert_many(..).exec(db)`, `update_many`, `delete_many`,
//! `delete_by_id` or a sea-query statement passed to `db.execute`. Such a write changes the
//! source and reaches no destination. Wrap the application's pool in a
//! [`GuardedConnection`] and every statement is audited with sea-query (which tables it
//! reads and writes): a write to a replicated table must be followed, in the same
//! transaction, by its outbox rows, or the transaction is refused at commit and rolled
//! back ([`GuardMode::Refuse`], the default) or committed with a warning
//! ([`GuardMode::Warn`]).
//!
//! # How a write is matched with its capture
//!
//! Every captured path runs the write first and writes the outbox afterwards on the same
//! connection: `ActiveModel::insert`/`update`/`delete` through the derived hooks, and the
//! helpers of [`crate::bulk`]. So each write statement that changed at least one row of a
//! replicated table opens an *uncaptured write* of that table; the first outbox statement
//! for the table after it closes one. At commit, an open one means a write went
//! uncaptured. A plain write next to a captured write of the same table is still caught:
//! two writes open two, and one capture closes one. A statement that changed no row opens
//! nothing (the helpers write no outbox row for it either).
//!
//! Each transaction, savepoints included, keeps its own account, so a rolled-back savepoint
//! takes its writes with it.
//!
//! # What it does not see
//!
//! - **Raw SQL** (`execute_raw`, `execute_unprepared`, `query_*_raw`, a `Statement`): there
//!   is no statement tree to audit, so it passes unchecked.
//! - **Writes outside a transaction.** Captured writes there are refused anyway, unless
//!   [`allow_non_atomic_writes`](crate::capture::allow_non_atomic_writes) was called, so
//!   [`GuardedConnection`] refuses (or warns about) every write of a replicated table made
//!   on the pool itself, before it runs. When non-atomic writes are allowed, it lets them
//!   through: without a transaction, the write and its outbox row are separate statements
//!   that other tasks' statements on the same pool interleave with.
//! - Rows changed by the database itself (`ON DELETE CASCADE`, triggers).
//!
//! # Examples
//!
//! ```no_run
//! # mod orders {
//! #     use sea_orm::entity::prelude::*;
//! #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
//! #     #[sea_orm(table_name = "orders")]
//! #     pub struct Model { #[sea_orm(primary_key)] pub id: i64, pub status: String }
//! #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//! #     pub enum Relation {}
//! # }
//! # async fn run(pool: sea_orm::DatabaseConnection) -> Result<(), sea_orm::DbErr> {
//! use ormsync::guard::GuardedConnection;
//! use sea_orm::sea_query::Expr;
//! use sea_orm::{EntityTrait, QueryFilter, ColumnTrait, TransactionTrait};
//!
//! let db = GuardedConnection::new(pool).entity::<orders::Entity>();
//!
//! let txn = db.begin().await?;
//! // A plain sea-orm bulk update: no outbox rows, no destination would see it.
//! orders::Entity::update_many()
//!     .col_expr(orders::Column::Status, Expr::value("archived"))
//!     .filter(orders::Column::Status.eq("done"))
//!     .exec(&txn)
//!     .await?;
//! // Refused: the transaction is rolled back and the error names `orders`.
//! assert!(txn.commit().await.is_err());
//!
//! // The captured counterpart commits.
//! let txn = db.begin().await?;
//! ormsync::bulk::update_many::<orders::Entity, _>(
//!     &txn,
//!     orders::Column::Status.eq("done"),
//!     [(orders::Column::Status, Expr::value("archived"))],
//! )
//! .await?;
//! txn.commit().await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use sea_orm::sea_query::audit::AccessType;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    ExecResult, IsolationLevel, QueryResult, Statement, StatementBuilder, TransactionError,
    TransactionOptions, TransactionSession, TransactionTrait,
};

use crate::entity::Replicated;
use crate::error::Error;
use crate::outbox::OUTBOX;

/// What a guard does with a write to a replicated table that was not captured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GuardMode {
    /// Roll the transaction back and return [`Error::UncapturedWrite`] (as
    /// `DbErr::Custom`) from `commit`; on the pool, refuse the write before it runs.
    #[default]
    Refuse,
    /// Let it commit (or run) and log a warning naming the tables.
    Warn,
}

/// What a [`GuardedConnection`] and all its transactions share.
#[derive(Clone, Debug, Default)]
struct Policy {
    tables: HashSet<String>,
    mode: GuardMode,
}

/// A pool whose statements are audited for writes to replicated tables that bypass
/// capture; see the [module documentation](self).
///
/// It implements [`ConnectionTrait`] and [`TransactionTrait`], so it goes wherever the
/// application passed its `DatabaseConnection`; its transactions are
/// [`GuardedTransaction`]s.
#[derive(Clone, Debug)]
pub struct GuardedConnection {
    conn: DatabaseConnection,
    policy: Arc<Policy>,
}

/// A transaction of a [`GuardedConnection`] (or a savepoint inside one):
/// [`commit`](GuardedTransaction::commit) refuses, or warns about, writes to replicated
/// tables that were not captured.
#[derive(Debug)]
pub struct GuardedTransaction {
    conn: DatabaseTransaction,
    policy: Arc<Policy>,
    ledger: Mutex<Ledger>,
}

impl GuardedConnection {
    /// Wraps `conn` in [`GuardMode::Refuse`]; no table is guarded until
    /// [`entity`](Self::entity) or [`table`](Self::table) names it.
    pub fn new(conn: DatabaseConnection) -> Self {
        Self {
            conn,
            policy: Arc::default(),
        }
    }

    /// Guards `E`'s table.
    pub fn entity<E: Replicated>(self) -> Self {
        self.table(E::table_spec().table)
    }

    /// Guards a table by name, for a replicated entity the caller has no type for.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.policy).tables.insert(table.into());
        self
    }

    /// Sets what happens to an uncaptured write.
    pub fn mode(mut self, mode: GuardMode) -> Self {
        Arc::make_mut(&mut self.policy).mode = mode;
        self
    }

    /// The wrapped pool.
    pub fn inner(&self) -> &DatabaseConnection {
        &self.conn
    }

    fn wrap(&self, conn: DatabaseTransaction) -> GuardedTransaction {
        GuardedTransaction {
            conn,
            policy: self.policy.clone(),
            ledger: Mutex::default(),
        }
    }

    /// Refuses, or warns about, a write of a guarded table on the pool, before it runs.
    fn check<S: StatementBuilder>(&self, stmt: &S) -> Result<(), DbErr> {
        if crate::capture::non_atomic_allowed() {
            return Ok(());
        }
        let writes = self.policy.audit(stmt, self.conn.get_database_backend());
        let Some((table, kind)) = writes.tables.first() else {
            return Ok(());
        };
        let tables = format!("`{table}` ({kind})");
        match self.policy.mode {
            GuardMode::Refuse => Err(Error::UncapturedWrite {
                what: "a write outside a transaction, which did not run".into(),
                tables,
            }
            .into()),
            GuardMode::Warn => {
                tracing::warn!(
                    tables,
                    "ormsync guard: a replicated table written outside a transaction; not \
                     captured unless ormsync wrote it, and then not atomically"
                );
                Ok(())
            }
        }
    }
}

/// The writes one statement makes that the guard cares about.
#[derive(Debug, Default)]
struct Writes {
    /// Guarded tables written, with the kind of write.
    tables: Vec<(String, &'static str)>,
    /// The table whose changes an outbox insert captures.
    captures: Option<String>,
}

impl Policy {
    fn audit<S: StatementBuilder>(&self, stmt: &S, backend: DbBackend) -> Writes {
        let audit = match stmt.audit() {
            Ok(audit) => audit,
            Err(e) => {
                // Failing the application's statement over the guard's blind spot would be
                // worse than letting it through.
                tracing::warn!(error = %e, "ormsync guard: cannot audit a statement; not checked");
                return Writes::default();
            }
        };
        let mut writes = Writes::default();
        for request in &audit.requests {
            let kind = match request.access_type {
                AccessType::Insert => "insert",
                AccessType::Update => "update",
                AccessType::Delete => "delete",
                _ => continue,
            };
            let table = request.schema_table.1.to_string();
            if table == OUTBOX && kind == "insert" {
                writes.captures = crate::capture::captured_table(&backend.build(stmt));
            } else if self.tables.contains(&table) {
                writes.tables.push((table, kind));
            }
        }
        writes
    }
}

/// The uncaptured writes of one transaction, per table.
#[derive(Debug, Default)]
struct Ledger {
    tables: BTreeMap<String, Account>,
}

#[derive(Debug, Default)]
struct Account {
    /// Writes not yet followed by their capture, by kind.
    open: Vec<&'static str>,
    /// Whether the last statement for this table was its capture: a capture of many rows
    /// takes several outbox statements, and only the first closes a write.
    captured_last: bool,
}

impl Ledger {
    fn record(&mut self, writes: Writes, rows: u64) {
        if rows > 0 {
            for (table, kind) in writes.tables {
                let account = self.tables.entry(table).or_default();
                account.open.push(kind);
                account.captured_last = false;
            }
        }
        if let Some(table) = writes.captures {
            let account = self.tables.entry(table).or_default();
            if !account.captured_last {
                account.open.pop();
            }
            account.captured_last = true;
        }
    }

    /// The tables with writes that were never captured, as "`orders` (2 updates)".
    fn uncaptured(&self) -> Option<String> {
        let listed: Vec<String> = self
            .tables
            .iter()
            .filter(|(_, a)| !a.open.is_empty())
            .map(|(table, a)| {
                let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
                for kind in &a.open {
                    *kinds.entry(kind).or_default() += 1;
                }
                let kinds: Vec<String> = kinds
                    .into_iter()
                    .map(|(kind, n)| format!("{n} {kind}{}", if n == 1 { "" } else { "s" }))
                    .collect();
                format!("`{table}` ({})", kinds.join(", "))
            })
            .collect();
        (!listed.is_empty()).then(|| listed.join(", "))
    }
}

impl GuardedTransaction {
    fn record(&self, writes: Writes, rows: u64) {
        // A panic elsewhere cannot leave the ledger half-updated: each update is whole.
        self.ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(writes, rows);
    }

    fn wrap(&self, conn: DatabaseTransaction) -> GuardedTransaction {
        GuardedTransaction {
            conn,
            policy: self.policy.clone(),
            ledger: Mutex::default(),
        }
    }

    /// Commits, unless a guarded table was written without capture: then, in
    /// [`GuardMode::Refuse`], rolls back and returns [`Error::UncapturedWrite`].
    ///
    /// # Errors
    ///
    /// The uncaptured write, or the database's error committing.
    pub async fn commit(self) -> Result<(), DbErr> {
        let uncaptured = self
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .uncaptured();
        if let Some(tables) = uncaptured {
            match self.policy.mode {
                GuardMode::Refuse => {
                    self.conn.rollback().await?;
                    return Err(Error::UncapturedWrite {
                        what: "a transaction, which was rolled back".into(),
                        tables,
                    }
                    .into());
                }
                GuardMode::Warn => tracing::warn!(
                    tables,
                    "ormsync guard: a transaction wrote replicated tables without capturing \
                     the change; no destination will receive it"
                ),
            }
        }
        self.conn.commit().await
    }

    /// Rolls back.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn rollback(self) -> Result<(), DbErr> {
        self.conn.rollback().await
    }

    async fn run<F, T, E>(self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c GuardedTransaction,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let result = callback(&self).await.map_err(TransactionError::Transaction);
        if result.is_ok() {
            self.commit().await.map_err(TransactionError::Connection)?;
        } else {
            self.rollback()
                .await
                .map_err(TransactionError::Connection)?;
        }
        result
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for GuardedConnection {
    fn get_database_backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.conn.execute_raw(stmt).await
    }

    async fn execute<S: StatementBuilder>(&self, stmt: &S) -> Result<ExecResult, DbErr> {
        self.check(stmt)?;
        self.conn.execute(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.conn.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.conn.query_one_raw(stmt).await
    }

    async fn query_one<S: StatementBuilder>(&self, stmt: &S) -> Result<Option<QueryResult>, DbErr> {
        self.check(stmt)?;
        self.conn.query_one(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.conn.query_all_raw(stmt).await
    }

    async fn query_all<S: StatementBuilder>(&self, stmt: &S) -> Result<Vec<QueryResult>, DbErr> {
        self.check(stmt)?;
        self.conn.query_all(stmt).await
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for GuardedTransaction {
    fn get_database_backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.conn.execute_raw(stmt).await
    }

    async fn execute<S: StatementBuilder>(&self, stmt: &S) -> Result<ExecResult, DbErr> {
        let writes = self.policy.audit(stmt, self.get_database_backend());
        let result = self.conn.execute(stmt).await?;
        self.record(writes, result.rows_affected());
        Ok(result)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.conn.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.conn.query_one_raw(stmt).await
    }

    async fn query_one<S: StatementBuilder>(&self, stmt: &S) -> Result<Option<QueryResult>, DbErr> {
        let writes = self.policy.audit(stmt, self.get_database_backend());
        let row = self.conn.query_one(stmt).await?;
        self.record(writes, u64::from(row.is_some()));
        Ok(row)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.conn.query_all_raw(stmt).await
    }

    async fn query_all<S: StatementBuilder>(&self, stmt: &S) -> Result<Vec<QueryResult>, DbErr> {
        let writes = self.policy.audit(stmt, self.get_database_backend());
        let rows = self.conn.query_all(stmt).await?;
        self.record(writes, rows.len() as u64);
        Ok(rows)
    }
}

/// `TransactionTrait` for a guarded type whose `wrap` turns a transaction begun on its
/// `conn` into a [`GuardedTransaction`]: the same for the pool and for a transaction's
/// savepoints.
macro_rules! guarded_transactions {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl TransactionTrait for $ty {
            type Transaction = GuardedTransaction;

            async fn begin(&self) -> Result<GuardedTransaction, DbErr> {
                Ok(self.wrap(self.conn.begin().await?))
            }

            async fn begin_with_config(
                &self,
                isolation_level: Option<IsolationLevel>,
                access_mode: Option<AccessMode>,
            ) -> Result<GuardedTransaction, DbErr> {
                let conn = self
                    .conn
                    .begin_with_config(isolation_level, access_mode)
                    .await?;
                Ok(self.wrap(conn))
            }

            async fn begin_with_options(
                &self,
                options: TransactionOptions,
            ) -> Result<GuardedTransaction, DbErr> {
                Ok(self.wrap(self.conn.begin_with_options(options).await?))
            }

            async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
            where
                F: for<'c> FnOnce(
                        &'c GuardedTransaction,
                    )
                        -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
                    + Send,
                T: Send,
                E: std::fmt::Display + std::fmt::Debug + Send,
            {
                let txn = self.begin().await.map_err(TransactionError::Connection)?;
                txn.run(callback).await
            }

            async fn transaction_with_config<F, T, E>(
                &self,
                callback: F,
                isolation_level: Option<IsolationLevel>,
                access_mode: Option<AccessMode>,
            ) -> Result<T, TransactionError<E>>
            where
                F: for<'c> FnOnce(
                        &'c GuardedTransaction,
                    )
                        -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
                    + Send,
                T: Send,
                E: std::fmt::Display + std::fmt::Debug + Send,
            {
                let txn = self
                    .begin_with_config(isolation_level, access_mode)
                    .await
                    .map_err(TransactionError::Connection)?;
                txn.run(callback).await
            }
        }
    };
}

guarded_transactions!(GuardedConnection);
guarded_transactions!(GuardedTransaction);

#[async_trait::async_trait]
impl TransactionSession for GuardedTransaction {
    async fn commit(self) -> Result<(), DbErr> {
        GuardedTransaction::commit(self).await
    }

    async fn rollback(self) -> Result<(), DbErr> {
        GuardedTransaction::rollback(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(table: &str, kind: &'static str) -> Writes {
        Writes {
            tables: vec![(table.to_string(), kind)],
            captures: None,
        }
    }

    fn capture(table: &str) -> Writes {
        Writes {
            tables: Vec::new(),
            captures: Some(table.to_string()),
        }
    }

    #[test]
    fn a_captured_write_closes_and_a_plain_one_stays_open() {
        let mut ledger = Ledger::default();
        ledger.record(writes("orders", "update"), 3);
        ledger.record(capture("orders"), 1);
        assert_eq!(ledger.uncaptured(), None);

        ledger.record(writes("orders", "delete"), 2);
        assert_eq!(ledger.uncaptured().as_deref(), Some("`orders` (1 delete)"));
    }

    #[test]
    fn a_plain_write_beside_a_captured_one_is_still_caught() {
        let mut ledger = Ledger::default();
        ledger.record(writes("orders", "update"), 5); // plain update_many
        ledger.record(writes("orders", "insert"), 1); // ActiveModel::insert
        ledger.record(capture("orders"), 1); // its outbox row
        assert_eq!(ledger.uncaptured().as_deref(), Some("`orders` (1 update)"));
    }

    #[test]
    fn a_capture_in_several_statements_closes_one_write() {
        let mut ledger = Ledger::default();
        ledger.record(writes("orders", "delete"), 1); // plain
        ledger.record(writes("orders", "update"), 1200); // bulk helper
        for _ in 0..3 {
            ledger.record(capture("orders"), 500); // its outbox rows, 500 a statement
        }
        assert_eq!(ledger.uncaptured().as_deref(), Some("`orders` (1 delete)"));
    }

    #[test]
    fn writes_that_changed_nothing_and_unguarded_tables_open_nothing() {
        let mut ledger = Ledger::default();
        ledger.record(writes("orders", "update"), 0);
        ledger.record(Writes::default(), 10);
        assert_eq!(ledger.uncaptured(), None);
    }
}
