//! Whether a destination holds a value as it is, and the values SQLite's `REAL` decimals
//! stand for.
//!
//! Databases take some values they cannot keep and store something else without an
//! error: SQLite turns a decimal into a double (15 significant digits survive) and a NaN
//! into NULL; a column with fewer fractional digits than the value rounds it (MariaDB's
//! `DATETIME` keeps whole seconds unless declared `DATETIME(6)`, PostgreSQL's timestamps
//! keep microseconds, `DECIMAL(18,4)` four places). ormsync refuses such a value instead
//! ([`refusal`]): the change is a permanent error, halted or parked as the destination's
//! policy says, and nothing is altered. What a database refuses by itself (an integer out
//! of range, text too long for its column) it reports with its own error.

use chrono::{DateTime, NaiveDateTime, Timelike};
use rust_decimal::Decimal;
use sea_orm::DbBackend;

use super::Value;

/// Significant decimal digits a double keeps whatever the value (`DBL_DIG`): SQLite's
/// `REAL`, which holds its decimals.
pub const SQLITE_DECIMAL_DIGITS: u32 = 15;

/// The decimal a SQLite `REAL` stands for: the double to 15 significant digits, as SQLite
/// prints it. Any decimal of up to 15 significant digits comes back exactly (the double
/// nearest to it rounds back to it); `None` for a NaN, an infinity, or a double outside a
/// decimal's range.
pub(crate) fn decimal_of_sqlite_real(f: f64) -> Option<Decimal> {
    if !f.is_finite() {
        return None;
    }
    let digits = SQLITE_DECIMAL_DIGITS as usize - 1;
    let text = format!("{f:.digits$e}");
    let (mantissa, exponent) = text.split_once('e')?;
    let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
    Decimal::from_scientific(&format!("{mantissa}e{exponent}"))
        .ok()
        .map(|d| d.normalize())
}

/// A decimal sea-orm read from a SQLite source, as the value the stored `REAL` stands for
/// ([`decimal_of_sqlite_real`]): sea-orm converts the double with all its binary digits
/// (4134.3406 becomes 4134.340600000001), which would ship a value the source never held.
pub(crate) fn sqlite_source_decimal(d: Decimal) -> Decimal {
    d.round_sf(SQLITE_DECIMAL_DIGITS)
        .map_or(d, |rounded| rounded.normalize())
}

/// Significant digits of `d` (`0.0450` has 2, `1200` has 2).
fn significant_digits(d: &Decimal) -> u32 {
    let mut m = d.mantissa().unsigned_abs();
    if m == 0 {
        return 0;
    }
    while m.is_multiple_of(10) {
        m /= 10;
    }
    m.ilog10() + 1
}

/// The digits after the point of a decimal's plain text, trailing zeros aside.
fn places(text: &str) -> u32 {
    text.split_once('.')
        .map_or(0, |(_, frac)| frac.trim_end_matches('0').len() as u32)
}

/// What a destination column keeps of a value, as far as ormsync checks it, from the
/// column's declared type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Column {
    /// A fixed-point decimal with `scale` fraction digits.
    Decimal { scale: u32 },
    /// A time or timestamp keeping `digits` fractional-second digits; `range` for
    /// MySQL's `TIMESTAMP`, whose range is 1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC.
    Temporal { digits: u32, range: bool },
    /// An integer or floating-point number.
    Number,
    /// Text of at most `chars` characters, which PostgreSQL's cast would cut to that
    /// length without a word and MySQL outside strict mode would too.
    Text { chars: u32 },
    /// Nothing checked by type.
    Other,
}

