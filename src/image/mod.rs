//! Images as values: [`Image`] (manifest + config + their raw bytes) and [`ImageBuilder`].
//!
//! What it owns: assembling a manifest and config from a base, layers, config edits and history,
//! serialising them once as canonical JSON, and computing their digests. What it does not: storing
//! blobs (the caller puts `raw_config` and `raw_manifest` where they belong) or producing layers.
//!
//! `Image` is a plain struct, not a trait of fallible getters: everything about an image is known
//! once it is built or read.
use std::collections::BTreeMap;

use crate::oci::{
    self, rfc3339, Descriptor, Digest, History, ImageConfig, Manifest, MediaType, Platform,
};

/// Errors reading an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifest or config is not valid JSON of the expected shape.
    #[error("image `{digest}` is invalid")]
    Invalid {
        /// The blob that failed.
        digest: Digest,
        /// The parse error.
        #[source]
        source: oci::Error,
    },
    /// The config lists another number of diff_ids than the manifest has layers.
    #[error("image `{digest}` has {layers} layers but its config lists {diff_ids} diff_ids")]
    LayerCountMismatch {
        /// The manifest digest.
        digest: Digest,
        /// Layers in the manifest.
        layers: usize,
        /// diff_ids in the config.
        diff_ids: usize,
    },
    /// The manifest's media type is not one kiln can use as an image.
    #[error("`{digest}` has media type `{media_type}`, which is not an image manifest")]
    NotAnImage {
        /// The digest.
        digest: Digest,
        /// Its media type.
        media_type: MediaType,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An image: its manifest and config, parsed, with the exact bytes they were parsed from.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest.
    pub manifest: Manifest,
    /// The manifest's bytes; its digest is computed over these.
    pub raw_manifest: Vec<u8>,
    /// Descriptor of the manifest (media type, digest, size).
    pub descriptor: Descriptor,
    /// The config.
    pub config: ImageConfig,
    /// The config's bytes.
    pub raw_config: Vec<u8>,
}

impl Image {
    /// Parses an image from its manifest and config bytes, checking they agree.
    pub fn from_raw(raw_manifest: Vec<u8>, raw_config: Vec<u8>) -> Result<Image> {
        let digest = Digest::sha256(&raw_manifest);
        let manifest: Manifest =
            oci::from_json("manifest", &raw_manifest).map_err(|source| Error::Invalid {
                digest: digest.clone(),
                source,
            })?;
        let config: ImageConfig =
            oci::from_json("image config", &raw_config).map_err(|source| Error::Invalid {
                digest: manifest.config.digest.clone(),
                source,
            })?;
        let media_type = manifest
            .media_type
            .clone()
            .unwrap_or(MediaType::OciManifest);
        if !media_type.is_manifest() {
            return Err(Error::NotAnImage { digest, media_type });
        }
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(Error::LayerCountMismatch {
                digest,
                layers: manifest.layers.len(),
                diff_ids: config.rootfs.diff_ids.len(),
            });
        }
        let descriptor = Descriptor::new(media_type, digest, raw_manifest.len() as u64);
        Ok(Image {
            manifest,
            raw_manifest,
            descriptor,
            config,
            raw_config,
        })
    }

    /// The manifest digest.
    pub fn digest(&self) -> &Digest {
        &self.descriptor.digest
    }

    /// The layers, base first.
    pub fn layers(&self) -> &[Descriptor] {
        &self.manifest.layers
    }

    /// The layers' diff_ids, base first.
    pub fn diff_ids(&self) -> &[Digest] {
        &self.config.rootfs.diff_ids
    }

    /// This image's entry in an OCI index: its manifest's descriptor with the platform, arm64's
    /// `v8` variant left out (the normalised form containerd and buildx write).
    pub fn index_entry(&self) -> Descriptor {
        let mut d = Descriptor::new(
            self.descriptor.media_type.clone(),
            self.digest().clone(),
            self.raw_manifest.len() as u64,
        );
        let mut p = self.platform();
        if p.architecture == "arm64" && p.variant.as_deref() == Some("v8") {
            p.variant = None;
        }
        d.platform = Some(p);
        d
    }

    /// The platform the config declares.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.config.architecture.clone(),
            os: self.config.os.clone(),
            os_version: self.config.os_version.clone(),
            os_features: self.config.os_features.clone(),
            variant: self.config.variant.clone(),
        }
    }

    /// The sum of the blob sizes: config plus layers.
    pub fn size(&self) -> u64 {
        self.manifest.config.size + self.manifest.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

/// A layer to append: its blob descriptor and diff_id.
#[derive(Debug, Clone)]
pub struct NewLayer {
    /// The blob (compressed) descriptor.
    pub descriptor: Descriptor,
    /// SHA-256 of the uncompressed tar.
    pub diff_id: Digest,
}

/// Builds an image from a base (or nothing), layers, config edits and history.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    layers: Vec<Descriptor>,
    config: ImageConfig,
    created: Option<i64>,
    annotations: BTreeMap<String, String>,
}

