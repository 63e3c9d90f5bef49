//! Waking realtime workers in other processes: PostgreSQL `NOTIFY`, sent shortly after a
//! capture from a connection of its own (captures in this process also signal directly,
//! see `crate::signal`).
//!
//! The notification is not sent from the capturing transaction: a transaction that has
//! notified takes a database-wide lock at commit, so every captured transaction would
//! commit one after another. Sent from outside, it may arrive before the capture commits;
//! a worker woken by it that finds nothing looks again a few times over the next ~100 ms,
//! and its poll interval stays the safety net.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::redact::redact;

/// The channel captures are notified on.
pub(crate) const CHANNEL: &str = "ormsync_outbox";

/// Captures of one burst share one notification, sent this long after the first of them:
/// at most one `NOTIFY` per this interval per process, and most transactions have
/// committed by then.
const NOTIFY_AFTER: Duration = Duration::from_millis(5);

/// Sends a `NOTIFY` on `source` after each burst of captures in this process, until
/// `cancel`; nothing on a backend other than PostgreSQL.
pub(crate) fn notify_after_captures(source: &DatabaseConnection, cancel: CancellationToken) {
    if source.get_database_backend() != DbBackend::Postgres {
        return;
    }
    let db = source.clone();
    let mut captures = crate::signal::subscribe();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = captures.changed() => if changed.is_err() { return },
            }
            tokio::time::sleep(NOTIFY_AFTER).await;
            captures.borrow_and_update();
            if let Err(e) = db.execute_unprepared(&format!("NOTIFY {CHANNEL}")).await {
                tracing::debug!(error = %redact(&e.to_string()), "cannot notify replicators of captures");
            }
        }
    });
}

/// Tells realtime replicators in other processes of this process's captures, within
/// milliseconds, in a process that writes replicated entities but runs no replicator of
/// its own (a process that runs one does this already).
///
/// After each burst of captures it sends one PostgreSQL `NOTIFY` on `source`, a connection
/// of its own, at most once every few milliseconds, until the runtime it was called on
/// ends. Without it, such a process's changes wait for a replicator's poll interval. Only
/// PostgreSQL has notifications: elsewhere it does nothing.
///
/// ```no_run
/// # async fn run() -> Result<(), sea_orm::DbErr> {
/// let db = sea_orm::Database::connect("postgres://app@primary/app").await?;
/// ormsync::notify_replicators(&db); // once, at startup
/// # Ok(()) }
/// ```
pub fn notify_replicators(source: &DatabaseConnection) {
    notify_after_captures(source, CancellationToken::new());
}

/// Listens for capture notifications on a PostgreSQL source and passes them on as
/// wake-ups; ends with `cancel`. Reconnects after a lost connection (sqlx's listener
/// does), and a notification lost meanwhile only delays a change to the next poll.
pub(crate) fn listen(
    source: &DatabaseConnection,
    cancel: CancellationToken,
) -> Option<watch::Receiver<u64>> {
    if source.get_database_backend() != DbBackend::Postgres {
        return None;
    }
    let pool = source.get_postgres_connection_pool().clone();
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        let mut listener = loop {
            match sea_orm::sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(mut l) => match l.listen(CHANNEL).await {
                    Ok(()) => break l,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot LISTEN on the source; polling only")
                    }
                },
                Err(e) => tracing::warn!(error = %e, "cannot LISTEN on the source; polling only"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            }
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                n = listener.recv() => match n {
                    Ok(_) => tx.send_modify(|n| *n = n.wrapping_add(1)),
                    Err(e) => {
                        tracing::debug!(error = %e, "LISTEN connection lost; reconnecting");
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                },
            }
        }
    });
    Some(rx)
}
