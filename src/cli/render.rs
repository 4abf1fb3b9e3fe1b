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
    fn on_step(&self, id: usize, label: &str, text: &str) {
        eprintln!("#{id} {label} {text}");
    }
    fn on_step_done(&self, id: usize, cached: bool, seconds: f64) {
        if cached {
            eprintln!("#{id} CACHED");
        } else {
            eprintln!("#{id} DONE {seconds:.1}s");
        }
    }
    fn on_run_output(&self, id: usize, bytes: &[u8]) {
        for line in String::from_utf8_lossy(bytes).lines() {
            eprintln!("#{id} {line}");
        }
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
    fn on_step(&self, id: usize, label: &str, text: &str) {
        eprintln!(
            "{}",
            serde_json::json!({"event": "step", "id": id, "label": label, "text": text})
        );
    }
    fn on_step_done(&self, id: usize, cached: bool, seconds: f64) {
        eprintln!(
            "{}",
            serde_json::json!({"event": "step_done", "id": id, "cached": cached, "seconds": seconds})
        );
    }
    fn on_run_output(&self, id: usize, bytes: &[u8]) {
        eprintln!(
            "{}",
            serde_json::json!({"event": "output", "id": id, "text": String::from_utf8_lossy(bytes)})
        );
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
    fn on_step(&self, id: usize, label: &str, text: &str) {
        self.on_status(&format!("#{id} {label} {text}"));
    }
    fn on_step_done(&self, id: usize, cached: bool, seconds: f64) {
        let mut shown = self.line.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = std::io::stderr().lock();
        let what = if cached {
            "CACHED".to_string()
        } else {
            format!("DONE {seconds:.1}s")
        };
        let _ = writeln!(e, " {what}");
        let _ = id;
        *shown = false;
    }
    fn on_run_output(&self, id: usize, bytes: &[u8]) {
        let mut shown = self.line.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = std::io::stderr().lock();
        if *shown {
            let _ = writeln!(e);
            *shown = false;
        }
        for line in String::from_utf8_lossy(bytes).lines() {
            let _ = writeln!(e, "#{id} {line}");
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if *self.line.lock().unwrap_or_else(|p| p.into_inner()) {
            eprintln!();
        }
    }
}
