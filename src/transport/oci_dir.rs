//! `oci:DIR[:REF]`: an OCI image layout directory.
use std::path::Path;

use crate::image::Image;
use crate::oci::{self, Descriptor, Index, Platform};
use crate::store::Store;

use super::select::{load_image, pick};
use super::{check_document, io_err, open_regular, Error, Result};
use crate::oci::limits::{read_capped, MAX_LAYOUT_INDEX_SIZE};

pub(crate) fn location(dir: &Path) -> String {
    format!("oci:{}", dir.display())
}

/// Finds the index entry for `reference` (matched against `ref.name`, also as the tag part of a
/// full name, as skopeo and buildah write either, or against containerd's full
/// `io.containerd.image.name`), or the only entry when none is given.
pub(crate) fn find_entry<'a>(
    index: &'a Index,
    reference: Option<&str>,
    loc: &str,
) -> Result<&'a Descriptor> {
    let names = || {
        let n: Vec<String> = index
            .manifests
            .iter()
            .map(|m| m.ref_name().unwrap_or("(unnamed)").to_string())
            .collect();
        if n.is_empty() {
            " (the index is empty)".to_string()
        } else {
            format!(" (available: {})", n.join(", "))
        }
    };
    match reference {
        Some(r) => index
            .manifests
            .iter()
            .find(|m| {
                // `sha256:…` picks by digest (buildx's `oci-layout://DIR@sha256:…`).
                (r.starts_with("sha256:") && m.digest.to_string() == r)
                    || m.ref_name().is_some_and(|n| {
                        n == r
                            || n.rsplit_once(':')
                                .is_some_and(|(_, tag)| tag == r && !r.contains(':'))
                    })
                    || m.annotations
                        .get(super::ANNOTATION_IMAGE_NAME)
                        .is_some_and(|full| full == r || full_name(r).as_deref() == Some(full))
            })
            .ok_or_else(|| Error::NotFound {
                location: loc.to_string(),
                wanted: format!("named `{r}`"),
                available: names(),
            }),
        None if index.manifests.len() == 1 => Ok(&index.manifests[0]),
        None => Err(Error::NotFound {
            location: loc.to_string(),
            wanted: "given; name one with `:REF`".to_string(),
            available: names(),
        }),
    }
}

/// `r` as a full normalised image name (`app:1` → `docker.io/library/app:1`), as containerd's
/// `io.containerd.image.name` carries it.
fn full_name(r: &str) -> Option<String> {
    crate::registry::Reference::parse(r)
        .ok()
        .map(|n| n.to_string())
}

/// Where the layout in `dir` keeps the blob `d` names.
fn blob_path(dir: &Path, d: &Descriptor) -> std::path::PathBuf {
    dir.join("blobs")
        .join(d.digest.algorithm().as_str())
        .join(d.digest.hex())
}

/// Imports `d`'s blob from the layout, except a foreign layer the layout does not hold: that
/// one stays at its URLs.
fn import_unless_foreign(store: &Store, dir: &Path, d: &Descriptor) -> Result<()> {
    if d.media_type.is_foreign_layer() && !blob_path(dir, d).exists() {
        return Ok(());
    }
    import_blob(store, dir, d)
}

/// Copies the layout's blob `d` into the store, verified against its digest and size. The file
/// must be a regular file, not a symlink (to `/dev/zero`, to a host file); it is read through
/// `take(size + 1)` by [`Store::put_verified`], so a longer file fails at the first extra byte.
fn import_blob(store: &Store, dir: &Path, d: &Descriptor) -> Result<()> {
    if store.contains(&d.digest) {
        return Ok(());
    }
    let p = blob_path(dir, d);
    let mut f = open_regular(&p)?;
    store
        .put_verified(&d.digest, Some(d.size), &mut f)
        .map_err(|e| Error::Malformed {
            location: format!("{} (blob `{}`)", location(dir), p.display()),
            reason: e.to_string(),
        })?;
    Ok(())
}

/// Reads a layout's `index.json`: a regular file (not a symlink), at most
/// [`MAX_LAYOUT_INDEX_SIZE`] bytes.
fn read_index_json(path: &Path) -> Result<Vec<u8>> {
    let mut f = open_regular(path)?;
    read_capped(&mut f, MAX_LAYOUT_INDEX_SIZE, "index.json").map_err(io_err("cannot read", path))
}

/// The layout's location (for errors) and its `index.json`; a directory without `oci-layout` is
/// not a layout.
fn read_layout_index(dir: &Path) -> Result<(String, Index)> {
    let loc = location(dir);
    if !dir.join("oci-layout").is_file() {
        return Err(Error::Malformed {
            location: loc,
            reason: "no `oci-layout` file: not an OCI image layout".into(),
        });
    }
    let index_path = dir.join("index.json");
    let bytes = read_index_json(&index_path)?;
    let index: Index = oci::from_json("index", &bytes).map_err(|e| Error::Malformed {
        location: loc.clone(),
        reason: e.to_string(),
    })?;
    Ok((loc, index))
}

