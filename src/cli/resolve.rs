//! `kiln resolve`, `kiln ensure [--build-fallback]` and `kiln status`: which image a deployer
//! runs, from the `[image]` section of the config file (`--config`, else `$KILN_CONFIG`, else
//! `./kiln.toml`). With `verify_signature`/`verify_provenance` set, `resolve` and `ensure` fail
//! closed (exit 1, naming the image, the rule and what failed) unless the image verifies, and
//! then answer with the verified digest; `status` reports what verified or why not.
use clap::Args;

use crate::layer::Compression;
use crate::registry::Reference;
use crate::resolve::{self, Resolution, Rule};
use crate::sign::{keys::PublicKey, verify};

use super::bake::{build_options, family_file, git_info};
use super::{out, out_json, CliResult, Context, Exit};

/// Arguments of `kiln resolve` and `kiln status`.
#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// Print JSON (reference, rule, reason).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `kiln ensure`.
#[derive(Debug, Args)]
pub struct EnsureArgs {
    /// Build the fallback Dockerfile when the pull fails.
    #[arg(long)]
    pub build_fallback: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn resolution(ctx: &Context) -> Result<Resolution, Exit> {
    let file = family_file(ctx);
    let section = if file.is_file() {
        resolve::load(&file)?
    } else {
        None
    };
    let remote = ctx.remote()?;
    let list = |repo: &str| {
        let r = Reference::parse(repo)?;
        remote.client.list_tags(&r, None)
    };
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| ".".into());
    let sha = git_info(&dir).sha;
    Ok(resolve::resolve(
        &file,
        section.as_ref(),
        &list,
        sha.as_deref(),
    )?)
}

/// What verification on resolve found: `Ok(None)` when nothing was asked for.
type Checked = Result<Option<verify::Verdict>, String>;

/// Checks the `[image]` verification rules against `r`'s image; on success pins `r` to the
/// verified digest (so `ensure` pulls exactly what was verified). The error is the message.
fn check(ctx: &Context, r: &mut Resolution) -> Result<Checked, Exit> {
    let v = r.verification.clone();
    if !v.any() {
        return Ok(Ok(None));
    }
    let first = if v.requirements.signature {
        "verify_signature"
    } else {
        "verify_provenance"
    };
    let head = format!("image `{}` (rule {})", r.reference, r.rule_number);
    if r.rule == Rule::LocalBuild {
        if v.allow_unverified_local_build {
            return Ok(Ok(None));
        }
        return Ok(Err(format!(
            "{head}: {first}: a local build (rule 5) has no signature or provenance to verify; \
             set `allow_unverified_local_build = true` under [image] to accept it unverified"
        )));
    }
    let key_path = v
        .public_key
        .as_ref()
        .expect("checked when the section was parsed");
    let key = PublicKey::load(key_path).map_err(|e| anyhow::anyhow!("{head}: public_key: {e}"))?;
    let image = Reference::parse(&r.reference)?;
    let remote = ctx.remote()?;
    match verify::enforce(&remote.client, &image, &key, &v.requirements) {
        Ok(verdict) => {
            if let Some(d) = &verdict.digest {
                r.reference = format!("{}@{d}", image.name());
            }
            r.reason = format!("{}; verified ({})", r.reason, summary(&verdict));
            Ok(Ok(Some(verdict)))
        }
        Err(f) => Ok(Err(format!("{head}: {}: {}", f.rule, f.error))),
    }
}

fn summary(v: &verify::Verdict) -> String {
    let mut parts = Vec::new();
    if v.signature.is_some() {
        parts.push(format!(
            "signature, key {}",
            v.key.as_deref().unwrap_or("?")
        ));
    }
    if let Some(b) = &v.provenance_builder {
        parts.push(format!("provenance, builder {b}"));
    }
    parts.join("; ")
}

