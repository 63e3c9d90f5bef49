//! Applying one change to a table whose rows the destination finds by another key, whose
//! foreign keys point at such rows, or whose conflict policy needs the destination's
//! current row: row by row, inside the batch's transaction.

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult};

use super::conflict::{self, Case, Conflict, Decision};
use super::key_map::{self, key_text};
use super::plan::Step;
use super::rules::{KeyStrategy, Rules};
use super::statement;
use crate::change::{Change, Op, Row};
use crate::entity::TableSpec;
use crate::value::Value;

/// Why a change could not be placed.
pub(crate) enum RowByRowError {
    /// A statement failed.
    Db(DbErr),
    /// The rules cannot place it (a missing parent, an ambiguous match, a failed resolver).
    Unresolved(String),
}

impl From<DbErr> for RowByRowError {
    fn from(e: DbErr) -> Self {
        RowByRowError::Db(e)
    }
}

/// Applies, one row at a time, the changes of tables that cannot go by multi-row
/// statements (see [`Rules::goes_row_by_row`]), collecting the conflicts it decided.
pub(crate) struct RowByRow<'a, C> {
    pub(crate) db: &'a C,
    pub(crate) source: &'a str,
    pub(crate) rules: &'a Rules,
    /// The destination's column types by table, where known: what each column keeps of a
    /// value, checked before a row is written (see [`statement::check_rows`]).
    pub(crate) types: &'a HashMap<String, HashMap<String, String>>,
    pub(crate) conflicts: Vec<Conflict>,
}

