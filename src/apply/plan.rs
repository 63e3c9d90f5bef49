//! Turning a batch of changes into as few statements as keep its meaning.

use std::collections::HashMap;

use crate::change::{Change, Op, Row};
use crate::entity::{Reference, TableSpec};
use crate::value::canonical;

/// One statement's worth of work at a destination.
#[derive(Debug, PartialEq)]
pub(crate) enum Step<'a> {
    /// Insert these rows, or update them where their key exists.
    Upsert {
        table: &'a str,
        key: Vec<&'a str>,
        rows: Vec<&'a Row>,
    },
    /// Delete the rows with these keys (a missing row is not an error).
    Delete { table: &'a str, keys: Vec<&'a Row> },
}

impl Step<'_> {
    pub(crate) fn table(&self) -> &str {
        match self {
            Step::Upsert { table, .. } | Step::Delete { table, .. } => table,
        }
    }
}

/// Groups `changes` (in id order) into runs of the same table and kind, and within a run
/// keeps only the last change of each key.
///
/// Each change carries the whole row, so within a run the last change of a key decides
/// the row's state. Runs keep the batch's order across tables and kinds, so a parent is
/// written before its child and a child deleted before its parent, as at the source.
/// Upserts of a run with different column sets (rows captured before and after a schema
/// change) go into separate steps.
pub(crate) fn plan<'a>(changes: &[&'a Change]) -> Vec<Step<'a>> {
    let mut steps: Vec<Step<'a>> = Vec::new();
    // Keys by their canonical encoding: exact, and cheaper to build and hash than JSON.
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    for change in changes {
        let upsert = change.op != Op::Delete;
        let continues = match steps.last() {
            Some(Step::Upsert { table, rows, .. }) => {
                upsert
                    && *table == change.table
                    && rows.first().is_none_or(|r| same_columns(r, &change.row))
            }
            Some(Step::Delete { table, .. }) => !upsert && *table == change.table,
            None => false,
        };
        if !continues {
            index.clear();
            steps.push(if upsert {
                Step::Upsert {
                    table: &change.table,
                    key: change.key.columns().collect(),
                    rows: Vec::new(),
                }
            } else {
                Step::Delete {
                    table: &change.table,
                    keys: Vec::new(),
                }
            });
        }
        let key = canonical::encode_all(change.key.values());
        let (list, value) = match steps.last_mut() {
            Some(Step::Upsert { rows, .. }) => (rows, &change.row),
            Some(Step::Delete { keys, .. }) => (keys, &change.key),
            None => unreachable!("a step was pushed above"),
        };
        match index.get(&key) {
            Some(&i) => list[i] = value,
            None => {
                index.insert(key, list.len());
                list.push(value);
            }
        }
    }
    steps
}

/// Orders the rows of each upsert into a table that references itself (a tree: `parent_id`
/// → `id`) so that a row comes after the row it references when both are in the step.
///
/// MySQL checks a foreign key row by row within a statement, so a child written before its
/// parent fails. That order arises even from a source that never held an orphan: a step
/// keeps each key at its first change, so a row inserted without a parent and then pointed
/// at a row inserted after it comes first; a source with deferred constraints may insert a
/// child before its parent outright; and a copy reads rows in key order, not tree order.
/// A cycle cannot be ordered; its rows come in the walk's order. `specs` gives each
/// table's references.
pub(crate) fn parents_first(steps: &mut [Step<'_>], specs: &HashMap<String, TableSpec>) {
    for step in steps {
        let Step::Upsert { table, rows, .. } = step else {
            continue;
        };
        let Some(spec) = specs.get(*table) else {
            continue;
        };
        let own: Vec<&Reference> = spec
            .references
            .iter()
            .filter(|r| r.table == spec.table)
            .collect();
        if !own.is_empty() && rows.len() > 1 {
            *rows = tree_order(rows, &own);
        }
    }
}

/// `rows` with each row after the rows of `rows` it references through `refs`: a
/// depth-first walk in the rows' order that places a row's parents before it.
pub(crate) fn tree_order<'a>(rows: &[&'a Row], refs: &[&Reference]) -> Vec<&'a Row> {
    tree_positions(rows, refs)
        .into_iter()
        .map(|i| rows[i])
        .collect()
}

