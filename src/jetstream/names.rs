//! The subjects, message ids and headers a hub's stream uses, shared by the publisher and
//! the subscribers so the two cannot drift apart.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The JSON of the hub's position before a batch, on the batch's first message: a
/// subscriber that has not applied all of it missed messages.
pub(crate) const SINCE: &str = "Ormsync-Since";
/// The JSON of the hub's position after a batch, on the batch's last message.
pub(crate) const POSITION: &str = "Ormsync-Position";
/// On a change message of dead letters replayed at the hub: children apply its changes
/// whatever their position says.
pub(crate) const REPLAY: &str = "Ormsync-Replay";
/// The source's node id, on every message.
pub(crate) const SOURCE: &str = "Ormsync-Source";
/// The names of one hub's streams and subjects.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    /// The change stream: every change in the order destinations apply them.
    pub(crate) stream: String,
}

impl Names {
    pub(crate) fn new(stream: &str) -> Self {
        Names {
            stream: stream.to_string(),
        }
    }

    /// The stream of the last version of each row, and of the hub's position.
    pub(crate) fn state_stream(&self) -> String {
        format!("{}_STATE", self.stream)
    }

    /// What the change stream takes.
    pub(crate) fn change_subjects(&self) -> String {
        format!("{}.c.>", self.stream)
    }

    /// What the state stream takes.
    pub(crate) fn state_subjects(&self) -> Vec<String> {
        vec![format!("{}.s.>", self.stream), self.position_subject()]
    }

    /// A change of `table`.
    pub(crate) fn change(&self, source: &str, table: &str) -> String {
        format!("{}.c.{}.{}", self.stream, token(source), token(table))
    }

    /// A batch that moved the position without a change to publish (rolled-back ids).
    pub(crate) fn marker(&self, source: &str) -> String {
        format!("{}.c.{}", self.stream, token(source))
    }

    /// The last version of the row `key` (its JSON) of `table`.
    pub(crate) fn row(&self, source: &str, table: &str, key: &str) -> String {
        format!(
            "{}.{}",
            self.rows_of(source, table),
            URL_SAFE_NO_PAD.encode(key)
        )
    }

    /// Every row of `table`, as a subscription filter.
    pub(crate) fn table_rows(&self, source: &str, table: &str) -> String {
        format!("{}.>", self.rows_of(source, table))
    }

    fn rows_of(&self, source: &str, table: &str) -> String {
        format!("{}.s.{}.{}", self.stream, token(source), token(table))
    }

    /// Where the hub keeps its position: one subject, so the stream keeps its last only.
    pub(crate) fn position_subject(&self) -> String {
        format!("{}.pos", self.stream)
    }
}

/// `name` as one subject token: kept when it is made of letters, digits, `_` and `-` (the
/// usual table name), else `~` and its base64 (a token cannot hold `.`, `*`, `>` or
/// blanks).
fn token(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        name.to_string()
    } else {
        format!("~{}", URL_SAFE_NO_PAD.encode(name))
    }
}

/// The message id of change `id` of `source` in the change stream.
pub(crate) fn change_id(source: &str, id: i64) -> String {
    format!("{source}:{id}")
}

/// The message id of change `id`'s row version in the state stream.
pub(crate) fn row_id(source: &str, id: i64) -> String {
    format!("{source}:s{id}")
}

/// The message id of a marker that moved the position to `watermark`/`frontier`.
pub(crate) fn marker_id(source: &str, watermark: i64, frontier: i64) -> String {
    format!("{source}:m{watermark}-{frontier}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_tokens_are_encoded() {
        assert_eq!(token("order_lines"), "order_lines");
        assert_eq!(token("a.b"), format!("~{}", URL_SAFE_NO_PAD.encode("a.b")));
        assert!(!token("x y>*").contains(['.', ' ', '>', '*']));
        let n = Names::new("HUB");
        assert_eq!(n.change("src-1", "orders"), "HUB.c.src-1.orders");
        let row = n.row("src-1", "orders", r#"{"id":{"I64":1}}"#);
        assert!(row.starts_with("HUB.s.src-1.orders."));
        assert_eq!(row.matches('.').count(), 4, "{row}");
    }
}
