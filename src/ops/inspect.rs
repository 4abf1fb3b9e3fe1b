//! `kiln inspect IMAGE` and `kiln images`.
use serde::Serialize;

use crate::oci::{Digest, ImageConfig, MediaType, Platform};
use crate::store::Store;
use crate::transport::{load_image, read_base_into_store, Target};

use super::Result;

/// One layer as `inspect` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    /// The blob digest.
    pub digest: Digest,
    /// The diff_id.
    pub diff_id: Digest,
    /// The media type.
    pub media_type: MediaType,
    /// The blob size.
    pub size: u64,
}

/// What `inspect` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The image name or transport reference.
    pub name: String,
    /// The manifest digest.
    pub digest: Digest,
    /// The manifest media type.
    pub media_type: MediaType,
    /// The platform.
    pub platform: String,
    /// Config plus layers, in bytes.
    pub size: u64,
    /// The config digest.
    pub config_digest: Digest,
    /// The config.
    pub config: ImageConfig,
    /// The layers, base first.
    pub layers: Vec<LayerInfo>,
}

/// Inspects an image. Images outside the store are read into it first (their blobs verified);
/// from a registry, only the manifest and config: the layers are recorded lazily, as for a
/// build's base, since inspecting needs only their descriptors.
pub fn inspect(
    store: &Store,
    target: &Target,
    platform: Option<&Platform>,
    remote: Option<&crate::transport::Remote>,
) -> Result<Inspection> {
    let image = read_base_into_store(store, target, platform, remote)?;
    Ok(Inspection {
        name: target.to_string(),
        digest: image.digest().clone(),
        media_type: image.descriptor.media_type.clone(),
        platform: image.platform().to_string(),
        size: image.size(),
        config_digest: image.manifest.config.digest.clone(),
        layers: image
            .layers()
            .iter()
            .zip(image.diff_ids())
            .map(|(l, d)| LayerInfo {
                digest: l.digest.clone(),
                diff_id: d.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
            })
            .collect(),
        config: image.config,
    })
}

/// One line of `kiln images`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    /// The name.
    pub name: String,
    /// The manifest (or index) digest.
    pub digest: Digest,
    /// Config plus layers, in bytes (0 for an index).
    pub size: u64,
    /// The config's `created`.
    pub created: Option<String>,
}

/// Lists the named images in the store.
pub fn images(store: &Store) -> Result<Vec<ImageSummary>> {
    let index = store.index()?;
    let mut out = Vec::new();
    for d in &index.manifests {
        let name = d.ref_name().unwrap_or("").to_string();
        let (size, created) = match load_image(store, d, None, &name) {
            Ok(img) => (img.size(), img.config.created.clone()),
            Err(_) => (0, None),
        };
        out.push(ImageSummary {
            name,
            digest: d.digest.clone(),
            size,
            created,
        });
    }
    Ok(out)
}
