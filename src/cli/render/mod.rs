//! Drawing what the library reports, in the modes of buildx's `--progress`: plain lines
//! (`plain`, BuildKit's format), JSON lines (`rawjson`, `json`: docs/PROGRESS.md), a live view on
//! a terminal (`tty`, drawn with `indicatif`) or warnings only (`quiet`). The only place in kiln
//! that draws; everything goes to stderr (stdout carries the digest).
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Instant;

use clap::ValueEnum;

use crate::oci::Digest;
use crate::progress::{BlobOutcome, Reporter};

mod json;
mod plain;
mod tty;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// The live view when stderr is a terminal, plain lines otherwise.
    Auto,
    /// The live view (buildx's `tty`); on a non-terminal, plain lines: escape codes are never
    /// written where no terminal reads them.
    Tty,
    /// BuildKit's plain lines on stderr (`#N [stage 2/5] RUN …`, `#N 0.512 output`, `#N DONE`).
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
            Arc::new(tty::Tty::start())
        }
        ProgressMode::Auto | ProgressMode::Tty | ProgressMode::Plain => {
            Arc::new(plain::Plain::default())
        }
        ProgressMode::Json => Arc::new(json::Json::default()),
        ProgressMode::Quiet => Arc::new(Quiet),
    }
}

/// The line for a finished blob transfer outside any build step, as `skopeo copy` prints it.
fn transfer_line(digest: &Digest, outcome: BlobOutcome) -> String {
    match outcome {
        BlobOutcome::Existed => format!("Copying blob {digest} skipped: already exists"),
        BlobOutcome::Mounted => format!("Copying blob {digest} mounted"),
        BlobOutcome::Uploaded | BlobOutcome::Downloaded => format!("Copying blob {digest} done"),
    }
}

/// A byte count as BuildKit prints it (`units.Bytes` with `%.2f`: decimal units, two decimals,
/// plain bytes without): `123B`, `1.23kB`, `12.58MB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 1000 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    format!("{v:.2}{unit}")
}

/// Seconds as BuildKit prefixes an output line with them: three decimals under 10 s, two
/// under 100 s, one after (`progressui/display.go`, `trace.update`).
pub(crate) fn log_seconds(seconds: f64) -> String {
    let prec = if seconds < 10.0 {
        3
    } else if seconds < 100.0 {
        2
    } else {
        1
    };
    format!("{seconds:.prec$}")
}

/// `text` with control characters (ESC and the rest of C0 but tab and newline, DEL, C1) in
/// caret notation (`^[`, `^?`) or as `\u{9b}`: a step's output and a Dockerfile's text are
/// untrusted, and must not move the cursor, retitle the window or write the clipboard of the
/// terminal that shows them (BuildKit's tty view runs them through a vt100 emulator; its plain
/// output passes them on). JSON events keep the bytes, escaped by JSON itself.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && c != '\t' && c != '\n';
    if !text.chars().any(bad) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !bad(c) => out.push(c),
            '\u{7f}' => out.push_str("^?"),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A writer that passes text on through [`printable`] (each write is whole characters, as
/// `write!` gives them).
struct Printable<W: Write>(W);

impl<W: Write> Write for Printable<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(printable(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Output of a step split into lines, a partial last line kept until its end arrives.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// The complete lines in `bytes` (with what was left of the previous call before them).
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            out.push(text.trim_end_matches('\r').to_string());
        }
        out
    }

    /// The partial last line, if any.
    fn rest(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        Some(text)
    }
}

/// What the renderers remember of a step.
struct Step {
    /// Its number on screen (`#N`), in the order steps appeared.
    number: usize,
    /// Its name (`[build 2/5] RUN …`).
    name: String,
    started: Instant,
    lines: Lines,
    /// When each status line was first seen (BuildKit's status `Started`).
    statuses: HashMap<String, Instant>,
}

/// The steps of a build and which one blob transfers belong to: the one that started last
/// and is still running (a pull under `FROM` or the step that reads a lazy layer, a push under
/// `exporting to image`).
#[derive(Default)]
struct Steps {
    by_id: HashMap<usize, Step>,
    running: Vec<usize>,
    next_number: usize,
    done: usize,
}

impl Steps {
    fn start(&mut self, id: usize, label: &str, text: &str) -> &Step {
        self.next_number += 1;
        let name = if label.is_empty() {
            text.to_string()
        } else {
            format!("{label} {text}")
        };
        self.running.push(id);
        self.by_id.entry(id).or_insert(Step {
            number: self.next_number,
            name,
            started: Instant::now(),
            lines: Lines::default(),
            statuses: HashMap::new(),
        })
    }

    fn get(&mut self, id: usize) -> Option<&mut Step> {
        self.by_id.get_mut(&id)
    }

    /// The step ended: it is forgotten.
    fn end(&mut self, id: usize) -> Option<Step> {
        self.running.retain(|r| *r != id);
        self.done += 1;
        self.by_id.remove(&id)
    }

    /// The step blob transfers are shown under now.
    fn current(&self) -> Option<usize> {
        self.running.last().copied()
    }
}

struct Quiet;

impl Reporter for Quiet {
    fn on_warning(&self, text: &str) {
        eprintln!("warning: {text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_printed_as_buildkit_prints_them() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(999), "999B");
        assert_eq!(bytes(1234), "1.23kB");
        assert_eq!(bytes(12_580_000), "12.58MB");
        assert_eq!(bytes(27_150_000_000), "27.15GB");
    }

    #[test]
    fn output_seconds_have_buildkits_precision() {
        assert_eq!(log_seconds(0.5123), "0.512");
        assert_eq!(log_seconds(12.345), "12.35");
        assert_eq!(log_seconds(123.45), "123.5");
    }

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(printable("plain\ttext"), "plain\ttext");
        assert_eq!(
            printable("\x1b]0;pwned\x07title \x1b[2J\r\x7f\u{9b}31m"),
            "^[]0;pwned^Gtitle ^[[2J^M^?\\u{9b}31m"
        );
        let mut out = Vec::new();
        writeln!(Printable(&mut out), "#1 a\x1bb").unwrap();
        assert_eq!(out, b"#1 a^[b\n");
    }

    #[test]
    fn output_is_split_into_lines_across_chunks() {
        let mut l = Lines::default();
        assert_eq!(l.push(b"a\nb"), vec!["a"]);
        assert_eq!(l.push(b"c\r\nd\n"), vec!["bc", "d"]);
        assert_eq!(l.rest(), None);
        assert_eq!(l.push(b"tail"), Vec::<String>::new());
        assert_eq!(l.rest().as_deref(), Some("tail"));
    }
}