/// [`check`], failing closed: verification that fails exits 1.
fn checked(ctx: &Context, r: &mut Resolution) -> Result<Option<verify::Verdict>, Exit> {
    check(ctx, r)?.map_err(|msg| Exit {
        code: 1,
        error: Some(anyhow::anyhow!("verification failed: {msg}")),
    })
}

pub(crate) fn run_resolve(ctx: &Context, a: ResolveArgs) -> CliResult {
    let mut r = resolution(ctx)?;
    checked(ctx, &mut r)?;
    if a.json {
        return out_json(&r);
    }
    out(&format!("{}\n{}", r.reference, r.reason))
}

pub(crate) fn run_status(ctx: &Context, a: ResolveArgs) -> CliResult {
    match resolution(ctx) {
        Ok(mut r) => {
            let wanted = r.verification.clone();
            let verified = check(ctx, &mut r)?;
            let (signature, provenance) = status_lines(&wanted, &verified);
            let present = ctx
                .store()
                .ok()
                .and_then(|s| s.resolve(&r.reference).ok())
                .map(|d| d.digest.to_string());
            if a.json {
                return out_json(&serde_json::json!({
                    "image": r.reference, "rule": r.rule, "rule_number": r.rule_number,
                    "reason": r.reason, "local": present,
                    "signature": signature, "provenance": provenance,
                }));
            }
            out(&format!(
                "Image: {}\nRule: {}\nLocal: {}\nSignature: {signature}\nProvenance: {provenance}",
                r.reference,
                r.reason,
                present.as_deref().unwrap_or("not in the store")
            ))
        }
        Err(Exit { error: Some(e), .. })
            if e.downcast_ref::<resolve::Error>()
                .is_some_and(|e| matches!(e, resolve::Error::NoImage { .. })) =>
        {
            if a.json {
                return out_json(&serde_json::json!({ "image": null, "reason": e.to_string() }));
            }
            out(&format!("Image: none\nReason: {e}"))
        }
        Err(e) => Err(e),
    }
}

/// `kiln status`'s `Signature:` and `Provenance:` lines.
fn status_lines(wanted: &resolve::Verification, got: &Checked) -> (String, String) {
    let req = &wanted.requirements;
    let line = |asked: bool, ok: Option<String>| match (asked, got) {
        (false, _) => "not required".to_string(),
        (true, Err(why)) => format!("FAILED: {why}"),
        (true, Ok(None)) => {
            "not verified (local build, allowed by allow_unverified_local_build)".into()
        }
        (true, Ok(Some(_))) => ok.unwrap_or_default(),
    };
    let v = got.as_ref().ok().and_then(Option::as_ref);
    (
        line(
            req.signature,
            v.map(|v| format!("verified (key {})", v.key.as_deref().unwrap_or("?"))),
        ),
        line(
            req.provenance,
            v.and_then(|v| v.provenance_builder.as_ref())
                .map(|b| format!("verified (builder {b})")),
        ),
    )
}

pub(crate) fn run_ensure(ctx: &Context, a: EnsureArgs) -> CliResult {
    let mut r = resolution(ctx)?;
    checked(ctx, &mut r)?;
    let v = &r.verification;
    let build_fallback = if a.build_fallback && v.any() && !v.allow_unverified_local_build {
        eprintln!(
            "warning: --build-fallback ignored: [image] asks for verification and a local build \
             is unverified (set allow_unverified_local_build = true to allow it)"
        );
        false
    } else {
        a.build_fallback
    };
    let epoch = super::given_epoch(None)?;
    let build = build_options(ctx, Compression::default(), epoch, false, false)?;
    let store = ctx.store()?;
    let reporter = ctx.reporter();
    let done = crate::ops::ensure(&store, &r, build_fallback, &build, reporter.as_ref())?;
    drop(reporter);
    if a.json {
        return out_json(&done);
    }
    out(&format!(
        "{} {} ({}, rule {})\n{}",
        done.action, done.reference, done.digest, r.rule_number, r.reason
    ))
}
