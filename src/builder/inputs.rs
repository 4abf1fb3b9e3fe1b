//! What a build reads before its first step: the Dockerfile ([`Frontend`]), the plan with the
//! base images' configs, the context and its ignore rules, and the content digest of every
//! step input (context files, `ADD` URLs, images) that the cache keys need.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::cache::{self, ContextItem, FileIndex};
use crate::dockerfile::ignore::{read_ignore_file, Ignore};
use crate::dockerfile::suggest::suggest;
use crate::dockerfile::{self, Dockerfile, Position};
use crate::image::Image;
use crate::oci::Platform;
use crate::plan::{self, BaseConfig, BuildPlan, Input, PlanOptions, Source, StageId, StepKind};
use crate::progress::{Reporter, Status, Task};
use crate::store::Store;
use crate::transport::{self, read_base_into_store, Target};

use super::context::Context;
use super::copy::CopyError;
use super::error::{Error, Result, StepError};
use super::fetch::{self, Fetched};
use super::BuildOptions;

/// What every part of a build before its first step reads: the store, the options, and the
/// Dockerfile's name as messages give it.
#[derive(Clone, Copy)]
pub(super) struct Env<'a> {
    pub(super) store: &'a Store,
    pub(super) opts: &'a BuildOptions,
    pub(super) file: &'a str,
    /// Where the reading is reported (BuildKit's `[internal]` steps).
    pub(super) reporter: &'a dyn Reporter,
}

impl<'a> Env<'a> {
    /// The layers of the store, lazy ones fetched through the build's registry.
    pub(super) fn layers(&self) -> transport::LayerSource<'a> {
        transport::LayerSource::new(self.store, self.opts.remote.as_ref())
    }
}

/// The Dockerfile, read, parsed and typed.
pub(super) struct Frontend {
    /// Its name in messages.
    pub(super) file: String,
    /// Its text (for rendering errors with the source line).
    pub(super) source: String,
    /// Its instructions.
    pub(super) dockerfile: Dockerfile,
}

impl Frontend {
    /// Reads `opts.dockerfile` and checks that the context is a readable directory.
    pub(super) fn read(opts: &BuildOptions) -> Result<Frontend> {
        let file = opts.dockerfile.display().to_string();
        let bytes = std::fs::read(&opts.dockerfile).map_err(|source| Error::Dockerfile {
            path: opts.dockerfile.clone(),
            source,
        })?;
        std::fs::read_dir(&opts.context).map_err(|source| Error::Context {
            path: opts.context.clone(),
            source,
        })?;
        let src = String::from_utf8_lossy(&bytes).into_owned();
        let ast = dockerfile::parse_bytes(&bytes).map_err(|e| Error::Frontend {
            rendered: e.with_file(&file).render(&src),
        })?;
        let dockerfile = dockerfile::instructions(&ast).map_err(|e| Error::Frontend {
            rendered: e.with_file(&file).render(&ast.source),
        })?;
        Ok(Frontend {
            file,
            source: ast.source.clone(),
            dockerfile,
        })
    }

    fn render(&self, e: plan::PlanError) -> Error {
        Error::Frontend {
            rendered: e.with_file(&self.file).render(&self.source),
        }
    }
}

