//! Hand-written SQL that differs between backends only in its bind markers.

use sea_orm::DbBackend;

/// Rewrites the `?` markers of `sql` as `$1, $2, …` for PostgreSQL; other backends take
/// `?` as it is. `sql` must have no `?` inside string literals.
pub(crate) fn marks(backend: DbBackend, sql: &str) -> String {
    if backend != DbBackend::Postgres {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// `INSERT INTO {into}` that does nothing when the row's key exists already, with `?`
/// markers rewritten for the backend: `INSERT IGNORE` on MySQL/MariaDB, `ON CONFLICT DO
/// NOTHING` elsewhere.
pub(crate) fn insert_if_absent(backend: DbBackend, into: &str) -> String {
    match backend {
        DbBackend::MySql => format!("INSERT IGNORE INTO {into}"),
        _ => marks(
            backend,
            &format!("INSERT INTO {into} ON CONFLICT DO NOTHING"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_markers_for_postgres_only() {
        let sql = "UPDATE t SET a = ? WHERE b = ? AND c = ?";
        assert_eq!(
            marks(DbBackend::Postgres, sql),
            "UPDATE t SET a = $1 WHERE b = $2 AND c = $3"
        );
        assert_eq!(marks(DbBackend::MySql, sql), sql);
        assert_eq!(marks(DbBackend::Sqlite, sql), sql);
    }

    #[test]
    fn inserts_if_absent_per_backend() {
        let into = "t (a, b) VALUES (?, 0)";
        assert_eq!(
            insert_if_absent(DbBackend::MySql, into),
            "INSERT IGNORE INTO t (a, b) VALUES (?, 0)"
        );
        assert_eq!(
            insert_if_absent(DbBackend::Postgres, into),
            "INSERT INTO t (a, b) VALUES ($1, 0) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            insert_if_absent(DbBackend::Sqlite, into),
            "INSERT INTO t (a, b) VALUES (?, 0) ON CONFLICT DO NOTHING"
        );
    }
}
