//! Hardening (issue #9): kiln killed with SIGKILL at random moments, four builds and repeated
//! `store gc` on one store, a build into a full filesystem, secrets that must reach no file kiln
//! writes, and the isolation of RUN steps (home, store, host paths, file descriptors, processes).
//!
//! The crash test is reproducible: it prints its seed; `KILN_CRASH_SEED=N` replays it.
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::support::registry::{Mode, Registry};
use crate::support::runas::{blob_views, contains, layer_entries, skip, KilnAs, Who};
use crate::support::sandbox::processes_with;
use crate::support::{assert_success, busybox, check_layout_blobs, is_root, noise, Kiln};

// ---- shared helpers ----

/// xorshift64*: a small seeded generator, so a failing sequence of kills can be replayed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A uniformly spread delay in `[0, max)`.
    fn delay(&mut self, max: Duration) -> Duration {
        let us = max.as_micros().max(1) as u64;
        Duration::from_micros(self.next() % us)
    }
}

fn crash_seed() -> u64 {
    std::env::var("KILN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6b69_6c6e_0009)
}

fn text(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// `kiln store fsck` must exit 0; `when` says after what.
fn fsck_clean(k: &Kiln, when: &str) {
    let out = k.cmd().args(["store", "fsck"]).output().unwrap();
    assert!(
        out.status.success(),
        "fsck after {when} failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Starts `cmd` and SIGKILLs it after `delay` unless it ended first. Returns `None` when the
/// kill landed, else how long the process ran (it must have succeeded).
fn kill_after(mut cmd: Command, delay: Duration, log: &Path, what: &str) -> Option<Duration> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = start + delay;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(
                st.success(),
                "{what} failed before it was killed ({st}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            return Some(start.elapsed());
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(2)));
    }
    child.kill().unwrap(); // SIGKILL
    let st = child.wait().unwrap();
    if st.signal() == Some(libc::SIGKILL) {
        return None;
    }
    assert!(
        st.success(),
        "{what} failed ({st}):\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    Some(start.elapsed())
}

/// Kills `op` `want` times at random moments: each delay is a seeded random fraction of 1.1
/// times the operation's duration, measured first and updated by every run that ended before
/// its kill (the machine's load changes). `run` starts the command for attempt `i`; `after`
/// checks the store after each attempt.
struct KillPlan<'a> {
    op: &'static str,
    want: usize,
    duration: Duration,
    log: &'a Path,
}

impl KillPlan<'_> {
    fn run(
        self,
        rng: &mut Rng,
        landed: &mut BTreeMap<&'static str, usize>,
        mut start: impl FnMut(usize) -> Command,
        mut after: impl FnMut(usize, Duration),
    ) {
        let mut duration = self.duration;
        let mut kills = 0;
        for i in 1.. {
            assert!(
                i <= self.want * 4,
                "only {kills} of {i} kills landed during {}",
                self.op
            );
            let delay = rng.delay(duration.mul_f64(1.1));
            match kill_after(start(i), delay, self.log, self.op) {
                None => kills += 1,
                Some(took) => duration = (duration + took) / 2,
            }
            after(i, delay);
            if kills == self.want {
                break;
            }
        }
        landed.insert(self.op, kills);
    }
}

/// The median wall time of `n` runs of `f`.
fn median_time(n: usize, mut f: impl FnMut(usize)) -> Duration {
    let mut v: Vec<Duration> = (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed()
        })
        .collect();
    v.sort();
    v[n / 2]
}

