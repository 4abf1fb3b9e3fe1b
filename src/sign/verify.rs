//! Checking signatures and attestations against a public key, for `kiln verify` and for
//! verification on resolve ([`enforce`]).
//!
//! A signature layer under `sha256-<hex>.sig` counts when (cosign `pkg/cosign/verify.go`,
//! `VerifyImageSignatures` and `SimpleClaimVerifier`): the payload's bytes match the layer's
//! digest (the registry client checks every blob it reads), the base64 DER signature in
//! `dev.cosignproject.cosign/signature` verifies over those bytes with the key, the payload's
//! `docker-manifest-digest` is the digest the image resolved to, and its `docker-reference`
//! names the image's repository (skopeo's `matchRepository`). As with cosign, the image passes
//! when at least one signature counts; the others are reported with the reason they did not.
//! An attestation counts when its DSSE envelope verifies with the key (PAE), its payload is an
//! in-toto Statement and one of its subjects is the digest.
use std::collections::BTreeSet;

use serde::Serialize;

use super::cosign::{self, SimpleSigning};
use super::dsse::{self, Envelope, Statement};
use super::error::Error;
use super::keys::{unb64, PublicKey};
use crate::oci::{Descriptor, Digest};
use crate::registry::{Client, Reference};

/// The signatures that verified.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureCheck {
    /// The manifest digest checked.
    pub digest: Digest,
    /// The verified simple-signing payloads.
    pub payloads: Vec<SimpleSigning>,
    /// Why each other signature did not count.
    pub rejected: Vec<String>,
}

/// The attestations that verified.
#[derive(Debug, Clone, Serialize)]
pub struct AttestationCheck {
    /// The manifest digest checked.
    pub digest: Digest,
    /// The verified statements.
    pub statements: Vec<Statement>,
    /// Why each other envelope did not count.
    pub rejected: Vec<String>,
}

fn not_verified(image: &Reference, digest: &Digest, what: &str, rejected: &[String]) -> Error {
    let mut msg = format!("{}@{digest}: {what}", image.name());
    for r in rejected {
        msg.push_str("\n  - ");
        msg.push_str(r);
    }
    Error::Verify(msg)
}

/// Checks the signatures of the manifest `image` resolves to. Fails when none verifies.
pub fn verify_signatures(
    client: &Client,
    image: &Reference,
    key: &PublicKey,
) -> Result<SignatureCheck, Error> {
    let digest = super::resolve_digest(client, image)?.digest;
    verify_signatures_of(client, image, &digest, key)
}

/// Checks the signatures of `digest` in `image`'s repository.
pub fn verify_signatures_of(
    client: &Client,
    image: &Reference,
    digest: &Digest,
    key: &PublicKey,
) -> Result<SignatureCheck, Error> {
    let tag = cosign::signature_tag(digest);
    let layers = cosign::read_layers(client, image, &tag)?;
    if layers.is_empty() {
        return Err(not_verified(
            image,
            digest,
            &format!(
                "no signatures found (no `{tag}` tag in the repository): the image is not signed"
            ),
            &[],
        ));
    }
    let mut payloads = Vec::new();
    let mut rejected = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        match check_signature_layer(layer, image, digest, key) {
            Ok(p) => payloads.push(p),
            Err(why) => rejected.push(format!("signature {}: {why}", i + 1)),
        }
    }
    if payloads.is_empty() {
        return Err(not_verified(
            image,
            digest,
            &format!(
                "none of the {} signature(s) verifies with key {}",
                layers.len(),
                key.fingerprint()
            ),
            &rejected,
        ));
    }
    Ok(SignatureCheck {
        digest: digest.clone(),
        payloads,
        rejected,
    })
}

fn check_signature_layer(
    layer: &cosign::Layer,
    image: &Reference,
    digest: &Digest,
    key: &PublicKey,
) -> Result<SimpleSigning, String> {
    if layer.media_type != cosign::SIMPLE_SIGNING_MEDIA_TYPE {
        return Err(format!(
            "layer media type `{}` is not a simple-signing payload",
            layer.media_type
        ));
    }
    let sig = match layer.signature() {
        Some(s) if !s.is_empty() => s,
        _ if layer.keyless().is_some() => {
            return Err(
                "keyless signature (Fulcio certificate): needs Fulcio/Rekor, not available".into(),
            )
        }
        _ => return Err(format!("no `{}` annotation", cosign::SIGNATURE_ANNOTATION)),
    };
    let sig = unb64(sig).ok_or("the signature annotation is not base64")?;
    if !key.verify(&layer.payload, &sig) {
        return Err(format!(
            "the signature does not verify with key {}",
            key.fingerprint()
        ));
    }
    let payload: SimpleSigning = serde_json::from_slice(&layer.payload)
        .map_err(|e| format!("the signed payload is not a simple-signing document: {e}"))?;
    if payload.critical.kind != cosign::COSIGN_SIGNATURE_TYPE {
        return Err(format!("the payload's type is `{}`", payload.critical.kind));
    }
    let claimed = &payload.critical.image.docker_manifest_digest;
    if claimed != &digest.to_string() {
        return Err(format!(
            "signed for another digest: the payload names {claimed}, the image is {digest}"
        ));
    }
    let who = &payload.critical.identity.docker_reference;
    if !cosign::same_repository(who, image) {
        return Err(format!(
            "signed for another repository: the payload names `{who}`, the image is `{}`",
            image.name()
        ));
    }
    Ok(payload)
}