/// Reads a base or `--from` image: a store name, `oci:`, `oci-archive:`, `docker-archive:`,
/// `docker://`; a name that is not in the store is pulled from its registry when one is
/// configured (the local store wins, so air-gapped builds never reach for the network). A name
/// the store holds as one image of another platform (pulled earlier for that platform: a pull
/// names the platform's image) is pulled again for this one, and the name keeps its image; if
/// that pull fails, the error says the store has another platform's image (rather than building
/// on it and labelling the result with the wrong platform). Without a registry client (library
/// use, unit tests) the local image is taken whatever its platform.
///
/// With `pull` (`--pull`), a name with a tag is resolved against its registry even when the
/// store has it, as BuildKit's `ResolveMode` `pull` does: a tag that moved gives the new image
/// (and the store's name follows it); one that did not costs the manifest request (config and
/// layers are the store's, or lazy). A name with a digest is never resolved again. Without
/// it the store's copy wins, as with buildx's `docker` driver (Docker Engine's image store,
/// preferred locally); BuildKit itself (`docker-container` driver) asks the registry on every
/// build in its `default` mode and falls back to an image store only when that fails
/// (`util/resolver/pool.go` `Resolver.Resolve`), which would make offline builds reach out.
fn load_image(
    store: &Store,
    reference: &str,
    platform: &Platform,
    remote: Option<&transport::Remote>,
    pull: bool,
) -> std::result::Result<Image, transport::Error> {
    let target: Target = reference.parse()?;
    if let Target::Store(name) = &target {
        let by_tag =
            crate::registry::Reference::parse(reference).is_ok_and(|r| r.digest().is_none());
        if let (true, true, Some(remote)) = (pull, by_tag, remote) {
            let image = read_base_into_store(
                store,
                &Target::Registry(reference.to_string()),
                Some(platform),
                Some(remote),
            )?;
            let keeps_another_platform = store.resolve(name).is_ok()
                && read_base_into_store(store, &target, None, None)
                    .is_ok_and(|local| !local.platform().satisfies(platform));
            if !keeps_another_platform {
                if let Ok(r) = crate::registry::Reference::parse(reference) {
                    let _ = store.tag(&r.to_string(), &image.descriptor);
                }
            }
            return Ok(image);
        }
        let local = match store.resolve(name) {
            Ok(_) => Some(read_base_into_store(
                store,
                &target,
                Some(platform),
                remote,
            )?),
            Err(_) => None,
        };
        let pull = |remote: &transport::Remote| {
            read_base_into_store(
                store,
                &Target::Registry(reference.to_string()),
                Some(platform),
                Some(remote),
            )
        };
        return match (local, remote) {
            (Some(img), Some(remote)) if !img.platform().satisfies(platform) => {
                pull(remote).map_err(|e| transport::Error::NotFound {
                    location: format!("the local store at {}", store.root().display()),
                    wanted: format!("`{name}` for {platform}"),
                    available: format!(
                        " (it holds `{name}` for {}, and pulling the {platform} image failed: \
                         {e}; import one with `kiln import --platform {platform}` and join them \
                         with `kiln index create`)",
                        img.platform()
                    ),
                })
            }
            (Some(img), _) => Ok(img),
            (None, Some(remote)) => {
                let image = pull(remote)?;
                // Named as pulled, so `kiln images` shows it and gc keeps it.
                if let Ok(r) = crate::registry::Reference::parse(reference) {
                    let _ = store.tag(&r.to_string(), &image.descriptor);
                }
                Ok(image)
            }
            (None, None) => Err(transport::Error::NotFound {
                location: format!("the local store at {}", store.root().display()),
                wanted: format!("named `{name}`"),
                available: " (and no registry is configured; import it with `kiln import`, or name it as oci:, oci-archive:, docker-archive: or docker://)".into(),
            }),
        };
    }
    read_base_into_store(store, &target, Some(platform), remote)
}

fn base_config(img: &Image) -> BaseConfig {
    let c = &img.config.config;
    BaseConfig {
        env: c
            .env
            .iter()
            .flatten()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect(),
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        user: c.user.clone().filter(|u| !u.is_empty()),
        shell: c.shell.clone(),
        onbuild: c.on_build.clone().unwrap_or_default(),
    }
}

/// The Dockerfile with every stage a `--build-context` of its name replaces, as BuildKit's
/// dockerfile2llb does (the stage's own instructions are not run): `FROM NAME AS stage` becomes
/// `FROM <the named image> AS stage` with no steps.
fn named_stages<'f>(
    front: &'f Frontend,
    opts: &BuildOptions,
) -> Result<std::borrow::Cow<'f, Dockerfile>> {
    let replaced =
        |s: &dockerfile::instructions::Stage| s.name().and_then(|n| opts.named_contexts.get(n));
    if !front
        .dockerfile
        .stages
        .iter()
        .any(|s| replaced(s).is_some())
    {
        return Ok(std::borrow::Cow::Borrowed(&front.dockerfile));
    }
    let mut df = front.dockerfile.clone();
    for stage in &mut df.stages {
        match replaced(stage) {
            None => {}
            Some(super::NamedContext::Image(t)) => {
                stage.from.image = t.clone();
                stage.commands.clear();
            }
            Some(super::NamedContext::Dir(d)) => {
                let pos = stage.from_command.position;
                return Err(Error::Frontend {
                    rendered: format!(
                        "{}:{}:{}: --build-context {} is the directory `{}`, which cannot \
                         replace the stage of that name in kiln (give an image: \
                         docker-image:// or oci-layout://)",
                        front.file,
                        pos.line,
                        pos.col,
                        stage.name().unwrap_or(""),
                        d.display()
                    ),
                });
            }
        }
    }
    Ok(std::borrow::Cow::Owned(df))
}