/// Runs `cmd` to its end, failing the test if it takes longer than `limit` (a lock that a
/// killed process left behind would make it wait forever).
fn output_within(mut cmd: Command, limit: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {limit:?}: is a lock of a killed kiln still held?"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Every regular file below `dir`.
fn files_below(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            files_below(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

/// What a store holds besides its documented layout: entries of `tmp/` and of the base
/// snapshots' `snapshots-v1/tmp/`, and `.tmp-*` files (an interrupted atomic write) anywhere.
/// Empty after `store gc` and after a failed build.
fn leftovers(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = ["tmp", "snapshots-v1/tmp"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(root.join(d))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| format!("{d}/{}", e.file_name().to_string_lossy()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect();
    let mut files = Vec::new();
    files_below(root, &mut files);
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy();
        if name.starts_with(".tmp-") {
            out.push(f.strip_prefix(root).unwrap().display().to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Mount points below `dir` in this process's mount namespace (the host's).
fn mounts_below(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

fn digest_of(stdout: &str) -> String {
    let d = stdout.trim().to_string();
    assert!(
        d.starts_with("sha256:") && d.len() == 71,
        "not a digest: {d:?}"
    );
    d
}

fn write_files(dir: &Path, files: &[(&str, Vec<u8>)]) {
    for (rel, bytes) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

/// The content of `path` in the last layer (of `layers`, base first) that has it.
fn file_in_layers(layers: &[Vec<u8>], path: &str) -> Option<Vec<u8>> {
    let mut found = None;
    for l in layers {
        let raw = blob_views(l).pop().unwrap();
        let mut a = tar::Archive::new(&raw[..]);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let p = String::from_utf8_lossy(&e.path_bytes())
                .trim_start_matches("./")
                .to_string();
            if p == path {
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                found = Some(v);
            }
        }
    }
    found
}

/// The layer blobs of the image `name` in `k`'s store, base first.
fn store_layers(root: &Path, inspect: &serde_json::Value) -> Vec<Vec<u8>> {
    inspect["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let d = l["digest"].as_str().unwrap();
            std::fs::read(root.join("blobs/sha256").join(&d[7..])).unwrap()
        })
        .collect()
}

// ---- crashes ----

const CRASH_DOCKERFILE: &str = "FROM busybox\n\
COPY data/ /data/\n\
RUN cat /data/* | sha256sum > /data.sha && mkdir -p /made && echo made > /made/x\n\
COPY small.txt /small.txt\n";

/// SIGKILL at ≥ 50 random moments during `build`, `pull`, `push` and `store gc`: after every
/// kill fsck is clean; at the end no lock, mount, process or temp file of the killed runs is
/// left, and the next build gives the digest of a clean build in a fresh store.
#[test]
fn sigkill_at_random_moments_leaves_a_consistent_store() {
    let started = Instant::now();
    let k = Kiln::new();
    let Some(archive) = busybox::import(&k, "busybox") else {
        return;
    };
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let seed = crash_seed();
    eprintln!("crash test seed {seed} (KILN_CRASH_SEED={seed} replays it)");
    let mut rng = Rng::new(seed);
    let ctx = k.path("crash-ctx");
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        ("Dockerfile", CRASH_DOCKERFILE.as_bytes().to_vec()),
        ("small.txt", b"small\n".to_vec()),
    ];
    let names = ["data/a.bin", "data/b.bin", "data/c.bin", "data/d.bin"];
    for (i, n) in names.iter().enumerate() {
        files.push((n, noise(100 + i as u64, 768 << 10)));
    }
    write_files(&ctx, &files);
    let ctx_s = ctx.to_str().unwrap();

    // The reference: a clean build in a fresh store from the same base.
    let reference = {
        let r = Kiln::new();
        r.ok(&[
            "copy",
            &format!("oci-archive:{}", archive.display()),
            "busybox",
        ]);
        digest_of(&r.ok(&["build", ctx_s, "-t", "crash"]))
    };
    let build_args = ["build", ctx_s, "-t", "crash", "--no-cache"];
    let d_build = median_time(3, |_| assert_eq!(digest_of(&k.ok(&build_args)), reference));
    assert!(k.ok(&["inspect", "crash"]).contains(&reference));

    let pushed = format!("{}/crash/app:1", reg.addr);
    let d_push = median_time(3, |i| {
        k.ok(&["push", "crash", &format!("{}/crash/measure{i}:1", reg.addr)]);
    });
    k.ok(&["push", "crash", &pushed]);

    let d_pull = median_time(3, |_| {
        let p = Kiln::new();
        assert!(p.ok(&["pull", &pushed]).trim().ends_with(&reference));
    });

    // gc needs something to collect: `kiln layer` writes a blob that nothing names.
    let garbage = |i: u64| {
        let g = k.path(&format!("garbage/{i}"));
        write_files(
            &g,
            &[
                ("g1", noise(1000 + i, 200 << 10)),
                ("g2", noise(5000 + i, 64 << 10)),
            ],
        );
        k.ok(&["layer", g.to_str().unwrap()]);
        let _ = std::fs::remove_dir_all(&g);
    };
    let d_gc = median_time(3, |i| {
        garbage(100 + i as u64);
        k.ok(&["store", "gc"]);
    });
    eprintln!("durations: build {d_build:?}, push {d_push:?}, pull {d_pull:?}, gc {d_gc:?}");

    let log = k.path("killed.err");
    let mut landed: BTreeMap<&str, usize> = BTreeMap::new();
    let plan = |op, want, duration| KillPlan {
        op,
        want,
        duration,
        log: &log,
    };
    // build: 20 kills.
    plan("kiln build", 20, d_build).run(
        &mut rng,
        &mut landed,
        |_| {
            let mut c = k.cmd();
            c.args(build_args);
            c
        },
        |_, delay| fsck_clean(&k, &format!("a build killed at {delay:?}")),
    );
    // pull: 10 kills, each into a fresh store, which a second pull then completes.
    let stores: std::cell::RefCell<Vec<Kiln>> = Default::default();
    plan("kiln pull", 10, d_pull).run(
        &mut rng,
        &mut landed,
        |_| {
            let p = Kiln::new();
            let mut c = p.cmd();
            c.args(["pull", &pushed]);
            stores.borrow_mut().push(p);
            c
        },
        |_, delay| {
            let p = stores.borrow_mut().pop().unwrap();
            fsck_clean(&p, &format!("a pull killed at {delay:?}"));
            assert!(p.ok(&["pull", &pushed]).trim().ends_with(&reference));
            fsck_clean(&p, "a pull after a killed pull");
        },
    );
    // push: 10 kills, each to a new repository, which a second push then completes.
    let dest = |i: usize| format!("{}/crash/push{i}:1", reg.addr);
    plan("kiln push", 10, d_push).run(
        &mut rng,
        &mut landed,
        |i| {
            let mut c = k.cmd();
            c.args(["push", "crash", &dest(i)]);
            c
        },
        |i, delay| {
            fsck_clean(&k, &format!("a push killed at {delay:?}"));
            k.ok(&["push", "crash", &dest(i)]);
            let v: serde_json::Value =
                serde_json::from_str(&k.ok(&["inspect", &format!("docker://{}", dest(i))]))
                    .unwrap();
            assert_eq!(v["digest"], reference.as_str(), "{}", dest(i));
        },
    );
    // gc: 12 kills, each with fresh garbage to collect.
    plan("kiln store gc", 12, d_gc).run(
        &mut rng,
        &mut landed,
        |i| {
            garbage(i as u64);
            let mut c = k.cmd();
            c.args(["store", "gc"]);
            c
        },
        |_, delay| fsck_clean(&k, &format!("a gc killed at {delay:?}")),
    );
    let total: usize = landed.values().sum();
    assert!(total >= 50, "only {total} kills landed: {landed:?}");
    eprintln!("kills landed: {landed:?}");

    // Nothing of the killed processes is left: no process (the RUN helper dies with kiln), no
    // mount, no lock (gc takes the store lock exclusively and must get it at once), and after
    // gc no temp file or scratch directory.
    let root = k.root();
    let marker = root.to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&marker) > 0 {
        assert!(
            Instant::now() < deadline,
            "processes of killed kilns are still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(mounts_below(k.dir.path()), Vec::<String>::new());
    let mut c = k.cmd();
    c.args(["store", "gc"]);
    let out = output_within(
        c,
        Duration::from_secs(60),
        "`kiln store gc` after the kills",
    );
    assert_success(&out, &"store gc after the kills");
    assert_eq!(
        leftovers(&root),
        Vec::<String>::new(),
        "gc left temp files of killed processes"
    );
    fsck_clean(&k, "the final gc");
    // The next builds, from the cache the killed builds filled and without it, are the
    // reference image.
    assert_eq!(
        digest_of(&k.ok(&["build", ctx_s, "-t", "crash"])),
        reference
    );
    assert_eq!(digest_of(&k.ok(&build_args)), reference);
    fsck_clean(&k, "the final builds");
    eprintln!("crash test took {:?}", started.elapsed());
}

/// Pids of processes whose command line has every one of `parts`.
fn pids_with(parts: &[&[u8]]) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            parts.iter().all(|p| contains(&cmdline, p)).then_some(pid)
        })
        .collect()
}

/// SIGKILL while a RUN step runs (as root, and rootless with subordinate ids, where the step
/// leaves a 000 directory and files of its uid 1000 that the caller cannot delete): the step's
/// processes die with kiln, fsck is clean, `store gc` empties `tmp/`, and the build then works.
fn a_build_killed_during_run(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    if !k.busybox() {
        return;
    }
    let nap = format!("4343{}{}", std::process::id(), who as u8);
    let ctx = k.context(
        "killed-run",
        "FROM busybox\nARG NAP\n\
         RUN mkdir -p /d/e && echo hi > /d/e/f && chown -R 1000:1000 /d && chmod 000 /d/e \\\n\
         && chmod 700 /d && sleep $NAP\n",
        &[],
    );
    let mut c = k.cmd_progress("quiet");
    let mut child = c
        .args(["build", ctx.to_str().unwrap(), "-t", "killed"])
        .args(["--build-arg", &format!("NAP={nap}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let step = format!("sleep\0{nap}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while processes_with(&step) == 0 {
        assert!(Instant::now() < deadline, "{who:?}: the step never started");
        assert!(child.try_wait().unwrap().is_none(), "{who:?}: kiln ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The kiln process itself (as the user it runs under `runuser` and `env`).
    let store = k.k.root();
    let kilns = pids_with(&[
        format!("--root\0{}\0", store.display()).as_bytes(),
        b"\0build\0",
    ])
    .into_iter()
    .filter(|pid| {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        exe.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("kiln"))
    })
    .collect::<Vec<_>>();
    assert_eq!(kilns.len(), 1, "{who:?}: kiln processes {kilns:?}");
    // SAFETY: kill has no memory effects; the target is the kiln this test started.
    unsafe { libc::kill(kilns[0], libc::SIGKILL) };
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&step) > 0 {
        assert!(Instant::now() < deadline, "{who:?}: the step outlived kiln");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !leftovers(&store).is_empty(),
        "{who:?}: the killed build left no scratch directory (was it killed in its RUN?)"
    );
    k.ok(&["store", "fsck"]);
    let gc: serde_json::Value =
        serde_json::from_str(&k.ok(&["store", "gc", "--format", "json"])).unwrap();
    assert_eq!(gc["temp_dirs_left"], serde_json::json!([]), "{who:?}: {gc}");
    assert_eq!(leftovers(&store), Vec::<String>::new(), "{who:?}");
    k.ok(&["store", "fsck"]);
    k.ok(&[
        "build",
        ctx.to_str().unwrap(),
        "-t",
        "killed",
        "--build-arg",
        "NAP=0",
    ]);
}

#[test]
fn a_build_killed_during_run_is_cleaned_by_gc_as_root() {
    a_build_killed_during_run(Who::Root);
}

#[test]
fn a_build_killed_during_run_is_cleaned_by_gc_as_unprivileged_user() {
    a_build_killed_during_run(Who::User);
}

// ---- concurrency ----

/// Four builds (sharing their first layers) at once on one store and cache while `store gc`
/// runs again and again: all succeed, gc collects only garbage, every image is complete and
/// exports, and a sequential rebuild gives the same digests.
#[test]
fn four_concurrent_builds_and_repeated_gc_share_one_store() {
    let k = Kiln::new();
    if busybox::import(&k, "busybox").is_none() {
        return;
    }
    let ctx = k.path("conc-ctx");
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("common/one.bin".into(), noise(11, 512 << 10)),
        ("common/two.bin".into(), noise(12, 512 << 10)),
    ];
    for n in 0..4 {
        files.push((format!("own-{n}/file.bin"), noise(20 + n, 256 << 10)));
        files.push((
            format!("Dockerfile.{n}"),
            format!(
                "FROM busybox\nCOPY common/ /common/\nRUN echo shared > /shared\n\
                 COPY own-{n}/ /own/\nRUN echo build-{n} > /id && sha256sum /own/file.bin > /own.sha\n"
            )
            .into_bytes(),
        ));
    }
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(a, b)| (a.as_str(), b.clone())).collect();
    write_files(&ctx, &files);
    // Garbage that gc must collect, so a gc that never ran cannot pass.
    let g = k.path("garbage");
    write_files(&g, &[("g", noise(99, 300 << 10))]);
    let garbage: serde_json::Value =
        serde_json::from_str(&k.ok(&["layer", g.to_str().unwrap(), "--json"])).unwrap();
    let garbage = garbage["digest"].as_str().unwrap()[7..].to_string();
    assert!(k.root().join("blobs/sha256").join(&garbage).exists());

    let done = Arc::new(AtomicBool::new(false));
    let gc_runs = Arc::new(Mutex::new(Vec::<(Instant, Instant, String)>::new()));
    let gc_thread = {
        let (done, runs) = (done.clone(), gc_runs.clone());
        let mut cmd = k.cmd();
        cmd.args(["store", "gc", "--format", "json"]);
        let (prog, args) = (
            cmd.get_program().to_owned(),
            cmd.get_args().map(|a| a.to_owned()).collect::<Vec<_>>(),
        );
        std::thread::spawn(move || loop {
            let last = done.load(Ordering::SeqCst);
            let start = Instant::now();
            let out = Command::new(&prog).args(&args).output().unwrap();
            assert_success(&out, &"store gc during the builds");
            let report = text(&out.stdout).into_owned();
            runs.lock().unwrap().push((start, Instant::now(), report));
            if last {
                break;
            }
            std::thread::sleep(Duration::from_millis(30));
        })
    };
    let builds: Vec<_> = (0..4)
        .map(|n| {
            let mut c = k.cmd();
            c.args([
                "build",
                ctx.to_str().unwrap(),
                "-f",
                ctx.join(format!("Dockerfile.{n}")).to_str().unwrap(),
                "-t",
                &format!("conc-{n}"),
            ]);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(40 * n));
                let start = Instant::now();
                let out = c.output().unwrap();
                (start, Instant::now(), out)
            })
        })
        .collect();
    let outputs: Vec<(Instant, Instant, Output)> =
        builds.into_iter().map(|b| b.join().unwrap()).collect();
    done.store(true, Ordering::SeqCst);
    gc_thread.join().unwrap();
    let mut digests = Vec::new();
    for (n, (_, _, out)) in outputs.iter().enumerate() {
        assert_success(out, &format!("concurrent build {n}"));
        digests.push(digest_of(&text(&out.stdout)));
    }
    let runs = gc_runs.lock().unwrap().clone();
    assert!(runs.len() >= 2, "gc ran {} times", runs.len());
    // gc ran while builds ran (it waits for their shared store lock, or they for its exclusive
    // one; either way nothing they use may be collected).
    let during = runs
        .iter()
        .filter(|(gs, ge, _)| outputs.iter().any(|(bs, be, _)| gs < be && bs < ge))
        .count();
    assert!(during >= 1, "no gc overlapped a build");
    let runs: Vec<&String> = runs.iter().map(|r| &r.2).collect();
    assert!(
        !k.root().join("blobs/sha256").join(&garbage).exists(),
        "gc never collected the garbage blob; runs: {runs:?}"
    );
    fsck_clean(&k, "concurrent builds and gc");
    for (n, d) in digests.iter().enumerate() {
        let name = format!("conc-{n}");
        let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", &name])).unwrap();
        assert_eq!(v["digest"], d.as_str(), "{name}");
        let layers = store_layers(&k.root(), &v);
        assert_eq!(layers.len(), 5, "{name}: base + 4 layers");
        assert_eq!(
            file_in_layers(&layers, "id").as_deref(),
            Some(format!("build-{n}\n").as_bytes())
        );
        assert_eq!(
            file_in_layers(&layers, "shared").as_deref(),
            Some(&b"shared\n"[..])
        );
        let layout = k.path(&format!("export/{n}"));
        k.ok(&["copy", &name, &format!("oci:{}:t", layout.display())]);
        assert_eq!(
            check_layout_blobs(&layout),
            7,
            "{name}: config, manifest, 5 layers"
        );
    }
    // Deterministic builds: each rebuilt alone, without the cache, is the same image.
    for (n, d) in digests.iter().enumerate() {
        let again = k.ok(&[
            "build",
            ctx.to_str().unwrap(),
            "-f",
            ctx.join(format!("Dockerfile.{n}")).to_str().unwrap(),
            "-t",
            &format!("conc-{n}"),
            "--no-cache",
        ]);
        assert_eq!(&digest_of(&again), d, "Dockerfile.{n} rebuilt alone");
    }
    fsck_clean(&k, "the sequential rebuilds");
}

// ---- full disk ----

/// A tmpfs mounted for one test, lazily unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        crate::support::run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
                .arg("tmpfs")
                .arg(dir),
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Builds into a store on a 16 MiB filesystem: a COPY and a RUN whose layers do not fit fail
/// with exit 1 and "No space left on device" naming the path; the store stays consistent and
/// clean, and a build that fits still works.
#[test]
fn a_full_disk_fails_the_build_clearly_and_leaves_the_store_consistent() {
    if !is_root() {
        skip("mounting a 16 MiB tmpfs needs root");
        return;
    }
    let k = Kiln::new();
    let _fs = Tmpfs::mount(&k.root(), "16m");
    if busybox::import(&k, "busybox").is_none() {
        return;
    }
    let entries = || -> BTreeSet<String> {
        std::fs::read_dir(k.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "cache-v1" && n != "snapshots-v1")
            .collect()
    };
    let before = entries();
    let ctx = k.path("full-ctx");
    write_files(
        &ctx,
        &[
            ("Dockerfile", b"FROM busybox\nCOPY big/ /big/\n".to_vec()),
            (
                "Dockerfile.run",
                b"FROM busybox\nRUN dd if=/dev/urandom of=/fill bs=1M count=9 2>/dev/null\n"
                    .to_vec(),
            ),
            (
                "Dockerfile.small",
                b"FROM busybox\nCOPY small.txt /small.txt\n".to_vec(),
            ),
            ("small.txt", b"fits\n".to_vec()),
            ("big/a.bin", noise(31, 8 << 20)),
            ("big/b.bin", noise(32, 8 << 20)),
            ("big/c.bin", noise(33, 8 << 20)),
        ],
    );
    let root = k.root().display().to_string();
    for df in ["Dockerfile", "Dockerfile.run"] {
        let (code, err) = k.fails(&[
            "build",
            ctx.to_str().unwrap(),
            "-f",
            ctx.join(df).to_str().unwrap(),
            "-t",
            "full",
        ]);
        eprintln!("{df} on a full disk: {err}");
        assert_eq!(code, 1, "{df}: {err}");
        assert!(
            err.contains("No space left on device") && err.contains(&root),
            "{df}: the error does not say the disk is full at a path in {root}:\n{err}"
        );
        fsck_clean(&k, &format!("{df} filled the disk"));
        assert_eq!(
            leftovers(&k.root()),
            Vec::<String>::new(),
            "{df}: the failed build left files behind"
        );
        assert_eq!(entries(), before, "{df}: new entries in the store root");
    }
    k.ok(&[
        "build",
        ctx.to_str().unwrap(),
        "-f",
        ctx.join("Dockerfile.small").to_str().unwrap(),
        "-t",
        "small",
    ]);
    k.ok(&["store", "gc"]);
    fsck_clean(&k, "a build that fits");
    k.ok(&["inspect", "small"]);
}

// ---- secrets ----

/// A registry password (via `kiln login`), a `--secret` and a build arg named like a secret:
/// none of their bytes is in any file kiln wrote (store with cache, decompressed layers,
/// metadata, iidfile, OCI output, its home, temp and config dirs, the registry's storage) or in
/// its progress output. Only the `config.json` that `kiln login` wrote holds the password.
#[test]
fn secrets_reach_no_file_kiln_writes_and_no_output() {
    let k = Kiln::new();
    if busybox::import(&k, "busybox").is_none() {
        return;
    }
    let unique = format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let password = format!("pw-{unique}-Zq");
    let Some(reg) = Registry::start(Mode::BasicTls {
        user: "kilnci".into(),
        password: password.clone(),
    }) else {
        return;
    };
    let secret = format!("file-secret-{unique}");
    let token = format!("arg-token-{unique}");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("kilnci:{password}"));
    let needles: [(&str, &[u8]); 4] = [
        ("the registry password", password.as_bytes()),
        ("the base64 credential", basic.as_bytes()),
        ("the --secret", secret.as_bytes()),
        ("the API_TOKEN build arg", token.as_bytes()),
    ];
    let secret_file = k.path("inputs/secret.txt");
    write_files(
        &k.path("inputs"),
        &[("secret.txt", secret.clone().into_bytes())],
    );
    let certs = k.path("inputs/certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(reg.ca_file.as_ref().unwrap(), certs.join("ca.crt")).unwrap();
    let home = k.path("home");
    let tmpdir = k.path("tmpdir");
    let out_dir = k.path("out");
    for d in [&home, &tmpdir, &out_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let docker_config = home.join(".docker");
    let kiln = |progress: &str, root: &Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.arg("--root")
            .arg(root)
            .args([
                "--progress",
                progress,
                "--cert-dir",
                certs.to_str().unwrap(),
            ])
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("KILN_ROOT")
            .env("HOME", &home)
            .env("DOCKER_CONFIG", &docker_config)
            .env("TMPDIR", &tmpdir)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR");
        c
    };
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();

    let mut login = kiln("plain", &k.root());
    login
        .args(["login", "-u", "kilnci", "--password-stdin", &reg.addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = login.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_success(&out, &"kiln login");
    outputs.push(("login stdout".into(), out.stdout));
    outputs.push(("login stderr".into(), out.stderr));

    let ctx = k.path("ctx");
    write_files(
        &ctx,
        &[(
            "Dockerfile",
            b"FROM busybox\n\
ARG API_TOKEN\n\
RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d' ' -f1 > /secret.sha\n\
RUN test -n \"$API_TOKEN\" && printf %s \"$API_TOKEN\" | sha256sum | cut -d' ' -f1 > /token.sha\n\
CMD [\"cat\", \"/token.sha\"]\n"
                .to_vec(),
        )],
    );
    let name = format!("{}/secrets/app:1", reg.addr);
    let meta = out_dir.join("metadata.json");
    let layout = out_dir.join("layout");
    let out = kiln("plain", &k.root())
        .args([
            "build",
            ctx.to_str().unwrap(),
            "-t",
            &name,
            "--push",
            "--secret",
            &format!("id=tok,src={}", secret_file.display()),
            "--build-arg",
            &format!("API_TOKEN={token}"),
            "--metadata-file",
            meta.to_str().unwrap(),
            "--iidfile",
            out_dir.join("iid").to_str().unwrap(),
            "-o",
            &format!("oci:{}:t", layout.display()),
        ])
        .output()
        .unwrap();
    assert_success(&out, &"the build with secrets");
    outputs.push(("build stdout".into(), out.stdout));
    outputs.push(("build stderr".into(), out.stderr.clone()));
    // The steps saw the secrets (so the search below is not vacuous).
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", &name])).unwrap();
    let layers = store_layers(&k.root(), &v);
    let sha = |s: &str| format!("{}\n", crate::support::sha256_hex(s.as_bytes())).into_bytes();
    assert_eq!(file_in_layers(&layers, "secret.sha"), Some(sha(&secret)));
    assert_eq!(file_in_layers(&layers, "token.sha"), Some(sha(&token)));
    assert!(
        text(&out.stderr).contains("API_TOKEN"),
        "plain progress shows the steps:\n{}",
        text(&out.stderr)
    );
    // A pull back through the stored credential, into another store of ours.
    let mut pull = kiln("plain", &k.path("pulled"));
    pull.args(["pull", &name]);
    let out = pull.output().unwrap();
    assert_success(&out, &"kiln pull with the stored credential");
    outputs.push(("pull stdout".into(), out.stdout));
    outputs.push(("pull stderr".into(), out.stderr));

    let credentials = docker_config.join("config.json");
    assert!(credentials.is_file(), "kiln login wrote no config.json");
    let mut files = Vec::new();
    for d in [
        k.root(),
        k.path("pulled"),
        home.clone(),
        tmpdir.clone(),
        out_dir.clone(),
        reg.storage(),
    ] {
        files_below(&d, &mut files);
    }
    files.retain(|f| f != &credentials);
    let mut searched = 0;
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for view in blob_views(&bytes) {
            for (what, needle) in &needles {
                assert!(!contains(&view, needle), "{what} is in `{}`", f.display());
            }
            searched += 1;
        }
    }
    for (what_out, bytes) in &outputs {
        for (what, needle) in &needles {
            assert!(!contains(bytes, needle), "{what} is in the {what_out}");
        }
    }
    assert!(searched > 20, "searched only {searched} files");
    // The history names the build arg, without its value.
    let config = std::fs::read(
        k.root()
            .join("blobs/sha256")
            .join(&v["config_digest"].as_str().unwrap()[7..]),
    )
    .unwrap();
    assert!(
        contains(&config, b"API_TOKEN=<redacted>"),
        "{}",
        text(&config)
    );
}

// ---- RUN isolation ----

/// `who`'s kiln command with `HOME=home` (the unprivileged user's wrapper sets its own HOME).
fn with_home(k: &KilnAs, home: &Path) -> Command {
    let c = k.cmd_progress("plain");
    let mut out = Command::new(c.get_program());
    for a in c.get_args() {
        if a == "HOME=/tmp" {
            out.arg(format!("HOME={}", home.display()));
        } else {
            out.arg(a);
        }
    }
    for (key, val) in c.get_envs() {
        match val {
            Some(v) => out.env(key, v),
            None => out.env_remove(key),
        };
    }
    out.env("HOME", home).current_dir("/tmp");
    out
}

/// `cmd` with `file` open (without close-on-exec) as descriptor 7.
fn with_fd7(cmd: &mut Command, file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe and only touches the child's descriptor table; the new
    // descriptor 7 has no FD_CLOEXEC, so the exec'ed program inherits it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn fd_list(s: &str) -> BTreeSet<u32> {
    s.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

fn run_isolation(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    if !k.busybox() {
        return;
    }
    let home = k.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let marker = home.join("kiln-home-marker");
    std::fs::write(&marker, b"private").unwrap();
    let outside = k.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"untouched").unwrap();
    let store = k.k.root();
    let sleep_arg = format!("4242{}{}", std::process::id(), who as u8);
    let dockerfile = format!(
        r#"FROM busybox
RUN ls /proc/self/fd > /fds; \
    ( ls -d {home} {marker} {store} {store}/oci-layout /proc/*/root{marker} /proc/*/root{store} /proc/*/cwd{marker} /proc/*/fd/*{marker} /proc/*/fd/*{store}; cat {marker} ) > /seen 2>/dev/null; \
    ( echo x > {outside}/written; echo x > /proc/self/root{outside}/written2; echo x > /proc/1/cwd/..{outside}/written3; echo x > {outside}/keep ) 2>/dev/null; \
    setsid sleep {sleep_arg} </dev/null >/dev/null 2>&1 & \
    ( sleep {sleep_arg} </dev/null >/dev/null 2>&1 & ) ; \
    sleep 0.3; ps -o args | grep -c '^sleep {sleep_arg}' > /running; true
"#,
        home = home.display(),
        marker = marker.display(),
        store = store.display(),
        outside = outside.display(),
    );
    let ctx = k.context("iso-ctx", &dockerfile, &[]);
    let extra = std::fs::File::open(&marker).unwrap();

    // The harness works: a plain child of the same wrapper sees descriptor 7.
    let control = with_home(&k, &home);
    let args: Vec<_> = control.get_args().map(|a| a.to_owned()).collect();
    let prog = control.get_program().to_owned();
    // The wrapper's arguments end with `KILN --root STORE …`.
    let kiln_at = args
        .iter()
        .position(|a| a == "--root")
        .map_or(0, |i| i.saturating_sub(1));
    let mut control_cmd = Command::new(&prog);
    control_cmd
        .args(&args[..kiln_at])
        .args(["/bin/ls", "/proc/self/fd"]);
    if who == Who::Root {
        control_cmd = Command::new("/bin/ls");
        control_cmd.arg("/proc/self/fd");
    }
    with_fd7(&mut control_cmd, &extra);
    let ctl = control_cmd.output().unwrap();
    assert_success(&ctl, &"listing descriptors through the wrapper");
    let fd7_passed = fd_list(&text(&ctl.stdout)).contains(&7);
    if who == Who::Root {
        assert!(
            fd7_passed,
            "the test's descriptor 7 did not reach a child: {}",
            text(&ctl.stdout)
        );
    } else if !fd7_passed {
        eprintln!("note: runuser closes inherited descriptors, so kiln as {who:?} gets no fd 7");
    }
    drop(control);

    // Both snapshotters: the walk one runs the step on a copy of the root filesystem inside
    // the store's tmp/, the overlay one on an overlay over the store's layer directories.
    for kind in ["overlay", "walk"] {
        let mut c = with_home(&k, &home);
        let name = format!("iso-{kind}");
        c.args(["build", ctx.to_str().unwrap(), "-t", &name, "--no-cache"])
            .args(["--snapshotter", kind]);
        with_fd7(&mut c, &extra);
        let out = c.output().unwrap();
        assert_success(&out, &(who, kind, "the isolation build"));
        // Every process of the step is gone once kiln returned.
        assert_eq!(
            processes_with(&format!("sleep\0{sleep_arg}")),
            0,
            "{who:?} {kind}: a RUN step's background process outlived kiln"
        );
        let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", &name])).unwrap();
        let layers = store_layers(&k.k.root(), &v);
        let read = |p: &str| {
            String::from_utf8(
                file_in_layers(&layers, p)
                    .unwrap_or_else(|| panic!("{who:?} {kind}: /{p} not in the image")),
            )
            .unwrap()
        };
        assert_eq!(
            read("running").trim(),
            "2",
            "{who:?} {kind}: the background sleeps did not start"
        );
        assert_eq!(read("seen"), "", "{who:?} {kind}: the step saw host paths");
        let fds = fd_list(&read("fds"));
        assert!(
            fds.iter().all(|&fd| fd <= 3)
                && fds.contains(&0)
                && fds.contains(&1)
                && fds.contains(&2),
            "{who:?} {kind}: the step inherited descriptors: {fds:?}"
        );
        let mut outside_now: Vec<String> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        outside_now.sort();
        assert_eq!(
            outside_now,
            ["keep"],
            "{who:?} {kind}: the step wrote outside its root"
        );
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"untouched");
        for l in &layers {
            for e in layer_entries(l) {
                assert!(!e.path.contains("written"), "{who:?} {kind}: {}", e.path);
            }
        }
    }
    assert_eq!(mounts_below(k.k.dir.path()), Vec::<String>::new());
}

#[test]
fn a_run_step_is_isolated_as_root() {
    run_isolation(Who::Root);
}

#[test]
fn a_run_step_is_isolated_as_unprivileged_user() {
    run_isolation(Who::User);
}
