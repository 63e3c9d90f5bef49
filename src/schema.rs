//! The `ormsync_*` tables, created idempotently on every backend.
//!
//! One database can be a source and a destination at once (a child that feeds its own
//! children), so [`install`] creates the tables of both sides; the unused ones stay empty.

use std::collections::{HashMap, HashSet};

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::error::{DbContext, Result};

/// The tables ormsync owns, in creation order.
pub const TABLES: [&str; 13] = [
    "ormsync_node",
    "ormsync_outbox",
    "ormsync_leases",
    "ormsync_dead_letters",
    "ormsync_progress",
    "ormsync_checkpoint",
    "ormsync_key_map",
    "ormsync_conflicts",
    "ormsync_snapshot",
    "ormsync_snapshot_base",
    "ormsync_snapshot_left_out",
    "ormsync_entities",
    "ormsync_control",
];

/// Creates every `ormsync_*` table that does not exist yet; running it again changes nothing.
///
/// Call it at startup, run [`Migration`](crate::migration::Migration) from the application's
/// own sea-orm-migration `Migrator`, or let [`Replicator::start`](crate::Replicator) do it.
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when a `CREATE TABLE` fails, typically for lack of the
/// privilege to create tables: run the migration as a user that has it.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let db = sea_orm::Database::connect("sqlite::memory:").await?;
/// ormsync::install(&db).await?;
/// ormsync::install(&db).await?; // idempotent
/// # Ok(()) }
/// ```
pub async fn install<C: ConnectionTrait>(db: &C) -> Result<()> {
    let backend = db.get_database_backend();
    // Only what is missing is created: an application role that may read and write the
    // tables but not create or alter them (the migration owner installed them) then
    // starts a replicator as well, since `CREATE … IF NOT EXISTS` is refused to it even
    // where the object exists.
    let present = present_columns(db).await?;
    for (table, ddl) in TABLES.iter().zip(ddl(backend)) {
        if present.contains_key(*table) {
            continue;
        }
        db.execute_unprepared(&one_at_a_time(backend, &ddl))
            .await
            .context(|| {
                format!("creating `{table}` (run it as a user allowed to create tables)")
            })?;
    }
    for (table, column, ty) in ADDED_COLUMNS {
        if present.get(table).is_some_and(|c| !c.contains(column)) {
            // Another process may add it first: where the backend can say so, that is fine.
            let if_absent = if backend == DbBackend::Sqlite {
                ""
            } else {
                "IF NOT EXISTS "
            };
            let sql = format!("ALTER TABLE {table} ADD COLUMN {if_absent}{column} {ty}");
            db.execute_unprepared(&one_at_a_time(backend, &sql))
                .await
                .context(|| {
                    format!("adding `{column}` to `{table}` (run it as a user allowed to alter it)")
                })?;
        }
    }
    if backend == DbBackend::Postgres && has_pg_notify_trigger(db).await? {
        db.execute_unprepared(&one_at_a_time(backend, DROP_PG_NOTIFY))
            .await
            .context(|| {
                "dropping a NOTIFY trigger from the outbox (run it as the owner of `ormsync_outbox`)"
                    .into()
            })?;
    }
    Ok(())
}

/// The columns of every `ormsync_*` table that exists, by table, read in one statement.
async fn present_columns<C: ConnectionTrait>(db: &C) -> Result<HashMap<String, HashSet<String>>> {
    let backend = db.get_database_backend();
    let sql = match backend {
        // Visible through the search path, as the unqualified names ormsync uses are.
        DbBackend::Postgres => {
            "SELECT c.relname::text AS t, a.attname::text AS c FROM pg_class c \
             JOIN pg_attribute a ON a.attrelid = c.oid \
             WHERE c.relkind IN ('r', 'p') AND c.relname LIKE 'ormsync\\_%' \
             AND pg_table_is_visible(c.oid) AND a.attnum > 0 AND NOT a.attisdropped"
        }
        DbBackend::MySql => {
            "SELECT CAST(table_name AS CHAR) AS t, CAST(column_name AS CHAR) AS c \
             FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name LIKE 'ormsync\\_%'"
        }
        _ => {
            "SELECT m.name AS t, p.name AS c FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name LIKE 'ormsync\\_%' ESCAPE '\\'"
        }
    };
    let rows = db
        .query_all_raw(Statement::from_string(backend, sql))
        .await
        .context(|| "reading which ormsync tables exist".into())?;
    let mut present: HashMap<String, HashSet<String>> = HashMap::new();
    for row in rows {
        let table = row
            .try_get::<String>("", "t")
            .context(|| "reading which ormsync tables exist".into())?;
        let column = row
            .try_get::<String>("", "c")
            .context(|| "reading which ormsync tables exist".into())?;
        present.entry(table).or_default().insert(column);
    }
    Ok(present)
}

