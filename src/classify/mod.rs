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

/// Whether `e` says a written row references a parent row that does not exist (a foreign
/// key violation on insert or update). After a snapshot the stream replays changes over a
/// newer copy, where this is expected for a while (see `snapshot`).
pub(crate) fn is_missing_parent(e: &DbErr) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = e else {
        return false;
    };
    let sqlx::Error::Database(d) = e.as_ref() else {
        return false;
    };
    if let Some(pg) = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        pg.code() == postgres::FOREIGN_KEY_VIOLATION
    } else if let Some(my) = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        mysql::NO_REFERENCED_ROW.contains(&my.number())
    } else {
        d.code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| c == sqlite::CONSTRAINT_FOREIGNKEY)
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
