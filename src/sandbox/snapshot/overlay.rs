//! The overlay snapshotter's diff: reading an overlayfs upper directory as a layer.
//!
//! In the upper directory a deletion is a whiteout (a character device 0/0) and a directory that
//! replaced a lower one is opaque (xattr `user.overlay.opaque` = `y` when mounted with
//! `userxattr`, as in a user namespace; `trusted.overlay.opaque` otherwise). Directories that
//! overlay merely copied up, with the same metadata as below and no changed descendants, are
//! left out, so mount points the sandbox created and removed leave no trace.
//!
//! [`make_whiteout`] and [`mark_opaque`] write the same format, for unpacking layers into lower
//! directories.
use super::{
    component_order, get_xattr, is_below, link_hardlinks, Change, ChangeKind, Diff, FileKind, Meta,
};
use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Creates an overlay whiteout (character device 0/0) at `path`; allowed without privileges
/// since Linux 5.8.
pub fn make_whiteout(path: &Path) -> io::Result<()> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: cpath is a valid NUL-terminated path; mknod only reads it.
    let rc = unsafe { libc::mknod(cpath.as_ptr(), libc::S_IFCHR, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks directory `dir` opaque for an overlay mounted with `userxattr` (as kiln mounts it).
pub fn mark_opaque(dir: &Path) -> io::Result<()> {
    let cpath = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: cpath and the name are NUL-terminated; the value is 1 valid byte.
    let rc = unsafe {
        libc::lsetxattr(
            cpath.as_ptr(),
            c"user.overlay.opaque".as_ptr(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `meta` is an overlay whiteout.
fn is_whiteout(meta: &Meta) -> bool {
    meta.entry.kind == FileKind::CharDevice { major: 0, minor: 0 }
}

fn is_opaque(path: &Path) -> bool {
    [&b"user.overlay.opaque"[..], b"trusted.overlay.opaque"]
        .iter()
        .any(|name| get_xattr(path, name).as_deref() == Some(b"y"))
}

/// Reads the diff of an upper directory; `lowers` (topmost first) decide which copied-up
/// directories are unchanged.
pub(crate) fn diff(upper: &Path, lowers: &[PathBuf]) -> io::Result<Diff> {
    let mut changes = Vec::new();
    let mut inodes = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = upper.join(&rel);
        for item in std::fs::read_dir(&dir)? {
            let item = item?;
            let rel = rel.join(item.file_name());
            let host = upper.join(&rel);
            let Some(meta) = Meta::read(&host)? else {
                continue;
            };
            let path = rel.as_os_str().as_bytes().to_vec();
            if is_whiteout(&meta) {
                changes.push(Change {
                    path,
                    kind: ChangeKind::Delete,
                });
                continue;
            }
            if meta.entry.kind == FileKind::Directory {
                stack.push(rel.clone());
                let opaque = is_opaque(&host);
                if !opaque && unchanged_dir(&meta, &rel, lowers) {
                    // Kept only if something below it changed: decided after sorting.
                    changes.push(Change {
                        path,
                        kind: ChangeKind::Upsert(prunable(meta.entry)),
                    });
                    continue;
                }
                changes.push(Change {
                    path: path.clone(),
                    kind: ChangeKind::Upsert(meta.entry),
                });
                if opaque {
                    changes.push(Change {
                        path,
                        kind: ChangeKind::OpaqueDir,
                    });
                }
                continue;
            }
            if meta.entry.kind == FileKind::Regular && meta.nlink > 1 {
                inodes.insert(path.clone(), (meta.dev, meta.ino));
            }
            changes.push(Change {
                path,
                kind: ChangeKind::Upsert(meta.entry),
            });
        }
    }
    // Stable: an OpaqueDir stays right after the Upsert of the same directory.
    changes.sort_by(|a, b| component_order(&a.path, &b.path));
    let mut changes = prune_unchanged_dirs(changes);
    link_hardlinks(&mut changes, &inodes);
    Ok(Diff { changes })
}

/// Marks an entry as "unchanged directory" with an impossible mode bit, cleared when kept.
const PRUNABLE: u32 = 0x8000_0000;

fn prunable(mut entry: super::Entry) -> super::Entry {
    entry.mode |= PRUNABLE;
    entry
}

/// Drops unchanged directories with no kept descendants (descendants follow their directory).
fn prune_unchanged_dirs(changes: Vec<Change>) -> Vec<Change> {
    let mut kept: Vec<Change> = Vec::with_capacity(changes.len());
    for mut change in changes.into_iter().rev() {
        if let ChangeKind::Upsert(entry) = &mut change.kind {
            if entry.mode & PRUNABLE != 0 {
                entry.mode &= !PRUNABLE;
                let has_descendant = kept
                    .last()
                    .is_some_and(|next| is_below(&next.path, &change.path));
                if !has_descendant {
                    continue;
                }
            }
        }
        kept.push(change);
    }
    kept.reverse();
    kept
}

/// Whether the directory at `rel` has the same metadata in the topmost lower that has it.
fn unchanged_dir(meta: &Meta, rel: &Path, lowers: &[PathBuf]) -> bool {
    for lower in lowers {
        match Meta::read(&lower.join(rel)) {
            Ok(Some(below)) => {
                let (a, b) = (&meta.entry, &below.entry);
                return b.kind == FileKind::Directory
                    && (a.mode, a.uid, a.gid, a.mtime, a.mtime_nsec)
                        == (b.mode, b.uid, b.gid, b.mtime, b.mtime_nsec)
                    && a.xattrs == b.xattrs;
            }
            Ok(None) => return false,
            Err(_) => continue,
        }
    }
    false
}

/// What a path in a stack of layers is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    Dir,
    Symlink(Vec<u8>),
    Other,
}

/// The entry at `rel` in `layers` (topmost first), honouring whiteouts and opaque directories.
fn find_entry(layers: &[PathBuf], rel: &Path) -> Option<Found> {
    for layer in layers {
        let path = layer.join(rel);
        if let Ok(Some(meta)) = Meta::read(&path) {
            return match meta.entry.kind {
                _ if is_whiteout(&meta) => None,
                FileKind::Directory => Some(Found::Dir),
                FileKind::Symlink { target } => Some(Found::Symlink(target)),
                _ => Some(Found::Other),
            };
        }
        // An opaque ancestor in this layer hides everything below it in lower layers.
        if rel
            .ancestors()
            .skip(1)
            .any(|a| !a.as_os_str().is_empty() && is_opaque(&layer.join(a)))
        {
            return None;
        }
    }
    None
}

/// Whether the absolute container path `path` exists in the merged view of `layers` (topmost
/// first), following symlinks inside the root as the kernel would. Used to check, before a step
/// runs, that its program (say `/bin/sh`) is there.
pub(crate) fn exists(layers: &[PathBuf], path: &str) -> bool {
    let mut todo: Vec<Vec<u8>> = path
        .as_bytes()
        .split(|&b| b == b'/')
        .rev()
        .map(<[u8]>::to_vec)
        .collect();
    let mut resolved = PathBuf::new();
    let mut hops = 0;
    while let Some(comp) = todo.pop() {
        match comp.as_slice() {
            b"" | b"." => continue,
            b".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved.join(std::ffi::OsStr::from_bytes(&comp));
        match find_entry(layers, &candidate) {
            None => return false,
            Some(Found::Dir) => resolved = candidate,
            Some(Found::Other) => {
                if todo.iter().any(|c| !c.is_empty() && c != b".") {
                    return false;
                }
                resolved = candidate;
            }
            Some(Found::Symlink(target)) => {
                hops += 1;
                if hops > 40 {
                    return false;
                }
                if target.starts_with(b"/") {
                    resolved = PathBuf::new();
                }
                todo.extend(target.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_dir_whiteouts_opaque_dirs_and_copied_up_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let (lower, upper) = (tmp.path().join("lower"), tmp.path().join("upper"));
        for d in [&lower, &upper] {
            std::fs::create_dir_all(d.join("etc")).unwrap();
            std::fs::create_dir_all(d.join("opq")).unwrap();
            std::fs::create_dir_all(d.join("same")).unwrap();
        }
        std::fs::write(lower.join("etc/gone"), "x").unwrap();
        std::fs::write(lower.join("opq/old"), "x").unwrap();
        make_whiteout(&upper.join("etc/gone")).unwrap();
        mark_opaque(&upper.join("opq")).unwrap();
        std::fs::write(upper.join("opq/new"), "n").unwrap();
        // Copied up with identical metadata and nothing changed below: not a change.
        let mtime = std::fs::metadata(lower.join("same"))
            .unwrap()
            .modified()
            .unwrap();
        std::fs::File::open(upper.join("same"))
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let lower_etc = std::fs::metadata(lower.join("etc"))
            .unwrap()
            .modified()
            .unwrap();
        std::fs::File::open(upper.join("etc"))
            .unwrap()
            .set_modified(lower_etc)
            .unwrap();
        let d = diff(&upper, &[lower]).unwrap();
        // etc is unchanged too, but kept because something below it changed.
        assert_eq!(d.paths(), vec!["etc", "etc/gone", "opq", "opq", "opq/new"]);
        assert!(d.deletes("etc/gone") && d.is_opaque("opq") && d.upsert("opq").is_some());
        assert_eq!(d.upsert("opq/new").unwrap().mode & PRUNABLE, 0);
    }

    #[test]
    fn exists_follows_symlinks_across_layers_and_honours_whiteouts() {
        let tmp = tempfile::tempdir().unwrap();
        let (top, base) = (tmp.path().join("top"), tmp.path().join("base"));
        std::fs::create_dir_all(base.join("usr/bin")).unwrap();
        std::fs::create_dir_all(base.join("old")).unwrap();
        std::fs::write(base.join("usr/bin/dash"), "").unwrap();
        std::fs::write(base.join("old/f"), "").unwrap();
        std::os::unix::fs::symlink("usr/bin", base.join("bin")).unwrap();
        std::fs::create_dir_all(top.join("usr/bin")).unwrap();
        std::fs::create_dir_all(top.join("old")).unwrap();
        std::os::unix::fs::symlink("dash", top.join("usr/bin/sh")).unwrap();
        make_whiteout(&top.join("usr/bin/dash2")).unwrap();
        mark_opaque(&top.join("old")).unwrap();
        let layers = [top.clone(), base.clone()];
        assert!(exists(&layers, "/bin/sh"));
        assert!(exists(&layers, "/bin/../bin/dash"));
        assert!(!exists(&layers, "/bin/dash2"));
        assert!(!exists(&layers, "/old/f"));
        assert!(!exists(&[base], "/bin/sh"));
    }
}
