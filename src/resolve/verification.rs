//! The `[image]` section's verification keys: `verify_signature`, `public_key`,
//! `verify_provenance`, `builder_id`, `source_repository` and `allow_unverified_local_build`.
//!
//! Setting `builder_id` or `source_repository` implies `verify_provenance`; asking for any
//! verification needs `public_key` (keyless verification needs Fulcio/Rekor, which kiln
//! cannot reach). The checks themselves are [`crate::sign::verify::enforce`]'s.
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{show, Error, Result};
use crate::sign::verify::Requirements;

/// The keys this file reads.
pub(super) const KEYS: &[&str] = &[
    "verify_signature",
    "public_key",
    "verify_provenance",
    "builder_id",
    "source_repository",
    "allow_unverified_local_build",
];

/// What to verify before an image is used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// What is required.
    pub requirements: Requirements,
    /// `public_key`, resolved against the config file's directory.
    pub public_key: Option<PathBuf>,
    /// `allow_unverified_local_build = true`: rule 5 (and `--build-fallback`) may give an
    /// image nothing signed. Off by default: verification fails closed.
    pub allow_unverified_local_build: bool,
}

impl Verification {
    /// Whether anything is to be verified.
    pub fn any(&self) -> bool {
        self.requirements.any()
    }
}

pub(super) fn parse(file: &Path, t: &Table) -> Result<Verification> {
    let bad = |key: &str, value: &Value, reason: &str| Error::BadValue {
        file: file.to_path_buf(),
        key: key.to_string(),
        value: show(value),
        reason: reason.to_string(),
    };
    let flag = |k: &str| -> Result<bool> {
        match t.get(k) {
            None => Ok(false),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(v) => Err(bad(k, v, "expected true or false")),
        }
    };
    let string = |k: &str| -> Result<Option<String>> {
        match t.get(k) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(v) => Err(bad(k, v, "expected a non-empty string")),
        }
    };
    let builder_id = string("builder_id")?;
    let source_repository = string("source_repository")?;
    let requirements = Requirements {
        signature: flag("verify_signature")?,
        provenance: flag("verify_provenance")?
            || builder_id.is_some()
            || source_repository.is_some(),
        builder_id,
        source_repository,
    };
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let public_key = string("public_key")?.map(|p| dir.join(p));
    if requirements.any() && public_key.is_none() {
        let key = if requirements.signature {
            "verify_signature"
        } else {
            "verify_provenance"
        };
        return Err(bad(
            key,
            &Value::Boolean(true),
            "needs `image.public_key` (a PEM public key, as `kiln key generate` writes); \
             keyless verification needs Fulcio/Rekor, which are not available",
        ));
    }
    Ok(Verification {
        requirements,
        public_key,
        allow_unverified_local_build: flag("allow_unverified_local_build")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(body: &str) -> Result<Option<super::super::ImageSection>> {
        super::super::parse(
            Path::new("/d/kiln.toml"),
            &format!("[image]\nname = \"r/a\"\n{body}"),
        )
    }

    #[test]
    fn keys_parse_and_builder_id_implies_provenance() {
        let s =
            section("verify_signature = true\npublic_key = \"keys/k.pub\"\nbuilder_id = \"b\"\n")
                .unwrap()
                .unwrap();
        let v = s.verification;
        assert!(v.requirements.signature && v.requirements.provenance);
        assert_eq!(v.requirements.builder_id.as_deref(), Some("b"));
        assert_eq!(v.public_key.as_deref(), Some(Path::new("/d/keys/k.pub")));
        assert!(!v.allow_unverified_local_build);
        assert!(!section("").unwrap().unwrap().verification.any());
    }

    #[test]
    fn verification_without_a_key_or_with_a_bad_value_is_an_error() {
        let e = section("verify_provenance = true\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("image.verify_provenance") && e.contains("needs `image.public_key`"),
            "{e}"
        );
        let e = section("verify_signature = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected true or false"), "{e}");
    }
}
