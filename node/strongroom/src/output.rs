//! Command output: text for people, JSON (`--json`) for scripts. Results go to stdout;
//! logs and errors go to stderr.

use std::fmt::Write as _;
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

/// The error of a command that has already printed its result on stdout (e.g. the final state
/// of a request that was rejected): `main` reports it on stderr only, so that `--json` output
/// stays one document.
#[derive(Debug)]
pub(crate) struct Reported(pub(crate) String);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reported {}

/// A table for people: the header, then one line per row, columns padded to their widest cell
/// and separated by two spaces, trailing spaces trimmed.
pub(crate) fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut s = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, &w) in cells.zip(&widths) {
            let _ = write!(text, "{cell:<w$}  ");
        }
        let _ = writeln!(s, "{}", text.trim_end());
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    s
}
