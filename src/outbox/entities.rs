//! `ormsync_entities`: the replicated tables' descriptions, recorded at the source by the
//! replicator so that tools without the application's Rust types (the `ormsync` command
//! line) know the tables, their keys, columns and column types.

use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde::{Deserialize, Serialize};

use crate::entity::TableSpec;
use crate::entity::ddl::{Definitions, NewColumn, backend_key};
use crate::error::{DbContext, Error, Result};

/// Records `specs` at the source, replacing an earlier description of the same table.
///
/// [`ReplicatorBuilder::start`](crate::ReplicatorBuilder::start) calls it for every
/// registered entity; tables registered by an earlier version of the application and no
/// longer now stay recorded (their changes may still be in the outbox).
///
/// # Errors
///
/// [`Error::Db`] when the source cannot be written.
pub async fn record<'a, C: ConnectionTrait>(
    db: &C,
    specs: impl IntoIterator<Item = &'a TableSpec>,
) -> Result<()> {
    let tables: Vec<RecordedTable> = specs
        .into_iter()
        .map(|spec| RecordedTable {
            spec: spec.clone(),
            definitions: None,
        })
        .collect();
    record_tables(db, &tables).await
}

/// A replicated table as recorded at the source: its description and, where the
/// recording replicator had the entity's Rust type, how a created table defines each
/// shipped column on each backend (what `ormsync schema` compares a destination with).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedTable {
    /// The table's description.
    #[serde(flatten)]
    pub spec: TableSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) definitions: Option<Definitions>,
}

impl RecordedTable {
    /// How a created table defines `column` at `backend`, if recorded.
    pub(crate) fn column(&self, backend: DbBackend, column: &str) -> Option<NewColumn> {
        self.definitions
            .as_ref()?
            .get(backend_key(backend))?
            .get(column)
            .cloned()
    }
}

/// Records `tables` at the source, replacing earlier descriptions of the same tables.
pub(crate) async fn record_tables<C: ConnectionTrait>(
    db: &C,
    tables: &[RecordedTable],
) -> Result<()> {
    for table in tables {
        let spec = &table.spec;
        let json = serde_json::to_string(table)
            .map_err(|e| Error::Config(format!("describing `{}`: {e}", spec.table)))?;
        let q = Query::insert()
            .into_table("ormsync_entities")
            .columns(["table_name", "spec"])
            .values_panic([spec.table.clone().into(), json.into()])
            .on_conflict(
                OnConflict::column("table_name")
                    .update_column("spec")
                    .to_owned(),
            )
            .to_owned();
        db.execute(&q)
            .await
            .context(|| format!("recording `{}` in `ormsync_entities`", spec.table))?;
    }
    Ok(())
}

/// The replicated tables recorded at the source, by table name.
///
/// # Errors
///
/// [`Error::Db`] when `ormsync_entities` cannot be read (it is created by
/// [`install`](crate::install) and by the replicator's start); [`Error::Config`] when a
/// description is not valid.
pub async fn load<C: ConnectionTrait>(db: &C) -> Result<Vec<TableSpec>> {
    Ok(load_recorded(db)
        .await?
        .into_iter()
        .map(|t| t.spec)
        .collect())
}

/// The replicated tables recorded at the source, with the column definitions recorded
/// with them, by table name.
///
/// # Errors
///
/// As [`load`].
pub async fn load_recorded<C: ConnectionTrait>(db: &C) -> Result<Vec<RecordedTable>> {
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT table_name, spec FROM ormsync_entities ORDER BY table_name",
        ))
        .await
        .map_err(|e| {
            // The hint is for a source where the table is missing, not for a lost connection.
            let context = if crate::classify::classify(&e) == crate::classify::ErrorKind::Transient
            {
                "reading `ormsync_entities`"
            } else {
                "reading `ormsync_entities` (start a replicator of this version on the source \
                 once to record the replicated tables)"
            };
            Error::db(context, e)
        })?;
    rows.iter()
        .map(|row| {
            let table: String = row
                .try_get("", "table_name")
                .context(|| "decoding `ormsync_entities`".into())?;
            let spec: String = row
                .try_get("", "spec")
                .context(|| "decoding `ormsync_entities`".into())?;
            serde_json::from_str(&spec).map_err(|e| {
                Error::Config(format!(
                    "the recorded description of `{table}` is not valid ({e}); start a replicator \
                     of this version on the source to record it again"
                ))
            })
        })
        .collect()
}
