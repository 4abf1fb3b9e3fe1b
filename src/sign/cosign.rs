//! cosign's registry layout: signatures under `sha256-<hex>.sig`, attestations under
//! `sha256-<hex>.att`, in the signed image's own repository.
//!
//! Each is an OCI image manifest (cosign `pkg/oci/remote/write.go`, `WriteSignatures` /
//! `WriteAttestations`) whose config is a minimal image config and whose layers are the signed
//! payloads, one per signature:
//! - a signature layer is the simple-signing payload ([`simple_signing_payload`], media type
//!   `application/vnd.dev.cosign.simplesigning.v1+json`) with the base64 DER ECDSA signature in
//!   the `dev.cosignproject.cosign/signature` annotation (cosign `pkg/oci/static/signature.go`);
//! - an attestation layer is a DSSE envelope (`application/vnd.dsse.envelope.v1+json`) with a
//!   `predicateType` annotation and an empty signature annotation (the signature is inside).
//!
//! A new signature is appended to the manifest already under the tag (cosign's
//! `mutate.AttachSignatureToEntity`), never replacing the others; an identical layer (same
//! payload and same annotations) is not added twice. The keyless annotations
//! (`dev.sigstore.cosign/certificate`, `…/chain`, `…/bundle`) are read into [`Layer`] so a
//! Fulcio/Rekor verifier can use them later; kiln does not make or check them offline.
use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::oci::{to_canonical_json, Descriptor, Digest, Manifest, MediaType};
use crate::registry::{BlobUpload, Client, NoProgress, Reference};

use super::error::Error;

/// The simple-signing payload's media type.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// A DSSE envelope's media type.
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// The annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Keyless: the Fulcio certificate (PEM).
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// Keyless: the certificate chain (PEM).
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// Keyless: the Rekor bundle (JSON).
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// The attestation layer's predicate type annotation.
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";
/// The simple-signing `type` cosign writes.
pub const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";

/// The largest payload layer we read (a signature payload is a few hundred bytes; an
/// attestation with an SBOM can be large, but not larger than a manifest may be times 4).
pub const MAX_PAYLOAD_SIZE: u64 = 4 * crate::oci::limits::MAX_MANIFEST_SIZE;

/// `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}.sig", crate::registry::referrers_tag(digest))
}

/// `sha256-<hex>.att`.
pub fn attestation_tag(digest: &Digest) -> String {
    format!("{}.att", crate::registry::referrers_tag(digest))
}

/// The simple-signing payload (sigstore `pkg/signature/payload`, `Cosign.MarshalJSON`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimpleSigning {
    /// What the signature covers.
    pub critical: Critical,
    /// Free-form claims (`null` when none, as cosign writes).
    pub optional: Option<BTreeMap<String, serde_json::Value>>,
}

/// The critical section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Critical {
    /// The repository the signer meant.
    pub identity: Identity,
    /// The manifest digest.
    pub image: ImageClaim,
    /// `cosign container image signature`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// `critical.identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The repository, e.g. `registry.example/app`.
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

/// `critical.image`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageClaim {
    /// `sha256:<hex>`.
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

/// The repository name cosign puts in `docker-reference`: go-containerregistry's
/// `Repository.String()`, which spells Docker Hub `index.docker.io`.
pub fn docker_reference(r: &Reference) -> String {
    if r.registry() == crate::registry::DOCKER_HUB {
        format!("index.docker.io/{}", r.repository())
    } else {
        r.name()
    }
}

/// Whether a payload's `docker-reference` names `r`'s repository (Docker Hub spelled either
/// way; a tag or digest on the claim is ignored, as skopeo's `matchRepository` does).
pub fn same_repository(claim: &str, r: &Reference) -> bool {
    let Ok(c) = Reference::parse(claim) else {
        return false;
    };
    c.registry() == r.registry() && c.repository() == r.repository()
}

/// The exact bytes cosign signs for `digest` in `r`'s repository.
pub fn simple_signing_payload(r: &Reference, digest: &Digest) -> Vec<u8> {
    let p = SimpleSigning {
        critical: Critical {
            identity: Identity {
                docker_reference: docker_reference(r),
            },
            image: ImageClaim {
                docker_manifest_digest: digest.to_string(),
            },
            kind: COSIGN_SIGNATURE_TYPE.into(),
        },
        optional: None,
    };
    serde_json::to_vec(&p).expect("plain struct")
}

/// One layer of a `.sig`/`.att` manifest, with its payload bytes (digest-checked on fetch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The layer's media type.
    pub media_type: String,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// The layer's annotations (signature, predicate type, keyless certificate/bundle).
    pub annotations: BTreeMap<String, String>,
}

impl Layer {
    /// The base64 signature annotation, if any.
    pub fn signature(&self) -> Option<&str> {
        self.annotations
            .get(SIGNATURE_ANNOTATION)
            .map(String::as_str)
    }

    /// The keyless material (certificate, chain, bundle) this layer carries, if any.
    pub fn keyless(&self) -> Option<KeylessMaterial> {
        let get = |k: &str| self.annotations.get(k).cloned();
        let m = KeylessMaterial {
            certificate: get(CERTIFICATE_ANNOTATION),
            chain: get(CHAIN_ANNOTATION),
            bundle: get(BUNDLE_ANNOTATION),
        };
        (m.certificate.is_some() || m.bundle.is_some()).then_some(m)
    }
}

/// What a keyless (Fulcio/Rekor) signature carries beside the signature: kept so a verifier
/// with a trust root could check it; kiln has none offline and refuses instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeylessMaterial {
    /// The Fulcio certificate, PEM.
    pub certificate: Option<String>,
    /// Its chain, PEM.
    pub chain: Option<String>,
    /// The Rekor bundle, JSON.
    pub bundle: Option<String>,
}

