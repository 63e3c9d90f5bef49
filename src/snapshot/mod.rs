//! Initial snapshot and resync: copying the rows a destination lacks, consistently with
//! the stream of changes, while the application keeps writing.
//!
//! A destination with no checkpoint for its source (a new one) is copied before it
//! streams, unless [`Destination::initial_snapshot`](crate::Destination::initial_snapshot)
//! turns that off; [`Replicator::resync`](crate::Replicator::resync) copies chosen tables
//! of a running destination again the same way.
//!
//! # How it stays consistent
//!
//! - **Where the stream starts.** A new destination streams from outbox position zero,
//!   the destination's progress at the source is set to zero *before* the first chunk is
//!   read, and the reader proves every missing id a hole as usual. That is conservative and
//!   plainly correct: outbox ids are not in commit order, so no single id recorded at the
//!   start could tell which transactions in flight then commit later; starting from zero,
//!   every change still in the outbox is replayed over the copy, including those of
//!   transactions open while the copy ran. Retention cannot remove a change committed after
//!   a chunk was read, since from the start on it keeps everything above zero for this
//!   destination (a change it removed earlier was committed before the snapshot began, so
//!   the copy holds it). The cost is replaying what the outbox still holds, which upserts
//!   and deletes by key make harmless.
//! - **Chunks.** Each table is read in key order, a chunk at a time, and written with the
//!   same multi-row upserts the stream uses. A chunk runs in one destination transaction
//!   that first locks the checkpoint row, as every batch does, so a chunk and a batch never
//!   interleave. A resync also deletes the destination rows in the chunk's key range that
//!   the source lacks (an initial snapshot leaves rows of the destination's own alone).
//!   Rows are written as the destination's rules say: filters, dropped columns, transforms,
//!   its own keys and conflict policy, like the stream's; a row those rules cannot place
//!   (its parent is not there, filtered out) is left out, as the stream would park it.
//!   The chunk's last key is stored in `ormsync_snapshot` in the same
//!   transaction, so a snapshot interrupted halfway resumes from its last chunk.
//! - **Foreign keys.** Tables are copied parents first. A row whose parent row is not at
//!   the destination yet was written after its parent's table was copied, like that
//!   parent, so both are in the stream: such rows are *deferred* to it rather than copied.
//!   After the copy the stream replays changes older than the copy; an insert or update
//!   among them (up to the outbox id recorded when the copy ended) whose parent row was
//!   deleted before the copy is superseded by a later change of the same row, and is
//!   skipped instead of halting the destination.
//! - **Skipped columns** (`#[replicated(skip)]`) are never read nor written.

mod copy;
mod order;
mod run;
mod status;
mod store;

pub(crate) use order::parents_first;
pub(crate) use run::{Copy, Link, finish};
pub use status::{SnapshotStatus, TableCopy, progress};
pub(crate) use store::{TableProgress, list, reset};