impl ImageBuilder {
    /// An empty image for `platform` (`FROM scratch`).
    pub fn scratch(platform: &Platform) -> ImageBuilder {
        let config = ImageConfig {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            os_version: platform.os_version.clone(),
            os_features: platform.os_features.clone(),
            variant: platform.variant.clone(),
            ..ImageConfig::default()
        };
        ImageBuilder {
            layers: Vec::new(),
            config,
            created: None,
            annotations: BTreeMap::new(),
        }
    }

    /// Starts from `base`: its layers, config and history.
    pub fn from_base(base: &Image) -> ImageBuilder {
        let mut config = base.config.clone();
        // Fields of the old Docker daemon that describe the base's build, not ours.
        for k in ["container", "container_config", "docker_version"] {
            config.extra.remove(k);
        }
        ImageBuilder {
            layers: base.manifest.layers.clone(),
            config,
            created: None,
            annotations: BTreeMap::new(),
        }
    }

    /// Appends a layer and the history entry that made it.
    pub fn append(&mut self, layer: NewLayer, created_by: &str) -> &mut Self {
        self.layers.push(layer.descriptor);
        self.config.rootfs.diff_ids.push(layer.diff_id);
        self.config.history.push(History {
            created_by: Some(created_by.to_string()),
            ..History::default()
        });
        self
    }

    /// Records a step that produced no layer.
    pub fn empty_step(&mut self, created_by: &str) -> &mut Self {
        self.config.history.push(History {
            created_by: Some(created_by.to_string()),
            empty_layer: true,
            ..History::default()
        });
        self
    }

    /// The config, to edit (Env, Cmd, Labels, …).
    pub fn config_mut(&mut self) -> &mut ImageConfig {
        &mut self.config
    }

    /// Sets the creation time (seconds since the epoch) of the image and of new history entries.
    pub fn created(&mut self, epoch: i64) -> &mut Self {
        self.created = Some(epoch);
        self
    }

    /// Adds a manifest annotation.
    pub fn annotate(&mut self, key: &str, value: &str) -> &mut Self {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }

    /// Serialises config and manifest (canonical JSON) and computes their digests.
    pub fn build(&self) -> Image {
        let mut config = self.config.clone();
        if let Some(epoch) = self.created {
            let ts = rfc3339(epoch);
            config.created = Some(ts.clone());
            for h in config.history.iter_mut().filter(|h| h.created.is_none()) {
                h.created = Some(ts.clone());
            }
        }
        let raw_config = oci::to_canonical_json(&config);
        let config_desc = Descriptor::new(
            MediaType::OciConfig,
            Digest::sha256(&raw_config),
            raw_config.len() as u64,
        );
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MediaType::OciManifest),
            artifact_type: None,
            config: config_desc,
            layers: self.layers.clone(),
            subject: None,
            annotations: self.annotations.clone(),
            extra: BTreeMap::new(),
        };
        let raw_manifest = oci::to_canonical_json(&manifest);
        let descriptor = Descriptor::new(
            MediaType::OciManifest,
            Digest::sha256(&raw_manifest),
            raw_manifest.len() as u64,
        );
        Image {
            manifest,
            raw_manifest,
            descriptor,
            config,
            raw_config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn building_twice_gives_the_same_digest_and_parses_back() {
        let mut b = ImageBuilder::scratch(&Platform::linux("amd64"));
        b.append(
            NewLayer {
                descriptor: Descriptor::new(MediaType::OciLayerGzip, Digest::sha256(b"l"), 1),
                diff_id: Digest::sha256(b"t"),
            },
            "COPY . / # buildkit",
        )
        .empty_step("CMD [\"sh\"]")
        .created(0);
        b.config_mut().config.cmd = Some(vec!["sh".into()]);
        let a = b.build();
        assert_eq!(a.digest(), b.build().digest());
        let back = Image::from_raw(a.raw_manifest.clone(), a.raw_config.clone()).unwrap();
        assert_eq!(back.digest(), a.digest());
        assert_eq!(back.config.history.len(), 2);
        assert_eq!(back.config.created.as_deref(), Some("1970-01-01T00:00:00Z"));
    }
}
