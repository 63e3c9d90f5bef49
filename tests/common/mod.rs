//! Shared by the integration tests: databases on every backend, test entities, and the
//! row-for-row comparison every test ends with.
#![allow(dead_code)]

/// Runs `$scenario(source, destination)` as one test per backend pair of [`PAIRS`]:
/// PostgreSQL → MariaDB, MariaDB → SQLite, SQLite → PostgreSQL. With `also_sqlite:` first,
/// SQLite → SQLite too, which needs no server.
#[allow(unused_macros)]
macro_rules! on_every_pair {
    (@pair $scenario:ident, $name:ident, $src:ident, $dst:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            super::$scenario(Backend::$src, Backend::$dst).await
        }
    };
    (also_sqlite: $($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;
            on_every_pair!(@pair $scenario, postgres_to_mariadb, Postgres, MySql);
            on_every_pair!(@pair $scenario, mariadb_to_sqlite, MySql, Sqlite);
            on_every_pair!(@pair $scenario, sqlite_to_postgres, Sqlite, Postgres);
            on_every_pair!(@pair $scenario, sqlite_to_sqlite, Sqlite, Sqlite);
        }
    )*};
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;
            on_every_pair!(@pair $scenario, postgres_to_mariadb, Postgres, MySql);
            on_every_pair!(@pair $scenario, mariadb_to_sqlite, MySql, Sqlite);
            on_every_pair!(@pair $scenario, sqlite_to_postgres, Sqlite, Postgres);
        }
    )*};
}

pub mod entities;
pub mod memory_sink;
pub mod nats;
pub mod proxy;

use std::time::Duration;

use ormsync::Replicated;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, QueryOrder};
use sea_orm::{Iterable, PrimaryKeyToColumn};

/// Where the servers are, overridable by environment.
fn admin_url(backend: Backend) -> String {
    match backend {
        Backend::Postgres => std::env::var("ORMSYNC_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        Backend::MySql => std::env::var("ORMSYNC_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into()),
        Backend::Sqlite => String::new(),
    }
}

/// The seed of a randomized test: `ORMSYNC_SEED` when set (a failing run replayed), else
/// a random one; the test prints it.
pub fn seed() -> u64 {
    match std::env::var("ORMSYNC_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("ORMSYNC_SEED={s:?} is not a u64")),
        Err(_) => rand::random(),
    }
}

/// A generator drawn from [`seed`], which it prints for `what` (the test and its case), so
/// a failing run can be replayed.
pub fn seeded_rng(what: &str) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    let seed = seed();
    eprintln!("{what}: seed {seed} (ORMSYNC_SEED={seed} replays it)");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Whether a missing server fails the test (CI) instead of skipping it.
fn servers_required() -> bool {
    std::env::var("ORMSYNC_REQUIRE_SERVERS").is_ok_and(|v| !v.is_empty() && v != "0")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::MySql => "mariadb",
        }
    }
}

/// The backend pairs every replication test runs on: each backend is a source once and a
/// destination once, including PostgreSQL → MariaDB and MariaDB → SQLite.
pub const PAIRS: [(Backend, Backend); 3] = [
    (Backend::Postgres, Backend::MySql),
    (Backend::MySql, Backend::Sqlite),
    (Backend::Sqlite, Backend::Postgres),
];

