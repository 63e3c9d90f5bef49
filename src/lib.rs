//! ormsync replicates the data of a sea-orm application at the ORM layer.
//!
//! Put `#[derive(Replicated)]` on an entity's `Model`: every `insert`, `update`, `save`
//! and `delete` of it is captured into the `ormsync_outbox` table inside the
//! application's own transaction. A [`Replicator`] ships those changes to other
//! databases — PostgreSQL, MySQL/MariaDB and SQLite in any combination — applying each
//! batch in a transaction that also records how far the destination has got, so every
//! change lands exactly once in effect, whatever crashes.
//!
//! ```no_run
//! use ormsync::{Destination, Replicated, Replicator};
//! use sea_orm::entity::prelude::*;
//! use sea_orm::{Set, TransactionTrait};
//!
//! #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Replicated)]
//! #[sea_orm(table_name = "customers")]
//! pub struct Model {
//!     #[sea_orm(primary_key)]
//!     pub id: i64,
//!     pub name: String,
//! }
//!
//! #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//! pub enum Relation {}
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let source = sea_orm::Database::connect("sqlite://app.db?mode=rwc").await?;
//! let backup = sea_orm::Database::connect("sqlite://backup.db?mode=rwc").await?;
//! let replicator = Replicator::builder(source.clone())
//!     .entity::<Entity>()
//!     .destination(Destination::new("backup", backup))
//!     .start()
//!     .await?;
//!
//! let txn = source.begin().await?;
//! ActiveModel { id: Set(1), name: Set("Ada".into()) }.insert(&txn).await?;
//! txn.commit().await?; // the row and its outbox entry commit together
//!
//! replicator.sync_now().await?;
//! # Ok(()) }
//! ```

pub mod apply;
mod bootstrap;
mod bounded_read;
pub mod bulk;
pub mod capture;
pub mod change;
pub mod classify;
mod entity;
mod error;
pub mod guard;
mod hooks;
#[cfg(feature = "jetstream")]
pub mod jetstream;
mod keyset;
#[cfg(feature = "migration")]
pub mod migration;
pub mod outbox;
pub mod position;
pub mod redact;
mod replicator;
mod schema;
mod signal;
pub mod snapshot;
mod sql_text;
pub mod value;
pub mod verify;

pub use apply::{
    Conflict, ConflictPolicy, Incoming, KeyStrategy, Resolution, RowFilter, Transform,
};
pub use entity::{Reference, Replicated, TableSpec};
pub use error::{Error, Result};
pub use hooks::ReplicatedHooks;
pub use replicator::{
    Alert, AlertKind, Destination, DestinationStatus, OnPermanentError, ReplayReport, Replicator,
    ReplicatorBuilder, RetentionPolicy, Schedule, State, Status, notify_replicators,
    replay_dead_letters,
};
pub use schema::{install, uninstall};
pub use snapshot::SnapshotStatus;

/// `#[derive(Replicated)]` on a sea-orm `Model`; see the [`Replicated`](trait@Replicated) trait.
pub use ormsync_derive::Replicated;

#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
    pub use sea_orm;
}
