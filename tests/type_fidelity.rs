//! Every column type the derive accepts, at its edges, on every path a row takes to a
//! destination: the stream, the initial snapshot, and `repair` in direct mode. Each
//! destination must then hold what the source holds, value for value, and `verify` must
//! find nothing. A value a destination cannot hold as it is (a decimal of more than 15
//! digits at SQLite, an unsigned integer above SQLite's range, a timestamp outside MariaDB's
//! `TIMESTAMP`, fractional seconds a column does not keep) is refused with an error naming
//! the column, and is parked or halts the destination: never stored altered.

#[macro_use]
mod common;

use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, Utc};
use common::{Backend, TestDb};
use ormsync::change::Row;
use ormsync::value::Value;
use ormsync::verify::{RepairMode, RepairOptions, Verifier};
use ormsync::{Destination, OnPermanentError, Replicated, Replicator, State, TableSpec};
use sea_orm::prelude::Decimal;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbBackend, Schema, Statement,
    TransactionTrait,
};

on_every_pair!(also_sqlite: every_type_arrives_unaltered_by_stream_snapshot_and_repair);

/// The pairs the macro leaves out, so that every backend is the source of every other:
/// PostgreSQL → SQLite is the pair of the `numeric(18,4)` report, MariaDB → PostgreSQL
/// and SQLite → MariaDB bring one-byte and unsigned integers to the two server backends.
mod other_pairs {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_to_sqlite() {
        every_type_arrives_unaltered_by_stream_snapshot_and_repair(
            Backend::Postgres,
            Backend::Sqlite,
        )
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mariadb_to_postgres() {
        every_type_arrives_unaltered_by_stream_snapshot_and_repair(
            Backend::MySql,
            Backend::Postgres,
        )
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_to_mariadb() {
        every_type_arrives_unaltered_by_stream_snapshot_and_repair(Backend::Sqlite, Backend::MySql)
            .await
    }
}

// ---- entities ----------------------------------------------------------------------------

/// The types every backend can hold as a source.
pub mod kinds {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
    #[sea_orm(rs_type = "String", db_type = "String(StringLen::N(8))")]
    pub enum Mood {
        #[sea_orm(string_value = "happy")]
        Happy,
        #[sea_orm(string_value = "")]
        Blank,
    }

    #[derive(Clone, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
    #[sea_orm(rs_type = "i32", db_type = "Integer")]
    pub enum Level {
        #[sea_orm(num_value = 0)]
        Zero,
        #[sea_orm(num_value = 2147483647)]
        Highest,
    }

