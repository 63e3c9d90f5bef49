//! A replicator and the command line run as application roles that may read and write
//! tables but not create or alter them, after the owner installed ormsync's tables: the
//! separation of migration owner and application role that production databases use.

mod common;

use std::time::Duration;

use common::entities::{account, accounts, line_items};
use common::{Backend, TestDb, assert_all_same, pair};
use ormsync::{Destination, Replicator};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait, ModelTrait,
    TransactionTrait,
};

/// The application role's password (servers here may trust loopback, CI's ask for it).
const PASSWORD: &str = "app-role-pw";

/// A login that may read and write every table of one test database and nothing more.
struct AppRole {
    name: String,
    url: String,
}

impl AppRole {
    /// Creates the role and grants it data permissions on what exists in `db` now.
    async fn create(db: &TestDb) -> AppRole {
        let name = format!(
            "ormsync_app_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let database = db.url.rsplit('/').next().expect("a database name");
        let database = database.split('?').next().unwrap_or(database).to_string();
        let statements = match db.backend {
            Backend::Postgres => vec![
                format!("CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}'"),
                format!("GRANT CONNECT ON DATABASE {database} TO {name}"),
                format!("GRANT USAGE ON SCHEMA public TO {name}"),
                // PostgreSQL 15 and later no longer let every role create in `public`;
                // older servers do, so take it away to test the same thing everywhere.
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC".into(),
                format!(
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {name}"
                ),
                format!("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {name}"),
            ],
            Backend::MySql => ["127.0.0.1", "localhost"]
                .iter()
                .flat_map(|host| {
                    [
                        format!("CREATE USER '{name}'@'{host}' IDENTIFIED BY '{PASSWORD}'"),
                        format!(
                            "GRANT SELECT, INSERT, UPDATE, DELETE ON {database}.* TO '{name}'@'{host}'"
                        ),
                    ]
                })
                .collect(),
            Backend::Sqlite => unreachable!("SQLite has no roles"),
        };
        for sql in statements {
            db.db
                .execute_unprepared(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let (scheme, rest) = db.url.split_once("://").expect("a URL");
        let host_and_db = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
        let url = format!("{scheme}://{name}:{PASSWORD}@{host_and_db}");
        AppRole { name, url }
    }

    async fn connect(&self) -> DatabaseConnection {
        Database::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect as the application role: {e}"))
    }

    /// Drops the role; its connections must be closed.
    async fn drop(self, db: &TestDb) {
        let statements = match db.backend {
            Backend::Postgres => vec![
                format!("DROP OWNED BY {}", self.name),
                format!("DROP ROLE {}", self.name),
            ],
            _ => vec![
                format!("DROP USER '{}'@'127.0.0.1'", self.name),
                format!("DROP USER '{}'@'localhost'", self.name),
            ],
        };
        for sql in statements {
            db.db
                .execute_unprepared(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
}

/// Runs `ormsync args…` and returns its exit code, stdout and stderr.
async fn ormsync(args: Vec<String>) -> (i32, String, String) {
    let out = tokio::task::spawn_blocking(move || {
        assert_cmd::Command::new(env!("CARGO_BIN_EXE_ormsync"))
            .args(&args)
            .env_remove("ORMSYNC_SOURCE_URL")
            .env_remove("ORMSYNC_DEST_URLS")
            .env_remove("ORMSYNC_CONFIG")
            .timeout(Duration::from_secs(60))
            .output()
            .expect("run ormsync")
    })
    .await
    .expect("join");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn replicates_as_application_roles(src: Backend, dst: Backend) {
    common::trace();
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    // The owner installs; the roles get data permissions on what it made.
    ormsync::install(&d.db)
        .await
        .expect("install at the destination");
    let (source_role, dest_role) = (AppRole::create(&s).await, AppRole::create(&d).await);
    let (source, dest) = (source_role.connect().await, dest_role.connect().await);

    let rep = Replicator::builder(source.clone())
        .entity::<accounts::Entity>()
        .entity::<line_items::Entity>()
        .poll_interval(Duration::from_millis(50))
        .destination(Destination::new("backup", dest.clone()))
        .start()
        .await
        .expect("a replicator starts as the application role");

    let txn = source.begin().await.expect("begin");
    for id in 1..=20 {
        account(id, "someone", "10.00")
            .insert(&txn)
            .await
            .expect("insert as the application role");
    }
    txn.commit().await.expect("commit");
    let txn = source.begin().await.expect("begin");
    account(3, "changed", "11.00")
        .update(&txn)
        .await
        .expect("update as the application role");
    accounts::Entity::find_by_id(4)
        .one(&txn)
        .await
        .expect("read as the application role")
        .expect("account 4")
        .delete(&txn)
        .await
        .expect("delete as the application role");
    txn.commit().await.expect("commit");
    tokio::time::timeout(Duration::from_secs(30), rep.sync_now())
        .await
        .expect("synced within 30 s")
        .expect("sync");
    assert_all_same(&s.db, &d.db).await;

    let connections = vec![
        "--source".to_string(),
        source_role.url.clone(),
        "--dest".into(),
        format!("backup={}", dest_role.url),
    ];
    for command in [
        vec!["status"],
        vec!["verify"],
        vec!["dead-letters", "list", "backup"],
        vec!["outbox"],
    ] {
        let mut args = connections.clone();
        args.extend(command.iter().map(|a| a.to_string()));
        let (code, stdout, stderr) = ormsync(args).await;
        assert_eq!(
            code,
            0,
            "`ormsync {}` as the application roles\nstdout:\n{stdout}\nstderr:\n{stderr}",
            command.join(" ")
        );
    }

    rep.shutdown().await;
    source.close().await.ok();
    dest.close().await.ok();
    source_role.drop(&s).await;
    dest_role.drop(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_as_application_roles_postgres_to_mariadb() {
    replicates_as_application_roles(Backend::Postgres, Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_as_application_roles_mariadb_to_postgres() {
    replicates_as_application_roles(Backend::MySql, Backend::Postgres).await;
}