/// The positions in `rows` in [`tree_order`].
pub(crate) fn tree_positions(rows: &[&Row], refs: &[&Reference]) -> Vec<usize> {
    let encode = |row: &Row, columns: &[String]| -> Option<Vec<u8>> {
        let values: Option<Vec<&crate::value::Value>> =
            columns.iter().map(|c| row.get(c)).collect();
        let values = values?;
        (!values.iter().any(|v| v.is_null())).then(|| canonical::encode_all(values))
    };
    // For each reference, the row each referenced key belongs to.
    let targets: Vec<HashMap<Vec<u8>, usize>> = refs
        .iter()
        .map(|r| {
            rows.iter()
                .enumerate()
                .filter_map(|(i, row)| encode(row, &r.to_columns).map(|k| (k, i)))
                .collect()
        })
        .collect();
    let parents = |i: usize| -> Vec<usize> {
        refs.iter()
            .zip(&targets)
            .filter_map(|(r, by_key)| by_key.get(&encode(rows[i], &r.columns)?).copied())
            .filter(|&p| p != i)
            .collect()
    };
    // 0: not seen, 1: on the walk's path, 2: placed.
    let mut state = vec![0u8; rows.len()];
    let mut out = Vec::with_capacity(rows.len());
    for start in 0..rows.len() {
        if state[start] != 0 {
            continue;
        }
        // An explicit stack: a chain of a million rows must not overflow the thread's.
        let mut path: Vec<(usize, Vec<usize>)> = vec![(start, parents(start))];
        state[start] = 1;
        while let Some((row, pending)) = path.last_mut() {
            match pending.pop() {
                // A parent on the path is a cycle: it is placed when its walk ends.
                Some(p) if state[p] == 0 => {
                    state[p] = 1;
                    let grand = parents(p);
                    path.push((p, grand));
                }
                Some(_) => {}
                None => {
                    let row = *row;
                    state[row] = 2;
                    out.push(row);
                    path.pop();
                }
            }
        }
    }
    out
}

/// One step per change, in id order: the slow path that finds which change fails.
pub(crate) fn one_by_one<'a>(changes: &[&'a Change]) -> Vec<Step<'a>> {
    changes
        .iter()
        .flat_map(|c| plan(std::slice::from_ref(c)))
        .collect()
}

/// A change waiting for a foreign key, standing for its row's waiting changes from outbox
/// id `since` on (itself and those it superseded).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Waiting<'a> {
    pub(crate) change: &'a Change,
    pub(crate) since: i64,
}

impl<'a> Waiting<'a> {
    pub(crate) fn new(change: &'a Change) -> Self {
        Waiting {
            change,
            since: change.id,
        }
    }
}

