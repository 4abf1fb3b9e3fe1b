//! What `kiln build` shows while it works (docs/PROGRESS.md): the live view in a real
//! terminal (a tmux pane, captured while a slow RUN, a 300 MB COPY and a push to a real
//! registry run), `plain` and `rawjson` output against golden files (tests/it/golden/, times
//! and digests masked; `KILN_UPDATE_GOLDEN=1` rewrites them), and stdout carrying only the
//! digest whatever the mode.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::registry::{Mode, Registry};
use crate::support::{assert_success, busybox, require_tool, Kiln};

/// Text no view may show: Go struct dumps of history text and its `# buildkit` suffix.
const GO_SYNTAX: [&str; 3] = ["map[", "&{", "# buildkit"];

fn kiln(k: &Kiln, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.arg("--root").arg(k.root()).args(args);
    c.env_remove("SOURCE_DATE_EPOCH").env_remove("KILN_ROOT");
    c
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

// ---- the live view in a real terminal ----

/// A tmux server of its own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    /// Runs `shell` in a detached 160x50 session.
    fn start(shell: &str) -> Tmux {
        let t = Tmux {
            socket: format!("kiln-progress-{}", std::process::id()),
        };
        let out = t
            .cmd()
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "160",
                "-y",
                "50",
            ])
            .arg(shell)
            .output()
            .unwrap();
        assert_success(&out, &"tmux new-session");
        t
    }

    fn capture(&self) -> String {
        let out = self.cmd().args(["capture-pane", "-p"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// The timer of the running step whose line contains `needle`, in a capture.
fn timer(capture: &str, needle: &str) -> Option<f64> {
    capture
        .lines()
        .find(|l| l.starts_with(" => ") && l.contains(needle) && !l.starts_with(" => => "))
        .and_then(|l| l.trim_end().rsplit(' ').next())
        .and_then(|t| t.strip_suffix('s'))
        .and_then(|t| t.parse().ok())
}

#[test]
fn the_live_view_in_a_terminal_shows_running_timers_output_bytes_and_rates_and_no_go_syntax() {
    if !require_tool("tmux", &["-V"]) {
        return;
    }
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let k = Kiln::new();
    if busybox::import(&k, "busybox").is_none() {
        return;
    }
    let ctx = k.path("ctx");
    write(
        &ctx,
        "Dockerfile",
        b"FROM busybox\n\
EXPOSE 8080/tcp\n\
HEALTHCHECK --interval=30s CMD [\"true\"]\n\
RUN for i in 1 2 3 4 5 6 7 8 9 10; do \\\n    echo \"tick $i\"; sleep 0.4; done\n\
COPY big /big\n\
ENV DONE=1\n",
    );
    // 300 MB that does not compress: writing the layer takes seconds.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(ctx.join("big")).unwrap();
        for i in 0..300 {
            f.write_all(&crate::support::random_bytes(i, 1 << 20))
                .unwrap();
        }
    }
    let stdout = k.path("stdout.txt");
    let rc = k.path("rc");
    let target = format!("{}/progress/live:v1", reg.addr);
    let shell = format!(
        "'{kiln}' --root '{root}' --tls-verify=false --progress tty build '{ctx}' -t '{target}' \
         --push > '{stdout}'; echo $? > '{rc}'; sleep 600",
        kiln = env!("CARGO_BIN_EXE_kiln"),
        root = k.root().display(),
        ctx = ctx.display(),
        stdout = stdout.display(),
        rc = rc.display(),
    );
    let tmux = Tmux::start(&shell);
    let mut captures = Vec::new();
    let start = Instant::now();
    while !rc.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the build never ended"
        );
        captures.push(tmux.capture());
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_millis(300));
    let last = tmux.capture();
    captures.push(last.clone());
    drop(tmux);
    let code = std::fs::read_to_string(&rc).unwrap();
    assert_eq!(code.trim(), "0", "the build failed:\n{last}");
    let all = captures.join("\n=====\n");

    // The header counts time and steps.
    let header = regex::Regex::new(r"\[\+\] Building \d+\.\ds \(\d+/\d+\)").unwrap();
    assert!(header.is_match(&all), "no header:\n{all}");
    // The RUN step's own timer advances between captures while it runs, and its output lines
    // carry their seconds since it started.
    let run_timers: Vec<f64> = captures
        .iter()
        .filter_map(|c| timer(c, "RUN for i in"))
        .collect();
    assert!(
        run_timers.windows(2).any(|w| w[1] > w[0]),
        "the RUN step's timer never advanced: {run_timers:?}\n{all}"
    );
    let output = regex::Regex::new(r" => => # \d\.\d{3} tick \d+").unwrap();
    assert!(output.is_match(&all), "no timed output line:\n{all}");
    // The COPY's layer is written with bytes, a rate and an ETA.
    let bytes =
        regex::Regex::new(r"writing layer \d+\.\d\dMB / 314\.57MB \d+(\.\d+)?MB/s eta").unwrap();
    assert!(bytes.is_match(&all), "no layer bytes and rate:\n{all}");
    // Steps are named by their Dockerfile text; the push is part of the export.
    for needle in [
        "[internal] load build definition from Dockerfile",
        "[2/3] RUN for i in 1 2 3 4 5 6 7 8 9 10; do     echo \"tick $i\"; sleep 0.4; done",
        "[3/3] COPY big /big",
        "exporting to image",
        "pushing manifest for",
        "FINISHED",
    ] {
        assert!(
            last.contains(needle),
            "no `{needle}` in the last screen:\n{last}"
        );
    }
    for bad in GO_SYNTAX {
        assert!(!all.contains(bad), "`{bad}` shown:\n{all}");
    }
    // stdout (a file here) carries the digest only.
    let out = std::fs::read_to_string(&stdout).unwrap();
    assert!(
        out.starts_with("sha256:") && out.lines().count() == 1,
        "stdout: {out:?}"
    );
    if let Ok(dest) = std::env::var("KILN_SAVE_CAPTURE") {
        std::fs::write(dest, &all).unwrap();
    }
}

