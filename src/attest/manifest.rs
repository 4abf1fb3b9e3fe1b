//! Attestations in an image index, as BuildKit lays them out
//! (`exporter/containerimage/writer.go`, `docs/attestations/attestation-storage.md`): for each
//! platform image, an OCI image manifest whose layers are the in-toto Statements
//! (`application/vnd.in-toto+json`, annotated `in-toto.io/predicate-type`), whose config is a
//! minimal image config of platform `unknown/unknown` listing the statements' digests as
//! diff_ids, and whose index entry has platform `unknown/unknown` and the annotations
//! `vnd.docker.reference.digest` (the image manifest's digest) and
//! `vnd.docker.reference.type=attestation-manifest`. Platform images come first in the index,
//! attestation manifests after, in the same order. Every blob goes through the store, and the
//! same statements give the same bytes and digests.
use std::collections::BTreeMap;

use serde_json::json;

use crate::image::Image;
use crate::oci::{self, Descriptor, Index, MediaType, Platform};
use crate::store::Store;

/// The media type of an in-toto statement layer.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// The layer annotation naming a statement's predicate type.
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
/// The index annotation naming the image an attestation manifest is about.
pub const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
/// The index annotation saying an entry is an attestation manifest.
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// Its value.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";

/// One statement to attach: its predicate type and canonical bytes.
#[derive(Debug, Clone)]
pub struct Statement {
    /// `predicateType`.
    pub predicate_type: String,
    /// The statement's bytes.
    pub bytes: Vec<u8>,
}

fn unknown() -> Platform {
    Platform {
        architecture: "unknown".into(),
        os: "unknown".into(),
        os_version: None,
        os_features: Vec::new(),
        variant: None,
    }
}

/// Stores `statements` and the attestation manifest about `image`; returns it as an image
/// and the index entry that names it.
pub fn attestation_manifest(
    store: &Store,
    image: &Image,
    statements: &[Statement],
) -> Result<(Image, Descriptor), crate::store::Error> {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for s in statements {
        let digest = store.put_bytes(&s.bytes)?;
        let mut d = Descriptor::new(
            MediaType::Other(IN_TOTO.into()),
            digest.clone(),
            s.bytes.len() as u64,
        );
        d.annotations
            .insert(ANNOTATION_PREDICATE_TYPE.into(), s.predicate_type.clone());
        layers.push(d);
        diff_ids.push(digest.to_string());
    }
    let config = oci::to_canonical_json(&json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }));
    let config_digest = store.put_bytes(&config)?;
    let manifest = oci::to_canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OciManifest.to_string(),
        "config": Descriptor::new(MediaType::OciConfig, config_digest, config.len() as u64),
        "layers": layers,
    }));
    store.put_bytes(&manifest)?;
    let att = Image::from_raw(manifest, config).expect("kiln's attestation manifest parses");
    let mut entry = att.descriptor.clone();
    entry.platform = Some(unknown());
    entry.annotations.insert(
        ANNOTATION_REFERENCE_DIGEST.into(),
        image.digest().to_string(),
    );
    entry.annotations.insert(
        ANNOTATION_REFERENCE_TYPE.into(),
        ATTESTATION_MANIFEST.into(),
    );
    Ok((att, entry))
}

/// An index of `images` (each with its platform) followed by their attestation manifests,
/// stored; returns the index descriptor and every manifest as images, index order.
pub fn index_with_attestations(
    store: &Store,
    images: &[Image],
    attestations: &[(Image, Descriptor)],
    annotations: &BTreeMap<String, String>,
) -> Result<(Descriptor, Vec<Image>), crate::store::Error> {
    let mut index = Index::new();
    index.annotations = annotations.clone();
    index
        .manifests
        .extend(images.iter().map(Image::index_entry));
    index
        .manifests
        .extend(attestations.iter().map(|(_, d)| d.clone()));
    let bytes = oci::to_canonical_json(&index);
    let digest = store.put_bytes(&bytes)?;
    let all = images
        .iter()
        .cloned()
        .chain(attestations.iter().map(|(i, _)| i.clone()))
        .collect();
    Ok((
        Descriptor::new(MediaType::OciIndex, digest, bytes.len() as u64),
        all,
    ))
}
