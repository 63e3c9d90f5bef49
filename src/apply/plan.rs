//! Turning a batch of changes into as few statements as keep its meaning.

use std::collections::HashMap;

use crate::change::{Change, Op, Row};
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
