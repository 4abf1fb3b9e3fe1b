//! kiln run as root or, through `runuser`, as the unprivileged test user (with subordinate ids,
//! or in single-id mode), each with a store it owns; and the checks of what it built: `umoci
//! unpack`, `podman run`, the layers' tar entries, every blob of a store.
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub mod debootstrap;

use super::users::{ensure_test_user, TEST_USER};
use super::{assert_success, is_root, need, Kiln};

/// Who runs kiln.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// The current user (root on the test machines).
    Root,
    /// [`TEST_USER`], with its /etc/subuid and /etc/subgid ranges.
    User,
}

/// Skips the test (after saying why), or fails it when `CI=true`.
pub fn skip(why: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and this test cannot run: {why}");
    }
    eprintln!("skipping: {why}");
    false
}

/// A copy of kiln every user can execute (the target directory may not be reachable), kept in
/// one directory under the temporary directory and reused while the binary is unchanged.
fn shared_kiln() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = PathBuf::from(env!("CARGO_BIN_EXE_kiln"));
        let md = std::fs::metadata(&src).unwrap();
        let stamp = md
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join("kiln-it-runas");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join(format!("kiln-{}-{stamp}", md.len()));
        if !bin.exists() {
            let tmp = dir.join(format!(".kiln-{}", std::process::id()));
            std::fs::copy(&src, &tmp).unwrap();
            std::fs::rename(&tmp, &bin).unwrap();
        }
        // Copies of older binaries (150 MB each, one per rebuild) are removed once no test run
        // can still be using them, so the directory does not grow with every rebuild.
        let stale = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < stale);
            if e.path() != bin && old {
                let _ = std::fs::remove_file(e.path());
            }
        }
        bin
    })
    .clone()
}

