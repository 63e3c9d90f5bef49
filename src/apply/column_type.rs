//! Whether a destination column's declared type holds every value of the type its entity
//! gives it, judged from the two declarations on one backend.
//!
//! A table made by hand, or by an older version of the entity, may declare a column
//! narrower than the entity now does (`integer` where the field became an `i64`,
//! `varchar(20)` where it became `varchar(80)`) or of another kind. Such a column takes
//! some values and refuses or alters others, so a schema check names it before a change
//! meets it.

use sea_orm::DbBackend;

/// How a destination column's type compares with its entity's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It holds every value of the entity's type.
    Holds,
    /// It does not, or is of another kind: why.
    Narrower(String),
    /// The declarations differ, but not so that a value would be altered without an
    /// error: a shorter text column, or a type ormsync does not parse.
    Differs,
}

/// What a declared type holds, as far as it matters for comparing two of them.
#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Int {
        bytes: u8,
        unsigned: bool,
    },
    Bool,
    Float {
        bytes: u8,
    },
    /// `None`: as many digits as the value has.
    Decimal(Option<(u32, u32)>),
    /// At most this many characters; `None`: as long as the backend allows.
    Text(Option<u64>),
    Bytes(Option<u64>),
    Date,
    Time {
        digits: u32,
    },
    Timestamp {
        zoned: bool,
        digits: u32,
    },
    Json,
    Uuid,
    /// MySQL's inline enum, by its values.
    Enum(Vec<String>),
    /// Anything else, by its normalized declaration.
    Other(String),
}

/// Compares the destination's `actual` declaration of a column with the `expected` one a
/// created table would have on `backend`.
///
/// SQLite keeps a value of any size in any column, so there only the kind counts: its
/// type affinity, which converts text that looks like a number in a numeric column.
pub(crate) fn compare(backend: DbBackend, expected: &str, actual: &str) -> Verdict {
    if backend == DbBackend::Sqlite {
        return sqlite_compare(expected, actual);
    }
    let (want, have) = (parse(backend, expected), parse(backend, actual));
    let narrower = |why: &str| Verdict::Narrower(format!("it is `{actual}`, {why} `{expected}`"));
    match (&want, &have) {
        (a, b) if a == b => Verdict::Holds,
        (
            Kind::Int {
                bytes: w,
                unsigned: wu,
            },
            Kind::Int {
                bytes: h,
                unsigned: hu,
            },
        ) => {
            let holds = match (wu, hu) {
                (false, false) | (true, true) => h >= w,
                (true, false) => h > w,
                (false, true) => false,
            };
            if holds {
                Verdict::Holds
            } else {
                narrower("a smaller integer than the entity's")
            }
        }
        // MySQL's `BOOL` is `tinyint(1)`, and any integer holds 0 and 1.
        (Kind::Bool, Kind::Int { .. }) if backend == DbBackend::MySql => Verdict::Holds,
        (Kind::Float { bytes: w }, Kind::Float { bytes: h }) => {
            if h >= w {
                Verdict::Holds
            } else {
                narrower("a shorter float than the entity's")
            }
        }
        (Kind::Decimal(w), Kind::Decimal(h)) => match (w, h) {
            (_, None) => Verdict::Holds,
            (None, Some(_)) => narrower("a bounded decimal where the entity's is unbounded,"),
            (Some((wp, ws)), Some((hp, hs))) => {
                if hs >= ws && hp.saturating_sub(*hs) >= wp.saturating_sub(*ws) {
                    Verdict::Holds
                } else {
                    narrower("with fewer digits than the entity's")
                }
            }
        },
        // A shorter text or byte column is common in hand-made tables and refuses, each
        // value on its way, one too long for it (`value::fit`, and the database itself).
        (Kind::Text(w), Kind::Text(h)) | (Kind::Bytes(w), Kind::Bytes(h)) => {
            if fits(*w, *h) {
                Verdict::Holds
            } else {
                Verdict::Differs
            }
        }
        // MariaDB's `JSON` is `longtext` with a check.
        (Kind::Json, Kind::Text(None)) if backend == DbBackend::MySql => Verdict::Holds,
        (Kind::Time { digits: w }, Kind::Time { digits: h }) => {
            if h >= w {
                Verdict::Holds
            } else {
                narrower("keeping fewer fractional-second digits than the entity's")
            }
        }
        (
            Kind::Timestamp {
                zoned: wz,
                digits: w,
            },
            Kind::Timestamp {
                zoned: hz,
                digits: h,
            },
        ) if wz == hz => {
            if h >= w {
                Verdict::Holds
            } else {
                narrower("keeping fewer fractional-second digits than the entity's")
            }
        }
        (Kind::Enum(w), Kind::Enum(h)) => {
            if w.iter().all(|v| h.contains(v)) {
                Verdict::Holds
            } else {
                narrower("lacking values of the entity's")
            }
        }
        (Kind::Other(_), _) | (_, Kind::Other(_)) => Verdict::Differs,
        _ => narrower("another kind of type than the entity's"),
    }
}

/// SQLite's type affinity of a declared type, by its documented rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

