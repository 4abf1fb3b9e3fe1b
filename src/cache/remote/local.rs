//! `type=local`: a cache as an OCI image layout directory (what CI cache actions save and
//! restore): `oci-layout`, `blobs/sha256/*`, and an `index.json` naming the cache manifest,
//! replaced whole, last, by a rename. Every file is opened without following symbolic links,
//! read with a cap, and checked against its digest.
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::oci::limits::{read_capped, MAX_CONFIG_SIZE, MAX_LAYOUT_INDEX_SIZE, MAX_MANIFEST_SIZE};
use crate::oci::{Descriptor, Digest, Index, MediaType, ANNOTATION_REF_NAME};
use crate::store::Store;
use crate::transport::LayerSource;

use super::{access, parse_manifest, verify_config, CacheConfig, Error, ARTIFACT_TYPE};
use crate::cache::CachedLayer;

/// The name `index.json` gives the cache manifest.
const REF_NAME: &str = "kiln-cache";

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    // Entries are sha256 (`CacheConfig::parse`); a parsed digest's hex is a safe file name.
    dir.join("blobs/sha256").join(digest.hex())
}

fn invalid(dir: &Path, reason: String) -> Error {
    Error::Invalid {
        location: dir.display().to_string(),
        reason,
    }
}

/// A capped, verified read of a document blob.
fn read_blob(dir: &Path, d: &Descriptor, cap: u64, what: &str) -> Result<Vec<u8>, Error> {
    let location = dir.display().to_string();
    let path = blob_path(dir, &d.digest);
    let mut f = crate::transport::open_regular(&path).map_err(access(&location, "read a blob"))?;
    let bytes = read_capped(&mut f, cap, what).map_err(access(&location, "read a blob"))?;
    if bytes.len() as u64 != d.size || !d.digest.matches(&bytes) {
        return Err(invalid(
            dir,
            format!("{what} `{}` does not match its digest", d.digest),
        ));
    }
    Ok(bytes)
}

/// Reads the cache in `dir`: `None` when the directory has no `index.json` yet.
pub(super) fn read(dir: &Path) -> Result<Option<CacheConfig>, Error> {
    let location = dir.display().to_string();
    let index_path = dir.join("index.json");
    if std::fs::symlink_metadata(&index_path).is_err() {
        return Ok(None);
    }
    let mut f = crate::transport::open_regular(&index_path)
        .map_err(access(&location, "read its index.json"))?;
    let bytes = read_capped(&mut f, MAX_LAYOUT_INDEX_SIZE, "index.json")
        .map_err(access(&location, "read its index.json"))?;
    let index: Index = crate::oci::from_json("index.json", &bytes)
        .map_err(|e| invalid(dir, format!("index.json: {e}")))?;
    let entry = index
        .manifests
        .iter()
        .find(|d| d.media_type == MediaType::OciManifest)
        .ok_or_else(|| invalid(dir, "index.json names no manifest".into()))?;
    crate::oci::limits::check_size("the cache manifest", entry.size, MAX_MANIFEST_SIZE)
        .map_err(|r| invalid(dir, r))?;
    let manifest = read_blob(dir, entry, MAX_MANIFEST_SIZE, "manifest")?;
    let m = parse_manifest(&manifest).map_err(|r| invalid(dir, r))?;
    let config = read_blob(dir, &m.config, MAX_CONFIG_SIZE, "config")?;
    verify_config(&m, &config)
        .map(Some)
        .map_err(|r| invalid(dir, r))
}

/// Copies `layer` from the cache in `dir` into the store, verified against its digest, and
/// checks its diff_id.
pub(super) fn import_layer(store: &Store, dir: &Path, layer: &CachedLayer) -> Result<(), Error> {
    let location = dir.display().to_string();
    let d = &layer.descriptor;
    if !store.contains(&d.digest) {
        let path = blob_path(dir, &d.digest);
        let mut f =
            crate::transport::open_regular(&path).map_err(access(&location, "read a layer"))?;
        store
            .put_verified(&d.digest, Some(d.size), &mut f)
            .map_err(access(&location, "read a layer"))?;
    }
    let diff_id = diff_id(store, d).map_err(access(&location, "read a layer"))?;
    if diff_id != layer.diff_id {
        return Err(invalid(
            dir,
            format!(
                "layer `{}` has diff_id `{diff_id}`, not `{}` as the cache says",
                d.digest, layer.diff_id
            ),
        ));
    }
    Ok(())
}

/// The digest of the uncompressed bytes of a layer in the store.
pub fn diff_id(store: &Store, d: &Descriptor) -> std::io::Result<Digest> {
    use crate::layer::Compressed;
    use crate::oci::LayerCompression as C;
    let format = match d.media_type.layer_compression() {
        Some(C::Gzip) => Compressed::Gzip,
        Some(C::Zstd) => Compressed::Zstd,
        Some(C::None) => Compressed::None,
        None => return Err(std::io::Error::other("not a layer media type")),
    };
    let blob = store.open_blob(&d.digest).map_err(std::io::Error::other)?;
    let path = store.blob_path(&d.digest);
    let mut r = crate::layer::decompressor(
        std::io::BufReader::with_capacity(1 << 20, blob),
        format,
        &path,
    )?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Digest::from_sha256_bytes(&h.finalize()))
}

/// Writes `bytes` to `path` through a temp file in its directory.
fn write_file(path: &Path, bytes: &mut dyn Read) -> std::io::Result<()> {
    let dir = path.parent().expect("layout paths have a parent");
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    std::io::copy(bytes, &mut tmp)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Writes the cache into `dir`: the blobs it lacks (lazy layers fetched through `layers`),
/// the config and manifest, then `index.json`, replaced last.
pub(super) fn write(
    layers: LayerSource<'_>,
    dir: &Path,
    config: &CacheConfig,
    config_bytes: &[u8],
    manifest: &[u8],
) -> Result<Digest, Error> {
    let location = dir.display().to_string();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(access(&location, "create its blobs directory"))?;
    for (_, l) in config.all_layers() {
        let d = &l.descriptor;
        let path = blob_path(dir, &d.digest);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == d.size) {
            continue;
        }
        let mut f = layers
            .open_blob_sized(&d.digest, Some(d.size))
            .map_err(access(&location, "read a layer to write"))?;
        write_file(&path, &mut f).map_err(access(&location, "write a layer"))?;
    }
    let manifest_digest = Digest::sha256(manifest);
    for bytes in [config_bytes, manifest] {
        write_file(&blob_path(dir, &Digest::sha256(bytes)), &mut &bytes[..])
            .map_err(access(&location, "write a blob"))?;
    }
    write_file(
        &dir.join("oci-layout"),
        &mut &br#"{"imageLayoutVersion":"1.0.0"}"#[..],
    )
    .map_err(access(&location, "write oci-layout"))?;
    let mut entry = Descriptor::new(
        MediaType::OciManifest,
        manifest_digest.clone(),
        manifest.len() as u64,
    );
    entry.artifact_type = Some(ARTIFACT_TYPE.into());
    entry
        .annotations
        .insert(ANNOTATION_REF_NAME.into(), REF_NAME.into());
    let mut index = Index::new();
    index.manifests.push(entry);
    write_file(
        &dir.join("index.json"),
        &mut &crate::oci::to_canonical_json(&index)[..],
    )
    .map_err(access(&location, "write index.json"))?;
    Ok(manifest_digest)
}
