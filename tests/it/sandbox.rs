//! The rootless RUN sandbox on a busybox rootfs, with both snapshotters, as the current user
//! (root here) and, re-run through `runuser`, as an unprivileged user with subordinate ids and in
//! single-id mode. Where user namespaces are refused the tests say why and pass, except with
//! `CI=true`, where they fail.
use crate::support::debian::{debian_rootfs, debian_rootfs_for_test_user, DEBIAN_ROOTFS};
use crate::support::sandbox::{
    kiln_exe, ok, run, sandbox, sh, single, skip_or_fail, RemoveOnDrop, World,
};
use crate::support::users::{ensure_test_user, run_test_as_test_user, TEST_USER};
use kiln::sandbox::{
    ExitStatus, FileKind, IdMapping, Mount, MountKind, Network, RunSpec, Sandbox, SandboxError,
    SandboxOptions, SandboxWarning, Snapshot, SnapshotterKind, Stream, User, UserNsSandbox,
};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

// ---- scenarios: each runs with one sandbox and one snapshotter ----

fn echo_hi_leaves_an_empty_diff(sb: &UserNsSandbox, kind: SnapshotterKind) {
    let w = World::new(kind, |_| {});
    let (o, out, err) = run(
        sb,
        &w,
        &sh("echo hi; echo oops >&2; cat /etc/resolv.conf /etc/hosts /etc/hostname >/dev/null"),
    );
    assert!(o.status.success());
    assert_eq!((out.as_str(), err.as_str()), ("hi\n", "oops\n"));
    // The bound /etc files and the mount points kiln made are not changes.
    assert_eq!(o.diff.paths(), Vec::<String>::new());
}

fn files_created_modified_deleted_and_dirs_replaced(sb: &UserNsSandbox, kind: SnapshotterKind) {
    let w = World::new(kind, |b| {
        std::fs::write(b.join("etc/motd"), "old\n").unwrap();
        std::fs::create_dir_all(b.join("data")).unwrap();
        std::fs::write(b.join("data/keep"), "k").unwrap();
        std::fs::write(b.join("data/del"), "d").unwrap();
        std::fs::create_dir_all(b.join("olddir/sub")).unwrap();
        std::fs::write(b.join("olddir/a"), "a").unwrap();
        std::fs::write(b.join("olddir/sub/b"), "b").unwrap();
    });
    let (o, _) = ok(sb, &w, "echo new > /new && echo changed > /etc/motd && rm /data/del && rm -rf /olddir && mkdir /olddir && echo f > /olddir/fresh");
    let d = &o.diff;
    assert_eq!(
        std::fs::read(&d.upsert("new").expect("new").host_path).unwrap(),
        b"new\n"
    );
    assert_eq!(
        std::fs::read(&d.upsert("etc/motd").expect("motd").host_path).unwrap(),
        b"changed\n"
    );
    assert!(d.deletes("data/del"), "{:?}", d.paths());
    assert!(d.upsert("data/keep").is_none() && d.upsert("olddir/fresh").is_some());
    match kind {
        SnapshotterKind::Overlay => assert!(d.is_opaque("olddir"), "{:?}", d.paths()),
        SnapshotterKind::Walk => {
            assert!(d.deletes("olddir/a") && d.deletes("olddir/sub") && !d.deletes("olddir/sub/b"))
        }
    }
    assert!(!d.paths().iter().any(|p| p.starts_with("etc/hosts")
        || p == "etc/resolv.conf"
        || p == "proc"
        || p == "dev"));
}

