//! Walking a directory into layer entries: sorted by path bytes, hardlinks detected, sockets refused.
use std::collections::HashMap;
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
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions { xattrs: true }
    }
}

/// Lists every path below `root` (not `root` itself) as an [`Entry`], sorted by path bytes.
/// Returns the entries and the seconds spent.
pub fn walk(root: &Path, opts: &WalkOptions) -> Result<(Vec<Entry>, f64)> {
    let start = Instant::now();
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
    let mut raw: Vec<(Entry, u64, u64, u64)> = Vec::new();
    let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(root.to_path_buf(), Vec::new())];
    while let Some((dir, rel)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|source| Error::Read {
            path: dir.clone(),
            source,
        })?;
        for item in rd {
            let item = item.map_err(|source| Error::Read {
                path: dir.clone(),
                source,
            })?;
            let path = item.path();
            let md = std::fs::symlink_metadata(&path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            let mut rel_path = rel.clone();
            if !rel_path.is_empty() {
                rel_path.push(b'/');
            }
            rel_path.extend_from_slice(item.file_name().as_bytes());
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                stack.push((path.clone(), rel_path.clone()));
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
            let xattrs = if opts.xattrs {
                read_xattrs(&path)?
            } else {
                Vec::new()
            };
            let links = if ft.is_dir() { 1 } else { md.nlink() };
            raw.push((
                Entry {
                    path: rel_path,
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime: md.mtime(),
                    xattrs,
                },
                md.dev(),
                md.ino(),
                links,
            ));
        }
    }
    raw.sort_unstable_by(|a, b| a.0.path.cmp(&b.0.path));
    // The first path of an inode in sorted order carries the data; later ones link to it.
    let mut first: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let entries = raw
        .into_iter()
        .map(|(mut e, dev, ino, links)| {
            if links > 1 {
                match first.get(&(dev, ino)) {
                    Some(target) => e.kind = EntryKind::Hardlink(target.clone()),
                    None => {
                        first.insert((dev, ino), e.path.clone());
                    }
                }
            }
            e
        })
        .collect();
    Ok((entries, start.elapsed().as_secs_f64()))
}

fn dev_numbers(rdev: u64) -> (u32, u32) {
    (
        rustix::fs::major(rdev as rustix::fs::Dev),
        rustix::fs::minor(rdev as rustix::fs::Dev),
    )
}

/// Whether an extended attribute belongs in a layer: host security labels, ACL internals and
/// overlayfs bookkeeping would make layers depend on the machine that built them.
fn keep_xattr(name: &[u8]) -> bool {
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