/// A database made for one test and dropped after it, even when the test panics.
pub struct TestDb {
    pub backend: Backend,
    pub db: DatabaseConnection,
    pub url: String,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh, empty database, or `None` (after saying so) when its server is unreachable
    /// and servers are not required.
    pub async fn create(backend: Backend) -> Option<TestDb> {
        let name = format!("ormsync_t_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("db.sqlite").display()
                );
                let db = Database::connect(&url).await.expect("open sqlite");
                // WAL lets the replicator read while a writer holds the lock.
                db.execute_unprepared("PRAGMA journal_mode=WAL")
                    .await
                    .expect("wal");
                Some(TestDb {
                    backend,
                    db,
                    url,
                    name,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres | Backend::MySql => {
                let admin = admin_url(backend);
                let conn =
                    match tokio::time::timeout(Duration::from_secs(10), Database::connect(&admin))
                        .await
                    {
                        Ok(Ok(c)) => c,
                        other => {
                            let why = match other {
                                Ok(Err(e)) => e.to_string(),
                                Err(_) => "timed out".into(),
                                Ok(Ok(_)) => unreachable!(),
                            };
                            let msg = format!(
                                "{} not reachable at {} ({})",
                                backend.name(),
                                ormsync::redact::redact(&admin),
                                ormsync::redact::redact(&why)
                            );
                            if servers_required() {
                                panic!("{msg}; ORMSYNC_REQUIRE_SERVERS is set, so this fails");
                            }
                            eprintln!("skipped: {msg}");
                            return None;
                        }
                    };
                let create = match backend {
                    Backend::MySql => {
                        format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                    }
                    _ => format!("CREATE DATABASE {name}"),
                };
                conn.execute_unprepared(&create)
                    .await
                    .expect("create database");
                conn.close().await.ok();
                let url = match backend {
                    Backend::Postgres => replace_db(&admin, &name),
                    _ => format!("{}/{name}", admin.trim_end_matches('/')),
                };
                let db = Database::connect(&url)
                    .await
                    .expect("connect to test database");
                Some(TestDb {
                    backend,
                    db,
                    url,
                    name,
                    _dir: None,
                })
            }
        }
    }

    /// The server's address (PostgreSQL and MariaDB only).
    pub fn server_addr(&self) -> std::net::SocketAddr {
        let rest = self.url.split_once("://").expect("a URL").1;
        let host = rest.split('/').next().unwrap_or(rest);
        let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
        let host = if host.contains(':') {
            host.to_string()
        } else {
            format!(
                "{host}:{}",
                if self.backend == Backend::Postgres {
                    5432
                } else {
                    3306
                }
            )
        };
        use std::net::ToSocketAddrs;
        host.to_socket_addrs()
            .expect("resolve")
            .next()
            .expect("an address")
    }

    /// A second connection pool to the same database.
    pub async fn connect(&self) -> DatabaseConnection {
        Database::connect(&self.url).await.expect("reconnect")
    }

    /// Creates the test entities' tables.
    pub async fn create_tables(&self) {
        for ddl in entities::ddl(self.db.get_database_backend()) {
            self.db
                .execute_unprepared(&ddl)
                .await
                .unwrap_or_else(|e| panic!("{ddl}: {e}"));
        }
    }
}

fn replace_db(url: &str, name: &str) -> String {
    match url.rfind('/') {
        Some(i) if i > url.find("://").map(|j| j + 2).unwrap_or(0) => {
            format!("{}/{name}", &url[..i])
        }
        _ => format!("{url}/{name}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.backend == Backend::Sqlite {
            return;
        }
        let (backend, name) = (self.backend, self.name.clone());
        let admin = admin_url(backend);
        // Drop runs outside async: a thread with its own runtime does the async cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let conn = Database::connect(&admin).await.ok()?;
                let sql = match backend {
                    Backend::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    _ => format!("DROP DATABASE IF EXISTS {name}"),
                };
                conn.execute_unprepared(&sql).await.ok()?;
                conn.close().await.ok()
            })
        })
        .join();
    }
}

/// A source and a destination on the given backends, with the test tables on both.
pub async fn pair(src: Backend, dst: Backend) -> Option<(TestDb, TestDb)> {
    let s = TestDb::create(src).await?;
    let d = TestDb::create(dst).await?;
    s.create_tables().await;
    d.create_tables().await;
    ormsync::install(&s.db).await.expect("install at source");
    Some((s, d))
}

/// Every shipped column of every row of `E`, in key order.
pub async fn rows_of<E>(db: &DatabaseConnection) -> Vec<ormsync::change::Row>
where
    E: Replicated,
    E::Model: Sync,
{
    try_rows_of::<E>(db).await.expect("read table")
}

