//! The changes as one destination takes them: rows filtered, columns dropped, values
//! transformed, before anything reaches its database.

use std::borrow::Cow;

use super::rules::{Rules, TableRules};
use crate::change::{Change, Op, Row};

/// `changes` shaped by `rules`, in order; a change the destination does not take is left out.
///
/// The filter sees the source's values, before any transform. An insert or a delete of a
/// row outside the filter is not sent, so a delete never reaches a destination that never
/// had the row; an update that moves a row out of the filter becomes a delete of it. When
/// the changes `restate` rows (see [`Batch::restates`](crate::change::Batch::restates)),
/// every change of a row outside the filter is a delete of it.
pub(crate) fn shape<'a>(
    changes: &[&'a Change],
    rules: &Rules,
    restate: bool,
) -> Vec<Cow<'a, Change>> {
    let mut out = Vec::with_capacity(changes.len());
    for &change in changes {
        let Some(table) = rules.tables.get(&change.table) else {
            out.push(Cow::Borrowed(change));
            continue;
        };
        if table.filter.is_none() && table.drop.is_empty() && table.transforms.is_empty() {
            out.push(Cow::Borrowed(change));
            continue;
        }
        let op = match &table.filter {
            Some(filter) if !filter.matches(&change.row) => match change.op {
                Op::Update => Op::Delete,
                _ if restate => Op::Delete,
                Op::Insert | Op::Delete => continue,
            },
            _ => change.op,
        };
        let mut shaped = change.clone();
        shaped.op = op;
        shaped.row = reshape(&change.row, table);
        out.push(Cow::Owned(shaped));
    }
    out
}

fn reshape(row: &Row, table: &TableRules) -> Row {
    Row(row
        .0
        .iter()
        .filter(|(c, _)| !table.drop.contains(c))
        .map(|(c, v)| {
            let v = table
                .transforms
                .iter()
                .filter(|(t, _)| t == c)
                .fold(v.clone(), |v, (_, f)| f.apply(&v));
            (c.clone(), v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::rules::{RowFilter, Transform};
    use crate::value::Value;

    fn change(id: i64, op: Op, tenant: i64, email: &str) -> Change {
        let key = Row(vec![("id".into(), Value::BigInt(Some(id)))]);
        let mut row = key.clone();
        row.0.push(("tenant".into(), Value::BigInt(Some(tenant))));
        row.0
            .push(("email".into(), Value::String(Some(email.into()))));
        row.0
            .push(("secret".into(), Value::String(Some("s".into()))));
        Change {
            id,
            table: "t".into(),
            op,
            key,
            row,
            origin: None,
            created_at: None,
        }
    }

    #[test]
    fn filters_drop_and_mask_and_moved_rows_become_deletes() {
        let mut rules = Rules::default();
        rules.tables.insert(
            "t".into(),
            TableRules {
                filter: Some(RowFilter::eq("tenant", 7i32)),
                drop: vec!["secret".into()],
                transforms: vec![("email".into(), Transform::mask_email())],
                ..TableRules::default()
            },
        );
        let cs = [
            change(1, Op::Insert, 7, "ada@x.org"),
            change(2, Op::Insert, 8, "bob@x.org"),
            change(3, Op::Update, 8, "ada@x.org"),
            change(4, Op::Delete, 8, "bob@x.org"),
            change(5, Op::Delete, 7, "cy@x.org"),
        ];
        let refs: Vec<&Change> = cs.iter().collect();
        let out = shape(&refs, &rules, false);
        let seen: Vec<(i64, Op)> = out.iter().map(|c| (c.id, c.op)).collect();
        assert_eq!(seen, [(1, Op::Insert), (3, Op::Delete), (5, Op::Delete)]);
        // Restated, a row outside the filter goes, however it left it.
        let restated = shape(&refs, &rules, true);
        let seen: Vec<(i64, Op)> = restated.iter().map(|c| (c.id, c.op)).collect();
        assert_eq!(
            seen,
            [
                (1, Op::Insert),
                (2, Op::Delete),
                (3, Op::Delete),
                (4, Op::Delete),
                (5, Op::Delete)
            ]
        );
        assert_eq!(out[0].row.get("secret"), None);
        assert_eq!(
            out[0].row.get("email"),
            Some(&Value::String(Some("a***@x.org".into())))
        );
    }
}