/// Whether the outbox still has the `NOTIFY` trigger an earlier version installed.
async fn has_pg_notify_trigger<C: ConnectionTrait>(db: &C) -> Result<bool> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT EXISTS (SELECT 1 FROM pg_trigger \
             WHERE tgname = 'ormsync_outbox_notify' \
             AND tgrelid = to_regclass('ormsync_outbox')) AS present",
        ))
        .await
        .context(|| "looking for a NOTIFY trigger on the outbox".into())?;
    match row {
        Some(row) => row
            .try_get::<bool>("", "present")
            .context(|| "looking for a NOTIFY trigger on the outbox".into()),
        None => Ok(false),
    }
}

/// The transaction-scoped PostgreSQL advisory lock that DDL of ormsync's runs under.
pub(crate) const DDL_LOCK: i64 = 0x6f72_6d73_796e_6364;

/// `sql` run under [`DDL_LOCK`] on PostgreSQL, in its own transaction unless the caller's
/// holds it. Two processes running `CREATE TABLE IF NOT EXISTS` (or `CREATE OR REPLACE
/// FUNCTION`) at once there can both find the object missing, and the second then fails
/// on a catalog unique index or a concurrently updated tuple: a replicator handing over, or
/// a drain beside the worker, would halt on it. Elsewhere DDL is serialised already.
fn one_at_a_time(backend: DbBackend, sql: &str) -> String {
    if backend != DbBackend::Postgres {
        return sql.to_string();
    }
    format!(
        "DO $ormsync_ddl$ BEGIN PERFORM pg_advisory_xact_lock({DDL_LOCK}); \
         EXECUTE $ormsync_sql${sql}$ormsync_sql$; END $ormsync_ddl$"
    )
}

/// Drops every `ormsync_*` table: the outbox, checkpoints and all. For tearing down, and
/// the `down` of [`Migration`](crate::migration::Migration).
///
/// # Errors
///
/// [`Error::Db`](crate::Error::Db) when a `DROP TABLE` fails.
pub async fn uninstall<C: ConnectionTrait>(db: &C) -> Result<()> {
    if db.get_database_backend() == DbBackend::Postgres {
        db.execute_unprepared("DROP FUNCTION IF EXISTS ormsync_notify() CASCADE")
            .await
            .context(|| "dropping the outbox's NOTIFY trigger".into())?;
    }
    for table in TABLES.iter().rev() {
        db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
            .await
            .context(|| format!("dropping `{table}`"))?;
    }
    Ok(())
}

/// Columns added since the tables were first created: [`install`] adds them to tables an
/// earlier version created.
const ADDED_COLUMNS: [(&str, &str, &str); 7] = [
    ("ormsync_checkpoint", "anchor_id", "BIGINT NULL"),
    ("ormsync_checkpoint", "anchor_digest", "VARCHAR(64) NULL"),
    ("ormsync_progress", "anchor_id", "BIGINT NULL"),
    ("ormsync_progress", "state", "VARCHAR(32) NULL"),
    ("ormsync_progress", "last_error", "TEXT NULL"),
    ("ormsync_leases", "generation", "BIGINT NOT NULL DEFAULT 0"),
    ("ormsync_checkpoint", "fence", "BIGINT NOT NULL DEFAULT 0"),
];