/// Every DSSE envelope about `digest`: the `.att` layers and the referrers' layers.
fn envelopes(client: &Client, image: &Reference, digest: &Digest) -> Result<Vec<Vec<u8>>, Error> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for l in cosign::read_layers(client, image, &cosign::attestation_tag(digest))? {
        if l.media_type == cosign::DSSE_MEDIA_TYPE && seen.insert(Digest::sha256(&l.payload)) {
            out.push(l.payload);
        }
    }
    let index = client.referrers(image, digest, Some(super::REFERRER_ARTIFACT_TYPE))?;
    for d in &index.manifests {
        let m = client
            .get_manifest(&image.with_digest(d.digest.clone()))?
            .manifest()?;
        if m.subject.as_ref().map(|s| &s.digest) != Some(digest) {
            continue;
        }
        for l in m
            .layers
            .iter()
            .filter(|l: &&Descriptor| l.media_type.as_str() == cosign::DSSE_MEDIA_TYPE)
        {
            if seen.insert(l.digest.clone()) {
                out.push(cosign::read_layer(client, image, l)?.payload);
            }
        }
    }
    Ok(out)
}

/// Checks the attestations of the manifest `image` resolves to; with `wanted`, only those
/// predicate types count. Fails when none verifies.
pub fn verify_attestations(
    client: &Client,
    image: &Reference,
    key: &PublicKey,
    wanted: Option<&[String]>,
) -> Result<AttestationCheck, Error> {
    let digest = super::resolve_digest(client, image)?.digest;
    verify_attestations_of(client, image, &digest, key, wanted)
}

/// [`verify_attestations`] for a known digest.
pub fn verify_attestations_of(
    client: &Client,
    image: &Reference,
    digest: &Digest,
    key: &PublicKey,
    wanted: Option<&[String]>,
) -> Result<AttestationCheck, Error> {
    let found = envelopes(client, image, digest)?;
    let mut statements = Vec::new();
    let mut rejected = Vec::new();
    for (i, bytes) in found.iter().enumerate() {
        match check_envelope(bytes, digest, key) {
            Ok(st) if wanted.is_none_or(|w| w.contains(&st.predicate_type)) => statements.push(st),
            Ok(st) => rejected.push(format!(
                "attestation {}: predicate type `{}` is not the one asked for",
                i + 1,
                st.predicate_type
            )),
            Err(why) => rejected.push(format!("attestation {}: {why}", i + 1)),
        }
    }
    if statements.is_empty() {
        let what = match wanted {
            Some(w) => format!(
                "no attestation of type {} verifies with key {}",
                w.join(" or "),
                key.fingerprint()
            ),
            None => format!("no attestation verifies with key {}", key.fingerprint()),
        };
        let what = if found.is_empty() {
            format!(
                "{what}: there are none (no `{}` tag, no referrers)",
                cosign::attestation_tag(digest)
            )
        } else {
            what
        };
        return Err(not_verified(image, digest, &what, &rejected));
    }
    Ok(AttestationCheck {
        digest: digest.clone(),
        statements,
        rejected,
    })
}

fn check_envelope(bytes: &[u8], digest: &Digest, key: &PublicKey) -> Result<Statement, String> {
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| format!("not a DSSE envelope: {e}"))?;
    if env.payload_type != dsse::IN_TOTO_PAYLOAD_TYPE {
        return Err(format!(
            "payload type `{}` is not in-toto",
            env.payload_type
        ));
    }
    let payload = env.verify(key).map_err(|e| e.to_string())?;
    let st: Statement = serde_json::from_slice(&payload)
        .map_err(|e| format!("the payload is not an in-toto Statement: {e}"))?;
    if st.kind != dsse::STATEMENT_V01 && st.kind != dsse::STATEMENT_V1 {
        return Err(format!(
            "statement type `{}` is not in-toto v0.1 or v1",
            st.kind
        ));
    }
    if !st.is_about(digest) {
        return Err(format!(
            "the statement is about another image, not {digest}"
        ));
    }
    Ok(st)
}

