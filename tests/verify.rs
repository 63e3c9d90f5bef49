//! Drift detection and repair on every backend pair: replicate, break the destination with
//! plain SQL (a missing row, an extra row, a changed value, a NULL turned into an empty
//! string, a timestamp one microsecond off), and check that verify reports exactly those
//! rows, that repair fixes them (through the outbox, or directly), and that a dry run
//! changes nothing.

#[macro_use]
mod common;
#[path = "verify/key_order.rs"]
mod key_order;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::entities::{accounts, everything, everything_rows, line_items};
use common::{Backend, TestDb, assert_all_same, max_outbox_id, pair};
use ormsync::change::Row;
use ormsync::value::Value;
use ormsync::verify::{
    Drift, Fix, RepairMode, RepairOptions, Report, Verifier, VerifyOptions, repair, verify,
};
use ormsync::{Destination, Replicator};
use sea_orm::prelude::Decimal;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, ModelTrait, Set,
    Statement, TransactionTrait,
};

on_every_pair!(
    also_sqlite:
    drift_is_reported_exactly_and_repaired_through_the_outbox,
    wide_rows_in_chunks_sized_by_bytes,
    empty_and_single_row_tables,
    composite_keys_across_chunk_boundaries,
    dry_run_changes_nothing_and_direct_mode_repairs_at_once,
);

// ---- data ------------------------------------------------------------------------------

fn ts(s: &str) -> DateTime<Utc> {
    DateTime::<Utc>::from_str(s).expect("timestamp")
}

fn account(id: i64) -> accounts::ActiveModel {
    accounts::ActiveModel {
        id: Set(id),
        name: Set(format!("name {id}")),
        balance: Set(Decimal::from_str(&format!("{id}.25")).expect("decimal")),
        updated_at: Set(Utc
            .timestamp_opt(1_700_000_000 + id * 61, 0)
            .single()
            .expect("timestamp")
            + chrono::Duration::microseconds(id * 1001)),
        // Every third account has no note.
        note: Set((id % 3 != 0).then(|| format!("note {id}"))),
        local_flag: Set(Some(1)),
    }
}

fn line(order_id: i64, line_no: i32) -> line_items::ActiveModel {
    line_items::ActiveModel {
        order_id: Set(order_id),
        line_no: Set(line_no),
        sku: Set(format!("SKU-{order_id}-{line_no}")),
        qty: Set(line_no * 10),
    }
}

/// Accounts 1..=20, orders 1..=4 of 3 lines each, and the `everything` rows, written in
/// transactions (so captured).
async fn fill(db: &DatabaseConnection) {
    let txn = db.begin().await.unwrap();
    for id in 1..=20 {
        account(id).insert(&txn).await.unwrap();
    }
    for order in 1..=4 {
        for no in 1..=3 {
            line(order, no).insert(&txn).await.unwrap();
        }
    }
    for m in everything_rows() {
        everything::ActiveModel::from(m).insert(&txn).await.unwrap();
    }
    txn.commit().await.unwrap();
}

async fn start(source: &TestDb, dest: &TestDb) -> Replicator {
    Replicator::builder(source.db.clone())
        .entity::<accounts::Entity>()
        .entity::<line_items::Entity>()
        .entity::<everything::Entity>()
        .destination(Destination::new("dest", dest.db.clone()))
        .poll_interval(Duration::from_millis(50))
        .retry_delays(Duration::from_millis(10), Duration::from_millis(200))
        .start()
        .await
        .expect("start replicator")
}

fn verifier(s: &TestDb, d: &TestDb) -> Verifier {
    Verifier::new(s.db.clone(), d.db.clone())
        .entity::<accounts::Entity>()
        .entity::<line_items::Entity>()
        .entity::<everything::Entity>()
}

// ---- plain SQL at a database -----------------------------------------------------------

