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
}
