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
    let mut report = store.gc(&roots)?;
    remove_rootless_leftovers(&mut report, reporter);
    // Then what builds keep of base images whose layers are now gone.
    match crate::builder::snapshots::prune(store) {
        Ok(p) => reporter.on_status(&format!(
            "snapshots: {} kept, {} removed; {} cached indexes removed",
            p.snapshots_kept, p.snapshots_removed, p.indexes_removed
        )),
        Err(e) => reporter.on_warning(&format!("cannot prune snapshots: {e}")),
    }
    Ok(report)
}

/// Scratch directories of killed rootless builds can hold what only root in a user namespace
/// may delete (a 0700 directory of the step's uid 1000 is a subordinate uid's on the host, an
/// overlay work directory is mode 000): remove those the way the build would have.
fn remove_rootless_leftovers(report: &mut GcReport, reporter: &dyn Reporter) {
    if report.temp_dirs_left.is_empty() {
        return;
    }
    let sandbox = crate::sandbox::UserNsSandbox::new(crate::sandbox::SandboxOptions::default());
    report
        .temp_dirs_left
        .retain(|dir| match sandbox.remove_tree(dir) {
            Ok(()) => {
                report.temp_files_removed += 1;
                false
            }
            Err(e) => {
                reporter.on_warning(&format!("cannot remove `{}`: {e}", dir.display()));
                true
            }
        });
}
