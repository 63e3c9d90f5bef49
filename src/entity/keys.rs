//! An entity's primary key as sea-orm conditions: how capture and the bulk helpers find
//! the rows they write, typed by the entity's own columns (so an enum key binds as its
//! database type).

use sea_orm::sea_query::Condition;
use sea_orm::{ColumnTrait, EntityTrait, Iterable, ModelTrait, PrimaryKeyToColumn, Value};

/// The entity's key columns, in key order.
pub(crate) fn key_columns<E: EntityTrait>() -> Vec<E::Column> {
    E::PrimaryKey::iter().map(|k| k.into_column()).collect()
}

/// The key values of `model`, in key column order.
pub(crate) fn key_values<E: EntityTrait>(model: &E::Model) -> Vec<Value> {
    key_columns::<E>()
        .into_iter()
        .map(|c| model.get(c))
        .collect()
}

/// `key IN (…)` for the keys of `models`; `(a = ? AND b = ?) OR …` for a composite key.
pub(crate) fn key_condition<E: EntityTrait>(models: &[E::Model]) -> Condition {
    keys_condition::<E>(models.iter().map(key_values::<E>))
}

/// `key IN (…)` for `keys` (each in key column order); `(a = ? AND b = ?) OR …` for a
/// composite key.
pub(crate) fn keys_condition<E: EntityTrait>(keys: impl Iterator<Item = Vec<Value>>) -> Condition {
    let cols = key_columns::<E>();
    if let [col] = cols.as_slice() {
        return Condition::all().add(col.is_in(keys.filter_map(|k| k.into_iter().next())));
    }
    keys.fold(Condition::any(), |any, key| {
        any.add(
            cols.iter()
                .zip(key)
                .fold(Condition::all(), |all, (c, v)| all.add(c.eq(v))),
        )
    })
}
