//! What a failed pass leads to, decided from the error and the destination's policy
//! alone, so each case can be checked without a database.

use super::super::destination::OnPermanentError;
use crate::error::Error;

/// The worker's next step after a failed pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Try again after a backoff: the cause may pass.
    Retry,
    /// Park change `id` (from the batch in flight, else as stored in the outbox) and go
    /// on with the changes after it.
    Park(i64),
    /// Read past outbox row `id` if an operator parked it already; halt otherwise.
    HaltUnlessParked(i64),
    /// Stop shipping until a resume.
    Halt,
}

/// Decides the next step after `error`; `in_flight` tells whether a change id belongs to
/// the batch that failed (a change read past before it applied does not).
pub(super) fn decide(
    error: &Error,
    policy: OnPermanentError,
    in_flight: impl Fn(i64) -> bool,
) -> Next {
    if error.is_transient() {
        return Next::Retry;
    }
    match error.change_id() {
        None => Next::Halt,
        Some(id) if policy == OnPermanentError::DeadLetter => Next::Park(id),
        Some(id) if in_flight(id) => Next::Halt,
        // A row that does not decode or names an unknown table, parked by hand meanwhile.
        Some(id) => Next::HaltUnlessParked(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICIES: [OnPermanentError; 2] = [OnPermanentError::Halt, OnPermanentError::DeadLetter];

    fn standby() -> Error {
        Error::Standby {
            destination: "d".into(),
            holder: "other".into(),
        }
    }

    fn undecodable(id: i64) -> Error {
        Error::Decode {
            id,
            reason: "bad".into(),
        }
    }

    #[test]
    fn a_transient_error_retries_under_either_policy() {
        for policy in POLICIES {
            assert_eq!(decide(&standby(), policy, |_| true), Next::Retry);
        }
    }

    #[test]
    fn a_permanent_error_about_no_change_halts_under_either_policy() {
        let error = Error::Config("wrong".into());
        for policy in POLICIES {
            assert_eq!(decide(&error, policy, |_| true), Next::Halt);
        }
    }

    #[test]
    fn dead_letter_parks_a_change_of_the_batch() {
        let next = decide(&undecodable(7), OnPermanentError::DeadLetter, |id| id == 7);
        assert_eq!(next, Next::Park(7));
    }

    #[test]
    fn dead_letter_parks_a_stored_row() {
        let next = decide(&undecodable(7), OnPermanentError::DeadLetter, |_| false);
        assert_eq!(next, Next::Park(7));
    }

    #[test]
    fn halt_halts_on_a_change_of_the_batch() {
        let next = decide(&undecodable(7), OnPermanentError::Halt, |id| id == 7);
        assert_eq!(next, Next::Halt);
    }

    #[test]
    fn halt_reads_past_a_stored_row_only_if_parked() {
        let next = decide(&undecodable(7), OnPermanentError::Halt, |_| false);
        assert_eq!(next, Next::HaltUnlessParked(7));
    }
}
