//! The walk snapshotter's diff: a metadata snapshot of the whole tree before the step, compared
//! with one after it.
//!
//! A path is upserted when it is new or when any of its type, mode, owner, size, mtime, inode,
//! device numbers, link target or xattrs changed, or (for non-directories) its ctime, which
//! catches a rewrite that restored the mtime and a new hard link to an old file. Directory ctimes
//! are ignored because the sandbox restores the mtime of directories in which it created and
//! removed mount points, which changes their ctime. A deleted path is reported once, at the top
//! of the deleted subtree. No opaque markers: a replaced directory lists its deleted children.
use super::{
    component_order, is_below, link_hardlinks, read_xattrs, Change, ChangeKind, Diff, FileKind,
    Meta,
};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The metadata of every path under a root, keyed by relative path.
pub(crate) type Tree = BTreeMap<Vec<u8>, Meta>;

/// Reads the metadata of every path under `root` (not crossing into other filesystems).
///
/// Each directory is opened once and its entries are `stat`ed relative to it. The xattrs of
/// files are not read here: any xattr change also changes the file's ctime, which is compared,
/// and [`diff`] reads them for the files it reports. Directories' xattrs are read, because
/// directory ctimes are not compared.
// `st_mode`'s type differs between architectures.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn scan(root: &Path) -> io::Result<Tree> {
    use rustix::fs::{openat, readlinkat, statat, AtFlags, Dir, Mode, OFlags};
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let root_fd = rustix::fs::open(root, dir_flags, Mode::empty())?;
    let root_dev = rustix::fs::fstat(&root_fd)?.st_dev;
    let mut tree = Tree::new();
    // Relative paths rather than open descriptors, so a wide tree cannot exhaust RLIMIT_NOFILE.
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let fd = if rel.is_empty() {
            root_fd.try_clone()?
        } else {
            openat(&root_fd, OsStr::from_bytes(&rel), dir_flags, Mode::empty())?
        };
        let mut dir = Dir::read_from(&fd)?;
        while let Some(item) = dir.read() {
            let item = item?;
            let name = item.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let st = statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
            let mut path = rel.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.to_bytes());
            let host = root.join(OsStr::from_bytes(&path));
            let ft = st.st_mode as u32 & libc::S_IFMT;
            let target = if ft == libc::S_IFLNK {
                Some(readlinkat(&fd, name, Vec::new())?.into_bytes())
            } else {
                None
            };
            let xattrs = if ft == libc::S_IFDIR {
                read_xattrs(&host)?
            } else {
                Vec::new()
            };
            let Some(meta) = Meta::from_stat(host, &st, target, xattrs) else {
                continue;
            };
            if ft == libc::S_IFDIR && st.st_dev == root_dev {
                stack.push(path.clone());
            }
            tree.insert(path, meta);
        }
    }
    Ok(tree)
}

fn changed(before: &Meta, after: &Meta) -> bool {
    let (a, b) = (&before.entry, &after.entry);
    let dir = b.kind == FileKind::Directory;
    a.kind != b.kind
        || (a.mode, a.uid, a.gid, a.size) != (b.mode, b.uid, b.gid, b.size)
        || (a.mtime, a.mtime_nsec) != (b.mtime, b.mtime_nsec)
        || before.ino != after.ino
        || a.xattrs != b.xattrs
        || (!dir && before.ctime != after.ctime)
}

/// The changes from `before` to `after`.
pub(crate) fn diff(before: &Tree, after: &Tree) -> Diff {
    let mut changes = Vec::new();
    let mut inodes = HashMap::new();
    for (path, meta) in after {
        if before.get(path).is_some_and(|old| !changed(old, meta)) {
            continue;
        }
        if meta.entry.kind == FileKind::Regular && meta.nlink > 1 {
            inodes.insert(path.clone(), (meta.dev, meta.ino));
        }
        let mut entry = meta.entry.clone();
        if entry.kind != FileKind::Directory {
            // scan() leaves files' xattrs unread; a file that vanished meanwhile has none.
            entry.xattrs = read_xattrs(&entry.host_path).unwrap_or_default();
        }
        changes.push(Change {
            path: path.clone(),
            kind: ChangeKind::Upsert(entry),
        });
    }
    // BTreeMap order is byte order, where a directory's descendants may be interleaved with
    // siblings ("a/b-x" < "a/b/c"); sort component-wise so "top of the deleted subtree" is easy.
    let mut deleted: Vec<&Vec<u8>> = before.keys().filter(|p| !after.contains_key(*p)).collect();
    deleted.sort_by(|a, b| component_order(a, b));
    // A directory replaced by a file or symlink takes its old children with it: a whiteout
    // below a non-directory would make the layer unextractable.
    let replaced: Vec<&Vec<u8>> = after
        .iter()
        .filter(|(p, m)| {
            m.entry.kind != FileKind::Directory
                && before
                    .get(*p)
                    .is_some_and(|b| b.entry.kind == FileKind::Directory)
        })
        .map(|(p, _)| p)
        .collect();
    let mut top: Option<&Vec<u8>> = None;
    for path in deleted {
        if top.is_some_and(|t| is_below(path, t)) || replaced.iter().any(|r| is_below(path, r)) {
            continue;
        }
        top = Some(path);
        changes.push(Change {
            path: path.clone(),
            kind: ChangeKind::Delete,
        });
    }
    changes.sort_by(|a, b| component_order(&a.path, &b.path));
    // Inodes of files that survived from before are shared with paths outside the diff; link
    // only among the paths of the diff.
    link_hardlinks(&mut changes, &inodes);
    Diff { changes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_diff_reports_new_changed_and_deleted_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("d/sub")).unwrap();
        std::fs::write(root.join("d/sub/f"), "x").unwrap();
        std::fs::write(root.join("keep"), "k").unwrap();
        std::fs::write(root.join("mod"), "1").unwrap();
        let before = scan(root).unwrap();
        std::fs::remove_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("mod"), "22").unwrap();
        std::fs::write(root.join("new"), "n").unwrap();
        std::fs::hard_link(root.join("new"), root.join("new2")).unwrap();
        let after = scan(root).unwrap();
        let diff = diff(&before, &after);
        assert_eq!(diff.paths(), vec!["d", "mod", "new", "new2"]);
        assert!(diff.deletes("d"));
        assert_eq!(
            diff.upsert("new2").unwrap().hardlink_to.as_deref(),
            Some(&b"new"[..])
        );
    }

    #[test]
    fn a_directory_replaced_by_a_file_has_no_deletions_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("d/sub")).unwrap();
        std::fs::write(root.join("d/sub/f"), "x").unwrap();
        let before = scan(root).unwrap();
        std::fs::remove_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d"), "now a file").unwrap();
        let diff = diff(&before, &scan(root).unwrap());
        assert_eq!(diff.paths(), vec!["d"]);
    }
}