impl<C: ConnectionTrait> RowByRow<'_, C> {
    /// Applies `change` under its table's rules.
    pub(crate) async fn apply(&mut self, change: &Change) -> Result<(), RowByRowError> {
        let table = change.table.as_str();
        let Some(spec) = self.rules.specs.get(table) else {
            return Err(RowByRowError::Unresolved(format!(
                "table `{table}` has rules at this destination but no registered entity"
            )));
        };
        let backend = self.db.get_database_backend();
        let keys = self.rules.keys(table);
        let mapped = *keys != KeyStrategy::SameKey;
        let source_key = key_text(change.key.values());

        let mut row = change.row.clone();
        if change.op != Op::Delete {
            self.translate(spec, &mut row).await?;
        }
        // What is written here: the destination assigns its own key to mapped tables.
        let incoming = Row(row
            .0
            .into_iter()
            .filter(|(c, _)| !(mapped && spec.key.contains(c)))
            .collect());
        let columns: Vec<&str> = incoming.columns().collect();

        let entry = if self.rules.keeps_map(table) {
            key_map::get(self.db, self.source, table, &source_key).await?
        } else {
            None
        };
        let dest_key = match keys {
            KeyStrategy::SameKey => Some(change.key.clone()),
            KeyStrategy::SyncKey => {
                let column = spec.sync_key.as_deref().unwrap_or_default();
                let by = pick(&change.row, &[column]);
                self.find_one(spec, &by, "its sync key").await?
            }
            KeyStrategy::KeyMap { match_on } => match &entry {
                Some(e) => Some(e.dest_key.clone()),
                None if change.op != Op::Delete && !match_on.is_empty() => {
                    let names: Vec<&str> = match_on.iter().map(String::as_str).collect();
                    let by = pick(&change.row, &names);
                    self.find_one(spec, &by, "its natural key").await?
                }
                None => None,
            },
        };
        let current = match &dest_key {
            Some(k) => self.read(spec, &columns, k).await?,
            None => None,
        };

        let policy = self.rules.policy(table);
        let (decision, outcome) = conflict::decide(
            policy,
            &Case {
                table,
                op: change.op,
                key: &change.key,
                incoming: &incoming,
                current: current.as_ref(),
                known: entry.is_some(),
                last_written: entry.as_ref().and_then(|e| e.hash.as_deref()),
            },
        )
        .map_err(RowByRowError::Unresolved)?;

        match &decision {
            Decision::Write(written) => {
                // Refused here, before any statement: a value the destination would store
                // altered, whichever of the writes below it goes through.
                statement::check_rows(table, &[written], backend, self.types.get(table))?;
                let at = match (mapped, &current, dest_key) {
                    (false, _, _) => {
                        let rows = [written];
                        let step = Step::Upsert {
                            table,
                            key: spec.key.iter().map(String::as_str).collect(),
                            rows: rows.to_vec(),
                        };
                        self.run(&step).await?;
                        change.key.clone()
                    }
                    (true, Some(_), Some(k)) => {
                        self.db
                            .execute(&statement::update(table, written, &k, backend)?)
                            .await?;
                        k
                    }
                    (true, _, _) => self.insert(spec, written).await?,
                };
                if self.rules.keeps_map(table) {
                    let hash = conflict::hash_of(written);
                    key_map::put(self.db, self.source, table, &source_key, &at, &hash).await?;
                }
            }
            Decision::Delete => {
                if let (Some(k), Some(_)) = (&dest_key, &current) {
                    self.run(&Step::Delete {
                        table,
                        keys: vec![k],
                    })
                    .await?;
                }
                if entry.is_some() {
                    key_map::remove(self.db, self.source, table, &source_key).await?;
                }
            }
            Decision::Keep => {}
        }

        if let Some(outcome) = outcome {
            let c = Conflict {
                table: table.to_string(),
                key: change.key.clone(),
                change_id: change.id,
                policy: policy.name().to_string(),
                outcome: outcome.to_string(),
                incoming,
                current,
            };
            conflict::record(self.db, self.source, &c).await?;
            self.conflicts.push(c);
        }
        Ok(())
    }

    /// Rewrites the foreign keys of `row` that point at mapped tables to the destination's
    /// keys of the rows they point at.
    async fn translate(&self, spec: &TableSpec, row: &mut Row) -> Result<(), RowByRowError> {
        for r in &spec.references {
            let Some(parent) = self.rules.specs.get(&r.table) else {
                continue;
            };
            // Only references to the parent's primary key go through the map; one to its
            // sync key holds a global value already.
            if !self.rules.is_mapped(&r.table) || parent.key != r.to_columns {
                continue;
            }
            let Some(values) = r
                .columns
                .iter()
                .map(|c| row.get(c).cloned())
                .collect::<Option<Vec<Value>>>()
            else {
                continue;
            };
            if values.iter().any(Value::is_null) {
                continue;
            }
            let key = key_text(&values);
            let Some(entry) = key_map::get(self.db, self.source, &r.table, &key).await? else {
                return Err(RowByRowError::Unresolved(format!(
                    "its `{}` points at `{}` {key}, which has not arrived at this destination \
                     (it may not be shipped yet, be filtered out, or its table be skipped); the \
                     change applies once that row is there",
                    r.columns.join(", "),
                    r.table
                )));
            };
            for ((column, to), old) in r.columns.iter().zip(&r.to_columns).zip(&values) {
                if let (Some(v), Some(slot)) = (
                    entry.dest_key.get(to),
                    row.0.iter_mut().find(|(c, _)| c == column),
                ) {
                    slot.1 = same_type(old, v);
                }
            }
        }
        Ok(())
    }

    /// The key of the one row matching `by`, or `None`; several is an error.
    async fn find_one(
        &self,
        spec: &TableSpec,
        by: &Row,
        what: &str,
    ) -> Result<Option<Row>, RowByRowError> {
        if by.0.is_empty() || by.values().any(Value::is_null) {
            return Ok(None);
        }
        let backend = self.db.get_database_backend();
        let key: Vec<&str> = spec.key.iter().map(String::as_str).collect();
        let q = statement::select_where(&spec.table, &key, by, Some(2), backend);
        let found = self.db.query_all(&q).await?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(read_row(spec, &key, one)?)),
            _ => Err(RowByRowError::Unresolved(format!(
                "{what} {} matches several rows at the destination; make `{}` unique there",
                by.to_json(),
                by.columns().collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// The destination's row at `key`, reduced to `columns`, locked for the transaction.
    async fn read(
        &self,
        spec: &TableSpec,
        columns: &[&str],
        key: &Row,
    ) -> Result<Option<Row>, RowByRowError> {
        let backend = self.db.get_database_backend();
        let q = statement::select_where(&spec.table, columns, key, None, backend);
        match self.db.query_one(&q).await? {
            Some(res) => Ok(Some(read_row(spec, columns, &res)?)),
            None => Ok(None),
        }
    }

    /// Inserts `row` without its key and returns the key the destination gave it.
    async fn insert(&self, spec: &TableSpec, row: &Row) -> Result<Row, RowByRowError> {
        let backend = self.db.get_database_backend();
        let key: Vec<&str> = spec.key.iter().map(String::as_str).collect();
        let q = statement::insert(&spec.table, row, &key, backend)?;
        if backend == DbBackend::MySql {
            let done = self.db.execute(&q).await?;
            let id = done.last_insert_id();
            let null = Value::null_for_tag(tag(spec, key[0])).unwrap_or(Value::BigInt(None));
            return Ok(Row(vec![(
                key[0].to_string(),
                same_type(&null, &Value::BigUnsigned(Some(id))),
            )]));
        }
        let res = self.db.query_one(&q).await?.ok_or_else(|| {
            RowByRowError::Unresolved(format!("`{}` returned no key for a new row", spec.table))
        })?;
        read_row(spec, &key, &res)
    }

    async fn run(&self, step: &Step<'_>) -> Result<(), DbErr> {
        statement::execute(self.db, step, self.types.get(step.table())).await
    }
}

/// The values of `columns` of `row` (those it has).
fn pick(row: &Row, columns: &[&str]) -> Row {
    Row(columns
        .iter()
        .filter_map(|c| row.get(c).map(|v| (c.to_string(), v.clone())))
        .collect())
}

fn tag<'a>(spec: &'a TableSpec, column: &str) -> &'a str {
    spec.columns
        .iter()
        .position(|c| c == column)
        .and_then(|i| spec.types.get(i))
        .map(String::as_str)
        .unwrap_or("")
}

