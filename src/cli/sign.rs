//! `kiln key generate`, `kiln sign`, `kiln attest` and `kiln verify`: cosign's key format and
//! registry layout (see [`crate::sign`]). The private key's password comes from
//! `$COSIGN_PASSWORD` (as cosign reads it), else a prompt on the terminal, else an error.
//! `kiln verify` prints the verified payloads as JSON on stdout and a summary on stderr; it
//! exits 1 when verification fails (cosign exits non-zero too), 2 on usage or registry errors.
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::registry::Reference;
use crate::sign::{self, dsse, keys, verify, Attestation};

use super::{out_json, CliResult, Context, Exit};

/// `kiln key …`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a key pair in cosign's format: `P.key` (encrypted) and `P.pub`.
    Generate(KeyGenerateArgs),
}

/// Arguments of `kiln key generate`.
#[derive(Debug, Args)]
pub struct KeyGenerateArgs {
    /// The files' prefix: writes PREFIX.key and PREFIX.pub.
    #[arg(long, value_name = "PREFIX", default_value = "cosign")]
    pub output_key_prefix: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `kiln sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The private key (cosign's `ENCRYPTED SIGSTORE PRIVATE KEY`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The image, in a registry (`[docker://]host/repo:tag` or `…@sha256:…`).
    pub image: String,
}

/// Arguments of `kiln attest`.
#[derive(Debug, Args)]
pub struct AttestArgs {
    /// The private key.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The predicate document (JSON; any text for `--type custom`).
    #[arg(long, value_name = "FILE")]
    pub predicate: PathBuf,
    /// slsaprovenance, slsaprovenance02, slsaprovenance1, spdx, spdxjson, cyclonedx, link,
    /// vuln, openvex, custom, or a predicate type URI.
    #[arg(long = "type", value_name = "TYPE", default_value = "custom")]
    pub kind: String,
    /// The image, in a registry.
    pub image: String,
}

/// Arguments of `kiln verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The public key (PEM `PUBLIC KEY`).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Verify attestations instead of signatures: sbom, provenance, or a `--type` name or URI.
    #[arg(long, value_name = "TYPE", num_args = 0..=1, default_missing_value = "any")]
    pub attestation: Option<String>,
    /// Keyless verification's expected identity (not available offline: refused).
    #[arg(long, value_name = "IDENTITY")]
    pub certificate_identity: Option<String>,
    /// Keyless verification's expected OIDC issuer (not available offline: refused).
    #[arg(long, value_name = "URL")]
    pub certificate_oidc_issuer: Option<String>,
    /// The image, in a registry.
    pub image: String,
}

fn image_ref(s: &str) -> Result<Reference, Exit> {
    Ok(Reference::parse(s.strip_prefix("docker://").unwrap_or(s))?)
}

/// The password: `$COSIGN_PASSWORD`, else asked on the terminal (twice when `confirm`).
fn password(confirm: bool) -> Result<Vec<u8>, Exit> {
    if let Some(p) = std::env::var_os("COSIGN_PASSWORD") {
        use std::os::unix::ffi::OsStringExt;
        return Ok(p.into_vec());
    }
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(anyhow::anyhow!(
            "the private key's password: set COSIGN_PASSWORD (it may be empty), or run on a terminal to be asked"
        )
        .into());
    }
    let first = rpassword::prompt_password("Enter password for private key: ")?;
    if confirm {
        let again = rpassword::prompt_password("Enter password for private key again: ")?;
        if again != first {
            return Err(anyhow::anyhow!("the passwords do not match").into());
        }
    }
    Ok(first.into_bytes())
}

/// Reads and decrypts a private key file.
pub(crate) fn load_private_key(path: &Path) -> Result<keys::PrivateKey, Exit> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the private key `{}`: {e}", path.display()))?;
    let pw = password(false)?;
    Ok(keys::PrivateKey::from_encrypted_pem(
        &text,
        &pw,
        &path.display().to_string(),
    )?)
}

pub(crate) fn run_key(cmd: KeyCommand) -> CliResult {
    let KeyCommand::Generate(a) = cmd;
    let (key_path, pub_path) = keys::key_paths(&a.output_key_prefix);
    if !a.force {
        for p in [&key_path, &pub_path] {
            if std::fs::symlink_metadata(p).is_ok() {
                return Err(sign::Error::Exists { path: p.clone() }.into());
            }
        }
    }
    let pw = password(true)?;
    let key = keys::PrivateKey::generate()?;
    let pem = key.to_encrypted_pem(&pw)?;
    keys::write_new_file(&key_path, pem.as_bytes(), 0o600, a.force)?;
    keys::write_new_file(&pub_path, key.public().to_pem().as_bytes(), 0o644, a.force)?;
    eprintln!(
        "Private key written to {}\nPublic key written to {} ({})",
        key_path.display(),
        pub_path.display(),
        key.public().fingerprint()
    );
    Ok(())
}

/// cosign's warning for a tag (`ui.TagReferenceMessage`).
fn warn_tag(image: &Reference) {
    if image.digest().is_none() {
        eprintln!(
            "WARNING: Image reference {image} uses a tag, not a digest, to identify the image to sign.\n    \
             This can lead you to sign a different image than the intended one. Please use a\n    \
             digest (example.com/ubuntu@sha256:abc123...) rather than tag\n    \
             (example.com/ubuntu:latest) for the input to cosign. The ability to refer to\n    \
             images by tag will be removed in a future release."
        );
    }
}

