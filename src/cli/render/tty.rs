//! `--progress tty`: the live view on a terminal, drawn with `indicatif`, modelled on BuildKit's
//! `progressui` tty display (`display.go`, `ttyDisplay.print`):
//!
//! ```text
//!  => [internal] load build context                                                0.0s
//!  => => transferring context: 300.00MB done
//!  => CACHED [1/4] FROM docker.io/library/busybox:latest@sha256:51b2e30c8bad0a03   0.0s
//!  => [2/4] RUN for i in 1 2 3 4 5 6 7 8; do echo "line $i"; sleep 0.5; done       4.2s
//! [+] Building 7.2s (6/7)
//!  => [3/4] COPY big /big                                                          2.7s
//!  => => writing layer 97.52MB / 300.00MB 46.65MB/s eta 4s ███████░░░░░░░░░░░░░   2.7s
//! ```
//!
//! Finished steps scroll up as permanent lines (with their completed status lines under
//! them); below them the live part redraws: a header with the elapsed time and `(done/total)`
//! steps, one line per running step with its own timer, its last [`LOG_LINES`] output lines
//! prefixed by their seconds since the step started, and a counter with rate and ETA for every
//! byte-counting status and blob transfer in flight (pulls, pushes, layer writes). Redraws are
//! bounded to [`HZ`] a second by indicatif's draw target, and timers advance through one tick
//! a [`TICK`]; the view costs no measurable build time (docs/PROGRESS.md has the figures). A
//! failed step's last output lines are printed under it as BuildKit prints them (`------`,
//! ` > name:`, lines, `------`).
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::{bytes, log_seconds, printable, transfer_line, Lines};
use crate::oci::Digest;
use crate::progress::{BlobOutcome, BuildResult, Direction, Reporter, Status};

/// Most redraws a second.
const HZ: u8 = 10;
/// How often timers advance.
const TICK: Duration = Duration::from_millis(100);
/// Output lines shown under a running step (BuildKit's tty shows 6).
const LOG_LINES: usize = 6;
/// Output lines kept for a failed step's report.
const ERROR_LINES: usize = 10;

pub(super) struct Tty {
    shared: Arc<Shared>,
    ticker: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
}

struct Shared {
    multi: MultiProgress,
    header: ProgressBar,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    steps: HashMap<usize, Running>,
    /// Ids of running steps, in the order they started.
    running: Vec<usize>,
    started: usize,
    done: usize,
    transfers: HashMap<Digest, (ProgressBar, Option<usize>)>,
    finished: bool,
}

struct Running {
    name: String,
    start: Instant,
    bar: ProgressBar,
    logs: ProgressBar,
    /// The last bar under this step (new counters go after it).
    last: ProgressBar,
    lines: Lines,
    tail: VecDeque<String>,
    counters: HashMap<String, ProgressBar>,
    /// Completed status lines, printed under the step when it ends.
    finished: Vec<String>,
}

fn seconds_key(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{:.1}s", state.elapsed().as_secs_f64());
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("secs", seconds_key)
        // Byte counts as BuildKit prints them (`12.58MB`), not indicatif's `12.58 MB`.
        .with_key("cur", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&bytes(s.pos()));
        })
        .with_key("tot", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&bytes(s.len().unwrap_or(0)));
        })
        .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{}/s", bytes(s.per_sec() as u64));
        })
}

fn step_style() -> ProgressStyle {
    style(" => {wide_msg} {secs:>6}")
}

fn counter_style() -> ProgressStyle {
    style(" => => {prefix} {cur} / {tot} {rate} eta {eta} {wide_bar:.dim} {secs:>6}")
}

/// The terminal's width, for lines printed above the live part.
fn width() -> usize {
    usize::from(console::Term::stderr().size().1).max(40)
}

/// `left` and `right` on one line of `width` columns, `left` cut to fit.
fn align(left: &str, right: &str, width: usize) -> String {
    let room = width.saturating_sub(right.len() + 2);
    let left: String = left.chars().take(room).collect();
    let pad = room.saturating_sub(left.chars().count());
    format!("{left}{} {right}", " ".repeat(pad + 1))
}

