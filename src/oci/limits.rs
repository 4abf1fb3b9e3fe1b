//! The size caps on untrusted documents, one set used everywhere (registry, `oci:` layouts,
//! `oci-archive:`/`docker-archive:` files, the store). Each is checked against a descriptor's
//! declared size before anything is fetched, and reads are bounded by `take(cap + 1)` so a source
//! that sends more than it declared fails at the cap instead of filling memory.
//!
//! The values follow containers/image (`internal/iolimits/iolimits.go`: `MaxManifestBodySize`
//! and `MaxConfigBodySize` are 4 MiB, `MaxAuthTokenBodySize` is 1 MiB, `MaxErrorBodySize` is
//! 1 MiB, of which we keep less); the distribution spec asks registries to accept manifests of
//! at least 4 MiB, so nothing a registry accepts is refused here. Documented in
//! `docs/SECURITY.md`, "Hostile registries and proxies".

/// The largest manifest or index (image manifest, OCI index, Docker manifest list), from a
/// registry, a layout or an archive.
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

/// The largest image config blob. Configs are read whole into memory, so a descriptor declaring
/// more is refused before the config is fetched.
pub const MAX_CONFIG_SIZE: u64 = 4 * 1024 * 1024;

/// The largest `index.json` of an `oci:` layout or archive, and `manifest.json` of a
/// `docker-archive:`.
pub const MAX_LAYOUT_INDEX_SIZE: u64 = 4 * 1024 * 1024;

/// The largest answer of a token server.
pub const MAX_TOKEN_RESPONSE_SIZE: u64 = 1024 * 1024;

/// The most of an error response's body that is read (for its `errors` envelope).
pub const MAX_ERROR_BODY_SIZE: u64 = 64 * 1024;

/// Fails with a sentence naming `what` when `size` is over `cap`.
pub fn check_size(what: &str, size: u64, cap: u64) -> Result<(), String> {
    if size > cap {
        Err(format!(
            "{what} declares {size} bytes, more than the {cap}-byte limit on such documents"
        ))
    } else {
        Ok(())
    }
}

/// Reads all of `r`, failing with `InvalidData` (naming `what`) past `cap` bytes.
pub fn read_capped(r: &mut dyn std::io::Read, cap: u64, what: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut b = Vec::new();
    r.take(cap + 1).read_to_end(&mut b)?;
    if b.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{what} is larger than the {cap}-byte limit"),
        ));
    }
    Ok(b)
}
