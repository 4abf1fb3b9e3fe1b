//! Drawing what the library reports: plain lines, JSON lines, a terminal status line, or nothing.
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use clap::ValueEnum;

use crate::oci::Digest;
use crate::progress::{BlobOutcome, Direction, Reporter};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A live status line on a terminal, plain lines otherwise.
    Auto,
    /// The live status line (buildx's `tty`); on a non-terminal, plain lines: escape codes are
    /// never written where no terminal reads them.
    Tty,
    /// One line per event on stderr.
    Plain,
    /// One JSON object per event on stderr (buildx's `rawjson`; `json` is kept as an alias).
    #[value(name = "rawjson", alias = "json")]
    Json,
    /// Warnings only.
    Quiet,
}

pub(crate) fn reporter(mode: ProgressMode) -> Arc<dyn Reporter> {
    match mode {
        ProgressMode::Auto | ProgressMode::Tty if std::io::stderr().is_terminal() => {
            Arc::new(Terminal::default())
        }
        ProgressMode::Auto | ProgressMode::Tty | ProgressMode::Plain => Arc::new(Plain),
        ProgressMode::Json => Arc::new(Json),
        ProgressMode::Quiet => Arc::new(Quiet),
    }
}

/// The line for a finished blob transfer, as `skopeo copy` prints it.
fn transfer_line(digest: &Digest, outcome: BlobOutcome) -> String {
    match outcome {
        BlobOutcome::Existed => format!("Copying blob {digest} skipped: already exists"),
        BlobOutcome::Mounted => format!("Copying blob {digest} mounted"),
        BlobOutcome::Uploaded | BlobOutcome::Downloaded => format!("Copying blob {digest} done"),
    }
}

fn outcome_name(outcome: BlobOutcome) -> &'static str {
    match outcome {
        BlobOutcome::Existed => "existed",
        BlobOutcome::Mounted => "mounted",
        BlobOutcome::Uploaded => "uploaded",
        BlobOutcome::Downloaded => "downloaded",
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
    fn on_transfer_done(&self, digest: &Digest, _size: u64, outcome: BlobOutcome) {
        eprintln!("{}", transfer_line(digest, outcome));
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
    fn on_transfer_start(&self, digest: &Digest, size: u64, direction: Direction) {
        let direction = match direction {
            Direction::Download => "download",
            Direction::Upload => "upload",
        };
        eprintln!(
            "{}",
            serde_json::json!({"event": "transfer_start", "digest": digest.to_string(), "size": size, "direction": direction})
        );
    }
    fn on_transfer_progress(&self, digest: &Digest, size: u64, done: u64) {
        eprintln!(
            "{}",
            serde_json::json!({"event": "transfer_progress", "digest": digest.to_string(), "size": size, "done": done})
        );
    }
    fn on_transfer_retry(&self, digest: &Digest, error: &str) {
        eprintln!(
            "{}",
            serde_json::json!({"event": "transfer_retry", "digest": digest.to_string(), "error": error})
        );
    }
    fn on_transfer_done(&self, digest: &Digest, size: u64, outcome: BlobOutcome) {
        eprintln!(
            "{}",
            serde_json::json!({"event": "transfer_done", "digest": digest.to_string(), "size": size, "outcome": outcome_name(outcome)})
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
    fn on_transfer_done(&self, digest: &Digest, _size: u64, outcome: BlobOutcome) {
        let mut shown = self.line.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = std::io::stderr().lock();
        if *shown {
            let _ = write!(e, "\r\x1b[2K");
            *shown = false;
        }
        let _ = writeln!(e, "{}", transfer_line(digest, outcome));
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