fn chown_to_other_ids_is_reported_in_namespace_ids(sb: &UserNsSandbox, kind: SnapshotterKind) {
    let w = World::new(kind, |_| {});
    let (o, _) = ok(sb, &w, "touch /owned && chown 1000:1000 /owned && mkdir -p /home/u && echo secret > /home/u/s && chmod 600 /home/u/s && chown -R 1000:1000 /home/u && chmod 700 /home/u");
    let want = if single(sb) { 0 } else { 1000 };
    for path in ["owned", "home/u", "home/u/s"] {
        let e = o
            .diff
            .upsert(path)
            .unwrap_or_else(|| panic!("{path} missing: {:?}", o.diff.paths()));
        assert_eq!((e.uid, e.gid), (want, want), "{path}");
    }
    // Even a 0600 file of uid 1000 under a 0700 directory is readable by the caller.
    let s = o.diff.upsert("home/u/s").unwrap();
    assert_eq!(s.mode, 0o600);
    assert_eq!(std::fs::read(&s.host_path).unwrap(), b"secret\n");
    // And the caller can remove what the step left, whoever owns it.
    let upper_or_root = w
        .snapshot
        .upper()
        .or(w.snapshot.rootfs())
        .unwrap()
        .to_owned();
    sb.remove_tree(&upper_or_root.join("home")).unwrap();
    assert!(!upper_or_root.join("home").exists());
}

fn symlinks_hardlinks_and_setuid_bits(sb: &UserNsSandbox, kind: SnapshotterKind) {
    let w = World::new(kind, |_| {});
    let (o, _) = ok(sb, &w, "ln -s /etc/passwd /link && echo a > /h1 && ln /h1 /h2 && ln /bin/busybox /bin/hard && cp /bin/busybox /su && chmod 4755 /su && mkdir /sg && chmod 2775 /sg");
    let d = &o.diff;
    assert_eq!(
        d.upsert("link").unwrap().kind,
        FileKind::Symlink {
            target: b"/etc/passwd".to_vec()
        }
    );
    assert_eq!(
        d.upsert("h2").unwrap().hardlink_to.as_deref(),
        Some(&b"h1"[..])
    );
    assert_eq!(
        d.upsert("bin/hard").unwrap().hardlink_to.as_deref(),
        Some(&b"bin/busybox"[..]),
        "{:?}",
        d.paths()
    );
    assert_eq!(d.upsert("su").unwrap().mode, 0o4755);
    assert_eq!(d.upsert("sg").unwrap().mode, 0o2775);
}

fn a_failing_command_reports_its_exit_code(sb: &UserNsSandbox, kind: SnapshotterKind) {
    let w = World::new(kind, |_| {});
    let (o, _, err) = run(sb, &w, &sh("echo before >&2; touch /x; exit 3"));
    assert_eq!(o.status, ExitStatus::Code(3));
    assert_eq!(err, "before\n");
    assert!(o.diff.changes.is_empty());
    let (o, _, _) = run(sb, &w, &sh("kill -9 $$"));
    assert_eq!(o.status, ExitStatus::Signal(9));
}

fn output_is_streamed_while_the_step_runs(sb: &UserNsSandbox, kind: SnapshotterKind) {
    let w = World::new(kind, |_| {});
    let start = Instant::now();
    let mut first = None;
    let o = sb
        .run(
            &w.snapshot,
            &sh("echo one; sleep 1; echo two"),
            &mut |_, b| {
                if first.is_none() && !b.is_empty() {
                    first = Some(start.elapsed());
                }
            },
        )
        .unwrap();
    assert!(o.status.success());
    let first = first.expect("some output");
    assert!(
        start.elapsed() - first >= Duration::from_millis(700),
        "first output came at {first:?} of {:?}",
        start.elapsed()
    );
}

