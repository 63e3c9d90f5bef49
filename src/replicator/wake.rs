//! Waking realtime workers on PostgreSQL `NOTIFY`, sent on commit by the outbox trigger
//! from captures in any process (captures in this process also signal directly, see
//! `crate::signal`).

use sea_orm::{DatabaseConnection, DbBackend};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The channel the outbox trigger notifies on commit (see `schema`).
pub(crate) const CHANNEL: &str = "ormsync_outbox";

/// Listens for the outbox trigger's notifications on a PostgreSQL source and passes them
/// on as wake-ups; ends with `cancel`. Reconnects after a lost connection (sqlx's listener
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
