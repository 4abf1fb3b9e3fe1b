//! The walk snapshotter's diff: a metadata snapshot of the whole tree before the step, compared
//! with one after it.
//!
//! A path is upserted when it is new or when any of its type, mode, owner, size, mtime, inode,
//! device numbers, link target or xattrs changed, or (for non-directories) its ctime, which
//! catches a rewrite that restored the mtime and a new hard link to an old file. Directory ctimes
//! are ignored because the sandbox restores the mtime of directories in which it created and
//! removed mount points, which changes their ctime. A deleted path is reported once, at the top
//! of the deleted subtree. No opaque markers: a replaced directory lists its deleted children.
use super::{component_order, is_below, link_hardlinks, Change, ChangeKind, Diff, FileKind, Meta};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The metadata of every path under a root, keyed by relative path.
pub(crate) type Tree = BTreeMap<Vec<u8>, Meta>;

/// Reads the metadata of every path under `root` (not crossing into other filesystems).
pub(crate) fn scan(root: &Path) -> io::Result<Tree> {
    let mut tree = Tree::new();
    let root_dev =
        std::fs::symlink_metadata(root).map(|m| std::os::unix::fs::MetadataExt::dev(&m))?;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for item in std::fs::read_dir(root.join(&rel))? {
            let item = item?;
            let rel = rel.join(item.file_name());
            let Some(meta) = Meta::read(&root.join(&rel))? else {
                continue;
            };
            if meta.entry.kind == FileKind::Directory && meta.dev == root_dev {
                stack.push(rel.clone());
            }
            tree.insert(rel.as_os_str().as_bytes().to_vec(), meta);
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
        changes.push(Change {
            path: path.clone(),
            kind: ChangeKind::Upsert(meta.entry.clone()),
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
