//! DSSE envelopes around in-toto Statements, as `cosign attest` makes them.
//!
//! The envelope (secure-systems-lab `dsse/envelope.go`) is
//! `{"payloadType":"application/vnd.in-toto+json","payload":"<b64 statement>","signatures":[{"keyid":"","sig":"<b64 DER>"}]}`;
//! the signature is over the pre-authentication encoding ([`pae`], `dsse/sign.go`'s `PAE`):
//! `"DSSEv1" SP len(type) SP type SP len(body) SP body`, lengths in ASCII decimal. The Statement
//! is in-toto v0.1 (`_type` `https://in-toto.io/Statement/v0.1`) with one subject: the image's
//! repository and its manifest digest (cosign `pkg/cosign/attestation/attestation.go`).
//! `--type` names map to predicate types as cosign's `cmd/cosign/cli/options/predicate.go` does.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::Error;
use super::keys::{b64, unb64, PrivateKey, PublicKey};
use crate::oci::Digest;

/// The in-toto payload type.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The Statement type cosign writes.
pub const STATEMENT_V01: &str = "https://in-toto.io/Statement/v0.1";
/// The v1 Statement type (accepted on read; BuildKit writes it).
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// SLSA provenance v0.2.
pub const SLSA_PROVENANCE_V02: &str = "https://slsa.dev/provenance/v0.2";
/// SLSA provenance v1.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// SPDX.
pub const SPDX: &str = "https://spdx.dev/Document";
/// CycloneDX.
pub const CYCLONEDX: &str = "https://cyclonedx.org/bom";
/// cosign's custom predicate.
pub const COSIGN_CUSTOM: &str = "https://cosign.sigstore.dev/attestation/v1";

/// The predicate type a `--type` value names (cosign's names, or a URI as is).
pub fn predicate_type(name: &str) -> Result<String, Error> {
    Ok(match name {
        "slsaprovenance" | "slsaprovenance02" => SLSA_PROVENANCE_V02.into(),
        "slsaprovenance1" => SLSA_PROVENANCE_V1.into(),
        "spdx" | "spdxjson" => SPDX.into(),
        "cyclonedx" => CYCLONEDX.into(),
        "link" => "https://in-toto.io/Link/v1".into(),
        "vuln" => "https://cosign.sigstore.dev/attestation/vuln/v1".into(),
        "openvex" => "https://openvex.dev/ns".into(),
        "custom" => COSIGN_CUSTOM.into(),
        uri if uri.contains("://") => uri.into(),
        other => {
            return Err(Error::Usage(format!(
                "--type `{other}`: expected slsaprovenance, slsaprovenance02, slsaprovenance1, \
                 spdx, spdxjson, cyclonedx, link, vuln, openvex, custom or a URI"
            )))
        }
    })
}

/// The predicate types `kiln verify --attestation NAME` accepts for a name (`sbom` and
/// `provenance` cover every version).
pub fn wanted_types(name: &str) -> Result<Vec<String>, Error> {
    Ok(match name {
        "sbom" => vec![SPDX.into(), CYCLONEDX.into()],
        "provenance" => vec![SLSA_PROVENANCE_V02.into(), SLSA_PROVENANCE_V1.into()],
        other => vec![predicate_type(other)?],
    })
}

/// An in-toto Statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// `https://in-toto.io/Statement/v0.1` (or v1).
    #[serde(rename = "_type")]
    pub kind: String,
    /// What it is about.
    pub subject: Vec<Subject>,
    /// The predicate's type URI.
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The predicate.
    pub predicate: serde_json::Value,
}

/// A Statement's subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// The repository.
    pub name: String,
    /// `{"sha256": "<hex>"}`.
    pub digest: BTreeMap<String, String>,
}

impl Statement {
    /// A Statement about `digest` in repository `name`. A `custom` predicate that is not JSON
    /// is wrapped as cosign does (`{"Data": text, "Timestamp": …}`).
    pub fn new(
        name: &str,
        digest: &Digest,
        predicate_type: &str,
        predicate: &[u8],
        timestamp: &str,
    ) -> Result<Statement, Error> {
        let predicate = if predicate_type == COSIGN_CUSTOM {
            serde_json::json!({
                "Data": String::from_utf8_lossy(predicate),
                "Timestamp": timestamp,
            })
        } else {
            serde_json::from_slice(predicate)
                .map_err(|e| Error::Usage(format!("the predicate is not JSON: {e}")))?
        };
        Ok(Statement {
            kind: STATEMENT_V01.into(),
            subject: vec![Subject {
                name: name.into(),
                digest: BTreeMap::from([(
                    digest.algorithm().as_str().to_string(),
                    digest.hex().to_string(),
                )]),
            }],
            predicate_type: predicate_type.into(),
            predicate,
        })
    }

    /// Whether one subject is `digest`.
    pub fn is_about(&self, digest: &Digest) -> bool {
        self.subject.iter().any(|s| {
            s.digest
                .get(digest.algorithm().as_str())
                .map(String::as_str)
                == Some(digest.hex())
        })
    }
}

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The payload's type.
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// The payload, base64.
    pub payload: String,
    /// Signatures over the PAE of type and payload.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature in an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// The key id (cosign leaves it empty).
    #[serde(default)]
    pub keyid: String,
    /// The signature, base64.
    pub sig: String,
}

/// DSSE's pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

impl Envelope {
    /// Signs `payload` (of `payload_type`) with `key`.
    pub fn sign(payload_type: &str, payload: &[u8], key: &PrivateKey) -> Envelope {
        let sig = key.sign(&pae(payload_type, payload));
        Envelope {
            payload_type: payload_type.into(),
            payload: b64(payload),
            signatures: vec![EnvelopeSignature {
                keyid: String::new(),
                sig: b64(&sig),
            }],
        }
    }

    /// The decoded payload if one of the signatures is `key`'s over it.
    pub fn verify(&self, key: &PublicKey) -> Result<Vec<u8>, Error> {
        let payload = unb64(&self.payload)
            .ok_or_else(|| Error::Verify("the envelope's payload is not base64".into()))?;
        if self.signatures.is_empty() {
            return Err(Error::Verify("the envelope has no signatures".into()));
        }
        let message = pae(&self.payload_type, &payload);
        let ok = self
            .signatures
            .iter()
            .any(|s| unb64(&s.sig).is_some_and(|sig| key.verify(&message, &sig)));
        if !ok {
            return Err(Error::Verify(format!(
                "no signature in the envelope verifies with key {}",
                key.fingerprint()
            )));
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn envelope_round_trip_and_tamper() {
        let k = PrivateKey::generate().unwrap();
        let d = Digest::sha256(b"img");
        let st = Statement::new("r/app", &d, SLSA_PROVENANCE_V1, br#"{"a":1}"#, "t").unwrap();
        let payload = serde_json::to_vec(&st).unwrap();
        let env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &payload, &k);
        assert_eq!(env.verify(&k.public()).unwrap(), payload);
        let other = PrivateKey::generate().unwrap();
        assert!(env.verify(&other.public()).is_err());
        let mut bad = env.clone();
        bad.payload_type = "text/plain".into();
        assert!(bad.verify(&k.public()).is_err());
        let back: Statement = serde_json::from_slice(&payload).unwrap();
        assert!(back.is_about(&d));
        assert!(!back.is_about(&Digest::sha256(b"x")));
        assert_eq!(predicate_type("spdxjson").unwrap(), SPDX);
        assert!(predicate_type("nonsense").is_err());
    }
}