impl Column {
    /// The column whose type `declared` names at `backend` (PostgreSQL's `format_type`,
    /// MySQL's `COLUMN_TYPE`, SQLite's declared type).
    pub(crate) fn parse(backend: DbBackend, declared: &str) -> Column {
        let t = declared.trim().to_ascii_lowercase();
        let args = |rest: &str| -> Option<Vec<u32>> {
            let inner = rest.strip_prefix('(')?.split(')').next()?;
            inner.split(',').map(|n| n.trim().parse().ok()).collect()
        };
        match backend {
            DbBackend::Postgres => {
                if let Some(rest) = t.strip_prefix("numeric") {
                    match args(rest).as_deref() {
                        Some([_, scale]) => Column::Decimal { scale: *scale },
                        Some([_]) => Column::Decimal { scale: 0 },
                        _ => Column::Other,
                    }
                } else if let Some(rest) = t
                    .strip_prefix("timestamp")
                    .or_else(|| t.strip_prefix("time"))
                {
                    let digits = match args(rest).as_deref() {
                        Some([d]) => *d,
                        _ => 6,
                    };
                    Column::Temporal {
                        digits,
                        range: false,
                    }
                } else if ["smallint", "integer", "bigint", "real", "double precision"]
                    .contains(&t.as_str())
                {
                    Column::Number
                } else if let Some(rest) = t
                    .strip_prefix("character varying")
                    .or_else(|| t.strip_prefix("character"))
                {
                    match args(rest).as_deref() {
                        Some([chars]) => Column::Text { chars: *chars },
                        _ => Column::Other,
                    }
                } else {
                    Column::Other
                }
            }
            DbBackend::MySql => {
                if let Some(rest) = t.strip_prefix("decimal") {
                    match args(rest).as_deref() {
                        Some([_, scale]) => Column::Decimal { scale: *scale },
                        _ => Column::Decimal { scale: 0 },
                    }
                } else if let Some(rest) = t.strip_prefix("timestamp") {
                    Column::Temporal {
                        digits: args(rest).and_then(|a| a.first().copied()).unwrap_or(0),
                        range: true,
                    }
                } else if let Some(rest) = t
                    .strip_prefix("datetime")
                    .or_else(|| t.strip_prefix("time"))
                {
                    Column::Temporal {
                        digits: args(rest).and_then(|a| a.first().copied()).unwrap_or(0),
                        range: false,
                    }
                } else if [
                    "tinyint",
                    "smallint",
                    "mediumint",
                    "int",
                    "bigint",
                    "float",
                    "double",
                ]
                .iter()
                .any(|n| {
                    t.strip_prefix(n)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['(', ' ']))
                }) {
                    Column::Number
                } else if let Some(rest) =
                    t.strip_prefix("varchar").or_else(|| t.strip_prefix("char"))
                {
                    match args(rest).as_deref() {
                        Some([chars]) => Column::Text { chars: *chars },
                        _ => Column::Other,
                    }
                } else {
                    Column::Other
                }
            }
            // SQLite stores any value in any column; its numeric type names are judged as
            // the other backends judge theirs, so a value refused there is refused here.
            _ => {
                if t.contains("dec") || t.contains("numeric") {
                    Column::Decimal { scale: u32::MAX }
                } else if ["int", "real", "floa", "doub"]
                    .iter()
                    .any(|n| t.contains(n))
                {
                    Column::Number
                } else {
                    Column::Other
                }
            }
        }
    }
}

