//! What a build reads before its first step: the Dockerfile ([`Frontend`]), the plan with the
//! base images' configs, the context and its ignore rules, and the content digest of every
//! step input (context files, `ADD` URLs, images) that the cache keys need.
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::cache::{self, ContextItem, FileIndex};
use crate::dockerfile::ignore::{read_ignore_file, Ignore};
use crate::dockerfile::{self, Dockerfile, Position};
use crate::image::Image;
use crate::oci::Platform;
use crate::plan::{self, BaseConfig, BuildPlan, Input, PlanOptions, Source, StepKind};
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
fn load_image(
    store: &Store,
    reference: &str,
    platform: &Platform,
    remote: Option<&transport::Remote>,
) -> std::result::Result<Image, transport::Error> {
    let target: Target = reference.parse()?;
    if let Target::Store(name) = &target {
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
        // BuildKit's `[internal] load metadata for docker.io/library/debian:bookworm`.
        let shown = crate::registry::Reference::parse(reference)
            .map_or_else(|_| reference.to_string(), |r| r.to_string());
        let task = Task::start(
            self.env.reporter,
            "[internal]",
            &format!("load metadata for {shown}"),
        );
        let img = match load_image(self.env.store, reference, &platform.to_oci(), remote) {
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
    let plan = plan::plan(&front.dockerfile, &popts, &mut bases).map_err(|e| match e {
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
            if images.contains_key(&key) {
                continue;
            }
            let img = load_image(env.store, &r, &platform, opts.remote.as_ref()).map_err(|e| {
                Error::Image {
                    file: env.file.to_string(),
                    line: pos.line,
                    col: pos.col,
                    reference: r.clone(),
                    stage: stage_like(front, &r),
                    source: Box::new(e),
                }
            })?;
            images.insert(key, img);
        }
    }
    Ok((plan, images))
}

/// The stage whose name `reference` looks like a misspelling of, when it is a bare word (no
/// registry, path, tag or digest) that names no stage.
fn stage_like(front: &Frontend, reference: &str) -> Option<String> {
    if reference.contains(['/', ':', '.', '@']) {
        return None;
    }
    let names = front.dockerfile.stages.iter().filter_map(|s| s.name());
    crate::dockerfile::suggest::suggest(&reference.to_lowercase(), names).map(String::from)
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

/// The digest of what a context input reads (see `crate::cache` for what it covers).
fn context_digest(
    ctx: &Context,
    paths: &[String],
    excludes: &[String],
    epoch: i64,
    files: &mut FileIndex,
) -> Result<(String, u64), StepError> {
    use std::os::unix::fs::MetadataExt;
    let excl = Ignore::parse(&excludes.join("\n"))
        .map_err(|e| CopyError::Other(format!("invalid --exclude: {e}")))?;
    let mut items = Vec::new();
    for p in paths {
        if p.starts_with("http://") || p.starts_with("https://") {
            continue;
        }
        for (name, resolved) in ctx.expand(p)? {
            for f in ctx.collect(&resolved, &excl)? {
                let ft = f.md.file_type();
                let (kind, sha, link) = if ft.is_file() {
                    ('f', files.hash(&f.abs, &f.md)?, String::new())
                } else if ft.is_dir() {
                    ('d', [0; 32], String::new())
                } else if ft.is_symlink() {
                    let t = std::fs::read_link(&f.abs).map_err(StepError::io("read", &f.abs))?;
                    ('l', [0; 32], t.to_string_lossy().into_owned())
                } else {
                    ('s', [0; 32], String::new())
                };
                items.push(ContextItem {
                    path: format!("{p}\0{name}\0{}", f.rel),
                    kind,
                    mode: f.md.mode() & 0o7777,
                    size: if ft.is_file() { f.md.len() } else { 0 },
                    mtime: f.md.mtime().min(epoch),
                    link,
                    sha256: sha,
                });
            }
        }
    }
    let size = items.iter().map(|i| i.size).sum();
    Ok((cache::context_digest(&items), size))
}
