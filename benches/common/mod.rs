//! Shared by the benches: the benchmark entity (captured and plain copies), its tables on
//! each backend, deterministic rows, and throwaway databases.
#![allow(dead_code)]

// The tests' own harness: a bench needs a server as much as a test does.
#[path = "../../tests/common/nats.rs"]
pub mod nats;

/// The NATS harness asks this; a bench cannot be skipped, so a missing `nats-server` fails
/// it with the harness's message.
fn servers_required() -> bool {
    true
}

use std::time::Duration;

use chrono::{TimeZone, Utc};
use sea_orm::prelude::{Decimal, Uuid};
use sea_orm::{
    ActiveValue::{NotSet, Set, Unchanged},
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend,
};

/// A realistic row: 9 columns of the usual types. `#[derive(Replicated)]`: every write is
/// captured into the outbox.
pub mod captured {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "bench_captured")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
        pub email: String,
        #[sea_orm(column_type = "Decimal(Some((20, 4)))")]
        pub balance: Decimal,
        pub created_at: DateTimeUtc,
        pub uid: Uuid,
        pub note: Option<String>,
        pub qty: i32,
        pub active: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

/// The same entity on another table, with sea-orm's default behaviour: not captured.
pub mod plain {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "bench_plain")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
        pub email: String,
        #[sea_orm(column_type = "Decimal(Some((20, 4)))")]
        pub balance: Decimal,
        pub created_at: DateTimeUtc,
        pub uid: Uuid,
        pub note: Option<String>,
        pub qty: i32,
        pub active: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `CREATE TABLE` for `table` (either entity's shape) on `backend`.
pub fn ddl(backend: DbBackend, table: &str) -> String {
    match backend {
        DbBackend::Postgres => format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, \
             balance NUMERIC(20,4) NOT NULL, created_at TIMESTAMPTZ NOT NULL, uid UUID NOT NULL, \
             note TEXT NULL, qty INTEGER NOT NULL, active BOOLEAN NOT NULL)"
        ),
        DbBackend::MySql => format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, name VARCHAR(255) NOT NULL, \
             email VARCHAR(255) NOT NULL, balance DECIMAL(20,4) NOT NULL, created_at DATETIME(6) NOT NULL, \
             uid BINARY(16) NOT NULL, note TEXT NULL, qty INT NOT NULL, active BOOL NOT NULL) \
             ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        ),
        // sea-orm's own SQLite column types (what `Schema::create_table_from_entity` makes).
        _ => format!(
            "CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, \
             balance real_decimal NOT NULL, created_at timestamp_with_timezone_text NOT NULL, \
             uid uuid_text NOT NULL, note TEXT NULL, qty INTEGER NOT NULL, active boolean NOT NULL)"
        ),
    }
}