/// What verification on resolve requires (the `[image]` section's keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    /// `verify_signature = true`.
    pub signature: bool,
    /// `verify_provenance = true`.
    pub provenance: bool,
    /// `builder_id`: the provenance's builder id must equal it.
    pub builder_id: Option<String>,
    /// `source_repository`: the provenance must name it as its source.
    pub source_repository: Option<String>,
}

impl Requirements {
    /// Whether anything is asked for.
    pub fn any(&self) -> bool {
        self.signature || self.provenance
    }
}

/// What verification on resolve found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    /// The digest verified.
    pub digest: Option<Digest>,
    /// The key's fingerprint.
    pub key: Option<String>,
    /// `verified` when the signature checked.
    pub signature: Option<String>,
    /// The provenance's builder id when it checked.
    pub provenance_builder: Option<String>,
}

/// A requirement that failed: which one, and why.
#[derive(Debug, thiserror::Error)]
#[error("{rule}: {error}")]
pub struct Failed {
    /// `verify_signature`, `verify_provenance`, `builder_id` or `source_repository`.
    pub rule: &'static str,
    /// What failed.
    pub error: Box<Error>,
}

/// Checks `req` against the manifest `image` resolves to, with `key`.
pub fn enforce(
    client: &Client,
    image: &Reference,
    key: &PublicKey,
    req: &Requirements,
) -> Result<Verdict, Failed> {
    let fail = |rule| {
        move |error| Failed {
            rule,
            error: Box::new(error),
        }
    };
    let first = if req.signature {
        "verify_signature"
    } else {
        "verify_provenance"
    };
    let digest = super::resolve_digest(client, image)
        .map_err(fail(first))?
        .digest;
    let mut v = Verdict {
        digest: Some(digest.clone()),
        key: Some(key.fingerprint()),
        ..Verdict::default()
    };
    if req.signature {
        verify_signatures_of(client, image, &digest, key).map_err(fail("verify_signature"))?;
        v.signature = Some("verified".into());
    }
    if req.provenance {
        let types = dsse::wanted_types("provenance").expect("a known name");
        let check = verify_attestations_of(client, image, &digest, key, Some(&types))
            .map_err(fail("verify_provenance"))?;
        v.provenance_builder = Some(check_provenance(&check.statements, req)?);
    }
    Ok(v)
}

/// The builder id of the first statement meeting `builder_id` and `source_repository`.
fn check_provenance(statements: &[Statement], req: &Requirements) -> Result<String, Failed> {
    let mut why = Vec::new();
    for st in statements {
        let p = Provenance::of(st);
        if let Some(want) = &req.builder_id {
            if p.builder_id.as_deref() != Some(want.as_str()) {
                why.push((
                    "builder_id",
                    format!(
                        "the provenance's builder id is `{}`, not `{want}`",
                        p.builder_id.as_deref().unwrap_or("(none)")
                    ),
                ));
                continue;
            }
        }
        if let Some(want) = &req.source_repository {
            let want_n = normalize_repo(want);
            if !p.sources.iter().any(|s| normalize_repo(s) == want_n) {
                why.push((
                    "source_repository",
                    format!(
                        "the provenance names source(s) [{}], not `{want}`",
                        p.sources.join(", ")
                    ),
                ));
                continue;
            }
        }
        return Ok(p.builder_id.unwrap_or_else(|| "(no builder id)".into()));
    }
    let (rule, text) = why
        .pop()
        .unwrap_or(("verify_provenance", "no provenance".into()));
    Err(Failed {
        rule,
        error: Box::new(Error::Verify(text)),
    })
}

/// The parts of a SLSA provenance (v1, or v0.2) a policy checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// v1 `runDetails.builder.id`, v0.2 `builder.id`.
    pub builder_id: Option<String>,
    /// Every source URI named: v1 `buildDefinition.externalParameters` (`configSource.uri`,
    /// `source`, and any string under it that looks like a URL) and `resolvedDependencies[].uri`;
    /// v0.2 `invocation.configSource.uri` and `materials[].uri`.
    pub sources: Vec<String>,
}

impl Provenance {
    /// Reads what it can from `st`'s predicate.
    pub fn of(st: &Statement) -> Provenance {
        let p = &st.predicate;
        let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
        let mut sources = Vec::new();
        let uris = |list: &serde_json::Value, out: &mut Vec<String>| {
            for d in list.as_array().into_iter().flatten() {
                if let Some(u) = d.get("uri").and_then(|u| u.as_str()) {
                    out.push(u.to_string());
                }
            }
        };
        let builder_id = if st.predicate_type == dsse::SLSA_PROVENANCE_V1 {
            collect_urls(&p["buildDefinition"]["externalParameters"], &mut sources);
            uris(&p["buildDefinition"]["resolvedDependencies"], &mut sources);
            s(&p["runDetails"]["builder"]["id"])
        } else {
            if let Some(u) = s(&p["invocation"]["configSource"]["uri"]) {
                sources.push(u);
            }
            uris(&p["materials"], &mut sources);
            s(&p["builder"]["id"])
        };
        Provenance {
            builder_id,
            sources,
        }
    }
}