// ---- plain and rawjson against golden files ----

const GOLDEN_DOCKERFILE: &str = "FROM busybox AS build\n\
ARG GREETING=hello\n\
ENV APP=/app\n\
EXPOSE 8080/tcp\n\
HEALTHCHECK --interval=30s CMD [\"true\"]\n\
COPY a.txt \\\n    ${APP}/a.txt\n\
WORKDIR /app\n\
RUN echo \"$GREETING from RUN\" && \\\n    echo second line && printf '\\033]0;pwned\\007\\033[31mred\\033[0m\\n'\n\
\n\
FROM build\n\
COPY --from=build /app/a.txt /b.txt\n\
LABEL org.example.answer=42\n";

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/golden")
}

/// Compares `actual` with the golden file `name`, or rewrites it under `KILN_UPDATE_GOLDEN=1`.
fn golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var("KILN_UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (KILN_UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} differs (KILN_UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

/// Plain output with what depends on time or on the machine masked: output lines' and
/// statuses' seconds, DONE times and digests (the busybox base is the machine's binary).
fn mask_plain(text: &str) -> String {
    let digest = regex::Regex::new(r"sha256:[0-9a-f]{64}").unwrap();
    let output = regex::Regex::new(r"^(#\d+) \d+\.\d+ ").unwrap();
    let done = regex::Regex::new(r"DONE \d+\.\ds$").unwrap();
    let status = regex::Regex::new(r"( \d+\.\ds)? done$").unwrap();
    text.lines()
        .map(|l| {
            let l = digest.replace_all(l, "sha256:<digest>");
            let l = output.replace(&l, "$1 <seconds> ");
            let l = done.replace(&l, "DONE <seconds>");
            status.replace(&l, " done").into_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// JSON events with times, seconds and digests masked, one per line with sorted keys.
fn mask_json(text: &str) -> String {
    let digest = regex::Regex::new(r"sha256:[0-9a-f]{64}").unwrap();
    let rfc3339 = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$").unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let mut v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("`{line}` is not JSON: {e}"));
        let time = v["time"].as_str().unwrap_or_default();
        assert!(rfc3339.is_match(time), "not RFC 3339 with nanos: {line}");
        v["time"] = "<time>".into();
        for k in ["seconds", "elapsed"] {
            if v.get(k).is_some() {
                v[k] = "<seconds>".into();
            }
        }
        let s = digest
            .replace_all(&v.to_string(), "sha256:<digest>")
            .into_owned();
        out.push_str(&s);
        out.push('\n');
    }
    out
}

fn golden_build(mode: &str) -> (String, String) {
    let k = Kiln::new();
    busybox::import(&k, "busybox").expect("busybox");
    let ctx = k.path("ctx");
    write(&ctx, "Dockerfile", GOLDEN_DOCKERFILE.as_bytes());
    write(&ctx, "a.txt", b"golden\n");
    // A relative context: messages name `ctx/Dockerfile`, not the temp directory.
    let mut args = vec!["build", "ctx", "-t", "golden:1"];
    if !mode.is_empty() {
        args.splice(0..0, ["--progress", mode]);
    }
    let out = kiln(&k, &args).current_dir(k.path("")).output().unwrap();
    assert_success(&out, &mode);
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn plain_and_rawjson_output_match_the_golden_files_and_stdout_is_the_digest_only() {
    if !crate::support::need("busybox") {
        return;
    }
    let (stdout, plain) = golden_build("plain");
    let digest = stdout.trim().to_string();
    assert!(
        digest.starts_with("sha256:") && stdout.lines().count() == 1,
        "{stdout:?}"
    );
    for bad in GO_SYNTAX {
        assert!(!plain.contains(bad), "`{bad}` in:\n{plain}");
    }
    // The RUN's escape sequences are shown, not sent.
    assert!(!plain.contains('\x1b'), "escape codes passed on:\n{plain}");
    assert!(plain.contains("^[]0;pwned^G^[[31mred^[[0m"), "{plain}");
    golden("build.plain.txt", &mask_plain(&plain));

    // On a pipe, `auto` (the default) is plain, with no escape codes.
    let (auto_out, auto) = golden_build("");
    assert_eq!(auto_out, stdout, "the same build, the same digest");
    assert!(!auto.contains('\x1b'), "escape codes on a pipe");
    assert_eq!(mask_plain(&auto), mask_plain(&plain));

    for mode in ["rawjson", "json"] {
        let (out, json) = golden_build(mode);
        assert_eq!(out, stdout, "{mode}: stdout is the digest");
        golden("build.rawjson.jsonl", &mask_json(&json));
        // The last event carries the digests; the printed one among them.
        let last: serde_json::Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
        assert_eq!(last["event"], "result", "{json}");
        assert_eq!(last["digest"], digest.as_str());
        assert_eq!(last["images"][0]["manifest"], digest.as_str());
        assert!(last["images"][0]["config"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"));
    }
}
