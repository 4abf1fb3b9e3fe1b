//! Snapshotters: how a step's root filesystem is prepared, and how its changes become a [`Diff`].
//!
//! - **overlay** ([`Snapshot::overlay`]): kernel overlayfs mounted inside the step's mount
//!   namespace (unprivileged since Linux 5.11, with `userxattr`) over the stacked lower
//!   directories; the upper directory is the diff. Cost follows what changed, not the image size.
//!   An upper directory is itself a valid lower directory for the next step.
//! - **walk** ([`Snapshot::walk`]): the step runs directly on a writable root filesystem; a
//!   metadata snapshot taken before the step is compared with one taken after.
//!
//! Both are read inside the user namespace by the helper, so the ids in a [`Diff`] are the ids the
//! step saw. A [`Diff`] lists changes with parents before children; the layer writer turns
//! [`ChangeKind::Delete`] into `.wh.NAME` and [`ChangeKind::OpaqueDir`] into `.wh..wh..opq`.
//!
//! A [`Snapshot`] holds its root filesystem as a `Root`, which is also what kiln sends the helper
//! to mount, serialised as it is (`protocol::RunJob`).
mod bytes;
pub mod overlay;
pub(crate) mod walk;

use super::error::{Result, SandboxError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The snapshotter names accepted by `--snapshotter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotterKind {
    /// Kernel overlayfs.
    Overlay,
    /// Metadata walk before and after.
    Walk,
}

impl std::str::FromStr for SnapshotterKind {
    type Err = SandboxError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "overlay" => Ok(SnapshotterKind::Overlay),
            "walk" => Ok(SnapshotterKind::Walk),
            _ => Err(SandboxError::UnknownSnapshotter { name: s.to_owned() }),
        }
    }
}

impl SnapshotterKind {
    /// Parses a `--snapshotter` value: `overlay`, `walk`, or `auto` (`None`: let
    /// [`crate::sandbox::ProbeReport::snapshotter`] choose).
    pub fn parse_choice(s: &str) -> Result<Option<SnapshotterKind>> {
        match s {
            "auto" => Ok(None),
            other => other.parse().map(Some),
        }
    }
}

/// The root filesystem of one step, prepared by a snapshotter. Use a fresh snapshot per step:
/// an overlay's diff is its whole upper directory.
#[derive(Debug, Clone)]
pub struct Snapshot {
    root: Root,
}

/// The root filesystem of a step: what [`Snapshot`] holds, and what kiln sends the helper in
/// [`super::protocol::RunJob`] to mount (one type, serialised as it is).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Root {
    /// Overlay of `lowers` (top first) with `upper` and `work`, mounted at `merged`.
    Overlay {
        /// Lower directories, top first.
        lowers: Vec<PathBuf>,
        /// Upper directory: becomes the diff.
        upper: PathBuf,
        /// Overlay work directory.
        work: PathBuf,
        /// Mount point.
        merged: PathBuf,
    },
    /// A writable directory, compared with a metadata walk before and after.
    Walk {
        /// The root filesystem.
        rootfs: PathBuf,
    },
}

impl Snapshot {
    /// An overlay over `lowers` (topmost first; may be empty for `FROM scratch`), with fresh
    /// `upper`, `work` and `merged` directories created under `scratch`, which must be empty
    /// and on a filesystem with user xattrs (ext4, xfs, btrfs, tmpfs ≥ 6.6). Lower directories
    /// use overlay's own format for deletions: see [`overlay::make_whiteout`]. Remove `scratch`
    /// with [`crate::sandbox::UserNsSandbox::remove_tree`]: overlayfs leaves a mode-000
    /// `work/work` directory, and a rootless step can leave directories of other uids.
    pub fn overlay(lowers: Vec<PathBuf>, scratch: &Path) -> Result<Snapshot> {
        for lower in &lowers {
            let bytes = lower.as_os_str().as_bytes();
            if bytes.iter().any(|b| matches!(b, b',' | b':' | b'\n')) || !lower.is_absolute() {
                return Err(SandboxError::OverlayPath {
                    path: lower.clone(),
                });
            }
        }
        let mk = |name: &str| {
            let p = scratch.join(name);
            std::fs::create_dir_all(&p).map_err(|source| SandboxError::Io {
                action: "create",
                path: p.clone(),
                source,
            })?;
            Ok::<_, SandboxError>(p)
        };
        let mut lowers = lowers;
        if lowers.is_empty() {
            // overlayfs needs at least one lower directory.
            lowers.push(mk("empty")?);
        }
        let root = Root::Overlay {
            lowers,
            upper: mk("upper")?,
            work: mk("work")?,
            merged: mk("merged")?,
        };
        Ok(Snapshot { root })
    }

    /// The step runs directly on `rootfs`, a writable directory that the builder owns; kiln
    /// writes per-step files (bound /etc files, readable copies) next to it, in its parent.
    pub fn walk(rootfs: PathBuf) -> Snapshot {
        Snapshot {
            root: Root::Walk { rootfs },
        }
    }

    /// Which snapshotter made this snapshot.
    pub fn kind(&self) -> SnapshotterKind {
        match self.root {
            Root::Overlay { .. } => SnapshotterKind::Overlay,
            Root::Walk { .. } => SnapshotterKind::Walk,
        }
    }

    /// The overlay upper directory (the step's changes, usable as a lower of the next step).
    pub fn upper(&self) -> Option<&Path> {
        match &self.root {
            Root::Overlay { upper, .. } => Some(upper),
            Root::Walk { .. } => None,
        }
    }

    /// The directory whose tree the step sees, for the walk snapshotter.
    pub fn rootfs(&self) -> Option<&Path> {
        match &self.root {
            Root::Overlay { .. } => None,
            Root::Walk { rootfs } => Some(rootfs),
        }
    }

    /// Whether the absolute container path `path` exists in this root filesystem, following
    /// symlinks inside it: lets the builder refuse a shell-form RUN on a base without `/bin/sh`
    /// before any step runs. (Directories the caller may not search count as missing.)
    pub fn exists(&self, path: &str) -> bool {
        match &self.root {
            Root::Overlay { lowers, upper, .. } => {
                let layers: Vec<PathBuf> = std::iter::once(upper.clone())
                    .chain(lowers.iter().cloned())
                    .collect();
                overlay::exists(&layers, path)
            }
            Root::Walk { rootfs } => {
                let Ok(root) = rustix::fs::open(
                    rootfs,
                    rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                ) else {
                    return false;
                };
                let rel = path.trim_start_matches('/');
                crate::inroot::open(&root, rel, rustix::fs::OFlags::PATH).is_ok()
            }
        }
    }

    /// The root filesystem, as the helper mounts it.
    pub(crate) fn root(&self) -> &Root {
        &self.root
    }
}

/// The changes one step made to its root filesystem, parents before children.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    /// The changes, sorted component by component (so a directory's descendants follow it).
    pub changes: Vec<Change>,
}

impl Diff {
    /// The change at `path` (relative, no leading `/`) of the given shape, if any.
    pub fn find(&self, path: &str) -> impl Iterator<Item = &Change> {
        let path = path.as_bytes().to_vec();
        self.changes.iter().filter(move |c| c.path == path)
    }

    /// The upserted entry at `path`, if any.
    pub fn upsert(&self, path: &str) -> Option<&Entry> {
        self.find(path).find_map(|c| match &c.kind {
            ChangeKind::Upsert(e) => Some(e),
            _ => None,
        })
    }

    /// Whether `path` is deleted by this diff.
    pub fn deletes(&self, path: &str) -> bool {
        self.find(path).any(|c| c.kind == ChangeKind::Delete)
    }

    /// Whether `path` is an opaque directory in this diff.
    pub fn is_opaque(&self, path: &str) -> bool {
        self.find(path).any(|c| c.kind == ChangeKind::OpaqueDir)
    }

    /// The paths, for messages and tests.
    pub fn paths(&self) -> Vec<String> {
        self.changes
            .iter()
            .map(|c| String::from_utf8_lossy(&c.path).into_owned())
            .collect()
    }
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Relative path (no leading `/`), as raw bytes.
    #[serde(with = "bytes")]
    pub path: Vec<u8>,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// What happened to a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// Created or modified: write this entry into the layer.
    Upsert(Entry),
    /// Deleted: a `.wh.NAME` whiteout.
    Delete,
    /// The directory replaces the lower one's contents: a `.wh..wh..opq` marker. Always follows
    /// the [`ChangeKind::Upsert`] of the same directory.
    OpaqueDir,
}

/// The new state of an upserted path, read inside the user namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where to read the content on the host (regular files; a private readable copy when the
    /// original is not readable by the caller).
    #[serde(with = "bytes::path")]
    pub host_path: PathBuf,
    /// The file type.
    pub kind: FileKind,
    /// Permission bits, including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    /// Owner, as the step saw it.
    pub uid: u32,
    /// Group, as the step saw it.
    pub gid: u32,
    /// Size in bytes (regular files).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// An earlier path of this diff that is the same inode: write a hard link to it.
    #[serde(with = "bytes::option")]
    pub hardlink_to: Option<Vec<u8>>,
    /// Extended attributes, except overlayfs's own.
    #[serde(with = "bytes::pairs")]
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The type of an [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink {
        /// The link target, as raw bytes.
        #[serde(with = "bytes")]
        target: Vec<u8>,
    },
    /// A character device.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// The metadata of one path, with what is needed to compare and link (not sent to kiln).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    pub entry: Entry,
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
    pub ctime: (i64, i64),
}

impl Meta {
    /// Reads `path` without following a final symlink; `None` for sockets (tar has none).
    pub(crate) fn read(path: &Path) -> std::io::Result<Option<Meta>> {
        let md = std::fs::symlink_metadata(path)?;
        let ft = md.mode() & libc::S_IFMT;
        let (major, minor) = (libc::major(md.rdev()), libc::minor(md.rdev()));
        let kind = match ft {
            libc::S_IFREG => FileKind::Regular,
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFLNK => FileKind::Symlink {
                target: std::fs::read_link(path)?.into_os_string().into_vec(),
            },
            libc::S_IFCHR => FileKind::CharDevice { major, minor },
            libc::S_IFBLK => FileKind::BlockDevice { major, minor },
            libc::S_IFIFO => FileKind::Fifo,
            _ => return Ok(None),
        };
        let entry = Entry {
            host_path: path.to_owned(),
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: if ft == libc::S_IFREG { md.size() } else { 0 },
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec() as u32,
            hardlink_to: None,
            xattrs: read_xattrs(path)?,
        };
        Ok(Some(Meta {
            entry,
            ino: md.ino(),
            dev: md.dev(),
            nlink: md.nlink(),
            ctime: (md.ctime(), md.ctime_nsec()),
        }))
    }
}

impl Meta {
    /// Builds the metadata of `host_path` from a `stat` already made (by the walk, relative to
    /// its directory); `None` for sockets.
    // `struct stat` field types differ between architectures: the casts are not all no-ops.
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn from_stat(
        host_path: PathBuf,
        st: &rustix::fs::Stat,
        link_target: Option<Vec<u8>>,
        xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Option<Meta> {
        let mode = st.st_mode as u32;
        let ft = mode & libc::S_IFMT;
        let rdev = st.st_rdev as libc::dev_t;
        let (major, minor) = (libc::major(rdev), libc::minor(rdev));
        let kind = match ft {
            libc::S_IFREG => FileKind::Regular,
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFLNK => FileKind::Symlink {
                target: link_target.unwrap_or_default(),
            },
            libc::S_IFCHR => FileKind::CharDevice { major, minor },
            libc::S_IFBLK => FileKind::BlockDevice { major, minor },
            libc::S_IFIFO => FileKind::Fifo,
            _ => return None,
        };
        let entry = Entry {
            host_path,
            kind,
            mode: mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: if ft == libc::S_IFREG {
                st.st_size as u64
            } else {
                0
            },
            mtime: st.st_mtime as i64,
            mtime_nsec: st.st_mtime_nsec as u32,
            hardlink_to: None,
            xattrs,
        };
        Some(Meta {
            entry,
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            nlink: st.st_nlink as u64,
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
        })
    }
}

use std::os::unix::ffi::OsStringExt;

/// Whether an xattr name belongs to overlayfs itself (never part of a layer).
pub(crate) fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.overlay.") || name.starts_with(b"trusted.overlay.")
}

/// Reads the value of xattr `name` of `path` (not following symlinks).
pub(crate) fn get_xattr(path: &Path, name: &[u8]) -> Option<Vec<u8>> {
    let cpath = CString::new(path.as_os_str().as_bytes()).ok()?;
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: cpath and cname are NUL-terminated; buf is valid for buf.len() bytes.
        let n = unsafe {
            libc::lgetxattr(
                cpath.as_ptr(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return Some(buf);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE)
            || buf.len() > 1 << 20
        {
            return None;
        }
        buf.resize(buf.len() * 4, 0);
    }
}

/// Lists and reads every xattr of `path` except overlayfs's own, sorted by name.
pub(crate) fn read_xattrs(path: &Path) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: cpath is NUL-terminated; names is valid for names.len() bytes.
        let n = unsafe { libc::llistxattr(cpath.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) if names.len() < 1 << 20 => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(err),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if is_overlay_xattr(name) {
            continue;
        }
        if let Some(value) = get_xattr(path, name) {
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// Orders paths component by component, so every directory is followed by its descendants.
pub(crate) fn component_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

/// Whether `child` is strictly below `dir`.
pub(crate) fn is_below(child: &[u8], dir: &[u8]) -> bool {
    child.len() > dir.len() + 1 && child.starts_with(dir) && child[dir.len()] == b'/'
}

/// Sets `hardlink_to` for the second and later paths of each inode upserted more than once.
pub(crate) fn link_hardlinks(changes: &mut [Change], inodes: &HashMap<Vec<u8>, (u64, u64)>) {
    let mut first: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for change in changes.iter_mut() {
        let ChangeKind::Upsert(entry) = &mut change.kind else {
            continue;
        };
        let Some(key) = inodes.get(&change.path) else {
            continue;
        };
        match first.get(key) {
            Some(target) => entry.hardlink_to = Some(target.clone()),
            None => {
                first.insert(*key, change.path.clone());
            }
        }
    }
}

/// Whether the caller (uid 0 and gid 0 in the namespace) can `bit` (4 read, 1 search) `meta`.
fn caller_may(entry: &Entry, bit: u32) -> bool {
    let shift = if entry.uid == 0 {
        6
    } else if entry.gid == 0 {
        3
    } else {
        0
    };
    entry.mode >> shift & bit != 0
}

/// Makes every regular file of `diff` readable by the unprivileged caller: files it could not
/// read (owned by a subordinate id, or under such a directory) are copied, as root in the
/// namespace, into `copy_dir`, and their `host_path` points at the copy. Metadata is unchanged.
pub(crate) fn make_readable(diff: &mut Diff, root: &Path, copy_dir: &Path) -> std::io::Result<()> {
    let mut dir_ok: HashMap<PathBuf, bool> = HashMap::new();
    let mut n = 0u64;
    for change in &mut diff.changes {
        let ChangeKind::Upsert(entry) = &mut change.kind else {
            continue;
        };
        if entry.kind != FileKind::Regular {
            continue;
        }
        let mut readable = caller_may(entry, 4);
        let mut dir = entry.host_path.parent();
        while readable {
            let Some(d) = dir else { break };
            if !d.starts_with(root) || d == root {
                break;
            }
            let ok = match dir_ok.get(d) {
                Some(ok) => *ok,
                None => {
                    let ok = Meta::read(d)?.is_some_and(|m| caller_may(&m.entry, 1));
                    dir_ok.insert(d.to_owned(), ok);
                    ok
                }
            };
            readable = ok;
            dir = d.parent();
        }
        if readable {
            continue;
        }
        if n == 0 {
            std::fs::create_dir_all(copy_dir)?;
        }
        let copy = copy_dir.join(n.to_string());
        n += 1;
        std::fs::copy(&entry.host_path, &copy)?;
        std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        entry.host_path = copy;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_order_puts_descendants_right_after_their_directory() {
        let mut v: Vec<&[u8]> = vec![b"a/b/c", b"a/b-x", b"a/b", b"a"];
        v.sort_by(|a, b| component_order(a, b));
        assert_eq!(v, vec![&b"a"[..], b"a/b", b"a/b/c", b"a/b-x"]);
        assert!(is_below(b"a/b/c", b"a/b"));
        assert!(!is_below(b"a/b-x", b"a/b"));
    }

    #[test]
    fn diffs_with_names_that_are_not_utf8_survive_json() {
        use std::os::unix::ffi::OsStringExt;
        let entry = Entry {
            host_path: PathBuf::from(std::ffi::OsString::from_vec(b"/up/caf\xe9".to_vec())),
            kind: FileKind::Symlink {
                target: b"\xff/x".to_vec(),
            },
            mode: 0o777,
            uid: 1,
            gid: 2,
            size: 0,
            mtime: 3,
            mtime_nsec: 4,
            hardlink_to: Some(b"h\xfe".to_vec()),
            xattrs: vec![(b"security.capability".to_vec(), vec![1, 0, 0, 2, 0xff])],
        };
        let diff = Diff {
            changes: vec![
                Change {
                    path: b"caf\xe9".to_vec(),
                    kind: ChangeKind::Upsert(entry),
                },
                Change {
                    path: b"plain/name".to_vec(),
                    kind: ChangeKind::Delete,
                },
            ],
        };
        let json = serde_json::to_string(&diff).unwrap();
        assert!(json.contains("\"plain/name\""), "{json}");
        assert_eq!(serde_json::from_str::<Diff>(&json).unwrap(), diff);
    }

    #[test]
    fn unknown_snapshotter_names_the_choices() {
        assert_eq!(SnapshotterKind::parse_choice("auto").unwrap(), None);
        assert_eq!(
            SnapshotterKind::parse_choice("walk").unwrap(),
            Some(SnapshotterKind::Walk)
        );
        let err = "zfs".parse::<SnapshotterKind>().unwrap_err();
        assert!(err.to_string().contains("`overlay`, `walk`"));
    }
}