    /// A database enum (`CREATE TYPE … AS ENUM` on PostgreSQL, `ENUM(…)` on MariaDB).
    #[derive(Clone, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
    #[sea_orm(rs_type = "String", db_type = "Enum", enum_name = "fidelity_color")]
    pub enum Color {
        #[sea_orm(string_value = "red")]
        Red,
        #[sea_orm(string_value = "green")]
        Green,
    }

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "fidelity_kinds")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub small_n: i16,
        pub int_n: i32,
        pub big_n: i64,
        pub real_n: f32,
        pub dbl_n: f64,
        /// PostgreSQL `numeric(18,4)`, SQLite `real(18, 4)`.
        #[sea_orm(column_type = "Decimal(Some((18, 4)))")]
        pub money: Decimal,
        pub amount: Decimal,
        pub maybe_amount: Option<Decimal>,
        pub txt: String,
        pub bin: Vec<u8>,
        pub flag: bool,
        pub uid: Uuid,
        pub doc: Option<Json>,
        pub on_day: Date,
        pub at_time: Time,
        pub naive_at: DateTime,
        pub zoned_at: DateTimeWithTimeZone,
        pub utc_at: DateTimeUtc,
        pub maybe_at: Option<DateTimeWithTimeZone>,
        pub mood: Mood,
        pub level: Level,
        pub color: Color,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

/// One-byte and unsigned integers: sea-orm binds and reads them on MariaDB and SQLite,
/// not on PostgreSQL (which has neither), so only those are sources of them.
pub mod narrow {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "fidelity_narrow")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub tiny: i8,
        pub utiny: u8,
        pub usmall: u16,
        pub uint: u32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

/// A JSON column and nothing PostgreSQL lacks an array type for, so that batches of it go
/// as `unnest` arrays there.
pub mod docs {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "fidelity_docs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub doc: Option<Json>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

/// `u64`, which sea-orm reads from MariaDB only.
pub mod wide {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "fidelity_wide")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub ubig: u64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

// ---- source tables -------------------------------------------------------------------------

/// Creates the source tables: sea-orm's own on PostgreSQL and SQLite, and on MariaDB what
/// an application's migration would write, since sea-orm's defaults there keep whole
/// seconds and no decimal places (`DATETIME`, `DECIMAL(10,0)`).
async fn source_tables(db: &DatabaseConnection) {
    let backend = db.get_database_backend();
    if backend == DbBackend::MySql {
        for ddl in [
            "CREATE TABLE fidelity_kinds (id BIGINT PRIMARY KEY, small_n SMALLINT NOT NULL, \
             int_n INT NOT NULL, big_n BIGINT NOT NULL, real_n FLOAT NOT NULL, dbl_n DOUBLE NOT NULL, \
             money DECIMAL(18,4) NOT NULL, amount DECIMAL(65,30) NOT NULL, \
             maybe_amount DECIMAL(65,30) NULL, txt TEXT NOT NULL, bin LONGBLOB NOT NULL, \
             flag BOOL NOT NULL, uid BINARY(16) NOT NULL, doc JSON NULL, on_day DATE NOT NULL, \
             at_time TIME(6) NOT NULL, naive_at DATETIME(6) NOT NULL, zoned_at DATETIME(6) NOT NULL, \
             utc_at DATETIME(6) NOT NULL, maybe_at DATETIME(6) NULL, mood VARCHAR(8) NOT NULL, \
             level INT NOT NULL, color ENUM('red', 'green') NOT NULL)",
            "CREATE TABLE fidelity_narrow (id BIGINT PRIMARY KEY, tiny TINYINT NOT NULL, \
             utiny TINYINT UNSIGNED NOT NULL, usmall SMALLINT UNSIGNED NOT NULL, \
             uint INT UNSIGNED NOT NULL)",
            "CREATE TABLE fidelity_wide (id BIGINT PRIMARY KEY, ubig BIGINT UNSIGNED NOT NULL)",
        ] {
            db.execute_unprepared(ddl).await.expect("create table");
        }
    } else {
        let schema = Schema::new(backend);
        for e in schema.create_enum_from_entity(kinds::Entity) {
            db.execute(&e).await.expect("create enum");
        }
        db.execute(&schema.create_table_from_entity(kinds::Entity))
            .await
            .expect("create table");
        if backend == DbBackend::Sqlite {
            db.execute(&schema.create_table_from_entity(narrow::Entity))
                .await
                .expect("create table");
        }
    }
    ormsync::install(db).await.expect("install");
}

/// The tables a source on `backend` holds.
fn specs(backend: Backend) -> Vec<TableSpec> {
    let mut out = vec![kinds::Entity::table_spec()];
    if backend != Backend::Postgres {
        out.push(narrow::Entity::table_spec());
    }
    if backend == Backend::MySql {
        out.push(wide::Entity::table_spec());
    }
    out
}

fn builder(source: &TestDb) -> ormsync::ReplicatorBuilder {
    let mut b = Replicator::builder(source.db.clone())
        .entity::<kinds::Entity>()
        .poll_interval(Duration::from_millis(50))
        .retry_delays(Duration::from_millis(20), Duration::from_millis(200));
    if source.backend != Backend::Postgres {
        b = b.entity::<narrow::Entity>();
    }
    if source.backend == Backend::MySql {
        b = b.entity::<wide::Entity>();
    }
    b
}

// ---- the edge values -----------------------------------------------------------------------

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("decimal")
}

fn zoned(s: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(s).expect("timestamp")
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::<Utc>::from_str(s).expect("timestamp")
}

/// The edge rows for a source on `src` replicated to `dst`. Decimals carry as many digits
/// as both ends hold: 28 between PostgreSQL and MariaDB, 15 where SQLite is one of them
/// (it keeps a decimal as a double; a longer one is refused, see
/// [`values_sqlite_cannot_hold_are_refused_and_parked`]). A MariaDB source keeps
/// `DateTime<Utc>` before 2038: sqlx binds it there as a `TIMESTAMP` parameter.
fn kinds_rows(src: Backend, dst: Backend) -> Vec<kinds::Model> {
    use kinds::{Color, Level, Mood};
    let sqlite = src == Backend::Sqlite || dst == Backend::Sqlite;
    let many = if sqlite {
        dec("-99999999999.9999")
    } else {
        dec("12345678901234567890.12345678")
    };
    let tiny = if sqlite {
        dec("0.000000000000001")
    } else {
        dec("0.0000000000000000000000000001")
    };
    let late_utc = if src == Backend::MySql {
        utc("2038-01-19T03:14:07.999999Z")
    } else {
        utc("9999-12-31T23:59:59.999999Z")
    };
    let base = kinds::Model {
        id: 1,
        small_n: i16::MAX,
        int_n: i32::MAX,
        big_n: i64::MAX,
        real_n: f32::MAX,
        dbl_n: -1.5e300,
        // The value of the report: read back from SQLite through an f64 it was
        // 4134.340600000001.
        money: dec("4134.3406"),
        amount: many,
        maybe_amount: Some(tiny),
        txt: "ünïcødé 🚀 日本語 \"quoted\" 'single' \\ back\nline\ttab".into(),
        bin: (0..=255).collect(),
        flag: true,
        uid: uuid::Uuid::max(),
        doc: Some(serde_json::json!({"a": [1, 2.5, "x", null], "nested": {"ü": "🚀"}, "n": null})),
        on_day: NaiveDate::from_ymd_opt(2024, 2, 29).expect("date"),
        at_time: NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).expect("time"),
        naive_at: NaiveDate::from_ymd_opt(2040, 2, 29)
            .and_then(|d| d.and_hms_micro_opt(1, 2, 3, 456_789))
            .expect("timestamp"),
        // Past 2038, in a zone east of UTC.
        zoned_at: zoned("2040-02-29T23:59:59.123456+05:30"),
        utc_at: late_utc,
        maybe_at: None,
        mood: Mood::Happy,
        level: Level::Highest,
        color: Color::Red,
    };
    vec![
        base.clone(),
        kinds::Model {
            id: 2,
            small_n: i16::MIN,
            int_n: i32::MIN,
            big_n: i64::MIN,
            real_n: 1.1,
            dbl_n: f64::MIN_POSITIVE,
            money: dec("-0.0001"),
            amount: dec("-0.5"),
            maybe_amount: None,
            txt: String::new(),
            bin: Vec::new(),
            flag: false,
            uid: uuid::Uuid::nil(),
            // The JSON document `null`, which is not SQL NULL.
            doc: Some(serde_json::Value::Null),
            on_day: NaiveDate::from_ymd_opt(1000, 1, 1).expect("date"),
            at_time: NaiveTime::MIN,
            naive_at: NaiveDate::from_ymd_opt(1000, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .expect("timestamp"),
            // Before 1970, in a zone west of UTC.
            zoned_at: zoned("1969-07-20T20:17:40.000001-05:00"),
            utc_at: utc("1970-01-01T00:00:00Z"),
            maybe_at: Some(zoned("2000-02-29T12:00:00+14:00")),
            mood: Mood::Blank,
            level: Level::Zero,
            color: Color::Green,
        },
        kinds::Model {
            id: 3,
            dbl_n: 0.1 + 0.2,
            real_n: -0.0,
            // SQL NULL.
            doc: None,
            txt: "NULL".into(),
            money: if sqlite {
                dec("99999999999.9999")
            } else {
                dec("99999999999999.9999")
            },
            ..base.clone()
        },
        kinds::Model {
            id: 4,
            // A JSON string that reads "null", and other documents.
            doc: Some(serde_json::json!("null")),
            money: dec("0"),
            ..base.clone()
        },
        kinds::Model {
            id: 5,
            doc: Some(serde_json::json!([
                1,
                1.5,
                -0.25,
                1e-7,
                9007199254740993i64,
                true,
                "",
                {}
            ])),
            ..base.clone()
        },
        kinds::Model {
            id: 6,
            doc: Some(serde_json::json!(12.5)),
            ..base
        },
    ]
}

fn narrow_rows() -> Vec<narrow::Model> {
    vec![
        narrow::Model {
            id: 1,
            tiny: i8::MIN,
            utiny: u8::MAX,
            usmall: u16::MAX,
            uint: u32::MAX,
        },
        narrow::Model {
            id: 2,
            tiny: i8::MAX,
            utiny: 0,
            usmall: 0,
            uint: 0,
        },
    ]
}

/// `u64` values every destination holds; `u64::MAX` is refused at SQLite.
fn wide_rows() -> Vec<wide::Model> {
    vec![
        wide::Model { id: 1, ubig: 0 },
        wide::Model {
            id: 2,
            ubig: i64::MAX as u64,
        },
    ]
}

/// Writes the edge rows at `source` in one captured transaction; returns them as rows of
/// typed values per table, in key order.
async fn write_rows(source: &TestDb, dst: Backend) -> Vec<(TableSpec, Vec<Row>)> {
    let txn = source.db.begin().await.expect("begin");
    let kinds = kinds_rows(source.backend, dst);
    for m in &kinds {
        kinds::ActiveModel::from(m.clone())
            .insert(&txn)
            .await
            .unwrap_or_else(|e| panic!("insert {m:?}: {e}"));
    }
    let mut out = vec![(
        kinds::Entity::table_spec(),
        kinds
            .iter()
            .map(|m| kinds::Entity::to_row(m).expect("row"))
            .collect(),
    )];
    if source.backend != Backend::Postgres {
        for m in narrow_rows() {
            narrow::ActiveModel::from(m)
                .insert(&txn)
                .await
                .expect("insert");
        }
        out.push((
            narrow::Entity::table_spec(),
            narrow_rows()
                .iter()
                .map(|m| narrow::Entity::to_row(m).expect("row"))
                .collect(),
        ));
    }
    if source.backend == Backend::MySql {
        for m in wide_rows() {
            wide::ActiveModel::from(m)
                .insert(&txn)
                .await
                .expect("insert");
        }
        out.push((
            wide::Entity::table_spec(),
            wide_rows()
                .iter()
                .map(|m| wide::Entity::to_row(m).expect("row"))
                .collect(),
        ));
    }
    txn.commit().await.expect("commit");
    out
}

// ---- reading and comparing -------------------------------------------------------------------

/// Every shipped column of every row of `spec`'s table, read by its type tag (as
/// snapshots and verify read), in key order.
async fn read_rows(db: &DatabaseConnection, spec: &TableSpec) -> Vec<Row> {
    common::rows_by_spec(db, spec).await
}

/// Asserts that `actual` holds `expected`, row by row and value by value. Values compare
/// as Rust values do: decimals by value (`1.50` = `1.5`), zoned timestamps as instants.
fn assert_rows(what: &str, table: &str, expected: &[Row], actual: &[Row]) {
    assert_eq!(
        expected.len(),
        actual.len(),
        "{what}: `{table}` has {} rows, expected {}",
        actual.len(),
        expected.len()
    );
    for (e, a) in expected.iter().zip(actual) {
        for ((column, want), (_, got)) in e.0.iter().zip(&a.0) {
            assert_eq!(
                want,
                got,
                "{what}: `{table}`.{column} of row {:?}",
                e.get("id")
            );
        }
    }
}

async fn assert_verify_clean(source: &TestDb, dest: &TestDb, specs: &[TableSpec], what: &str) {
    let mut v = Verifier::new(source.db.clone(), dest.db.clone());
    for s in specs {
        v = v.table(s.clone());
    }
    let reports = v.verify(&Default::default()).await.expect("verify");
    for r in &reports {
        assert!(r.is_clean(), "{what}: verify found drift: {r}");
    }
}

/// Waits for a destination's initial snapshot to finish, failing on a halt.
async fn snapshot_done(r: &Replicator) {
    let began = Instant::now();
    loop {
        let d = r.status().destinations.remove(0);
        assert_ne!(d.state, State::Halted, "halted: {:?}", d.last_error);
        if d.snapshot.as_ref().is_some_and(|s| s.is_done()) && d.state != State::Copying {
            return;
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "snapshot not done: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Breaks `table` at `db` with plain SQL: a copy of row 1 as an extra row 999, every row
/// but 2 and 999 deleted, row 2's `txt` (or first column after the key) changed.
async fn corrupt(db: &DatabaseConnection, spec: &TableSpec) {
    let backend = db.get_database_backend();
    let others: Vec<&str> = spec.columns[1..].iter().map(String::as_str).collect();
    let sql = [
        format!(
            "INSERT INTO {t} (id, {cols}) SELECT 999, {cols} FROM {t} WHERE id = 1",
            t = spec.table,
            cols = others.join(", ")
        ),
        format!("DELETE FROM {} WHERE id NOT IN (2, 999)", spec.table),
        if spec.columns.iter().any(|c| c == "txt") {
            format!("UPDATE {} SET txt = 'corrupted' WHERE id = 2", spec.table)
        } else {
            format!(
                "UPDATE {} SET {c} = {c} - 1 WHERE id = 2",
                spec.table,
                c = others[0]
            )
        },
    ];
    for s in sql {
        db.execute_raw(Statement::from_string(backend, s.clone()))
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

// ---- the sweep -------------------------------------------------------------------------------

async fn every_type_arrives_unaltered_by_stream_snapshot_and_repair(src: Backend, dst: Backend) {
    common::trace();
    let Some(source) = TestDb::create(src).await else {
        return;
    };
    let (Some(streamed), Some(copied), Some(repaired)) = (
        TestDb::create(dst).await,
        TestDb::create(dst).await,
        TestDb::create(dst).await,
    ) else {
        return;
    };
    source_tables(&source.db).await;
    let written = write_rows(&source, dst).await;
    let specs = specs(src);

    // The source holds what the application wrote.
    for (spec, rows) in &written {
        assert_rows(
            "source",
            &spec.table,
            rows,
            &read_rows(&source.db, spec).await,
        );
    }

    // The stream, into tables ormsync creates; the third destination gets them too, to
    // be broken and repaired below.
    let r = builder(&source)
        .destination(
            Destination::new("streamed", streamed.db.clone())
                .create_tables()
                .initial_snapshot(false),
        )
        .destination(
            Destination::new("repaired", repaired.db.clone())
                .create_tables()
                .initial_snapshot(false),
        )
        .start()
        .await
        .expect("start");
    r.sync_now().await.expect("stream");
    r.shutdown().await;

    // The snapshot, with an empty outbox: the copy alone brings the rows.
    source
        .db
        .execute_unprepared("DELETE FROM ormsync_outbox")
        .await
        .expect("empty the outbox");
    let r = builder(&source)
        .destination(Destination::new("copied", copied.db.clone()).create_tables())
        .start()
        .await
        .expect("start");
    snapshot_done(&r).await;
    r.shutdown().await;

    // Repair in direct mode, of a destination broken with plain SQL.
    for spec in &specs {
        corrupt(&repaired.db, spec).await;
    }
    let mut verifier = Verifier::new(source.db.clone(), repaired.db.clone());
    for s in &specs {
        verifier = verifier.table(s.clone());
    }
    let reports = verifier.verify(&Default::default()).await.expect("verify");
    assert!(
        reports.iter().all(|r| !r.is_clean()),
        "the broken destination shows drift: {reports:?}"
    );
    verifier
        .repair(&reports, &RepairOptions::default().mode(RepairMode::Direct))
        .await
        .expect("repair");

    for (what, dest) in [
        ("stream", &streamed),
        ("snapshot", &copied),
        ("repair", &repaired),
    ] {
        for (spec, rows) in &written {
            let what = format!("{}→{} by {what}", src.name(), dst.name());
            assert_rows(&what, &spec.table, rows, &read_rows(&dest.db, spec).await);
        }
        assert_verify_clean(&source, dest, &specs, what).await;
    }

    // Only SQLite keeps a zone offset; PostgreSQL's timestamptz and MariaDB keep the
    // instant (which the comparison above checked).
    if dst == Backend::Sqlite && src == Backend::Sqlite {
        let rows = read_rows(&streamed.db, &kinds::Entity::table_spec()).await;
        let Some(Value::DateTimeWithTimeZone(Some(at))) = rows[0].get("zoned_at") else {
            panic!("a zoned timestamp: {:?}", rows[0].get("zoned_at"));
        };
        assert_eq!(
            at.offset(),
            &FixedOffset::east_opt(5 * 3600 + 1800).unwrap()
        );
    }
}

// ---- what a destination cannot hold --------------------------------------------------------

/// A MariaDB source with values SQLite cannot hold: a 28-digit decimal and `u64::MAX`.
/// With `on_permanent_error(DeadLetter)` the two changes are parked with an error naming
/// the column, the rest arrives, and nothing altered is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_sqlite_cannot_hold_are_refused_and_parked() {
    let (Some(source), Some(dest)) = (
        TestDb::create(Backend::MySql).await,
        TestDb::create(Backend::Sqlite).await,
    ) else {
        return;
    };
    source_tables(&source.db).await;
    let mut rows = kinds_rows(Backend::MySql, Backend::Postgres);
    rows.truncate(2);
    rows[1].amount = dec("-0.5");
    // Row 1 holds the 28-digit decimal.
    assert_eq!(rows[0].amount, dec("12345678901234567890.12345678"));
    let txn = source.db.begin().await.expect("begin");
    for m in &rows {
        kinds::ActiveModel::from(m.clone())
            .insert(&txn)
            .await
            .expect("insert");
    }
    for m in [
        wide::Model {
            id: 1,
            ubig: u64::MAX,
        },
        wide::Model { id: 2, ubig: 7 },
    ] {
        wide::ActiveModel::from(m)
            .insert(&txn)
            .await
            .expect("insert");
    }
    txn.commit().await.expect("commit");

    let r = builder(&source)
        .destination(
            Destination::new("lite", dest.db.clone())
                .create_tables()
                .initial_snapshot(false)
                .on_permanent_error(OnPermanentError::DeadLetter),
        )
        .start()
        .await
        .expect("start");
    r.sync_now().await.expect("sync");
    let parked = r.dead_letters("lite").await.expect("dead letters");
    r.shutdown().await;

    let mut parked: Vec<(String, String)> =
        parked.into_iter().map(|d| (d.table, d.error)).collect();
    parked.sort();
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert_eq!(parked[0].0, "fidelity_kinds");
    assert!(
        parked[0].1.contains("`fidelity_kinds.amount`")
            && parked[0].1.contains("28 significant digits")
            && parked[0].1.contains("SQLite keeps 15"),
        "{}",
        parked[0].1
    );
    assert_eq!(parked[1].0, "fidelity_wide");
    assert!(
        parked[1].1.contains("`fidelity_wide.ubig`")
            && parked[1].1.contains("18446744073709551615"),
        "{}",
        parked[1].1
    );
    // The others arrived, the refused ones not at all.
    let kinds_at_dest = read_rows(&dest.db, &kinds::Entity::table_spec()).await;
    assert_eq!(kinds_at_dest.len(), 1);
    assert_eq!(kinds_at_dest[0].get("id"), Some(&Value::BigInt(Some(2))));
    let wide_at_dest = read_rows(&dest.db, &wide::Entity::table_spec()).await;
    assert_eq!(
        wide_at_dest,
        [Row(vec![
            ("id".into(), Value::BigInt(Some(2))),
            ("ubig".into(), Value::BigUnsigned(Some(7))),
        ])]
    );
}

/// `u64::MAX` from MariaDB to PostgreSQL, which has no unsigned integers: a `numeric(20)`
/// column holds it exactly (and verify reads it back as the `u64` it is); the `bigint`
/// that `create_tables()` makes refuses it with PostgreSQL's own error, and the
/// destination halts rather than store anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_64_bit_values_need_a_numeric_column_at_postgres() {
    let (Some(source), Some(numeric), Some(bigint)) = (
        TestDb::create(Backend::MySql).await,
        TestDb::create(Backend::Postgres).await,
        TestDb::create(Backend::Postgres).await,
    ) else {
        return;
    };
    source_tables(&source.db).await;
    numeric
        .db
        .execute_unprepared(
            "CREATE TABLE fidelity_wide (id BIGINT PRIMARY KEY, ubig NUMERIC(20) NOT NULL)",
        )
        .await
        .expect("create table");
    let rows = [
        wide::Model {
            id: 1,
            ubig: u64::MAX,
        },
        wide::Model { id: 2, ubig: 7 },
    ];
    let txn = source.db.begin().await.expect("begin");
    for m in &rows {
        wide::ActiveModel::from(m.clone())
            .insert(&txn)
            .await
            .expect("insert");
    }
    txn.commit().await.expect("commit");

    let r = Replicator::builder(source.db.clone())
        .entity::<wide::Entity>()
        .destination(Destination::new("numeric", numeric.db.clone()).initial_snapshot(false))
        .destination(
            Destination::new("bigint", bigint.db.clone())
                .create_tables()
                .initial_snapshot(false),
        )
        .start()
        .await
        .expect("start");
    let _ = r.sync_now().await;
    let states: Vec<(String, State, Option<String>)> = r
        .status()
        .destinations
        .into_iter()
        .map(|d| (d.name, d.state, d.last_error))
        .collect();
    r.shutdown().await;

    let spec = wide::Entity::table_spec();
    let expected: Vec<Row> = rows
        .iter()
        .map(|m| wide::Entity::to_row(m).expect("row"))
        .collect();
    assert_rows(
        "numeric",
        &spec.table,
        &expected,
        &read_rows(&numeric.db, &spec).await,
    );
    assert_verify_clean(&source, &numeric, std::slice::from_ref(&spec), "numeric").await;

    let (_, state, error) = states
        .iter()
        .find(|(name, _, _)| name == "bigint")
        .expect("the bigint destination");
    assert_eq!(*state, State::Halted, "{error:?}");
    let error = error.as_deref().unwrap_or_default();
    assert!(error.contains("out of range"), "{error}");
    assert_eq!(common::count(&bigint.db, "fidelity_wide").await, 0);
}

/// A destination whose columns keep less than the source's values (an application's
/// migration with `DATETIME` and `TIMESTAMP(6)` on MariaDB): a timestamp with microseconds
/// into `DATETIME`, or one past 2038 into `TIMESTAMP`, halts the destination with an error
/// naming the column, instead of a rounded or zeroed value. The same holds for repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_that_would_round_or_overflow_halt_the_destination() {
    let (Some(source), Some(dest)) = (
        TestDb::create(Backend::Postgres).await,
        TestDb::create(Backend::MySql).await,
    ) else {
        return;
    };
    source_tables(&source.db).await;
    let schema = Schema::new(DbBackend::MySql);
    let create = DbBackend::MySql.build(&schema.create_table_from_entity(kinds::Entity));
    // sea-orm's own MariaDB table: `datetime` and `time` keep whole seconds, `timestamp`
    // ends in 2038, `decimal` has no places.
    assert!(
        create.sql.contains("`naive_at` datetime NOT NULL"),
        "{}",
        create.sql
    );
    dest.db.execute_raw(create).await.expect("create table");

    let row = kinds_rows(Backend::Postgres, Backend::MySql).remove(0);
    let txn = source.db.begin().await.expect("begin");
    kinds::ActiveModel::from(row)
        .insert(&txn)
        .await
        .expect("insert");
    txn.commit().await.expect("commit");

    let r = builder(&source)
        .destination(Destination::new("maria", dest.db.clone()).initial_snapshot(false))
        .start()
        .await
        .expect("start");
    let err = r.sync_now().await.expect_err("refused");
    let status = r.status().destinations.remove(0);
    r.shutdown().await;
    assert_eq!(status.state, State::Halted, "{status:?}");
    let message = err.to_string();
    assert!(
        message.contains("`fidelity_kinds.amount`")
            && message.contains("decimal places and the column keeps 0"),
        "{message}"
    );
    assert_eq!(common::count(&dest.db, "fidelity_kinds").await, 0);

    // The same row through a table placed row by row (a conflict policy that reads the
    // destination's row first): refused the same way, nothing rounded.
    let r = builder(&source)
        .destination(
            Destination::new("maria", dest.db.clone())
                .initial_snapshot(false)
                .conflicts(ormsync::ConflictPolicy::DestinationWins),
        )
        .start()
        .await
        .expect("start");
    r.resume("maria").await.expect("resume");
    let err = r.sync_now().await.expect_err("refused").to_string();
    r.shutdown().await;
    assert!(
        err.contains("`fidelity_kinds.amount`")
            && err.contains("decimal places and the column keeps 0"),
        "{err}"
    );
    assert_eq!(common::count(&dest.db, "fidelity_kinds").await, 0);

    // Repair reads the row from the source and meets the same refusal.
    let verifier = Verifier::new(source.db.clone(), dest.db.clone()).entity::<kinds::Entity>();
    let reports = verifier.verify(&Default::default()).await.expect("verify");
    let err = verifier
        .repair(&reports, &RepairOptions::default().mode(RepairMode::Direct))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("`fidelity_kinds."), "{err}");
    assert_eq!(common::count(&dest.db, "fidelity_kinds").await, 0);

    // Column by column, as the application's migration widens them: what each would do
    // to a value.
    for (ddl, column, needle) in [
        (
            "ALTER TABLE fidelity_kinds MODIFY amount DECIMAL(65,30) NOT NULL, \
             MODIFY maybe_amount DECIMAL(65,30) NULL",
            "at_time",
            "fractional seconds beyond the 0 digits the column keeps",
        ),
        (
            "ALTER TABLE fidelity_kinds MODIFY at_time TIME(6) NOT NULL, \
             MODIFY naive_at DATETIME(6) NOT NULL, MODIFY zoned_at TIMESTAMP(6) NOT NULL",
            "zoned_at",
            "outside the range of MySQL/MariaDB's TIMESTAMP column",
        ),
    ] {
        dest.db.execute_unprepared(ddl).await.expect("alter");
        let r = builder(&source)
            .destination(Destination::new("maria", dest.db.clone()).initial_snapshot(false))
            .start()
            .await
            .expect("start");
        r.resume("maria").await.expect("resume");
        let err = r.sync_now().await.expect_err("refused").to_string();
        r.shutdown().await;
        assert!(
            err.contains(&format!("`fidelity_kinds.{column}`")) && err.contains(needle),
            "{err}"
        );
        assert_eq!(common::count(&dest.db, "fidelity_kinds").await, 0);
    }
}

/// The report: PostgreSQL `numeric(18,4)` to a SQLite table made by `create_tables()`.
/// Every value must verify as equal, and a direct repair must find nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_numeric_to_sqlite_verifies_clean() {
    let (Some(source), Some(dest)) = (
        TestDb::create(Backend::Postgres).await,
        TestDb::create(Backend::Sqlite).await,
    ) else {
        return;
    };
    source_tables(&source.db).await;
    let base = kinds_rows(Backend::Postgres, Backend::Sqlite).remove(1);
    // 4134.3406 and 2,000 more values of 4 places up to 14 digits, spread over the range.
    let mut rows = Vec::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for id in 0..2001i64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let digits = 5 + (x % 10) as u32;
        let mantissa = (x >> 8) % 10i64.pow(digits) as u64;
        let money = if id == 0 {
            dec("4134.3406")
        } else {
            Decimal::new(mantissa as i64, 4)
                * if x.is_multiple_of(2) {
                    Decimal::ONE
                } else {
                    -Decimal::ONE
                }
        };
        rows.push(kinds::Model {
            id,
            money,
            ..base.clone()
        });
    }
    for chunk in rows.chunks(500) {
        let txn = source.db.begin().await.expect("begin");
        for m in chunk {
            kinds::ActiveModel::from(m.clone())
                .insert(&txn)
                .await
                .expect("insert");
        }
        txn.commit().await.expect("commit");
    }
    let r = Replicator::builder(source.db.clone())
        .entity::<kinds::Entity>()
        .destination(
            Destination::new("lite", dest.db.clone())
                .create_tables()
                .initial_snapshot(false),
        )
        .start()
        .await
        .expect("start");
    r.sync_now().await.expect("sync");
    r.shutdown().await;