/// Why `backend` would not store `value` as it is, in a column like `column` where its
/// declared type is known; `None` when it would.
pub(crate) fn refusal(value: &Value, backend: DbBackend, column: Column) -> Option<String> {
    let name = backend_name(backend);
    match (backend, value) {
        (DbBackend::Sqlite, Value::Decimal(Some(d)))
            if significant_digits(d) > SQLITE_DECIMAL_DIGITS =>
        {
            return Some(format!(
                "the decimal {d} has {} significant digits and SQLite keeps {SQLITE_DECIMAL_DIGITS} \
                 (it stores a decimal as a double)",
                significant_digits(d)
            ));
        }
        (DbBackend::Sqlite, Value::BigDecimal(Some(t))) => {
            return Some(format!(
                "the decimal {t} has more significant digits than the \
                 {SQLITE_DECIMAL_DIGITS} SQLite keeps (it stores a decimal as a double)"
            ));
        }
        (DbBackend::Sqlite, Value::BigUnsigned(Some(v))) if i64::try_from(*v).is_err() => {
            return Some(format!(
                "the unsigned integer {v} is above SQLite's largest integer ({})",
                i64::MAX
            ));
        }
        (DbBackend::Sqlite, Value::Double(Some(f))) if f.is_nan() => {
            return Some("SQLite stores a NaN as NULL".into());
        }
        (DbBackend::Sqlite, Value::Float(Some(f))) if f.is_nan() => {
            return Some("SQLite stores a NaN as NULL".into());
        }
        (DbBackend::MySql, Value::Double(Some(f))) if !f.is_finite() => {
            return Some(format!("{name} has no {f}"));
        }
        (DbBackend::MySql, Value::Float(Some(f))) if !f.is_finite() => {
            return Some(format!("{name} has no {f}"));
        }
        _ => {}
    }
    if let (Column::Decimal { .. } | Column::Number, Value::String(Some(_))) = (column, value) {
        // PostgreSQL refuses text for a number, MariaDB refuses text that is not one, and
        // SQLite would keep it as text: refused alike everywhere, without quoting it.
        return Some("a text value for a numeric column".into());
    }
    match column {
        Column::Decimal { scale } => match value {
            Value::Decimal(Some(d)) if d.normalize().scale() > scale => Some(format!(
                "the decimal {d} has {} decimal places and the column keeps {scale}",
                d.normalize().scale()
            )),
            Value::BigDecimal(Some(t)) if places(t) > scale => Some(format!(
                "the decimal {t} has {} decimal places and the column keeps {scale}",
                places(t)
            )),
            _ => None,
        },
        Column::Temporal { digits, range } => {
            let (nanos, utc) = match value {
                Value::Time(Some(t)) => (t.nanosecond(), None),
                Value::DateTime(Some(t)) => (t.nanosecond(), Some(*t)),
                Value::DateTimeUtc(Some(t)) => (t.nanosecond(), Some(t.naive_utc())),
                Value::DateTimeLocal(Some(t)) => (t.nanosecond(), Some(t.naive_utc())),
                Value::DateTimeWithTimeZone(Some(t)) => (t.nanosecond(), Some(t.naive_utc())),
                _ => return None,
            };
            // A leap second's nanoseconds run past 1e9; its fraction is what is past that.
            let fraction = nanos % 1_000_000_000;
            let unit = 10u32.pow(9 - digits.min(9));
            if !fraction.is_multiple_of(unit) {
                return Some(format!(
                    "{} has fractional seconds beyond the {digits} digits the column keeps",
                    describe(value)
                ));
            }
            if range && let Some(at) = utc {
                let (lo, hi) = mysql_timestamp_range();
                if at < lo || at > hi {
                    return Some(format!(
                        "{} is outside the range of {name}'s TIMESTAMP column (1970-01-01 \
                         00:00:01 to 2038-01-19 03:14:07 UTC)",
                        describe(value)
                    ));
                }
            }
            None
        }
        Column::Text { chars } => match value {
            Value::String(Some(text)) if text.chars().count() > chars as usize => Some(format!(
                "a text of {} characters, and the column keeps {chars}",
                text.chars().count()
            )),
            _ => None,
        },
        Column::Number | Column::Other => None,
    }
}

fn mysql_timestamp_range() -> (NaiveDateTime, NaiveDateTime) {
    let at = |secs: i64, nanos: u32| {
        DateTime::from_timestamp(secs, nanos)
            .map(|t| t.naive_utc())
            .unwrap_or_default()
    };
    (at(1, 0), at(2_147_483_647, 999_999_999))
}

fn describe(value: &Value) -> String {
    match value {
        Value::Time(Some(t)) => format!("the time {}", t.format("%H:%M:%S%.f")),
        Value::DateTime(Some(t)) => format!("the timestamp {}", t.format("%Y-%m-%d %H:%M:%S%.f")),
        Value::DateTimeUtc(Some(t)) => format!("the timestamp {}", t.to_rfc3339()),
        Value::DateTimeLocal(Some(t)) => format!("the timestamp {}", t.to_rfc3339()),
        Value::DateTimeWithTimeZone(Some(t)) => format!("the timestamp {}", t.to_rfc3339()),
        other => format!("{other:?}"),
    }
}

