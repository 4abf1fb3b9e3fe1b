//! `kiln bake [TARGET...] [--push] [--set TARGET.KEY=VALUE]... [--metadata-file F] [--print]`:
//! builds the image family `kiln.toml` describes, in the spirit of `docker buildx bake`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::bake;
use crate::builder::BuildOptions;
use crate::layer::Compression;
use crate::oci::Platform;
use crate::ops::{self, BakeOptions, TargetCache};

use super::{given_epoch, out, out_json, CliResult, Context, Exit};

pub use super::bake_args::BakeArgs;

/// The family file: `--config`, else `$KILN_CONFIG`, else `./kiln.toml`.
pub(crate) fn family_file(ctx: &Context) -> PathBuf {
    ctx.registry
        .config
        .clone()
        .or_else(|| {
            std::env::var_os("KILN_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("kiln.toml"))
}

// Read by `kiln build`'s tag templates too; they live below both commands.
pub(crate) use super::build_source::git_info;

/// Shared build settings for bake and ensure.
pub(crate) fn build_options(
    ctx: &Context,
    compression: Compression,
    epoch: Option<i64>,
    no_cache: bool,
    single_id: bool,
) -> Result<BuildOptions, Exit> {
    Ok(BuildOptions {
        context: PathBuf::from("."),
        dockerfile: PathBuf::from("Dockerfile"),
        tags: Vec::new(),
        build_args: Default::default(),
        target: None,
        platform: Platform::host(),
        outputs: Vec::new(),
        compression,
        threads: 0,
        epoch: epoch.unwrap_or(0),
        clamp_mtimes: epoch.is_some(),
        no_cache,
        labels: Default::default(),
        default_labels: Default::default(),
        annotations: Default::default(),
        secrets: Default::default(),
        snapshotter: None,
        helper_exe: std::env::current_exe()
            .map_err(|e| anyhow::anyhow!("cannot find the kiln executable: {e}"))?,
        single_id,
        remote: Some(ctx.remote()?),
        network: crate::sandbox::Network::Default,
        allow_network_host: false,
        cache_from: Vec::new(),
        cache_to: Vec::new(),
        named_contexts: Default::default(),
        ssh: Default::default(),
        add_hosts: Vec::new(),
        pull: false,
        no_cache_filter: Vec::new(),
    })
}

/// Parses every target's rendered `cache_to` / `cache_from` (the `--cache-to` /
/// `--cache-from` syntax); an error names the file, the target and the value.
fn target_caches(
    file: &Path,
    plan: &bake::BakePlan,
    compression: &Compression,
) -> Result<BTreeMap<(String, String), TargetCache>, Exit> {
    let mut caches = BTreeMap::new();
    for t in &plan.targets {
        for p in &t.platforms {
            let to = t.cache_to.get(p).cloned().unwrap_or_default();
            let from = t.cache_from.get(p).cloned().unwrap_or_default();
            let (to, from) =
                super::build::cache_flags(&to, &from, compression).map_err(|e| Exit {
                    code: 2,
                    error: Some(anyhow::anyhow!(
                        "`{}`: target `{}` ({p}): {}",
                        file.display(),
                        t.name,
                        e.error
                            .map(|e| e.to_string())
                            .unwrap_or_else(|| "bad cache value".into())
                    )),
                })?;
            caches.insert((t.name.clone(), p.clone()), TargetCache { to, from });
        }
    }
    Ok(caches)
}

pub(crate) fn run(ctx: &Context, a: BakeArgs) -> CliResult {
    let file = family_file(ctx);
    let mut family = bake::config::load(&file)?;
    for s in &a.sets {
        bake::plan::apply_set(&mut family, s)?;
    }
    // After the `--set`s: the command line's platform is the one built (a matrix entry's).
    if let Some(p) = &a.platform {
        bake::plan::apply_set(&mut family, &format!("*.platforms={p}"))?;
    }
    let epoch = given_epoch(a.source_date_epoch)?;
    let git = git_info(&family.root);
    let only: &[String] = if a.merge { &[] } else { &a.targets };
    let plan = bake::plan::resolve(&family, only, &git, epoch.unwrap_or(0))?;
    if a.print {
        return out_json(&plan);
    }
    if a.matrix {
        return super::bake_fanout::print_matrix(ctx, &a, &plan);
    }
    if a.merge {
        return super::bake_fanout::run_merge(ctx, &a, plan);
    }
    let (network, allow_network_host) = super::build::network_flags(&a.network, &a.allow)?;
    let signer = super::sign::signing_key(a.sign, a.sign_key.as_deref())?;
    let caches = target_caches(&family.file, &plan, &a.compression)?;
    let opts = BakeOptions {
        caches,
        plan,
        push: a.push,
        push_by_digest: a.push_by_digest,
        strict: a.strict,
        build: BuildOptions {
            secrets: a
                .secrets
                .iter()
                .map(|s| super::build::secret(s))
                .collect::<Result<_, _>>()?,
            network,
            allow_network_host,
            ..build_options(ctx, a.compression, epoch, a.no_cache, a.single_id)?
        },
        // For targets with `provenance` in kiln.toml (src/cli/attest.rs).
        provenance: crate::attest::provenance::Facts {
            git: super::attest::git_source(&family.root),
            builder_platform: Some(Platform::host()),
            times: epoch.map(|e| (e, e)),
            ..Default::default()
        },
    };
    let store = ctx.store()?;
    let reporter = ctx.reporter();
    let result = match ops::bake(&store, &opts, reporter.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            return Err(Exit {
                code: 1,
                error: Some(e.into()),
            })
        }
    };
    drop(reporter);
    if let Some(k) = &signer {
        for t in result.targets.values() {
            super::sign::sign_pushed(ctx, k, &t.tags, &t.digest)?;
        }
    }
    if let Some(f) = &a.metadata_file {
        let text = serde_json::to_string_pretty(&result)?;
        std::fs::write(f, text)
            .map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", f.display()))?;
    }
    let mut text = String::new();
    for (name, t) in &result.targets {
        text.push_str(&format!(
            "{name}\t{}\t{}{}\n",
            t.digest,
            t.tags.join(","),
            if t.cached { "\t(cached)" } else { "" }
        ));
    }
    out(&text)
}
