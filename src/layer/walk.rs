//! Walking a directory into layer entries: sorted by path bytes, hardlinks detected, sockets
//! refused; [`SortedWalk`] hands them out in that order while it walks.
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::entry::{Entry, EntryKind, FileSource};
use super::{Error, Result};

/// Options for [`walk`].
#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Record extended attributes (except `security.selinux`, `system.*` and overlayfs' own).
    pub xattrs: bool,
    /// How the owners on disk become the owners in the layer; `None` keeps them.
    pub ids: Option<IdMap>,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            xattrs: true,
            ids: None,
        }
    }
}

/// The id an owner outside every range of an [`IdMap`] gets: the kernel's overflow id, which
/// is how a user namespace shows unmapped owners (`/proc/sys/kernel/overflowuid`).
pub const OVERFLOW_ID: u32 = 65534;

/// A user namespace's view of host owners, as `podman unshare` sees a rootless tree: ranges of
/// `(inside, outside, count)`; a host id in `outside..outside + count` is
/// `inside + (id - outside)`, any other id is [`OVERFLOW_ID`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    /// uid ranges.
    pub uid: Vec<(u32, u32, u32)>,
    /// gid ranges.
    pub gid: Vec<(u32, u32, u32)>,
}

impl IdMap {
    fn map(ranges: &[(u32, u32, u32)], host: u32) -> u32 {
        ranges
            .iter()
            .find(|&&(_, outside, count)| host >= outside && host - outside < count)
            .map_or(OVERFLOW_ID, |&(inside, outside, _)| {
                inside + (host - outside)
            })
    }

    /// The uid inside of host uid `host`.
    pub fn uid(&self, host: u32) -> u32 {
        Self::map(&self.uid, host)
    }

    /// The gid inside of host gid `host`.
    pub fn gid(&self, host: u32) -> u32 {
        Self::map(&self.gid, host)
    }
}

/// Lists every path below `root` (not `root` itself) as an [`Entry`], sorted by path bytes.
/// Returns the entries and the seconds spent.
pub fn walk(root: &Path, opts: &WalkOptions) -> Result<(Vec<Entry>, f64)> {
    let start = Instant::now();
    let mut w = SortedWalk::new(root, opts.clone())?;
    let mut entries = Vec::new();
    while let Some(batch) = w.next_batch()? {
        entries.extend(batch);
    }
    Ok((entries, start.elapsed().as_secs_f64()))
}

/// An entry found but not yet handed out, with what hardlink detection needs.
struct Found {
    entry: Entry,
    dev: u64,
    ino: u64,
    links: u64,
}

/// A walk that hands out entries in sorted order *while* it walks, so a layer can be tarred
/// (and compressed) from the first directories read on, instead of after the whole tree is
/// listed.
///
/// Directories wait in a heap keyed by their path plus `/`. Every path not yet found lies below
/// a waiting directory, so it sorts at or after the smallest key: whatever was found below that
/// key is final and goes out. (`a`, `a.txt`, `a/b` is byte order: the directory `a` goes out at
/// once, its contents only after `a.txt`.) Hardlinks are resolved in that order, so the first
/// path of an inode carries its data, as in the sorted list.
pub struct SortedWalk {
    opts: WalkOptions,
    /// Directories still to read: (relative path + `/`, absolute path).
    waiting: BinaryHeap<Reverse<(Vec<u8>, PathBuf)>>,
    found: BTreeMap<Vec<u8>, Found>,
    first: HashMap<(u64, u64), Vec<u8>>,
}