/// The image a `--build-context` gives for `reference`, if one does. A directory context is
/// not a base image (kiln reads it with `COPY --from` only).
fn named_image(
    opts: &BuildOptions,
    reference: &str,
) -> std::result::Result<Option<String>, transport::Error> {
    match opts.named_context(reference) {
        None => Ok(None),
        Some(super::NamedContext::Image(t)) => Ok(Some(t.clone())),
        Some(super::NamedContext::Dir(d)) => Err(transport::Error::InvalidTarget {
            value: reference.to_string(),
            reason: format!(
                "--build-context {reference} is the directory `{}`: kiln reads a directory \
                 context with COPY --from={reference} only, not as a base image",
                d.display()
            ),
        }),
    }
}

/// The base images the planner asks for, as it meets each `FROM` (once per reference and
/// platform, as
/// BuildKit's `MetaResolver` answers dockerfile2llb): read from the store or pulled (lazily),
/// and kept for the build.
struct Bases<'a> {
    env: Env<'a>,
    images: BTreeMap<ImageKey, Image>,
}

/// Images by reference and platform: a base under its stage's platform (`os/arch[/variant]`),
/// a `--from` image under `""` (as the plan's `Input::Image` names them).
pub(super) type ImageKey = (String, String);

impl plan::BaseResolver for Bases<'_> {
    type Error = transport::Error;

    fn resolve(
        &mut self,
        reference: &str,
        platform: &plan::Platform,
        _position: Position,
    ) -> std::result::Result<Option<BaseConfig>, transport::Error> {
        let remote = self.env.opts.remote.as_ref();
        let named = named_image(self.env.opts, reference)?;
        // BuildKit's `[internal] load metadata for docker.io/library/debian:bookworm`.
        let shown = crate::registry::Reference::parse(reference)
            .map_or_else(|_| reference.to_string(), |r| r.to_string());
        let task = Task::start(
            self.env.reporter,
            "[internal]",
            &format!("load metadata for {shown}"),
        );
        let loaded = load_image(
            self.env.store,
            named.as_deref().unwrap_or(reference),
            &platform.to_oci(),
            remote,
            self.env.opts.pull,
        );
        let img = match loaded {
            Ok(img) => img,
            Err(e) => {
                task.failed(&e.to_string());
                return Err(e);
            }
        };
        task.done();
        let config = base_config(&img);
        self.images
            .insert((reference.to_string(), platform.to_string()), img);
        Ok(Some(config))
    }
}

/// The plan, made in one pass with the base images' configs, and every base and `--from`
/// image it names, fetched once (into the store, lazily from a registry).
pub(super) fn plan_with_bases(
    env: Env<'_>,
    front: &Frontend,
) -> Result<(BuildPlan, BTreeMap<ImageKey, Image>)> {
    let opts = env.opts;
    let popts = PlanOptions {
        build_args: opts.build_args.clone(),
        target: opts.target.clone(),
        target_platform: plan::Platform::from(&opts.platform),
        build_platform: plan::Platform::host(),
        network: match opts.network {
            crate::sandbox::Network::Default => None,
            crate::sandbox::Network::None => Some("none".into()),
            crate::sandbox::Network::Host => Some("host".into()),
        },
    };
    let mut bases = Bases {
        env,
        images: BTreeMap::new(),
    };
    let dockerfile = named_stages(front, opts)?;
    let plan = plan::plan(&dockerfile, &popts, &mut bases).map_err(|e| match e {
        plan::PlanFailure::Plan(e) => front.render(e),
        plan::PlanFailure::Base {
            position,
            reference,
            source,
            ..
        } => Error::Image {
            file: env.file.to_string(),
            line: position.line,
            col: position.col,
            reference,
            stage: None,
            source: Box::new(source),
        },
    })?;
    // `--from` images (the bases came with planning), fetched once.
    let mut images = bases.images;
    for stage in &plan.stages {
        let platform = stage.platform.to_oci();
        for (r, pos) in from_images(stage) {
            let key = (r.clone(), String::new());
            if images.contains_key(&key)
                || matches!(opts.named_context(&r), Some(super::NamedContext::Dir(_)))
            {
                continue;
            }
            let image_error = |e| Error::Image {
                file: env.file.to_string(),
                line: pos.line,
                col: pos.col,
                reference: r.clone(),
                stage: stage_like(front, &r),
                source: Box::new(e),
            };
            let named = named_image(opts, &r).map_err(image_error)?;
            let img = load_image(
                env.store,
                named.as_deref().unwrap_or(&r),
                &platform,
                opts.remote.as_ref(),
                opts.pull,
            )
            .map_err(image_error)?;
            images.insert(key, img);
        }
    }
    Ok((plan, images))
}

