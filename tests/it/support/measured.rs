//! Running kiln against an attack with a deadline, a file-size limit and its peak RSS measured:
//! a regression fails the test instead of filling the disk or the memory of the machine.
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Kiln;

/// Runs `kiln` with `args` and a deadline; returns (success, stderr, peak RSS in KiB, elapsed).
/// The child runs under `prlimit --fsize` (64 MiB unless `limits` says otherwise) so that a
/// regression cannot fill the disk,
/// and under the other `prlimit` options in `limits` (`--as=…` keeps a memory hog in check).
/// The peak RSS is kiln's own `VmHWM`, polled from `/proc` until it exits: `wait4`'s
/// `ru_maxrss` would include this test process's RSS, which the child had before its `exec`
/// (the kernel keeps the old address space's high-water mark across `exec`).
pub fn kiln_measured(
    k: &Kiln,
    args: &[&str],
    deadline: Duration,
    limits: &[&str],
) -> (bool, String, i64, Duration) {
    let err = k.path("stderr.txt");
    let mut cmd = std::process::Command::new("prlimit");
    if !limits.iter().any(|l| l.starts_with("--fsize")) {
        cmd.arg(format!("--fsize={}", 64 << 20));
    }
    cmd.args(limits)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(k.root())
        .args(["--progress", "quiet"])
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("KILN_ROOT")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap());
    let start = Instant::now();
    let child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    // Reaped by `waitpid` below, after the killer thread is told it is done.
    std::mem::forget(child);
    // The killer may signal the child only while it is unreaped (a zombie at worst): the main
    // thread waits with WNOWAIT, marks it done under the lock, and only then reaps it.
    let done = Arc::new(Mutex::new(false));
    let d2 = done.clone();
    let peak = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let p2 = peak.clone();
    let killer = std::thread::spawn(move || {
        let stop = Instant::now() + deadline;
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let done = d2.lock().unwrap();
            if *done {
                return;
            }
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            {
                p2.fetch_max(kib, Ordering::SeqCst);
            }
            if Instant::now() >= stop {
                // SAFETY: our own child, not yet reaped (`done` is false).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return;
            }
        }
    });
    // SAFETY: a valid pid of our own child and a valid out-pointer.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        );
    }
    *done.lock().unwrap() = true;
    let mut status = 0;
    // SAFETY: a valid pid of our own child and a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    let elapsed = start.elapsed();
    let _ = killer.join();
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    (ok, stderr, peak.load(Ordering::SeqCst), elapsed)
}

/// Bytes the store's directory takes on disk.
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let m = e.path().symlink_metadata().unwrap();
            m.blocks() * 512 + if m.is_dir() { disk_usage(&e.path()) } else { 0 }
        })
        .sum()
}
