//! `--progress plain`: BuildKit's plain lines, as `util/progress/progressui/printer.go`
//! (`textMux.printVtx`) writes them. A step's lines are grouped under its `#N name` line,
//! groups are separated by a blank line, and a step left for another while still running is
//! marked `#N ...`; output lines carry the seconds since the step started (`#N 0.512 text`);
//! status lines carry byte counts and times (`#N sha256:… 12.58MB / 27.15MB 0.5s`,
//! `#N transferring context: 2B done`), an advancing one printed again only after 5% more or
//! 5 s (printer.go's `minProgressDelta`, `minTimeDelta`); the end is `#N DONE 3.1s`,
//! `#N CACHED` or `#N ERROR: …`. Blob transfers outside any step (`kiln pull`, `kiln copy`)
//! keep `skopeo copy`'s `Copying blob … done` lines. Control characters in what is printed
//! (a step's output, the Dockerfile's text) are shown in caret notation (`^[`), never sent.
use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{bytes, log_seconds, transfer_line, Printable, Steps};
use crate::oci::Digest;
use crate::progress::{BlobOutcome, Direction, Reporter, Status};

/// An advancing status line is printed again after this share of its total…
const MIN_PROGRESS_DELTA: f64 = 0.05;
/// …or after this long.
const MIN_TIME_DELTA: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(super) struct Plain {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    steps: Steps,
    /// The step whose `#N name` line was printed last and that has not ended.
    current: Option<usize>,
    printed_any: bool,
    /// When each advancing status line was printed last, and at which count.
    last: HashMap<(usize, String), (u64, Instant)>,
    /// The step each blob transfer is shown under.
    transfers: HashMap<Digest, usize>,
}

impl State {
    /// Prints the `#N name` line of step `id` unless its lines are the last printed; returns
    /// its number.
    fn header(&mut self, e: &mut dyn Write, id: usize) -> Option<usize> {
        let number = self.steps.by_id.get(&id)?.number;
        if self.current == Some(id) {
            return Some(number);
        }
        if let Some(old) = self.current.and_then(|c| self.steps.by_id.get(&c)) {
            let _ = writeln!(e, "#{} ...", old.number);
        }
        if self.printed_any {
            let _ = writeln!(e);
        }
        self.printed_any = true;
        let name = &self.steps.by_id[&id].name;
        let _ = writeln!(e, "#{number} {name}");
        self.current = Some(id);
        Some(number)
    }

    fn status(&mut self, e: &mut dyn Write, id: usize, s: &Status<'_>) {
        let now = Instant::now();
        let key = (id, s.name.to_string());
        if let (false, Some((current, at))) = (s.done, self.last.get(&key)) {
            let delta = if s.total > 0 {
                s.current.saturating_sub(*current) as f64 / s.total as f64
            } else {
                0.0
            };
            if delta < MIN_PROGRESS_DELTA && now.duration_since(*at) < MIN_TIME_DELTA {
                return;
            }
        }
        self.last.insert(key, (s.current, now));
        let Some(number) = self.header(e, id) else {
            return;
        };
        let Some(step) = self.steps.get(id) else {
            return;
        };
        let started = *step.statuses.entry(s.name.to_string()).or_insert(now);
        let counts = match (s.bytes, s.total, s.current) {
            (true, 0, 0) if s.done => " 0B".to_string(),
            (true, 0, 0) => String::new(),
            (true, 0, c) => format!(" {}", bytes(c)),
            (true, t, c) => format!(" {} / {}", bytes(c), bytes(t)),
            (false, 0, _) => String::new(),
            (false, t, c) => format!(" {c} / {t}"),
        };
        let mut tm = String::new();
        let secs = now.duration_since(started).as_secs_f64();
        if secs > 0.01 {
            tm = format!(" {secs:.1}s");
        }
        if s.done {
            tm.push_str(" done");
        }
        let _ = writeln!(e, "#{number} {}{counts}{tm}", s.name);
    }

