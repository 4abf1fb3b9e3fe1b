//! `kiln build [CONTEXT] [-f FILE] [-t NAME]... …`: flag names follow `docker buildx build`.
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::builder::BuildOptions;
use crate::layer::Compression;
use crate::oci::Platform;
use crate::ops;
use crate::transport::Target;

use super::{given_epoch, out, CliResult, Context, Exit};

pub use super::build_args::BuildArgs;

/// Parses `--cache-to` and `--cache-from`; a `compression=` must agree with the build's
/// `--compression` (cache layers are the image's own blobs).
pub(crate) fn cache_flags(
    to: &[String],
    from: &[String],
    compression: &Compression,
) -> Result<
    (
        Vec<crate::cache::remote::CacheExport>,
        Vec<crate::cache::remote::CacheLocation>,
    ),
    Exit,
> {
    let mut exports = Vec::new();
    for spec in to {
        let t = super::cache::parse_cache_to(spec).map_err(|e| anyhow::anyhow!(e))?;
        if let Some(c) = &t.compression {
            let build = compression.to_string();
            if build.split(':').next() != Some(c.as_str()) {
                return Err(anyhow::anyhow!(
                    "--cache-to `{spec}`: compression={c}, but the layers are {build} \
                     (--compression): the cache holds the image's own layers; give \
                     `--compression {c}`"
                )
                .into());
            }
        }
        exports.push(t.export);
    }
    let imports = from
        .iter()
        .map(|s| super::cache::parse_cache_from(s).map_err(|e| anyhow::anyhow!(e).into()))
        .collect::<Result<_, Exit>>()?;
    Ok((exports, imports))
}

/// Parses `--network` and `--allow` (shared with `kiln bake`): the RUN steps' default network
/// and whether the `network.host` entitlement is granted.
pub(crate) fn network_flags(
    network: &str,
    allow: &[String],
) -> Result<(crate::sandbox::Network, bool), Exit> {
    use crate::sandbox::Network;
    let mut host_allowed = false;
    for a in allow.iter().flat_map(|a| a.split(',')) {
        match a.trim() {
            "network.host" => host_allowed = true,
            other => {
                return Err(anyhow::anyhow!(
                    "--allow `{other}`: unknown entitlement; kiln grants `network.host`"
                )
                .into())
            }
        }
    }
    let network = match network {
        "default" => Network::Default,
        "none" => Network::None,
        "host" if host_allowed => Network::Host,
        "host" => {
            return Err(anyhow::anyhow!(
                "--network host needs the `network.host` entitlement: add `--allow network.host` \
                 to let RUN steps share the host's network, its loopback services and abstract \
                 unix sockets included"
            )
            .into())
        }
        other => {
            return Err(anyhow::anyhow!(
                "--network `{other}`: expected `default`, `none` or `host`"
            )
            .into())
        }
    };
    Ok((network, host_allowed))
}

/// Parses `--secret id=ID,src=FILE|env=VAR` and reads the secret (the only place it is read).
pub(crate) fn secret(spec: &str) -> Result<(String, crate::builder::Secret), Exit> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
            Some(("env", v)) => env = Some(v.to_string()),
            Some(("type", "file" | "env")) => {}
            _ => {
                return Err(anyhow::anyhow!(
                    "--secret `{spec}`: expected id=ID,src=FILE or id=ID,env=VARIABLE"
                )
                .into())
            }
        }
    }
    let id = id
        .or_else(|| env.clone())
        .ok_or_else(|| anyhow::anyhow!("--secret `{spec}` has no id"))?;
    let bytes = match (src, env) {
        (Some(f), None) => std::fs::read(&f)
            .map_err(|e| anyhow::anyhow!("--secret {id}: cannot read `{}`: {e}", f.display()))?,
        (None, Some(v)) => std::env::var_os(&v)
            .map(|s| std::os::unix::ffi::OsStrExt::as_bytes(s.as_os_str()).to_vec())
            .ok_or_else(|| {
                anyhow::anyhow!("--secret {id}: the environment variable `{v}` is not set")
            })?,
        (None, None) => match std::env::var_os(&id) {
            Some(s) => std::os::unix::ffi::OsStrExt::as_bytes(s.as_os_str()).to_vec(),
            None => {
                return Err(anyhow::anyhow!("--secret {id}: give src=FILE or env=VARIABLE").into())
            }
        },
        (Some(_), Some(_)) => {
            return Err(anyhow::anyhow!("--secret {id}: give src= or env=, not both").into())
        }
    };
    Ok((id, crate::builder::Secret(bytes)))
}