/// Drops, from `waiting` (in id order), each change that the next waiting change of its
/// row supersedes, and makes that one stand for it.
///
/// A row's waiting changes are every change of it from the first one refused on, and one
/// may be impossible to apply for good: under a deferred constraint the source may point a
/// row at a parent, point it elsewhere, then delete that first parent, so the row's first
/// version, tried after the delete, is refused forever and would hold its later versions
/// behind it. Trying only the last is safe even though the earlier ones never applied:
/// each change carries the whole row, so the last decides what the row holds once the
/// batch (one destination transaction) commits, which is what the source held at that
/// change, and the versions between were never visible outside their transaction or
/// batch. A delete supersedes anything before it. An upsert supersedes an earlier upsert
/// with the same columns only: one with other columns would lose the columns only the
/// earlier writes, and one after a delete would keep what the delete clears (columns the
/// destination has beyond the shipped ones, rows its cascades remove).
pub(crate) fn supersede(waiting: Vec<Waiting<'_>>) -> Vec<Waiting<'_>> {
    let mut out: Vec<Waiting<'_>> = Vec::with_capacity(waiting.len());
    // Each row's earliest change kept so far, walking backwards: the next one of the row.
    let mut next: HashMap<(&str, Vec<u8>), usize> = HashMap::new();
    for w in waiting.into_iter().rev() {
        let row = (
            w.change.table.as_str(),
            canonical::encode_all(w.change.key.values()),
        );
        match next.get(&row) {
            Some(&i) if supersedes(out[i].change, w.change) => out[i].since = w.since,
            _ => {
                next.insert(row, out.len());
                out.push(w);
            }
        }
    }
    out.reverse();
    out
}

/// Whether applying `later` alone leaves its row as applying `earlier` and then `later`.
fn supersedes(later: &Change, earlier: &Change) -> bool {
    later.op == Op::Delete || (earlier.op != Op::Delete && same_columns(&earlier.row, &later.row))
}

fn same_columns(a: &Row, b: &Row) -> bool {
    a.0.len() == b.0.len() && a.columns().zip(b.columns()).all(|(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn change(id: i64, table: &str, op: Op, key: i64, name: &str) -> Change {
        let key_row = Row(vec![("id".into(), Value::BigInt(Some(key)))]);
        let mut row = key_row.clone();
        row.0
            .push(("name".into(), Value::String(Some(name.into()))));
        Change {
            id,
            table: table.into(),
            op,
            key: key_row,
            row,
            origin: None,
            created_at: None,
        }
    }

    #[test]
    fn last_change_of_a_key_wins_within_a_run() {
        let cs = [
            change(1, "a", Op::Insert, 1, "x"),
            change(2, "a", Op::Update, 1, "y"),
            change(3, "a", Op::Insert, 2, "z"),
            change(4, "a", Op::Update, 1, "w"),
        ];
        let refs: Vec<&Change> = cs.iter().collect();
        let steps = plan(&refs);
        assert_eq!(steps.len(), 1);
        match &steps[0] {
            Step::Upsert { rows, key, .. } => {
                assert_eq!(key, &["id"]);
                assert_eq!(rows.len(), 2);
                assert_eq!(rows[0].get("name"), Some(&Value::String(Some("w".into()))));
                assert_eq!(rows[1].get("name"), Some(&Value::String(Some("z".into()))));
            }
            other => panic!("expected an upsert, got {other:?}"),
        }
    }

    fn node(id: i64, parent: Option<i64>) -> Row {
        Row(vec![
            ("id".into(), Value::BigInt(Some(id))),
            ("parent_id".into(), Value::BigInt(parent)),
        ])
    }

    fn ids(rows: &[&Row]) -> Vec<i64> {
        rows.iter()
            .map(|r| match r.get("id") {
                Some(Value::BigInt(Some(id))) => *id,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_tree_is_written_parents_first() {
        let tree = Reference {
            columns: vec!["parent_id".into()],
            table: "t".into(),
            to_columns: vec!["id".into()],
        };
        // 1 → 5 → 9, 3 → 1, 7 on its own, 4 → a parent not in the step.
        let rows = [
            node(1, Some(5)),
            node(3, Some(1)),
            node(4, Some(100)),
            node(5, Some(9)),
            node(7, None),
            node(9, None),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        assert_eq!(ids(&tree_order(&refs, &[&tree])), [9, 5, 1, 3, 4, 7]);
        // A cycle is placed in the walk's order; a row referencing itself is placed.
        let rows = [node(1, Some(2)), node(2, Some(1)), node(3, Some(3))];
        let refs: Vec<&Row> = rows.iter().collect();
        assert_eq!(ids(&tree_order(&refs, &[&tree])), [2, 1, 3]);
        // A long chain, deepest parent last in the input.
        let rows: Vec<Row> = (0..200_000)
            .map(|i| node(i, (i < 199_999).then_some(i + 1)))
            .collect();
        let refs: Vec<&Row> = rows.iter().collect();
        let ordered = ids(&tree_order(&refs, &[&tree]));
        assert_eq!(ordered.first(), Some(&199_999));
        assert_eq!(ordered.last(), Some(&0));
    }

    #[test]
    fn a_rows_waiting_changes_collapse_to_what_decides_it() {
        let mut narrow = change(8, "a", Op::Update, 3, "");
        narrow.row.0.pop();
        let cs = [
            change(1, "a", Op::Insert, 1, "x"),
            change(2, "a", Op::Insert, 2, "x"),
            change(3, "a", Op::Update, 1, "y"),
            change(4, "a", Op::Delete, 1, "y"),
            change(5, "a", Op::Insert, 1, "z"),
            change(6, "a", Op::Update, 1, "w"),
            change(7, "a", Op::Insert, 3, "v"),
            narrow,
            change(9, "b", Op::Update, 1, "u"),
        ];
        let waiting = supersede(cs.iter().map(Waiting::new).collect());
        let kept: Vec<(i64, i64)> = waiting.iter().map(|w| (w.change.id, w.since)).collect();
        // Row a/1: the delete stands for what came before it, the last upsert for the one
        // after the delete. Row a/3: an upsert of fewer columns keeps the one before it.
        assert_eq!(kept, [(2, 2), (4, 1), (6, 5), (7, 7), (8, 8), (9, 9)]);
    }

    #[test]
    fn kinds_and_tables_keep_their_order() {
        let cs = [
            change(1, "a", Op::Insert, 1, "x"),
            change(2, "a", Op::Delete, 1, "x"),
            change(3, "a", Op::Insert, 1, "again"),
            change(4, "b", Op::Insert, 1, "child"),
        ];
        let refs: Vec<&Change> = cs.iter().collect();
        let steps = plan(&refs);
        let shape: Vec<(&str, bool)> = steps
            .iter()
            .map(|s| (s.table(), matches!(s, Step::Upsert { .. })))
            .collect();
        assert_eq!(shape, [("a", true), ("a", false), ("a", true), ("b", true)]);
        assert_eq!(one_by_one(&refs).len(), 4);
    }
}