fn affinity(declared: &str) -> Affinity {
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") {
        Affinity::Integer
    } else if ["CHAR", "CLOB", "TEXT"].iter().any(|n| t.contains(n)) {
        Affinity::Text
    } else if t.contains("BLOB") || t.trim().is_empty() {
        Affinity::Blob
    } else if ["REAL", "FLOA", "DOUB"].iter().any(|n| t.contains(n)) {
        Affinity::Real
    } else {
        Affinity::Numeric
    }
}

/// Text in a numeric column turns into a number where it looks like one (`007` becomes
/// 7), and a number in a text column into text: those alter values. A column of the
/// entity's with numeric affinity (decimals, booleans, timestamps ormsync writes as text)
/// or a blob is kept as written in any column.
fn sqlite_compare(expected: &str, actual: &str) -> Verdict {
    let (want, have) = (affinity(expected), affinity(actual));
    let altered = match want {
        Affinity::Text => have != Affinity::Text && have != Affinity::Blob,
        Affinity::Integer | Affinity::Real => have == Affinity::Text,
        Affinity::Numeric | Affinity::Blob => false,
    };
    if altered {
        Verdict::Narrower(format!(
            "it is `{actual}`, another kind of type than the entity's `{expected}`"
        ))
    } else {
        Verdict::Holds
    }
}

fn fits(want: Option<u64>, have: Option<u64>) -> bool {
    match (want, have) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(w), Some(h)) => h >= w,
    }
}

