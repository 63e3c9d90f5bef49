//! What a destination does differently from a plain copy of a table: how it finds a row
//! ([`KeyStrategy`]), who wins when both sides changed it ([`ConflictPolicy`]), and which
//! rows and values it takes ([`RowFilter`], dropped columns, [`Transform`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::change::{Op, Row};
use crate::entity::TableSpec;
use crate::error::{Error, Result};
use crate::value::Value;

/// How a destination finds the row a change is about.
///
/// # Examples
///
/// ```
/// use ormsync::KeyStrategy;
///
/// // Children assign their own ids; the first sync adopts rows with the same email.
/// let keys = KeyStrategy::key_map().matching(["email"]);
/// assert_eq!(keys, KeyStrategy::KeyMap { match_on: vec!["email".into()] });
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KeyStrategy {
    /// The primary key is the same on both sides (a backup). The default.
    #[default]
    SameKey,
    /// Rows are matched on the entity's `#[replicated(sync_key = "…")]` column, unique on
    /// both sides (a UUID, say). The destination assigns its own primary key and ormsync
    /// never writes it.
    SyncKey,
    /// The destination assigns its own primary key and `ormsync_key_map` at the destination
    /// records which source key became which destination key. A source row with no entry
    /// yet is first looked for by the `match_on` columns (a natural key such as an email),
    /// so the first sync of an existing database adopts its rows instead of duplicating them.
    KeyMap {
        /// Columns that identify a row on both sides; empty to never match.
        match_on: Vec<String>,
    },
}

impl KeyStrategy {
    /// [`KeyStrategy::KeyMap`] without natural-key matching.
    pub fn key_map() -> Self {
        KeyStrategy::KeyMap {
            match_on: Vec::new(),
        }
    }

    /// Adds natural-key columns to a [`KeyStrategy::KeyMap`] (others are left as they are).
    #[must_use]
    pub fn matching<S: Into<String>>(self, columns: impl IntoIterator<Item = S>) -> Self {
        match self {
            KeyStrategy::KeyMap { mut match_on } => {
                match_on.extend(columns.into_iter().map(Into::into));
                KeyStrategy::KeyMap { match_on }
            }
            other => other,
        }
    }
}

/// Who wins when a row changed at the source also changed at the destination.
///
/// Every decision other than a plain apply is recorded in the destination's
/// `ormsync_conflicts` table, and raised as [`AlertKind::Conflict`](crate::AlertKind::Conflict)
/// when the destination asks for it.
///
/// # Examples
///
/// ```
/// use ormsync::{ConflictPolicy, Resolution};
///
/// // Keep the larger stock count of the two.
/// let policy = ConflictPolicy::custom(|c| {
///     let stock = |row: &ormsync::change::Row| match row.get("stock") {
///         Some(ormsync::value::Value::Int(Some(n))) => *n,
///         _ => 0,
///     };
///     Ok(match c.current {
///         Some(current) if stock(current) > stock(c.row) => Resolution::Skip,
///         _ => Resolution::Apply,
///     })
/// });
/// assert_eq!(policy.name(), "custom");
/// ```
#[derive(Clone, Default)]
pub enum ConflictPolicy {
    /// The source's version is written. The default: a backup mirrors its source.
    #[default]
    SourceWins,
    /// A row edited (or deleted) at the destination since ormsync last wrote it keeps the
    /// destination's version. ormsync keeps a hash of what it last wrote beside the key
    /// map to tell. A row ormsync has not written before is taken as the source's.
    DestinationWins,
    /// The version whose `column` (a timestamp or version number) is greater wins; on a tie
    /// the same version is chosen on both sides, so two-way peers converge.
    NewestWins {
        /// The column compared.
        column: String,
    },
    /// A function decides; see [`ConflictPolicy::custom`].
    Custom(Resolver),
}

impl ConflictPolicy {
    /// [`ConflictPolicy::NewestWins`] on `column`.
    pub fn newest_wins(column: impl Into<String>) -> Self {
        ConflictPolicy::NewestWins {
            column: column.into(),
        }
    }

    /// A policy decided by `f`, called for every change to the table with the incoming
    /// version and the destination's current row. An `Err` or a panic stops the change
    /// (it is not lost: the destination retries, halts or parks it by its
    /// [`OnPermanentError`](crate::OnPermanentError) policy).
    pub fn custom(
        f: impl Fn(&Incoming<'_>) -> std::result::Result<Resolution, String> + Send + Sync + 'static,
    ) -> Self {
        ConflictPolicy::Custom(Resolver(Arc::new(f)))
    }

    /// The policy's name, as recorded in `ormsync_conflicts.policy`.
    pub fn name(&self) -> &'static str {
        match self {
            ConflictPolicy::SourceWins => "source_wins",
            ConflictPolicy::DestinationWins => "destination_wins",
            ConflictPolicy::NewestWins { .. } => "newest_wins",
            ConflictPolicy::Custom(_) => "custom",
        }
    }
}