    let verifier = Verifier::new(source.db.clone(), dest.db.clone()).entity::<kinds::Entity>();
    let reports = verifier.verify(&Default::default()).await.expect("verify");
    for r in &reports {
        assert!(
            r.is_clean(),
            "{} rows differ, the first: {:?}",
            r.different_count,
            r.different.iter().take(3).collect::<Vec<_>>()
        );
    }
    let outcomes = verifier
        .repair(&reports, &RepairOptions::default().mode(RepairMode::Direct))
        .await
        .expect("repair");
    assert!(
        outcomes.iter().all(|o| o.actions.is_empty()),
        "nothing to repair: {outcomes:?}"
    );
    let spec = kinds::Entity::table_spec();
    let at_dest = read_rows(&dest.db, &spec).await;
    assert_eq!(
        at_dest[0].get("money"),
        Some(&Value::Decimal(Some(dec("4134.3406"))))
    );
    assert_rows(
        "postgres→sqlite",
        &spec.table,
        &read_rows(&source.db, &spec).await,
        &at_dest,
    );
}

/// A payload captured before JSON `null` had a form of its own (`{"j":null}` for both)
/// still applies, as SQL NULL; today's capture of a JSON `null` is `{"jn":null}` and
/// arrives as the document `null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_null_and_sql_null_stay_apart_and_old_payloads_still_apply() {
    let (Some(source), Some(dest)) = (
        TestDb::create(Backend::Sqlite).await,
        TestDb::create(Backend::Postgres).await,
    ) else {
        return;
    };
    source_tables(&source.db).await;
    let mut rows = kinds_rows(Backend::Sqlite, Backend::Postgres);
    rows.truncate(2);
    rows[0].doc = Some(serde_json::Value::Null);
    rows[1].doc = None;
    source
        .db
        .execute(&Schema::new(DbBackend::Sqlite).create_table_from_entity(docs::Entity))
        .await
        .expect("create table");
    let documents = [
        Some(serde_json::Value::Null),
        None,
        Some(serde_json::json!({"a": null})),
        Some(serde_json::json!("null")),
    ];
    let txn = source.db.begin().await.expect("begin");
    for m in &rows {
        kinds::ActiveModel::from(m.clone())
            .insert(&txn)
            .await
            .expect("insert");
    }
    for (id, doc) in (0i64..).zip(&documents) {
        docs::ActiveModel::from(docs::Model {
            id,
            doc: doc.clone(),
        })
        .insert(&txn)
        .await
        .expect("insert");
    }
    txn.commit().await.expect("commit");
    let payloads: Vec<String> = source
        .db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT payload FROM ormsync_outbox ORDER BY id",
        ))
        .await
        .expect("outbox")
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).expect("payload"))
        .collect();
    assert!(
        payloads[0].contains(r#""doc":{"jn":null}"#),
        "{}",
        payloads[0]
    );
    assert!(
        payloads[1].contains(r#""doc":{"j":null}"#),
        "{}",
        payloads[1]
    );

    // An update captured by an older version: the document `null` as `{"j":null}`.
    let old = payloads[0].replace(r#"{"jn":null}"#, r#"{"j":null}"#);
    source
        .db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "INSERT INTO ormsync_outbox (table_name, op, pk, payload) VALUES (?, 'U', ?, ?)",
            [
                "fidelity_kinds".into(),
                r#"{"id":{"i8":3}}"#.into(),
                old.replace(r#""id":{"i8":1}"#, r#""id":{"i8":3}"#).into(),
            ],
        ))
        .await
        .expect("old payload");

    let r = Replicator::builder(source.db.clone())
        .entity::<kinds::Entity>()
        .entity::<docs::Entity>()
        .destination(
            Destination::new("pg", dest.db.clone())
                .create_tables()
                .initial_snapshot(false),
        )
        .start()
        .await
        .expect("start");
    r.sync_now().await.expect("sync");
    r.shutdown().await;
    let at_dest = read_rows(&dest.db, &kinds::Entity::table_spec()).await;
    let docs: Vec<Option<&Value>> = at_dest.iter().map(|r| r.get("doc")).collect();
    assert_eq!(
        docs,
        [
            Some(&Value::Json(Some(serde_json::Value::Null))),
            Some(&Value::Json(None)),
            Some(&Value::Json(None)),
        ]
    );
    let sql_nulls = common::count(&dest.db, "fidelity_kinds WHERE doc IS NULL").await;
    assert_eq!(sql_nulls, 2, "row 1 holds the document null, not SQL NULL");

    // The same through PostgreSQL's `unnest` arrays, where a NULL is masked out and the
    // document `null` is an element.
    let at_dest = read_rows(&dest.db, &docs::Entity::table_spec()).await;
    let got: Vec<Option<&Value>> = at_dest.iter().map(|r| r.get("doc")).collect();
    let expected: Vec<Value> = documents.iter().cloned().map(Value::Json).collect();
    assert_eq!(got, expected.iter().map(Some).collect::<Vec<_>>());
    assert_eq!(
        common::count(&dest.db, "fidelity_docs WHERE doc IS NULL").await,
        1
    );
}

/// The arrays of `fidelity_arrays`, at their edges: empty, NULL, text that PostgreSQL's
/// array syntax would need to quote, the extremes of each element type.
fn array_rows() -> Vec<arrays::Model> {
    let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    (1..=12)
        .map(|id| arrays::Model {
            id,
            tags: match id % 4 {
                0 => vec![],
                1 => vec!["a".into(), "b, c".into(), "{d}".into(), "\"e\"".into()],
                2 => vec![
                    "ünï 🚀".into(),
                    String::new(),
                    "NULL".into(),
                    "back\\slash".into(),
                ],
                _ => vec![format!("tag {id}")],
            },
            scores: vec![i32::MIN, id as i32, i32::MAX],
            big: (id % 3 != 0).then(|| vec![i64::MIN, i64::MAX, id]),
            amounts: vec![dec("1.50"), dec("-0.000001"), dec("12345678901234.5678")],
            seen: vec![
                at("2024-02-29T23:59:59.123456Z"),
                at("1969-07-20T20:17:40.000001Z"),
            ],
            ids: vec![uuid::Uuid::from_u128(id as u128), uuid::Uuid::max()],
            flags: vec![true, false, id % 2 == 0],
            ratios: vec![0.1 + 0.2, -1.0e-300, f64::MAX],
        })
        .collect()
}

/// A PostgreSQL application's `Vec<T>` fields arrive: as arrays at PostgreSQL, as JSON
/// arrays at MariaDB and SQLite (in tables `create_tables` makes), by the initial copy and
/// by the stream. Read back with the source's types, every destination holds the source's
/// values, `verify` finds nothing, and after an array is broken by hand at a destination
/// `verify` finds it and `repair` puts it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrays_arrive_as_arrays_at_postgres_and_as_json_arrays_elsewhere() {
    common::trace();
    let Some(source) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let (Some(pg), Some(maria), Some(lite)) = (
        TestDb::create(Backend::Postgres).await,
        TestDb::create(Backend::MySql).await,
        TestDb::create(Backend::Sqlite).await,
    ) else {
        return;
    };
    let schema = Schema::new(DbBackend::Postgres);
    source
        .db
        .execute(&schema.create_table_from_entity(arrays::Entity))
        .await
        .expect("create table");
    ormsync::install(&source.db).await.expect("install");
    let rows = array_rows();
    let write = |models: &[arrays::Model]| {
        let models = models.to_vec();
        let db = source.db.clone();
        async move {
            let txn = db.begin().await.expect("begin");
            for m in models {
                arrays::ActiveModel::from(m)
                    .insert(&txn)
                    .await
                    .expect("insert");
            }
            txn.commit().await.expect("commit");
        }
    };
    // Half before the replicator starts (the initial copy brings them), half after.
    write(&rows[..6]).await;
    let spec = arrays::Entity::table_spec();
    let mut builder = Replicator::builder(source.db.clone())
        .entity::<arrays::Entity>()
        .poll_interval(Duration::from_millis(50));
    for (name, dest) in [("pg", &pg), ("maria", &maria), ("lite", &lite)] {
        builder = builder.destination(Destination::new(name, dest.db.clone()).create_tables());
    }
    let r = builder.start().await.expect("start");
    write(&rows[6..]).await;
    // Updates that change an array, empty it, null it; a delete.
    let txn = source.db.begin().await.expect("begin");
    let mut m: arrays::ActiveModel = rows[1].clone().into();
    m.tags = sea_orm::Set(vec!["changed".into()]);
    m.big = sea_orm::Set(None);
    m.update(&txn).await.expect("update");
    let mut m: arrays::ActiveModel = rows[8].clone().into();
    m.scores = sea_orm::Set(vec![]);
    m.big = sea_orm::Set(Some(vec![7]));
    m.update(&txn).await.expect("update");
    arrays::ActiveModel::from(rows[3].clone())
        .delete(&txn)
        .await
        .expect("delete");
    txn.commit().await.expect("commit");
    r.sync_now().await.expect("sync");
    r.shutdown().await;

    let expected = read_rows(&source.db, &spec).await;
    assert_eq!(expected.len(), 11);
    assert_eq!(
        expected[1].get("tags"),
        Some(&Value::Array {
            of: "s".into(),
            items: Some(vec![Value::String(Some("changed".into()))])
        })
    );
    for (what, dest) in [("PostgreSQL", &pg), ("MariaDB", &maria), ("SQLite", &lite)] {
        assert_rows(
            what,
            &spec.table,
            &expected,
            &read_rows(&dest.db, &spec).await,
        );
        assert_verify_clean(&source, dest, std::slice::from_ref(&spec), what).await;
    }
    // At PostgreSQL it is an array, elsewhere a JSON array.
    let stored = |db: &DatabaseConnection, sql: &str| {
        let (db, sql) = (db.clone(), sql.to_string());
        async move {
            let backend = db.get_database_backend();
            db.query_one_raw(Statement::from_string(backend, sql))
                .await
                .expect("query")
                .expect("a row")
                .try_get_by_index::<String>(0)
                .expect("text")
        }
    };
    assert_eq!(
        stored(
            &pg.db,
            "SELECT tags::text FROM fidelity_arrays WHERE id = 1"
        )
        .await,
        r#"{a,"b, c","{d}","\"e\""}"#
    );
    for dest in [&maria, &lite] {
        let text = stored(&dest.db, "SELECT tags FROM fidelity_arrays WHERE id = 1").await;
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).expect("JSON"),
            serde_json::json!(["a", "b, c", "{d}", "\"e\""])
        );
    }

    // Broken by hand, found, repaired.
    for (dest, sql) in [
        (
            &pg,
            "UPDATE fidelity_arrays SET scores = '{1,2}' WHERE id = 5",
        ),
        (
            &maria,
            "UPDATE fidelity_arrays SET scores = '[1,2]' WHERE id = 5",
        ),
        (
            &lite,
            "UPDATE fidelity_arrays SET scores = '[1,2]' WHERE id = 5",
        ),
    ] {
        dest.db.execute_unprepared(sql).await.expect("break");
        let verifier = Verifier::new(source.db.clone(), dest.db.clone()).table(spec.clone());
        let reports = verifier.verify(&Default::default()).await.expect("verify");
        assert!(
            !reports[0].is_clean(),
            "the broken array shows: {}",
            reports[0]
        );
        verifier
            .repair(&reports, &RepairOptions::default().mode(RepairMode::Direct))
            .await
            .expect("repair");
        assert_rows(
            "repair",
            &spec.table,
            &expected,
            &read_rows(&dest.db, &spec).await,
        );
    }
}