fn collect_urls(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if s.contains("://") => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_urls(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_urls(x, out)),
        _ => {}
    }
}

/// `git+https://github.com/org/repo.git@ref#path` → `github.com/org/repo`.
fn normalize_repo(s: &str) -> String {
    let s = s.trim().strip_prefix("git+").unwrap_or(s.trim());
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let s = s.split(['#', '?']).next().unwrap_or(s);
    let s = match s.rsplit_once('@') {
        Some((head, _)) if head.contains('/') => head,
        _ => s,
    };
    // scp-like `git@host:org/repo`.
    let s = match s.strip_prefix("git@") {
        Some(rest) => rest.replacen(':', "/", 1),
        None => s.to_string(),
    };
    s.trim_end_matches('/')
        .trim_end_matches(".git")
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_for(
        repo: &str,
        digest: &Digest,
        key: &super::super::keys::PrivateKey,
    ) -> cosign::Layer {
        let payload = cosign::simple_signing_payload(&Reference::parse(repo).unwrap(), digest);
        let sig = super::super::keys::b64(&key.sign(&payload));
        cosign::Layer {
            media_type: cosign::SIMPLE_SIGNING_MEDIA_TYPE.into(),
            payload,
            annotations: [(cosign::SIGNATURE_ANNOTATION.to_string(), sig)].into(),
        }
    }

    #[test]
    fn a_signature_counts_only_for_its_key_digest_and_repository() {
        let key = super::super::keys::PrivateKey::generate().unwrap();
        let d = Digest::sha256(b"manifest");
        let image = Reference::parse("reg.example/app:v1").unwrap();
        let good = layer_for("reg.example/app", &d, &key);
        assert!(check_signature_layer(&good, &image, &d, &key.public()).is_ok());
        let other = super::super::keys::PrivateKey::generate().unwrap();
        let e = check_signature_layer(&good, &image, &d, &other.public()).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        let e =
            check_signature_layer(&good, &image, &Digest::sha256(b"x"), &key.public()).unwrap_err();
        assert!(e.contains("signed for another digest"), "{e}");
        let moved = layer_for("reg.example/other", &d, &key);
        let e = check_signature_layer(&moved, &image, &d, &key.public()).unwrap_err();
        assert!(e.contains("signed for another repository"), "{e}");
        let mut tampered = good.clone();
        tampered.payload.push(b' ');
        assert!(check_signature_layer(&tampered, &image, &d, &key.public()).is_err());
        let mut keyless = good;
        keyless.annotations = [(
            cosign::CERTIFICATE_ANNOTATION.to_string(),
            "PEM".to_string(),
        )]
        .into();
        let e = check_signature_layer(&keyless, &image, &d, &key.public()).unwrap_err();
        assert!(e.contains("keyless"), "{e}");
    }

    #[test]
    fn source_repositories_normalise() {
        assert_eq!(
            normalize_repo("git+https://github.com/Org/Repo.git@abc#sub"),
            "github.com/org/repo"
        );
        assert_eq!(
            normalize_repo("https://github.com/org/repo"),
            "github.com/org/repo"
        );
        assert_eq!(normalize_repo("github.com/org/repo"), "github.com/org/repo");
    }

    #[test]
    fn provenance_v1_fields() {
        let st = Statement {
            kind: dsse::STATEMENT_V1.into(),
            subject: vec![],
            predicate_type: dsse::SLSA_PROVENANCE_V1.into(),
            predicate: serde_json::json!({
                "buildDefinition": {"externalParameters": {"configSource": {"uri": "https://git.example/org/app.git#main"}},
                                     "resolvedDependencies": [{"uri": "pkg:docker/debian@12"}]},
                "runDetails": {"builder": {"id": "https://kiln.dev/builder"}}
            }),
        };
        let p = Provenance::of(&st);
        assert_eq!(p.builder_id.as_deref(), Some("https://kiln.dev/builder"));
        let req = Requirements {
            provenance: true,
            builder_id: Some("https://kiln.dev/builder".into()),
            source_repository: Some("git.example/org/app".into()),
            ..Default::default()
        };
        assert!(check_provenance(std::slice::from_ref(&st), &req).is_ok());
        let wrong = Requirements {
            builder_id: Some("other".into()),
            ..req.clone()
        };
        let e = check_provenance(std::slice::from_ref(&st), &wrong).unwrap_err();
        assert_eq!(e.rule, "builder_id");
        let wrong = Requirements {
            source_repository: Some("git.example/org/other".into()),
            ..req
        };
        assert_eq!(
            check_provenance(&[st], &wrong).unwrap_err().rule,
            "source_repository"
        );
    }
}