impl fmt::Debug for ConflictPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConflictPolicy::NewestWins { column } => write!(f, "NewestWins({column})"),
            other => f.write_str(other.name()),
        }
    }
}

/// The function of a [`ConflictPolicy::Custom`].
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct Resolver(
    pub(crate) Arc<dyn Fn(&Incoming<'_>) -> std::result::Result<Resolution, String> + Send + Sync>,
);

/// What a custom resolver sees of a change.
#[derive(Debug)]
pub struct Incoming<'a> {
    /// The table.
    pub table: &'a str,
    /// Insert, update or delete.
    pub op: Op,
    /// The row's key at the source.
    pub key: &'a Row,
    /// The source's version of the row (for a delete, the row as it was), as the
    /// destination would store it.
    pub row: &'a Row,
    /// The destination's row, same columns, or `None` when it has none.
    pub current: Option<&'a Row>,
}

/// What a custom resolver decides.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// Apply the change as it came.
    Apply,
    /// Write this row instead (the columns of [`Incoming::row`]), e.g. a merge of both.
    Write(Row),
    /// Leave the destination's row as it is.
    Skip,
}

/// Which rows of a table a destination takes.
///
/// A row that stops matching (an update moves it out) is deleted at the destination; a
/// delete of a row that never matched is not sent.
///
/// # Examples
///
/// ```
/// use ormsync::RowFilter;
///
/// let only_tenant_7 = RowFilter::eq("tenant_id", 7i64);
/// ```
#[derive(Clone)]
pub struct RowFilter(Arc<dyn Fn(&Row) -> bool + Send + Sync>);

impl RowFilter {
    /// Rows for which `f` returns true.
    pub fn new(f: impl Fn(&Row) -> bool + Send + Sync + 'static) -> Self {
        RowFilter(Arc::new(f))
    }

    /// Rows whose `column` equals `value` (integers compare by value whatever their width).
    pub fn eq(column: impl Into<String>, value: impl Into<sea_orm::Value>) -> Self {
        let column = column.into();
        let wanted = Value::from_sea(value.into()).ok();
        RowFilter::new(move |row| match (row.get(&column), &wanted) {
            (Some(v), Some(w)) => crate::value::canonical::same(v, w),
            _ => false,
        })
    }

    pub(crate) fn matches(&self, row: &Row) -> bool {
        (self.0)(row)
    }
}

/// A change to one column's value on its way to a destination (masking, nulling).
///
/// # Examples
///
/// ```
/// use ormsync::Transform;
/// use ormsync::value::Value;
///
/// let masked = Transform::mask_email().apply(&Value::String(Some("ada@example.com".into())));
/// assert_eq!(masked, Value::String(Some("a***@example.com".into())));
/// ```
#[derive(Clone)]
pub struct Transform(Arc<dyn Fn(&Value) -> Value + Send + Sync>);

impl Transform {
    /// Values become `f(value)`.
    pub fn new(f: impl Fn(&Value) -> Value + Send + Sync + 'static) -> Self {
        Transform(Arc::new(f))
    }

    /// Values become NULL (of the same type).
    pub fn null() -> Self {
        Transform::new(|v| Value::null_for_tag(&v.type_tag()).unwrap_or_else(|| v.clone()))
    }

    /// Text becomes `value`; NULL stays NULL.
    pub fn constant(value: impl Into<String>) -> Self {
        let value = value.into();
        Transform::new(move |v| match v {
            Value::String(Some(_)) => Value::String(Some(value.clone())),
            other => other.clone(),
        })
    }

    /// An email `ada@example.com` becomes `a***@example.com`: its first letter and domain
    /// stay, so it still looks like what it is, but it reaches no one. Other text becomes
    /// `***`; NULL stays NULL.
    pub fn mask_email() -> Self {
        Transform::new(|v| match v {
            Value::String(Some(s)) => Value::String(Some(match s.split_once('@') {
                Some((user, domain)) => {
                    let first: String = user.chars().take(1).collect();
                    format!("{first}***@{domain}")
                }
                None => "***".into(),
            })),
            other => other.clone(),
        })
    }

    /// The transformed `value`.
    pub fn apply(&self, value: &Value) -> Value {
        (self.0)(value)
    }
}

/// Everything a destination does differently with one table.
#[derive(Clone, Default)]
pub(crate) struct TableRules {
    pub(crate) keys: KeyStrategy,
    pub(crate) conflicts: Option<ConflictPolicy>,
    pub(crate) filter: Option<RowFilter>,
    pub(crate) drop: Vec<String>,
    pub(crate) transforms: Vec<(String, Transform)>,
}

