//! Command output: text for people, JSON (`--json`) for scripts. Results go to stdout;
//! logs and errors go to stderr.

use std::io::Write;

/// Where and how a command reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    json: bool,
}

impl Output {
    pub(crate) fn new(json: bool) -> Self {
        Output { json }
    }

    /// Prints `json` when `--json` was given, otherwise the text `text` renders.
    pub(crate) fn report(&self, json: serde_json::Value, text: impl FnOnce() -> String) {
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (e.g. `| head`) is not worth failing the command over.
        let _ = if self.json {
            writeln!(stdout, "{json:#}")
        } else {
            write!(stdout, "{}", text())
        };
    }

    /// Reports progress of long work on stderr (stdout stays the result only).
    pub(crate) fn progress(&self, message: &str) {
        let _ = writeln!(std::io::stderr().lock(), "==> {message}");
    }

    /// Prints an error object on stdout when `--json` was given (the text goes to stderr).
    pub(crate) fn error(&self, message: &str) {
        if self.json {
            let _ = writeln!(
                std::io::stdout().lock(),
                "{:#}",
                serde_json::json!({ "error": message })
            );
        }
    }
}