/// An outbox with a `NOTIFY` trigger has it dropped: notifying inside every capturing
/// transaction made those transactions commit one at a time (PostgreSQL commits a
/// transaction that notified under one database-wide lock). Replicators notify from a
/// connection of their own instead (see `replicator::wake`).
const DROP_PG_NOTIFY: &str = "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_trigger \
     WHERE tgname = 'ormsync_outbox_notify' AND tgrelid = 'ormsync_outbox'::regclass) THEN \
     DROP TRIGGER ormsync_outbox_notify ON ormsync_outbox; \
     DROP FUNCTION IF EXISTS ormsync_notify(); END IF; END $$";

fn ddl(backend: DbBackend) -> [String; 13] {
    // Column types per backend; everything else is shared.
    let (autoinc, text, name, ts, now, suffix) = match backend {
        DbBackend::Postgres => (
            "BIGSERIAL PRIMARY KEY",
            "TEXT",
            "TEXT",
            "TIMESTAMPTZ",
            "now()",
            "",
        ),
        DbBackend::MySql => (
            "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
            "LONGTEXT",
            "VARCHAR(255)",
            "TIMESTAMP(6)",
            "CURRENT_TIMESTAMP(6)",
            " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        ),
        // AUTOINCREMENT: a plain rowid is reused once the highest row is deleted, and ids
        // would run backwards after retention.
        _ => (
            "INTEGER PRIMARY KEY AUTOINCREMENT",
            "TEXT",
            "TEXT",
            "TEXT",
            "(strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
            "",
        ),
    };
    // Key columns of composite keys are bounded so MariaDB's 3072-byte index limit holds.
    let short = if backend == DbBackend::MySql {
        "VARCHAR(128)"
    } else {
        name
    };
    let key = if backend == DbBackend::MySql {
        "VARCHAR(512)"
    } else {
        name
    };
    [
        format!(
            "CREATE TABLE IF NOT EXISTS ormsync_node (singleton INTEGER NOT NULL PRIMARY KEY, \
             id {name} NOT NULL, created_at {ts} NOT NULL DEFAULT {now}){suffix}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS ormsync_outbox (id {autoinc}, table_name {name} NOT NULL, \
             op CHAR(1) NOT NULL, pk {text} NOT NULL, payload {text} NOT NULL, origin {name} NULL, \
             created_at {ts} NOT NULL DEFAULT {now}){suffix}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS ormsync_leases (destination {name} NOT NULL PRIMARY KEY, \
             holder {name} NOT NULL, expires_at {ts} NOT NULL, updated_at {ts} NOT NULL DEFAULT {now}, \
             generation BIGINT NOT NULL DEFAULT 0){suffix}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS ormsync_dead_letters (id {autoinc}, destination {name} NOT NULL, \
             outbox_id BIGINT NOT NULL, table_name {name} NOT NULL, op CHAR(1) NOT NULL, pk {text} NOT NULL, \
             payload {text} NOT NULL, error {text} NOT NULL, attempts INTEGER NOT NULL, \
             created_at {ts} NOT NULL DEFAULT {now}, UNIQUE (destination, outbox_id)){suffix}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS ormsync_progress (destination {name} NOT NULL PRIMARY KEY, \
             watermark BIGINT NOT NULL, frontier BIGINT NOT NULL, anchor_id BIGINT NULL, \
             state VARCHAR(32) NULL, last_error {text} NULL, \
             updated_at {ts} NOT NULL DEFAULT {now}){suffix}"
        ),
        // `fence`: the highest lease generation that wrote a copy's bookkeeping here; an
        // instance of an older one lost the lease and is refused (see `snapshot::fence`).
        format!(
            "CREATE TABLE IF NOT EXISTS ormsync_checkpoint (source {name} NOT NULL PRIMARY KEY, \
             watermark BIGINT NOT NULL, applied {text} NOT NULL, anchor_id BIGINT NULL, \
             anchor_digest VARCHAR(64) NULL, updated_at {ts} NOT NULL DEFAULT {now}, \
             fence BIGINT NOT NULL DEFAULT 0){suffix}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS ormsync_key_map (source {short} NOT NULL, table_name {short} NOT NULL, \
             source_key {key} NOT NULL, dest_key {text} NOT NULL, row_hash {name} NULL, \
             PRIMARY KEY (source, table_name, source_key)){suffix}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS ormsync_conflicts (id {autoinc}, source {name} NOT NULL, \
             table_name {name} NOT NULL, pk {text} NOT NULL, policy {name} NOT NULL, outcome {name} NOT NULL, \
             incoming {text} NULL, current_row {text} NULL, created_at {ts} NOT NULL DEFAULT {now}){suffix}"
        ),
        // Per source and table: how far a snapshot or resync has copied (the last key
        // copied, as a JSON row), so an interrupted one resumes from its last chunk.
        // (`catch_up_to` is unused; tables created by earlier versions have it.)
        format!(
            "CREATE TABLE IF NOT EXISTS ormsync_snapshot (source {short} NOT NULL, table_name {short} NOT NULL, \
             last_key {text} NULL, done INTEGER NOT NULL, copied BIGINT NOT NULL, deferred BIGINT NOT NULL, \
             catch_up_to BIGINT NULL, prune INTEGER NOT NULL, started_at {ts} NOT NULL DEFAULT {now}, updated_at {ts} NOT NULL DEFAULT {now}, \
             PRIMARY KEY (source, table_name)){suffix}"
        ),
        // Per source with a copy under way: the position (JSON) whose changes the
        // destination holds, through the stream or the copy. Once every table is copied,
        // the rows of every change since are read again at one snapshot of the source, and
        // the row goes in the transaction that sets the checkpoint (see `snapshot`).
        format!(
            "CREATE TABLE IF NOT EXISTS ormsync_snapshot_base (source {name} NOT NULL PRIMARY KEY, \
             base {text} NOT NULL, created_at {ts} NOT NULL DEFAULT {now}){suffix}"
        ),
        // The keys of rows a copy left out: rows of the source it could not write yet (their
        // parent was not there, or the rules could not place them), for its converge to take
        // through the sink; and (`extra` = 1) rows of the destination a resync found the
        // source lacks, for its converge to delete, children first.
        format!(
            "CREATE TABLE IF NOT EXISTS ormsync_snapshot_left_out (source {short} NOT NULL, \
             table_name {short} NOT NULL, pk {key} NOT NULL, extra INTEGER NOT NULL, \
             PRIMARY KEY (source, table_name, pk)){suffix}"
        ),
        // What the command line knows of the replicated tables without the application's
        // types: one row per registered entity, the `TableSpec` as JSON.
        format!(
            "CREATE TABLE IF NOT EXISTS ormsync_entities (table_name {name} NOT NULL PRIMARY KEY, \
             spec {text} NOT NULL, updated_at {ts} NOT NULL DEFAULT {now}){suffix}"
        ),
        // Operator requests a running replicator honours: a persistent pause, and counters
        // that tell its workers to leave a halt, to re-read the dead letters, or to replay
        // them (with the outcome of the last replay), or to copy tables again (`resync_tables`
        // a JSON array, empty for all; `resync_error` NULL when the last resync succeeded).
        format!(
            "CREATE TABLE IF NOT EXISTS ormsync_control (destination {name} NOT NULL PRIMARY KEY, \
             paused INTEGER NOT NULL DEFAULT 0, resumes BIGINT NOT NULL DEFAULT 0, \
             letters BIGINT NOT NULL DEFAULT 0, replays BIGINT NOT NULL DEFAULT 0, \
             replays_done BIGINT NOT NULL DEFAULT 0, replayed BIGINT NOT NULL DEFAULT 0, \
             replay_failed BIGINT NOT NULL DEFAULT 0, resyncs BIGINT NOT NULL DEFAULT 0, \
             resyncs_done BIGINT NOT NULL DEFAULT 0, resync_tables {text} NULL, \
             resync_error {text} NULL, updated_at {ts} NOT NULL DEFAULT {now}){suffix}"
        ),
    ]
}
