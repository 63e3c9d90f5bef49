//! Room for the application's own `ActiveModelBehavior` logic.

use async_trait::async_trait;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, EntityTrait};

/// The hooks of a replicated entity's own, run by the derived `ActiveModelBehavior`
/// before ormsync captures the change.
///
/// `#[derive(Replicated)]` writes the entity's `impl ActiveModelBehavior for ActiveModel`
/// (Rust allows only one), so an entity that needs `before_save` logic of its own puts it
/// here: an existing `impl ActiveModelBehavior for ActiveModel` becomes
/// `impl ReplicatedHooks for ActiveModel` with the same body. Every method has the meaning,
/// signature and default of its namesake in `ActiveModelBehavior`. The derived impl runs
/// these when they exist; `#[replicated(hooks)]` on the `Model` makes them required.
///
/// # Examples
///
/// ```
/// use ormsync::{Replicated, ReplicatedHooks};
/// use sea_orm::entity::prelude::*;
/// use sea_orm::Set;
///
/// #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Replicated)]
/// #[sea_orm(table_name = "notes")]
/// #[replicated(hooks)]
/// pub struct Model {
///     #[sea_orm(primary_key)]
///     pub id: i64,
///     pub body: String,
/// }
///
/// #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// pub enum Relation {}
///
/// #[async_trait::async_trait]
/// impl ReplicatedHooks for ActiveModel {
///     async fn before_save<C: ConnectionTrait>(mut self, _db: &C, _insert: bool) -> Result<Self, DbErr> {
///         if let sea_orm::ActiveValue::Set(body) = &self.body {
///             let trimmed = body.trim().to_string();
///             self.body = Set(trimmed);
///         }
///         Ok(self)
///     }
/// }
/// ```
#[allow(unused_variables)]
#[async_trait]
pub trait ReplicatedHooks: ActiveModelTrait + Send {
    /// A fresh ActiveModel; see `ActiveModelBehavior::new`.
    fn new() -> Self {
        <Self as ActiveModelTrait>::default()
    }

    /// Runs before `insert`, `update` and `save`.
    async fn before_save<C>(self, db: &C, insert: bool) -> Result<Self, DbErr>
    where
        C: ConnectionTrait,
    {
        Ok(self)
    }

    /// Runs after `insert`, `update` and `save`, before the change is captured; the model
    /// it returns is what ormsync captures.
    async fn after_save<C>(
        model: <Self::Entity as EntityTrait>::Model,
        db: &C,
        insert: bool,
    ) -> Result<<Self::Entity as EntityTrait>::Model, DbErr>
    where
        C: ConnectionTrait,
    {
        Ok(model)
    }

    /// Runs before `delete`.
    async fn before_delete<C>(self, db: &C) -> Result<Self, DbErr>
    where
        C: ConnectionTrait,
    {
        Ok(self)
    }

    /// Runs after `delete`, before the delete is captured.
    async fn after_delete<C>(self, db: &C) -> Result<Self, DbErr>
    where
        C: ConnectionTrait,
    {
        Ok(self)
    }
}
