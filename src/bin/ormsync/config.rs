//! Where the databases are: flags, then environment, then the config file; and
//! connecting to them.
//!
//! A URL is parsed as soon as it is read ([`DbUrl`]) and never used as text again: it is
//! shown rebuilt without its secrets, and the drivers get options built from its parts, so
//! no driver parser, log line or trace span sees what was typed.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use ormsync::classify::{ErrorKind, classify};
use ormsync::redact::describe_sqlx;
use ormsync::{Error, Result};
use sea_orm::sqlx::{self, ConnectOptions as _, Connection as _};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, SqlxMySqlConnector, SqlxPostgresConnector,
    SqlxSqliteConnector,
};
use serde::Deserialize;

use crate::args::Connections;
use crate::dburl::{DbUrl, EXPECTED, Engine};

/// How long connecting may take, and waiting for a pooled connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A command line opens few connections.
const MAX_CONNECTIONS: u32 = 4;

/// The environment variable of the source's URL.
const SOURCE_ENV: &str = "ORMSYNC_SOURCE_URL";
/// The environment variable of the destinations, `name=URL` comma separated.
pub const DESTS_ENV: &str = "ORMSYNC_DEST_URLS";

/// The config file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    source: Option<String>,
    #[serde(default)]
    destinations: BTreeMap<String, String>,
}

/// The databases the command works with.
pub struct Urls {
    source: Option<DbUrl>,
    /// By name; flags and environment override the file's entries of the same name.
    dests: BTreeMap<String, DbUrl>,
}

/// Parses `text`, naming `input` (never the text) when it cannot be.
fn parse(text: &str, input: impl FnOnce() -> String) -> Result<DbUrl> {
    DbUrl::parse(text).map_err(|reason| Error::BadUrl {
        input: input(),
        reason: reason.to_string(),
        expected: EXPECTED.into(),
    })
}

/// Whether `name` can name a destination.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Splits `name=URL` entries separated by commas. A comma not followed by `name=` belongs
/// to the URL before it (a password may hold one).
fn split_entries(list: &str) -> Vec<String> {
    let mut entries: Vec<String> = Vec::new();
    for part in list.split(',') {
        let starts_entry = part
            .split_once('=')
            .is_some_and(|(name, _)| is_name(name.trim()));
        match entries.last_mut() {
            Some(last) if !starts_entry => {
                last.push(',');
                last.push_str(part);
            }
            _ => entries.push(part.to_string()),
        }
    }
    entries.retain(|e| !e.trim().is_empty());
    entries
}

