//! What a build keeps of a base image between builds, so that a RUN on a large base costs what
//! the step changes, not what the base holds:
//!
//! - **Snapshots** (`<store>/snapshots-v1/<key>/fs`): a stack of layers unpacked into one
//!   directory, used read-only as the bottom overlay lower directory of RUN steps (the overlay
//!   snapshotter never writes to a lower). The key hashes the layer digests, in order, with the
//!   id mapping the files were given (real root, a subordinate-id range, or the caller alone),
//!   since the owners on disk depend on it. `<key>/layers` lists the layer digests.
//! - **Index cache** (`<store>/cache-v1/fsindex/<chain>`): the metadata index ([`FsIndex`]) of a
//!   base's layers, so COPY, WORKDIR and the RUN diff do not re-read the base's tars. The file
//!   starts with the layer digests, one per line, then an empty line, then
//!   [`FsIndex::encode`]'s bytes.
//!
//! Both are made in the store's `tmp/` and renamed into place complete, so a killed build leaves
//! at most a stale temp entry, which `kiln store gc` removes; a concurrent build making the same
//! snapshot loses the rename race and uses the winner's. A build holds the store's `gc.lock`
//! shared while it uses them; `kiln store gc` holds it exclusively and [`prune`]s every
//! snapshot and index whose layers are no longer all in the store.
use std::path::{Path, PathBuf};

use crate::oci::{Descriptor, Digest};
use crate::sandbox::{Sandbox, SandboxError, SandboxOptions, UserNsSandbox};
use crate::store::Store;

use super::error::StepError;
use super::fsindex::FsIndex;

const SNAPSHOTS: &str = "snapshots-v1";
const INDEXES: &str = "cache-v1/fsindex";

/// What [`prune`] removed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PruneReport {
    /// Snapshots kept.
    pub snapshots_kept: u64,
    /// Snapshots removed.
    pub snapshots_removed: u64,
    /// Cached indexes removed.
    pub indexes_removed: u64,
}

fn layer_list(layers: &[Descriptor]) -> String {
    layers.iter().map(|l| format!("{}\n", l.digest)).collect()
}

fn chain(layers: &[Descriptor]) -> String {
    Digest::sha256(layer_list(layers).as_bytes())
        .hex()
        .to_string()
}

/// How the files of a snapshot are owned on disk: part of its key.
pub(super) fn ownership_signature(sandbox: Option<&dyn Sandbox>) -> String {
    if rustix::process::geteuid().is_root() {
        return "root".into();
    }
    match sandbox {
        Some(sb) => sb.ownership(),
        None => "caller".into(),
    }
}

/// The index of `layers`, if a build cached it.
pub(super) fn load_index(store: &Store, layers: &[Descriptor]) -> Option<FsIndex> {
    let path = store.root().join(INDEXES).join(chain(layers));
    let data = std::fs::read(path).ok()?;
    let rest = data.strip_prefix(layer_list(layers).as_bytes())?;
    FsIndex::decode(rest.strip_prefix(b"\n")?)
}

/// Caches the index of `layers`. A failure only costs the next build the time to rebuild it.
pub(super) fn save_index(store: &Store, layers: &[Descriptor], index: &FsIndex) {
    let dir = store.root().join(INDEXES);
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix("fsindex-")
            .tempfile_in(store.tmp_dir())?;
        let mut data = layer_list(layers).into_bytes();
        data.push(b'\n');
        data.extend_from_slice(&index.encode());
        std::io::Write::write_all(&mut tmp, &data)?;
        tmp.persist(dir.join(chain(layers)))?;
        Ok(())
    };
    let _ = write();
}

