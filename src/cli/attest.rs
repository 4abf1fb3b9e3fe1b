//! `kiln build`'s attestation flags (`--sbom`, `--provenance`, `--attest`, buildx's names and
//! values, docker/buildx `util/buildflags/attests.go`), the build facts provenance records
//! (the Dockerfile's digest, the context's git checkout), and `kiln sbom IMAGE`.
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use clap::{Args, ValueEnum};

use crate::attest::provenance::{self, GitSource, Mode};
use crate::oci::Platform;
use crate::ops::{self, AttestOptions, SbomFormat};
use crate::transport::Target;

use super::{given_epoch, out, CliResult, Context};

fn boolean(flag: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        other => bail!("{flag}={other}: expected true or false"),
    }
}

/// One `--attest` value, buildx's `type=sbom|provenance,KEY=VALUE,…`, applied to `o`.
fn apply(o: &mut AttestOptions, flag: &str, spec: &str) -> Result<()> {
    let mut typ = None;
    let mut disabled = false;
    let mut mode = None;
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k {
            "type" => typ = Some(v.to_string()),
            "disabled" => disabled = boolean(&format!("{flag} `{spec}`: disabled"), v)?,
            "mode" => {
                mode = Some(match v {
                    "min" => Mode::Min,
                    "max" => Mode::Max,
                    _ => bail!("{flag} `{spec}`: mode={v}: expected min or max"),
                })
            }
            // buildx's generator and scanner options: kiln's scanners are built in.
            "generator" | "builder-id" | "version" | "scan-context" | "scan-stage" => bail!(
                "{flag} `{spec}`: `{k}` is not supported by kiln (its SBOM scanners and \
                 builder id are built in)"
            ),
            _ => bail!("{flag} `{spec}`: unknown key `{k}` (type, mode, disabled)"),
        }
    }
    match typ.as_deref() {
        Some("sbom") => {
            if mode.is_some() {
                bail!("{flag} `{spec}`: mode= is for type=provenance");
            }
            o.sbom = !disabled;
        }
        Some("provenance") => o.provenance = (!disabled).then(|| mode.unwrap_or_default()),
        Some(t) => bail!("{flag} `{spec}`: unknown attestation type `{t}` (sbom, provenance)"),
        None => bail!("{flag} `{spec}`: no type= (type=sbom or type=provenance)"),
    }
    Ok(())
}

/// Parses `--sbom`, `--provenance` and `--attest` as buildx does: `--sbom=true` is
/// `--attest type=sbom`, `--provenance=mode=max` is `--attest type=provenance,mode=max`.
pub(crate) fn options(
    sbom: Option<&str>,
    provenance: Option<&str>,
    attest: &[String],
) -> Result<AttestOptions> {
    let mut o = AttestOptions::default();
    for a in attest {
        apply(&mut o, "--attest", a)?;
    }
    if let Some(v) = sbom {
        match v {
            "true" | "1" | "false" | "0" => o.sbom = boolean("--sbom", v)?,
            spec => apply(&mut o, "--sbom", &format!("type=sbom,{spec}"))?,
        }
    }
    if let Some(v) = provenance {
        match v {
            "true" | "1" | "false" | "0" => {
                o.provenance = boolean("--provenance", v)?.then_some(Mode::Min)
            }
            spec => apply(&mut o, "--provenance", &format!("type=provenance,{spec}"))?,
        }
    }
    Ok(o)
}

/// The context's git checkout, when it is one (`git -C CONTEXT rev-parse HEAD`), with the
/// origin's URL.
pub(crate) fn git_source(context: &Path) -> Option<GitSource> {
    let git = |args: &[&str]| super::build_source::git(context, args);
    Some(GitSource {
        commit: git(&["rev-parse", "HEAD"])?,
        tree: git(&["rev-parse", "HEAD^{tree}"])?,
        uri: git(&["config", "--get", "remote.origin.url"])
            .map(|u| provenance::strip_credentials(&u)),
    })
}

