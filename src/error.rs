//! The one error type of ormsync.

use sea_orm::DbErr;

use crate::redact::describe;

/// Everything that can go wrong in ormsync, with what a person needs to act on it.
///
/// Messages name the destination, table and column involved and say what to do. Database
/// errors are passed through [`redact`](crate::redact::redact) before they are shown, so a
/// URL with a password never reaches a log line or an error message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A database call failed; `context` says which one.
    #[error("{context}: {}", describe(.source))]
    Db {
        /// What ormsync was doing, e.g. "reading the outbox".
        context: String,
        /// The driver's error.
        #[source]
        source: DbErr,
    },

    /// A replicated table does not exist at a destination.
    #[error(
        "destination `{destination}`: table `{table}` does not exist; create it there with the \
         same columns as the source (for example with the application's migrations) and ormsync \
         will ship the pending changes, which stay in the outbox until then"
    )]
    MissingTable {
        /// The destination's name.
        destination: String,
        /// The table.
        table: String,
        /// The outbox id of the first change that needs it.
        id: i64,
    },

    /// A table to copy (snapshot or resync) is missing at the destination or lacks a
    /// shipped column.
    #[error(
        "destination `{destination}`: table `{table}` {problem}; create it there with the same \
         columns as the source (with the application's migrations, or let \
         `Destination::create_tables` do it), then resume: the copy goes on where it stopped"
    )]
    SnapshotTable {
        /// The destination's name.
        destination: String,
        /// The table.
        table: String,
        /// What is wrong with it.
        problem: String,
    },

    /// A destination table lacks a column that the changes carry.
    #[error(
        "destination `{destination}`: table `{table}` has no column `{column}`, which the source \
         ships; add the column at the destination, or let `Destination::evolve_schema` add it (or \
         mark the field `#[replicated(skip)]` to stop shipping it); the changes stay in the \
         outbox until then"
    )]
    MissingColumn {
        /// The destination's name.
        destination: String,
        /// The table.
        table: String,
        /// The missing column.
        column: String,
        /// The outbox id of the first change that carries it.
        id: i64,
    },

    /// A destination table exists with columns other than its entity's, and the destination
    /// does not evolve its schema.
    #[error(
        "destination `{destination}`: table `{table}` exists with different columns than its \
         entity (missing: {missing:?}; not in the entity: {unexpected:?}); migrate it, drop it to \
         have it created, or let `Destination::evolve_schema` add the missing columns, then \
         resume"
    )]
    SchemaMismatch {
        /// The destination's name.
        destination: String,
        /// The table.
        table: String,
        /// Shipped columns the table lacks.
        missing: Vec<String>,
        /// Columns of the table that the entity does not have.
        unexpected: Vec<String>,
    },

    /// A destination table differs from its entity in a way
    /// [`Destination::evolve_schema`](crate::Destination::evolve_schema) does not change by
    /// itself: a column of another or a narrower type, a new column that cannot be added to
    /// a table with rows, a renamed column. Nothing is altered; the destination halts with
    /// its changes in the outbox until the table is migrated by hand.
    #[error(
        "destination `{destination}`: table `{table}`, column `{column}`: {problem}; nothing \
         was altered and the changes wait in the outbox: {remedy}, then resume"
    )]
    SchemaEvolution {
        /// The destination's name.
        destination: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What differs.
        problem: String,
        /// What to do.
        remedy: String,
    },

    /// A change could not be applied at a destination.
    #[error(
        "destination `{destination}`: change {id} to `{table}` could not be applied: {}",
        describe(.source)
    )]
    Apply {
        /// The destination's name.
        destination: String,
        /// The outbox id of the change.
        id: i64,
        /// The table.
        table: String,
        /// The database's error.
        #[source]
        source: DbErr,
    },

    /// A change cannot be placed at a destination under its key or conflict rules: its
    /// parent row has not arrived, its sync key matches several rows, a conflict resolver
    /// failed. Nothing of the change is written; it is retried, halted or parked like any
    /// change the destination refuses.
    #[error(
        "destination `{destination}`: change {id} to `{table}` was not applied: {reason}; it          waits in the outbox (or in dead letters) until that is fixed"
    )]
    Unresolved {
        /// The destination's name.
        destination: String,
        /// The outbox id of the change.
        id: i64,
        /// The table.
        table: String,
        /// Why, and what to do.
        reason: String,
    },

    /// A write to a replicated entity went through a pooled connection, where the change
    /// and its outbox row could not commit together.
    #[error(
        "ormsync refused a write to `{table}` on a pooled connection: the row and its outbox \
         entry would commit separately and a crash between them would lose the change. Write \
         inside a transaction (`db.transaction(|txn| ...)` or `let txn = db.begin().await?`), or \
         call `ormsync::capture::allow_non_atomic_writes()` at startup to accept that risk"
    )]
    NonAtomicWrite {
        /// The table written.
        table: String,
    },

    /// A captured delete found no row to delete, yet its `DELETE` removed one: another
    /// transaction committed that key in between, and its delete would reach no
    /// destination.
    #[error(
        "ormsync: a row of `{table}` was committed by another transaction between this \
         transaction's locked read of it (which found none) and its DELETE, which removed it \
         without capturing the delete; roll this transaction back and retry it"
    )]
    UncapturedDelete {
        /// The table.
        table: String,
    },

    /// The source no longer holds the last change a destination took: it went back in
    /// time, and its next changes reuse outbox ids the destination has passed.
    #[error(
        "the source's outbox no longer holds change {id}, the last one this destination took \
         ({found}): the source went back in time (restored from a backup, or a replica that \
         was behind took over), and its new changes reuse ids the destination has passed, so \
         nothing more is shipped to it; resync every table of the destination \
         (`Replicator::resync` with all its tables, or `ormsync resync NAME`), then resume it"
    )]
    SourceRewound {
        /// The outbox id of the destination's anchor.
        id: i64,
        /// What the source holds at that id instead.
        found: String,
    },

    /// A [`GuardedConnection`](crate::guard::GuardedConnection) saw a replicated table
    /// written without capture.
    #[error(
        "ormsync's guard refused {what}: {tables} changed without capture, so no destination \
         would receive the change. sea-orm's bulk operations (`Entity::insert_many`, \
         `update_many`, `delete_many`, `delete_by_id`) and query-builder statements run no \
         hook: use `ormsync::bulk::{{insert_many, update_many, delete_many}}` or the \
         ActiveModel methods, inside a transaction"
    )]
    UncapturedWrite {
        /// What was refused.
        what: String,
        /// The tables, with the kind and number of uncaptured writes.
        tables: String,
    },

    /// A column holds a value ormsync cannot ship.
    #[error(
        "`{table}.{column}` holds {kind}, which ormsync cannot ship yet; mark the field \
         `#[replicated(skip)]` or store it as a supported type"
    )]
    UnsupportedValue {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What the value is: "a `Vector` value" (its type as sea-query names it), or why
        /// this one value cannot travel.
        kind: String,
    },

    /// A destination would store a value altered (rounded, cut to fewer digits, turned
    /// into NULL), so the change carrying it is refused: a permanent error, halted or
    /// parked in dead letters as the destination's `on_permanent_error` says.
    #[error(
        "`{table}.{column}`: {reason}, so ormsync refuses the change rather than store the value \
         altered. Give the destination column a type that holds it (the README's known limits \
         list what each database keeps), or keep the value from this destination \
         (`Destination::drop_column`, `skip_table`); the change waits until then"
    )]
    Unrepresentable {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What the destination would do to the value.
        reason: String,
    },

    /// A row of a replicated table could not be read as the types its entity declares.
    #[error("reading `{table}`: {reason}")]
    Read {
        /// The table.
        table: String,
        /// What did not decode, naming the column.
        reason: String,
    },

    /// An outbox row could not be decoded.
    #[error(
        "outbox row {id} could not be decoded ({reason}); it stays in the outbox. A destination \
         with OnPermanentError::DeadLetter parks it; to go on without it elsewhere, park it with \
         `ormsync dead-letters park DESTINATION {id}` and resume"
    )]
    Decode {
        /// The outbox id.
        id: i64,
        /// What was wrong.
        reason: String,
    },

    /// The outbox holds changes of a table the replicator was not told about.
    #[error(
        "destination `{destination}`: outbox row {id} is a change to `{table}`, which this \
         replicator does not know; register the entity with `.entity::<{table}::Entity>()` on the \
         builder, or exclude it with `Destination::skip_table(\"{table}\")`. The change stays in \
         the outbox until then"
    )]
    UnknownTable {
        /// The destination's name.
        destination: String,
        /// The table.
        table: String,
        /// The outbox id.
        id: i64,
    },

    /// The replicator's configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// An operator asked to park a change that cannot be parked.
    #[error("cannot park change {id} of `{destination}`: {reason}")]
    NotParkable {
        /// The destination.
        destination: String,
        /// The outbox id.
        id: i64,
        /// Why not.
        reason: String,
    },

    /// No destination of that name is configured.
    #[error("no destination named `{0}` is configured")]
    UnknownDestination(String),

    /// The source records no destination of that name: none of its replicators has
    /// shipped to one so named.
    #[error(
        "the source has no destination named `{name}` ({}); a destination appears there once \
         a replicator has shipped to it",
        known_names(.known)
    )]
    UnregisteredDestination {
        /// The name asked for.
        name: String,
        /// The destinations the source records.
        known: Vec<String>,
    },

    /// A database URL that could not be parsed. The URL is not quoted: a malformed URL may
    /// hold its password anywhere.
    #[error(
        "{input} is not a database URL that ormsync can read: {reason} (the URL is not shown, \
         as it may hold a password); expected {expected}"
    )]
    BadUrl {
        /// Where the URL came from: `--source`, `--dest NAME`, an environment variable, a
        /// config file entry.
        input: String,
        /// What is wrong with it.
        reason: String,
        /// The forms expected.
        expected: String,
    },

    /// A database could not be connected to.
    #[error("connecting to {target}: {reason}")]
    Connect {
        /// Which database, its URL shown without secrets.
        target: String,
        /// Why (the driver's reason, without its noise or any secret).
        reason: String,
    },

    /// No replicator instance runs for a destination, and the request needs one.
    #[error("no replicator is running for `{destination}`: {remedy}")]
    NoReplicator {
        /// The destination's name.
        destination: String,
        /// What to do instead.
        remedy: String,
    },

    /// A table named on the command line is not one the source replicates.
    #[error(
        "`{table}` is not a replicated table of this source; it replicates: {}",
        if .known.is_empty() { "nothing yet".to_string() } else { .known.join(", ") }
    )]
    NotReplicated {
        /// The table asked for.
        table: String,
        /// The tables the source records.
        known: Vec<String>,
    },

    /// A database given as the source lacks ormsync's tables.
    #[error(
        "the source has no `{table}` table: no replicator has started on it yet, or this is \
         not the application's database; a replicator creates ormsync's tables when it starts \
         (`ormsync::install` does too)"
    )]
    NotInstalled {
        /// The table looked for.
        table: String,
    },

    /// The source records no replicated table: no replicator of this version has started
    /// on it.
    #[error(
        "the source records no replicated table: start the application's replicator (this \
         version or later) once, so it records them in `ormsync_entities`"
    )]
    NothingRecorded,

    /// A wait for another process ran out.
    #[error("{what} did not finish within {seconds} s; {after}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        seconds: u64,
        /// What happens to it now.
        after: String,
    },

    /// A running replicator reported that a request of this process failed.
    #[error("the replicator `{holder}` could not {action}: {reason}")]
    RemoteFailed {
        /// The replicator instance.
        holder: String,
        /// What it was asked.
        action: String,
        /// Its reason.
        reason: String,
    },

    /// The destination stopped on a change it refuses for good (policy `Halt`).
    #[error(
        "destination `{destination}` is halted: {reason}. Fix the cause, then call \
         `resume(\"{destination}\")`"
    )]
    Halted {
        /// The destination's name.
        destination: String,
        /// What stopped it (redacted).
        reason: String,
    },

    /// A destination's pass failed for a reason expected to pass; its worker retries.
    #[error("destination `{destination}` failed and retries: {reason}")]
    Retrying {
        /// The destination's name.
        destination: String,
        /// What failed (redacted).
        reason: String,
    },

    /// The destination is paused or disabled.
    #[error("destination `{destination}` is {state}; resume or enable it to ship")]
    NotShipping {
        /// The destination's name.
        destination: String,
        /// `paused` or `disabled`.
        state: String,
    },

    /// Another replicator instance holds this destination's lease and ships to it.
    #[error(
        "destination `{destination}` is shipped by another instance (`{holder}`); this one \
         stands by and takes over if that one stops"
    )]
    Standby {
        /// The destination's name.
        destination: String,
        /// The instance holding the lease.
        holder: String,
    },

    /// This instance lost the destination's lease while it was writing there, and the
    /// instance that took it over has written since: the write is refused, so the two never
    /// overwrite each other's copy. This one stands by and takes over if that one stops.
    #[error(
        "destination `{destination}`: another instance took over the lease and writes there \
         now; this one stands by and takes over if that one stops"
    )]
    LeaseLost {
        /// The destination's name.
        destination: String,
    },

    /// Code ormsync calls (a driver, the query builder) panicked while shipping to a
    /// destination. The destination halts rather than the replicator stopping, and no
    /// change is lost: the batch it was on stays in the outbox.
    #[error(
        "shipping to `{destination}` panicked ({reason}); it halts with nothing lost. Fix the \
         cause (the message names it), then resume; please report it if it is ormsync's"
    )]
    Panicked {
        /// The destination's name.
        destination: String,
        /// The panic's message.
        reason: String,
    },

    /// A NATS JetStream call failed (feature `jetstream`); `transient` tells whether retrying
    /// may succeed: the server unreachable, a stream without quorum, a publish not
    /// acknowledged in time.
    #[error("stream `{stream}`: {context}: {reason}")]
    Stream {
        /// The JetStream stream.
        stream: String,
        /// What ormsync was doing, e.g. "publishing change 42".
        context: String,
        /// What the client or the server said (redacted).
        reason: String,
        /// The outbox id of the change at fault, when one is.
        id: Option<i64>,
        /// Whether retrying may succeed.
        transient: bool,
    },

    /// The replicator has shut down.
    #[error("the replicator has shut down")]
    Shutdown,
}