fn pairs(flag: &str, items: &[String]) -> Result<BTreeMap<String, String>, Exit> {
    let mut m = BTreeMap::new();
    for i in items {
        match i.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                m.insert(k.to_string(), v.to_string());
            }
            _ => return Err(anyhow::anyhow!("{flag} `{i}` is not KEY=VALUE").into()),
        }
    }
    Ok(m)
}

/// What a build made, for the reporter's last event (the digest printed on stdout, each
/// platform's manifest and config, the names).
fn built(
    digest: &crate::oci::Digest,
    index: Option<&crate::oci::Digest>,
    images: &[crate::image::Image],
    names: &[String],
) -> crate::progress::BuildResult {
    crate::progress::BuildResult {
        digest: digest.clone(),
        index: index.cloned(),
        images: images
            .iter()
            .map(|i| crate::progress::ImageDigests {
                platform: i.platform().to_string(),
                manifest: i.digest().clone(),
                config: i.manifest.config.digest.clone(),
            })
            .collect(),
        names: names.to_vec(),
    }
}

pub(crate) fn run(ctx: &Context, mut a: BuildArgs) -> CliResult {
    let mut build_args = BTreeMap::new();
    for b in &a.build_args {
        match b.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(b) {
                    build_args.insert(b.clone(), v);
                }
            }
        }
    }
    let given = match a.timestamp.as_deref() {
        Some("now") => Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        ),
        Some(n) => Some(n.parse::<i64>().map_err(|_| {
            anyhow::anyhow!("--timestamp `{n}`: expected `now` or a number of seconds")
        })?),
        None => given_epoch(a.source_date_epoch)?,
    };
    let epoch = given.unwrap_or(0);
    let platforms: Vec<Platform> = match a.platform.as_deref() {
        None => vec![Platform::host()],
        Some(list) => list
            .split(',')
            .map(|p| p.trim().parse::<Platform>())
            .collect::<Result<_, _>>()?,
    };
    let (network, allow_network_host) = network_flags(&a.network, &a.allow)?;
    let (cache_to, cache_from) = cache_flags(&a.cache_to, &a.cache_from, &a.compression)?;
    if platforms.len() > 1 && !cache_to.is_empty() {
        return Err(anyhow::anyhow!(
            "--cache-to with several platforms is not supported yet (each platform's build would \
             replace the others' cache); build one platform per invocation with a cache ref each"
        )
        .into());
    }
    // The context: a directory, a git URL fetched at its ref, or `-` (stdin); `-f -`.
    let store = ctx.store()?;
    let source = super::build_source::resolve(
        &store,
        &a.context,
        a.file.as_deref(),
        Some(&ctx.remote()?.client.options().credentials),
    )?;
    a.tags = super::build_source::render_tags(&a.tags, &source)?;
    // `--build-context`: fetched (git) now; the checkouts live until the build is done.
    let named = super::build_source::named_contexts(
        &store,
        &a.build_contexts,
        Some(&ctx.remote()?.client.options().credentials),
    )?;
    // A missing context fails as a build does (exit 1), before anything else is read.
    super::build_outputs::check_context(&source.context).map_err(|e| Exit {
        code: 1,
        error: Some(e),
    })?;
    let plan = super::build_outputs::plan(&a, given.is_some(), &platforms)?;
    if a.sign && plan.outputs.push.is_empty() {
        return Err(anyhow::anyhow!(
            "--sign signs what the build pushes: add --push (or -o type=registry)"
        )
        .into());
    }
    let signer = super::sign::signing_key(a.sign, a.sign_key.as_deref())?;
    if platforms.len() > 1 && !plan.outputs.files.is_empty() {
        return Err(anyhow::anyhow!(
            "-o: a build of several platforms writes an index to the store and registries only; \
             build one platform per command for type=oci, docker, local or tar"
        )
        .into());
    }
    let attest = super::attest::options(a.sbom.as_deref(), a.provenance.as_deref(), &a.attest)?;
    // With attestations, names and pushes get the index (image + attestation manifest),
    // written after the build instead of by it.
    let pushes: Vec<String> = if attest.any() {
        plan.outputs.push.clone()
    } else {
        Vec::new()
    };
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut opts = BuildOptions {
        dockerfile: source.dockerfile.clone(),
        context: source.context.clone(),
        tags: plan.tags.clone(),
        build_args,
        target: a.target,
        platform: platforms.first().cloned().unwrap_or_else(Platform::host),
        outputs: plan
            .outputs
            .push
            .iter()
            .map(|r| Target::Registry(r.clone()))
            .collect(),
        compression: plan.compression,
        threads: a.threads,
        epoch,
        clamp_mtimes: plan.clamp_mtimes,
        no_cache: a.no_cache,
        labels: {
            let mut labels = pairs("--label", &a.labels)?;
            if let Some(v) = &source.vcs {
                super::build_source::vcs_labels(v, &mut labels);
            }
            labels
        },
        default_labels: Default::default(),
        annotations: plan.annotations.clone(),
        secrets: a
            .secrets
            .iter()
            .map(|s| secret(s))
            .collect::<Result<_, _>>()?,
        snapshotter: match a.snapshotter.as_deref() {
            None => None,
            Some(s) => crate::sandbox::SnapshotterKind::parse_choice(s)?,
        },
        helper_exe: std::env::current_exe()
            .map_err(|e| anyhow::anyhow!("cannot find the kiln executable: {e}"))?,
        single_id: a.single_id,
        remote: Some(ctx.remote()?),
        network,
        allow_network_host,
        cache_from,
        cache_to,
        named_contexts: named.0,
        ssh: super::build_flags::ssh(&a.ssh, std::env::var_os("SSH_AUTH_SOCK"))?,
        add_hosts: super::build_flags::add_hosts(&a.add_hosts)?,
        pull: a.pull,
        no_cache_filter: super::build_flags::no_cache_filter(&a.no_cache_filter)?,
    };
    // What provenance records: the command's parameters (each platform's images, URLs and
    // steps come from its build).
    let facts = if attest.any() {
        let times = match a.timestamp.as_deref() {
            Some("now") => Some((
                started,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64),
            )),
            _ => given.map(|e| (e, e)),
        };
        let mut facts = super::attest::facts(&opts, &platforms, times)?;
        // A git URL context is a checkout without `.git`: its commit comes from the fetch.
        if let Some(v) = &source.vcs {
            facts.git = Some(crate::attest::provenance::GitSource {
                uri: Some(v.source.clone()),
                commit: v.revision.clone(),
                tree: v.tree.clone(),
            });
        }
        Some(facts)
    } else {
        None
    };
    let reporter = ctx.reporter();
    if platforms.len() > 1 {
        // Several platforms: the index (with each platform's attestation manifest) is named
        // and pushed by `build_platforms` itself.
        let attest = facts.as_ref().map(|facts| ops::PlatformAttestations {
            options: &attest,
            facts,
        });
        let (index, mut images) =
            ops::build_platforms(&store, &opts, &platforms, reporter.as_ref(), attest).map_err(
                |e| Exit {
                    code: 1,
                    error: Some(e.into()),
                },
            )?;
        // The platform images come first; their attestation manifests follow.
        images.truncate(platforms.len());
        reporter.on_result(&built(
            &index.digest,
            Some(&index.digest),
            &images,
            &plan.tags,
        ));
        drop(reporter);
        if let Some(f) = &a.iidfile {
            std::fs::write(f, index.digest.to_string())
                .map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", f.display()))?;
        }
        if let Some(k) = &signer {
            super::sign::sign_pushed(ctx, k, &plan.outputs.push, &index.digest)?;
        }
        return out(&index.digest.to_string());
    }
    if attest.any() {
        // Names and pushes get the index (image + attestation manifest), written below.
        opts.outputs.clear();
    }
    let outcome = match ops::build(&store, &opts, reporter.as_ref()) {
        Ok(o) => o,
        // A failed build is exit 1: the error names the Dockerfile location or the object. An
        // image that was built but could not be exported or pushed is exit 2, like `kiln push`.
        Err(e) => {
            let code = if matches!(
                e,
                crate::builder::Error::Output(_) | crate::builder::Error::CacheExport(_)
            ) {
                2
            } else {
                1
            };
            return Err(Exit {
                code,
                error: Some(e.into()),
            });
        }
    };
    let findings = crate::bake::lint::check(
        &opts.dockerfile.display().to_string(),
        &outcome.image,
        &[],
        None,
    );
    for f in &findings {
        reporter.on_warning(&format!("{} [{}]", f.message, f.rule));
    }
    let attached = if let Some(facts) = &facts {
        let layers = crate::transport::LayerSource::new(&store, opts.remote.as_ref());
        reporter.on_status("attestations: scanning layers, writing the index");
        let att = ops::attach(&store, layers, &outcome, facts, &attest, epoch)?;
        for w in &att.warnings {
            reporter.on_warning(&format!("sbom: {w}"));
        }
        for r in &pushes {
            reporter.on_status(&format!("pushing {r} (with attestations)"));
            ops::write_attached(
                &store,
                &att,
                &Target::Registry(r.clone()),
                None,
                opts.remote.as_ref(),
            )
            .map_err(|e| anyhow::anyhow!(e).context(format!("cannot push {r}")))?;
        }
        Some(att)
    } else {
        None
    };
    drop(reporter);
    if a.strict && !findings.is_empty() {
        return Err(Exit {
            code: 1,
            error: Some(anyhow::anyhow!(
                "{} lint finding(s) under --strict",
                findings.len()
            )),
        });
    }
    super::build_outputs::write_files(
        ctx,
        &store,
        &outcome,
        &plan.outputs.files,
        attached.as_ref(),
    )?;
    // With attestations the build's result is the index, as buildx reports it (and signs it).
    let image = outcome.image.digest();
    let top = attached.as_ref().map(|att| &att.tree.top.digest);
    if let Some(k) = &signer {
        super::sign::sign_pushed(ctx, k, &plan.outputs.push, top.unwrap_or(image))?;
    }
    let names = outcome.names.clone();
    ctx.reporter().on_result(&built(
        image,
        top,
        std::slice::from_ref(&outcome.image),
        &names,
    ));
    let digest = top.unwrap_or(image).to_string();
    if let Some(f) = &a.iidfile {
        std::fs::write(f, &digest)
            .map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", f.display()))?;
    }
    if let Some(f) = &a.metadata_file {
        let mut meta = ops::metadata(&outcome);
        if let (Some(v), Some(m)) = (&source.vcs, meta.as_object_mut()) {
            m.insert("vcs".into(), super::build_source::vcs_metadata(v));
        }
        if let Some(att) = &attached {
            meta["containerimage.digest"] = serde_json::Value::from(digest.clone());
            meta["containerimage.descriptor"] = serde_json::json!({
                "mediaType": att.tree.top.media_type.to_string(),
                "digest": digest,
                "size": att.tree.top.size,
            });
            meta["attestations"] = serde_json::json!({
                "manifest": att.tree.images.last().map(|i| i.digest().to_string()),
                "sbom_layers_scanned": att.layers.0,
                "sbom_layers_cached": att.layers.1,
            });
        }
        let text = serde_json::to_string_pretty(&meta)?;
        std::fs::write(f, text)
            .map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", f.display()))?;
    }
    out(&digest)
}