pub(crate) fn run_sign(ctx: &Context, a: SignArgs) -> CliResult {
    let image = image_ref(&a.image)?;
    let key = load_private_key(&a.key)?;
    let remote = ctx.remote()?;
    warn_tag(&image);
    let s = sign::sign_image(&remote.client, &image, &key)?;
    eprintln!("Pushing signature to: {}", s.tag);
    out_json(
        &serde_json::json!({ "image": image.name(), "digest": s.digest, "signature": s.tag.to_string() }),
    )
}

/// The key for `build --sign` / `bake --sign`, read (and its password checked) before the build.
pub(crate) fn signing_key(
    sign: bool,
    key: Option<&Path>,
) -> Result<Option<keys::PrivateKey>, Exit> {
    match (sign, key) {
        (true, Some(k)) => Ok(Some(load_private_key(k)?)),
        (true, None) => Err(anyhow::anyhow!("--sign needs --key FILE").into()),
        (false, _) => Ok(None),
    }
}

/// Signs `digest` in the repository of each of `pushed` (once per repository): what
/// `build --push --sign` and `bake --push --sign` pushed.
pub(crate) fn sign_pushed(
    ctx: &Context,
    key: &keys::PrivateKey,
    pushed: &[String],
    digest: &crate::oci::Digest,
) -> CliResult {
    let remote = ctx.remote()?;
    let mut done = std::collections::BTreeSet::new();
    for p in pushed {
        let r = image_ref(p)?;
        if !done.insert(r.name()) {
            continue;
        }
        let s = sign::sign_digest(&remote.client, &r, digest, key)?;
        eprintln!("Pushing signature to: {}", s.tag);
    }
    Ok(())
}

/// RFC 3339 of `$SOURCE_DATE_EPOCH`, else now (what cosign puts in a `custom` predicate).
fn timestamp() -> Result<String, Exit> {
    let secs = match super::given_epoch(None)? {
        Some(e) => e,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    };
    Ok(crate::oci::rfc3339(secs))
}

pub(crate) fn run_attest(ctx: &Context, a: AttestArgs) -> CliResult {
    let image = image_ref(&a.image)?;
    let predicate_type = dsse::predicate_type(&a.kind)?;
    let predicate = std::fs::read(&a.predicate).map_err(|e| {
        anyhow::anyhow!("cannot read the predicate `{}`: {e}", a.predicate.display())
    })?;
    let key = load_private_key(&a.key)?;
    let remote = ctx.remote()?;
    warn_tag(&image);
    let ts = timestamp()?;
    let s = sign::attest_image(
        &remote.client,
        &image,
        &key,
        &Attestation {
            predicate_type: &predicate_type,
            predicate: &predicate,
            timestamp: &ts,
        },
    )?;
    eprintln!("Pushing attestation to: {}", s.tag);
    out_json(&serde_json::json!({
        "image": image.name(), "digest": s.digest, "attestation": s.tag.to_string(),
        "referrer": s.referrer, "predicateType": predicate_type,
    }))
}

pub(crate) fn run_verify(ctx: &Context, a: VerifyArgs) -> CliResult {
    if a.certificate_identity.is_some() || a.certificate_oidc_issuer.is_some() {
        return Err(Exit::from(sign::Error::KeylessUnavailable));
    }
    let Some(key_path) = &a.key else {
        return Err(anyhow::anyhow!(
            "kiln verify needs --key PUB (keyless verification needs Fulcio/Rekor, not available)"
        )
        .into());
    };
    let key = keys::PublicKey::load(key_path)?;
    let image = image_ref(&a.image)?;
    let remote = ctx.remote()?;
    let failed = |e: sign::Error| match e {
        sign::Error::Verify(_) => Exit {
            code: 1,
            error: Some(anyhow::anyhow!("verification failed: {e}")),
        },
        other => Exit::from(other),
    };
    match &a.attestation {
        None => {
            let c = verify::verify_signatures(&remote.client, &image, &key).map_err(failed)?;
            eprintln!(
                "\nVerification for {}@{} --\nThe following checks were performed on each of these signatures:\n  \
                 - The cosign claims were validated\n  - The signatures were verified against the specified public key ({})",
                image.name(),
                c.digest,
                key.fingerprint()
            );
            for r in &c.rejected {
                eprintln!("  (skipped {r})");
            }
            out_json(&c.payloads)
        }
        Some(kind) => {
            let wanted = match kind.as_str() {
                "any" => None,
                k => Some(dsse::wanted_types(k)?),
            };
            let c = verify::verify_attestations(&remote.client, &image, &key, wanted.as_deref())
                .map_err(failed)?;
            eprintln!(
                "\nVerification for {}@{} --\n{} attestation(s) verified against the specified public key ({})",
                image.name(),
                c.digest,
                c.statements.len(),
                key.fingerprint()
            );
            for r in &c.rejected {
                eprintln!("  (skipped {r})");
            }
            out_json(&c.statements)
        }
    }
}
