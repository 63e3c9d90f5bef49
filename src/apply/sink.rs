//! The `Sink` trait: what a destination must do with a batch.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::change::{Batch, Change};
use crate::error::Result;
use crate::position::Position;

/// A destination of changes.
///
/// A [`Destination`](crate::Destination) applies through a
/// [`SqlSink`](crate::apply::SqlSink) on its connection unless given another sink with
/// [`with_sink`](crate::Destination::with_sink).
///
/// # Contract
///
/// - **Delivery may repeat.** After a crash, a lost connection or a lease hand-over, a
///   batch can arrive again, whole or in part. `apply` must skip what its stored position
///   already covers, so a replayed batch changes nothing.
/// - **Atomic with the position.** The changes of a batch and the new position are stored
///   together or not at all.
/// - **Order.** Changes arrive in outbox-id order; a later change of a row must land after
///   an earlier one.
/// - **One caller at a time** per destination and source; the stored position must be
///   locked while a batch applies, so even two racing callers apply nothing twice.
#[async_trait]
pub trait Sink: Send + Sync {
    /// The destination's stored position for `source` (zero before the first batch).
    async fn position(&mut self, source: &str) -> Result<Position>;

    /// Applies the changes of `batch` not yet covered, marks `batch.skipped` done, and
    /// returns the position now stored.
    async fn apply(&mut self, source: &str, batch: &Batch) -> Result<Position>;

    /// Applies `changes` in order, in one transaction, without consulting or moving the
    /// position: for parked changes whose ids the position already covers (dead-letter
    /// replay). Applying a change twice is harmless, so replaying them again is too.
    async fn replay(&mut self, source: &str, changes: &[Change]) -> Result<()>;
}

/// A sink a [`Destination`](crate::Destination) was given, shared by its clones and by the
/// replicator, which reads its position where it would read a SQL destination's
/// checkpoint; the lock keeps to one caller at a time.
#[derive(Clone)]
pub(crate) struct SharedSink(Arc<Mutex<Box<dyn Sink>>>);

impl SharedSink {
    pub(crate) fn new(sink: impl Sink + 'static) -> Self {
        SharedSink(Arc::new(Mutex::new(Box::new(sink))))
    }
}

#[async_trait]
impl Sink for SharedSink {
    async fn position(&mut self, source: &str) -> Result<Position> {
        self.0.lock().await.position(source).await
    }

    async fn apply(&mut self, source: &str, batch: &Batch) -> Result<Position> {
        self.0.lock().await.apply(source, batch).await
    }

    async fn replay(&mut self, source: &str, changes: &[Change]) -> Result<()> {
        self.0.lock().await.replay(source, changes).await
    }
}