/// The stages `--no-cache-filter` names, as BuildKit's dockerfile2llb matches them (by name,
/// case-insensitively; a stage without a name cannot be named). A name no stage has is an
/// error with the closest stage name, rather than a filter that silently does nothing.
pub(super) fn no_cache_stages(opts: &BuildOptions, front: &Frontend) -> Result<BTreeSet<StageId>> {
    let stages = &front.dockerfile.stages;
    let mut out = BTreeSet::new();
    for name in &opts.no_cache_filter {
        let found = stages
            .iter()
            .position(|s| s.name().is_some_and(|n| n.eq_ignore_ascii_case(name)));
        match found {
            Some(id) => {
                out.insert(id);
            }
            None => {
                let names = stages.iter().filter_map(|s| s.name());
                return Err(Error::NoCacheFilter {
                    name: name.clone(),
                    suggestion: suggest(&name.to_ascii_lowercase(), names).map(str::to_string),
                });
            }
        }
    }
    Ok(out)
}

/// The stage whose name `reference` looks like a misspelling of, when it is a bare word (no
/// registry, path, tag or digest) that names no stage.
fn stage_like(front: &Frontend, reference: &str) -> Option<String> {
    if reference.contains(['/', ':', '.', '@']) {
        return None;
    }
    let names = front.dockerfile.stages.iter().filter_map(|s| s.name());
    suggest(&reference.to_lowercase(), names).map(String::from)
}

/// The images a stage's steps name, with where: `COPY --from=IMAGE` and
/// `RUN --mount=from=IMAGE` (regression: only COPY's images were fetched, so such a mount
/// failed with "image was not fetched").
fn from_images(stage: &plan::Stage) -> Vec<(String, Position)> {
    let mut refs: Vec<(String, Position)> = Vec::new();
    for step in &stage.steps {
        let sources: Vec<&Source> = match &step.kind {
            StepKind::Copy(c) => vec![&c.source],
            StepKind::Run(r) => r.mounts.iter().map(|m| &m.source).collect(),
            _ => Vec::new(),
        };
        for s in sources {
            if let Source::Image { reference } = s {
                refs.push((reference.clone(), step.position));
            }
        }
    }
    refs
}

/// The build context with its `.dockerignore` (or `<Dockerfile>.dockerignore`), reported as
/// BuildKit's `[internal] load .dockerignore` step.
pub(super) fn context(opts: &BuildOptions, reporter: &dyn Reporter) -> Result<Context> {
    let task = Task::start(reporter, "[internal]", "load .dockerignore");
    let r = read_context(opts);
    match &r {
        Ok((_, size)) => {
            task.status(&Status::bytes("transferring context:", *size, 0, true));
            task.done();
        }
        Err(e) => task.failed(&e.to_string()),
    }
    r.map(|(c, _)| c)
}

fn read_context(opts: &BuildOptions) -> Result<(Context, u64)> {
    let ignore_text =
        read_ignore_file(&opts.dockerfile, &opts.context).map_err(|source| Error::Context {
            path: opts.context.clone(),
            source,
        })?;
    let ignore = match &ignore_text {
        Some((path, text)) => Ignore::parse(text).map_err(|e| Error::Frontend {
            rendered: format!("{}: {e}", path.display()),
        })?,
        None => Ignore::default(),
    };
    let size = ignore_text.as_ref().map_or(0, |(_, t)| t.len() as u64);
    Ok((Context::new(opts.context.clone(), ignore), size))
}

/// The content digests of the plan's inputs, and the `ADD` URLs downloaded to compute them.
pub(super) struct Gathered {
    digests: Vec<(Input, String)>,
    /// url → (blob path, download).
    pub(super) urls: BTreeMap<String, (PathBuf, Fetched)>,
    /// `ADD` git URL → its checkout.
    pub(super) gits: BTreeMap<String, super::gitsrc::GitSource>,
    /// Whether any step reads the context, and the size of the files it reads.
    pub(super) context: Option<u64>,
}

impl Gathered {
    /// The digest of `input`, if it has one.
    pub(super) fn digest(&self, input: &Input) -> Option<String> {
        self.digests
            .iter()
            .find(|(k, _)| k == input)
            .map(|(_, d)| d.clone())
    }
}