fn user_1000_runs_as_1000(sb: &UserNsSandbox, kind: SnapshotterKind) {
    let w = World::new(kind, |_| {});
    let spec = RunSpec {
        user: User {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![1000],
        },
        ..sh("id -u; id -g; touch /tmp/mine")
    };
    let (o, out, err) = run(sb, &w, &spec);
    assert!(o.status.success(), "{err}");
    if matches!(sb.id_mapping(), IdMapping::Subordinate { .. }) {
        let outside = RunSpec {
            user: User {
                uid: 70000,
                gid: 0,
                additional_gids: vec![],
            },
            ..sh("true")
        };
        let err = sb.run(&w.snapshot, &outside, &mut |_, _| {}).unwrap_err();
        assert!(
            matches!(err, SandboxError::UserNotMapped { uid: 70000, .. }),
            "{err}"
        );
    }
    if single(sb) {
        assert_eq!(out, "0\n0\n");
        assert!(o
            .warnings
            .contains(&SandboxWarning::UserIgnored { uid: 1000 }));
    } else {
        assert_eq!(out, "1000\n1000\n");
        assert_eq!(o.diff.upsert("tmp/mine").unwrap().uid, 1000);
    }
}

fn network_none_has_only_loopback(sb: &UserNsSandbox, kind: SnapshotterKind) {
    let w = World::new(kind, |_| {});
    let spec = RunSpec {
        network: Network::None,
        ..sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")
    };
    let (o, out, _) = run(sb, &w, &spec);
    assert!(o.status.success());
    assert_eq!(out, "lo\n");
    // /sys is there, read-only, in both cases.
    for network in [Network::None, Network::Default] {
        let spec = RunSpec {
            network,
            ..sh("ls /sys/class/net && ! touch /sys/x 2>/dev/null")
        };
        let (o, out, err) = run(sb, &w, &spec);
        assert!(
            o.status.success() && out.contains("lo"),
            "{network:?}: {out}{err}"
        );
        assert!(o.diff.changes.is_empty(), "{:?}", o.diff.paths());
    }
}

fn no_descriptor_of_kiln_leaks_into_the_step(sb: &UserNsSandbox, kind: SnapshotterKind) {
    let w = World::new(kind, |_| {});
    // ls may still hold the directory it lists open as fd 3.
    let (_, out) = ok(sb, &w, "ls /proc/self/fd | sort | tr '\\n' ' '");
    assert!(
        out == "0 1 2 " || out == "0 1 2 3 ",
        "descriptors in the step: {out}"
    );
    let (_, out) = ok(sb, &w, "readlink /proc/self/fd/0");
    assert_eq!(out, "/dev/null\n");
}

fn signals_are_reset_for_the_step(sb: &UserNsSandbox, kind: SnapshotterKind) {
    let w = World::new(kind, |_| {});
    // kiln ignores SIGPIPE, as every Rust program does; the step must not inherit that.
    let (_, out) = ok(
        sb,
        &w,
        "grep -E '^Sig(Ign|Blk)' /proc/self/status | tr -d '\\t'",
    );
    assert_eq!(out, "SigBlk:0000000000000000\nSigIgn:0000000000000000\n");
}

fn no_process_outlives_its_step(sb: &UserNsSandbox, kind: SnapshotterKind) {
    let w = World::new(kind, |_| {});
    let marker = format!("100.{}", std::process::id());
    let start = Instant::now();
    let (_, out) = ok(sb, &w, &format!("sleep {marker} & echo started"));
    assert_eq!(out, "started\n");
    assert!(start.elapsed() < Duration::from_secs(20));
    let alive = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c.windows(marker.len()).any(|w| w == marker.as_bytes()))
        });
    assert!(!alive, "the backgrounded sleep survived the step");
}

