//! Is a database error worth retrying? The one place that looks inside driver errors: by
//! code, per backend, never by message text.

mod mysql;
mod postgres;
mod sqlite;

use sea_orm::sqlx;
use sea_orm::{DbErr, RuntimeErr};

pub(crate) use mysql::is_row_locked;

/// What to do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The database or the network will likely get over it: retry with backoff.
    Transient,
    /// It will fail the same way until a person changes something.
    Permanent,
}

/// Classifies a sea-orm error.
pub fn classify(e: &DbErr) -> ErrorKind {
    match e {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => ErrorKind::Transient,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            classify_sqlx(e)
        }
        _ => ErrorKind::Permanent,
    }
}

fn classify_sqlx(e: &sqlx::Error) -> ErrorKind {
    match e {
        sqlx::Error::Database(d) => {
            if let Some(pg) = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                postgres::kind(pg.code())
            } else if let Some(my) = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                mysql::kind(my.number())
            } else if let Some(code) = d.code() {
                // SQLite reports its (extended) result code as a decimal string.
                code.parse()
                    .map(sqlite::kind)
                    .unwrap_or(ErrorKind::Permanent)
            } else {
                ErrorKind::Permanent
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

/// Whether `e` is a foreign key's refusal: a row naming a parent row that is not there, or
/// a parent row deleted while rows still name it.
pub(crate) fn is_foreign_key(e: &DbErr) -> bool {
    let d = match e {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                sqlx::Error::Database(d) => d,
                _ => return false,
            }
        }
        _ => return false,
    };
    if let Some(pg) = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        pg.code() == "23503"
    } else if let Some(my) = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        matches!(my.number(), 1216 | 1217 | 1451 | 1452)
    } else {
        // SQLITE_CONSTRAINT_FOREIGNKEY.
        d.code().is_some_and(|c| c == "787")
    }
}

/// The MySQL/MariaDB error number inside `e`, if any.
fn mysql_number(e: &DbErr) -> Option<u16> {
    match e {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                sqlx::Error::Database(d) => d
                    .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .map(|m| m.number()),
                _ => None,
            }
        }
        _ => None,
    }
}
