//! `--progress rawjson` (and its alias `json`): one JSON object per line on stderr, each with
//! `time` (RFC 3339, UTC, nanoseconds) and `event`; the schema is docs/PROGRESS.md's and only
//! grows (new events and fields may be added; none is renamed or removed).
use std::io::Write;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::Steps;
use crate::oci::Digest;
use crate::progress::{BlobOutcome, BuildResult, Direction, Reporter, Status};

/// The schema's version, in every event (docs/PROGRESS.md).
const VERSION: u32 = 1;

#[derive(Default)]
pub(super) struct Json {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    steps: Steps,
    /// The step (its number) each blob transfer is shown under.
    transfers: std::collections::HashMap<Digest, usize>,
}

/// The current time as RFC 3339 with nanoseconds (`2026-12-06T13:50:01.123456789Z`).
fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Json {
    /// Writes `event` with its kind and the time, under the lock so lines never interleave.
    fn emit(&self, kind: &str, fields: impl FnOnce(&mut State) -> Option<Value>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut v) = fields(&mut state) else {
            return;
        };
        if let Value::Object(m) = &mut v {
            m.insert("v".into(), VERSION.into());
            m.insert("time".into(), now().into());
            m.insert("event".into(), kind.into());
        }
        let mut e = std::io::stderr().lock();
        let _ = writeln!(e, "{v}");
        let _ = e.flush();
    }
}

fn number(state: &State, id: usize) -> Option<usize> {
    state.steps.by_id.get(&id).map(|s| s.number)
}

fn outcome_name(outcome: BlobOutcome) -> &'static str {
    match outcome {
        BlobOutcome::Existed => "existed",
        BlobOutcome::Mounted => "mounted",
        BlobOutcome::Uploaded => "uploaded",
        BlobOutcome::Downloaded => "downloaded",
    }
}

impl Reporter for Json {
    fn on_warning(&self, text: &str) {
        self.emit("warning", |_| Some(json!({"text": text})));
    }

    fn on_status(&self, text: &str) {
        self.emit("status", |_| Some(json!({"text": text})));
    }

    fn on_step(&self, id: usize, label: &str, text: &str) {
        self.emit("step", |st| {
            let s = st.steps.start(id, label, text);
            Some(json!({"step": s.number, "name": s.name, "label": label, "text": text}))
        });
    }

    fn on_step_status(&self, id: usize, s: &Status<'_>) {
        self.emit("step_status", |st| {
            Some(json!({
                "step": number(st, id)?,
                "name": s.name,
                "current": s.current,
                "total": s.total,
                "bytes": s.bytes,
                "done": s.done,
            }))
        });
    }

    fn on_run_output(&self, id: usize, data: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(step) = state.steps.get(id) else {
            return;
        };
        let (n, elapsed) = (step.number, step.started.elapsed().as_secs_f64());
        let lines = step.lines.push(data);
        drop(state);
        for line in lines {
            self.emit("output", |_| {
                Some(json!({"step": n, "elapsed": elapsed, "text": line}))
            });
        }
    }

    fn on_step_done(&self, id: usize, cached: bool, seconds: f64) {
        self.emit("step_done", |st| {
            let n = number(st, id)?;
            let rest = st.steps.get(id).and_then(|s| s.lines.rest());
            st.steps.end(id);
            let mut v = json!({"step": n, "cached": cached, "seconds": seconds});
            if let Some(rest) = rest {
                v["output"] = rest.into();
            }
            Some(v)
        });
    }

    fn on_step_error(&self, id: usize, error: &str) {
        self.emit("step_error", |st| {
            let n = number(st, id)?;
            st.steps.end(id);
            Some(json!({"step": n, "error": error}))
        });
    }

    fn on_transfer_start(&self, digest: &Digest, size: u64, direction: Direction) {
        let direction = match direction {
            Direction::Download => "download",
            Direction::Upload => "upload",
        };
        self.emit("transfer_start", |st| {
            let step = st.steps.current().and_then(|id| number(st, id));
            if let Some(n) = step {
                st.transfers.insert(digest.clone(), n);
            }
            Some(json!({
                "step": step,
                "digest": digest.to_string(),
                "size": size,
                "direction": direction,
            }))
        });
    }

    fn on_transfer_progress(&self, digest: &Digest, size: u64, done: u64) {
        self.emit("transfer_progress", |st| {
            Some(json!({
                "step": st.transfers.get(digest),
                "digest": digest.to_string(),
                "size": size,
                "done": done,
            }))
        });
    }

    fn on_transfer_retry(&self, digest: &Digest, error: &str) {
        self.emit("transfer_retry", |st| {
            Some(json!({
                "step": st.transfers.get(digest),
                "digest": digest.to_string(),
                "error": error,
            }))
        });
    }

    fn on_transfer_done(&self, digest: &Digest, size: u64, outcome: BlobOutcome) {
        self.emit("transfer_done", |st| {
            Some(json!({
                "step": st.transfers.remove(digest),
                "digest": digest.to_string(),
                "size": size,
                "outcome": outcome_name(outcome),
            }))
        });
    }

    fn on_result(&self, r: &BuildResult) {
        let images: Vec<Value> = r
            .images
            .iter()
            .map(|i| {
                json!({
                    "platform": i.platform,
                    "manifest": i.manifest.to_string(),
                    "config": i.config.to_string(),
                })
            })
            .collect();
        self.emit("result", |_| {
            Some(json!({
                "digest": r.digest.to_string(),
                "index": r.index.as_ref().map(ToString::to_string),
                "images": images,
                "names": r.names,
            }))
        });
    }
}
