//! Each layer's findings, kept in the store as a small JSON file keyed by the layer's diff_id
//! and [`super::SCANNER_VERSION`]: `cache-v1/sbom/v<VERSION>/<hex>.json`, beside the layer
//! cache (`cache-v1/keys`). Only findings of a layer whose content hashed to its diff_id are
//! written, through the store's `tmp/` and a rename; an entry that does not parse is ignored
//! (the layer is scanned again). `kiln store gc` leaves these files (a few KiB per layer).
use std::path::PathBuf;

use super::LayerFindings;
use crate::oci::Digest;
use crate::store::Store;

/// The largest cache entry read back.
const MAX_ENTRY: u64 = 64 * 1024 * 1024;

fn path(store: &Store, diff_id: &Digest) -> PathBuf {
    store
        .root()
        .join(format!("cache-v1/sbom/v{}", super::SCANNER_VERSION))
        .join(format!("{}.json", diff_id.hex()))
}

/// The cached findings of the layer `diff_id`.
pub fn get(store: &Store, diff_id: &Digest) -> Option<LayerFindings> {
    let p = path(store, diff_id);
    let f = std::fs::File::open(p).ok()?;
    let bytes = crate::oci::limits::read_capped(&mut &f, MAX_ENTRY, "an SBOM cache entry").ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Records the findings of the layer `diff_id`. Best effort: an entry that cannot be written
/// costs a rescan, never correctness.
pub fn put(store: &Store, diff_id: &Digest, f: &LayerFindings) {
    let p = path(store, diff_id);
    if let Some(dir) = p.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let bytes = serde_json::to_vec(f).expect("findings always serialise");
    let _ = crate::store::write_atomic(&store.tmp_dir(), &p, &bytes);
}
