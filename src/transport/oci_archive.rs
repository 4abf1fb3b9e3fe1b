//! `oci-archive:FILE[:REF]`: an OCI image layout in a tar file.
use std::path::Path;

use crate::image::Image;
use crate::oci::{self, Descriptor, Digest, Index, Platform};
use crate::store::Store;

use super::archive_tar::{clean_member, open_archive, read_metadata_member, ArchiveWriter};
use super::oci_dir::find_entry;
use super::select::load_image;
use super::{Error, Result};

fn location(file: &Path) -> String {
    format!("oci-archive:{}", file.display())
}

/// Reads the archive in one pass: every blob goes into the store (verified against its name),
/// then the image is resolved from the archive's `index.json`.
pub(crate) fn read(
    store: &Store,
    file: &Path,
    reference: Option<&str>,
    platform: Option<&Platform>,
) -> Result<Image> {
    let loc = location(file);
    let entry = read_entry(store, file, reference)?;
    load_image(store, &entry, platform, &loc)
}

/// Reads every blob of the archive into the store; returns the `index.json` entry `reference`
/// names (or the only one).
pub(crate) fn read_entry(
    store: &Store,
    file: &Path,
    reference: Option<&str>,
) -> Result<Descriptor> {
    let loc = location(file);
    let mut archive = open_archive(file)?;
    let malformed = |reason: String| Error::Malformed {
        location: location(file),
        reason,
    };
    let mut index_bytes = None;
    let mut saw_layout = false;
    let entries = archive
        .entries()
        .map_err(|e| malformed(format!("not a tar file: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| malformed(format!("not a valid tar file: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = clean_member(&entry.path_bytes());
        if path == "index.json" {
            let b =
                read_metadata_member(&mut entry, &path).map_err(|e| malformed(e.to_string()))?;
            index_bytes = Some(b);
        } else if path == "oci-layout" {
            saw_layout = true;
        } else if let Some(rest) = path.strip_prefix("blobs/") {
            let digest: Digest = rest
                .replacen('/', ":", 1)
                .parse()
                .map_err(|e| malformed(format!("member `{path}`: {e}")))?;
            let size = entry.header().size().ok();
            store.put_verified(&digest, size, &mut entry)?;
        }
    }
    if !saw_layout {
        return Err(malformed(
            "no `oci-layout` member: not an OCI archive".into(),
        ));
    }
    let bytes = index_bytes.ok_or_else(|| malformed("no `index.json` member".into()))?;
    let index: Index = oci::from_json("index", &bytes).map_err(|e| malformed(e.to_string()))?;
    Ok(find_entry(&index, reference, &loc)?.clone())
}

/// Writes `images` and, when given, the index (`top`, whose blob is in the store) that lists
/// them; `index.json` names `top` with the annotations it carries (its names: see
/// [`super::named_entry`]).
pub(crate) fn write_tree(
    layers: super::LayerSource<'_>,
    images: &[Image],
    index_blob: Option<&Digest>,
    top: &Descriptor,
    file: &Path,
) -> Result<()> {
    let store = layers.store();
    let mut w = ArchiveWriter::create(file)?;
    w.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut index = Index::new();
    index.manifests.push(top.clone());
    w.bytes("index.json", &oci::to_canonical_json(&index))?;
    w.dir("blobs")?;
    w.dir("blobs/sha256")?;
    let mut done = std::collections::BTreeSet::new();
    for image in images {
        for l in image.layers() {
            if l.media_type.is_foreign_layer() && !store.contains(&l.digest) {
                continue;
            }
            if done.insert(l.digest.clone()) {
                // Opening the blob downloads it first when it is lazy.
                let mut blob = layers.open_blob(&l.digest)?;
                w.stream(&format!("blobs/sha256/{}", l.digest.hex()), &mut blob)?;
            }
        }
        if done.insert(image.manifest.config.digest.clone()) {
            w.bytes(
                &format!("blobs/sha256/{}", image.manifest.config.digest.hex()),
                &image.raw_config,
            )?;
        }
        if done.insert(image.digest().clone()) {
            w.bytes(
                &format!("blobs/sha256/{}", image.digest().hex()),
                &image.raw_manifest,
            )?;
        }
    }
    if let Some(i) = index_blob {
        if done.insert(i.clone()) {
            w.file(&format!("blobs/sha256/{}", i.hex()), &store.blob_path(i))?;
        }
    }
    w.finish()
}