/// What provenance records of a build that `opts` describes, before it runs; `times` when
/// they are to be written.
pub(crate) fn facts(
    opts: &crate::builder::BuildOptions,
    platforms: &[Platform],
    times: Option<(i64, i64)>,
) -> Result<provenance::Facts> {
    let bytes = std::fs::read(&opts.dockerfile)
        .map_err(|e| anyhow!("cannot read `{}`: {e}", opts.dockerfile.display()))?;
    let path = opts
        .dockerfile
        .strip_prefix(&opts.context)
        .unwrap_or(&opts.dockerfile)
        .display()
        .to_string();
    Ok(provenance::Facts {
        dockerfile_path: path,
        dockerfile_digest: Some(crate::oci::Digest::sha256(&bytes)),
        target: opts.target.clone(),
        platforms: platforms.to_vec(),
        build_args: opts.build_args.clone(),
        secrets: opts.secrets.keys().cloned().collect(),
        git: git_source(&opts.context),
        builder_platform: Some(Platform::host()),
        times,
        ..Default::default()
    })
}

/// `kiln sbom`'s formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// SPDX 2.3 JSON.
    SpdxJson,
    /// CycloneDX 1.5 JSON.
    CyclonedxJson,
}

/// Arguments of `kiln sbom`.
#[derive(Debug, Args)]
pub struct SbomArgs {
    /// The image: a store name, `oci:DIR[:REF]`, `oci-archive:FILE[:REF]`,
    /// `docker-archive:FILE[:NAME:TAG]` or `docker://REF`.
    pub image: Target,
    /// The document format.
    #[arg(long, value_enum, default_value = "spdx-json")]
    pub format: Format,
    /// Which platform to take from a multi-platform image [default: the host's].
    #[arg(long)]
    pub platform: Option<Platform>,
    /// The document's timestamp [default: $SOURCE_DATE_EPOCH, else the image's creation time].
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<i64>,
    /// Write the document to FILE instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
}

/// Prints the SBOM of any image kiln can read; the scan's warnings go to the reporter.
pub(crate) fn run_sbom(ctx: &Context, a: SbomArgs) -> CliResult {
    let store = ctx.store()?;
    let remote = ctx.remote()?;
    let format = match a.format {
        Format::SpdxJson => SbomFormat::SpdxJson,
        Format::CyclonedxJson => SbomFormat::CycloneDxJson,
    };
    let epoch = given_epoch(a.source_date_epoch)?;
    let (doc, warnings) = ops::sbom(
        &store,
        &a.image,
        a.platform.as_ref(),
        Some(&remote),
        format,
        epoch,
    )?;
    let reporter = ctx.reporter();
    for w in &warnings {
        reporter.on_warning(w);
    }
    drop(reporter);
    let text = serde_json::to_string_pretty(&doc)?;
    match &a.output {
        Some(f) => std::fs::write(f, text + "\n")
            .map_err(|e| anyhow!("cannot write `{}`: {e}", f.display()).into()),
        None => out(&text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildx_flag_values() {
        let o = options(Some("true"), Some("mode=max"), &[]).unwrap();
        assert!(o.sbom);
        assert_eq!(o.provenance, Some(Mode::Max));
        let o = options(None, Some("true"), &["type=sbom".into()]).unwrap();
        assert!(o.sbom && o.provenance == Some(Mode::Min));
        let o = options(Some("false"), Some("false"), &["type=sbom".into()]).unwrap();
        assert!(!o.any());
        let o = options(
            None,
            None,
            &[
                "type=provenance,mode=max".into(),
                "type=provenance,disabled=true".into(),
            ],
        )
        .unwrap();
        assert!(!o.any());
        for bad in [(None, Some("max")), (Some("yes"), None)] {
            assert!(options(bad.0, bad.1, &[]).is_err(), "{bad:?}");
        }
        assert!(options(None, None, &["type=vex".into()]).is_err());
        assert!(options(None, None, &["mode=max".into()]).is_err());
        assert!(options(None, None, &["type=sbom,generator=x".into()])
            .unwrap_err()
            .to_string()
            .contains("not supported"));
    }
}
