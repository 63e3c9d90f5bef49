//! Keeps passwords out of messages.

/// Replaces the password of every `scheme://user:password@host` URL in `text` with `***`.
///
/// Error messages of drivers and configuration may quote a connection URL; ormsync passes
/// every message it shows through this function.
///
/// ```
/// assert_eq!(
///     ormsync::redact::redact("cannot reach postgres://app:hunter2@db:5432/prod"),
///     "cannot reach postgres://app:***@db:5432/prod"
/// );
/// ```
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote; credentials end at its last '@'.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'' || c == '`')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A driver error as a person should read it: redacted, and without PostgreSQL's pointer
/// into its own source code (`… at line 948`), which says nothing about the problem.
pub fn describe(e: &sea_orm::DbErr) -> String {
    use sea_orm::{DbErr, RuntimeErr};
    let text = e.to_string();
    let text = match e {
        DbErr::Conn(RuntimeErr::SqlxError(inner))
        | DbErr::Exec(RuntimeErr::SqlxError(inner))
        | DbErr::Query(RuntimeErr::SqlxError(inner)) => without_source_line(text, inner),
        _ => text,
    };
    redact(&text)
}

/// [`describe`] for an error of sqlx itself.
pub fn describe_sqlx(e: &sea_orm::sqlx::Error) -> String {
    redact(&without_source_line(e.to_string(), e))
}

fn without_source_line(text: String, e: &sea_orm::sqlx::Error) -> String {
    let line = match e {
        sea_orm::sqlx::Error::Database(d) => d
            .try_downcast_ref::<sea_orm::sqlx::postgres::PgDatabaseError>()
            .and_then(|pg| pg.line()),
        _ => None,
    };
    match line {
        Some(line) => text.replace(&format!(" at line {line}"), ""),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn hides_passwords_and_keeps_the_rest() {
        assert_eq!(
            redact("mysql://root:s3cr@t@host/db and postgres://u@h/x"),
            "mysql://root:***@host/db and postgres://u@h/x"
        );
        assert_eq!(
            redact("sqlite://./a.db?mode=rwc"),
            "sqlite://./a.db?mode=rwc"
        );
        assert_eq!(redact("no url here"), "no url here");
        assert_eq!(redact("postgres://host:5432/db"), "postgres://host:5432/db");
    }
}
