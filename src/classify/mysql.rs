//! MySQL/MariaDB error numbers.

use sea_orm::DbErr;

use super::ErrorKind;

/// `ER_CON_COUNT_ERROR`: too many connections.
pub(crate) const TOO_MANY_CONNECTIONS: u16 = 1040;
/// `ER_SERVER_SHUTDOWN`.
pub(crate) const SERVER_SHUTDOWN: u16 = 1053;
/// `ER_LOCK_WAIT_TIMEOUT`; also MariaDB's answer to `NOWAIT` on a locked row.
pub(crate) const LOCK_WAIT_TIMEOUT: u16 = 1205;
/// `ER_LOCK_DEADLOCK`.
pub(crate) const DEADLOCK: u16 = 1213;
/// `ER_QUERY_INTERRUPTED`.
pub(crate) const QUERY_INTERRUPTED: u16 = 1317;
/// `ER_CONNECTION_KILLED` (MariaDB).
pub(crate) const CONNECTION_KILLED: u16 = 1927;
/// `ER_LOCK_NOWAIT`: MySQL 8's answer to `NOWAIT` on a locked row.
pub(crate) const LOCK_NOWAIT: u16 = 3572;
/// `CR_CONNECTION_ERROR`, `CR_CONN_HOST_ERROR`: cannot connect.
pub(crate) const CANNOT_CONNECT: [u16; 2] = [2002, 2003];
/// `CR_SERVER_GONE_ERROR`.
pub(crate) const SERVER_GONE: u16 = 2006;
/// `CR_SERVER_LOST`.
pub(crate) const SERVER_LOST: u16 = 2013;

/// Transient: lock waits, deadlocks, a server that is full, shutting down, gone or killed
/// the connection. Everything else — duplicate keys, foreign keys, unknown columns and
/// tables, bad values — is permanent.
pub(crate) fn kind(number: u16) -> ErrorKind {
    match number {
        TOO_MANY_CONNECTIONS | SERVER_SHUTDOWN | LOCK_WAIT_TIMEOUT | DEADLOCK
        | QUERY_INTERRUPTED | CONNECTION_KILLED | LOCK_NOWAIT | SERVER_GONE | SERVER_LOST => {
            ErrorKind::Transient
        }
        n if CANNOT_CONNECT.contains(&n) => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

/// Whether `e` says a row is locked by another transaction (a `NOWAIT` read refused).
pub(crate) fn is_row_locked(e: &DbErr) -> bool {
    matches!(
        super::mysql_number(e),
        Some(LOCK_WAIT_TIMEOUT | LOCK_NOWAIT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_what_the_server_gets_over() {
        for n in [
            1040, 1053, 1205, 1213, 1317, 1927, 3572, 2002, 2003, 2006, 2013,
        ] {
            assert_eq!(kind(n), ErrorKind::Transient, "{n}");
        }
    }

    #[test]
    fn does_not_retry_what_needs_a_person() {
        // duplicate key, FK, unknown column, no table, bad value, too long, not null.
        for n in [1062, 1452, 1054, 1146, 1366, 1406, 1048] {
            assert_eq!(kind(n), ErrorKind::Permanent, "{n}");
        }
    }
}