/// Hashes every context input, downloads every `ADD` URL, and takes every image's digest.
pub(super) fn gather(
    env: Env<'_>,
    plan: &BuildPlan,
    images: &BTreeMap<ImageKey, Image>,
    ctx: &Context,
    files: &mut FileIndex,
) -> Result<Gathered> {
    let opts = env.opts;
    let mut out = Gathered {
        digests: Vec::new(),
        urls: BTreeMap::new(),
        gits: BTreeMap::new(),
        context: None,
    };
    for stage in &plan.stages {
        for step in &stage.steps {
            for input in &step.inputs {
                if out.digests.iter().any(|(i, _)| i == input) {
                    continue;
                }
                let fail = |e: StepError| Error::step(env.file, step, e);
                let d = match input {
                    Input::Context { paths, excludes } => {
                        let (d, size) = context_digest(ctx, paths, excludes, opts.epoch, files)
                            .map_err(fail)?;
                        *out.context.get_or_insert(0) += size;
                        d
                    }
                    Input::Url { url } => {
                        let speed = opts
                            .remote
                            .as_ref()
                            .map_or_else(Default::default, |r| r.client.options().speed);
                        let f = fetch::fetch(env.store, url, speed).map_err(|e| fail(e.into()))?;
                        let d = f.digest.to_string();
                        out.urls
                            .insert(url.clone(), (env.store.blob_path(&f.digest), f));
                        d
                    }
                    // The commit is the input: a moved branch rebuilds, the same commit hits.
                    Input::Git { url } => {
                        let g = super::gitsrc::fetch(env.store, opts, url).map_err(fail)?;
                        let d = format!("git:{}", g.commit);
                        out.gits.insert(url.clone(), g);
                        d
                    }
                    Input::Image { reference, .. }
                        if matches!(
                            opts.named_context(reference),
                            Some(super::NamedContext::Dir(_))
                        ) =>
                    {
                        let Some(super::NamedContext::Dir(dir)) = opts.named_context(reference)
                        else {
                            continue;
                        };
                        let named = Context::new(dir.clone(), Ignore::default());
                        let paths = [String::from(".")];
                        context_digest(&named, &paths, &[], opts.epoch, files)
                            .map_err(fail)?
                            .0
                    }
                    Input::Image {
                        reference,
                        platform,
                    } => match images.get(&(reference.clone(), platform.clone())) {
                        Some(img) => img.digest().to_string(),
                        None => continue,
                    },
                    _ => continue,
                };
                out.digests.push((input.clone(), d));
            }
        }
        for input in &stage.base_inputs {
            if let Input::Image {
                reference,
                platform,
            } = input
            {
                if let Some(img) = images.get(&(reference.clone(), platform.clone())) {
                    out.digests.push((input.clone(), img.digest().to_string()));
                }
            }
        }
    }
    Ok(out)
}

/// The digest of what a context input reads (see `crate::cache` for what it covers), hashed
/// as the files are listed, one source at a time.
fn context_digest(
    ctx: &Context,
    paths: &[String],
    excludes: &[String],
    epoch: i64,
    files: &mut FileIndex,
) -> Result<(String, u64), StepError> {
    use super::context::FileKind;
    let excl = Ignore::parse(&excludes.join("\n"))
        .map_err(|e| CopyError::Other(format!("invalid --exclude: {e}")))?;
    let mut digest = cache::ContextDigest::default();
    let mut size = 0;
    for p in paths {
        if p.starts_with("http://") || p.starts_with("https://") {
            continue;
        }
        for (name, resolved) in ctx.expand(p)? {
            for f in ctx.collect(&resolved, &excl)? {
                let st = &f.st;
                let (kind, sha, link) = match st.kind {
                    FileKind::File => {
                        let abs = ctx.path_of(&resolved, &f.rel);
                        (
                            'f',
                            files.hash(&abs, &st.file, st.nlink.into())?,
                            String::new(),
                        )
                    }
                    FileKind::Dir => ('d', [0; 32], String::new()),
                    FileKind::Symlink => {
                        let abs = ctx.path_of(&resolved, &f.rel);
                        let t = std::fs::read_link(&abs).map_err(StepError::io("read", &abs))?;
                        ('l', [0; 32], t.to_string_lossy().into_owned())
                    }
                    _ => ('s', [0; 32], String::new()),
                };
                let file_size = if kind == 'f' { st.file.size } else { 0 };
                size += file_size;
                digest.push(&ContextItem {
                    path: format!("{p}\0{name}\0{}", f.rel),
                    kind,
                    mode: st.mode,
                    size: file_size,
                    mtime: st.file.mtime.0.min(epoch),
                    link,
                    sha256: sha,
                });
            }
            // A later source that lists the same files finds them.
            files.settle();
        }
    }
    Ok((digest.finish(), size))
}