pub mod arrays {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "fidelity_arrays")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub tags: Vec<String>,
        pub scores: Vec<i32>,
        pub big: Option<Vec<i64>>,
        pub amounts: Vec<Decimal>,
        pub seen: Vec<DateTimeUtc>,
        pub ids: Vec<Uuid>,
        pub flags: Vec<bool>,
        pub ratios: Vec<f64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

/// An application on the `time` crate and `BigDecimal` (sea-orm's `with-time` and
/// `with-bigdecimal`): its values arrive as the same instants, wall times and decimals,
/// by the initial copy and by the stream, into tables `create_tables` makes; every
/// destination reads back what the source holds, `verify` agrees, and a captured row turns
/// back into the application's own types.
async fn time_and_big_decimal_fields_arrive_exactly(src: Backend, dst: Backend) {
    use time::macros::{date, datetime, offset, time};
    common::trace();
    let (Some(source), Some(dest)) = (TestDb::create(src).await, TestDb::create(dst).await) else {
        return;
    };
    if src == Backend::MySql {
        // sea-orm's own MySQL table would keep whole seconds (`TIMESTAMP`, `TIME`).
        source
            .db
            .execute_unprepared(
                "CREATE TABLE fidelity_other_crates (id BIGINT PRIMARY KEY, day DATE NOT NULL, \
                 at_time TIME(6) NOT NULL, naive_at DATETIME(6) NOT NULL, \
                 zoned_at DATETIME(6) NOT NULL, amount DECIMAL(40,20) NOT NULL, \
                 maybe_amount DECIMAL(40,20) NULL)",
            )
            .await
            .expect("create table");
    } else {
        let schema = Schema::new(source.db.get_database_backend());
        source
            .db
            .execute(&schema.create_table_from_entity(other_crates::Entity))
            .await
            .expect("create table");
    }
    ormsync::install(&source.db).await.expect("install");
    let big = |s: &str| bigdecimal::BigDecimal::from_str(s).expect("decimal");
    let model_of = |id: i64| other_crates::Model {
        id,
        day: date!(2024 - 02 - 29),
        at_time: time!(23:59:59.123456),
        naive_at: datetime!(1969-07-20 20:17:40.000001),
        zoned_at: datetime!(2024-02-29 23:59:59.654321).assume_offset(if id % 2 == 0 {
            offset!(+5:30)
        } else {
            offset!(-8)
        }),
        // At most 15 significant digits: SQLite keeps decimals as doubles.
        amount: big(["1.50", "-0.000001", "1234567890.12345", "0"][(id % 4) as usize]),
        maybe_amount: (id % 3 != 0).then(|| big("-98765.4321098765")),
    };
    let write = |ids: std::ops::RangeInclusive<i64>| {
        let db = source.db.clone();
        async move {
            let txn = db.begin().await.expect("begin");
            for id in ids {
                other_crates::ActiveModel::from(model_of(id))
                    .insert(&txn)
                    .await
                    .expect("insert");
            }
            txn.commit().await.expect("commit");
        }
    };
    write(1..=4).await;
    let r = Replicator::builder(source.db.clone())
        .entity::<other_crates::Entity>()
        .poll_interval(Duration::from_millis(50))
        .destination(Destination::new("backup", dest.db.clone()).create_tables())
        .start()
        .await
        .expect("start");
    write(5..=8).await;
    r.sync_now().await.expect("sync");
    r.shutdown().await;

    let spec = other_crates::Entity::table_spec();
    let expected = read_rows(&source.db, &spec).await;
    assert_eq!(expected.len(), 8);
    let what = format!("{}→{}", src.name(), dst.name());
    assert_rows(
        &what,
        &spec.table,
        &expected,
        &read_rows(&dest.db, &spec).await,
    );
    assert_verify_clean(&source, &dest, std::slice::from_ref(&spec), &what).await;
    // The payload's values turn back into the application's types.
    for row in &expected {
        let back = other_crates::Entity::active_from_row(row).expect("into the ActiveModel");
        let id = match row.get("id") {
            Some(Value::BigInt(Some(id))) => *id,
            other => panic!("{other:?}"),
        };
        let model = sea_orm::TryIntoModel::<other_crates::Model>::try_into_model(back)
            .expect("a whole model");
        let want = model_of(id);
        assert_eq!(model.amount, want.amount, "{what}: row {id}");
        assert_eq!(model.zoned_at, want.zoned_at, "{what}: row {id}");
        assert_eq!(model.at_time, want.at_time, "{what}: row {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_and_big_decimal_fields_arrive_exactly_postgres_to_mariadb() {
    time_and_big_decimal_fields_arrive_exactly(Backend::Postgres, Backend::MySql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_and_big_decimal_fields_arrive_exactly_mariadb_to_sqlite() {
    time_and_big_decimal_fields_arrive_exactly(Backend::MySql, Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_and_big_decimal_fields_arrive_exactly_sqlite_to_postgres() {
    time_and_big_decimal_fields_arrive_exactly(Backend::Sqlite, Backend::Postgres).await
}

/// `BigDecimal` values wider than a `rust_decimal` (40 digits, 20 after the point) arrive
/// exactly at PostgreSQL and MariaDB, by the copy and by the stream, and `verify` agrees;
/// SQLite, which keeps a decimal as a double, refuses them by name instead of rounding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_decimals_wider_than_a_decimal_arrive_exactly() {
    use time::macros::{date, datetime, time};
    common::trace();
    let (Some(source), Some(pg), Some(maria), Some(lite)) = (
        TestDb::create(Backend::Postgres).await,
        TestDb::create(Backend::Postgres).await,
        TestDb::create(Backend::MySql).await,
        TestDb::create(Backend::Sqlite).await,
    ) else {
        return;
    };
    let schema = Schema::new(DbBackend::Postgres);
    source
        .db
        .execute(&schema.create_table_from_entity(other_crates::Entity))
        .await
        .expect("create table");
    ormsync::install(&source.db).await.expect("install");
    let big = |s: &str| bigdecimal::BigDecimal::from_str(s).expect("decimal");
    let amounts = [
        "12345678901234567890.12345678901234567890",
        "-99999999999999999999.00000000000000000001",
        "0.00000000000000000001",
        "1.50",
    ];
    let write = |ids: std::ops::RangeInclusive<i64>| {
        let db = source.db.clone();
        async move {
            let txn = db.begin().await.expect("begin");
            for id in ids {
                other_crates::ActiveModel::from(other_crates::Model {
                    id,
                    day: date!(2024 - 01 - 01),
                    at_time: time!(00:00),
                    naive_at: datetime!(2024-01-01 00:00),
                    zoned_at: datetime!(2024-01-01 00:00 UTC),
                    amount: big(amounts[(id as usize - 1) % amounts.len()]),
                    maybe_amount: (id % 2 == 0)
                        .then(|| big("31415926535897932384.62643383279502884197")),
                })
                .insert(&txn)
                .await
                .expect("insert");
            }
            txn.commit().await.expect("commit");
        }
    };
    write(1..=4).await;
    let r = Replicator::builder(source.db.clone())
        .entity::<other_crates::Entity>()
        .poll_interval(Duration::from_millis(50))
        .destination(Destination::new("pg", pg.db.clone()).create_tables())
        .destination(Destination::new("maria", maria.db.clone()).create_tables())
        .destination(Destination::new("lite", lite.db.clone()).create_tables())
        .start()
        .await
        .expect("start");
    write(5..=8).await;
    r.sync_destination("pg").await.expect("sync pg");
    r.sync_destination("maria").await.expect("sync maria");
    let refused = r
        .sync_destination("lite")
        .await
        .expect_err("SQLite refuses them")
        .to_string();
    r.shutdown().await;
    assert!(
        refused.contains("`fidelity_other_crates.amount`") && refused.contains("SQLite keeps"),
        "{refused}"
    );

    let spec = other_crates::Entity::table_spec();
    let expected = read_rows(&source.db, &spec).await;
    assert_eq!(expected.len(), 8);
    assert!(
        expected
            .iter()
            .any(|r| matches!(r.get("amount"), Some(Value::BigDecimal(Some(_))))),
        "the wide values are read as such: {expected:?}"
    );
    for dest in [&pg, &maria] {
        let what = format!("postgres→{}", dest.backend.name());
        assert_rows(
            &what,
            &spec.table,
            &expected,
            &read_rows(&dest.db, &spec).await,
        );
        assert_verify_clean(&source, dest, std::slice::from_ref(&spec), &what).await;
    }
    // The payload's values turn back into the application's `BigDecimal`s.
    for row in &expected {
        let back = other_crates::Entity::active_from_row(row).expect("into the ActiveModel");
        let model = sea_orm::TryIntoModel::<other_crates::Model>::try_into_model(back)
            .expect("a whole model");
        let id = model.id as usize;
        assert_eq!(
            model.amount,
            big(amounts[(id - 1) % amounts.len()]),
            "row {id}"
        );
    }
}

pub mod other_crates {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "fidelity_other_crates")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub day: TimeDate,
        pub at_time: TimeTime,
        pub naive_at: TimeDateTime,
        pub zoned_at: TimeDateTimeWithTimeZone,
        #[sea_orm(column_type = "Decimal(Some((40, 20)))")]
        pub amount: BigDecimal,
        #[sea_orm(column_type = "Decimal(Some((40, 20)))", nullable)]
        pub maybe_amount: Option<BigDecimal>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

/// A captured row turns back into the application's `ActiveModel`, database enum
/// included (it travels as the enum, and the `DeriveActiveEnum` takes its variant back).
#[test]
fn a_row_turns_back_into_the_model_it_came_from() {
    use sea_orm::TryIntoModel;
    for m in kinds_rows(Backend::Postgres, Backend::MySql) {
        let row = kinds::Entity::to_row(&m).expect("row");
        assert_eq!(
            row.get("color"),
            Some(&Value::Enum {
                type_name: "fidelity_color".into(),
                value: Some(if m.color == kinds::Color::Red {
                    "red".into()
                } else {
                    "green".into()
                }),
            })
        );
        let back = kinds::Entity::active_from_row(&row)
            .expect("active model")
            .try_into_model()
            .expect("model");
        assert_eq!(back, m);
    }
    assert_eq!(
        kinds::Entity::table_spec().types.last().map(String::as_str),
        Some("en:fidelity_color")
    );
}