fn read_row(spec: &TableSpec, columns: &[&str], res: &QueryResult) -> Result<Row, RowByRowError> {
    columns
        .iter()
        .map(|c| {
            Value::read(res, c, tag(spec, c))
                .map(|v| (c.to_string(), v))
                .map_err(|e| RowByRowError::Unresolved(format!("`{}`: {e}", spec.table)))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Row)
}

/// `value` as the integer type of `like`, so a key read as one width binds as the other.
fn same_type(like: &Value, value: &Value) -> Value {
    let n: Option<i128> = match value {
        Value::TinyInt(v) => v.map(i128::from),
        Value::SmallInt(v) => v.map(i128::from),
        Value::Int(v) => v.map(i128::from),
        Value::BigInt(v) => v.map(i128::from),
        Value::TinyUnsigned(v) => v.map(i128::from),
        Value::SmallUnsigned(v) => v.map(i128::from),
        Value::Unsigned(v) => v.map(i128::from),
        Value::BigUnsigned(v) => v.map(i128::from),
        _ => return value.clone(),
    };
    let Some(n) = n else {
        return value.clone();
    };
    let cast = match like {
        Value::TinyInt(_) => i8::try_from(n).ok().map(|n| Value::TinyInt(Some(n))),
        Value::SmallInt(_) => i16::try_from(n).ok().map(|n| Value::SmallInt(Some(n))),
        Value::Int(_) => i32::try_from(n).ok().map(|n| Value::Int(Some(n))),
        Value::BigInt(_) => i64::try_from(n).ok().map(|n| Value::BigInt(Some(n))),
        Value::TinyUnsigned(_) => u8::try_from(n).ok().map(|n| Value::TinyUnsigned(Some(n))),
        Value::SmallUnsigned(_) => u16::try_from(n).ok().map(|n| Value::SmallUnsigned(Some(n))),
        Value::Unsigned(_) => u32::try_from(n).ok().map(|n| Value::Unsigned(Some(n))),
        Value::BigUnsigned(_) => u64::try_from(n).ok().map(|n| Value::BigUnsigned(Some(n))),
        _ => None,
    };
    cast.unwrap_or_else(|| value.clone())
}
