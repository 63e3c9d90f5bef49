//! Deciding what to write when a row changed on both sides, and recording each decision
//! that is not a plain apply in `ormsync_conflicts`.

use std::cmp::Ordering;
use std::panic::{AssertUnwindSafe, catch_unwind};

use sea_orm::sea_query::{Alias, Query};
use sea_orm::{ConnectionTrait, DbErr};

use super::rules::{ConflictPolicy, Incoming, Resolution};
use crate::change::{Op, Row};
use crate::value::canonical;

/// One decision of a conflict policy other than a plain apply, as recorded in the
/// destination's `ormsync_conflicts` and carried by
/// [`AlertKind::Conflict`](crate::AlertKind::Conflict).
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    /// The table.
    pub table: String,
    /// The row's key at the source.
    pub key: Row,
    /// The outbox id of the change.
    pub change_id: i64,
    /// The policy that decided ([`ConflictPolicy::name`]).
    pub policy: String,
    /// What happened: `kept_destination` (a local edit kept), `kept_newer_destination`,
    /// `kept_local_delete` (a row deleted at the destination stays deleted), `recreated`
    /// (a row deleted at the destination was written again), `resolved` (a custom
    /// resolver wrote its own row) or `skipped` (a custom resolver kept the destination's).
    pub outcome: String,
    /// The source's version.
    pub incoming: Row,
    /// The destination's version when the change arrived.
    pub current: Option<Row>,
}

/// What to do with a change at the destination.
#[derive(Debug, PartialEq)]
pub(crate) enum Decision {
    /// Write this row.
    Write(Row),
    /// Delete the row.
    Delete,
    /// Leave the destination's row alone.
    Keep,
}

/// What a policy sees of a change and of the destination's row.
pub(crate) struct Case<'a> {
    pub(crate) table: &'a str,
    pub(crate) op: Op,
    pub(crate) key: &'a Row,
    /// The incoming row, reduced to the columns written here.
    pub(crate) incoming: &'a Row,
    /// The destination's row, same columns.
    pub(crate) current: Option<&'a Row>,
    /// Whether the key map had an entry for the row (ormsync wrote it before).
    pub(crate) known: bool,
    /// The hash of what ormsync last wrote to the row.
    pub(crate) last_written: Option<&'a str>,
}

/// Decides `case` under `policy`: the decision and, when it is not a plain apply, the
/// outcome to record. An `Err` is a resolver's failure.
pub(crate) fn decide(
    policy: &ConflictPolicy,
    case: &Case<'_>,
) -> Result<(Decision, Option<&'static str>), String> {
    let plain = match case.op {
        Op::Delete => Decision::Delete,
        _ => Decision::Write(case.incoming.clone()),
    };
    // A row ormsync wrote and the destination deleted since.
    let deleted_here = case.known && case.current.is_none();
    Ok(match policy {
        ConflictPolicy::SourceWins => match (&plain, deleted_here) {
            (Decision::Write(_), true) => (plain, Some("recreated")),
            _ => (plain, None),
        },
        ConflictPolicy::DestinationWins => {
            let edited_here = match (case.current, case.last_written) {
                (Some(current), Some(hash)) => hash_of(current) != hash,
                _ => false,
            };
            if edited_here {
                (Decision::Keep, Some("kept_destination"))
            } else if deleted_here && case.op != Op::Delete {
                (Decision::Keep, Some("kept_local_delete"))
            } else {
                (plain, None)
            }
        }
        ConflictPolicy::NewestWins { column } => match case.current {
            Some(current) if newer(current, case.incoming, column) => {
                (Decision::Keep, Some("kept_newer_destination"))
            }
            _ if deleted_here && case.op != Op::Delete => (plain, Some("recreated")),
            _ => (plain, None),
        },
        ConflictPolicy::Custom(resolver) => {
            let incoming = Incoming {
                table: case.table,
                op: case.op,
                key: case.key,
                row: case.incoming,
                current: case.current,
            };
            let resolved = catch_unwind(AssertUnwindSafe(|| (resolver.0)(&incoming)))
                .map_err(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    format!("the custom conflict resolver panicked: {what}")
                })?
                .map_err(|e| format!("the custom conflict resolver failed: {e}"))?;
            match resolved {
                Resolution::Apply => (plain, None),
                Resolution::Write(row) => (Decision::Write(row), Some("resolved")),
                Resolution::Skip => (Decision::Keep, Some("skipped")),
            }
        }
    })
}

