//! The rootless RUN sandbox on a busybox rootfs, with both snapshotters, as the current user
//! (root here) and, re-run through `runuser`, as an unprivileged user with subordinate ids and in
//! single-id mode. Where user namespaces are refused the tests say why and pass, except with
//! `CI=true`, where they fail.
use crate::support::debian::{
    debian_apt_get_install_and_useradd, debian_network_reaches_the_registries_but_not_host_sockets,
    debian_rootfs_for_test_user,
};
use crate::support::sandbox::{
    kiln_exe, ok, processes_with, run, sandbox, sh, signal_kiln_and_check_the_step_dies, single,
    skip_or_fail, World,
};
use crate::support::users::{ensure_test_user, run_test_as_test_user, TEST_USER};
use kiln::sandbox::{
    ChangeKind, ExitStatus, FileKind, IdMapping, Mount, MountKind, Network, RunSpec, Sandbox,
    SandboxError, SandboxOptions, SandboxWarning, SecretData, Snapshot, SnapshotterKind, User,
    UserNsSandbox,
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
    let (o, _) = ok(sb, &w, "touch \"/$(printf 'caf\\351')\" && ln -s /etc/passwd /link && echo a > /h1 && ln /h1 /h2 && ln /bin/busybox /bin/hard && cp /bin/busybox /su && chmod 4755 /su && mkdir /sg && chmod 2775 /sg");
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
    // A file name that is not UTF-8 arrives intact.
    assert!(
        d.changes.iter().any(|c| c.path == b"caf\xe9"),
        "{:?}",
        d.paths()
    );
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

/// Whether this machine reaches a package registry over https (`deb.debian.org:443`); with
/// `CI=true` it must.
fn registry_reachable() -> bool {
    use std::net::ToSocketAddrs;
    let reachable = ("deb.debian.org", 443)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok());
    if !reachable {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and deb.debian.org:443 is unreachable from this machine"
        );
        eprintln!("not checking outbound https: deb.debian.org:443 is unreachable from here");
    }
    reachable
}

