//! A worker's view of its row in `ormsync_control`: read at most once per poll interval
//! (and at most once a second), so requests made by another process take effect soon
//! without a loop of their own.

use std::time::{Duration, Instant};

use sea_orm::DatabaseConnection;

use crate::outbox::control::{self, Control};

/// What changed in the control row since it was last read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Requests {
    /// Whether the destination is paused now.
    pub(crate) paused: bool,
    /// Someone resumed it since the last read: a halted worker retries.
    pub(crate) resumed: bool,
    /// Its dead letters were replayed or discarded since the last read.
    pub(crate) letters: bool,
    /// A replay of its dead letters is asked and not done: the request's number.
    pub(crate) replay: Option<i64>,
    /// A resync is asked and not done: the request's number.
    pub(crate) resync: Option<i64>,
}

pub(crate) struct ControlWatch {
    db: DatabaseConnection,
    name: String,
    every: Duration,
    last_read: Option<Instant>,
    seen: Option<Control>,
}

impl ControlWatch {
    pub(crate) fn new(db: DatabaseConnection, name: &str, poll_interval: Duration) -> Self {
        ControlWatch {
            db,
            name: name.to_string(),
            every: poll_interval.max(Duration::from_secs(1)),
            last_read: None,
            seen: None,
        }
    }

    /// The requests since the last read, when a read is due and succeeds.
    pub(crate) async fn poll(&mut self) -> Option<Requests> {
        if self.last_read.is_some_and(|t| t.elapsed() < self.every) {
            return None;
        }
        self.last_read = Some(Instant::now());
        let now = match control::read(&self.db, &self.name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(destination = %self.name, error = %e, "cannot read ormsync_control");
                return None;
            }
        };
        // The first read is the baseline: counters count requests made while running.
        let before = self.seen.replace(now).unwrap_or(now);
        Some(Requests {
            paused: now.paused,
            resumed: now.resumes != before.resumes,
            letters: now.letters != before.letters,
            replay: (now.replays > now.replays_done).then_some(now.replays),
            resync: (now.resyncs > now.resyncs_done).then_some(now.resyncs),
        })
    }
}