/// cosign's config for a signature image: an empty image config whose diff_ids are the layer
/// digests (go-containerregistry's `mutate.Append` on `empty.Image`).
fn config_for(layers: &[Descriptor]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|d| d.digest.to_string()).collect();
    let history: Vec<serde_json::Value> = layers
        .iter()
        .map(|_| serde_json::json!({ "created": "0001-01-01T00:00:00Z" }))
        .collect();
    to_canonical_json(&serde_json::json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": history,
        "os": "",
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "config": {},
    }))
}

fn upload(bytes: Vec<u8>, digest: Digest) -> BlobUpload {
    let size = bytes.len() as u64;
    let bytes = Arc::new(bytes);
    BlobUpload {
        digest,
        size,
        open: Box::new(move || {
            Ok(Box::new(Cursor::new(bytes.as_ref().clone())) as Box<dyn std::io::Read + Send>)
        }),
        mount_from: vec![],
    }
}

/// Pushes `bytes` as a blob of `r`'s repository; returns its descriptor.
pub(crate) fn push_bytes(
    client: &Client,
    r: &Reference,
    bytes: Vec<u8>,
    media_type: &str,
) -> Result<Descriptor, Error> {
    let digest = Digest::sha256(&bytes);
    let size = bytes.len() as u64;
    client.push_blob(r, &upload(bytes, digest.clone()), &NoProgress)?;
    Ok(Descriptor::new(MediaType::parse(media_type), digest, size))
}

/// The manifest under `tag` in `r`'s repository, if there is one and it is an image manifest.
fn existing(client: &Client, r: &Reference, tag: &str) -> Result<Option<Manifest>, Error> {
    match client.get_manifest(&r.with_tag(tag)?) {
        Ok(m) if !m.is_index() => Ok(Some(m.manifest()?)),
        Ok(_) => Err(Error::Layout {
            reference: format!("{}:{tag}", r.name()),
            reason: "is an index, not a signature manifest".into(),
        }),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Appends `layer` to the manifest under `tag` (creating it), pushing the payload, the new
/// config and the manifest. Returns the new manifest's digest.
pub fn append_layer(
    client: &Client,
    r: &Reference,
    tag: &str,
    layer: &Layer,
) -> Result<Digest, Error> {
    let mut manifest = existing(client, r, tag)?.unwrap_or_else(|| Manifest {
        schema_version: 2,
        media_type: Some(MediaType::OciManifest),
        artifact_type: None,
        config: Descriptor::new(MediaType::OciConfig, Digest::sha256(b""), 0),
        layers: vec![],
        subject: None,
        annotations: BTreeMap::new(),
        extra: BTreeMap::new(),
    });
    let mut desc = push_bytes(client, r, layer.payload.clone(), &layer.media_type)?;
    desc.annotations = layer.annotations.clone();
    if !manifest.layers.contains(&desc) {
        manifest.layers.push(desc);
    }
    let config = config_for(&manifest.layers);
    manifest.config = push_bytes(client, r, config, MediaType::OciConfig.as_str())?;
    manifest.media_type = Some(MediaType::OciManifest);
    let bytes = to_canonical_json(&manifest);
    Ok(client.put_manifest(&r.with_tag(tag)?, &bytes, &MediaType::OciManifest)?)
}

/// Every layer of the manifest under `tag`, payloads fetched and checked against their
/// digests; no manifest under the tag is an empty list.
pub fn read_layers(client: &Client, r: &Reference, tag: &str) -> Result<Vec<Layer>, Error> {
    let Some(manifest) = existing(client, r, tag)? else {
        return Ok(vec![]);
    };
    manifest
        .layers
        .iter()
        .map(|d| read_layer(client, r, d))
        .collect()
}

/// Fetches one payload layer (its digest and size are checked by the client).
pub(crate) fn read_layer(client: &Client, r: &Reference, d: &Descriptor) -> Result<Layer, Error> {
    if d.size > MAX_PAYLOAD_SIZE {
        return Err(Error::Layout {
            reference: format!("{}@{}", r.name(), d.digest),
            reason: format!(
                "payload of {} bytes is over the {MAX_PAYLOAD_SIZE}-byte limit",
                d.size
            ),
        });
    }
    let mut payload = Vec::new();
    client.get_blob(r, &d.digest, Some(d.size), &mut payload, &NoProgress)?;
    Ok(Layer {
        media_type: d.media_type.as_str().to_string(),
        payload,
        annotations: d.annotations.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_byte_for_byte_cosigns() {
        let r = Reference::parse("127.0.0.1:5000/app:v1").unwrap();
        let d = Digest::sha256(b"m");
        let p = String::from_utf8(simple_signing_payload(&r, &d)).unwrap();
        assert_eq!(
            p,
            format!(
                "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"127.0.0.1:5000/app\"}},\
                 \"image\":{{\"docker-manifest-digest\":\"{d}\"}},\
                 \"type\":\"cosign container image signature\"}},\"optional\":null}}"
            )
        );
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", d.hex()));
        assert_eq!(attestation_tag(&d), format!("sha256-{}.att", d.hex()));
        assert!(same_repository("127.0.0.1:5000/app", &r));
        assert!(!same_repository("127.0.0.1:5000/other", &r));
        let hub = Reference::parse("alpine").unwrap();
        assert_eq!(docker_reference(&hub), "index.docker.io/library/alpine");
        assert!(same_repository("index.docker.io/library/alpine", &hub));
    }
}
