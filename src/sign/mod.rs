//! Signing and verification, compatible with cosign and with skopeo/podman's `sigstoreSigned`
//! policy: key pairs ([`keys`]), signatures and attestations in cosign's registry layout
//! ([`cosign`]), DSSE envelopes and in-toto Statements ([`dsse`]), and checking all of them
//! ([`verify`]), which `kiln verify` and verification on resolve share.
//!
//! What it owns: the formats and the registry writes/reads of `sha256-<hex>.sig`,
//! `sha256-<hex>.att` and the OCI 1.1 referrer (with the `sha256-<hex>` tag-schema fallback).
//! What it does not: reading the password or the files (the CLI does), building images, or the
//! SBOM/provenance documents themselves (see `docs/SUPPLY-CHAIN.md`). Only key-based signing:
//! keyless (a Fulcio certificate and a Rekor entry) needs those services, which kiln cannot
//! reach offline; the annotations that carry them are read ([`cosign::KeylessMaterial`]) and a
//! verification that would need them fails with [`Error::KeylessUnavailable`].
//!
//! ```no_run
//! use kiln::registry::{Client, ClientOptions, Reference};
//! use kiln::sign::{keys::PrivateKey, sign_image, verify::verify_signatures};
//! # fn main() -> Result<(), kiln::sign::Error> {
//! let client = Client::new(ClientOptions::default())?;
//! let key = PrivateKey::generate()?;
//! let image = Reference::parse("127.0.0.1:5000/app:v1")?;
//! let signed = sign_image(&client, &image, &key)?;
//! let checked = verify_signatures(&client, &image.with_digest(signed.digest), &key.public())?;
//! assert!(!checked.payloads.is_empty());
//! # Ok(())
//! # }
//! ```

use crate::oci::{to_canonical_json, Descriptor, Digest, Index, Manifest, MediaType};
use crate::registry::{Client, Reference};

pub mod cosign;
pub mod dsse;
mod error;
pub mod keys;
pub mod verify;

pub use error::Error;

/// What [`sign_image`] or [`attest_image`] wrote.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The manifest digest that was signed.
    pub digest: Digest,
    /// Where the signature (or attestation) manifest went: `repo:sha256-<hex>.sig` / `.att`.
    pub tag: Reference,
    /// The referrer manifest's digest (attestations only).
    pub referrer: Option<Digest>,
}

/// Resolves `image` to its manifest digest (a reference with a digest is used as is, after
/// checking the registry has it).
pub fn resolve_digest(client: &Client, image: &Reference) -> Result<Descriptor, Error> {
    Ok(client.get_manifest(image)?.descriptor())
}

/// Signs `image`'s manifest digest with `key` in cosign's layout: the simple-signing payload
/// appended to `sha256-<hex>.sig` in the same repository. A tag is resolved to its digest first
/// (the caller warns, as cosign does).
pub fn sign_image(
    client: &Client,
    image: &Reference,
    key: &keys::PrivateKey,
) -> Result<Signed, Error> {
    let digest = resolve_digest(client, image)?.digest;
    sign_digest(client, image, &digest, key)
}

/// Signs `digest` (a manifest in `repo`'s repository) with `key`.
pub fn sign_digest(
    client: &Client,
    repo: &Reference,
    digest: &Digest,
    key: &keys::PrivateKey,
) -> Result<Signed, Error> {
    let payload = cosign::simple_signing_payload(repo, digest);
    let sig = key.sign(&payload);
    let layer = cosign::Layer {
        media_type: cosign::SIMPLE_SIGNING_MEDIA_TYPE.into(),
        payload,
        annotations: [(cosign::SIGNATURE_ANNOTATION.to_string(), keys::b64(&sig))].into(),
    };
    let tag = cosign::signature_tag(digest);
    cosign::append_layer(client, repo, &tag, &layer)?;
    Ok(Signed {
        digest: digest.clone(),
        tag: repo.with_tag(&tag)?,
        referrer: None,
    })
}

/// What to attest: the predicate's bytes and type, and the timestamp a `custom` predicate gets.
#[derive(Debug, Clone)]
pub struct Attestation<'a> {
    /// The predicate type URI ([`dsse::predicate_type`]).
    pub predicate_type: &'a str,
    /// The predicate document.
    pub predicate: &'a [u8],
    /// RFC 3339, for cosign's `custom` wrapper.
    pub timestamp: &'a str,
}

