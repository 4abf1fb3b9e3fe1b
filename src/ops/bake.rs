//! `kiln bake`: every target of a [`BakePlan`] built in one process, with one store and one
//! cache (a stage common to several variants is built once, then answered from the cache),
//! one image per platform and an OCI index when there are several, lints, and pushes that
//! skip tags the registry already has at the same digest.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::bake::lint::{self, Finding};
use crate::bake::{BakePlan, PlannedTarget};
use crate::builder::{BuildOptions, StepRecord};
use crate::image::Image;
use crate::oci::{self, Descriptor, Digest, Index, MediaType, Platform};
use crate::progress::Reporter;
use crate::registry::Reference;
use crate::store::Store;
use crate::transport::{self, Target};

/// What `kiln bake` needs besides the plan.
#[derive(Debug, Clone)]
pub struct BakeOptions {
    /// The resolved plan.
    pub plan: BakePlan,
    /// Push every tag.
    pub push: bool,
    /// Push each platform's image by digest only (`REPOSITORY@DIGEST`): no tag, no index;
    /// `kiln bake --merge` makes those from the digests files of every runner.
    pub push_by_digest: bool,
    /// Lint findings are errors.
    pub strict: bool,
    /// Shared build settings (compression, epoch, cache, sandbox, registry client); its
    /// per-target fields (context, Dockerfile, tags, args, labels, platform, cache refs) are
    /// replaced.
    pub build: BuildOptions,
    /// `(target, platform)` → its cache refs (`cache_to` / `cache_from` of `kiln.toml`,
    /// rendered and parsed); a pair not here uses `build`'s.
    pub caches: BTreeMap<(String, String), TargetCache>,
    /// What provenance records beyond each target's own parameters: the git checkout, the
    /// builder platform, the times (a target with `provenance` in `kiln.toml`).
    pub provenance: crate::attest::provenance::Facts,
}

/// One target's cache refs for one platform.
#[derive(Debug, Clone, Default)]
pub struct TargetCache {
    /// Where the build's layer keys are written.
    pub to: Vec<crate::cache::remote::CacheExport>,
    /// Where steps are looked up after the store.
    pub from: Vec<crate::cache::remote::CacheLocation>,
}

/// One platform's image of a target.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PlatformImage {
    /// The platform.
    pub platform: String,
    /// The image manifest digest.
    pub digest: Digest,
    /// Config plus compressed layers, bytes.
    pub size: u64,
    /// Every step, with whether it was a cache hit.
    pub steps: Vec<StepRecord>,
}

/// One target's result: an entry of the digests file.
#[derive(Debug, Clone, Serialize)]
pub struct BakedTarget {
    /// The manifest digest the tags point at (an index when several platforms).
    pub digest: Digest,
    /// Its media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Every tag (full references).
    pub tags: Vec<String>,
    /// The platforms.
    pub platforms: Vec<String>,
    /// Total bytes of the images (config plus layers, each platform).
    pub size: u64,
    /// Whether every step of every platform was a cache hit.
    pub cached: bool,
    /// With `--push`: every tag the registry now has at `digest`, whether this bake uploaded
    /// its manifest or the tag was already current (then it is in `up_to_date` too). Empty
    /// without `--push`.
    pub pushed: Vec<String>,
    /// The tags of `pushed` the registry already had at `digest`: nothing was uploaded for them.
    pub up_to_date: Vec<String>,
    /// Per platform.
    pub images: Vec<PlatformImage>,
}

/// What a bake produced.
#[derive(Debug, Clone, Serialize)]
pub struct BakeResult {
    /// The release version.
    pub version: String,
    /// The git revision.
    pub revision: Option<String>,
    /// `org.opencontainers.image.created`.
    pub created: String,
    /// Target name → result.
    pub targets: BTreeMap<String, BakedTarget>,
    /// Lint findings (warnings unless `--strict`).
    pub lints: Vec<Finding>,
}