fn mounts_are_usable_and_absent_from_the_diff(sb: &UserNsSandbox, kind: SnapshotterKind) {
    let w = World::new(kind, |_| {});
    let ro = w.tmp.join("ro-src");
    std::fs::create_dir(&ro).unwrap();
    std::fs::write(ro.join("f"), "from host\n").unwrap();
    let cache = w.tmp.join("caches/one");
    let script = "cat /mnt/ro/f && ! touch /mnt/ro/x 2>/dev/null && echo t > /run/t/x && echo c > /root/.cache/kept && echo keep > /result";
    let spec = RunSpec {
        mounts: vec![
            Mount {
                target: "/mnt/ro".into(),
                kind: MountKind::Bind {
                    source: ro.clone(),
                    readonly: true,
                },
            },
            Mount {
                target: "/run/t".into(),
                kind: MountKind::Tmpfs {
                    size: Some(1 << 20),
                },
            },
            Mount {
                target: "/root/.cache".into(),
                kind: MountKind::Cache {
                    source: cache.clone(),
                    uid: 0,
                    gid: 0,
                    mode: 0o755,
                },
            },
        ],
        cwd: "/work/dir".into(),
        ..sh(&format!("{script} && pwd"))
    };
    let (o, out, err) = run(sb, &w, &spec);
    assert!(o.status.success(), "{err}");
    assert_eq!(out, "from host\n/work/dir\n");
    assert_eq!(std::fs::read(cache.join("kept")).unwrap(), b"c\n");
    let paths = o.diff.paths();
    // The working directory is created, as BuildKit does; mount points are not changes.
    for p in ["result", "work", "work/dir"] {
        assert!(paths.contains(&p.to_owned()), "{p} missing from {paths:?}");
    }
    for p in paths {
        assert!(
            !p.starts_with("mnt") && !p.starts_with("run") && !p.starts_with("root"),
            "{p} in diff"
        );
    }
    assert!(!ro.join("x").exists());
}

fn env_hostname_and_missing_programs(sb: &UserNsSandbox, kind: SnapshotterKind) {
    let w = World::new(kind, |_| {});
    let spec = RunSpec {
        env: vec![
            ("FOO".into(), "bar baz".into()),
            ("PATH".into(), "/usr/bin:/bin".into()),
        ],
        hostname: "kilnbox".into(),
        ..sh("echo \"$FOO\"; hostname; cat /etc/hostname; env | grep -c KILN || true")
    };
    let (o, out, _) = run(sb, &w, &spec);
    assert!(o.status.success());
    assert_eq!(out, "bar baz\nkilnbox\nkilnbox\n0\n");
    // The builder can refuse a shell-form RUN before running anything.
    assert!(w.snapshot.exists("/bin/sh") && w.snapshot.exists("/usr/../bin/busybox"));
    assert!(!w.snapshot.exists("/bin/bash"));
    let missing = RunSpec {
        argv: vec!["nosuchprog".into()],
        ..RunSpec::default()
    };
    match sb.run(&w.snapshot, &missing, &mut |_, _| {}) {
        Err(SandboxError::ProgramNotFound { program, .. }) => assert_eq!(program, "nosuchprog"),
        other => panic!("expected ProgramNotFound, got {other:?}"),
    }
}

fn single_id_mode_emulates_chown_and_mknod(sb: &UserNsSandbox, kind: SnapshotterKind) {
    if !single(sb) {
        return;
    }
    let w = World::new(kind, |_| {});
    let (o, out) = ok(sb, &w, "touch /f && chown 1000:1000 /f && chown -h 5:5 /f && mknod /tmp/null c 1 3 && mkfifo /fifo && echo ok");
    assert_eq!(out, "ok\n");
    assert_eq!(o.diff.upsert("f").map(|e| e.uid), Some(0));
    assert_eq!(
        o.diff.upsert("fifo").map(|e| e.kind.clone()),
        Some(FileKind::Fifo)
    );
    assert!(o.diff.upsert("tmp/null").is_none());
}

fn overlay_uppers_stack_as_lowers(sb: &UserNsSandbox, kind: SnapshotterKind) {
    if kind != SnapshotterKind::Overlay {
        return;
    }
    let w = World::new(kind, |b| {
        std::fs::write(b.join("etc/motd"), "base\n").unwrap()
    });
    let (first, _) = ok(
        sb,
        &w,
        "rm /etc/motd && echo one > /one && mkdir -p /d && touch /d/x",
    );
    assert!(first.diff.deletes("etc/motd"));
    let upper = w.snapshot.upper().unwrap().to_owned();
    let second = Snapshot::overlay(vec![upper, w.base.clone()], &w.tmp.join("scratch2")).unwrap();
    let mut out = Vec::new();
    let o = sb
        .run(
            &second,
            &sh("test ! -e /etc/motd && cat /one && rm -rf /d && mkdir /d"),
            &mut |_, b| out.extend_from_slice(b),
        )
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&out));
    assert_eq!(out, b"one\n");
    assert!(o.diff.is_opaque("d"), "{:?}", o.diff.paths());
}