    fn end(&mut self, e: &mut dyn Write, id: usize, last: &str) {
        let Some(number) = self.header(e, id) else {
            return;
        };
        if let Some(step) = self.steps.get(id) {
            if let Some(rest) = step.lines.rest() {
                let secs = step.started.elapsed().as_secs_f64();
                let _ = writeln!(e, "#{number} {} {rest}", log_seconds(secs));
            }
        }
        let _ = writeln!(e, "#{number} {last}");
        self.steps.end(id);
        self.current = None;
    }
}

impl Plain {
    fn with(&self, f: impl FnOnce(&mut State, &mut dyn Write)) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = Printable(std::io::stderr().lock());
        f(&mut state, &mut e);
        let _ = e.flush();
    }
}

impl Reporter for Plain {
    fn on_warning(&self, text: &str) {
        self.with(|_, e| {
            let _ = writeln!(e, "warning: {text}");
        });
    }

    fn on_status(&self, text: &str) {
        self.with(|st, e| match st.steps.current() {
            Some(id) => {
                if let Some(n) = st.header(e, id) {
                    let _ = writeln!(e, "#{n} {text}");
                }
            }
            None => {
                let _ = writeln!(e, "{text}");
            }
        });
    }

    fn on_step(&self, id: usize, label: &str, text: &str) {
        self.with(|st, e| {
            st.steps.start(id, label, text);
            st.header(e, id);
        });
    }

    fn on_step_status(&self, id: usize, status: &Status<'_>) {
        self.with(|st, e| st.status(e, id, status));
    }

    fn on_run_output(&self, id: usize, data: &[u8]) {
        self.with(|st, e| {
            let Some(number) = st.header(e, id) else {
                return;
            };
            let Some(step) = st.steps.get(id) else {
                return;
            };
            let secs = log_seconds(step.started.elapsed().as_secs_f64());
            for line in step.lines.push(data) {
                let _ = writeln!(e, "#{number} {secs} {line}");
            }
        });
    }

    fn on_step_done(&self, id: usize, cached: bool, seconds: f64) {
        let last = if cached {
            "CACHED".to_string()
        } else {
            format!("DONE {seconds:.1}s")
        };
        self.with(|st, e| st.end(e, id, &last));
    }

    fn on_step_error(&self, id: usize, error: &str) {
        // One line, as BuildKit's; the whole error follows when the command ends.
        let first = error.lines().next().unwrap_or_default();
        self.with(|st, e| st.end(e, id, &format!("ERROR: {first}")));
    }

    fn on_transfer_start(&self, digest: &Digest, size: u64, _direction: Direction) {
        self.with(|st, e| {
            if let Some(id) = st.steps.current() {
                st.transfers.insert(digest.clone(), id);
                let name = digest.to_string();
                st.status(e, id, &Status::bytes(&name, 0, size, false));
            }
        });
    }

    fn on_transfer_progress(&self, digest: &Digest, size: u64, done: u64) {
        self.with(|st, e| {
            if let Some(id) = st.transfers.get(digest).copied() {
                let name = digest.to_string();
                st.status(e, id, &Status::bytes(&name, done, size, false));
            }
        });
    }

    fn on_transfer_done(&self, digest: &Digest, size: u64, outcome: BlobOutcome) {
        self.with(|st, e| match st.transfers.remove(digest) {
            Some(id) => {
                let name = match outcome {
                    BlobOutcome::Existed => format!("{digest} already exists"),
                    BlobOutcome::Mounted => format!("{digest} mounted"),
                    BlobOutcome::Uploaded | BlobOutcome::Downloaded => digest.to_string(),
                };
                let moved = matches!(outcome, BlobOutcome::Uploaded | BlobOutcome::Downloaded);
                let status = if moved {
                    Status::bytes(&name, size, size, true)
                } else {
                    Status::done(&name)
                };
                st.status(e, id, &status);
            }
            None => {
                let _ = writeln!(e, "{}", transfer_line(digest, outcome));
            }
        });
    }
}