/// Every shipped column of every row of `E`, in key order, or why they cannot be read.
pub async fn try_rows_of<E>(
    db: &DatabaseConnection,
) -> Result<Vec<ormsync::change::Row>, sea_orm::DbErr>
where
    E: Replicated,
    E::Model: Sync,
{
    let mut q = E::find();
    for k in E::PrimaryKey::iter() {
        q = q.order_by_asc(k.into_column());
    }
    Ok(q.all(db)
        .await?
        .iter()
        .map(|m| E::to_row(m).expect("row"))
        .collect())
}

/// Every row of `spec`'s table at `db`, each shipped column read by its type tag as
/// `verify` reads it (so an array stored as JSON reads back as the array, a decimal SQLite
/// keeps as a double as the decimal), in key order.
pub async fn rows_by_spec(
    db: &DatabaseConnection,
    spec: &ormsync::TableSpec,
) -> Vec<ormsync::change::Row> {
    use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query};
    let backend = db.get_database_backend();
    let mut q = Query::select();
    for (c, tag) in spec.columns.iter().zip(&spec.types) {
        if backend == DbBackend::Postgres && tag.starts_with("en:") {
            q.expr_as(
                Expr::col(Alias::new(c.as_str())).cast_as(Alias::new("text")),
                Alias::new(c.as_str()),
            );
        } else {
            q.column(Alias::new(c.as_str()));
        }
    }
    q.from(Alias::new(spec.table.as_str()));
    for k in &spec.key {
        q.order_by(Alias::new(k.as_str()), Order::Asc);
    }
    db.query_all(&q)
        .await
        .unwrap_or_else(|e| panic!("reading {}: {e}", spec.table))
        .iter()
        .map(|res| {
            ormsync::change::Row(
                spec.columns
                    .iter()
                    .zip(&spec.types)
                    .map(|(c, tag)| {
                        let v = ormsync::value::Value::read(res, c, tag)
                            .unwrap_or_else(|e| panic!("{}.{c}: {e}", spec.table));
                        (c.clone(), v)
                    })
                    .collect(),
            )
        })
        .collect()
}

/// The key columns of `row` (a row of `E`, as [`rows_of`] reads it), as a row of their own.
pub fn key_of_row<E: Replicated>(row: &ormsync::change::Row) -> ormsync::change::Row {
    let key = E::table_spec().key;
    ormsync::change::Row(
        row.0
            .iter()
            .filter(|(c, _)| key.contains(c))
            .cloned()
            .collect(),
    )
}

/// How many differing keys of each kind [`differences`] lists.
const LISTED: usize = 5;

/// What differs between `E`'s table at `source` and at `dest`, key by key (rows missing at
/// the destination, rows it has that the source lacks, rows whose columns differ), or
/// `None` when both hold the same rows, column for column. A table that cannot be read at
/// the destination (missing, say) is a difference too.
pub async fn differences<E>(
    source: &DatabaseConnection,
    dest: &DatabaseConnection,
) -> Option<String>
where
    E: Replicated,
    E::Model: Sync,
{
    differences_noted::<E>(source, dest, &|_| String::new()).await
}

/// [`differences`], with `note(key)` written under each key listed (the key as
/// `format!("{:?}", key_row.0)`): what a test knows of that row's history, say.
pub async fn differences_noted<E>(
    source: &DatabaseConnection,
    dest: &DatabaseConnection,
    note: &dyn Fn(&str) -> String,
) -> Option<String>
where
    E: Replicated,
    E::Model: Sync,
{
    let table = E::table_spec().table;
    let s = rows_of::<E>(source).await;
    let d = match try_rows_of::<E>(dest).await {
        Ok(d) => d,
        Err(e) => return Some(format!("`{table}` cannot be read at the destination: {e}")),
    };
    if s == d {
        return None;
    }
    let key = E::table_spec().key;
    diff_rows(&table, &key, s, d, note)
}

