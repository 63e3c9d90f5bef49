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
