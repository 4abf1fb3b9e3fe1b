//! Helpers shared by the integration tests: running kiln, requiring real tools, tree snapshots.
#![allow(dead_code)]

pub mod buildah;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

pub mod busybox;
pub mod containerd;
pub mod debian;
pub mod fault_proxy;
pub mod git;
pub mod measured;
pub mod registry;
pub mod rootfs;
pub mod runas;
pub mod sandbox;
pub mod users;

/// A kiln with its own store in a temp dir.
pub struct Kiln {
    pub dir: tempfile::TempDir,
}

impl Kiln {
    pub fn new() -> Kiln {
        Kiln {
            dir: tempfile::Builder::new()
                .prefix("kiln-it-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A path inside this test's temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.arg("--root")
            .arg(self.root())
            .arg("--progress")
            .arg("quiet");
        c.env_remove("SOURCE_DATE_EPOCH").env_remove("KILN_ROOT");
        c
    }

    /// Runs kiln with `args`; panics with its output unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert_success(&out, &args);
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs kiln with `args`, expecting failure; returns (exit code, stderr).
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            !out.status.success(),
            "kiln {args:?} should have failed; stdout:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

pub fn assert_success(out: &Output, what: &dyn std::fmt::Debug) {
    assert!(
        out.status.success(),
        "{what:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs an external command, panicking with its output on failure.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert_success(&out, cmd);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a real tool is on PATH. Missing tools skip the test on a developer's machine and fail
/// it in CI (`CI=true`), so a green CI always means the test ran.
pub fn need(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{tool} is required in CI but is not installed (run scripts/test.sh, which installs it)");
        }
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn sha256_file(p: &Path) -> String {
    sha256_hex(&std::fs::read(p).unwrap())
}

/// What a file-system entry is, for comparing trees (mtimes are not compared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub content: String,
    pub link: String,
    /// For hard-linked files: the first path (sorted) of the inode.
    pub hardlink_group: String,
    pub rdev: u64,
}

/// Every path below `root` with its metadata.
pub fn snapshot(root: &Path) -> BTreeMap<String, Meta> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut paths = Vec::new();
    collect(root, root, &mut paths);
    paths.sort();
    for (rel, p) in paths {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else {
            "other"
        };
        let group = if ft.is_file() && md.nlink() > 1 {
            inodes
                .entry((md.dev(), md.ino()))
                .or_insert_with(|| rel.clone())
                .clone()
        } else {
            String::new()
        };
        out.insert(
            rel,
            Meta {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if ft.is_file() { md.len() } else { 0 },
                content: if ft.is_file() {
                    sha256_file(&p)
                } else {
                    String::new()
                },
                link: if ft.is_symlink() {
                    std::fs::read_link(&p)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                } else {
                    String::new()
                },
                hardlink_group: group,
                rdev: if ft.is_char_device() || ft.is_block_device() {
                    md.rdev()
                } else {
                    0
                },
            },
        );
    }
    out
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let is_dir = e.file_type().unwrap().is_dir();
        out.push((rel, p.clone()));
        if is_dir {
            collect(root, &p, out);
        }
    }
}

/// Deterministic pseudo-random bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A tree with every kind of entry a layer must carry.
pub fn rich_tree(root: &Path) {
    use std::os::unix::fs::{chown, symlink, PermissionsExt};
    let mk = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
    let write = |p: &str, data: &[u8], mode: u32| {
        let path = root.join(p);
        std::fs::write(&path, data).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    mk("a/b");
    mk("empty");
    mk("sticky");
    mk("setgid");
    write("a/file.txt", b"hello\n", 0o644);
    write("a/b/exec", b"#!/bin/sh\necho hi\n", 0o755);
    write("a/setuid", b"suid", 0o4755);
    write("big.bin", &noise(7, 3 << 20), 0o600);
    write("zero-size", b"", 0o644);
    let long_dir = format!("long/{}", "d".repeat(150));
    mk(&long_dir);
    write(&format!("{long_dir}/{}", "f".repeat(120)), b"deep", 0o644);
    write(&"n".repeat(99), b"99", 0o644);
    symlink("file.txt", root.join("a/link")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();
    symlink("t".repeat(180), root.join("longlink")).unwrap();
    std::fs::hard_link(root.join("a/file.txt"), root.join("hard")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    std::fs::set_permissions(root.join("empty"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(root.join("sticky"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(root.join("setgid"), std::fs::Permissions::from_mode(0o2775)).unwrap();
    if is_root() {
        chown(root.join("a/b/exec"), Some(1000), Some(1000)).unwrap();
        chown(root.join("a/b"), Some(1000), Some(100)).unwrap();
        chown(root.join("big.bin"), Some(3_000_000), Some(3_000_001)).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
    }
    let _ = rustix::fs::lsetxattr(
        root.join("a/file.txt"),
        "user.kiln.test",
        b"v\x00bin",
        rustix::fs::XattrFlags::empty(),
    );
}

/// Every blob file of an OCI layout, checked: its SHA-256 equals its name.
pub fn check_layout_blobs(layout: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert_eq!(
            sha256_file(&e.path()),
            name,
            "blob {name} does not hash to its name"
        );
        n += 1;
    }
    n
}

/// Whether `tool` can be run. When it cannot, prints why and returns false so the test can
/// return early, except under `CI=true`, where a missing tool fails the test loudly.
pub fn require_tool(tool: &str, args: &[&str]) -> bool {
    let ok = std::process::Command::new(tool)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("`{tool}` is required under CI=true but cannot be run");
        }
        eprintln!("skipping: `{tool}` is not installed");
    }
    ok
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A free TCP port on 127.0.0.1 (bound, read, released: a small race we accept in tests).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 works");
    l.local_addr()
        .expect("a bound socket has an address")
        .port()
}

/// The flags `podman run` needs on these machines (runc, explicit ulimits, no network).
pub const PODMAN_RUN: [&str; 10] = [
    "run",
    "--rm",
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
    "--network",
    "none",
];

/// Runs podman with a private vfs store under `dir`; panics with its output on failure.
pub fn podman(dir: &Path, args: &[&str]) -> String {
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"));
    c.args(["--storage-driver", "vfs"]);
    run(c.args(args))
}