fn chown_in_namespace_gives_base_files_their_owners(sb: &UserNsSandbox, kind: SnapshotterKind) {
    let w = World::new(kind, |b| {
        std::fs::create_dir_all(b.join("srv")).unwrap();
        std::fs::write(b.join("srv/app"), "x").unwrap();
        std::fs::set_permissions(b.join("srv/app"), std::fs::Permissions::from_mode(0o4755))
            .unwrap();
        std::os::unix::fs::symlink("app", b.join("srv/link")).unwrap();
    });
    let entries: Vec<(Vec<u8>, u32, u32)> = ["srv", "srv/app", "srv/link"]
        .iter()
        .map(|p| (p.as_bytes().to_vec(), 1000, 1001))
        .collect();
    sb.chown_in_namespace(&w.base, &entries).unwrap();
    let (o, out) = ok(
        sb,
        &w,
        "stat -c '%u:%g %a' /srv /srv/app && stat -c '%u:%g' /srv/link",
    );
    let want = if single(sb) {
        "0:0 755\n0:0 4755\n0:0\n"
    } else {
        "1000:1001 755\n1000:1001 4755\n1000:1001\n"
    };
    assert_eq!(out, want);
    assert!(o.diff.changes.is_empty(), "{:?}", o.diff.paths());
}

fn symlinks_in_the_image_cannot_send_mounts_to_the_host(sb: &UserNsSandbox, kind: SnapshotterKind) {
    let canary = tempfile::Builder::new()
        .prefix("kiln-it-canary-")
        .tempdir()
        .unwrap();
    let host_dir = canary.path().to_owned();
    let w = World::new(kind, |b| {
        std::os::unix::fs::symlink(&host_dir, b.join("mnt")).unwrap();
        std::os::unix::fs::symlink(
            format!("/../../../..{}/hosts", host_dir.display()),
            b.join("etc/hosts"),
        )
        .unwrap();
    });
    let spec = RunSpec {
        mounts: vec![Mount {
            target: "/mnt/t".into(),
            kind: MountKind::Tmpfs { size: None },
        }],
        ..sh("true")
    };
    assert!(sb.run(&w.snapshot, &spec, &mut |_, _| {}).is_err());
    let (o, _) = ok(sb, &w, "readlink /etc/hosts");
    assert!(o.diff.changes.is_empty(), "{:?}", o.diff.paths());
    assert_eq!(
        std::fs::read_dir(&host_dir).unwrap().count(),
        0,
        "a stub escaped to the host"
    );

    let w = World::new(kind, |b| {
        std::fs::remove_dir(b.join("proc")).unwrap();
        std::os::unix::fs::symlink("/etc", b.join("proc")).unwrap();
    });
    let err = sb
        .run(&w.snapshot, &sh("true"), &mut |_, _| {})
        .unwrap_err();
    assert!(err.to_string().contains("/proc is a symlink"), "{err}");
}

