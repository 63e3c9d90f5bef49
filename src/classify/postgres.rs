//! PostgreSQL SQLSTATE codes.

use super::ErrorKind;

/// `serialization_failure`
pub(crate) const SERIALIZATION_FAILURE: &str = "40001";
/// `deadlock_detected`
pub(crate) const DEADLOCK_DETECTED: &str = "40P01";
/// `lock_not_available`
pub(crate) const LOCK_NOT_AVAILABLE: &str = "55P03";
/// `query_canceled` (also a statement timeout)
pub(crate) const QUERY_CANCELED: &str = "57014";
/// `admin_shutdown`
pub(crate) const ADMIN_SHUTDOWN: &str = "57P01";
/// `crash_shutdown`
pub(crate) const CRASH_SHUTDOWN: &str = "57P02";
/// `cannot_connect_now` (starting up, in recovery)
pub(crate) const CANNOT_CONNECT_NOW: &str = "57P03";
/// `too_many_connections`
pub(crate) const TOO_MANY_CONNECTIONS: &str = "53300";
/// `read_only_sql_transaction` (a standby that is being promoted)
pub(crate) const READ_ONLY_SQL_TRANSACTION: &str = "25006";

/// Transient: connection exceptions (class 08), transaction rollbacks the server asks us to
/// retry, insufficient resources (class 53), shutdowns and cancellations. Everything else —
/// constraint violations (23), data exceptions (22), undefined tables and columns (42) — is
/// permanent.
pub(crate) fn kind(sqlstate: &str) -> ErrorKind {
    match sqlstate {
        SERIALIZATION_FAILURE
        | DEADLOCK_DETECTED
        | LOCK_NOT_AVAILABLE
        | QUERY_CANCELED
        | ADMIN_SHUTDOWN
        | CRASH_SHUTDOWN
        | CANNOT_CONNECT_NOW
        | TOO_MANY_CONNECTIONS
        | READ_ONLY_SQL_TRANSACTION => ErrorKind::Transient,
        s if s.starts_with("08") || s.starts_with("53") => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_what_the_server_gets_over() {
        for code in [
            "40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "53300", "53100",
            "08006", "08001", "08003", "25006",
        ] {
            assert_eq!(kind(code), ErrorKind::Transient, "{code}");
        }
    }

    #[test]
    fn does_not_retry_what_needs_a_person() {
        // unique, foreign key, check, not null; undefined column and table; bad value.
        for code in [
            "23505", "23503", "23514", "23502", "42703", "42P01", "22P02", "22001", "42804",
        ] {
            assert_eq!(kind(code), ErrorKind::Permanent, "{code}");
        }
    }
}
