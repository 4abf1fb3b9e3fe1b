//! What a build reports: steps named by their Dockerfile text with BuildKit's `[STAGE i/n]`
//! labels, `[internal]` and export steps, no step for config-only instructions, CACHED only for
//! real cache hits, and a failed step's error under its step.
use std::sync::Mutex;

use crate::progress::{Reporter, Status};
use crate::sandbox::{ExitStatus, ScriptedChange, SnapshotterKind};

use super::super::{build_with, RunHost};
use super::Fixture;

/// Records what a build reports, one line per event.
#[derive(Default)]
struct Recorder(Mutex<Vec<(usize, String)>>);

impl Recorder {
    fn push(&self, id: usize, text: String) {
        self.0.lock().unwrap().push((id, text));
    }

    /// The step lines, each with how it ended (`DONE`, `CACHED`, `ERROR: …`).
    fn steps(&self) -> Vec<String> {
        let events = self.0.lock().unwrap();
        let mut out = Vec::new();
        for (id, text) in events.iter() {
            if let Some(name) = text.strip_prefix("step ") {
                let end = events
                    .iter()
                    .find(|(i, t)| i == id && !t.starts_with("step ") && !t.starts_with("status "))
                    .map_or("(running)", |(_, t)| t.as_str());
                out.push(format!("{name} => {end}"));
            }
        }
        out
    }
}

impl Reporter for Recorder {
    fn on_step(&self, id: usize, label: &str, text: &str) {
        let name = [label, text].join(" ");
        self.push(id, format!("step {}", name.trim()));
    }
    fn on_step_done(&self, id: usize, cached: bool, _seconds: f64) {
        self.push(id, if cached { "CACHED" } else { "DONE" }.into());
    }
    fn on_step_error(&self, id: usize, error: &str) {
        self.push(id, format!("ERROR: {error}"));
    }
    fn on_step_status(&self, id: usize, status: &Status<'_>) {
        self.push(id, format!("status {}", status.name));
    }
}

fn build(f: &Fixture, dockerfile: &str) -> (Recorder, bool) {
    f.dockerfile(dockerfile);
    let rec = Recorder::default();
    let host = RunHost {
        sandbox: &f.fake,
        kind: SnapshotterKind::Walk,
    };
    let ok = build_with(&f.store, &f.opts(), &rec, Some(host)).is_ok();
    (rec, ok)
}

fn script_ok(f: &Fixture) {
    f.fake.script(
        ExitStatus::Code(0),
        b"made\n",
        vec![ScriptedChange::Write {
            path: "tmp/made".into(),
            content: b"MADE".to_vec(),
            mode: 0o644,
        }],
    );
}

const DOCKERFILE: &str = "FROM base AS build\nENV A=1\nEXPOSE 8080/tcp\nHEALTHCHECK CMD [\"true\"]\nCOPY a \\\n  /a\nRUN make \\\n  all\nLABEL x=y\n\nFROM build\nCOPY --from=build /a /b\n";

#[test]
fn steps_are_reported_as_buildkit_names_them_and_cached_only_on_a_hit() {
    let f = Fixture::new();
    f.file("a", b"A");
    script_ok(&f);
    let (first, ok) = build(&f, DOCKERFILE);
    assert!(ok);
    let steps = first.steps();
    assert_eq!(
        &steps[..4],
        [
            "[internal] load build definition from Dockerfile => DONE",
            "[internal] load metadata for docker.io/library/base:latest => DONE",
            "[internal] load .dockerignore => DONE",
            "[internal] load build context => DONE",
        ]
    );
    // The base is in the store: its FROM is a hit. ENV, EXPOSE, HEALTHCHECK and LABEL make no
    // step; COPY and RUN ran on this first build.
    let from = &steps[4];
    assert!(
        from.starts_with("[build 1/3] FROM docker.io/library/base:latest@sha256:")
            && from.ends_with("=> CACHED"),
        "{from}"
    );
    assert_eq!(
        &steps[5..],
        [
            "[build 2/3] COPY a   /a => DONE",
            "[build 3/3] RUN make   all => DONE",
            "[stage-1 1/1] COPY --from=build /a /b => DONE",
            "exporting to image => DONE",
        ]
    );
    for s in &steps {
        for bad in [
            "map[",
            "&{",
            "# buildkit",
            "ENV",
            "EXPOSE",
            "LABEL",
            "HEALTHCHECK",
        ] {
            assert!(!s.contains(bad), "{s}");
        }
    }
    script_ok(&f);
    let (second, ok) = build(&f, DOCKERFILE);
    assert!(ok);
    assert_eq!(
        &second.steps()[5..8],
        [
            "[build 2/3] COPY a   /a => CACHED",
            "[build 3/3] RUN make   all => CACHED",
            "[stage-1 1/1] COPY --from=build /a /b => CACHED",
        ]
    );
}

#[test]
fn a_failed_step_reports_its_error_under_its_own_name() {
    let f = Fixture::new();
    f.fake.script(ExitStatus::Code(3), b"oops\n", vec![]);
    let (rec, ok) = build(&f, "FROM base\nRUN --network=none false\n");
    assert!(!ok);
    let steps = rec.steps();
    let last = steps.last().unwrap();
    assert!(
        last.starts_with("[2/2] RUN --network=none false => ERROR: "),
        "{steps:?}"
    );
    assert!(last.contains('3'), "the exit code: {last}");
}