/// Why a bake failed.
#[derive(Debug, thiserror::Error)]
pub enum BakeError {
    /// A target's build failed.
    #[error("target `{target}` ({platform}): build failed")]
    Build {
        /// The target.
        target: String,
        /// The platform.
        platform: String,
        /// The cause.
        #[source]
        source: Box<crate::builder::Error>,
    },
    /// Pushing or storing a target failed.
    #[error("target `{target}`: cannot write `{dest}`")]
    Write {
        /// The target.
        target: String,
        /// The destination.
        dest: String,
        /// The cause.
        #[source]
        source: Box<transport::Error>,
    },
    /// A registry request failed.
    #[error("target `{target}`: registry request for `{reference}` failed")]
    Registry {
        /// The target.
        target: String,
        /// The reference.
        reference: String,
        /// The cause.
        #[source]
        source: Box<crate::registry::Error>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// `--strict` and lints fired.
    #[error("{} lint finding(s) under --strict: {}", findings.len(), findings.iter().map(|f| f.message.as_str()).collect::<Vec<_>>().join("; "))]
    Lint {
        /// The findings.
        findings: Vec<Finding>,
    },
    /// `--push` without a registry client.
    #[error("--push needs a registry client")]
    NoRemote,
    /// A target's attestations (`sbom`, `provenance` in `kiln.toml`) failed.
    #[error("target `{target}`: cannot make its attestations")]
    Attest {
        /// The target.
        target: String,
        /// The cause.
        #[source]
        source: Box<crate::ops::AttestError>,
    },
}

/// Fails when the Dockerfile has a RUN step in a stage built for a platform this host runs
/// neither natively nor through a `binfmt_misc` emulator, as the build itself would at that
/// platform's start (`builder::preflight`); called for every platform of a multi-platform build
/// before any is built, so the last platform's missing emulator does not fail the build after
/// the first platform's steps ran. What this cannot plan (a bad Dockerfile) the build reports.
pub fn check_emulation(opts: &BuildOptions, target: &str) -> Result<(), BakeError> {
    let host = Platform::host();
    let Ok(bytes) = std::fs::read(&opts.dockerfile) else {
        return Ok(());
    };
    let Ok(ast) = crate::dockerfile::parse_bytes(&bytes) else {
        return Ok(());
    };
    let Ok(df) = crate::dockerfile::instructions(&ast) else {
        return Ok(());
    };
    let popts = crate::plan::PlanOptions {
        build_args: opts.build_args.clone(),
        target: opts.target.clone(),
        target_platform: crate::plan::Platform::from(&opts.platform),
        build_platform: crate::plan::Platform::from(&host),
        network: None,
    };
    let Ok(plan) = crate::plan::plan(&df, &popts, &mut crate::plan::NoBases) else {
        return Ok(());
    };
    let dir = std::path::Path::new(crate::sandbox::binfmt::BINFMT_DIR);
    for stage in &plan.stages {
        let sp = stage.platform.to_oci();
        let Some(step) = stage
            .steps
            .iter()
            .find(|s| matches!(s.kind, crate::plan::StepKind::Run(_)))
        else {
            continue;
        };
        if let Err(why) = crate::sandbox::binfmt::emulator(dir, &sp) {
            return Err(BakeError::Build {
                target: target.to_string(),
                platform: opts.platform.to_string(),
                source: Box::new(crate::builder::Error::Sandbox {
                    file: opts.dockerfile.display().to_string(),
                    line: step.position.line,
                    col: step.position.col,
                    instruction: step.name.clone(),
                    source: Box::new(crate::sandbox::SandboxError::NoEmulator {
                        platform: sp.to_string(),
                        host: host.to_string(),
                        why,
                    }),
                }),
            });
        }
    }
    Ok(())
}

/// Builds `images` (one per platform, blobs in the store) into an OCI index and stores it.
pub fn store_index(
    store: &Store,
    images: &[Image],
    annotations: &BTreeMap<String, String>,
) -> Result<(Descriptor, Vec<u8>), crate::store::Error> {
    let mut index = Index::new();
    index.annotations = annotations.clone();
    index
        .manifests
        .extend(images.iter().map(Image::index_entry));
    let bytes = oci::to_canonical_json(&index);
    let digest = store.put_bytes(&bytes)?;
    Ok((
        Descriptor::new(MediaType::OciIndex, digest, bytes.len() as u64),
        bytes,
    ))
}

/// Pushes an index: each image by digest, then the index under `reference` unless the
/// registry already has it there. Returns whether the index manifest was uploaded.
pub fn push_index(
    store: &Store,
    remote: &transport::Remote,
    images: &[Image],
    index: &Descriptor,
    bytes: &[u8],
    reference: &str,
) -> Result<bool, (String, PushFailure)> {
    let r = Reference::parse(reference)
        .map_err(|e| (reference.to_string(), PushFailure::Registry(Box::new(e))))?;
    if current(remote, &r, &index.digest) {
        return Ok(false);
    }
    for img in images {
        let by_digest = r.with_digest(img.digest().clone()).to_string();
        if current(remote, &r.with_digest(img.digest().clone()), img.digest()) {
            continue;
        }
        transport::write_from_store(
            store,
            img,
            &Target::Registry(by_digest.clone()),
            None,
            Some(remote),
        )
        .map_err(|e| (by_digest, PushFailure::Transport(Box::new(e))))?;
    }
    remote
        .client
        .put_manifest(&r, bytes, &index.media_type)
        .map_err(|e| (reference.to_string(), PushFailure::Registry(Box::new(e))))?;
    Ok(true)
}

/// Why [`push_index`] failed.
#[derive(Debug)]
pub enum PushFailure {
    /// Writing an image.
    Transport(Box<transport::Error>),
    /// A registry request.
    Registry(Box<crate::registry::Error>),
}

/// Whether the registry has `r` pointing at `digest` already.
fn current(remote: &transport::Remote, r: &Reference, digest: &Digest) -> bool {
    matches!(remote.client.head_manifest(r), Ok(Some(d)) if &d.digest == digest)
}

/// Runs the bake.
pub fn bake(
    store: &Store,
    opts: &BakeOptions,
    reporter: &dyn Reporter,
) -> Result<BakeResult, BakeError> {
    if (opts.push || opts.push_by_digest) && opts.build.remote.is_none() {
        return Err(BakeError::NoRemote);
    }
    let mut targets = BTreeMap::new();
    let mut lints = Vec::new();
    for t in &opts.plan.targets {
        reporter.on_status(&format!("bake: target `{}`", t.name));
        let (baked, findings) = bake_one(store, opts, t, reporter)?;
        for f in &findings {
            reporter.on_warning(&format!("{} [{}]", f.message, f.rule));
        }
        lints.extend(findings);
        targets.insert(t.name.clone(), baked);
    }
    if opts.strict && !lints.is_empty() {
        return Err(BakeError::Lint { findings: lints });
    }
    Ok(BakeResult {
        version: opts.plan.version.clone(),
        revision: opts.plan.git.sha.clone(),
        created: opts.plan.created.clone(),
        targets,
        lints,
    })
}

fn bake_one(
    store: &Store,
    opts: &BakeOptions,
    t: &PlannedTarget,
    reporter: &dyn Reporter,
) -> Result<(BakedTarget, Vec<Finding>), BakeError> {
    let platforms = t.platform_list();
    let multi = platforms.len() > 1;
    let mut images = Vec::new();
    let mut records = Vec::new();
    let mut findings = Vec::new();
    let mut builds = Vec::new();
    for p in &platforms {
        let mut b = opts.build.clone();
        b.context = t.context.clone();
        b.dockerfile = t.dockerfile.clone();
        // With several platforms the index, not an image, carries the names.
        b.tags = if multi { Vec::new() } else { t.tags.clone() };
        b.build_args = t.build_args.clone();
        b.target = t.stage.clone();
        b.platform = p.clone();
        b.outputs = Vec::new();
        b.labels = t.labels.clone();
        b.default_labels = t.default_labels.clone();
        b.annotations = t.annotations.clone();
        if let Some(c) = opts.caches.get(&(t.name.clone(), p.to_string())) {
            b.cache_to = c.to.clone();
            b.cache_from = c.from.clone();
        }
        // Every platform is checked before anything is built.
        check_emulation(&b, &t.name)?;
        builds.push((p, b));
    }
    let attest = crate::ops::AttestOptions {
        sbom: t.attest.sbom,
        provenance: t.attest.provenance,
    };
    let mut attestations = Vec::new();
    for (p, b) in builds {
        let outcome = crate::builder::build(store, &b, reporter).map_err(|e| BakeError::Build {
            target: t.name.clone(),
            platform: p.to_string(),
            source: Box::new(e),
        })?;
        let f = lint::check(&t.name, &outcome.image, &t.required_labels, t.size_budget);
        for x in f {
            if !findings.contains(&x) {
                findings.push(x);
            }
        }
        if attest.any() {
            let err = |source| BakeError::Attest {
                target: t.name.clone(),
                source: Box::new(source),
            };
            let facts = crate::ops::attest::target_facts(&opts.provenance, t, &b).map_err(err)?;
            let mut named = outcome.clone();
            named.names = t.tags.clone();
            let layers = transport::LayerSource::new(store, b.remote.as_ref());
            let a = crate::ops::attest_image(store, layers, &named, &facts, &attest, b.epoch)
                .map_err(err)?;
            for w in &a.warnings {
                reporter.on_warning(&format!("{}: sbom: {w}", t.name));
            }
            attestations.push(a.manifest);
        }
        records.push(PlatformImage {
            platform: p.to_string(),
            digest: outcome.image.digest().clone(),
            size: outcome.image.size(),
            steps: outcome.steps,
        });
        images.push(outcome.image);
    }
    let (top, index_bytes) = if !attestations.is_empty() {
        // With attestations, an index even for one platform (as buildx writes it).
        let (d, all) = crate::attest::manifest::index_with_attestations(
            store,
            &images,
            &attestations,
            &t.annotations,
        )?;
        for tag in &t.tags {
            store.tag(tag, &d)?;
        }
        let bytes = store.read_blob(&d.digest)?;
        images = all;
        (d, Some(bytes))
    } else if multi {
        let (d, bytes) = store_index(store, &images, &t.annotations)?;
        for tag in &t.tags {
            store.tag(tag, &d)?;
        }
        (d, Some(bytes))
    } else {
        (images[0].descriptor.clone(), None)
    };
    let mut pushed = Vec::new();
    let mut up_to_date = Vec::new();
    if opts.push_by_digest {
        let remote = opts.build.remote.as_ref().ok_or(BakeError::NoRemote)?;
        for img in &images {
            let r = format!("{}@{}", t.repository, img.digest());
            let uploaded =
                push_image(remote, store, img, &r).map_err(|source| BakeError::Write {
                    target: t.name.clone(),
                    dest: format!("docker://{r}"),
                    source: Box::new(source),
                })?;
            if !uploaded {
                up_to_date.push(r.clone());
            }
            pushed.push(r);
        }
    } else if opts.push {
        let remote = opts.build.remote.as_ref().ok_or(BakeError::NoRemote)?;
        for tag in &t.tags {
            let uploaded =
                match &index_bytes {
                    Some(bytes) => push_index(store, remote, &images, &top, bytes, tag).map_err(
                        |(dest, f)| match f {
                            PushFailure::Transport(source) => BakeError::Write {
                                target: t.name.clone(),
                                dest,
                                source,
                            },
                            PushFailure::Registry(source) => BakeError::Registry {
                                target: t.name.clone(),
                                reference: dest,
                                source,
                            },
                        },
                    )?,
                    None => push_image(remote, store, &images[0], tag).map_err(|source| {
                        BakeError::Write {
                            target: t.name.clone(),
                            dest: format!("docker://{tag}"),
                            source: Box::new(source),
                        }
                    })?,
                };
            pushed.push(tag.clone());
            if !uploaded {
                up_to_date.push(tag.clone());
            }
        }
    }
    let cached = records.iter().all(|r| r.steps.iter().all(|s| s.cached));
    Ok((
        BakedTarget {
            digest: top.digest.clone(),
            media_type: top.media_type.to_string(),
            tags: t.tags.clone(),
            platforms: t.platforms.clone(),
            size: records.iter().map(|r| r.size).sum(),
            cached,
            pushed,
            up_to_date,
            images: records,
        },
        findings,
    ))
}

/// Pushes one image under `tag` unless the registry has that tag at this digest already.
pub(super) fn push_image(
    remote: &transport::Remote,
    store: &Store,
    image: &Image,
    tag: &str,
) -> Result<bool, transport::Error> {
    if let Ok(r) = Reference::parse(tag) {
        if current(remote, &r, image.digest()) {
            return Ok(false);
        }
    }
    transport::write_from_store(
        store,
        image,
        &Target::Registry(tag.to_string()),
        None,
        Some(remote),
    )?;
    Ok(true)
}

/// What `build_platforms` attests of each platform's image: the statements asked for, and what
/// provenance records of the build.
#[derive(Clone, Copy)]
pub struct PlatformAttestations<'a> {
    /// `--sbom`, `--provenance`.
    pub options: &'a crate::ops::AttestOptions,
    /// The build's parameters for provenance (images, URLs and steps come from each outcome).
    pub facts: &'a crate::attest::provenance::Facts,
}