/// `cosign attest`: an in-toto Statement about `image`'s digest wrapping the predicate, signed
/// in a DSSE envelope, appended to `sha256-<hex>.att`, and also pushed as an OCI 1.1 referrer
/// (a manifest whose `subject` is the image) listed in the `sha256-<hex>` referrers tag when the
/// registry has no referrers API.
pub fn attest_image(
    client: &Client,
    image: &Reference,
    key: &keys::PrivateKey,
    att: &Attestation<'_>,
) -> Result<Signed, Error> {
    let subject = resolve_digest(client, image)?;
    let statement = dsse::Statement::new(
        &cosign::docker_reference(image),
        &subject.digest,
        att.predicate_type,
        att.predicate,
        att.timestamp,
    )?;
    let envelope = dsse::Envelope::sign(
        dsse::IN_TOTO_PAYLOAD_TYPE,
        &serde_json::to_vec(&statement).expect("plain struct"),
        key,
    );
    let env_bytes = serde_json::to_vec(&envelope).expect("plain struct");
    let layer = cosign::Layer {
        media_type: cosign::DSSE_MEDIA_TYPE.into(),
        payload: env_bytes,
        annotations: [
            (cosign::SIGNATURE_ANNOTATION.to_string(), String::new()),
            (
                cosign::PREDICATE_TYPE_ANNOTATION.to_string(),
                att.predicate_type.to_string(),
            ),
        ]
        .into(),
    };
    let tag = cosign::attestation_tag(&subject.digest);
    cosign::append_layer(client, image, &tag, &layer)?;
    let referrer = push_referrer(client, image, &subject, &layer)?;
    Ok(Signed {
        digest: subject.digest,
        tag: image.with_tag(&tag)?,
        referrer: Some(referrer),
    })
}

/// The referrer's artifact type: the DSSE envelope's media type.
pub const REFERRER_ARTIFACT_TYPE: &str = cosign::DSSE_MEDIA_TYPE;

/// Pushes `layer` as an OCI 1.1 artifact whose `subject` is `subject`, then, unless the
/// registry answered with `OCI-Subject` (it indexes referrers itself), adds it to the
/// `sha256-<hex>` index (distribution spec 1.1, "Pushing Manifests with Subject").
fn push_referrer(
    client: &Client,
    repo: &Reference,
    subject: &Descriptor,
    layer: &cosign::Layer,
) -> Result<Digest, Error> {
    let mut payload = cosign::push_bytes(client, repo, layer.payload.clone(), &layer.media_type)?;
    payload.annotations = layer.annotations.clone();
    payload.annotations.remove(cosign::SIGNATURE_ANNOTATION);
    let config = cosign::push_bytes(client, repo, b"{}".to_vec(), MediaType::OciEmpty.as_str())?;
    let mut subject_desc = Descriptor::new(
        subject.media_type.clone(),
        subject.digest.clone(),
        subject.size,
    );
    subject_desc.annotations.clear();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MediaType::OciManifest),
        artifact_type: Some(REFERRER_ARTIFACT_TYPE.into()),
        config,
        layers: vec![payload.clone()],
        subject: Some(subject_desc),
        annotations: payload.annotations.clone(),
        extra: Default::default(),
    };
    let bytes = to_canonical_json(&manifest);
    let digest = Digest::sha256(&bytes);
    let (_, indexed) = client.put_manifest_with_subject(
        &repo.with_digest(digest.clone()),
        &bytes,
        &MediaType::OciManifest,
    )?;
    if indexed {
        return Ok(digest);
    }
    let tag = repo.with_tag(&crate::registry::referrers_tag(&subject.digest))?;
    let mut index = match client.get_manifest(&tag) {
        Ok(m) if m.is_index() => m.index()?,
        Ok(_) => Index::new(),
        Err(e) if e.is_not_found() => Index::new(),
        Err(e) => return Err(e.into()),
    };
    let mut entry = Descriptor::new(MediaType::OciManifest, digest.clone(), bytes.len() as u64);
    entry.artifact_type = manifest.artifact_type.clone();
    entry.annotations = manifest.annotations.clone();
    if !index.manifests.iter().any(|d| d.digest == digest) {
        index.manifests.push(entry);
        index.media_type = Some(MediaType::OciIndex);
        client.put_manifest(&tag, &to_canonical_json(&index), &MediaType::OciIndex)?;
    }
    Ok(digest)
}
