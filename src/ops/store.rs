//! `kiln store fsck` and `kiln store gc`.
use crate::progress::Reporter;
use crate::store::{FsckReport, GcReport, Store};

use super::{Error, Result};

/// Verifies the store; fails with [`Error::FsckFailed`] after reporting every problem.
pub fn fsck(store: &Store, reporter: &dyn Reporter) -> Result<FsckReport> {
    let report = store.fsck()?;
    for p in &report.problems {
        reporter.on_warning(&p.to_string());
    }
    if !report.problems.is_empty() {
        return Err(Error::FsckFailed {
            root: store.root().to_path_buf(),
            count: report.problems.len(),
        });
    }
    Ok(report)
}

/// Removes unreferenced blobs and stale temp files, then the build snapshots and cached
/// indexes of layers no longer in the store. `store` must be opened exclusively.
pub fn gc(store: &Store, reporter: &dyn Reporter) -> Result<GcReport> {
    reporter.on_status("collecting unreferenced blobs");
    // Layers the build cache refers to stay: the next build reuses them.
    let roots = crate::cache::LayerCache::new(store).blobs();
    let report = store.gc(&roots)?;
    // Then what builds keep of base images whose layers are now gone.
    match crate::build::snapshots::prune(store) {
        Ok(p) => reporter.on_status(&format!(
            "snapshots: {} kept, {} removed; {} cached indexes removed",
            p.snapshots_kept, p.snapshots_removed, p.indexes_removed
        )),
        Err(e) => reporter.on_warning(&e),
    }
    Ok(report)
}
