//! Drawing what the library reports: plain lines, JSON lines, a terminal status line, or nothing.
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use clap::ValueEnum;

use crate::progress::Reporter;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A live status line on a terminal, plain lines otherwise.
    Auto,
    /// One line per event on stderr.
    Plain,
    /// One JSON object per event on stderr.
    Json,
    /// Warnings only.
    Quiet,
}

pub(crate) fn reporter(mode: ProgressMode) -> Box<dyn Reporter> {
    match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() => Box::new(Terminal::default()),
        ProgressMode::Auto | ProgressMode::Plain => Box::new(Plain),
        ProgressMode::Json => Box::new(Json),
        ProgressMode::Quiet => Box::new(Quiet),
    }
}

struct Plain;

impl Reporter for Plain {
    fn on_warning(&self, text: &str) {
        eprintln!("warning: {text}");
    }
    fn on_status(&self, text: &str) {
        eprintln!("{text}");
    }
}

struct Json;

impl Reporter for Json {
    fn on_warning(&self, text: &str) {
        eprintln!("{}", serde_json::json!({"event": "warning", "text": text}));
    }
    fn on_status(&self, text: &str) {
        eprintln!("{}", serde_json::json!({"event": "status", "text": text}));
    }
}

struct Quiet;

impl Reporter for Quiet {
    fn on_warning(&self, text: &str) {
        eprintln!("warning: {text}");
    }
}

/// Rewrites one status line in place; warnings scroll above it.
#[derive(Default)]
struct Terminal {
    line: Mutex<bool>,
}

impl Reporter for Terminal {
    fn on_warning(&self, text: &str) {
        let mut shown = self.line.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = std::io::stderr().lock();
        if *shown {
            let _ = write!(e, "\r\x1b[2K");
            *shown = false;
        }
        let _ = writeln!(e, "warning: {text}");
    }
    fn on_status(&self, text: &str) {
        let mut shown = self.line.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[2K{text}");
        let _ = e.flush();
        *shown = true;
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if *self.line.lock().unwrap_or_else(|p| p.into_inner()) {
            eprintln!();
        }
    }
}