pub(crate) fn read(
    store: &Store,
    dir: &Path,
    reference: Option<&str>,
    platform: Option<&Platform>,
) -> Result<Image> {
    let (loc, index) = read_layout_index(dir)?;
    let entry = find_entry(&index, reference, &loc)?.clone();
    // Copy the chain of indexes down to the chosen manifest, then its config and layers.
    let import = |d: &Descriptor| import_unless_foreign(store, dir, d);
    let mut d = entry.clone();
    for _ in 0..8 {
        check_document(&d, false, &loc)?;
        import(&d)?;
        if !d.media_type.is_index() {
            break;
        }
        let bytes = store.read_blob(&d.digest)?;
        let idx: Index = oci::from_json("index", &bytes).map_err(|e| Error::Malformed {
            location: loc.clone(),
            reason: e.to_string(),
        })?;
        d = pick(&idx, platform, &loc)?.clone();
    }
    let raw = store.read_blob(&d.digest)?;
    let manifest: oci::Manifest =
        oci::from_json("manifest", &raw).map_err(|e| Error::Malformed {
            location: loc.clone(),
            reason: e.to_string(),
        })?;
    check_document(&manifest.config, true, &loc)?;
    import(&manifest.config)?;
    for l in &manifest.layers {
        import(l)?;
    }
    load_image(store, &entry, platform, &loc)
}

/// Writes `images` and, when given, the index (`top`, whose blob is in the store) that lists
/// them, then names `top` in `index.json` with the annotations it carries (its names: see
/// [`super::named_entry`]): an entry of the same `ref.name` is replaced, or without one an
/// unnamed entry of the same digest.
pub(crate) fn write_tree(
    layers: super::LayerSource<'_>,
    images: &[Image],
    index: Option<&oci::Digest>,
    top: &Descriptor,
    dir: &Path,
) -> Result<()> {
    let store = layers.store();
    let loc = location(dir);
    crate::store::init_layout(dir).map_err(|e| Error::Malformed {
        location: loc.clone(),
        reason: e.to_string(),
    })?;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io_err("cannot create", &blobs))?;
    let copy = |d: &oci::Digest| -> Result<()> {
        let dest = blobs.join(d.hex());
        if dest.is_file() {
            return Ok(());
        }
        let mut src = layers.open_blob(d)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&blobs)
            .map_err(io_err("cannot create a temp file in", &blobs))?;
        std::io::copy(&mut src, &mut tmp).map_err(io_err("cannot write", &dest))?;
        tmp.persist(&dest).map_err(|e| Error::Io {
            action: "cannot write",
            path: dest.clone(),
            source: e.error,
        })?;
        Ok(())
    };
    for image in images {
        for l in image.layers() {
            if l.media_type.is_foreign_layer() && !store.contains(&l.digest) {
                continue;
            }
            copy(&l.digest)?;
        }
        store.put_bytes(&image.raw_config)?;
        copy(&image.manifest.config.digest)?;
        store.put_bytes(&image.raw_manifest)?;
        copy(image.digest())?;
    }
    if let Some(i) = index {
        copy(i)?;
    }
    let index_path = dir.join("index.json");
    let bytes = read_index_json(&index_path)?;
    let mut index: Index = oci::from_json("index", &bytes).map_err(|e| Error::Malformed {
        location: loc,
        reason: e.to_string(),
    })?;
    let d = top.clone();
    match d.ref_name() {
        Some(r) => index.manifests.retain(|m| m.ref_name() != Some(r)),
        None => index
            .manifests
            .retain(|m| !(m.digest == d.digest && m.ref_name().is_none())),
    }
    index.manifests.push(d);
    crate::store::write_atomic(dir, &index_path, &oci::to_canonical_json(&index))?;
    Ok(())
}

/// Imports the entry `reference` names (or the only one) with everything below it: an index,
/// every manifest it lists, their configs and layers. Returns the entry.
pub(crate) fn read_entry_all(
    store: &Store,
    dir: &Path,
    reference: Option<&str>,
) -> Result<Descriptor> {
    let (loc, index) = read_layout_index(dir)?;
    let entry = find_entry(&index, reference, &loc)?.clone();
    let import = |d: &Descriptor| import_unless_foreign(store, dir, d);
    let mut todo = vec![(entry.clone(), 0)];
    while let Some((d, depth)) = todo.pop() {
        if d.media_type.is_index() || d.media_type.is_manifest() {
            check_document(&d, false, &loc)?;
        }
        import(&d)?;
        let malformed = |e: oci::Error| Error::Malformed {
            location: loc.clone(),
            reason: format!("`{}`: {e}", d.digest),
        };
        if d.media_type.is_index() {
            if depth >= 8 {
                return Err(Error::Malformed {
                    location: loc,
                    reason: "indexes nested more than 8 deep".into(),
                });
            }
            let idx: Index =
                oci::from_json("index", &store.read_blob(&d.digest)?).map_err(malformed)?;
            todo.extend(idx.manifests.into_iter().map(|m| (m, depth + 1)));
        } else if d.media_type.is_manifest() {
            let m: oci::Manifest =
                oci::from_json("manifest", &store.read_blob(&d.digest)?).map_err(malformed)?;
            check_document(&m.config, true, &loc)?;
            import(&m.config)?;
            for l in &m.layers {
                import(l)?;
            }
        }
    }
    Ok(entry)
}
