//! The `Replicated` trait: what ormsync knows of an entity.

pub(crate) mod ddl;
mod keys;

pub(crate) use keys::{key_columns, key_condition, keys_condition};

use sea_orm::sea_query::{ArrayType, ColumnType};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, DbBackend, EntityTrait, IdenStatic, Iterable,
    ModelTrait, PrimaryKeyToColumn, RelationTrait,
};

use crate::change::Row;
use crate::error::{Error, Result};
use crate::value::Value;

/// A sea-orm entity whose changes ormsync captures and ships.
///
/// Implemented by `#[derive(Replicated)]` on the entity's `Model`; the provided methods
/// describe the table and convert between a `Model` and a [`Row`] of typed values. An
/// entity with this derive has its `ActiveModelBehavior` generated as well: that impl is
/// what captures `insert`, `update`, `save` and `delete` into the outbox.
///
/// # Examples
///
/// ```
/// use ormsync::Replicated;
/// use sea_orm::entity::prelude::*;
///
/// #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Replicated)]
/// #[sea_orm(table_name = "customers")]
/// pub struct Model {
///     #[sea_orm(primary_key)]
///     pub id: i64,
///     pub name: String,
///     #[replicated(skip)]
///     pub local_note: Option<String>,
/// }
///
/// #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// pub enum Relation {}
///
/// let spec = Entity::table_spec();
/// assert_eq!(spec.table, "customers");
/// assert_eq!(spec.key, ["id"]);
/// assert_eq!(spec.columns, ["id", "name"]);
/// assert_eq!(spec.types, ["i8", "s"]);
/// ```
pub trait Replicated: EntityTrait {
    /// Columns marked `#[replicated(skip)]`: never captured, never shipped.
    fn skipped_columns() -> Vec<Self::Column>;

    /// The global key column named by `#[replicated(sync_key = "…")]`, if any.
    fn sync_key() -> Option<Self::Column>;

    /// Each column with the sea-query array type of its Rust field type: what lets ormsync
    /// read the table without the `Model` type (the command line, snapshots, verify).
    fn column_types() -> Vec<(Self::Column, ArrayType)>;

    /// Table name, key columns and shipped columns.
    fn table_spec() -> TableSpec {
        let skipped: Vec<&'static str> =
            Self::skipped_columns().iter().map(|c| c.as_str()).collect();
        let types = Self::column_types();
        TableSpec {
            table: Self::default().table_name().to_string(),
            key: Self::PrimaryKey::iter()
                .map(|k| k.into_column().as_str().to_string())
                .collect(),
            columns: Self::Column::iter()
                .map(|c| c.as_str())
                .filter(|c| !skipped.contains(c))
                .map(str::to_string)
                .collect(),
            types: Self::Column::iter()
                .filter(|c| !skipped.contains(&c.as_str()))
                .map(|c| {
                    if let Some(name) = db_enum(&c) {
                        return format!("en:{name}");
                    }
                    let element = types
                        .iter()
                        .find(|(t, _)| t.as_str() == c.as_str())
                        .and_then(|(_, ty)| Value::null_of(ty))
                        .map(|null| null.type_tag())
                        .unwrap_or_default();
                    // A `Vec<T>` field's array type is its element's.
                    if matches!(c.def().get_column_type(), ColumnType::Array(_)) {
                        format!("a:{element}")
                    } else {
                        element
                    }
                })
                .collect(),
            sync_key: Self::sync_key().map(|c| c.as_str().to_string()),
            references: Self::Relation::iter()
                .map(|r| r.def())
                // `belongs_to` relations: sea-orm calls the referenced side the owner.
                .filter(|d| !d.is_owner)
                .map(|d| Reference {
                    columns: d.from_col.iter().map(|c| c.to_string()).collect(),
                    table: d.to_tbl.sea_orm_table().to_string(),
                    to_columns: d.to_col.iter().map(|c| c.to_string()).collect(),
                })
                .collect(),
        }
    }

    /// The shipped columns of `model`, as typed values.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedValue`] when a column's type cannot travel (mark it `skip`).
    fn to_row(model: &Self::Model) -> Result<Row> {
        row_at::<Self>(model, None)
    }

    /// The primary key of `model`.
    fn key_of(model: &Self::Model) -> Result<Row> {
        key_at::<Self>(model, None)
    }

    /// The shipped columns an `ActiveModel` holds (set or unchanged; `NotSet` ones are left out).
    fn active_to_row(model: &Self::ActiveModel) -> Result<Row> {
        active_row_at::<Self>(model, None)
    }

    /// An `ActiveModel` holding the values of `row` (columns the row lacks stay `NotSet`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the row names a column the entity does not have, or an enum
    /// column a variant its Rust enum does not have.
    fn active_from_row(row: &Row) -> Result<Self::ActiveModel> {
        let mut am = <Self::ActiveModel as ActiveModelTrait>::default();
        for (name, value) in &row.0 {
            let col = Self::Column::iter()
                .find(|c| c.as_str() == name)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "`{}` has no column `{name}`",
                        Self::default().table_name()
                    ))
                })?;
            match value {
                // A `DeriveActiveEnum` of `rs_type = "String"` over a database enum takes its
                // variant as a string, one of `rs_type = "Enum"` as the enum.
                Value::Enum { value: v, .. } => am
                    .try_set(col, value.to_sea())
                    .or_else(|_| am.try_set(col, Value::String(v.clone()).to_sea()))
                    .map_err(|e| {
                        Error::Config(format!(
                            "`{}.{name}` does not take the enum value {v:?}: {e}",
                            Self::default().table_name()
                        ))
                    })?,
                // A field of the `time` crate's or `BigDecimal`'s type takes the same
                // value in its own type.
                other => {
                    let mut result = am.try_set(col, other.to_sea());
                    for alternative in crate::value::crates::alternatives(other) {
                        if result.is_ok() {
                            break;
                        }
                        result = am.try_set(col, alternative);
                    }
                    result.map_err(|e| {
                        Error::Config(format!(
                            "`{}.{name}` does not take the value {other:?}: {e}",
                            Self::default().table_name()
                        ))
                    })?
                }
            }
        }
        Ok(am)
    }
}

