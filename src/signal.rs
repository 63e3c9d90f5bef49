//! The in-process signal from captures to realtime workers.

use std::sync::OnceLock;

use tokio::sync::watch;

fn sender() -> &'static watch::Sender<u64> {
    static SIGNAL: OnceLock<watch::Sender<u64>> = OnceLock::new();
    SIGNAL.get_or_init(|| watch::channel(0).0)
}

/// Called by every capture in this process. Cheap: it bumps a counter, and waiting
/// workers wake once however many captures happened. The capture is not committed yet,
/// so a worker woken by it looks again shortly after.
pub(crate) fn captured() {
    sender().send_modify(|n| *n = n.wrapping_add(1));
}

/// A receiver of the capture signal.
pub(crate) fn subscribe() -> watch::Receiver<u64> {
    sender().subscribe()
}