/// Whether user namespaces work here for `who` (probed once by a trivial busybox-free call).
fn userns_ok() -> Result<(), String> {
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    PROBED
        .get_or_init(|| {
            let out = Command::new("unshare")
                .args(["--user", "--map-root-user", "true"])
                .output()
                .map_err(|e| format!("cannot run unshare: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "user namespaces are refused: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        })
        .clone()
}

/// A kiln store owned by `who`, in a temporary directory everyone can read.
pub struct KilnAs {
    pub k: Kiln,
    pub who: Who,
    /// The PATH kiln runs with (single-id mode: one without `newuidmap`).
    pub path: String,
}

impl KilnAs {
    /// A store for `who`, or `None` (test skipped) when it cannot be had here.
    pub fn new(who: Who) -> Option<KilnAs> {
        Self::with_path(
            who,
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
    }

    /// As [`KilnAs::new`], kiln running with `path` as its PATH.
    pub fn with_path(who: Who, path: &str) -> Option<KilnAs> {
        if let Err(why) = userns_ok() {
            skip(&why);
            return None;
        }
        if who == Who::User {
            if !is_root() {
                skip("not root, so kiln cannot be run as the test user");
                return None;
            }
            if let Err(why) = ensure_test_user() {
                skip(&why);
                return None;
            }
            if !need("runuser") {
                return None;
            }
        }
        let k = Kiln::new();
        std::fs::set_permissions(k.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["store", "out"] {
            std::fs::create_dir_all(k.path(d)).unwrap();
        }
        let me = KilnAs {
            k,
            who,
            path: path.to_owned(),
        };
        me.give(&me.k.root());
        me.give(&me.k.path("out"));
        Some(me)
    }

    /// Makes `path` (recursively) belong to `who`.
    pub fn give(&self, path: &Path) {
        if self.who == Who::User {
            super::run(
                Command::new("chown")
                    .args(["-R", &format!("{TEST_USER}:{TEST_USER}")])
                    .arg(path),
            );
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.k.path(rel)
    }

    /// `kiln --root STORE --progress PROGRESS …` as `who`.
    pub fn cmd_progress(&self, progress: &str) -> Command {
        let mut c = match self.who {
            Who::Root => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
                c.env("PATH", &self.path);
                c
            }
            Who::User => {
                let mut c = Command::new("runuser");
                c.args([
                    "-u",
                    TEST_USER,
                    "--",
                    "env",
                    "-i",
                    "TMPDIR=/tmp",
                    "HOME=/tmp",
                ])
                .arg(format!("PATH={}", self.path))
                .arg(shared_kiln());
                c
            }
        };
        c.arg("--root")
            .arg(self.k.root())
            .arg("--progress")
            .arg(progress)
            .current_dir("/tmp");
        c.env_remove("SOURCE_DATE_EPOCH").env_remove("KILN_ROOT");
        c
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.cmd_progress("quiet").args(args).output().unwrap()
    }

    /// Runs kiln; panics with its output unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert_success(&out, &(self.who, args));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs kiln expecting failure; returns (exit code, stdout, stderr).
    pub fn fails(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.output(args);
        assert!(
            !out.status.success(),
            "kiln {args:?} as {:?} should have failed; stdout:\n{}",
            self.who,
            String::from_utf8_lossy(&out.stdout)
        );
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Imports the busybox base as `busybox` (made by root, imported by `who`).
    pub fn busybox(&self) -> bool {
        let root = self.path("busybox-rootfs");
        std::fs::create_dir_all(&root).unwrap();
        if !super::busybox::rootfs(&root) {
            return false;
        }
        // The test user's tree, as a rootless user has it: its own files are root's.
        self.give(&root);
        self.ok(&[
            "import",
            root.to_str().unwrap(),
            "-t",
            "busybox",
            "--cmd",
            "/bin/sh",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]);
        true
    }

    /// Writes a build context (files readable by `who`) with this Dockerfile.
    pub fn context(&self, name: &str, dockerfile: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let c = self.path(name);
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("Dockerfile"), dockerfile).unwrap();
        for (rel, bytes) in files {
            let p = c.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        c
    }

    /// The store's files (every one, recursively), for searching.
    pub fn store_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.k.root(), &mut out);
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            walk(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

/// The bytes of a blob and, if it is gzip- or zstd-compressed, its decompressed bytes too.
pub fn blob_views(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut views = vec![bytes.to_vec()];
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut d = Vec::new();
        if flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut d)
            .is_ok()
        {
            views.push(d);
        }
    }
    if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        if let Ok(d) = zstd::stream::decode_all(bytes) {
            views.push(d);
        }
    }
    views
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// One tar entry of a layer: path, type (`f`, `d`, `l`, `h`, …), mode, uid, gid, link target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    pub path: String,
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub link: String,
}

/// The entries of a (gzip or plain) layer blob.
pub fn layer_entries(blob: &[u8]) -> Vec<TarEntry> {
    let raw = blob_views(blob).pop().unwrap();
    let mut a = tar::Archive::new(&raw[..]);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            let kind = match h.entry_type() {
                tar::EntryType::Regular => 'f',
                tar::EntryType::Directory => 'd',
                tar::EntryType::Symlink => 'l',
                tar::EntryType::Link => 'h',
                tar::EntryType::Char => 'c',
                tar::EntryType::Block => 'b',
                tar::EntryType::Fifo => 'p',
                _ => '?',
            };
            TarEntry {
                path: String::from_utf8_lossy(&e.path_bytes())
                    .trim_start_matches("./")
                    .trim_end_matches('/')
                    .to_string(),
                kind,
                mode: h.mode().unwrap() & 0o7777,
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                link: e
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// The layer blobs of the image `tag` in the OCI layout `layout`, base first.
pub fn layout_layers(layout: &Path, tag: &str) -> Vec<Vec<u8>> {
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(desc["digest"].as_str().unwrap())).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blob(l["digest"].as_str().unwrap()))
        .collect()
}

/// `umoci unpack` (as root, so owners are kept) of `layout:tag` into `bundle`; returns its rootfs.
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    super::run(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{tag}", layout.display()))
            .arg(bundle),
    );
    bundle.join("rootfs")
}

/// `podman run` (runc, vfs, no network, private storage under `dir`) of an OCI archive; returns
/// stdout. `args` follow the image (a command, or nothing for the image's CMD).
pub fn podman_run(dir: &Path, archive: &Path, args: &[&str]) -> String {
    let out = podman_output(dir, archive, args);
    assert_success(&out, &("podman run", archive, args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn podman_output(dir: &Path, archive: &Path, args: &[&str]) -> Output {
    Command::new("podman")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args([
            "--storage-driver",
            "vfs",
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
        ])
        .arg(format!("oci-archive:{}", archive.display()))
        .args(args)
        .output()
        .unwrap()
}