/// [`Replicated::to_row`] of a model read from or written to a database on `at`.
pub(crate) fn row_at<E: Replicated>(model: &E::Model, at: Option<DbBackend>) -> Result<Row> {
    let skipped = E::skipped_columns();
    let mut row = Vec::with_capacity(16);
    for c in E::Column::iter() {
        if skipped.iter().any(|s| s.as_str() == c.as_str()) {
            continue;
        }
        row.push((c.as_str().to_string(), typed::<E>(c, model.get(c), at)?));
    }
    Ok(Row(row))
}

/// [`Replicated::key_of`] at `at`.
pub(crate) fn key_at<E: Replicated>(model: &E::Model, at: Option<DbBackend>) -> Result<Row> {
    let mut row = Vec::with_capacity(1);
    for k in E::PrimaryKey::iter() {
        let c = k.into_column();
        row.push((c.as_str().to_string(), typed::<E>(c, model.get(c), at)?));
    }
    Ok(Row(row))
}

/// [`Replicated::active_to_row`] at `at`.
pub(crate) fn active_row_at<E: Replicated>(
    model: &E::ActiveModel,
    at: Option<DbBackend>,
) -> Result<Row> {
    let skipped = E::skipped_columns();
    let mut row = Vec::with_capacity(16);
    for c in E::Column::iter() {
        if skipped.iter().any(|s| s.as_str() == c.as_str()) {
            continue;
        }
        match model.get(c) {
            ActiveValue::Set(v) | ActiveValue::Unchanged(v) => {
                row.push((c.as_str().to_string(), typed::<E>(c, v, at)?))
            }
            ActiveValue::NotSet => {}
        }
    }
    Ok(Row(row))
}

fn typed<E: EntityTrait>(c: E::Column, v: sea_orm::Value, at: Option<DbBackend>) -> Result<Value> {
    let value = Value::from_sea_at(v, at).map_err(|kind| Error::UnsupportedValue {
        table: E::default().table_name().to_string(),
        column: c.as_str().to_string(),
        kind,
    })?;
    // A `DeriveActiveEnum` of `rs_type = "String"` over a database enum hands over its
    // variant as a plain string; PostgreSQL refuses text for an enum column, so it travels
    // as the enum it is.
    match value {
        Value::String(value) => match db_enum(&c) {
            Some(type_name) => Ok(Value::Enum { type_name, value }),
            None => Ok(Value::String(value)),
        },
        other => Ok(other),
    }
}

/// The name of the database enum type (`CREATE TYPE … AS ENUM`, `ENUM(…)`) of column `c`,
/// if it is one.
fn db_enum<C: ColumnTrait>(c: &C) -> Option<String> {
    match c.def().get_column_type() {
        ColumnType::Enum { name, .. } => Some(name.to_string()),
        _ => None,
    }
}

/// What ormsync knows of a replicated table, without the Rust types.
///
/// The replicator records it at the source (`ormsync_entities`, as JSON) so that tools
/// without the application's types, like the `ormsync` command line, can read the tables.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableSpec {
    /// Table name.
    pub table: String,
    /// Primary key columns, in order.
    pub key: Vec<String>,
    /// Shipped columns, in the entity's order (skipped ones left out).
    pub columns: Vec<String>,
    /// The type of each of `columns`, as [`Value::type_tag`] names it (`"i8"`, `"s"`,
    /// `"dec"`, …; empty for a type ormsync cannot carry). Read a column with [`Value::read`].
    pub types: Vec<String>,
    /// The global key column, if the entity names one.
    pub sync_key: Option<String>,
    /// The foreign keys this table holds, from the entity's `belongs_to` relations.
    // Descriptions recorded by a version without references still load.
    #[serde(default)]
    pub references: Vec<Reference>,
}

/// A table `table` keyed by `id` whose `<parent>_id` columns reference each of `parents`:
/// for tests of what foreign keys order.
#[cfg(test)]
pub(crate) fn test_spec(table: &str, parents: &[&str]) -> TableSpec {
    TableSpec {
        table: table.into(),
        key: vec!["id".into()],
        columns: vec!["id".into()],
        types: vec!["i8".into()],
        sync_key: None,
        references: parents
            .iter()
            .map(|p| Reference {
                columns: vec![format!("{p}_id")],
                table: (*p).into(),
                to_columns: vec!["id".into()],
            })
            .collect(),
    }
}

/// A foreign key: `columns` of one table hold `to_columns` of a row of `table`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reference {
    /// The referencing columns.
    pub columns: Vec<String>,
    /// The referenced table.
    pub table: String,
    /// The referenced columns (usually its primary key), in the order of `columns`.
    pub to_columns: Vec<String>,
}
