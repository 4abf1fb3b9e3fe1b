//! Supply-chain attestations of images: the SBOM ([`sbom`]: package scanners over an image's
//! layers, cached per layer; [`spdx`] and [`cyclonedx`] documents), SLSA v1 provenance
//! ([`provenance`], from plain build facts the caller gathers), both as in-toto Statements v1,
//! and the attestation manifests that carry them in an image index as BuildKit lays them out
//! ([`manifest`]). It reads layers through [`crate::transport::LayerSource`] and writes blobs
//! to the [`crate::store`]; it does not know the builder. docs/SUPPLY-CHAIN.md describes the
//! formats and where they live.
pub mod cyclonedx;
pub mod manifest;
pub mod provenance;
pub mod sbom;
pub mod spdx;

use serde_json::{json, Value};

use crate::oci::{Digest, Platform};

/// The in-toto Statement type kiln writes.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// The predicate type of an SPDX SBOM, as BuildKit writes it.
pub const PREDICATE_SPDX: &str = "https://spdx.dev/Document";
/// The predicate type of a CycloneDX SBOM.
pub const PREDICATE_CYCLONEDX: &str = "https://cyclonedx.org/bom";
/// The predicate type of SLSA provenance v1.
pub const PREDICATE_SLSA_V1: &str = "https://slsa.dev/provenance/v1";
/// kiln's builder id (SLSA `runDetails.builder.id`).
pub const BUILDER_ID: &str = "https://github.com/kiln-build/kiln";

/// The image an attestation is about.
#[derive(Debug, Clone)]
pub struct Subject {
    /// Its name (`registry/repo:tag`), when it has one.
    pub name: Option<String>,
    /// Its manifest digest.
    pub digest: Digest,
    /// Its platform.
    pub platform: Platform,
}

/// `pkg:docker/NAME@TAG?platform=OS%2FARCH` for an image reference, as BuildKit's
/// `util/purl.RefToPURL` writes it (Docker's familiar name; a digest reference gives a
/// `digest=` qualifier instead of a version).
pub fn docker_purl(reference: &str, platform: Option<&Platform>) -> String {
    let p = platform.map(|p| p.to_string()).unwrap_or_default();
    let Ok(r) = crate::registry::Reference::parse(reference) else {
        return sbom::purl::purl("docker", &[], reference, "", &[("platform", &p)]);
    };
    let mut familiar = r.familiar();
    let digest = r.digest().map(|d| d.to_string()).unwrap_or_default();
    if let Some(i) = familiar.find('@') {
        familiar.truncate(i);
    }
    let tag = r.tag().unwrap_or("");
    if !tag.is_empty() && r.digest().is_none() {
        familiar.truncate(familiar.len().saturating_sub(tag.len() + 1));
    } else if !tag.is_empty() {
        if let Some(stripped) = familiar.strip_suffix(&format!(":{tag}")) {
            familiar = stripped.to_string();
        }
    }
    let parts: Vec<&str> = familiar.split('/').collect();
    let (name, ns) = parts.split_last().unwrap_or((&"", &[]));
    let version = if digest.is_empty() { tag } else { "" };
    sbom::purl::purl(
        "docker",
        ns,
        name,
        version,
        &[("digest", &digest), ("platform", &p)],
    )
}

impl Subject {
    /// The name documents show: the image name, else its digest.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.digest.to_string())
    }

    /// The image's purl: `pkg:docker/…` of its name and platform, or, unnamed,
    /// `pkg:oci/image@DIGEST?platform=…`.
    pub fn purl(&self) -> String {
        match &self.name {
            Some(n) => docker_purl(n, Some(&self.platform)),
            None => sbom::purl::purl(
                "oci",
                &[],
                "image",
                &self.digest.to_string(),
                &[("platform", &self.platform.to_string())],
            ),
        }
    }

    /// The in-toto subject: the purl (or `_` for an unnamed image, as BuildKit writes it) and
    /// the manifest digest.
    pub fn in_toto(&self) -> Value {
        let name = match &self.name {
            Some(n) => docker_purl(n, Some(&self.platform)),
            None => "_".into(),
        };
        json!({"name": name, "digest": {self.digest.algorithm().as_str(): self.digest.hex()}})
    }
}

/// An in-toto Statement v1 of `predicate` about `subject`, as canonical JSON bytes.
pub fn statement(subject: &Subject, predicate_type: &str, predicate: Value) -> Vec<u8> {
    crate::oci::to_canonical_json(&json!({
        "_type": STATEMENT_V1,
        "subject": [subject.in_toto()],
        "predicateType": predicate_type,
        "predicate": predicate,
    }))
}

#[cfg(test)]
mod tests;