/// The directory holding `layers` unpacked (bottom first), made with `unpack` (which applies
/// the layers into the directory it is given and gives the files their owners) when no build
/// made it yet. The directory must only be read.
pub(super) fn merged(
    store: &Store,
    layers: &[Descriptor],
    sandbox: Option<&dyn Sandbox>,
    unpack: &mut dyn FnMut(&Path) -> Result<(), StepError>,
) -> Result<PathBuf, StepError> {
    let base = store.root().join(SNAPSHOTS);
    let key = Digest::sha256(
        format!("{}\n{}", ownership_signature(sandbox), layer_list(layers)).as_bytes(),
    );
    let dir = base.join(&key.hex()[..32]);
    let fs = dir.join("fs");
    if dir.join("layers").is_file() && fs.is_dir() {
        return Ok(fs);
    }
    std::fs::create_dir_all(&base).map_err(StepError::io("create", &base))?;
    let tmp_root = store.tmp_dir();
    let tmp = tempfile::Builder::new()
        .prefix("snap-")
        .tempdir_in(&tmp_root)
        .map_err(StepError::io("create a directory in", &tmp_root))?
        .keep();
    let remove = |p: &Path| match sandbox {
        Some(sb) => sb.remove_tree(p),
        None => std::fs::remove_dir_all(p).map_err(|source| SandboxError::Io {
            action: "remove",
            path: p.to_owned(),
            source,
        }),
    };
    let made = (|| {
        let tmp_fs = tmp.join("fs");
        std::fs::create_dir(&tmp_fs).map_err(StepError::io("create", &tmp_fs))?;
        unpack(&tmp_fs)?;
        let list = tmp.join("layers");
        std::fs::write(&list, layer_list(layers)).map_err(StepError::io("write", &list))
    })();
    if let Err(e) = made {
        let _ = remove(&tmp);
        return Err(e);
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(fs),
        // Another build made it first (a complete one: it renames only complete snapshots).
        Err(_) if dir.join("layers").is_file() => {
            let _ = remove(&tmp);
            Ok(fs)
        }
        Err(e) => {
            let _ = remove(&tmp);
            Err(StepError::io("rename a snapshot to", &dir)(e))
        }
    }
}

/// Removes the snapshots and cached indexes of layers no longer in the store. Call it only while holding the store exclusively (as `kiln store gc` does): a
/// build in progress may be using any of them.
pub fn prune(store: &Store) -> Result<PruneReport, SandboxError> {
    let mut report = PruneReport::default();
    let all_present = |list: &str| {
        list.lines().all(|l| {
            l.parse::<Digest>()
                .map(|d| store.contains(&d))
                .unwrap_or(false)
        })
    };
    let base = store.root().join(SNAPSHOTS);
    let mut doomed = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&base) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name() == "tmp" {
                doomed.extend(
                    std::fs::read_dir(&p)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path()),
                );
                continue;
            }
            let keep = std::fs::read_to_string(p.join("layers"))
                .map(|l| all_present(&l))
                .unwrap_or(false);
            if keep {
                report.snapshots_kept += 1;
            } else {
                doomed.push(p);
            }
        }
    }
    // Rootless steps' snapshots hold files of subordinate ids that only a user namespace with
    // the same mapping may delete; start one only when needed.
    let mut sandbox: Option<UserNsSandbox> = None;
    for p in doomed {
        if std::fs::remove_dir_all(&p).is_err() && p.exists() {
            let sb = sandbox.get_or_insert_with(|| UserNsSandbox::new(SandboxOptions::default()));
            sb.remove_tree(&p)?;
        }
        report.snapshots_removed += 1;
    }
    let idx = store.root().join(INDEXES);
    if let Ok(rd) = std::fs::read_dir(&idx) {
        for e in rd.flatten() {
            let p = e.path();
            let keep = std::fs::read(&p)
                .ok()
                .and_then(|d| {
                    let end = d.windows(2).position(|w| w == b"\n\n")?;
                    Some(all_present(std::str::from_utf8(&d[..=end]).ok()?))
                })
                .unwrap_or(false);
            if !keep && std::fs::remove_file(&p).is_ok() {
                report.indexes_removed += 1;
            }
        }
    }
    Ok(report)
}
