//! Where a blob can be fetched from: `origins/<hex>`, one `registry/repository` per line.
//!
//! A pull records the repository every layer came from. That record serves two purposes: a push
//! to another repository of the same registry mounts the blob instead of uploading it, and a
//! *lazy* layer (one a build's `FROM` pulled without its bytes, see
//! [`crate::transport::read_base_into_store`]) is downloaded the first time something opens it,
//! through `transport::LayerSource`, which whoever reads layers is given with the registry
//! client (the store itself never reaches a registry).
//!
//! A blob that is missing from `blobs/` but has an origin record is *lazy*, not lost: `fsck`
//! counts it apart from problems. `gc` removes the records of digests nothing refers to any more.
use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::oci::Digest;

use super::Store;

fn dir(store: &Store) -> PathBuf {
    store.root().join("origins")
}

/// The `registry/repository` locations `digest` is known at, oldest first.
pub fn origins(store: &Store, digest: &Digest) -> Vec<String> {
    std::fs::read_to_string(dir(store).join(digest.hex()))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Records that `digest` can be fetched from `location` (`registry/repository`). Best effort:
/// a record that cannot be written costs a mount or a lazy fetch, never correctness.
pub fn record_origin(store: &Store, digest: &Digest, location: &str) {
    let d = dir(store);
    let p = d.join(digest.hex());
    let mut known = std::fs::read_to_string(&p).unwrap_or_default();
    if known.lines().any(|l| l == location) {
        return;
    }
    known.push_str(location);
    known.push('\n');
    let _ = std::fs::create_dir_all(&d);
    // Through tmp/ (same filesystem), where gc finds what a killed write leaves.
    let _ = super::write_atomic(&store.tmp_dir(), &p, known.as_bytes());
}

/// Removes the records of digests not in `live`; returns how many were removed.
pub(super) fn sweep(store: &Store, live: &BTreeSet<Digest>) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir(store)) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let keep = match format!("sha256:{name}").parse::<Digest>() {
            Ok(d) => live.contains(&d),
            // Temp files of an interrupted write (gc runs alone, so they are stale).
            Err(_) => !name.starts_with(super::ATOMIC_TMP_PREFIX),
        };
        if !keep && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_kept_for_live_digests_and_swept_for_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_exclusive(dir.path()).unwrap();
        let named = Digest::sha256(b"named");
        let gone = Digest::sha256(b"gone");
        record_origin(&store, &named, "r.example/a");
        record_origin(&store, &named, "r.example/b");
        record_origin(&store, &named, "r.example/a");
        record_origin(&store, &gone, "r.example/a");
        assert_eq!(origins(&store, &named), ["r.example/a", "r.example/b"]);
        let live: BTreeSet<Digest> = [named.clone()].into();
        assert_eq!(sweep(&store, &live), 1);
        assert_eq!(origins(&store, &named).len(), 2);
        assert!(origins(&store, &gone).is_empty());
        // gc itself sweeps: nothing is named, so the last record goes.
        store.gc(&[]).unwrap();
        assert!(origins(&store, &named).is_empty());
    }
}
