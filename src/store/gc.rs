//! `kiln store gc`: mark from `index.json` (and extra roots such as cache entries), sweep the rest.
use std::collections::BTreeSet;

use serde::Serialize;

use crate::oci::{self, Digest, Index, Manifest};

use super::{io_err, read_index, Result, Store};

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
    // gc holds gc.lock exclusively, so no writer is alive: every temp file is stale.
    let tmp = store.root().join("tmp");
    for entry in std::fs::read_dir(&tmp)
        .map_err(io_err("cannot read", &tmp))?
        .flatten()
    {
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        let p = entry.path();
        if std::fs::remove_file(&p).is_ok() {
            report.temp_files_removed += 1;
            report.bytes_freed += size;
        }
    }
    Ok(report)
}
