//! SQLite result codes.

use super::ErrorKind;

/// `SQLITE_BUSY`: another connection holds the lock.
pub(crate) const BUSY: i32 = 5;
/// `SQLITE_LOCKED`: a conflict within the same connection's shared cache.
pub(crate) const LOCKED: i32 = 6;
/// `SQLITE_IOERR`: the disk or the file system failed.
pub(crate) const IOERR: i32 = 10;
/// `SQLITE_PROTOCOL`: a WAL locking race.
pub(crate) const PROTOCOL: i32 = 15;

/// Transient: busy, locked, I/O errors and WAL protocol races (extended codes carry the
/// primary code in their low byte). Constraints, mismatches, missing tables: permanent.
pub(crate) fn kind(code: i32) -> ErrorKind {
    match code & 0xff {
        BUSY | LOCKED | IOERR | PROTOCOL => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_busy_and_locked() {
        // BUSY, BUSY_SNAPSHOT (517), LOCKED, IOERR, PROTOCOL.
        for code in [5, 517, 6, 10, 15] {
            assert_eq!(kind(code), ErrorKind::Transient, "{code}");
        }
    }

    #[test]
    fn does_not_retry_constraints_or_schema() {
        // CONSTRAINT, CONSTRAINT_UNIQUE (2067), CONSTRAINT_FOREIGNKEY (787), ERROR, MISMATCH.
        for code in [19, 2067, 787, 1, 20] {
            assert_eq!(kind(code), ErrorKind::Permanent, "{code}");
        }
    }
}
