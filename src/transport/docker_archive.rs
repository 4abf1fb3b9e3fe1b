//! `docker-archive:FILE[:NAME:TAG]`: the `docker save` format, read and written.
//!
//! Written as classic `docker save` output, which every version of `docker load`, `podman load`
//! and skopeo reads: `manifest.json`, `<config-hex>.json`, and one `<diff_id-hex>/layer.tar` per
//! layer, uncompressed (so the archive holds exactly the diff_ids the config lists).
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::image::Image;
use crate::layer::{decompressor, sniff_compression, Compressed, SNIFF_LEN};
use crate::oci::{self, Descriptor, Digest, ImageConfig, Manifest, MediaType};
use crate::store::Store;

use super::archive_tar::{clean_member, open_archive, read_metadata_member, ArchiveWriter};
use super::{io_err, Error, Result};

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn location(file: &Path) -> String {
    format!("docker-archive:{}", file.display())
}

pub(crate) fn read(store: &Store, file: &Path, reference: Option<&str>) -> Result<Image> {
    let malformed = |reason: String| Error::Malformed {
        location: location(file),
        reason,
    };
    let mut archive = open_archive(file)?;
    let mut manifest_json = None;
    // Every member goes into the store as a blob; members are found again by path.
    let mut members: BTreeMap<String, (Digest, u64)> = BTreeMap::new();
    let mut symlinks: BTreeMap<String, String> = BTreeMap::new();
    let entries = archive
        .entries()
        .map_err(|e| malformed(format!("not a tar file: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| malformed(format!("not a valid tar file: {e}")))?;
        let path = clean_member(&entry.path_bytes());
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            // docker save links identical layers: `b/layer.tar -> ../a/layer.tar`
            if let Some(t) = entry.link_name_bytes() {
                let base = path.rsplit_once('/').map_or("", |(d, _)| d);
                let target = clean_member(&t);
                let joined = normalize(&format!("{base}/{target}"));
                symlinks.insert(path, joined);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        if path == "manifest.json" {
            let b =
                read_metadata_member(&mut entry, &path).map_err(|e| malformed(e.to_string()))?;
            manifest_json = Some(b);
            continue;
        }
        if path == "repositories" || path.ends_with("/json") || path.ends_with("/VERSION") {
            continue;
        }
        let mut w = store.blob_writer()?;
        std::io::copy(&mut entry, &mut w)
            .map_err(|e| malformed(format!("member `{path}`: {e}")))?;
        let (digest, size) = w.finish()?;
        members.insert(path, (digest, size));
    }
    let bytes = manifest_json
        .ok_or_else(|| malformed("no `manifest.json` member: not a docker archive".into()))?;
    let list: Vec<Entry> =
        serde_json::from_slice(&bytes).map_err(|e| malformed(format!("manifest.json: {e}")))?;
    let chosen = choose(&list, reference).ok_or_else(|| Error::NotFound {
        location: location(file),
        wanted: match reference {
            Some(r) => format!("named `{r}`"),
            None => {
                "given and the archive holds several; name one with `:NAME:TAG` or `:@N`".into()
            }
        },
        available: format!(
            " (available: {})",
            list.iter()
                .flat_map(|e| e.repo_tags.clone().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })?;
    let find = |p: &str| -> Result<(Digest, u64)> {
        let p = clean_member(p.as_bytes());
        let p = symlinks.get(&p).cloned().unwrap_or(p);
        members.get(&p).cloned().ok_or_else(|| {
            malformed(format!(
                "manifest.json names `{p}`, which is not in the archive"
            ))
        })
    };
    let (config_digest, config_size) = find(&chosen.config)?;
    // Configs are read whole: refuse one over the cap (its member is on disk, not in memory).
    crate::oci::limits::check_size(
        &format!("image config `{}`", chosen.config),
        config_size,
        crate::oci::limits::MAX_CONFIG_SIZE,
    )
    .map_err(malformed)?;
    let raw_config = store.read_blob(&config_digest)?;
    let config: ImageConfig =
        oci::from_json("image config", &raw_config).map_err(|e| malformed(e.to_string()))?;
    if config.rootfs.diff_ids.len() != chosen.layers.len() {
        return Err(malformed(format!(
            "the config lists {} diff_ids but manifest.json {} layers",
            config.rootfs.diff_ids.len(),
            chosen.layers.len()
        )));
    }
    let mut layers = Vec::new();
    for p in &chosen.layers {
        let (digest, size) = find(p)?;
        let mut magic = Vec::with_capacity(SNIFF_LEN);
        let _ = store
            .open_blob(&digest)?
            .take(SNIFF_LEN as u64)
            .read_to_end(&mut magic);
        // OCI has layer media types for gzip and zstd only; anything else is taken as a tar.
        let media_type = match sniff_compression(&magic) {
            Compressed::Gzip => MediaType::OciLayerGzip,
            Compressed::Zstd => MediaType::OciLayerZstd,
            _ => MediaType::OciLayer,
        };
        layers.push(Descriptor::new(media_type, digest, size));
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MediaType::OciManifest),
        artifact_type: None,
        config: Descriptor::new(MediaType::OciConfig, config_digest, config_size),
        layers,
        subject: None,
        annotations: BTreeMap::new(),
        extra: BTreeMap::new(),
    };
    let raw_manifest = oci::to_canonical_json(&manifest);
    store.put_bytes(&raw_manifest)?;
    Ok(Image::from_raw(raw_manifest, raw_config)?)
}

fn choose<'a>(list: &'a [Entry], reference: Option<&str>) -> Option<&'a Entry> {
    match reference {
        None if list.len() == 1 => list.first(),
        None => None,
        Some(r) => {
            if let Some(n) = r.strip_prefix('@') {
                return n.parse::<usize>().ok().and_then(|i| list.get(i));
            }
            let want = crate::store::normalize_name(r).ok()?;
            list.iter().find(|e| {
                e.repo_tags.iter().flatten().any(|t| {
                    crate::store::normalize_name(t).ok().as_deref() == Some(want.as_str())
                        || t.strip_prefix("docker.io/library/") == Some(want.as_str())
                        || t.strip_prefix("localhost/") == Some(want.as_str())
                })
            })
        }
    }
}

fn normalize(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

pub(crate) fn write(
    layers: super::LayerSource<'_>,
    image: &Image,
    file: &Path,
    name: Option<&str>,
) -> Result<()> {
    let store = layers.store();
    let mut w = ArchiveWriter::create(file)?;
    let config_name = format!("{}.json", image.manifest.config.digest.hex());
    w.bytes(&config_name, &image.raw_config)?;
    let mut layer_paths = Vec::new();
    let mut written = std::collections::BTreeSet::new();
    for (layer, diff_id) in image.layers().iter().zip(image.diff_ids()) {
        let path = format!("{}/layer.tar", diff_id.hex());
        if written.insert(diff_id.clone()) {
            w.dir(diff_id.hex())?;
            let blob = layers.open_blob(&layer.digest)?;
            let mut reader = decompress(blob, &layer.media_type, &store.blob_path(&layer.digest))?;
            let mut hashing = HashingReader::new(&mut reader);
            w.stream(&path, &mut hashing)?;
            let actual = hashing.digest();
            if &actual != diff_id {
                return Err(Error::Malformed {
                    location: format!("layer `{}`", layer.digest),
                    reason: format!("decompresses to `{actual}`, but the config says its diff_id is `{diff_id}`"),
                });
            }
        }
        layer_paths.push(path);
    }
    let repo_tags = name.map(|n| vec![n.to_string()]);
    let manifest = vec![Entry {
        config: config_name,
        repo_tags,
        layers: layer_paths,
    }];
    let json = serde_json::to_vec(&manifest).map_err(|e| Error::Malformed {
        location: location(file),
        reason: e.to_string(),
    })?;
    w.bytes("manifest.json", &json)?;
    w.finish()
}

/// A reader of a layer's uncompressed tar, whatever its compression.
pub(crate) fn decompress(blob: File, media_type: &MediaType, path: &Path) -> Result<Box<dyn Read>> {
    use crate::oci::LayerCompression as C;
    let r = std::io::BufReader::with_capacity(1 << 20, blob);
    let format = match media_type.layer_compression() {
        Some(C::Gzip) => Compressed::Gzip,
        Some(C::Zstd) => Compressed::Zstd,
        Some(C::None) => Compressed::None,
        None => {
            return Err(Error::Malformed {
                location: path.display().to_string(),
                reason: format!("`{media_type}` is not a layer media type kiln can decompress"),
            })
        }
    };
    decompressor(r, format, path).map_err(io_err("cannot read", path))
}

struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        use sha2::Digest as _;
        HashingReader {
            inner,
            hasher: sha2::Sha256::new(),
        }
    }
    fn digest(self) -> Digest {
        use sha2::Digest as _;
        Digest::from_sha256_bytes(&self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
