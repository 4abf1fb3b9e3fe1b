//! `kiln store gc`: mark from `index.json` (and extra roots such as cache entries), sweep the rest.
use std::collections::BTreeSet;

use serde::Serialize;

use crate::oci::{self, Digest, Index, Manifest};

use super::{io_err, read_index, Result, Store, ATOMIC_TMP_PREFIX};

/// What gc removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Blobs kept.
    pub blobs_kept: u64,
    /// Blobs removed.
    pub blobs_removed: u64,
    /// Bytes freed by removed blobs and temp files.
    pub bytes_freed: u64,
    /// Stale temp files removed.
    pub temp_files_removed: u64,
    /// Stale scratch directories in `tmp/` that could not be removed (a killed rootless RUN
    /// can leave files of subordinate ids there; `ops::gc` removes them in a user namespace).
    pub temp_dirs_left: Vec<std::path::PathBuf>,
}

pub(super) fn gc(store: &Store, extra_roots: &[Digest]) -> Result<GcReport> {
    let mut live = BTreeSet::new();
    let index = read_index(store.root())?;
    let mut todo: Vec<(Digest, oci::MediaType)> = index
        .manifests
        .iter()
        .map(|d| (d.digest.clone(), d.media_type.clone()))
        .collect();
    for r in extra_roots {
        todo.push((r.clone(), oci::MediaType::Other(String::new())));
    }
    while let Some((digest, mt)) = todo.pop() {
        if !live.insert(digest.clone()) {
            continue;
        }
        // Unknown media types (extra roots) are probed as manifest, then index.
        let Ok(bytes) = store.read_blob(&digest) else {
            continue;
        };
        if mt.is_manifest() || matches!(mt, oci::MediaType::Other(_)) {
            if let Ok(m) = oci::from_json::<Manifest>("manifest", &bytes) {
                todo.push((m.config.digest, m.config.media_type));
                todo.extend(m.layers.into_iter().map(|l| (l.digest, l.media_type)));
                continue;
            }
        }
        if mt.is_index() || matches!(mt, oci::MediaType::Other(_)) {
            if let Ok(i) = oci::from_json::<Index>("index", &bytes) {
                todo.extend(i.manifests.into_iter().map(|m| (m.digest, m.media_type)));
            }
        }
    }
    let mut report = GcReport::default();
    let dir = store.root().join("blobs/sha256");
    for entry in std::fs::read_dir(&dir).map_err(io_err("cannot read", &dir))? {
        let entry = entry.map_err(io_err("cannot read", &dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let keep = format!("sha256:{name}")
            .parse::<Digest>()
            .map(|d| live.contains(&d))
            .unwrap_or(true); // never delete what we do not understand
        if keep {
            report.blobs_kept += 1;
            continue;
        }
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        let p = entry.path();
        std::fs::remove_file(&p).map_err(io_err("cannot remove", &p))?;
        report.blobs_removed += 1;
        report.bytes_freed += size;
    }
    // Where-to-fetch-from records of blobs nothing refers to any more.
    super::origins::sweep(store, &live);
    // gc holds gc.lock exclusively, so no writer is alive: everything in tmp/ is stale (temp
    // blobs, interrupted atomic writes, scratch directories of builds that were killed).
    let tmp = store.root().join("tmp");
    let mounts = mount_points();
    for entry in std::fs::read_dir(&tmp)
        .map_err(io_err("cannot read", &tmp))?
        .flatten()
    {
        let p = entry.path();
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            // Never recurse into a mount (a step's mounts live in its own namespace, but a
            // directory someone mounted over must not have its content deleted).
            if mounts.iter().any(|m| m.starts_with(&p)) {
                continue;
            }
            let size = tree_size(&p);
            if std::fs::remove_dir_all(&p).is_ok() {
                report.temp_files_removed += 1;
                report.bytes_freed += size;
            } else {
                report.temp_dirs_left.push(p);
            }
        } else {
            remove_temp_file(&entry, &mut report);
        }
    }
    // The first open of a store writes `oci-layout` and `index.json` through temp files in the
    // root (later writes use tmp/); a kill there leaves one. No one writes those two now: they
    // exist, since this process opened the store.
    let root = store.root();
    for entry in std::fs::read_dir(root)
        .map_err(io_err("cannot read", root))?
        .flatten()
    {
        let name = entry.file_name();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && name.to_string_lossy().starts_with(ATOMIC_TMP_PREFIX) {
            remove_temp_file(&entry, &mut report);
        }
    }
    Ok(report)
}

/// Removes a stale temp file and counts it, with its bytes, in the report.
fn remove_temp_file(entry: &std::fs::DirEntry, report: &mut GcReport) {
    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
    if std::fs::remove_file(entry.path()).is_ok() {
        report.temp_files_removed += 1;
        report.bytes_freed += size;
    }
}

/// Mount points of this process's mount namespace.
fn mount_points() -> Vec<std::path::PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| std::path::PathBuf::from(unescape_mountinfo(m)))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Bytes of the regular files below `dir` (symlinks are not followed).
fn tree_size(dir: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mountinfo("/a\\040b\\011c"), "/a b\tc");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/x\\"), "/x\\");
    }

    #[test]
    fn gc_removes_stale_scratch_directories_and_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        let store = Store::open_exclusive(&root).unwrap();
        let scratch = root.join("tmp/build-x/rootfs/etc");
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::write(scratch.join("f"), b"12345").unwrap();
        std::fs::write(root.join("tmp/.tmp-abc"), b"12").unwrap();
        std::fs::write(root.join(".tmp-killed-init"), b"{}").unwrap();
        let r = gc(&store, &[]).unwrap();
        assert_eq!(r.temp_files_removed, 3);
        assert_eq!(r.bytes_freed, 9);
        assert!(!root.join(".tmp-killed-init").exists());
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    }
}
