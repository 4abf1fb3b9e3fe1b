//! Media types of the OCI image spec and of Docker's image manifest v2, schema 2.
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A media type. Unknown ones are kept verbatim in [`MediaType::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MediaType {
    /// `application/vnd.oci.image.manifest.v1+json`
    OciManifest,
    /// `application/vnd.oci.image.index.v1+json`
    OciIndex,
    /// `application/vnd.oci.image.config.v1+json`
    OciConfig,
    /// `application/vnd.oci.image.layer.v1.tar`
    OciLayer,
    /// `application/vnd.oci.image.layer.v1.tar+gzip`
    OciLayerGzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd`
    OciLayerZstd,
    /// `application/vnd.oci.image.layer.nondistributable.v1.tar+gzip` (deprecated, still read)
    OciForeignLayerGzip,
    /// `application/vnd.oci.empty.v1+json`
    OciEmpty,
    /// `application/vnd.docker.distribution.manifest.v2+json`
    DockerManifest,
    /// `application/vnd.docker.distribution.manifest.list.v2+json`
    DockerManifestList,
    /// `application/vnd.docker.container.image.v1+json`
    DockerConfig,
    /// `application/vnd.docker.image.rootfs.diff.tar.gzip`
    DockerLayerGzip,
    /// `application/vnd.docker.image.rootfs.foreign.diff.tar.gzip`
    DockerForeignLayerGzip,
    /// Any other media type, verbatim.
    Other(String),
}

impl MediaType {
    /// The media type string.
    pub fn as_str(&self) -> &str {
        match self {
            MediaType::OciManifest => "application/vnd.oci.image.manifest.v1+json",
            MediaType::OciIndex => "application/vnd.oci.image.index.v1+json",
            MediaType::OciConfig => "application/vnd.oci.image.config.v1+json",
            MediaType::OciLayer => "application/vnd.oci.image.layer.v1.tar",
            MediaType::OciLayerGzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            MediaType::OciLayerZstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            MediaType::OciForeignLayerGzip => {
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            }
            MediaType::OciEmpty => "application/vnd.oci.empty.v1+json",
            MediaType::DockerManifest => "application/vnd.docker.distribution.manifest.v2+json",
            MediaType::DockerManifestList => {
                "application/vnd.docker.distribution.manifest.list.v2+json"
            }
            MediaType::DockerConfig => "application/vnd.docker.container.image.v1+json",
            MediaType::DockerLayerGzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            MediaType::DockerForeignLayerGzip => {
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
            }
            MediaType::Other(s) => s,
        }
    }

    /// Parses a media type string; never fails.
    pub fn parse(s: &str) -> MediaType {
        const KNOWN: [MediaType; 13] = [
            MediaType::OciManifest,
            MediaType::OciIndex,
            MediaType::OciConfig,
            MediaType::OciLayer,
            MediaType::OciLayerGzip,
            MediaType::OciLayerZstd,
            MediaType::OciForeignLayerGzip,
            MediaType::OciEmpty,
            MediaType::DockerManifest,
            MediaType::DockerManifestList,
            MediaType::DockerConfig,
            MediaType::DockerLayerGzip,
            MediaType::DockerForeignLayerGzip,
        ];
        KNOWN
            .into_iter()
            .find(|m| m.as_str() == s)
            .unwrap_or_else(|| MediaType::Other(s.to_string()))
    }

    /// Whether this is an image manifest (OCI or Docker).
    pub fn is_manifest(&self) -> bool {
        matches!(self, MediaType::OciManifest | MediaType::DockerManifest)
    }

    /// Whether this is an index or a Docker manifest list.
    pub fn is_index(&self) -> bool {
        matches!(self, MediaType::OciIndex | MediaType::DockerManifestList)
    }

    /// Whether this is a layer, and how it is compressed.
    pub fn layer_compression(&self) -> Option<LayerCompression> {
        match self {
            MediaType::OciLayer => Some(LayerCompression::None),
            MediaType::OciLayerGzip
            | MediaType::OciForeignLayerGzip
            | MediaType::DockerLayerGzip
            | MediaType::DockerForeignLayerGzip => Some(LayerCompression::Gzip),
            MediaType::OciLayerZstd => Some(LayerCompression::Zstd),
            MediaType::Other(s) if s == "application/vnd.docker.image.rootfs.diff.tar" => {
                Some(LayerCompression::None)
            }
            _ => None,
        }
    }

    /// Whether the layer must not be pushed to registries (a "foreign" layer).
    pub fn is_foreign_layer(&self) -> bool {
        matches!(
            self,
            MediaType::OciForeignLayerGzip | MediaType::DockerForeignLayerGzip
        ) || matches!(self, MediaType::Other(s) if s.contains("nondistributable") || s.contains("foreign"))
    }
}

/// How a layer blob is compressed, as told by its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MediaType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MediaType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MediaType, D::Error> {
        Ok(MediaType::parse(&String::deserialize(d)?))
    }
}