/// The trust boundary of the default network: a step reaches the internet (DNS and https to a
/// package registry) but neither a TCP port bound on the host's 127.0.0.1 nor the host's
/// abstract unix sockets; its own loopback works. `--network=none` reaches nothing outside,
/// and the same probes with `--network=host` do reach the host's services (so the probes can
/// tell).
fn default_network_reaches_out_but_not_the_hosts_loopback(
    sb: &UserNsSandbox,
    kind: SnapshotterKind,
) {
    use std::os::linux::net::SocketAddrExt;
    let w = World::new(kind, |_| {});
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    // Accepts and closes each connection, so that a client that got through exits at once.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acceptor = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for conn in tcp.incoming() {
                drop(conn);
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
            }
        })
    };
    let name = format!("kiln-it-abstract-{}-{port}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _abstract = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    // A port for the step's own listener, free on the host too (for the `host` run, while
    // other tests run).
    let own = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let probes = format!(
        "nc -w 3 127.0.0.1 {port} </dev/null && echo host-tcp; \
         grep -q '@{name}' /proc/net/unix && echo host-abstract; \
         (sleep 10 | nc -l -p {own} >/tmp/got &) ; \
         for i in $(seq 50); do echo ping | nc -w 1 127.0.0.1 {own} 2>/dev/null && break; sleep 0.1; done; \
         for i in $(seq 50); do [ -s /tmp/got ] && break; sleep 0.1; done; cat /tmp/got; true"
    );
    let with = |network: Network, script: &str| {
        let (o, out, err) = run(
            sb,
            &w,
            &RunSpec {
                network,
                ..sh(script)
            },
        );
        assert!(o.status.success(), "{network:?}: {out}{err}");
        (out, err)
    };
    for (network, want) in [
        (Network::Default, "ping\n"),
        (Network::None, "ping\n"),
        (Network::Host, "host-tcp\nhost-abstract\nping\n"),
    ] {
        let (out, err) = with(network, &probes);
        assert_eq!(out, want, "{network:?}, stderr: {err}");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = std::net::TcpStream::connect(("127.0.0.1", port));
    acceptor.join().unwrap();
    if registry_reachable() {
        // The host's resolver answers through pasta (busybox's own TLS cannot talk to every
        // middlebox: the Debian scenario checks https to the registries with curl and apt).
        let dns = "nslookup deb.debian.org >/dev/null 2>&1 && echo resolved; true";
        assert_eq!(with(Network::Default, dns).0, "resolved\n");
        assert_eq!(with(Network::None, dns).0, "");
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
    assert_eq!(
        processes_with(&marker),
        0,
        "the backgrounded sleep survived the step"
    );
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
                    root: ro.clone(),
                    source: String::new(),
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

fn secrets_are_readable_by_their_user_and_never_in_the_diff(
    sb: &UserNsSandbox,
    kind: SnapshotterKind,
) {
    let w = World::new(kind, |_| {});
    let secret = b"s3cr3t-kiln-value".to_vec();
    let spec = RunSpec {
        user: User { uid: 1000, gid: 1000, additional_gids: vec![] },
        mounts: vec![Mount {
            target: "/run/secrets/token".into(),
            kind: MountKind::Secret { data: SecretData(secret.clone()), uid: 1000, gid: 1000, mode: 0o400 },
        }],
        ..sh("cat /run/secrets/token && stat -c ' %u %a' /run/secrets/token && ! echo x 2>/dev/null >> /run/secrets/token && cp /run/secrets/token /tmp/copied-by-the-step && rm /tmp/copied-by-the-step")
    };
    assert!(
        !format!("{spec:?}").contains("s3cr3t"),
        "Debug shows the secret"
    );
    let (o, out, err) = run(sb, &w, &spec);
    assert!(o.status.success(), "{out}{err}");
    let owner = if single(sb) { "0" } else { "1000" };
    assert_eq!(out, format!("s3cr3t-kiln-value {owner} 400\n"));
    for change in &o.diff.changes {
        let path = String::from_utf8_lossy(&change.path);
        assert!(!path.starts_with("run"), "{path} in the diff");
        if let ChangeKind::Upsert(e) = &change.kind {
            if e.kind == FileKind::Regular {
                let content = std::fs::read(&e.host_path).unwrap();
                assert!(
                    !content.windows(secret.len()).any(|x| x == secret),
                    "{path} holds the secret"
                );
            }
        }
    }
}

fn a_refused_subordinate_range_is_an_error_naming_the_fix(
    sb: &UserNsSandbox,
    kind: SnapshotterKind,
) {
    if !matches!(sb.id_mapping(), IdMapping::Subordinate { .. }) {
        return;
    }
    let w = World::new(kind, |_| {});
    // An /etc/subuid that claims a range the real one does not grant: newuidmap refuses it,
    // and kiln must notice (youki's libcontainer ignores newuidmap's exit status).
    let etc = w.tmp.join("fake-etc");
    std::fs::create_dir(&etc).unwrap();
    let user = String::from_utf8(
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for file in ["subuid", "subgid"] {
        std::fs::write(etc.join(file), format!("{}:3000000:65536\n", user.trim())).unwrap();
    }
    let bogus = UserNsSandbox::new(SandboxOptions {
        helper_exe: kiln_exe(),
        etc_dir: etc,
        ..SandboxOptions::default()
    });
    let err = bogus
        .run(&w.snapshot, &sh("true"), &mut |_, _| {})
        .unwrap_err();
    assert!(matches!(err, SandboxError::IdMapHelper { .. }), "{err}");
    assert!(err.to_string().contains("/etc/subuid"), "{err}");
}

fn exec_in_namespace_reaches_what_rootless_steps_made_private(
    sb: &UserNsSandbox,
    kind: SnapshotterKind,
) {
    let w = World::new(kind, |_| {});
    ok(
        sb,
        &w,
        "mkdir -p /home/u && chown 1000:1000 /home/u && chmod 700 /home/u",
    );
    let tree = w
        .snapshot
        .upper()
        .or(w.snapshot.rootfs())
        .unwrap()
        .join("home/u");
    let script = format!(
        "echo added > {0}/added && stat -c %u {0}/added",
        tree.display()
    );
    let argv: Vec<std::ffi::OsString> = vec!["/bin/sh".into(), "-c".into(), script.into()];
    let env = vec![("PATH".into(), "/usr/bin:/bin".into())];
    let mut out = Vec::new();
    let status = sb
        .exec_in_namespace(&argv, &env, &mut |_, b| out.extend_from_slice(b))
        .unwrap();
    assert_eq!(
        status,
        ExitStatus::Code(0),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(out, b"0\n");
    let missing = sb.exec_in_namespace(&["/nonexistent/prog".into()], &env, &mut |_, _| {});
    assert!(
        matches!(missing, Err(SandboxError::Exec { .. })),
        "{missing:?}"
    );
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

fn a_missing_lower_directory_is_a_setup_error_naming_it(sb: &UserNsSandbox, kind: SnapshotterKind) {
    if kind != SnapshotterKind::Overlay {
        return;
    }
    let w = World::new(kind, |_| {});
    let gone = w.tmp.join("no-such-layer");
    let snap = Snapshot::overlay(vec![gone, w.base.clone()], &w.tmp.join("s2")).unwrap();
    let err = sb.run(&snap, &sh("true"), &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, SandboxError::Setup { .. }), "{err:?}");
    assert!(
        err.to_string().contains("mount overlay") && err.to_string().contains("no-such-layer"),
        "{err}"
    );
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

type Scenario = fn(&UserNsSandbox, SnapshotterKind);

const KINDS: [SnapshotterKind; 2] = [SnapshotterKind::Overlay, SnapshotterKind::Walk];

/// Lists the scenarios (for [`unprivileged_inner`]) and makes one `#[test]` per scenario, run
/// with both snapshotters as the current user.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        const SCENARIOS: &[(&str, Scenario)] = &[$((stringify!($name), $name)),*];

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

scenarios!(
    echo_hi_leaves_an_empty_diff,
    files_created_modified_deleted_and_dirs_replaced,
    chown_to_other_ids_is_reported_in_namespace_ids,
    symlinks_hardlinks_and_setuid_bits,
    a_failing_command_reports_its_exit_code,
    output_is_streamed_while_the_step_runs,
    user_1000_runs_as_1000,
    network_none_has_only_loopback,
    default_network_reaches_out_but_not_the_hosts_loopback,
    no_descriptor_of_kiln_leaks_into_the_step,
    no_process_outlives_its_step,
    signals_are_reset_for_the_step,
    mounts_are_usable_and_absent_from_the_diff,
    secrets_are_readable_by_their_user_and_never_in_the_diff,
    a_refused_subordinate_range_is_an_error_naming_the_fix,
    exec_in_namespace_reaches_what_rootless_steps_made_private,
    env_hostname_and_missing_programs,
    single_id_mode_emulates_chown_and_mknod,
    overlay_uppers_stack_as_lowers,
    a_missing_lower_directory_is_a_setup_error_naming_it,
    chown_in_namespace_gives_base_files_their_owners,
    symlinks_in_the_image_cannot_send_mounts_to_the_host,
    debian_apt_get_install_and_useradd,
    debian_network_reaches_the_registries_but_not_host_sockets,
);

/// Runs every scenario with both snapshotters; started by the `as_unprivileged_*` tests through
/// `runuser`, with `KILN_IT_MODE` saying which id mapping to expect.
#[test]
#[ignore = "run by the as_unprivileged_* tests as the test user"]
fn unprivileged_inner() {
    let Some(sb) = sandbox() else { return };
    let mode = std::env::var("KILN_IT_MODE").unwrap_or_default();
    match (mode.as_str(), sb.id_mapping()) {
        ("subordinate", IdMapping::Subordinate { .. })
        | ("single", IdMapping::Single { .. })
        | ("identity", IdMapping::Identity) => {}
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
fn run_as_test_user(mode: &str, path: &str, wrapper: &[&str]) {
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
    let (success, text) = run_test_as_test_user("sandbox::unprivileged_inner", &env, wrapper);
    eprintln!("{text}");
    assert!(success, "unprivileged run failed ({mode})");
    assert!(text.contains("1 passed"), "the inner test did not run");
}

#[test]
fn as_unprivileged_user_with_subordinate_ids() {
    run_as_test_user("subordinate", "/usr/local/bin:/usr/bin:/bin", &[]);
}

#[test]
fn as_root_in_a_rootless_container() {
    // Root in a user namespace with the test user's subordinate ids, as in a rootless container:
    // kiln is "root" there but may only map the ids it has.
    if !rustix::process::geteuid().is_root() || ensure_test_user().is_err() {
        eprintln!("skipping: needs root to create and switch to {TEST_USER}");
        return;
    }
    let probe = std::process::Command::new("runuser")
        .args([
            "-u",
            TEST_USER,
            "--",
            "unshare",
            "--map-root-user",
            "--map-auto",
            "true",
        ])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!(
            "skipping: `unshare --map-root-user --map-auto` (util-linux >= 2.38) is not available"
        );
        return;
    }
    let wrapper = ["unshare", "--map-root-user", "--map-auto"];
    run_as_test_user("identity", "/usr/local/bin:/usr/bin:/bin", &wrapper);
}

#[test]
fn as_unprivileged_user_in_single_id_mode() {
    // No newuidmap/newgidmap on PATH (and the inner test only runs absolute paths).
    run_as_test_user("single", "/nonexistent-kiln-path", &[]);
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
    // The same checks, without running anything.
    assert!(matches!(
        sb.check(&bad),
        Err(SandboxError::InvalidMount { .. })
    ));
    assert!(sb.check(&sh("true")).is_ok());
}

/// Runs a long step until killed; started by `killing_kiln_kills_the_whole_step`.
#[test]
#[ignore = "run by killing_kiln_kills_the_whole_step"]
fn long_step_inner() {
    let Some(sb) = sandbox() else { return };
    let marker = std::env::var("KILN_IT_MARKER").unwrap_or_else(|_| "1000.5".into());
    let w = World::new(SnapshotterKind::Overlay, |_| {});
    // The step ignores SIGINT: only kiln's own machinery can stop it.
    let _ = sb.run(
        &w.snapshot,
        &sh(&format!("trap '' INT; sleep {marker} & sleep {marker}")),
        &mut |_, _| {},
    );
}

#[test]
fn killing_kiln_kills_the_whole_step() {
    signal_kiln_and_check_the_step_dies(
        libc::SIGKILL,
        false,
        &format!("1000.{}", std::process::id()),
    );
}

#[test]
fn ctrl_c_kills_the_whole_step_even_when_it_ignores_sigint() {
    signal_kiln_and_check_the_step_dies(
        libc::SIGINT,
        true,
        &format!("1001.{}", std::process::id()),
    );
}

/// Prints the time of a trivial step with each snapshotter (`--ignored`, for measuring).
#[test]
#[ignore = "a measurement, not a check"]
fn per_step_overhead() {
    let Some(sb) = sandbox() else { return };
    let step = RunSpec {
        argv: vec!["/bin/true".into()],
        ..RunSpec::default()
    };
    let time = |snapshot: &Snapshot, n: u32| {
        let start = Instant::now();
        for _ in 0..n {
            assert!(sb
                .run(snapshot, &step, &mut |_, _| {})
                .unwrap()
                .status
                .success());
        }
        start.elapsed() / n
    };
    for kind in KINDS {
        let w = World::new(kind, |_| {});
        eprintln!("busybox, {kind:?}: {:?} per step", time(&w.snapshot, 20));
    }
    // The walk snapshotter's cost grows with the tree: the Debian minbase tree, if cached.
    if let Some(debian) = crate::support::debian::debian_rootfs() {
        let tmp = tempfile::tempdir().unwrap();
        let overlay = Snapshot::overlay(vec![debian.clone()], &tmp.path().join("s")).unwrap();
        eprintln!("debian minbase, Overlay: {:?} per step", time(&overlay, 5));
        let rootfs = tmp.path().join("rootfs");
        let cp = std::process::Command::new("/bin/cp")
            .arg("-a")
            .arg(&debian)
            .arg(&rootfs)
            .status();
        if cp.is_ok_and(|s| s.success()) {
            eprintln!(
                "debian minbase, Walk: {:?} per step",
                time(&Snapshot::walk(rootfs), 5)
            );
        }
        let _ = sb.remove_tree(tmp.path());
    }
}

/// Prints what a step's own network costs (`--ignored`, for measuring): a trivial step with
/// each network on the busybox base, and `apt-get update` plus a 2 MB https download from
/// deb.debian.org on the Debian base (if cached), with the host's network and the default.
#[test]
#[ignore = "a measurement, not a check"]
fn network_overhead() {
    let Some(sb) = sandbox() else { return };
    let w = World::new(SnapshotterKind::Overlay, |_| {});
    for network in [Network::Host, Network::None, Network::Default] {
        let step = RunSpec {
            argv: vec!["/bin/true".into()],
            network,
            ..RunSpec::default()
        };
        let n = 20;
        let start = Instant::now();
        for _ in 0..n {
            assert!(sb
                .run(&w.snapshot, &step, &mut |_, _| {})
                .unwrap()
                .status
                .success());
        }
        eprintln!("RUN true, {network:?}: {:?} per step", start.elapsed() / n);
    }
    let Some(debian) = crate::support::debian::debian_rootfs() else {
        return;
    };
    let script =
        "apt-get update -qq && apt-get install -y -qq --no-install-recommends curl >/dev/null";
    for network in [
        Network::Host,
        Network::Default,
        Network::Host,
        Network::Default,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let snap = Snapshot::overlay(vec![debian.clone()], &tmp.path().join("s")).unwrap();
        let start = Instant::now();
        let o = sb
            .run(
                &snap,
                &RunSpec {
                    network,
                    ..sh(script)
                },
                &mut |_, _| {},
            )
            .unwrap();
        assert!(o.status.success());
        eprintln!(
            "apt-get update + install curl, {network:?}: {:?}",
            start.elapsed()
        );
        let _ = sb.remove_tree(tmp.path());
    }
}