/// Runs `sql` (with `?` placeholders) at `db`, binding `values`.
async fn exec(db: &DatabaseConnection, sql: &str, values: Vec<sea_orm::Value>) {
    let backend = db.get_database_backend();
    let sql = if backend == DbBackend::Postgres {
        let mut out = String::new();
        let mut n = 0;
        for ch in sql.chars() {
            if ch == '?' {
                n += 1;
                out.push_str(&format!("${n}"));
            } else {
                out.push(ch);
            }
        }
        out
    } else {
        sql.to_string()
    };
    db.execute_raw(Statement::from_sql_and_values(backend, &sql, values))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Binds a typed value the way ormsync would write it to `db`.
fn bind(db: &DatabaseConnection, v: Value) -> sea_orm::Value {
    v.to_sea_for(db.get_database_backend())
}

/// Moves account `id`'s `updated_at` one microsecond later, in the database's own SQL
/// where it has date arithmetic.
async fn one_microsecond_later(db: &DatabaseConnection, id: i64) {
    match db.get_database_backend() {
        DbBackend::Postgres => exec(
            db,
            "UPDATE accounts SET updated_at = updated_at + interval '1 microsecond' WHERE id = ?",
            vec![id.into()],
        )
        .await,
        DbBackend::MySql => {
            exec(
                db,
                "UPDATE accounts SET updated_at = updated_at + INTERVAL 1 MICROSECOND WHERE id = ?",
                vec![id.into()],
            )
            .await
        }
        _ => {
            let now = accounts::Entity::find_by_id(id)
                .one(db)
                .await
                .unwrap()
                .unwrap()
                .updated_at;
            let later = bind(
                db,
                Value::DateTimeUtc(Some(now + chrono::Duration::microseconds(1))),
            );
            exec(
                db,
                "UPDATE accounts SET updated_at = ? WHERE id = ?",
                vec![later, id.into()],
            )
            .await
        }
    }
}

/// The drift every scenario below starts from, made with plain SQL at the destination:
///
/// - `accounts`: 5 missing, 1000 extra, 7's name changed, 9's NULL note now `''`, 11's
///   timestamp one microsecond later, and 13's skipped column changed (not drift);
/// - `line_items`: (2, 2) missing, (99, 1) extra, (3, 1)'s qty changed;
/// - `everything`: 2's binary changed, and 1's JSON rewritten with other key order and
///   spelling of numbers (not drift).
async fn break_destination(d: &DatabaseConnection) {
    exec(d, "DELETE FROM accounts WHERE id = 5", vec![]).await;
    exec(
        d,
        "INSERT INTO accounts (id, name, balance, updated_at, note, local_flag) VALUES (1000, 'ghost', 1.5, ?, NULL, NULL)",
        vec![bind(d, Value::DateTimeUtc(Some(ts("2024-01-01T00:00:00Z"))))],
    )
    .await;
    exec(
        d,
        "UPDATE accounts SET name = 'changed' WHERE id = 7",
        vec![],
    )
    .await;
    exec(d, "UPDATE accounts SET note = '' WHERE id = 9", vec![]).await;
    one_microsecond_later(d, 11).await;
    exec(
        d,
        "UPDATE accounts SET local_flag = 42 WHERE id = 13",
        vec![],
    )
    .await;

    exec(
        d,
        "DELETE FROM line_items WHERE order_id = 2 AND line_no = 2",
        vec![],
    )
    .await;
    exec(
        d,
        "INSERT INTO line_items (order_id, line_no, sku, qty) VALUES (99, 1, 'SKU-ghost', 1)",
        vec![],
    )
    .await;
    exec(
        d,
        "UPDATE line_items SET qty = qty + 1 WHERE order_id = 3 AND line_no = 1",
        vec![],
    )
    .await;

    exec(
        d,
        "UPDATE everything SET bin = ? WHERE id = 2",
        vec![bind(d, Value::Bytes(Some(vec![1])))],
    )
    .await;
    let same_doc =
        r#"{"nested": {"ü": "🚀"}, "big": 9007199254740993, "a": [1.0, 2.5, "x", null]}"#;
    let sql = match d.get_database_backend() {
        DbBackend::Postgres => "UPDATE everything SET doc = CAST(? AS jsonb) WHERE id = 1",
        _ => "UPDATE everything SET doc = ? WHERE id = 1",
    };
    exec(d, sql, vec![same_doc.into()]).await;
}

// ---- reading reports -------------------------------------------------------------------

fn int(row: &Row, column: &str) -> i64 {
    match row.get(column) {
        Some(Value::BigInt(Some(v))) => *v,
        Some(Value::Int(Some(v))) => i64::from(*v),
        other => panic!("{column} of {row:?}: {other:?}"),
    }
}

fn ids(rows: &[Row]) -> Vec<i64> {
    rows.iter().map(|r| int(r, "id")).collect()
}

fn lines(rows: &[Row]) -> Vec<(i64, i64)> {
    rows.iter()
        .map(|r| (int(r, "order_id"), int(r, "line_no")))
        .collect()
}

fn different_ids(report: &Report) -> Vec<(i64, Vec<String>)> {
    report
        .different
        .iter()
        .map(|d| (int(&d.key, "id"), d.columns.clone()))
        .collect()
}

fn different_lines(report: &Report) -> Vec<((i64, i64), Vec<String>)> {
    report
        .different
        .iter()
        .map(|d| {
            (
                (int(&d.key, "order_id"), int(&d.key, "line_no")),
                d.columns.clone(),
            )
        })
        .collect()
}

fn cols(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Checks the reports of the drift [`break_destination`] made, table by table.
fn assert_reports_the_drift(reports: &[Report]) {
    let [acc, lin, every] = reports else {
        panic!("three reports expected, got {reports:?}");
    };
    assert_eq!(acc.table, "accounts");
    assert_eq!(ids(&acc.missing), [5], "{acc}");
    assert_eq!(ids(&acc.extra), [1000], "{acc}");
    assert_eq!(
        different_ids(acc),
        [
            (7, cols(&["name"])),
            (9, cols(&["note"])),
            (11, cols(&["updated_at"])),
        ],
        "{acc}"
    );
    assert_eq!(
        (acc.missing_count, acc.extra_count, acc.different_count),
        (1, 1, 3)
    );
    assert_eq!((acc.source_rows, acc.dest_rows, acc.matching), (20, 20, 16));
    assert!(acc.is_complete());

    assert_eq!(lin.table, "line_items");
    assert_eq!(lines(&lin.missing), [(2, 2)], "{lin}");
    assert_eq!(lines(&lin.extra), [(99, 1)], "{lin}");
    assert_eq!(different_lines(lin), [((3, 1), cols(&["qty"]))], "{lin}");
    assert_eq!((lin.source_rows, lin.dest_rows, lin.matching), (12, 12, 10));

    assert_eq!(every.table, "everything");
    assert!(
        every.missing.is_empty() && every.extra.is_empty(),
        "{every}"
    );
    assert_eq!(different_ids(every), [(2, cols(&["bin"]))], "{every}");
    assert_eq!(every.matching, 2);
}

// ---- scenarios -------------------------------------------------------------------------

async fn drift_is_reported_exactly_and_repaired_through_the_outbox(src: Backend, dst: Backend) {
    common::trace();
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = start(&s, &d).await;
    fill(&s.db).await;
    rep.sync_now().await.unwrap();

    let v = verifier(&s, &d);
    // Small chunks, so the drift falls across chunk boundaries on both sides.
    let opts = VerifyOptions::default().chunk_size(4);
    let clean = v.verify(&opts).await.unwrap();
    for r in &clean {
        assert!(r.is_clean(), "after replication: {r}");
    }
    assert_eq!(clean[0].source_rows, 20);

    break_destination(&d.db).await;
    let reports = v.verify(&opts).await.unwrap();
    assert_reports_the_drift(&reports);
    // The chunk size changes nothing but the number of round trips.
    for chunk in [1, 3, 1000] {
        let again = v
            .verify(&VerifyOptions::default().chunk_size(chunk))
            .await
            .unwrap();
        assert_reports_the_drift(&again);
    }

    let before = max_outbox_id(&s.db).await;
    let outcomes = v.repair(&reports, &RepairOptions::default()).await.unwrap();
    assert_eq!(outcomes.len(), 3);
    let acc = &outcomes[0];
    assert_eq!((acc.upserts, acc.deletes), (4, 1), "{acc}");
    let fixes: Vec<(i64, Drift, Fix)> = acc
        .actions
        .iter()
        .map(|a| (int(&a.key, "id"), a.drift, a.fix))
        .collect();
    assert_eq!(
        fixes,
        [
            (5, Drift::Missing, Fix::Upsert),
            (1000, Drift::Extra, Fix::Delete),
            (7, Drift::Different, Fix::Upsert),
            (9, Drift::Different, Fix::Upsert),
            (11, Drift::Different, Fix::Upsert),
        ]
    );
    assert_eq!((outcomes[1].upserts, outcomes[1].deletes), (2, 1));
    assert_eq!((outcomes[2].upserts, outcomes[2].deletes), (1, 0));
    assert_eq!(
        max_outbox_id(&s.db).await,
        before + 9,
        "one outbox change per row fixed"
    );

    rep.sync_now().await.unwrap();
    for r in v.verify(&opts).await.unwrap() {
        assert!(r.is_clean(), "after repair: {r}");
    }
    assert_all_same(&s.db, &d.db).await;
    let thirteen = accounts::Entity::find_by_id(13)
        .one(&d.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        thirteen.local_flag,
        Some(42),
        "a skipped column is neither compared nor repaired"
    );
    rep.shutdown().await;
}

/// Narrow rows, then rows with 60 KB notes, verified with the default options: a chunk
/// stops at about 8 MiB, so the 12 MB of wide rows take more than one chunk, and the drift
/// is found exactly on either side of the change.
async fn wide_rows_in_chunks_sized_by_bytes(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = start(&s, &d).await;
    // 60 KB fits MariaDB's TEXT; 200 such rows are 12 MB.
    let wide = "w".repeat(60_000);
    for ids in (1..=320).collect::<Vec<i64>>().chunks(40) {
        let txn = s.db.begin().await.unwrap();
        for &id in ids {
            let mut a = account(id);
            if id > 120 {
                a.note = Set(Some(format!("{id}{wide}")));
            }
            a.insert(&txn).await.unwrap();
        }
        txn.commit().await.unwrap();
    }
    rep.sync_now().await.unwrap();
    let opts = VerifyOptions::default();
    let clean = verify::<accounts::Entity>(&s.db, &d.db, &opts)
        .await
        .unwrap();
    assert!(clean.is_clean(), "{clean}");
    assert_eq!(clean.source_rows, 320);

    exec(&d.db, "DELETE FROM accounts WHERE id = 30", vec![]).await;
    exec(
        &d.db,
        "UPDATE accounts SET note = 'short' WHERE id = 200",
        vec![],
    )
    .await;
    exec(
        &d.db,
        "UPDATE accounts SET name = 'changed' WHERE id = 240",
        vec![],
    )
    .await;
    let report = verify::<accounts::Entity>(&s.db, &d.db, &opts)
        .await
        .unwrap();
    assert_eq!(ids(&report.missing), [30], "{report}");
    assert!(report.extra.is_empty(), "{report}");
    assert_eq!(
        different_ids(&report),
        [(200, cols(&["note"])), (240, cols(&["name"]))],
        "{report}"
    );
    assert_eq!(
        (report.source_rows, report.dest_rows, report.matching),
        (320, 319, 317)
    );
    rep.shutdown().await;
}

async fn empty_and_single_row_tables(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let opts = VerifyOptions::default();
    for r in verifier(&s, &d).verify(&opts).await.unwrap() {
        assert!(r.is_clean(), "empty tables: {r}");
        assert_eq!((r.source_rows, r.dest_rows, r.matching), (0, 0, 0));
    }

    let rep = start(&s, &d).await;
    let txn = s.db.begin().await.unwrap();
    account(1).insert(&txn).await.unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    let r = verify::<accounts::Entity>(&s.db, &d.db, &opts)
        .await
        .unwrap();
    assert!(r.is_clean(), "{r}");
    assert_eq!((r.source_rows, r.dest_rows, r.matching), (1, 1, 1));

    // The one row gone at the destination: missing.
    exec(&d.db, "DELETE FROM accounts WHERE id = 1", vec![]).await;
    let r = verify::<accounts::Entity>(&s.db, &d.db, &opts)
        .await
        .unwrap();
    assert_eq!(ids(&r.missing), [1], "{r}");
    assert_eq!((r.source_rows, r.dest_rows, r.drift_count()), (1, 0, 1));

    // One row only at the destination, the source empty: extra.
    exec(
        &d.db,
        "INSERT INTO line_items (order_id, line_no, sku, qty) VALUES (7, 7, 'x', 1)",
        vec![],
    )
    .await;
    let r = verify::<line_items::Entity>(&s.db, &d.db, &opts)
        .await
        .unwrap();
    assert_eq!(lines(&r.extra), [(7, 7)], "{r}");
    assert_eq!((r.source_rows, r.dest_rows, r.drift_count()), (0, 1, 1));

    let accounts_report = verify::<accounts::Entity>(&s.db, &d.db, &opts)
        .await
        .unwrap();
    let fixed = repair::<accounts::Entity>(&s.db, &d.db, &accounts_report, &Default::default())
        .await
        .unwrap();
    assert_eq!(fixed.actions.len(), 1, "{fixed}");
    assert_eq!(fixed.actions[0].fix, Fix::Upsert);
    let fixed = repair::<line_items::Entity>(&s.db, &d.db, &r, &Default::default())
        .await
        .unwrap();
    assert_eq!(fixed.actions.len(), 1, "{fixed}");
    assert_eq!(fixed.actions[0].fix, Fix::Delete);
    rep.sync_now().await.unwrap();
    for r in verifier(&s, &d).verify(&opts).await.unwrap() {
        assert!(r.is_clean(), "after repair: {r}");
    }
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

async fn composite_keys_across_chunk_boundaries(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = start(&s, &d).await;
    let txn = s.db.begin().await.unwrap();
    for order in 1..=5 {
        for no in 1..=7 {
            line(order, no).insert(&txn).await.unwrap();
        }
    }
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    rep.shutdown().await;

    // The last line of an order, the first of the next, before the first key, between two
    // orders, and the very last row.
    exec(
        &d.db,
        "DELETE FROM line_items WHERE order_id = 3 AND line_no = 7",
        vec![],
    )
    .await;
    exec(
        &d.db,
        "DELETE FROM line_items WHERE order_id = 4 AND line_no = 1",
        vec![],
    )
    .await;
    exec(
        &d.db,
        "INSERT INTO line_items (order_id, line_no, sku, qty) VALUES (0, 1, 'a', 1), (3, 8, 'b', 1)",
        vec![],
    )
    .await;
    exec(
        &d.db,
        "UPDATE line_items SET sku = 'other', qty = 0 WHERE order_id = 5 AND line_no = 7",
        vec![],
    )
    .await;
    for chunk in [1, 2, 3, 7, 1000] {
        let r =
            verify::<line_items::Entity>(&s.db, &d.db, &VerifyOptions::default().chunk_size(chunk))
                .await
                .unwrap();
        assert_eq!(lines(&r.missing), [(3, 7), (4, 1)], "chunk {chunk}: {r}");
        assert_eq!(lines(&r.extra), [(0, 1), (3, 8)], "chunk {chunk}: {r}");
        assert_eq!(
            different_lines(&r),
            [((5, 7), cols(&["sku", "qty"]))],
            "chunk {chunk}: {r}"
        );
        assert_eq!((r.source_rows, r.dest_rows, r.matching), (35, 35, 32));
    }
    // Capped lists keep the full counts.
    let r = verify::<line_items::Entity>(&s.db, &d.db, &VerifyOptions::default().max_reported(1))
        .await
        .unwrap();
    assert_eq!(lines(&r.missing), [(3, 7)]);
    assert_eq!(
        (r.missing_count, r.extra_count, r.different_count),
        (2, 2, 1)
    );
    assert!(!r.is_complete());
}

async fn dry_run_changes_nothing_and_direct_mode_repairs_at_once(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = start(&s, &d).await;
    fill(&s.db).await;
    rep.sync_now().await.unwrap();
    // Direct mode writes to a destination no replicator is writing to.
    rep.shutdown().await;
    break_destination(&d.db).await;

    let v = verifier(&s, &d);
    let opts = VerifyOptions::default().chunk_size(5);
    let reports = v.verify(&opts).await.unwrap();
    assert_reports_the_drift(&reports);

    let outbox = max_outbox_id(&s.db).await;
    for mode in [RepairMode::Outbox, RepairMode::Direct] {
        let planned = v
            .repair(&reports, &RepairOptions::default().mode(mode).dry_run(true))
            .await
            .unwrap();
        assert!(planned.iter().all(|o| o.dry_run));
        assert_eq!(
            planned
                .iter()
                .map(|o| (o.upserts, o.deletes))
                .collect::<Vec<_>>(),
            [(4, 1), (2, 1), (1, 0)],
            "{mode:?}"
        );
        assert_eq!(
            max_outbox_id(&s.db).await,
            outbox,
            "{mode:?}: no outbox row"
        );
        assert_reports_the_drift(&v.verify(&opts).await.unwrap());
    }

    // The source changed since the verify: repair writes the source's current row, and
    // deletes a row the source no longer holds, whatever the report said.
    let txn = s.db.begin().await.unwrap();
    let mut seven = account(7);
    seven.name = Set("renamed at the source".into());
    seven.update(&txn).await.unwrap();
    accounts::Entity::find_by_id(5)
        .one(&txn)
        .await
        .unwrap()
        .unwrap()
        .delete(&txn)
        .await
        .unwrap();
    txn.commit().await.unwrap();

    let done = v
        .repair(
            &reports,
            &RepairOptions::default()
                .mode(RepairMode::Direct)
                .batch_size(2),
        )
        .await
        .unwrap();
    let acc = &done[0];
    assert!(!acc.dry_run);
    assert_eq!((acc.upserts, acc.deletes), (3, 2), "{acc}");
    assert_eq!(
        acc.actions
            .iter()
            .map(|a| (int(&a.key, "id"), a.fix))
            .collect::<Vec<_>>(),
        [
            (5, Fix::Delete),
            (1000, Fix::Delete),
            (7, Fix::Upsert),
            (9, Fix::Upsert),
            (11, Fix::Upsert),
        ]
    );
    for r in v.verify(&opts).await.unwrap() {
        assert!(r.is_clean(), "after a direct repair, without shipping: {r}");
    }
    let seven = accounts::Entity::find_by_id(7)
        .one(&d.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seven.name, "renamed at the source");
    assert_eq!(
        max_outbox_id(&s.db).await,
        outbox + 2,
        "direct mode queues nothing (the two changes are the application's)"
    );
}

#[tokio::test]
async fn a_missing_table_is_an_error_not_drift() {
    let Some(s) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let Some(d) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    s.create_tables().await;
    let err = verify::<accounts::Entity>(&s.db, &d.db, &VerifyOptions::default())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("accounts") && message.contains("destination"),
        "{message}"
    );
}

#[tokio::test]
async fn a_report_of_another_table_is_refused() {
    let Some((s, d)) = pair(Backend::Sqlite, Backend::Sqlite).await else {
        return;
    };
    let report = verify::<line_items::Entity>(&s.db, &d.db, &VerifyOptions::default())
        .await
        .unwrap();
    let err = repair::<accounts::Entity>(&s.db, &d.db, &report, &RepairOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ormsync::Error::Config(_)), "{err}");
}

/// A destination value that does not decode as its column's type (text in a SQLite `REAL`
/// column, written behind ormsync's back) fails verify with an error that names the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_does_not_decode_names_its_row() {
    let Some((s, d)) = pair(Backend::Sqlite, Backend::Sqlite).await else {
        return;
    };
    for db in [&s.db, &d.db] {
        db.execute_unprepared(
            "INSERT INTO accounts (id, name, balance, updated_at) \
             VALUES (7, 'x', 1.5, '2020-01-01 00:00:00')",
        )
        .await
        .unwrap();
    }
    d.db.execute_unprepared("UPDATE accounts SET balance = 'not-a-number' WHERE id = 7")
        .await
        .unwrap();
    let err = ormsync::verify::verify::<accounts::Entity>(&s.db, &d.db, &Default::default())
        .await
        .expect_err("text where a decimal belongs");
    let message = err.to_string();
    assert!(
        message.contains("balance") && message.contains(r#"the row keyed {"id":{"i8":7}}"#),
        "{message}"
    );
}