/// Creates both benchmark tables on `db`.
pub async fn create_tables(db: &DatabaseConnection) {
    let backend = db.get_database_backend();
    for table in ["bench_captured", "bench_plain"] {
        let sql = ddl(backend, table);
        db.execute_unprepared(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// Row `id`'s values, the same for both entities (and for `compare_logical.sh`'s SQL).
macro_rules! rows_of {
    ($module:ident, $new:ident, $update:ident) => {
        /// A full row to insert.
        pub fn $new(id: i64) -> $module::ActiveModel {
            $module::ActiveModel {
                id: Set(id),
                name: Set(format!("customer {id}")),
                email: Set(format!("customer{id}@example.com")),
                balance: Set(Decimal::new(id * 137 % 10_000_000, 2)),
                created_at: Set(Utc
                    .timestamp_opt(1_700_000_000 + id, 0)
                    .single()
                    .expect("a valid timestamp")),
                uid: Set(Uuid::from_u64_pair(0x6f72_6d73_796e_6300, id as u64)),
                note: Set((id % 2 == 0).then(|| format!("note of {id}"))),
                qty: Set((id % 100) as i32),
                active: Set(id % 3 != 0),
            }
        }

        /// An update of row `id`: three columns change, `round` makes each update differ.
        pub fn $update(id: i64, round: i64) -> $module::ActiveModel {
            $module::ActiveModel {
                id: Unchanged(id),
                name: NotSet,
                email: NotSet,
                balance: Set(Decimal::new((id * 137 + round) % 10_000_000, 2)),
                created_at: NotSet,
                uid: NotSet,
                note: Set(Some(format!("updated {round}"))),
                qty: Set(((id + round) % 100) as i32),
                active: NotSet,
            }
        }
    };
}

rows_of!(captured, captured_row, captured_update);
rows_of!(plain, plain_row, plain_update);

/// Row `id` after [`captured_update`]`(id, round)`, whole: what ormsync ships for that
/// update, for writing the same rows straight into a destination.
pub fn plain_row_updated(id: i64, round: i64) -> plain::ActiveModel {
    let mut row = plain_row(id);
    let change = plain_update(id, round);
    row.balance = change.balance;
    row.note = change.note;
    row.qty = change.qty;
    row
}

/// A server the benches create databases on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Postgres,
    MySql,
}

/// The admin URL of a server: `env` if set, else the test servers on 127.0.0.1.
pub fn admin_url(server: Server, env: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| match server {
        Server::Postgres => "postgres://postgres@127.0.0.1:5432/postgres".into(),
        Server::MySql => "mysql://root@127.0.0.1:3306".into(),
    })
}

/// A database made for one bench run and dropped after it, even on panic.
pub struct BenchDb {
    pub db: DatabaseConnection,
    pub url: String,
    /// Server databases: the admin URL and the database's name, for the drop.
    server: Option<(Server, String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl BenchDb {
    /// A SQLite file in a temporary directory, in WAL mode with `synchronous = NORMAL` on
    /// every connection of the pool.
    pub async fn sqlite() -> BenchDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.sqlite").display()
        );
        let mut opts = ConnectOptions::new(url.clone());
        opts.sqlx_logging(false).map_sqlx_sqlite_opts(|o| {
            o.pragma("journal_mode", "WAL")
                .pragma("synchronous", "NORMAL")
        });
        let db = Database::connect(opts).await.expect("open sqlite");
        BenchDb {
            db,
            url,
            server: None,
            _dir: Some(dir),
        }
    }

    /// A fresh database on the server at `admin` (a URL with a database the user can
    /// connect to), or why the server cannot be used.
    pub async fn server(server: Server, admin: &str) -> Result<BenchDb, String> {
        let shown = ormsync::redact::redact(admin);
        let mut opts = ConnectOptions::new(admin.to_string());
        opts.sqlx_logging(false);
        let conn =
            match tokio::time::timeout(Duration::from_secs(10), Database::connect(opts)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    return Err(format!(
                        "{shown} not reachable: {}",
                        ormsync::redact::redact(&e.to_string())
                    ));
                }
                Err(_) => return Err(format!("{shown} not reachable: timed out")),
            };
        let name = format!("ormsync_bench_{}", Uuid::new_v4().simple());
        let create = match server {
            Server::MySql => {
                format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            }
            Server::Postgres => format!("CREATE DATABASE {name}"),
        };
        conn.execute_unprepared(&create)
            .await
            .map_err(|e| format!("creating a database at {shown}: {e}"))?;
        conn.close().await.ok();
        let url = match server {
            Server::Postgres => replace_db(admin, &name),
            Server::MySql => format!("{}/{name}", admin.trim_end_matches('/')),
        };
        let mut opts = ConnectOptions::new(url.clone());
        opts.sqlx_logging(false);
        let db = Database::connect(opts)
            .await
            .map_err(|e| format!("connecting to the bench database at {shown}: {e}"))?;
        Ok(BenchDb {
            db,
            url,
            server: Some((server, admin.to_string(), name)),
            _dir: None,
        })
    }
}

fn replace_db(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let host_start = base.find("://").map(|j| j + 3).unwrap_or(0);
    let base = match base[host_start..].find('/') {
        Some(i) => format!("{}/{name}", &base[..host_start + i]),
        None => format!("{base}/{name}"),
    };
    match query {
        Some(q) => format!("{base}?{q}"),
        None => base,
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        let Some((server, admin, name)) = self.server.take() else {
            return;
        };
        // Drop runs outside async: a thread with its own runtime does the cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut opts = ConnectOptions::new(admin);
                opts.sqlx_logging(false);
                let conn = Database::connect(opts).await.ok()?;
                let sql = match server {
                    Server::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    Server::MySql => format!("DROP DATABASE IF EXISTS {name}"),
                };
                conn.execute_unprepared(&sql).await.ok()?;
                conn.close().await.ok()
            })
        })
        .join();
    }
}

/// `SELECT COUNT(*)` of `table`.
pub async fn count(db: &DatabaseConnection, table: &str) -> i64 {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM {table}"),
        ))
        .await
        .expect("count")
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("an integer")
}

/// Whether the bench binary was started by `cargo bench` (which passes `--bench`); under
/// `cargo test --benches` it is not, and the benches do nothing.
pub fn run_by_cargo_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The body of a bench's `main`: nothing unless [`run_by_cargo_bench`]; otherwise runs
/// `run` and turns its error into a message (URLs redacted) and a failed exit.
pub async fn bench_main<E: std::fmt::Display>(
    name: &str,
    run: impl std::future::Future<Output = Result<(), E>>,
) -> std::process::ExitCode {
    if !run_by_cargo_bench() {
        return std::process::ExitCode::SUCCESS;
    }
    match run.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "{name} bench failed: {}",
                ormsync::redact::redact(&e.to_string())
            );
            std::process::ExitCode::FAILURE
        }
    }
}

/// Cores and load average, to print next to the figures (the load says whether the
/// machine was busy with other work while they were measured).
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| {
            let v: Vec<&str> = l.split_whitespace().take(3).collect();
            (v.len() == 3).then(|| v.join(" "))
        })
        .unwrap_or_else(|| "unknown".into());
    format!("{cores} cores, load average {load} (1, 5, 15 min)")
}

/// Resets the process's peak resident memory (`VmHWM`), so the next reading covers only
/// what runs after (Linux 4.0+; elsewhere the reading covers the whole run).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident memory since the last reset, in KiB (0 where unknown).
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
