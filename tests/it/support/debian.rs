//! The Debian bookworm minbase tree some sandbox tests use when it is cached on the machine
//! (`debootstrap --variant=minbase bookworm /var/tmp/kiln-sandbox-bookworm`), and the copy of it
//! owned by the unprivileged test user.
use super::sandbox::{sh, single, RemoveOnDrop};
use super::users::TEST_USER;
use kiln::sandbox::{RunSpec, Sandbox, Snapshot, SnapshotterKind, Stream, User, UserNsSandbox};
use std::path::PathBuf;

/// The cached `debootstrap --variant=minbase bookworm` tree (owned by the current user), if any.
pub fn debian_rootfs() -> Option<PathBuf> {
    let dir = std::env::var_os("KILN_IT_DEBIAN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEBIAN_ROOTFS));
    dir.join("usr/bin/apt-get").exists().then_some(dir)
}

/// Where the tests look for a Debian bookworm minbase tree made by `debootstrap`.
pub const DEBIAN_ROOTFS: &str = "/var/tmp/kiln-sandbox-bookworm";

/// A copy of the Debian tree owned by the test user, as a rootless `kiln import` would unpack
/// it (made once; every id becomes the user's, that is 0 in the namespace).
pub fn debian_rootfs_for_test_user() -> Option<PathBuf> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src = super::runas::debootstrap::ensure_rootfs()?;
    let dst = PathBuf::from(format!("{}-{TEST_USER}", src.display()));
    if dst.join("usr/bin/apt-get").exists() {
        return Some(dst);
    }
    let tmp = PathBuf::from(format!("{}.tmp", dst.display()));
    let _ = std::fs::remove_dir_all(&tmp);
    let ok = |c: &mut std::process::Command| c.status().is_ok_and(|s| s.success());
    if ok(std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&tmp))
        // A rootless import cannot create device nodes either.
        && ok(std::process::Command::new("find").arg(tmp.join("dev")).args(["-mindepth", "1", "-delete"]))
        && ok(std::process::Command::new("chown")
            .args(["-R", "-h", &format!("{TEST_USER}:{TEST_USER}")])
            .arg(&tmp))
        && std::fs::rename(&tmp, &dst).is_ok()
    {
        return Some(dst);
    }
    None
}

/// The scenario: `apt-get install`, `useradd`, then a step as USER 1000, on the Debian tree
/// (skipped, saying why, when it is not cached).
pub fn debian_apt_get_install_and_useradd(sb: &UserNsSandbox, kind: SnapshotterKind) {
    // Made with debootstrap when missing (as root); under CI=true a missing tree fails loudly.
    let Some(src) = super::runas::debootstrap::ensure_rootfs() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and no Debian tree could be made at {DEBIAN_ROOTFS}"
        );
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
        "etc/apt/apt.conf.d/00kiln-single-id",
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

/// The default network on a Debian base, rootless or not: `apt-get update` and
/// `apt-get install curl` from deb.debian.org, then https (with the host's CA bundle, bound in,
/// since the way out may intercept TLS) to the Debian, PyPI and npm registries; and the host's
/// abstract unix socket refuses the step's `connect`, while a `--network=host` step reaches it
/// (so the probe can tell). The network does not depend on the snapshotter: overlay only.
pub fn debian_network_reaches_the_registries_but_not_host_sockets(
    sb: &UserNsSandbox,
    kind: SnapshotterKind,
) {
    use kiln::sandbox::{Mount, MountKind, Network};
    use std::os::linux::net::SocketAddrExt;
    if kind != SnapshotterKind::Overlay {
        return;
    }
    let Some(src) = super::runas::debootstrap::ensure_rootfs() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and no Debian tree could be made at {DEBIAN_ROOTFS}"
        );
        eprintln!("skipping: no Debian rootfs at {DEBIAN_ROOTFS}");
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("kiln-it-deb-net-")
        .tempdir()
        .unwrap();
    let _cleanup = RemoveOnDrop(tmp.path().to_owned());
    let name = format!("kiln-it-deb-abstract-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _abstract = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let perl = format!(
        "perl -MSocket -e 'socket(S, AF_UNIX, SOCK_STREAM, 0) or die; \
         print connect(S, pack_sockaddr_un(\"\\0{name}\")) ? \"abstract reached\\n\" : \"abstract: $!\\n\"'"
    );
    let run = |dir: &str, spec: RunSpec| {
        let snap = Snapshot::overlay(vec![src.clone()], &tmp.path().join(dir)).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let o = sb
            .run(&snap, &spec, &mut |s, b| match s {
                Stream::Stdout => out.extend_from_slice(b),
                Stream::Stderr => err.extend_from_slice(b),
            })
            .unwrap();
        let (out, err) = (String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
        assert!(o.status.success(), "{:?}: {out}{err}", o.status);
        out.into_owned()
    };
    let host = run(
        "host",
        RunSpec {
            network: Network::Host,
            ..sh(&perl)
        },
    );
    assert_eq!(host, "abstract reached\n");
    let script = format!(
        "apt-get update -qq && apt-get install -y -qq --no-install-recommends curl >/dev/null && \
         for u in https://deb.debian.org/debian/dists/bookworm/Release https://pypi.org/simple/pip/ \
         https://registry.npmjs.org/-/ping; do \
         curl -sS --cacert /run/kiln-host-ca.crt -o /dev/null -w '%{{http_code}}\\n' \"$u\"; done && {perl}"
    );
    let spec = RunSpec {
        mounts: vec![Mount {
            target: "/run/kiln-host-ca.crt".into(),
            kind: MountKind::Bind {
                root: "/etc/ssl/certs".into(),
                source: "ca-certificates.crt".into(),
                readonly: true,
            },
        }],
        ..sh(&script)
    };
    assert_eq!(
        run("default", spec),
        "200\n200\n200\nabstract: Connection refused\n"
    );
}