impl Urls {
    pub fn resolve(c: &Connections) -> Result<Self> {
        let file = match &c.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::Config(format!(
                        "cannot read the config file {}: {e}",
                        path.display()
                    ))
                })?;
                // serde's message may quote a value, which may be a URL: only where and
                // what kind of error is said.
                serde_json::from_str::<File>(&text).map_err(|e| {
                    Error::Config(format!(
                        "the config file {} is not valid ({:?} error at line {}, column {}); \
                         expected {{\"source\": URL, \"destinations\": {{NAME: URL, …}}}}",
                        path.display(),
                        e.classify(),
                        e.line(),
                        e.column()
                    ))
                })?
            }
            None => File::default(),
        };
        let file_name = c
            .config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();

        // name → (text, where it came from)
        let mut raw: BTreeMap<String, (String, String)> = file
            .destinations
            .into_iter()
            .map(|(name, url)| {
                let input = format!("destination `{name}` in the config file {file_name}");
                (name, (url, input))
            })
            .collect();
        let (entries, from_env) = if c.dests.is_empty() {
            let env = std::env::var(DESTS_ENV).unwrap_or_default();
            (split_entries(&env), true)
        } else {
            (c.dests.clone(), false)
        };
        for (i, entry) in entries.iter().enumerate() {
            let place = if from_env {
                format!("entry {} of {DESTS_ENV}", i + 1)
            } else {
                format!("--dest argument {}", i + 1)
            };
            let (name, url) = entry
                .split_once('=')
                .filter(|(name, _)| is_name(name.trim()))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "the {place} is not of the form NAME=URL, NAME of letters, digits, `_`, \
                         `-` and `.` (it is not shown, as it may hold a password)"
                    ))
                })?;
            let name = name.trim().to_string();
            let input = if from_env {
                format!("destination `{name}` of {DESTS_ENV}")
            } else {
                format!("--dest {name}")
            };
            raw.insert(name, (url.trim().to_string(), input));
        }
        let mut dests = BTreeMap::new();
        for (name, (text, input)) in raw {
            dests.insert(name, parse(&text, || input)?);
        }

        let source = match (&c.source, file.source) {
            (Some(text), _) => {
                let input = if std::env::var(SOURCE_ENV).is_ok_and(|env| env.trim() == text.trim())
                {
                    SOURCE_ENV.to_string()
                } else {
                    "--source".to_string()
                };
                Some(parse(text, || input)?)
            }
            (None, Some(text)) => Some(parse(&text, || {
                format!("the source in the config file {file_name}")
            })?),
            (None, None) => None,
        };
        Ok(Urls { source, dests })
    }

    /// Connects to the source.
    pub async fn source(&self) -> Result<DatabaseConnection> {
        let url = self.source.as_ref().ok_or_else(|| {
            Error::Config(format!(
                "no source database: pass --source URL, set {SOURCE_ENV}, or name it in --config"
            ))
        })?;
        let db = connect("the source", url).await?;
        // Every command reads this table: a database without it gets one message that
        // says so, rather than each command's failure to read its own table.
        let probe = "SELECT 1 FROM ormsync_progress WHERE 1 = 0";
        if let Err(e) = db.execute_unprepared(probe).await {
            return Err(if classify(&e) == ErrorKind::Transient {
                Error::Db {
                    context: "reading `ormsync_progress`".into(),
                    source: e,
                }
            } else {
                Error::NotInstalled {
                    table: "ormsync_progress".into(),
                }
            });
        }
        Ok(db)
    }

    /// The configured destinations' names.
    pub fn dest_names(&self) -> Vec<String> {
        self.dests.keys().cloned().collect()
    }

    /// Connects to the destination `name`.
    pub async fn dest(&self, name: &str) -> Result<DatabaseConnection> {
        let url = self.dests.get(name).ok_or_else(|| {
            Error::Config(format!(
                "no URL for destination `{name}`: pass --dest {name}=URL, add it to \
                 {DESTS_ENV}, or name it in --config"
            ))
        })?;
        connect(&format!("destination `{name}`"), url).await
    }

    /// The destinations a command covers: `only`, or every configured one.
    pub fn scope(&self, only: Option<&str>) -> Result<Vec<String>> {
        match only {
            Some(name) => {
                if !self.dests.contains_key(name) {
                    return Err(Error::UnknownDestination(name.to_string()));
                }
                Ok(vec![name.to_string()])
            }
            None if self.dests.is_empty() => Err(Error::Config(format!(
                "no destination: pass --dest name=URL, set {DESTS_ENV}, or name them in --config"
            ))),
            None => Ok(self.dest_names()),
        }
    }
}

