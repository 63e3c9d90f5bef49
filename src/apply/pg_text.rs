//! PostgreSQL upsert text that both forms of a batched upsert write by hand (one JSON
//! parameter in `statement`, one array per column in `unnest`): identifiers quoted, and
//! the `ON CONFLICT` clause.

/// `ON CONFLICT (key) DO UPDATE SET` every other column to the incoming value, or
/// `DO NOTHING` when every column is part of the key.
pub(crate) fn on_conflict(key: &[&str], columns: &[&str]) -> String {
    let rest: Vec<String> = columns
        .iter()
        .filter(|c| !key.contains(c))
        .map(|c| format!("{0} = EXCLUDED.{0}", quote(c)))
        .collect();
    let conflict = key.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
    if rest.is_empty() {
        format!("ON CONFLICT ({conflict}) DO NOTHING")
    } else {
        format!("ON CONFLICT ({conflict}) DO UPDATE SET {}", rest.join(", "))
    }
}

/// `ident` as a PostgreSQL quoted identifier.
pub(crate) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}