fn backend_name(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "PostgreSQL",
        DbBackend::MySql => "MySQL/MariaDB",
        _ => "SQLite",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn time(h: u32, m: u32, s: u32, nanos: u32) -> Value {
        Value::Time(chrono::NaiveTime::from_hms_nano_opt(h, m, s, nanos))
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn sqlite_reals_give_back_every_decimal_of_15_digits() {
        for s in [
            "4134.3406",
            "0.1",
            "-0.0001",
            "123456789012345",
            "12345678901.2345",
            "0.000000000000001",
            "999999999999999",
            "1e20",
            "-98765.4321",
        ] {
            let d = Decimal::from_scientific(s)
                .or_else(|_| Decimal::from_str(s))
                .unwrap();
            let f: f64 = d.to_string().parse().unwrap();
            assert_eq!(decimal_of_sqlite_real(f), Some(d.normalize()), "{s}");
            // What sea-orm's read makes of the same double comes back too.
            let seaorm = Decimal::try_from(f).unwrap();
            assert_eq!(sqlite_source_decimal(seaorm), d.normalize(), "{s}");
        }
        assert_ne!(Decimal::try_from(4134.3406f64).unwrap(), dec("4134.3406"));
        assert_eq!(decimal_of_sqlite_real(0.0), Some(Decimal::ZERO));
        assert_eq!(decimal_of_sqlite_real(f64::NAN), None);
        assert_eq!(decimal_of_sqlite_real(1e40), None);
    }

    #[test]
    fn every_15_digit_fraction_survives_a_double() {
        // A sweep over the awkward part: the last digits of 15-digit values.
        let mut n: i64 = 100_000_000_000_000;
        while n < 100_000_000_100_000 {
            for scale in [0, 4, 9, 14] {
                let d = Decimal::new(n, scale);
                let f: f64 = d.to_string().parse().unwrap();
                assert_eq!(decimal_of_sqlite_real(f), Some(d.normalize()), "{d}");
            }
            n += 7;
        }
    }

    #[test]
    fn text_for_a_numeric_column_is_refused_on_every_backend() {
        let text = Value::String(Some("not-a-number".into()));
        for (backend, declared) in [
            (DbBackend::Postgres, "numeric(18,4)"),
            (DbBackend::Postgres, "bigint"),
            (DbBackend::Postgres, "double precision"),
            (DbBackend::MySql, "decimal(20,4)"),
            (DbBackend::MySql, "int(11)"),
            (DbBackend::MySql, "double"),
            (DbBackend::Sqlite, "REAL"),
            (DbBackend::Sqlite, "real_decimal"),
            (DbBackend::Sqlite, "INTEGER"),
            (DbBackend::Sqlite, "NUMERIC"),
        ] {
            let column = Column::parse(backend, declared);
            assert!(
                refusal(&text, backend, column).is_some(),
                "{backend:?} {declared}"
            );
            assert_eq!(
                refusal(&Value::BigInt(Some(1)), backend, column),
                None,
                "{backend:?} {declared}"
            );
        }
        for (backend, declared) in [
            (DbBackend::Postgres, "text"),
            (DbBackend::MySql, "varchar(255)"),
            (DbBackend::MySql, "internal_code"),
            (DbBackend::Sqlite, "TEXT"),
            (DbBackend::Sqlite, "datetime"),
            (DbBackend::Sqlite, ""),
        ] {
            let column = Column::parse(backend, declared);
            assert_eq!(
                refusal(&text, backend, column),
                None,
                "{backend:?} {declared}"
            );
        }
    }

    #[test]
    fn sqlite_refuses_what_it_would_alter() {
        let at = |v: Value| refusal(&v, DbBackend::Sqlite, Column::Other);
        assert_eq!(at(Value::Decimal(Some(dec("123456789012345")))), None);
        assert_eq!(at(Value::Decimal(Some(dec("1234567890.12345000")))), None);
        assert_eq!(
            at(Value::Decimal(Some(dec("1200000000000000000000")))),
            None
        );
        let refused = at(Value::Decimal(Some(dec("1234567890.123456")))).unwrap();
        assert!(refused.contains("16 significant digits"), "{refused}");
        assert!(at(Value::BigUnsigned(Some(u64::MAX))).is_some());
        assert_eq!(at(Value::BigUnsigned(Some(i64::MAX as u64))), None);
        assert!(at(Value::Double(Some(f64::NAN))).is_some());
        assert_eq!(at(Value::Double(Some(f64::INFINITY))), None);
        // Nothing of the kind at the other backends.
        let big = Value::Decimal(Some(dec("12345678901234567890.123456789")));
        assert_eq!(refusal(&big, DbBackend::Postgres, Column::Other), None);
        assert_eq!(refusal(&big, DbBackend::MySql, Column::Other), None);
    }

    #[test]
    fn declared_types_tell_what_a_column_keeps() {
        use sea_orm::DatabaseBackend::{MySql, Postgres, Sqlite};
        let cases = [
            (Postgres, "numeric(18,4)", Column::Decimal { scale: 4 }),
            (Postgres, "numeric", Column::Other),
            (Postgres, "numeric(10)", Column::Decimal { scale: 0 }),
            (
                Postgres,
                "timestamp(3) with time zone",
                Column::Temporal {
                    digits: 3,
                    range: false,
                },
            ),
            (
                Postgres,
                "time without time zone",
                Column::Temporal {
                    digits: 6,
                    range: false,
                },
            ),
            (Postgres, "text", Column::Other),
            (MySql, "decimal(18,4)", Column::Decimal { scale: 4 }),
            (
                MySql,
                "decimal(10,0) unsigned",
                Column::Decimal { scale: 0 },
            ),
            (
                MySql,
                "datetime",
                Column::Temporal {
                    digits: 0,
                    range: false,
                },
            ),
            (
                MySql,
                "datetime(6)",
                Column::Temporal {
                    digits: 6,
                    range: false,
                },
            ),
            (
                MySql,
                "timestamp(6)",
                Column::Temporal {
                    digits: 6,
                    range: true,
                },
            ),
            (
                MySql,
                "time",
                Column::Temporal {
                    digits: 0,
                    range: false,
                },
            ),
            (MySql, "tinytext", Column::Other),
            (MySql, "varchar(255)", Column::Text { chars: 255 }),
            (MySql, "char(2)", Column::Text { chars: 2 }),
            (Postgres, "character varying(4)", Column::Text { chars: 4 }),
            (Postgres, "character(3)", Column::Text { chars: 3 }),
            (Postgres, "character varying", Column::Other),
            (Postgres, "text", Column::Other),
            // SQLite keeps any decimal places; only text is refused there.
            (Sqlite, "real(18, 4)", Column::Number),
        ];
        for (backend, declared, column) in cases {
            assert_eq!(Column::parse(backend, declared), column, "{declared}");
        }
    }

    #[test]
    fn narrower_columns_refuse_what_they_would_round() {
        let four = Column::Decimal { scale: 4 };
        let d = |s| Value::Decimal(Some(dec(s)));
        assert_eq!(refusal(&d("4134.3406"), DbBackend::MySql, four), None);
        assert_eq!(refusal(&d("4134.340600"), DbBackend::MySql, four), None);
        assert!(refusal(&d("4134.34061"), DbBackend::Postgres, four).is_some());

        let short = Column::Text { chars: 4 };
        let text = |s: &str| Value::String(Some(s.into()));
        assert_eq!(refusal(&text("abcd"), DbBackend::Postgres, short), None);
        assert_eq!(refusal(&text("ääää"), DbBackend::MySql, short), None);
        assert!(refusal(&text("abcde"), DbBackend::Postgres, short).is_some());
        assert!(refusal(&text("abcde"), DbBackend::MySql, short).is_some());

        let whole = Column::Temporal {
            digits: 0,
            range: false,
        };
        let micros = Column::Temporal {
            digits: 6,
            range: false,
        };
        assert_eq!(refusal(&time(1, 2, 3, 0), DbBackend::MySql, whole), None);
        assert!(refusal(&time(1, 2, 3, 1_000), DbBackend::MySql, whole).is_some());
        assert_eq!(
            refusal(&time(1, 2, 3, 1_000), DbBackend::MySql, micros),
            None
        );
        assert!(refusal(&time(1, 2, 3, 1), DbBackend::Postgres, micros).is_some());

        let stamp = Column::Temporal {
            digits: 6,
            range: true,
        };
        let zoned =
            |s: &str| Value::DateTimeWithTimeZone(Some(DateTime::parse_from_rfc3339(s).unwrap()));
        assert_eq!(
            refusal(&zoned("2038-01-19T08:44:07+05:30"), DbBackend::MySql, stamp),
            None
        );
        let late = refusal(&zoned("2038-01-19T03:14:08Z"), DbBackend::MySql, stamp).unwrap();
        assert!(late.contains("2038-01-19 03:14:07"), "{late}");
        assert!(refusal(&zoned("1969-12-31T23:59:59Z"), DbBackend::MySql, stamp).is_some());
    }
}