impl Error {
    /// Whether retrying later may succeed without anyone changing anything (a lost
    /// connection, a deadlock, a busy database), as opposed to an error that needs a person.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Db { source, .. } | Error::Apply { source, .. } => {
                crate::classify::classify(source) == crate::classify::ErrorKind::Transient
            }
            Error::Standby { .. } | Error::LeaseLost { .. } | Error::Retrying { .. } => true,
            Error::Stream { transient, .. } => *transient,
            _ => false,
        }
    }

    /// The outbox id of the one change this error is about, if it is about one.
    pub fn change_id(&self) -> Option<i64> {
        match self {
            Error::Apply { id, .. }
            | Error::Unresolved { id, .. }
            | Error::MissingTable { id, .. }
            | Error::MissingColumn { id, .. }
            | Error::UnknownTable { id, .. }
            | Error::Decode { id, .. } => Some(*id),
            Error::Stream { id, .. } => *id,
            _ => None,
        }
    }

    /// Wraps a [`DbErr`] with what ormsync was doing.
    pub(crate) fn db(context: impl Into<String>, source: DbErr) -> Self {
        Error::Db {
            context: context.into(),
            source,
        }
    }
}

impl From<Error> for DbErr {
    /// Hooks of sea-orm return `DbErr`; ormsync's message travels as `DbErr::Custom`.
    fn from(e: Error) -> Self {
        match e {
            Error::Db { source, .. } => source,
            other => DbErr::Custom(other.to_string()),
        }
    }
}

/// The destination names of a message, or that there are none.
fn known_names(known: &[String]) -> String {
    if known.is_empty() {
        "it records none".into()
    } else {
        format!("it records: {}", known.join(", "))
    }
}

/// `Result` with ormsync's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to a `Result<_, DbErr>`.
pub(crate) trait DbContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> DbContext<T> for std::result::Result<T, DbErr> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::db(what(), e))
    }
}
