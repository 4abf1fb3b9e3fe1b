//! Loading an image from the store by descriptor, choosing a platform when it is an index.
use crate::image::Image;
use crate::oci::{self, Descriptor, Index, Manifest, Platform};
use crate::store::Store;

use super::{Error, Result};

/// Loads the image `descriptor` points at. If it is an index, picks the manifest for `platform`
/// (the host's when `None`); a single-entry index without a platform is taken as is.
pub fn load_image(
    store: &Store,
    descriptor: &Descriptor,
    platform: Option<&Platform>,
    location: &str,
) -> Result<Image> {
    let desc = select_manifest(store, descriptor, platform, location)?;
    super::check_document(&desc, false, location)?;
    let raw_manifest = store.read_blob(&desc.digest)?;
    let manifest: Manifest =
        oci::from_json("manifest", &raw_manifest).map_err(|e| Error::Malformed {
            location: location.to_string(),
            reason: format!("manifest `{}`: {e}", desc.digest),
        })?;
    // Configs are read whole: refuse one whose descriptor declares more than the cap.
    super::check_document(&manifest.config, true, location)?;
    let raw_config = store.read_blob(&manifest.config.digest)?;
    let mut image = Image::from_raw(raw_manifest, raw_config)?;
    image.descriptor.media_type = desc.media_type.clone();
    Ok(image)
}

/// Follows indexes down to one image manifest descriptor.
pub(crate) fn select_manifest(
    store: &Store,
    descriptor: &Descriptor,
    platform: Option<&Platform>,
    location: &str,
) -> Result<Descriptor> {
    let mut d = descriptor.clone();
    for _ in 0..8 {
        if !d.media_type.is_index() {
            return Ok(d);
        }
        super::check_document(&d, false, location)?;
        let bytes = store.read_blob(&d.digest)?;
        let index: Index = oci::from_json("index", &bytes).map_err(|e| Error::Malformed {
            location: location.to_string(),
            reason: format!("index `{}`: {e}", d.digest),
        })?;
        d = pick(&index, platform, location)?.clone();
    }
    Err(Error::Malformed {
        location: location.to_string(),
        reason: "indexes nested more than 8 deep".into(),
    })
}

/// Picks the manifest for `platform` from an index.
pub(crate) fn pick<'a>(
    index: &'a Index,
    platform: Option<&Platform>,
    location: &str,
) -> Result<&'a Descriptor> {
    let want = platform.cloned().unwrap_or_else(Platform::host);
    let images: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|m| m.media_type.is_manifest() || m.media_type.is_index())
        // attestation manifests (BuildKit's "unknown/unknown") are never images
        .filter(|m| m.platform.as_ref().is_none_or(|p| p.os != "unknown"))
        .collect();
    if let Some(m) = images
        .iter()
        .find(|m| m.platform.as_ref().is_some_and(|p| p.satisfies(&want)))
    {
        return Ok(m);
    }
    if images.len() == 1 && images[0].platform.is_none() {
        return Ok(images[0]);
    }
    Err(Error::NoPlatform {
        location: location.to_string(),
        platform: Box::new(want),
        available: images
            .iter()
            .map(|m| {
                m.platform
                    .as_ref()
                    .map_or("unspecified".to_string(), |p| p.to_string())
            })
            .collect::<Vec<_>>()
            .join(", "),
    })
}