/// `kiln build --platform A,B`: one image per platform, then an OCI index named by
/// `opts.tags` in the store and, for `docker://` outputs, pushed. Returns the index
/// descriptor and each platform's image (with `attest`, every manifest of the index:
/// the images, then their attestation manifests).
pub fn build_platforms(
    store: &Store,
    opts: &BuildOptions,
    platforms: &[Platform],
    reporter: &dyn Reporter,
    attest: Option<PlatformAttestations<'_>>,
) -> Result<(Descriptor, Vec<Image>), BakeError> {
    let target = opts.dockerfile.display().to_string();
    let mut builds = Vec::new();
    for p in platforms {
        let mut b = opts.clone();
        b.platform = p.clone();
        b.tags = Vec::new();
        b.outputs = Vec::new();
        // Every platform is checked before anything is built.
        check_emulation(&b, &target)?;
        builds.push((p, b));
    }
    let mut images = Vec::new();
    let mut attestations = Vec::new();
    for (p, b) in builds {
        reporter.on_status(&format!("build: {p}"));
        let labelled = crate::progress::PlatformSteps {
            inner: reporter,
            platform: p.to_string(),
        };
        let outcome =
            crate::builder::build(store, &b, &labelled).map_err(|e| BakeError::Build {
                target: opts.dockerfile.display().to_string(),
                platform: p.to_string(),
                source: Box::new(e),
            })?;
        if let Some(a) = &attest {
            let err = |source| BakeError::Attest {
                target: target.clone(),
                source: Box::new(source),
            };
            let mut named = outcome.clone();
            named.names = opts.tags.clone();
            let layers = transport::LayerSource::new(store, b.remote.as_ref());
            let made = crate::ops::attest_image(store, layers, &named, a.facts, a.options, b.epoch)
                .map_err(err)?;
            for w in &made.warnings {
                reporter.on_warning(&format!("{p}: sbom: {w}"));
            }
            attestations.push(made.manifest);
        }
        images.push(outcome.image);
    }
    // With attestations, each platform's attestation manifest follows the images in the index,
    // as buildx lays them out; the images returned are then every manifest of the index.
    let (desc, bytes) = if attestations.is_empty() {
        store_index(store, &images, &opts.annotations)?
    } else {
        let (d, all) = crate::attest::manifest::index_with_attestations(
            store,
            &images,
            &attestations,
            &opts.annotations,
        )?;
        images = all;
        let bytes = store.read_blob(&d.digest)?;
        (d, bytes)
    };
    for t in &opts.tags {
        store.tag(t, &desc)?;
    }
    for out in &opts.outputs {
        let target = opts.dockerfile.display().to_string();
        match out {
            Target::Registry(r) => {
                let remote = opts.remote.as_ref().ok_or(BakeError::NoRemote)?;
                push_index(store, remote, &images, &desc, &bytes, r).map_err(
                    |(dest, f)| match f {
                        PushFailure::Transport(source) => BakeError::Write {
                            target: target.clone(),
                            dest,
                            source,
                        },
                        PushFailure::Registry(source) => BakeError::Registry {
                            target: target.clone(),
                            reference: dest,
                            source,
                        },
                    },
                )?;
            }
            Target::Store(n) => store.tag(n, &desc)?,
            other => {
                return Err(BakeError::Write {
                    target,
                    dest: other.to_string(),
                    source: Box::new(transport::Error::Unsupported {
                        value: other.to_string(),
                        transport: "multi-platform output (use docker:// or the store)".into(),
                    }),
                })
            }
        }
    }
    Ok((desc, images))
}
