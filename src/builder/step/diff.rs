//! A RUN step's diff as layer entries: the same entries whichever snapshotter made the diff,
//! and the build's clock kept out of them.
use crate::layer::{Entry, EntryKind, FileSource};
use crate::sandbox::{ChangeKind, Diff, FileKind};

use super::super::fsindex::{FsIndex, NodeKind};

/// Gives the files this build wrote with the clock (mtime at or after `started`, the second the
/// build began) the build epoch, so they do not depend on when the steps ran; older mtimes came
/// with the inputs (a package's files, an archive's members, `cp -p`, a base layer) and are
/// kept, so a `.py` file keeps the mtime its `.pyc` header names. Whiteouts carry no time.
pub(in crate::builder) fn stamp_fresh_mtimes(entries: &mut [Entry], started: i64, epoch: i64) {
    for e in entries.iter_mut().filter(|e| e.mtime >= started) {
        e.mtime = epoch;
    }
}

/// The layer entries of a step's diff, sorted by path, in one form whichever snapshotter made
/// the diff, so overlay and walk give the same layer for the same step (the layer cache does not
/// know which one made a layer). `before` is the stage's files before the step.
///
/// - A directory whose type, mode, owner and xattrs are what they were before the step is left
///   out here: overlay copies up the parents of whatever changed below them, walk sees only the
///   mtimes the sandbox did not restore after removing its mount points. (A step that changes
///   only a directory's mtime changes no layer.) The builder then adds every parent of the
///   entries with its metadata from before the step ([`FsIndex::parent_entries`]), whichever
///   snapshotter ran, so both give the same bytes.
/// - An opaque directory (overlay: a directory removed and created again) becomes whiteouts of
///   the paths below it that existed before and are gone, topmost only, as walk reports them.
pub(in crate::builder) fn diff_entries(diff: &Diff, before: &FsIndex) -> Vec<Entry> {
    use std::collections::HashSet;
    let upserted: HashSet<&[u8]> = diff
        .changes
        .iter()
        .filter(|c| matches!(c.kind, ChangeKind::Upsert(_)))
        .map(|c| c.path.as_slice())
        .collect();
    let non_dirs: HashSet<&[u8]> = diff
        .changes
        .iter()
        .filter(|c| matches!(&c.kind, ChangeKind::Upsert(e) if e.kind != FileKind::Directory))
        .map(|c| c.path.as_slice())
        .collect();
    let mut out = Vec::new();
    for ch in &diff.changes {
        match &ch.kind {
            ChangeKind::Upsert(e) => {
                if e.kind == FileKind::Directory
                    && before.get(&ch.path).is_some_and(|n| {
                        n.kind == NodeKind::Dir
                            && (n.mode, n.uid, n.gid) == (e.mode, e.uid, e.gid)
                            && same_xattrs(n.xattrs(), &e.xattrs)
                    })
                {
                    continue;
                }
                let kind = match &e.kind {
                    FileKind::Regular => match &e.hardlink_to {
                        Some(t) => EntryKind::Hardlink(t.clone()),
                        None => EntryKind::File {
                            size: e.size,
                            source: FileSource::Path(e.host_path.clone()),
                        },
                    },
                    FileKind::Directory => EntryKind::Dir,
                    FileKind::Symlink { target } => EntryKind::Symlink(target.clone()),
                    FileKind::CharDevice { major, minor } => EntryKind::CharDevice {
                        major: *major,
                        minor: *minor,
                    },
                    FileKind::BlockDevice { major, minor } => EntryKind::BlockDevice {
                        major: *major,
                        minor: *minor,
                    },
                    FileKind::Fifo => EntryKind::Fifo,
                };
                out.push(Entry {
                    path: ch.path.clone(),
                    kind,
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    mtime: e.mtime,
                    xattrs: e
                        .xattrs
                        .iter()
                        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.clone()))
                        .collect(),
                });
            }
            ChangeKind::Delete => out.push(Entry::whiteout(&ch.path)),
            ChangeKind::OpaqueDir => {
                let mut gone: HashSet<Vec<u8>> = HashSet::new();
                for (path, _) in before.children(&ch.path) {
                    if upserted.contains(path.as_slice()) {
                        continue;
                    }
                    // Below a path already whited out, or below one that is no longer a
                    // directory: gone with it.
                    let hidden = path
                        .iter()
                        .enumerate()
                        .filter(|(i, &b)| b == b'/' && *i > ch.path.len())
                        .any(|(i, _)| gone.contains(&path[..i]) || non_dirs.contains(&path[..i]));
                    if !hidden {
                        gone.insert(path.clone());
                        out.push(Entry::whiteout(path));
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Whether a directory's xattrs in the index (sorted) are the ones the step left.
fn same_xattrs(index: &[(String, Vec<u8>)], diff: &[(Vec<u8>, Vec<u8>)]) -> bool {
    let mut d: Vec<(&[u8], &[u8])> = diff.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    d.sort();
    index.len() == d.len()
        && index
            .iter()
            .zip(d)
            .all(|((k, v), (dk, dv))| k.as_bytes() == dk && &v[..] == dv)
}
