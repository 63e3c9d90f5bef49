//! When a destination's worker looks for changes.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};

use crate::error::{Error, Result};

/// When a destination ships: continuously (polling, or woken at each commit), or on a
/// schedule. Set with [`Destination::schedule`](crate::Destination::schedule) or
/// [`Destination::realtime`](crate::Destination::realtime).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use chrono::NaiveTime;
/// use ormsync::Schedule;
///
/// // Every five minutes.
/// let every = Schedule::every(Duration::from_secs(300));
/// // At 02:30 UTC every night (cron with seconds: sec min hour day month weekday).
/// let nightly = Schedule::cron("0 30 2 * * *")?;
/// // Every minute, but only between 01:00 and 05:00 UTC.
/// let quiet = Schedule::every(Duration::from_secs(60))
///     .within(NaiveTime::from_hms_opt(1, 0, 0).unwrap(), NaiveTime::from_hms_opt(5, 0, 0).unwrap());
/// # Ok::<(), ormsync::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Schedule {
    pub(crate) kind: Kind,
    pub(crate) window: Option<(NaiveTime, NaiveTime)>,
}

#[derive(Clone, Debug)]
pub(crate) enum Kind {
    /// Look at the builder's poll interval (the default).
    Poll,
    /// Woken by each commit (PostgreSQL NOTIFY, or a capture in this process); the poll
    /// interval is the safety net.
    Realtime,
    /// Every so often.
    Every(Duration),
    /// At the times a cron expression names.
    Cron(Box<cron::Schedule>),
}

impl Schedule {
    /// Polls at the builder's interval: the default.
    pub fn poll() -> Self {
        Schedule {
            kind: Kind::Poll,
            window: None,
        }
    }

    /// Ships within milliseconds of each commit: woken by captures made in this process and,
    /// on PostgreSQL, by the `NOTIFY` other processes send after theirs (see
    /// [`notify_replicators`](crate::notify_replicators)), with the poll interval as the
    /// safety net for anything else.
    pub fn realtime() -> Self {
        Schedule {
            kind: Kind::Realtime,
            window: None,
        }
    }

    /// Ships every `interval` (at least a millisecond).
    pub fn every(interval: Duration) -> Self {
        Schedule {
            kind: Kind::Every(interval.max(Duration::from_millis(1))),
            window: None,
        }
    }

    /// Ships at the times of a cron expression with seconds (`sec min hour day month
    /// weekday [year]`), in UTC.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the expression does not parse.
    pub fn cron(expression: &str) -> Result<Self> {
        let parsed = cron::Schedule::from_str(expression)
            .map_err(|e| Error::Config(format!("cron expression `{expression}`: {e}")))?;
        Ok(Schedule {
            kind: Kind::Cron(Box::new(parsed)),
            window: None,
        })
    }

    /// Ships only between `start` and `end` (UTC; a window may wrap past midnight).
    pub fn within(mut self, start: NaiveTime, end: NaiveTime) -> Self {
        self.window = Some((start, end));
        self
    }

    pub(crate) fn is_realtime(&self) -> bool {
        matches!(self.kind, Kind::Realtime)
    }

    /// Whether passes run on their own clock rather than at the poll interval.
    pub(crate) fn is_timed(&self) -> bool {
        matches!(self.kind, Kind::Every(_) | Kind::Cron(_))
    }

    /// The next time to ship after `now`, or `None` to use the poll interval.
    pub(crate) fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut next = match &self.kind {
            Kind::Poll | Kind::Realtime => return None,
            Kind::Every(d) => now + chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::MAX),
            Kind::Cron(c) => c.after(&now).next()?,
        };
        // Move forward into the window: at most a day of steps, since windows repeat daily.
        if let Some((start, end)) = self.window {
            let inside = |t: DateTime<Utc>| {
                let time = t.time();
                if start <= end {
                    time >= start && time < end
                } else {
                    time >= start || time < end
                }
            };
            let mut tries = 0;
            while !inside(next) && tries < 100_000 {
                next = match &self.kind {
                    Kind::Cron(c) => c.after(&next).next()?,
                    _ => {
                        let today = next.date_naive().and_time(start).and_utc();
                        if today > next {
                            today
                        } else {
                            today + chrono::Duration::days(1)
                        }
                    }
                };
                tries += 1;
            }
        }
        Some(next)
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::poll()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::from_str(s).unwrap()
    }

    #[test]
    fn cron_fires_as_parsed() {
        let s = Schedule::cron("0 30 2 * * *").unwrap();
        assert_eq!(
            s.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T02:30:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-01-01T02:30:00Z")),
            Some(at("2026-01-02T02:30:00Z"))
        );
        let every_2s = Schedule::cron("*/2 * * * * *").unwrap();
        assert_eq!(
            every_2s.next_after(at("2026-01-01T00:00:01Z")),
            Some(at("2026-01-01T00:00:02Z"))
        );
        let err = Schedule::cron("every tuesday").unwrap_err().to_string();
        assert!(err.contains("every tuesday"), "{err}");
    }

    #[test]
    fn windows_hold_back_until_they_open() {
        let one = NaiveTime::from_hms_opt(1, 0, 0).unwrap();
        let five = NaiveTime::from_hms_opt(5, 0, 0).unwrap();
        let s = Schedule::every(Duration::from_secs(60)).within(one, five);
        assert_eq!(
            s.next_after(at("2026-01-01T12:00:00Z")),
            Some(at("2026-01-02T01:00:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-01-01T01:10:00Z")),
            Some(at("2026-01-01T01:11:00Z"))
        );
        let wraps = Schedule::every(Duration::from_secs(60)).within(five, one);
        assert_eq!(
            wraps.next_after(at("2026-01-01T00:30:00Z")),
            Some(at("2026-01-01T00:31:00Z"))
        );
        assert_eq!(
            wraps.next_after(at("2026-01-01T03:00:00Z")),
            Some(at("2026-01-01T05:00:00Z"))
        );
        assert_eq!(
            Schedule::realtime().next_after(at("2026-01-01T00:00:00Z")),
            None
        );
    }
}
