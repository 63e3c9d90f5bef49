//! Destination side: how a batch of changes lands in a database.
//!
//! A batch is planned into multi-row upserts and deletes ([`plan`]), built as bound
//! statements for the destination's backend ([`statement`]), and applied in one
//! transaction together with the destination's [`checkpoint`], so a batch is applied
//! exactly once in effect whatever crashes. Nothing here knows about the replicator.

mod checkpoint;
mod columns;
pub(crate) mod plan;
mod sink;
mod sql;
pub(crate) mod statement;

pub(crate) use checkpoint::lock as lock_checkpoint;
pub use checkpoint::read as read_checkpoint;
pub(crate) use columns::of as table_columns;
pub use sink::Sink;
pub use sql::SqlSink;
