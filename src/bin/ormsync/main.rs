//! The `ormsync` command line: status, outbox, dead letters, pause and resume, verify,
//! repair and resync of a source and its destinations, without the application's types.
//!
//! Exit codes: 0 on success (for `verify`: in sync), 1 when `verify` found drift, 2 on
//! an error. Error messages and output never show a password.

mod args;
mod commands;
mod config;
mod dburl;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Logs go to stderr, warnings only unless RUST_LOG says otherwise; stdout stays for
    // the command's output (and its JSON).
    // Through the scrubber: a driver's log line quoting a password it was given loses it.
    tracing_subscriber::fmt()
        .with_writer(dburl::ScrubbedStderr::new)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = args::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return commands::error_code();
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // No message shows a URL as typed, and driver messages are redacted where they
            // are wrapped; this is the second line of defence, for one quoting what it
            // was given.
            let text = dburl::scrub_all(&e.to_string());
            eprintln!("error: {text}");
            commands::error_code()
        }
    }
}
