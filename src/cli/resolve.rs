//! `kiln resolve`, `kiln ensure [--build-fallback]` and `kiln status`: which image a deployer
//! runs, from the `[image]` section of the config file (`--config`, else `$KILN_CONFIG`, else
//! `./kiln.toml`).
use clap::Args;

use crate::layer::Compression;
use crate::registry::Reference;
use crate::resolve::{self, Resolution};

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

pub(crate) fn run_resolve(ctx: &Context, a: ResolveArgs) -> CliResult {
    let r = resolution(ctx)?;
    if a.json {
        return out_json(&r);
    }
    out(&format!("{}\n{}", r.reference, r.reason))
}

pub(crate) fn run_status(ctx: &Context, a: ResolveArgs) -> CliResult {
    match resolution(ctx) {
        Ok(r) => {
            let present = ctx
                .store()
                .ok()
                .and_then(|s| s.resolve(&r.reference).ok())
                .map(|d| d.digest.to_string());
            if a.json {
                return out_json(&serde_json::json!({
                    "image": r.reference, "rule": r.rule, "rule_number": r.rule_number,
                    "reason": r.reason, "local": present,
                }));
            }
            out(&format!(
                "Image: {}\nRule: {}\nLocal: {}",
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

pub(crate) fn run_ensure(ctx: &Context, a: EnsureArgs) -> CliResult {
    let r = resolution(ctx)?;
    let epoch = super::given_epoch(None)?;
    let build = build_options(ctx, Compression::default(), epoch, false, false)?;
    let store = ctx.store()?;
    let reporter = ctx.reporter();
    let done = crate::ops::ensure(&store, &r, a.build_fallback, &build, reporter.as_ref())?;
    drop(reporter);
    if a.json {
        return out_json(&done);
    }
    out(&format!(
        "{} {} ({}, rule {})\n{}",
        done.action, done.reference, done.digest, r.rule_number, r.reason
    ))
}
