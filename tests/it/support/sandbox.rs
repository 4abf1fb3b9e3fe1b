//! Harness of the sandbox tests: a sandbox (or a reason to skip), a busybox world per
//! scenario, and shortcuts to run shell snippets.
use super::rootfs::{busybox_available, make_busybox_rootfs};
use kiln::sandbox::{
    probe, ExitStatus, RunOutcome, RunSpec, Sandbox, SandboxOptions, Snapshot, SnapshotterKind,
    Stream, UserNsSandbox,
};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The kiln binary used as the helper: the copy made for the unprivileged run, else the build's.
pub fn kiln_exe() -> PathBuf {
    std::env::var_os("KILN_IT_KILN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kiln")))
}

/// `pasta` (package passt), for steps with the default network: on PATH, else in /usr/bin (the
/// single-id run empties PATH so that no newuidmap is found); `None` lets the sandbox report it
/// missing.
pub fn pasta() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("pasta"))
        .find(|p| p.is_file())
}

/// Skips (after saying why), or fails when `CI=true`.
pub fn skip_or_fail(why: &str) -> Option<UserNsSandbox> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and the sandbox cannot run: {why}");
    }
    eprintln!("skipping: {why}");
    None
}

/// A sandbox, or `None` (after saying why) when this machine cannot run one.
pub fn sandbox() -> Option<UserNsSandbox> {
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    let sb = UserNsSandbox::new(SandboxOptions {
        helper_exe: kiln_exe(),
        pasta: pasta(),
        ..SandboxOptions::default()
    });
    let probed = PROBED.get_or_init(|| {
        if !busybox_available() {
            return Err("busybox-static is not installed (/bin/busybox)".into());
        }
        probe(&sb, &std::env::temp_dir())
            .map(|_| ())
            .map_err(|e| format!("user namespaces unavailable: {e}"))
    });
    match probed {
        Ok(()) => Some(sb),
        Err(why) => skip_or_fail(why),
    }
}

/// One scenario's world: a busybox base and a snapshot over it.
pub struct World {
    _tmp: tempfile::TempDir,
    /// The busybox base: the overlay's lower directory, or the walk's root filesystem.
    pub base: PathBuf,
    /// The snapshot steps run on.
    pub snapshot: Snapshot,
    /// A temporary directory for the scenario's own files (removed at the end).
    pub tmp: PathBuf,
}

impl World {
    /// A busybox base, extended by `extra`, and a snapshot of `kind` over it.
    pub fn new(kind: SnapshotterKind, extra: impl FnOnce(&Path)) -> World {
        let tmp = tempfile::Builder::new()
            .prefix("kiln-it-")
            .tempdir()
            .unwrap();
        let base = tmp.path().join("base");
        make_busybox_rootfs(&base).unwrap();
        extra(&base);
        let snapshot = match kind {
            SnapshotterKind::Overlay => {
                Snapshot::overlay(vec![base.clone()], &tmp.path().join("scratch")).unwrap()
            }
            SnapshotterKind::Walk => Snapshot::walk(base.clone()),
        };
        let path = tmp.path().to_owned();
        World {
            _tmp: tmp,
            base,
            snapshot,
            tmp: path,
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        drop(RemoveOnDrop(self.tmp.clone()));
    }
}

/// Removes a directory tree through the sandbox when dropped: a rootless step can leave files
/// only root in the namespace may delete.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(sb) = sandbox() {
            let _ = sb.remove_tree(&self.0);
        }
    }
}

/// Which identity mode the sandbox is in, for expectations.
pub fn single(sb: &UserNsSandbox) -> bool {
    sb.id_mapping().is_single()
}

/// A shell-form step: `/bin/sh -c script`.
pub fn sh(script: &str) -> RunSpec {
    RunSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..RunSpec::default()
    }
}

/// Runs `spec`, collecting stdout and stderr; panics if the sandbox fails.
pub fn run(sb: &UserNsSandbox, world: &World, spec: &RunSpec) -> (RunOutcome, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = sb
        .run(&world.snapshot, spec, &mut |s, b| match s {
            Stream::Stdout => out.extend_from_slice(b),
            Stream::Stderr => err.extend_from_slice(b),
        })
        .unwrap_or_else(|e| panic!("run {:?} failed: {e}", spec.argv));
    (
        outcome,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Runs `script` and asserts it succeeded; returns the outcome and stdout.
pub fn ok(sb: &UserNsSandbox, world: &World, script: &str) -> (RunOutcome, String) {
    let (o, out, err) = run(sb, world, &sh(script));
    assert_eq!(
        o.status,
        ExitStatus::Code(0),
        "`{script}` failed: stdout {out:?} stderr {err:?}"
    );
    (o, out)
}

/// How many processes have `marker` in their command line.
pub fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c.windows(marker.len()).any(|w| w == marker.as_bytes()))
        })
        .count()
}

/// Starts the `sandbox::long_step_inner` test in its own process group, waits for its step, signals it with
/// `signal` (to the whole group when `group`, as a terminal's Ctrl-C does), and checks that
/// every process of the step is gone soon after.
pub fn signal_kiln_and_check_the_step_dies(signal: i32, group: bool, marker: &str) {
    if sandbox().is_none() {
        return;
    }
    // The killed run cannot clean up after itself: give it a temporary directory of ours.
    let tmp = tempfile::Builder::new()
        .prefix("kiln-it-kill-")
        .tempdir()
        .unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "sandbox::long_step_inner",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("KILN_IT_MARKER", marker)
        .env("TMPDIR", tmp.path())
        .env("KILN_IT_KILN", kiln_exe())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_with(&format!("sleep\0{marker}")) < 2 {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child.id() as i32;
    // SAFETY: kill has no memory effects; the target is our child or its process group.
    unsafe { libc::kill(if group { -pid } else { pid }, signal) };
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&format!("sleep\0{marker}")) > 0 {
        assert!(
            Instant::now() < deadline,
            "the step's processes outlived kiln"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
