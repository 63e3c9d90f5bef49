//! `ormsync verify`, `repair` and `resync`: they read tables through the descriptions the
//! replicator records in `ormsync_entities`.

use std::process::ExitCode;

use ormsync::{Error, Result};

use crate::args::Scope;
use crate::config::Urls;

pub async fn verify(_urls: &Urls, _scope: &Scope, _json: bool) -> Result<ExitCode> {
    Err(Error::Config(
        "verify from table descriptions is not available yet".into(),
    ))
}

pub async fn repair(
    _urls: &Urls,
    _scope: &Scope,
    _dry_run: bool,
    _direct: bool,
    _json: bool,
) -> Result<ExitCode> {
    Err(Error::Config(
        "repair from table descriptions is not available yet".into(),
    ))
}

pub async fn resync(_urls: &Urls, _destination: &str, _tables: &[String]) -> Result<ExitCode> {
    Err(Error::Config("resync is not available yet".into()))
}
