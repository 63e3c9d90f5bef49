//! The one place that looks inside driver errors, by code, never by message text.

use sea_orm::sqlx;
use sea_orm::{DbErr, RuntimeErr};

/// The database's own error, if `e` carries one.
fn database_error(e: &DbErr) -> Option<&(dyn sqlx::error::DatabaseError + 'static)> {
    match e {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                sqlx::Error::Database(d) => Some(d.as_ref()),
                _ => None,
            }
        }
        _ => None,
    }
}

/// MySQL/MariaDB error numbers.
pub(crate) mod mysql {
    /// `ER_LOCK_WAIT_TIMEOUT`: MariaDB's answer to `NOWAIT` on a locked row.
    pub(crate) const LOCK_WAIT_TIMEOUT: u16 = 1205;
    /// `ER_LOCK_NOWAIT`: MySQL 8's answer to `NOWAIT` on a locked row.
    pub(crate) const LOCK_NOWAIT: u16 = 3572;
}

/// The MySQL/MariaDB error number of `e`, if it is one.
pub(crate) fn mysql_number(e: &DbErr) -> Option<u16> {
    database_error(e)?
        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .map(|m| m.number())
}

/// Whether `e` says a row is locked by another transaction (a `NOWAIT` read refused).
pub(crate) fn is_row_locked(e: &DbErr) -> bool {
    matches!(
        mysql_number(e),
        Some(mysql::LOCK_WAIT_TIMEOUT | mysql::LOCK_NOWAIT)
    )
}
