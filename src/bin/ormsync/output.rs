//! How the command line reports: JSON on stdout when asked, progress on stderr as a bar on
//! a terminal and as plain lines elsewhere (logs, CI).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use ormsync::{Error, Result};
use serde::Serialize;

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Config(format!("cannot write JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Progress through a known number of steps.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    done: u64,
    len: u64,
}

impl Progress {
    /// `len` steps of `label`.
    pub fn new(label: &str, len: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(len);
            if let Ok(style) =
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {wide_msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label.to_string());
            bar
        });
        Progress {
            bar,
            label: label.to_string(),
            done: 0,
            len,
        }
    }

    /// Starts the step `what`.
    pub fn start(&self, what: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(what.to_string()),
            None => eprintln!("{}: {what} ({}/{})…", self.label, self.done + 1, self.len),
        }
    }

    /// Ends the current step with `outcome`.
    pub fn step_done(&mut self, outcome: &str) {
        self.done += 1;
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                bar.set_message(outcome.to_string());
            }
            None => eprintln!("{}: {outcome}", self.label),
        }
    }

    /// Removes the bar (plain output needs no ending).
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