/// A destination's rules for every table, with the table specs they need.
#[derive(Clone, Default)]
pub(crate) struct Rules {
    pub(crate) specs: HashMap<String, TableSpec>,
    pub(crate) tables: HashMap<String, TableRules>,
    pub(crate) conflicts: ConflictPolicy,
    pub(crate) alert_conflicts: bool,
}

impl Rules {
    /// The conflict policy of `table`.
    pub(crate) fn policy(&self, table: &str) -> &ConflictPolicy {
        self.tables
            .get(table)
            .and_then(|t| t.conflicts.as_ref())
            .unwrap_or(&self.conflicts)
    }

    /// The key strategy of `table`.
    pub(crate) fn keys(&self, table: &str) -> &KeyStrategy {
        static SAME: KeyStrategy = KeyStrategy::SameKey;
        self.tables.get(table).map(|t| &t.keys).unwrap_or(&SAME)
    }

    /// Whether `table`'s rows get their own keys at the destination, so rows referencing
    /// them need their foreign keys translated.
    pub(crate) fn is_mapped(&self, table: &str) -> bool {
        *self.keys(table) != KeyStrategy::SameKey
    }

    /// Whether changes of `table` go through the row-by-row path that reads the
    /// destination's row: other keys, another policy, or a foreign key to a mapped table.
    pub(crate) fn goes_row_by_row(&self, table: &str) -> bool {
        self.is_mapped(table)
            || !matches!(self.policy(table), ConflictPolicy::SourceWins)
            || self.specs.get(table).is_some_and(|s| {
                s.references
                    .iter()
                    .any(|r| r.table != table && self.is_mapped(&r.table))
            })
    }

    /// Whether `table` keeps a row in `ormsync_key_map` per row: for its own keys, for the
    /// foreign keys of others, or for the hash that tells a local edit.
    pub(crate) fn keeps_map(&self, table: &str) -> bool {
        self.is_mapped(table) || matches!(self.policy(table), ConflictPolicy::DestinationWins)
    }

    /// Checks the rules against the tables they name, so a typo fails at start, not at
    /// the first change.
    pub(crate) fn validate(&self, destination: &str) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(format!("destination `{destination}`: {msg}")));
        for (table, rules) in &self.tables {
            let Some(spec) = self.specs.get(table) else {
                return bad(format!(
                    "rules name table `{table}`, which no registered entity has; register it with \
                     `.entity::<…>()`"
                ));
            };
            let has = |c: &str| spec.columns.iter().any(|x| x == c);
            if rules.keys == KeyStrategy::SyncKey && spec.sync_key.is_none() {
                return bad(format!(
                    "`{table}` uses KeyStrategy::SyncKey but its entity names no sync key; add \
                     `#[replicated(sync_key = \"column\")]` to it"
                ));
            }
            if let KeyStrategy::KeyMap { match_on } = &rules.keys
                && let Some(c) = match_on.iter().find(|c| !has(c))
            {
                return bad(format!(
                    "`{table}` matches rows on `{c}`, which is not one of its shipped columns"
                ));
            }
            if rules.keys != KeyStrategy::SameKey && spec.key.len() != 1 {
                return bad(format!(
                    "`{table}` has a composite primary key; a destination can only assign its own \
                     single-column key, so use KeyStrategy::SameKey for it"
                ));
            }
            for c in rules
                .drop
                .iter()
                .chain(rules.transforms.iter().map(|(c, _)| c))
            {
                if !has(c) {
                    return bad(format!(
                        "`{table}` has no shipped column `{c}` to drop or transform"
                    ));
                }
                if spec.key.contains(c) || spec.sync_key.as_deref() == Some(c) {
                    return bad(format!(
                        "`{table}.{c}` identifies rows, so it cannot be dropped or transformed"
                    ));
                }
            }
            if let Some(ConflictPolicy::NewestWins { column }) = &rules.conflicts
                && !has(column)
            {
                return bad(format!(
                    "`{table}` has no shipped column `{column}` to compare"
                ));
            }
        }
        if let ConflictPolicy::NewestWins { column } = &self.conflicts {
            for spec in self.specs.values() {
                if self
                    .tables
                    .get(&spec.table)
                    .is_none_or(|t| t.conflicts.is_none())
                    && !spec.columns.contains(column)
                {
                    return bad(format!(
                        "NewestWins compares `{column}`, which `{}` lacks; give that table its own \
                         policy with `.conflicts_for::<…>()`",
                        spec.table
                    ));
                }
            }
        }
        Ok(())
    }
}