/// Whether `current` wins over `incoming` on `column`; ties go the same way on every side.
fn newer(current: &Row, incoming: &Row, column: &str) -> bool {
    let (Some(c), Some(i)) = (current.get(column), incoming.get(column)) else {
        return false;
    };
    match (c.is_null(), i.is_null()) {
        (false, true) => return true,
        (true, _) => return false,
        _ => {}
    }
    match canonical::cmp_keys(std::slice::from_ref(c), std::slice::from_ref(i)) {
        Ordering::Greater => true,
        Ordering::Less => false,
        // Equal stamps: the greater encoding wins, which two peers agree on whichever holds
        // which version, so both end with the same row.
        Ordering::Equal => {
            canonical::encode_all(current.values()) > canonical::encode_all(incoming.values())
        }
    }
}

/// The hash of a row's values as stored in `ormsync_key_map.row_hash`.
pub(crate) fn hash_of(row: &Row) -> String {
    let hash = canonical::hash_values(row.values(), &mut Vec::new());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Records `conflict` in the destination's `ormsync_conflicts`.
pub(crate) async fn record<C: ConnectionTrait>(
    db: &C,
    source: &str,
    conflict: &Conflict,
) -> Result<(), DbErr> {
    let mut q = Query::insert();
    q.into_table(Alias::new("ormsync_conflicts"))
        .columns(
            [
                "source",
                "table_name",
                "pk",
                "policy",
                "outcome",
                "incoming",
                "current_row",
            ]
            .map(Alias::new),
        )
        .values_panic([
            source.into(),
            conflict.table.clone().into(),
            conflict.key.to_json().into(),
            conflict.policy.clone().into(),
            conflict.outcome.clone().into(),
            conflict.incoming.to_json().into(),
            conflict.current.as_ref().map(Row::to_json).into(),
        ]);
    db.execute(&q).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn row(name: &str, at: i64) -> Row {
        Row(vec![
            ("name".into(), Value::String(Some(name.into()))),
            ("at".into(), Value::BigInt(Some(at))),
        ])
    }

    fn case<'a>(incoming: &'a Row, current: Option<&'a Row>, last: Option<&'a str>) -> Case<'a> {
        Case {
            table: "t",
            op: Op::Update,
            key: incoming,
            incoming,
            current,
            known: last.is_some(),
            last_written: last,
        }
    }

    #[test]
    fn destination_wins_keeps_only_rows_edited_since_the_last_write() {
        let (ours, theirs) = (row("source", 1), row("local", 1));
        let written = hash_of(&ours);
        let policy = ConflictPolicy::DestinationWins;
        let untouched = decide(&policy, &case(&ours, Some(&ours), Some(&written))).unwrap();
        assert_eq!(untouched, (Decision::Write(ours.clone()), None));
        let edited = decide(&policy, &case(&ours, Some(&theirs), Some(&written))).unwrap();
        assert_eq!(edited, (Decision::Keep, Some("kept_destination")));
        let never_written = decide(&policy, &case(&ours, Some(&theirs), None)).unwrap();
        assert_eq!(never_written.0, Decision::Write(ours.clone()));
        let deleted_here = decide(&policy, &case(&ours, None, Some(&written))).unwrap();
        assert_eq!(deleted_here, (Decision::Keep, Some("kept_local_delete")));
    }

    #[test]
    fn newest_wins_agrees_on_both_sides_of_a_tie() {
        let policy = ConflictPolicy::newest_wins("at");
        let (a, b) = (row("a", 5), row("b", 5));
        let at_one = decide(&policy, &case(&a, Some(&b), None)).unwrap().0;
        let at_other = decide(&policy, &case(&b, Some(&a), None)).unwrap().0;
        // One side keeps its own row, the other writes it: both end with the same one.
        let winner = |d: Decision, own: &Row| match d {
            Decision::Write(r) => r,
            _ => own.clone(),
        };
        assert_eq!(winner(at_one, &b), winner(at_other, &a));
        let older = decide(&policy, &case(&row("x", 4), Some(&a), None)).unwrap();
        assert_eq!(older, (Decision::Keep, Some("kept_newer_destination")));
    }

    #[test]
    fn a_resolver_that_panics_or_fails_is_an_error_not_a_crash() {
        let panics = ConflictPolicy::custom(|_| panic!("boom"));
        let r = row("a", 1);
        let err = decide(&panics, &case(&r, None, None)).unwrap_err();
        assert!(err.contains("panicked: boom"), "{err}");
        let fails = ConflictPolicy::custom(|_| Err("no stock column".into()));
        let err = decide(&fails, &case(&r, None, None)).unwrap_err();
        assert!(err.contains("no stock column"), "{err}");
    }
}