impl Tty {
    pub(super) fn start() -> Tty {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(HZ));
        let header = multi.add(ProgressBar::new_spinner());
        header.set_style(style("[+] Building {secs} {msg}"));
        header.set_message("(0/0)");
        let shared = Arc::new(Shared {
            multi,
            header,
            state: Mutex::new(State::default()),
        });
        let (stop, stopped) = mpsc::channel::<()>();
        let s = shared.clone();
        let ticker = std::thread::spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                s.tick();
            }
        });
        Tty {
            shared,
            ticker: Mutex::new(Some((stop, ticker))),
        }
    }

    /// Ends the live part: the header's last line stays, the rest is cleared.
    fn finish(&self) {
        if let Some((stop, ticker)) = self.ticker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            drop(stop);
            let _ = ticker.join();
        }
        let s = &self.shared;
        let mut st = s.lock();
        if st.finished {
            return;
        }
        st.finished = true;
        for (_, r) in st.steps.drain() {
            r.clear();
        }
        for (_, (bar, _)) in st.transfers.drain() {
            bar.finish_and_clear();
        }
        let status = if st.running.is_empty() && st.done > 0 {
            " FINISHED"
        } else {
            ""
        };
        s.header
            .finish_with_message(format!("({}/{}){status}", st.done, st.started));
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Running {
    fn clear(self) {
        self.bar.finish_and_clear();
        self.logs.finish_and_clear();
        for (_, c) in self.counters {
            c.finish_and_clear();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tick(&self) {
        let st = self.lock();
        if st.finished {
            return;
        }
        self.header.tick();
        for r in st.steps.values() {
            r.bar.tick();
        }
    }

    fn update_header(&self, st: &State) {
        self.header
            .set_message(format!("({}/{})", st.done, st.started));
    }

    fn println(&self, text: &str) {
        let _ = self.multi.println(printable(text));
    }

    /// A step ended: its bars go, its line (and completed statuses) stay above the view.
    fn end(&self, id: usize, verdict: &str, error: Option<&str>) {
        let mut st = self.lock();
        st.running.retain(|r| *r != id);
        st.done += 1;
        self.update_header(&st);
        let Some(mut r) = st.steps.remove(&id) else {
            return;
        };
        if let Some(rest) = r.lines.rest() {
            let secs = log_seconds(r.start.elapsed().as_secs_f64());
            r.tail.push_back(format!("{secs} {rest}"));
        }
        let secs = format!("{:.1}s", r.start.elapsed().as_secs_f64());
        let w = width();
        let mut text = align(&format!(" => {verdict}{}", r.name), &secs, w);
        for f in &r.finished {
            text.push('\n');
            text.push_str(&align(&format!(" => => {f}"), "", w));
        }
        if let Some(error) = error {
            text.push_str(&format!("\n------\n > {}:\n", r.name));
            for l in &r.tail {
                text.push_str(l);
                text.push('\n');
            }
            let first = error.lines().next().unwrap_or_default();
            text.push_str(&format!("------\nERROR: {first}"));
        }
        r.clear();
        drop(st);
        self.println(&text);
    }

    fn counter(&self, st: &mut State, id: usize, name: &str, total: u64) -> Option<ProgressBar> {
        let r = st.steps.get_mut(&id)?;
        if let Some(c) = r.counters.get(name) {
            return Some(c.clone());
        }
        let c = self
            .multi
            .insert_after(&r.last, ProgressBar::new(total.max(1)));
        c.set_style(counter_style());
        c.set_prefix(printable(name).into_owned());
        r.last = c.clone();
        r.counters.insert(name.to_string(), c.clone());
        Some(c)
    }
}

impl Reporter for Tty {
    fn on_warning(&self, text: &str) {
        self.shared.println(&format!("warning: {text}"));
    }

    fn on_status(&self, text: &str) {
        self.shared.println(text);
    }

    fn on_step(&self, id: usize, label: &str, text: &str) {
        let s = &self.shared;
        let mut st = s.lock();
        if st.finished {
            return;
        }
        let name = if label.is_empty() {
            text.to_string()
        } else {
            format!("{label} {text}")
        };
        let name = printable(&name).into_owned();
        let bar = s.multi.add(ProgressBar::new_spinner());
        bar.set_style(step_style());
        bar.set_message(name.clone());
        let logs = s.multi.insert_after(&bar, ProgressBar::new_spinner());
        logs.set_style(style("{msg:.dim}"));
        st.started += 1;
        st.running.push(id);
        s.update_header(&st);
        st.steps.insert(
            id,
            Running {
                name,
                start: Instant::now(),
                last: logs.clone(),
                bar,
                logs,
                lines: Lines::default(),
                tail: VecDeque::new(),
                counters: HashMap::new(),
                finished: Vec::new(),
            },
        );
    }

    fn on_step_status(&self, id: usize, status: &Status<'_>) {
        let s = &self.shared;
        let mut st = s.lock();
        if !status.bytes || status.done {
            let Some(r) = st.steps.get_mut(&id) else {
                return;
            };
            if let Some(c) = r.counters.remove(status.name) {
                c.finish_and_clear();
            }
            if status.done {
                let counts = match (status.bytes, status.total, status.current) {
                    (true, 0, c) => format!(" {}", bytes(c)),
                    (true, t, _) => format!(" {}", bytes(t)),
                    _ => String::new(),
                };
                r.finished.push(format!("{}{counts} done", status.name));
            }
            return;
        }
        if let Some(c) = s.counter(&mut st, id, status.name, status.total) {
            if status.total > 0 {
                c.set_length(status.total);
            }
            c.set_position(status.current);
        }
    }

    fn on_run_output(&self, id: usize, data: &[u8]) {
        let mut st = self.shared.lock();
        let Some(r) = st.steps.get_mut(&id) else {
            return;
        };
        let secs = log_seconds(r.start.elapsed().as_secs_f64());
        for line in r.lines.push(data) {
            r.tail.push_back(format!("{secs} {}", printable(&line)));
            while r.tail.len() > ERROR_LINES {
                r.tail.pop_front();
            }
        }
        let shown: Vec<String> = r
            .tail
            .iter()
            .skip(r.tail.len().saturating_sub(LOG_LINES))
            .map(|l| format!(" => => # {l}"))
            .collect();
        r.logs.set_message(Cow::Owned(shown.join("\n")));
    }

    fn on_step_done(&self, id: usize, cached: bool, _seconds: f64) {
        self.shared
            .end(id, if cached { "CACHED " } else { "" }, None);
    }

    fn on_step_error(&self, id: usize, error: &str) {
        self.shared.end(id, "ERROR ", Some(error));
    }

    fn on_transfer_start(&self, digest: &Digest, size: u64, _direction: Direction) {
        let s = &self.shared;
        let mut st = s.lock();
        if st.finished {
            return;
        }
        let step = st.running.last().copied();
        let name = digest.to_string();
        let bar = match step.and_then(|id| s.counter(&mut st, id, &name, size)) {
            Some(bar) => bar,
            None => {
                let bar = s.multi.add(ProgressBar::new(size.max(1)));
                bar.set_style(counter_style());
                bar.set_prefix(name);
                bar
            }
        };
        st.transfers.insert(digest.clone(), (bar, step));
    }

    fn on_transfer_progress(&self, digest: &Digest, _size: u64, done: u64) {
        if let Some((bar, _)) = self.shared.lock().transfers.get(digest) {
            bar.set_position(done);
        }
    }

    fn on_transfer_done(&self, digest: &Digest, size: u64, outcome: BlobOutcome) {
        let s = &self.shared;
        let mut st = s.lock();
        let Some((bar, step)) = st.transfers.remove(digest) else {
            return;
        };
        let name = digest.to_string();
        let line = match outcome {
            BlobOutcome::Existed => format!("{name} already exists"),
            BlobOutcome::Mounted => format!("{name} mounted"),
            BlobOutcome::Uploaded | BlobOutcome::Downloaded => {
                format!("{name} {} done", bytes(size))
            }
        };
        match step.and_then(|id| st.steps.get_mut(&id)) {
            Some(r) => {
                r.counters.remove(&name);
                r.finished.push(line);
                bar.finish_and_clear();
            }
            None => {
                bar.finish_and_clear();
                drop(st);
                s.println(&transfer_line(digest, outcome));
            }
        }
    }

    fn on_result(&self, _result: &BuildResult) {
        // The digest goes to stdout next, on the same terminal: the live part ends first.
        self.finish();
    }
}