impl SortedWalk {
    /// Starts a walk of `root`, which must be a directory.
    pub fn new(root: &Path, opts: WalkOptions) -> Result<SortedWalk> {
        let meta = std::fs::metadata(root).map_err(|source| Error::Read {
            path: root.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(Error::Read {
                path: root.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        Ok(SortedWalk {
            opts,
            waiting: BinaryHeap::from([Reverse((Vec::new(), root.to_path_buf()))]),
            found: BTreeMap::new(),
            first: HashMap::new(),
        })
    }

    /// The next entries in sorted order (never an empty batch), or `None` when the walk is done.
    pub fn next_batch(&mut self) -> Result<Option<Vec<Entry>>> {
        loop {
            let ready = match self.waiting.peek() {
                None => std::mem::take(&mut self.found),
                Some(Reverse((key, _))) => {
                    let later = self.found.split_off(key);
                    std::mem::replace(&mut self.found, later)
                }
            };
            if !ready.is_empty() {
                let batch = ready.into_values().map(|f| self.resolve(f)).collect();
                return Ok(Some(batch));
            }
            let Some(Reverse((key, dir))) = self.waiting.pop() else {
                return Ok(None);
            };
            self.read_dir(&key, &dir)?;
        }
    }

    /// The first path of an inode in sorted order carries the data; later ones link to it.
    fn resolve(&mut self, f: Found) -> Entry {
        let mut e = f.entry;
        if f.links > 1 {
            match self.first.get(&(f.dev, f.ino)) {
                Some(target) => e.kind = EntryKind::Hardlink(target.clone()),
                None => {
                    self.first.insert((f.dev, f.ino), e.path.clone());
                }
            }
        }
        e
    }

    /// Lists one directory; `prefix` is its relative path plus `/` (empty for the root).
    fn read_dir(&mut self, prefix: &[u8], dir: &Path) -> Result<()> {
        let rd = std::fs::read_dir(dir).map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        for item in rd {
            let item = item.map_err(|source| Error::Read {
                path: dir.to_path_buf(),
                source,
            })?;
            let path = item.path();
            let md = std::fs::symlink_metadata(&path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            let mut rel_path = prefix.to_vec();
            rel_path.extend_from_slice(item.file_name().as_bytes());
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                let mut key = rel_path.clone();
                key.push(b'/');
                self.waiting.push(Reverse((key, path.clone())));
                EntryKind::Dir
            } else if ft.is_file() {
                EntryKind::File {
                    size: md.len(),
                    source: FileSource::Path(path.clone()),
                }
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path).map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
                EntryKind::Symlink(target.as_os_str().as_bytes().to_vec())
            } else if ft.is_fifo() {
                EntryKind::Fifo
            } else if ft.is_char_device() {
                let (major, minor) = dev_numbers(md.rdev());
                EntryKind::CharDevice { major, minor }
            } else if ft.is_block_device() {
                let (major, minor) = dev_numbers(md.rdev());
                EntryKind::BlockDevice { major, minor }
            } else {
                return Err(Error::Socket { path });
            };
            let xattrs = if self.opts.xattrs {
                read_xattrs(&path)?
            } else {
                Vec::new()
            };
            let links = if ft.is_dir() { 1 } else { md.nlink() };
            let entry = Entry {
                path: rel_path.clone(),
                kind,
                mode: md.mode() & 0o7777,
                uid: self.opts.ids.as_ref().map_or(md.uid(), |m| m.uid(md.uid())),
                gid: self.opts.ids.as_ref().map_or(md.gid(), |m| m.gid(md.gid())),
                mtime: md.mtime(),
                xattrs,
            };
            let f = Found {
                entry,
                dev: md.dev(),
                ino: md.ino(),
                links,
            };
            self.found.insert(rel_path, f);
        }
        Ok(())
    }
}

fn dev_numbers(rdev: u64) -> (u32, u32) {
    (
        rustix::fs::major(rdev as rustix::fs::Dev),
        rustix::fs::minor(rdev as rustix::fs::Dev),
    )
}

/// Whether an extended attribute belongs in a layer: host security labels, ACL internals and
/// overlayfs bookkeeping would make layers depend on the machine that built them.
pub fn keep_xattr(name: &[u8]) -> bool {
    !(name == b"security.selinux"
        || name.starts_with(b"system.")
        || name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay."))
}

fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let err = |e: rustix::io::Errno| Error::Read {
        path: path.to_path_buf(),
        source: e.into(),
    };
    let mut names = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if !keep_xattr(name) {
            continue;
        }
        let os_name = OsStr::from_bytes(name);
        let mut value = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, os_name, &mut value[..]) {
                Ok(len) => break Some(len),
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(rustix::io::Errno::NODATA) => break None,
                Err(e) => return Err(err(e)),
            }
        };
        if let Some(len) = len {
            value.truncate(len);
            out.push((String::from_utf8_lossy(name).into_owned(), value));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_map_shifts_owners_and_overflows_the_rest() {
        let m = IdMap {
            uid: vec![(0, 1001, 1), (1, 200_000, 65536)],
            gid: vec![(0, 1001, 1), (1, 300_000, 10)],
        };
        assert_eq!(m.uid(1001), 0);
        assert_eq!(m.uid(200_000), 1);
        assert_eq!(m.uid(200_999), 1000);
        assert_eq!(m.uid(0), OVERFLOW_ID);
        assert_eq!(m.gid(300_009), 10);
        assert_eq!(m.gid(300_010), OVERFLOW_ID);
    }

    #[test]
    fn entries_are_sorted_by_bytes_with_hardlinks_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::write(r.join("a.txt"), b"x").unwrap();
        std::fs::write(r.join("a/b/f"), b"hello").unwrap();
        std::fs::hard_link(r.join("a/b/f"), r.join("z")).unwrap();
        std::os::unix::fs::symlink("a/b/f", r.join("link")).unwrap();
        let (entries, _) = walk(r, &WalkOptions::default()).unwrap();
        let paths: Vec<&[u8]> = entries.iter().map(|e| &e.path[..]).collect();
        assert_eq!(
            paths,
            vec![&b"a"[..], b"a.txt", b"a/b", b"a/b/f", b"link", b"z"]
        );
        assert_eq!(entries[5].kind, EntryKind::Hardlink(b"a/b/f".to_vec()));
        assert_eq!(entries[4].kind, EntryKind::Symlink(b"a/b/f".to_vec()));
    }

    #[test]
    fn the_streaming_walk_hands_out_byte_order_while_walking() {
        // Names around '/' (0x2f) in byte order: '!' '-' '.' sort before it, '0' 'b' after, so a
        // directory's contents must wait for its siblings `a!`, `a-b`, `a.txt`.
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in ["a/b/c", "a/b.d", "a0", "ab/x", "z/y/x/w"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        for f in [
            "a!",
            "a-b",
            "a.txt",
            "a/b/c/f",
            "a/b.d/g",
            "a/b!",
            "ab/x.1",
            "z/y/x/w/h",
        ] {
            std::fs::write(r.join(f), f).unwrap();
        }
        std::fs::hard_link(r.join("z/y/x/w/h"), r.join("a/b/c/early")).unwrap();
        // The order every consumer expects, from an independent listing.
        let mut expected: Vec<Vec<u8>> = Vec::new();
        let mut stack = vec![r.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p.clone());
                }
                expected.push(p.strip_prefix(r).unwrap().as_os_str().as_bytes().to_vec());
            }
        }
        expected.sort();
        let mut w = SortedWalk::new(r, WalkOptions::default()).unwrap();
        let mut got = Vec::new();
        let mut batches = 0;
        while let Some(b) = w.next_batch().unwrap() {
            assert!(!b.is_empty());
            batches += 1;
            got.extend(b);
        }
        let paths: Vec<Vec<u8>> = got.iter().map(|e| e.path.clone()).collect();
        assert_eq!(paths, expected);
        assert!(
            batches > 3,
            "entries came in {batches} batches: not streamed"
        );
        // The hardlink's first path in byte order carries the data, whatever the walk order.
        let early = got.iter().find(|e| e.path == b"a/b/c/early").unwrap();
        assert!(matches!(early.kind, EntryKind::File { .. }));
        let late = got.iter().find(|e| e.path == b"z/y/x/w/h").unwrap();
        assert_eq!(late.kind, EntryKind::Hardlink(b"a/b/c/early".to_vec()));
    }

    #[test]
    fn sockets_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = walk(dir.path(), &WalkOptions::default()).unwrap_err();
        assert!(err.to_string().contains("s.sock"), "{err}");
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let err = walk(Path::new("/nonexistent/kiln"), &WalkOptions::default()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/kiln"));
    }
}