fn debian_apt_get_install_and_useradd(sb: &UserNsSandbox, kind: SnapshotterKind) {
    let Some(src) = debian_rootfs() else {
        eprintln!("skipping: no Debian rootfs at {DEBIAN_ROOTFS} (debootstrap --variant=minbase bookworm {DEBIAN_ROOTFS})");
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("kiln-it-deb-")
        .tempdir()
        .unwrap();
    let _cleanup = RemoveOnDrop(tmp.path().to_owned());
    let (first, rootfs) = match kind {
        SnapshotterKind::Overlay => (
            Snapshot::overlay(vec![src.clone()], &tmp.path().join("s1")).unwrap(),
            None,
        ),
        SnapshotterKind::Walk => {
            let rootfs = tmp.path().join("rootfs");
            let cp = std::process::Command::new("/bin/cp")
                .arg("-a")
                .arg(&src)
                .arg(&rootfs)
                .status()
                .unwrap();
            assert!(cp.success());
            (Snapshot::walk(rootfs.clone()), Some(rootfs))
        }
    };
    let script = "apt-get update -qq && apt-get install -y -qq --no-install-recommends hello >/dev/null && useradd -m sandbox && id -u sandbox";
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let o = sb
        .run(&first, &sh(script), &mut |s, b| match s {
            Stream::Stdout => out.extend_from_slice(b),
            Stream::Stderr => err.extend_from_slice(b),
        })
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
    assert!(o.status.success(), "{:?}: {out}{err}", o.status);
    assert!(out.ends_with("1000\n"), "{out}");
    let d = &o.diff;
    assert!(d.upsert("usr/bin/hello").is_some());
    assert!(d.upsert("etc/passwd").is_some());
    let home = d.upsert("home/sandbox").expect("home/sandbox");
    let want = if single(sb) { 0 } else { 1000 };
    assert_eq!((home.uid, home.gid), (want, want));
    for path in [
        "etc/resolv.conf",
        "etc/hosts",
        "etc/hostname",
        "proc",
        "dev",
    ] {
        assert!(d.find(path).next().is_none(), "{path} in the diff");
    }
    // The next step runs on top, as USER 1000.
    let second = match &rootfs {
        None => Snapshot::overlay(
            vec![first.upper().unwrap().to_owned(), src],
            &tmp.path().join("s2"),
        )
        .unwrap(),
        Some(rootfs) => Snapshot::walk(rootfs.clone()),
    };
    let spec = RunSpec {
        user: User {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![],
        },
        ..sh("id -u && hello")
    };
    let mut out = Vec::new();
    let o = sb
        .run(&second, &spec, &mut |_, b| out.extend_from_slice(b))
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(o.status.success(), "{out}");
    assert_eq!(out, format!("{want}\nHello, world!\n"));
}

type Scenario = fn(&UserNsSandbox, SnapshotterKind);

const SCENARIOS: &[(&str, Scenario)] = &[
    ("echo_hi_leaves_an_empty_diff", echo_hi_leaves_an_empty_diff),
    (
        "files_created_modified_deleted_and_dirs_replaced",
        files_created_modified_deleted_and_dirs_replaced,
    ),
    (
        "chown_to_other_ids_is_reported_in_namespace_ids",
        chown_to_other_ids_is_reported_in_namespace_ids,
    ),
    (
        "symlinks_hardlinks_and_setuid_bits",
        symlinks_hardlinks_and_setuid_bits,
    ),
    (
        "a_failing_command_reports_its_exit_code",
        a_failing_command_reports_its_exit_code,
    ),
    (
        "output_is_streamed_while_the_step_runs",
        output_is_streamed_while_the_step_runs,
    ),
    ("user_1000_runs_as_1000", user_1000_runs_as_1000),
    (
        "network_none_has_only_loopback",
        network_none_has_only_loopback,
    ),
    (
        "no_descriptor_of_kiln_leaks_into_the_step",
        no_descriptor_of_kiln_leaks_into_the_step,
    ),
    ("no_process_outlives_its_step", no_process_outlives_its_step),
    (
        "signals_are_reset_for_the_step",
        signals_are_reset_for_the_step,
    ),
    (
        "mounts_are_usable_and_absent_from_the_diff",
        mounts_are_usable_and_absent_from_the_diff,
    ),
    (
        "env_hostname_and_missing_programs",
        env_hostname_and_missing_programs,
    ),
    (
        "single_id_mode_emulates_chown_and_mknod",
        single_id_mode_emulates_chown_and_mknod,
    ),
    (
        "overlay_uppers_stack_as_lowers",
        overlay_uppers_stack_as_lowers,
    ),
    (
        "chown_in_namespace_gives_base_files_their_owners",
        chown_in_namespace_gives_base_files_their_owners,
    ),
    (
        "symlinks_in_the_image_cannot_send_mounts_to_the_host",
        symlinks_in_the_image_cannot_send_mounts_to_the_host,
    ),
    (
        "debian_apt_get_install_and_useradd",
        debian_apt_get_install_and_useradd,
    ),
];

const KINDS: [SnapshotterKind; 2] = [SnapshotterKind::Overlay, SnapshotterKind::Walk];

/// One `#[test]` per scenario and snapshotter, as the current user.
macro_rules! as_current_user {
    ($($name:ident),* $(,)?) => {
        mod as_current_user {
            $(
                #[test]
                fn $name() {
                    if let Some(sb) = super::sandbox() {
                        for kind in super::KINDS {
                            eprintln!("{} with {kind:?}, mapping {:?}", stringify!($name), sb.id_mapping());
                            super::$name(&sb, kind);
                        }
                    }
                }
            )*
        }
    };
}

as_current_user!(
    echo_hi_leaves_an_empty_diff,
    files_created_modified_deleted_and_dirs_replaced,
    chown_to_other_ids_is_reported_in_namespace_ids,
    symlinks_hardlinks_and_setuid_bits,
    a_failing_command_reports_its_exit_code,
    output_is_streamed_while_the_step_runs,
    user_1000_runs_as_1000,
    network_none_has_only_loopback,
    no_descriptor_of_kiln_leaks_into_the_step,
    no_process_outlives_its_step,
    signals_are_reset_for_the_step,
    mounts_are_usable_and_absent_from_the_diff,
    env_hostname_and_missing_programs,
    single_id_mode_emulates_chown_and_mknod,
    overlay_uppers_stack_as_lowers,
    chown_in_namespace_gives_base_files_their_owners,
    symlinks_in_the_image_cannot_send_mounts_to_the_host,
    debian_apt_get_install_and_useradd,
);

/// Runs every scenario with both snapshotters; started by the `as_unprivileged_*` tests through
/// `runuser`, with `KILN_IT_MODE` saying which id mapping to expect.
#[test]
#[ignore = "run by the as_unprivileged_* tests as the test user"]
fn unprivileged_inner() {
    let Some(sb) = sandbox() else { return };
    let mode = std::env::var("KILN_IT_MODE").unwrap_or_default();
    match (mode.as_str(), sb.id_mapping()) {
        ("subordinate", IdMapping::Subordinate { .. }) | ("single", IdMapping::Single { .. }) => {}
        (m, got) => panic!("expected mode {m:?}, got mapping {got:?}"),
    }
    let mut failed = Vec::new();
    let only = std::env::var("KILN_IT_ONLY").unwrap_or_default();
    for (name, scenario) in SCENARIOS.iter().filter(|(name, _)| name.contains(&only)) {
        for kind in KINDS {
            let result = std::panic::catch_unwind(|| scenario(&sb, kind));
            eprintln!(
                "{name} {kind:?}: {}",
                if result.is_ok() { "ok" } else { "FAILED" }
            );
            if result.is_err() {
                failed.push(format!("{name} ({kind:?})"));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "failed as {}: {failed:?}",
        rustix::process::geteuid().as_raw()
    );
}

/// Copies the test binary and kiln where the test user can run them, and runs
/// [`unprivileged_inner`] as that user with `path` as its PATH.
fn run_as_test_user(mode: &str, path: &str) {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: not root, so cannot switch to {TEST_USER} (the as_current_user tests cover this user)");
        return;
    }
    if sandbox().is_none() {
        return;
    }
    if let Err(why) = ensure_test_user() {
        skip_or_fail(&why);
        return;
    }
    let debian = debian_rootfs_for_test_user();
    let debian = debian.map(|d| d.display().to_string()).unwrap_or_default();
    let env = [
        ("PATH", path.to_owned()),
        ("KILN_IT_MODE", mode.to_owned()),
        ("KILN_IT_DEBIAN", debian),
        ("CI", std::env::var("CI").unwrap_or_default()),
    ];
    let (success, text) = run_test_as_test_user("sandbox::unprivileged_inner", &env);
    eprintln!("{text}");
    assert!(success, "unprivileged run failed ({mode})");
    assert!(text.contains("1 passed"), "the inner test did not run");
}

#[test]
fn as_unprivileged_user_with_subordinate_ids() {
    run_as_test_user("subordinate", "/usr/local/bin:/usr/bin:/bin");
}

#[test]
fn as_unprivileged_user_in_single_id_mode() {
    // No newuidmap/newgidmap on PATH (and the inner test only runs absolute paths).
    run_as_test_user("single", "/nonexistent-kiln-path");
}

#[test]
fn an_empty_command_and_a_relative_mount_target_are_refused_before_starting() {
    let sb = UserNsSandbox::new(SandboxOptions {
        helper_exe: kiln_exe(),
        ..SandboxOptions::default()
    });
    let snap = Snapshot::walk(std::env::temp_dir().join("kiln-never-used"));
    let empty = RunSpec::default();
    assert!(matches!(
        sb.run(&snap, &empty, &mut |_, _| {}),
        Err(SandboxError::EmptyCommand)
    ));
    let bad = RunSpec {
        mounts: vec![Mount {
            target: "rel/x".into(),
            kind: MountKind::Tmpfs { size: None },
        }],
        ..sh("true")
    };
    let err = sb.run(&snap, &bad, &mut |_, _| {}).unwrap_err();
    assert!(
        err.to_string().contains("invalid mount target `rel/x`"),
        "{err}"
    );
}

/// Runs a long step until killed; started by `killing_kiln_kills_the_whole_step`.
#[test]
#[ignore = "run by killing_kiln_kills_the_whole_step"]
fn long_step_inner() {
    let Some(sb) = sandbox() else { return };
    let marker = std::env::var("KILN_IT_MARKER").unwrap_or_else(|_| "1000.5".into());
    let w = World::new(SnapshotterKind::Overlay, |_| {});
    let _ = sb.run(
        &w.snapshot,
        &sh(&format!("sleep {marker} & sleep {marker}")),
        &mut |_, _| {},
    );
}

fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c.windows(marker.len()).any(|w| w == marker.as_bytes()))
        })
        .count()
}

#[test]
fn killing_kiln_kills_the_whole_step() {
    if sandbox().is_none() {
        return;
    }
    let marker = format!("1000.{}", std::process::id());
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
        .env("KILN_IT_MARKER", &marker)
        .env("TMPDIR", tmp.path())
        .env("KILN_IT_KILN", kiln_exe())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_with(&format!("sleep\0{marker}")) < 2 {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
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

/// Prints the time of a trivial step with each snapshotter (`--ignored`, for measuring).
#[test]
#[ignore = "a measurement, not a check"]
fn per_step_overhead() {
    let Some(sb) = sandbox() else { return };
    for kind in KINDS {
        let w = World::new(kind, |_| {});
        let n = 20;
        let start = Instant::now();
        for _ in 0..n {
            let o = sb
                .run(
                    &w.snapshot,
                    &RunSpec {
                        argv: vec!["/bin/true".into()],
                        ..RunSpec::default()
                    },
                    &mut |_, _| {},
                )
                .unwrap();
            assert!(o.status.success());
        }
        eprintln!(
            "{kind:?}: {:?} per step ({:?})",
            start.elapsed() / n,
            sb.id_mapping()
        );
    }
}
