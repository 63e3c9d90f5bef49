//! Where the databases are: flags, then environment (clap reads both), then the config
//! file; and connecting to them.

use std::collections::BTreeMap;
use std::time::Duration;

use ormsync::redact::redact;
use ormsync::{Error, Result};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use serde::Deserialize;

use crate::args::Connections;

/// The config file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    source: Option<String>,
    #[serde(default)]
    destinations: BTreeMap<String, String>,
}

/// The URLs the command works with.
pub struct Urls {
    source: Option<String>,
    /// By name; flags and environment override the file's entries of the same name.
    dests: BTreeMap<String, String>,
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
                serde_json::from_str::<File>(&text).map_err(|e| {
                    // serde's message may quote a value; redact it like every other.
                    Error::Config(redact(&format!(
                        "the config file {} is not valid: {e}",
                        path.display()
                    )))
                })?
            }
            None => File::default(),
        };
        let mut dests = file.destinations;
        for d in &c.dests {
            let (name, url) = d.split_once('=').ok_or_else(|| {
                Error::Config(format!(
                    "`--dest {}` is not of the form name=URL",
                    redact(d)
                ))
            })?;
            dests.insert(name.trim().to_string(), url.trim().to_string());
        }
        Ok(Urls {
            source: c.source.clone().or(file.source),
            dests,
        })
    }

    /// Connects to the source.
    pub async fn source(&self) -> Result<DatabaseConnection> {
        let url = self.source.as_deref().ok_or_else(|| {
            Error::Config(
                "no source database: pass --source URL, set ORMSYNC_SOURCE_URL, or name it in \
                 --config"
                    .into(),
            )
        })?;
        connect("the source", url).await
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
                 ORMSYNC_DEST_URLS, or name it in --config"
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
            None if self.dests.is_empty() => Err(Error::Config(
                "no destination: pass --dest name=URL, set ORMSYNC_DEST_URLS, or name them in \
                 --config"
                    .into(),
            )),
            None => Ok(self.dest_names()),
        }
    }
}

async fn connect(what: &str, url: &str) -> Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url);
    // Statements stay out of the logs; a command line opens few connections.
    options
        .sqlx_logging(false)
        .max_connections(4)
        .connect_timeout(Duration::from_secs(10));
    Database::connect(options).await.map_err(|e| Error::Db {
        context: format!("connecting to {what} at {}", redact(url)),
        source: e,
    })
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
        assert_eq!(urls.source.as_deref(), Some("sqlite://file.db"));
        assert_eq!(urls.dests["a"], "sqlite://a.db");
        assert_eq!(urls.dests["b"], "sqlite://flag.db");
        let urls = Urls::resolve(&connections(Some("sqlite://flag.db"), &[], Some(path))).unwrap();
        assert_eq!(urls.source.as_deref(), Some("sqlite://flag.db"));
        assert_eq!(urls.dest_names(), ["a", "b"]);
    }

    #[test]
    fn a_destination_without_a_name_is_refused_without_its_password() {
        let err = Urls::resolve(&connections(None, &["postgres://u:hunter2@h/db"], None))
            .err()
            .expect("an error")
            .to_string();
        assert!(err.contains("name=URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
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
