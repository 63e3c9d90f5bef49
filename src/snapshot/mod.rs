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
//! - **A base.** Before the first chunk, the copy records a *base* at the destination: a
//!   position whose changes the destination holds, through the stream or through the copy.
//!   For a new destination it is the outbox ids committed at that moment (every chunk is
//!   read later, so contains them); for a resync it is the destination's checkpoint (the
//!   stream waits while the copy runs, so every other table stays at it). The destination's
//!   progress at the source is set to zero first, so retention keeps every change from then
//!   on.
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
//!   parent, so both changed after the base: such rows are left to the converge below.
//! - **Converging at one snapshot.** The chunks come from many moments. Once all are
//!   copied, one snapshot of the source is read: the outbox ids it holds, and, for every
//!   key a change outside the base touched, its row as the snapshot holds it. Those rows
//!   are written parents first, the keys the snapshot lacks deleted children first, and the
//!   checkpoint set to the base plus the snapshot's ids, with the base's record removed, in
//!   one transaction (see `converge`). The destination then equals the
//!   source at that snapshot, and the stream goes on from exactly there: no change is
//!   replayed over a newer row, so no replay meets a foreign key its moment did not have.
//!   A converge interrupted halfway runs again from the same base.
//! - **One writer.** Every write of the copy's bookkeeping (its plan, each chunk, the
//!   converge's checkpoint) checks, under the checkpoint's lock, that no newer holder of
//!   the lease wrote there (see `fence`): an instance that lost its lease mid-copy stops
//!   instead of overwriting the plan of the one that took over.
//! - **Skipped columns** (`#[replicated(skip)]`) are never read nor written.

mod converge;
mod copy;
mod fence;
pub(crate) mod order;
mod run;
mod status;
mod store;

pub(crate) use converge::converge;
pub(crate) use fence::Fence;
pub(crate) use order::parents_first;
pub(crate) use run::{Copy, Link};
pub use status::{SnapshotStatus, TableCopy, progress};
pub(crate) use store::{TableProgress, base, list, reset, set_base};
