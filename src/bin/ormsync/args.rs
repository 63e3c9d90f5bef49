//! The command line's arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Operate ormsync replication from the command line: status, backlog, dead letters,
/// pause and resume, drift checks and repair.
///
/// Database URLs come from flags, the environment or a JSON config file (in that order of
/// precedence). Passwords are never printed: a URL is shown rebuilt, with `***` for its
/// password and without parameters named like secrets, and one that cannot be parsed is
/// not shown at all.
#[derive(Debug, Parser)]
#[command(name = "ormsync", version)]
pub struct Cli {
    #[command(flatten)]
    pub connections: Connections,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the databases are.
#[derive(Debug, Args)]
pub struct Connections {
    /// The source database's URL.
    // Environment values are hidden from `--help`: they may hold a password.
    #[arg(
        long,
        env = "ORMSYNC_SOURCE_URL",
        global = true,
        hide_env_values = true
    )]
    pub source: Option<String>,

    /// A destination as `name=URL`; repeat for each. Without any, the environment variable
    /// ORMSYNC_DEST_URLS takes them comma separated.
    // Not clap's `env`: it would split a password holding a comma, and could only report a
    // malformed entry by quoting it. `config` reads the variable.
    #[arg(long = "dest", value_name = "NAME=URL", global = true)]
    pub dests: Vec<String>,

    /// A JSON file: `{"source": URL, "destinations": {NAME: URL, …}}`.
    #[arg(long, value_name = "FILE", env = "ORMSYNC_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Per destination: paused, lease holder, watermark, backlog, oldest pending, dead letters.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Also list the subscribers of a hub's JetStream stream: the NATS server's URL.
        #[arg(
            long,
            value_name = "URL",
            env = "ORMSYNC_NATS_URL",
            hide_env_values = true,
            requires = "stream"
        )]
        nats: Option<String>,
        /// The stream whose subscribers to list (the name given to the hub's publisher).
        #[arg(long, value_name = "NAME", requires = "nats")]
        stream: Option<String>,
    },
    /// Pending changes and the oldest pending per table, per destination.
    Outbox {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Changes a destination refused for good, parked at the source.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
    /// Stop shipping to a destination, for every running replicator, until `resume`.
    Pause {
        /// The destination's name.
        destination: String,
    },
    /// Ship to a paused or halted destination again.
    Resume {
        /// The destination's name.
        destination: String,
    },
    /// Compare the replicated tables of the source and each destination row by row.
    /// Exits 0 when in sync, 1 on drift, 2 on error.
    Verify {
        #[command(flatten)]
        scope: Scope,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Also print the differing values at the source and the destination. Off by
        /// default: values may be sensitive, and this output may end up in logs.
        #[arg(long)]
        show_values: bool,
    },
    /// Each destination's replicated tables against what the source records of their
    /// entities: missing tables and columns, extra columns, types that differ, and which of
    /// them `evolve_schema` mends. Exits 0 when every table is as recorded, 1 when one
    /// differs, 2 on error.
    Schema {
        #[command(flatten)]
        scope: Scope,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// First add the missing columns `evolve_schema` would add (checking every table
        /// before altering one), then report what still differs.
        #[arg(long)]
        evolve: bool,
    },
    /// Fix the rows `verify` finds different: through the outbox (default) or directly.
    Repair {
        #[command(flatten)]
        scope: Scope,
        /// Report what would be fixed, fix nothing.
        #[arg(long)]
        dry_run: bool,
        /// Write the fixes at the destination directly instead of queuing them.
        #[arg(long)]
        direct: bool,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy tables to a destination again while replication goes on, deleting the rows the
    /// source lacks.
    ///
    /// The running replicator that ships to the destination does it, through the
    /// destination's key mapping, filters and transforms (which exist only in the
    /// application); this asks it and waits, showing the copy's progress when the
    /// destination's URL is configured. Exits 2 when no replicator runs for the destination,
    /// when the resync fails, or when it is not done within --wait. There is no --direct:
    /// the copy needs the destination's rules.
    Resync {
        /// The destination's name.
        destination: String,
        /// Only these tables (repeatable); default every table the destination receives.
        #[arg(long = "table", value_name = "TABLE")]
        tables: Vec<String>,
        /// How long to wait for the running replicator to finish, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 600)]
        wait: u64,
    },
}

/// Which destinations and tables a check covers.
#[derive(Debug, Args)]
pub struct Scope {
    /// Only this destination; default every one configured.
    #[arg(value_name = "DESTINATION")]
    pub destination: Option<String>,
    /// Only these tables (repeatable); default every replicated table.
    #[arg(long = "table", value_name = "TABLE")]
    pub tables: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum DeadLetters {
    /// List the parked changes (of one destination, or all).
    List {
        /// The destination's name; default all.
        destination: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply a destination's parked changes again, in order; those that apply leave.
    ///
    /// By default the running replicator that ships to the destination does it, with the
    /// destination's key mapping, filters and transforms; this waits for it.
    Replay {
        /// The destination's name.
        destination: String,
        /// Apply them from here instead, to the URL given with --dest: for when no
        /// replicator runs. Rules the application configures for the destination (key
        /// mapping, filters, transforms) are not applied then.
        #[arg(long)]
        direct: bool,
        /// How long to wait for the running replicator, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        wait: u64,
    },
    /// Park one change on purpose, as it is stored in the outbox, so the destination goes
    /// on without it: for a change it halts on, or one that does not even decode. It can
    /// be replayed or discarded like any other; resume a halted destination after.
    Park {
        /// The destination's name.
        destination: String,
        /// The change's outbox id.
        outbox_id: i64,
    },
    /// Drop parked changes without applying them.
    Discard {
        /// The destination's name.
        destination: String,
        /// The outbox id of a change to drop (repeatable).
        #[arg(long = "id", value_name = "OUTBOX_ID", required_unless_present = "all")]
        ids: Vec<i64>,
        /// Drop every parked change of the destination.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}