/// What `declared` holds on `backend`: PostgreSQL's `format_type` or sea-query's spelling,
/// MySQL's `COLUMN_TYPE` or sea-query's.
fn parse(backend: DbBackend, declared: &str) -> Kind {
    let t = declared
        .trim()
        .to_ascii_lowercase()
        .replace('"', "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let (base, args, rest) = split(&t);
    let first = args.first().copied();
    let digits = first.map_or(if backend == DbBackend::MySql { 0 } else { 6 }, |d| {
        d as u32
    });
    match base.as_str() {
        "tinyint" if backend == DbBackend::MySql && first == Some(1) => Kind::Bool,
        "tinyint" => int(1, &rest),
        "smallint" | "int2" => int(2, &rest),
        "mediumint" => int(3, &rest),
        "int" | "integer" | "int4" => int(4, &rest),
        "bigint" | "int8" => int(8, &rest),
        "bool" | "boolean" => Kind::Bool,
        "real" | "float" | "float4" => Kind::Float { bytes: 4 },
        "double" | "double precision" | "float8" => Kind::Float { bytes: 8 },
        "numeric" | "decimal" => Kind::Decimal(match args.as_slice() {
            [p, s] => Some((*p as u32, *s as u32)),
            [p] => Some((*p as u32, 0)),
            _ if backend == DbBackend::MySql => Some((10, 0)),
            _ => None,
        }),
        "varchar" | "character varying" | "char" | "character" | "nvarchar" => Kind::Text(first),
        "text" if backend == DbBackend::MySql => Kind::Text(Some(65_535)),
        "tinytext" => Kind::Text(Some(255)),
        "mediumtext" => Kind::Text(Some(16_777_215)),
        "text" | "longtext" => Kind::Text(None),
        "varbinary" | "binary" => Kind::Bytes(first),
        "blob" if backend == DbBackend::MySql => Kind::Bytes(Some(65_535)),
        "tinyblob" => Kind::Bytes(Some(255)),
        "mediumblob" => Kind::Bytes(Some(16_777_215)),
        "bytea" | "blob" | "longblob" => Kind::Bytes(None),
        "date" => Kind::Date,
        "time" => Kind::Time { digits },
        "datetime" => Kind::Timestamp {
            zoned: false,
            digits,
        },
        // MySQL's TIMESTAMP is UTC underneath, as ormsync writes zoned values there.
        "timestamp" if backend == DbBackend::MySql => Kind::Timestamp {
            zoned: false,
            digits,
        },
        "timestamp" => Kind::Timestamp {
            zoned: rest == "with time zone",
            digits,
        },
        "timestamptz" => Kind::Timestamp {
            zoned: true,
            digits,
        },
        "json" | "jsonb" => Kind::Json,
        "uuid" => Kind::Uuid,
        "enum" => Kind::Enum(enum_values(&t)),
        _ => Kind::Other(t.clone()),
    }
}

fn int(bytes: u8, rest: &str) -> Kind {
    Kind::Int {
        bytes,
        unsigned: rest.contains("unsigned"),
    }
}

/// `numeric(18, 4) rest` as (`numeric`, [18, 4], `rest`); a PostgreSQL time type's
/// modifier sits inside its name (`timestamp(3) with time zone`).
fn split(t: &str) -> (String, Vec<u64>, String) {
    let Some(open) = t.find('(') else {
        // `double precision`, `timestamp with time zone`, `int unsigned`.
        for two in ["double precision", "character varying"] {
            if let Some(rest) = t.strip_prefix(two) {
                return (two.into(), vec![], rest.trim().into());
            }
        }
        let (base, rest) = t.split_once(' ').unwrap_or((t, ""));
        return (base.into(), vec![], rest.trim().into());
    };
    let close = t[open..].find(')').map_or(t.len(), |c| open + c);
    let args = t[open + 1..close]
        .split(',')
        .map_while(|a| a.trim().parse().ok())
        .collect();
    let base = t[..open].trim().to_string();
    let rest = t.get(close + 1..).unwrap_or("").trim().to_string();
    (base, args, rest)
}

fn enum_values(t: &str) -> Vec<String> {
    let inner = t
        .find('(')
        .and_then(|o| t.rfind(')').map(|c| &t[o + 1..c]))
        .unwrap_or("");
    inner
        .split(',')
        .map(|v| v.trim().trim_matches('\'').to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(non_upper_case_globals)]
    use super::*;

    const MySql: DbBackend = DbBackend::MySql;
    const Postgres: DbBackend = DbBackend::Postgres;
    const Sqlite: DbBackend = DbBackend::Sqlite;

    #[test]
    fn a_wider_or_equal_column_holds() {
        assert_eq!(compare(Postgres, "integer", "bigint"), Verdict::Holds);
        assert_eq!(compare(Postgres, "bigint", "bigint"), Verdict::Holds);
        assert_eq!(
            compare(Postgres, "varchar(40)", "character varying(80)"),
            Verdict::Holds
        );
        assert_eq!(compare(Postgres, "varchar", "text"), Verdict::Holds);
        assert_eq!(
            compare(
                Postgres,
                "timestamp with time zone",
                "timestamp with time zone"
            ),
            Verdict::Holds
        );
        assert_eq!(
            compare(Postgres, "decimal(18, 4)", "numeric(20,6)"),
            Verdict::Holds
        );
        assert_eq!(
            compare(Postgres, "decimal(18, 4)", "numeric"),
            Verdict::Holds
        );
        assert_eq!(compare(MySql, "int", "int(11)"), Verdict::Holds);
        assert_eq!(compare(MySql, "bool", "tinyint(1)"), Verdict::Holds);
        assert_eq!(compare(MySql, "json", "longtext"), Verdict::Holds);
        assert_eq!(compare(MySql, "datetime(6)", "datetime(6)"), Verdict::Holds);
        assert_eq!(
            compare(MySql, "decimal(65, 30)", "decimal(65,30)"),
            Verdict::Holds
        );
        assert_eq!(
            compare(MySql, "ENUM('a', 'b')", "enum('a','b','c')"),
            Verdict::Holds
        );
        assert_eq!(compare(MySql, "int unsigned", "bigint(20)"), Verdict::Holds);
    }

    #[test]
    fn a_narrower_column_or_another_kind_is_named() {
        for (backend, expected, actual) in [
            (Postgres, "bigint", "integer"),
            (Postgres, "decimal(18, 4)", "numeric(18,2)"),
            (Postgres, "numeric", "numeric(10,2)"),
            (
                Postgres,
                "timestamp with time zone",
                "timestamp without time zone",
            ),
            (Postgres, "timestamp", "timestamp(0) without time zone"),
            (Postgres, "bigint", "text"),
            (Postgres, "double precision", "real"),
            (MySql, "bigint", "int(11)"),
            (MySql, "datetime(6)", "datetime"),
            (MySql, "ENUM('a', 'b')", "enum('a')"),
            (MySql, "int", "int(10) unsigned"),
            (MySql, "varchar(255)", "int(11)"),
        ] {
            match compare(backend, expected, actual) {
                Verdict::Narrower(why) => assert!(why.contains(actual), "{why}"),
                other => panic!("{backend:?} {expected} as {actual}: {other:?}"),
            }
        }
    }

    #[test]
    fn sqlite_columns_hold_but_for_their_kind_and_shorter_text_only_differs() {
        assert_eq!(compare(Sqlite, "bigint", "INTEGER"), Verdict::Holds);
        assert_eq!(compare(Sqlite, "integer", "bigint"), Verdict::Holds);
        assert_eq!(compare(Sqlite, "varchar(10)", "TEXT"), Verdict::Holds);
        assert_eq!(compare(Sqlite, "text", "varchar(3)"), Verdict::Holds);
        assert_eq!(compare(Sqlite, "real", "double"), Verdict::Holds);
        assert_eq!(compare(Sqlite, "decimal", "TEXT"), Verdict::Holds);
        assert!(matches!(
            compare(Sqlite, "bigint", "text"),
            Verdict::Narrower(_)
        ));
        assert!(matches!(
            compare(Sqlite, "text", "integer"),
            Verdict::Narrower(_)
        ));
        assert_eq!(compare(Postgres, "inet", "cidr"), Verdict::Differs);
        assert_eq!(compare(Postgres, "inet", "inet"), Verdict::Holds);
        assert_eq!(
            compare(Postgres, "varchar(80)", "character varying(20)"),
            Verdict::Differs
        );
        assert_eq!(
            compare(Postgres, "text", "character varying(20)"),
            Verdict::Differs
        );
        assert_eq!(compare(MySql, "longtext", "text"), Verdict::Differs);
    }
}
