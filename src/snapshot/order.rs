//! Foreign-key order: parents before the tables that reference them, so a copied or created
//! child always finds its parent table (and, for a copy, its parent rows) in place.

use crate::apply::plan;
use crate::change::Row;
use crate::entity::{Reference, TableSpec};

/// `specs` ordered parents first (by their [`references`](TableSpec::references)), ties
/// by name so the order is stable. A cycle of references (or a table referencing itself)
/// cannot be ordered; its tables follow the others, by name.
pub(crate) fn parents_first<'a>(
    specs: impl IntoIterator<Item = &'a TableSpec>,
) -> Vec<&'a TableSpec> {
    let mut left: Vec<&TableSpec> = specs.into_iter().collect();
    left.sort_by(|a, b| a.table.cmp(&b.table));
    let mut out: Vec<&TableSpec> = Vec::with_capacity(left.len());
    while !left.is_empty() {
        // A table is ready once every other table it references that is still left is placed.
        let ready = left.iter().position(|s| {
            s.references
                .iter()
                .all(|r| r.table == s.table || !left.iter().any(|o| o.table == r.table))
        });
        let i = ready.unwrap_or(0);
        out.push(left.remove(i));
    }
    out
}

/// `rows` of `spec`'s table, each after the rows it references when the table references
/// itself (`row` gives a row's values): batches apply one after the other, so a row's
/// parent must not come in a later one. Other tables' rows keep their order.
pub(crate) fn in_tree_order<T>(spec: &TableSpec, rows: Vec<T>, row: impl Fn(&T) -> &Row) -> Vec<T> {
    let own: Vec<&Reference> = spec
        .references
        .iter()
        .filter(|r| r.table == spec.table)
        .collect();
    if own.is_empty() || rows.len() < 2 {
        return rows;
    }
    let refs: Vec<&Row> = rows.iter().map(&row).collect();
    let order = plan::tree_positions(&refs, &own);
    let mut slots: Vec<Option<T>> = rows.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::test_spec;

    #[test]
    fn parents_come_first() {
        let specs = [
            test_spec("lines", &["orders", "products"]),
            test_spec("orders", &["customers"]),
            test_spec("customers", &[]),
            test_spec("products", &[]),
            test_spec("tree", &["tree"]),
        ];
        let order: Vec<&str> = parents_first(&specs)
            .iter()
            .map(|s| s.table.as_str())
            .collect();
        assert_eq!(order, ["customers", "orders", "products", "lines", "tree"]);
    }
}
