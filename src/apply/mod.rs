//! Destination side: how a batch of changes lands in a database.
//!
//! A batch is planned into multi-row upserts and deletes (`plan`), built as bound
//! statements for the destination's backend (`statement`), and applied in one
//! transaction together with the destination's checkpoint (`checkpoint`), so a batch is
//! applied exactly once in effect whatever crashes. Nothing here knows about the
//! replicator.

mod checkpoint;
mod column_type;
mod columns;
mod conflict;
pub(crate) mod copied;
mod differences;
pub(crate) mod evolve;
mod key_map;
mod mapped;
mod parallel;
mod pg_text;
pub(crate) mod plan;
mod rules;
mod shape;
mod sink;
mod sql;
pub(crate) mod statement;
mod unnest;

pub(crate) use checkpoint::lock as lock_checkpoint;
pub use checkpoint::read as read_checkpoint;
pub(crate) use checkpoint::store as store_checkpoint;
pub(crate) use columns::{byte_collation, of as table_columns};
pub use conflict::Conflict;
pub use differences::{
    ColumnDifference, Difference, TableDifferences, differences, evolve_recorded,
};
pub use rules::{
    ConflictPolicy, Incoming, KeyStrategy, Resolution, Resolver, RowFilter, Transform,
};
pub(crate) use rules::{Rules, TableRules};
pub(crate) use sink::SharedSink;
pub use sink::Sink;
pub(crate) use sql::OnConflict;
pub use sql::SqlSink;