/// Connects to `url`: sqlx options built from its parts, wrapped by sea-orm, so neither
/// sea-orm's connect span nor sqlx's URL parser ever holds the password.
async fn connect(what: &str, url: &DbUrl) -> Result<DatabaseConnection> {
    let fail = |reason: String| Error::Connect {
        target: format!("{what} at {url}"),
        reason: url.scrub(&reason),
    };
    let driver_url = url.driver_url();
    match url.engine() {
        Engine::Postgres => {
            let mut options = sqlx::postgres::PgConnectOptions::from_str(&driver_url)
                .map_err(|e| fail(reason(&e)))?;
            if let Some(user) = url.user() {
                options = options.username(user);
            }
            if let Some(password) = url.password() {
                options = options.password(password);
            }
            let pool = open::<sqlx::Postgres>(options.disable_statement_logging())
                .await
                .map_err(fail)?;
            Ok(SqlxPostgresConnector::from_sqlx_postgres_pool(pool))
        }
        Engine::MySql => {
            let mut options = sqlx::mysql::MySqlConnectOptions::from_str(&driver_url)
                .map_err(|e| fail(reason(&e)))?;
            if let Some(user) = url.user() {
                options = options.username(user);
            }
            if let Some(password) = url.password() {
                options = options.password(password);
            }
            let pool = open::<sqlx::MySql>(options.disable_statement_logging())
                .await
                .map_err(fail)?;
            Ok(SqlxMySqlConnector::from_sqlx_mysql_pool(pool))
        }
        Engine::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(&driver_url)
                .map_err(|e| fail(reason(&e)))?;
            let pool = open::<sqlx::Sqlite>(options.disable_statement_logging())
                .await
                .map_err(fail)?;
            Ok(SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
        }
    }
}

/// Opens a pool, after one connection of its own: a refused port or a wrong password is
/// reported at once, instead of as the pool's timeout after it retried for ten seconds.
async fn open<DB: sqlx::Database>(
    options: <DB::Connection as sqlx::Connection>::Options,
) -> std::result::Result<sqlx::Pool<DB>, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Err(_) => {
            return Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()));
        }
        Ok(Err(e)) => return Err(reason(&e)),
        Ok(Ok(connection)) => {
            if let Err(e) = connection.close().await {
                tracing::debug!(error = %describe_sqlx(&e), "closing the first connection");
            }
        }
    }
    Ok(sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_lazy_with(options))
}

/// A connection error as a person should read it.
fn reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused (is the server running, at this host and port?)".into()
        }
        sqlx::Error::Io(io) => io.to_string(),
        other => describe_sqlx(other),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn connections(source: Option<&str>, dests: &[&str], config: Option<PathBuf>) -> Connections {
        Connections {
            source: source.map(str::to_string),
            dests: dests.iter().map(|d| d.to_string()).collect(),
            config,
        }
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(
            &path,
            r#"{"source": "sqlite://file.db", "destinations": {"a": "sqlite://a.db", "b": "sqlite://b.db"}}"#,
        )
        .unwrap();
        let urls = Urls::resolve(&connections(
            None,
            &["b=sqlite://flag.db"],
            Some(path.clone()),
        ))
        .unwrap();
        let shown = |u: &DbUrl| u.to_string();
        assert_eq!(
            urls.source.as_ref().map(shown).as_deref(),
            Some("sqlite://file.db")
        );
        assert_eq!(shown(&urls.dests["a"]), "sqlite://a.db");
        assert_eq!(shown(&urls.dests["b"]), "sqlite://flag.db");
        let urls = Urls::resolve(&connections(Some("sqlite://flag.db"), &[], Some(path))).unwrap();
        assert_eq!(
            urls.source.as_ref().map(|u| u.to_string()).as_deref(),
            Some("sqlite://flag.db")
        );
        assert_eq!(urls.dest_names(), ["a", "b"]);
    }

    #[test]
    fn a_destination_without_a_name_is_refused_without_its_password() {
        let err = Urls::resolve(&connections(None, &["postgres://u:hunter2@h/db"], None))
            .err()
            .expect("an error")
            .to_string();
        assert!(err.contains("NAME=URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn entries_split_at_commas_that_start_a_name() {
        assert_eq!(
            split_entries("a=postgres://u:p,w@h/db,b=sqlite://b.db"),
            ["a=postgres://u:p,w@h/db", "b=sqlite://b.db"]
        );
        assert_eq!(split_entries(""), Vec::<String>::new());
    }

    #[test]
    fn scope_names_an_unknown_destination() {
        let urls = Urls::resolve(&connections(None, &["a=sqlite://a.db"], None)).unwrap();
        assert_eq!(urls.scope(None).unwrap(), ["a"]);
        assert!(matches!(
            urls.scope(Some("b")),
            Err(Error::UnknownDestination(name)) if name == "b"
        ));
    }
}