/// What differs between the rows `s` of a source's `table` and the rows `d` of a
/// destination's, matched by their `key` columns, or `None` when they are the same rows in
/// any order (each side sorts text keys by its own collation).
pub fn diff_rows(
    table: &str,
    key: &[String],
    s: Vec<ormsync::change::Row>,
    d: Vec<ormsync::change::Row>,
    note: &dyn Fn(&str) -> String,
) -> Option<String> {
    let key_of = |r: &ormsync::change::Row| {
        format!(
            "{:?}",
            r.0.iter()
                .filter(|(c, _)| key.contains(c))
                .collect::<Vec<_>>()
        )
    };
    let keyed = |rows: Vec<ormsync::change::Row>| {
        rows.into_iter()
            .map(|r| (key_of(&r), r))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (s_len, d_len) = (s.len(), d.len());
    let (s, d) = (keyed(s), keyed(d));
    let missing: Vec<_> = s.keys().filter(|k| !d.contains_key(*k)).collect();
    let extra: Vec<_> = d.iter().filter(|(k, _)| !s.contains_key(*k)).collect();
    let changed: Vec<_> = s
        .iter()
        .filter_map(|(k, r)| d.get(k).filter(|o| *o != r).map(|o| (k, r, o)))
        .collect();
    if missing.is_empty() && extra.is_empty() && changed.is_empty() {
        // The same rows, sorted differently: each side orders text keys by its collation.
        return None;
    }
    let mut out = format!(
        "`{table}` differs: source {s_len} rows, destination {d_len} rows; {} missing, {} extra, {} different",
        missing.len(),
        extra.len(),
        changed.len()
    );
    for k in missing.iter().take(LISTED) {
        out += &format!("\n  missing at destination: {k} = {:?}{}", s[*k], note(k));
    }
    for (k, r) in extra.iter().take(LISTED) {
        out += &format!("\n  extra at destination: {k} = {r:?}{}", note(k));
    }
    for (k, r, o) in changed.iter().take(LISTED) {
        out += &format!(
            "\n  different: {k}\n    source:      {r:?}\n    destination: {o:?}{}",
            note(k)
        );
    }
    Some(out)
}

/// Asserts that `E`'s table holds the same rows, column for column, on both sides.
pub async fn assert_same<E>(source: &DatabaseConnection, dest: &DatabaseConnection)
where
    E: Replicated,
    E::Model: Sync,
{
    if let Some(diff) = differences::<E>(source, dest).await {
        panic!("{diff}");
    }
}

/// Asserts every test table is the same on both sides.
pub async fn assert_all_same(source: &DatabaseConnection, dest: &DatabaseConnection) {
    assert_same::<entities::accounts::Entity>(source, dest).await;
    assert_same::<entities::line_items::Entity>(source, dest).await;
}

/// The highest outbox id at `db`.
pub async fn max_outbox_id(db: &DatabaseConnection) -> i64 {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT COALESCE(MAX(id), 0) AS m FROM ormsync_outbox",
        ))
        .await
        .expect("max id")
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("an integer")
}

/// The count of rows in `table`.
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

/// Installs a `tracing` subscriber once (`RUST_LOG=ormsync=debug` to see it).
pub fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn is_sqlite(db: &DatabaseConnection) -> bool {
    db.get_database_backend() == DbBackend::Sqlite
}

/// SQLite triggers at `db` that refuse a negative account balance, or take them away: a
/// change a destination refuses for good, on demand.
pub async fn refuse_negative(db: &DatabaseConnection, refuse: bool) {
    let sql: &[&str] = if refuse {
        &[
            "CREATE TRIGGER no_negative_i BEFORE INSERT ON accounts WHEN NEW.balance < 0 BEGIN SELECT RAISE(ABORT, 'negative balance'); END",
            "CREATE TRIGGER no_negative_u BEFORE UPDATE ON accounts WHEN NEW.balance < 0 BEGIN SELECT RAISE(ABORT, 'negative balance'); END",
        ]
    } else {
        &["DROP TRIGGER no_negative_i", "DROP TRIGGER no_negative_u"]
    };
    for s in sql {
        db.execute_unprepared(s).await.expect("trigger");
    }
}
