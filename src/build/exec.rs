//! The build loop: plan (base images fetched as the planner asks for them), fetch `--from`
//! images, hash inputs, compute the cache keys, then each stage's steps in order.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cache::{self, CachedLayer, ContextItem, FileIndex, LayerCache};
use crate::dockerfile::ignore::{read_ignore_file, Ignore};
use crate::dockerfile::{self, Position};
use crate::image::Image;
use crate::layer::{Entry, LayerOptions, LayerWriter};
use crate::oci::{self, Descriptor, ImageConfig, Platform};
use crate::plan::{
    self, Base, BaseConfig, ConfigEdit, Input, PlanOptions, RunStep, Source, Stage, StageId,
    StepKind,
};
use crate::progress::Reporter;
use crate::sandbox::{self, RunSpec, Sandbox, Snapshot, SnapshotterKind};
use crate::store::Store;
use crate::transport::{self, read_base_into_store, write_from_store, Target};

use super::context::Context;
use super::copy::{copy_entries, parse_chmod, CopyInput, SourceFs};
use super::fsindex::{FsIndex, NodeKind};
use super::run::{self, RunHost};
use super::state::{comment, StageState};
use super::user::resolve_owner;
use super::{BuildOptions, BuildOutcome, Error, Result, StepRecord};

struct Ctx<'a> {
    store: &'a Store,
    opts: &'a BuildOptions,
    file: String,
    reporter: &'a dyn Reporter,
    /// The second the build began: a file in a step's diff with an mtime at or after it was
    /// written with the clock by this build (by the step, or by an earlier one whose layer gave
    /// it the epoch while the walk snapshotter's tree kept the real time).
    started: i64,
    /// The plan's cache keys, once the input digests are known.
    keys: plan::CacheKeys,
}

impl Ctx<'_> {
    fn step_err(&self, pos: Position, instruction: &str, message: impl Into<String>) -> Error {
        Error::Step {
            file: self.file.clone(),
            line: pos.line,
            col: pos.col,
            instruction: instruction.to_string(),
            message: message.into(),
        }
    }
}

/// Reads a base or `--from` image: a store name, `oci:`, `oci-archive:`, `docker-archive:`,
/// `docker://`; a name that is not in the store is pulled from its registry when one is
/// configured (the local store wins, so air-gapped builds never reach for the network).
fn load_image(
    store: &Store,
    reference: &str,
    platform: &Platform,
    remote: Option<&transport::Remote>,
) -> std::result::Result<Image, transport::Error> {
    let target: Target = reference.parse()?;
    if let Target::Store(name) = &target {
        if store.resolve(name).is_err() {
            return match remote {
                Some(_) => {
                    let image = read_base_into_store(store, &Target::Registry(reference.to_string()), Some(platform), remote)?;
                    // Named as pulled, so `kiln images` shows it and gc keeps it.
                    if let Ok(r) = crate::registry::Reference::parse(reference) {
                        let _ = store.tag(&r.to_string(), &image.descriptor);
                    }
                    Ok(image)
                }
                None => Err(transport::Error::NotFound {
                    location: format!("the local store at {}", store.root().display()),
                    wanted: format!("named `{name}`"),
                    available: " (and no registry is configured; import it with `kiln import`, or name it as oci:, oci-archive:, docker-archive: or docker://)".into(),
                }),
            };
        }
    }
    read_base_into_store(store, &target, Some(platform), remote)
}

/// The base images the planner asks for: each read (or pulled) once, and kept for the build.
struct Bases<'a> {
    store: &'a Store,
    remote: Option<&'a transport::Remote>,
    images: BTreeMap<String, Image>,
}

impl plan::BaseResolver for Bases<'_> {
    type Error = transport::Error;

    fn resolve(
        &mut self,
        reference: &str,
        platform: &plan::Platform,
        _position: Position,
    ) -> std::result::Result<Option<BaseConfig>, transport::Error> {
        let img = load_image(self.store, reference, &platform.to_oci(), self.remote)?;
        let config = base_config(&img);
        self.images.insert(reference.to_string(), img);
        Ok(Some(config))
    }
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

/// Runs the build described by `opts`; the image ends in the store under its tags.
pub fn build(store: &Store, opts: &BuildOptions, reporter: &dyn Reporter) -> Result<BuildOutcome> {
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
    let df = dockerfile::instructions(&ast).map_err(|e| Error::Frontend {
        rendered: e.with_file(&file).render(&ast.source),
    })?;
    let build_platform = plan::Platform::host();
    let popts = PlanOptions {
        build_args: opts.build_args.clone(),
        target: opts.target.clone(),
        target_platform: plan::Platform::from(&opts.platform),
        build_platform,
        network: match opts.network {
            crate::sandbox::Network::Default => None,
            crate::sandbox::Network::None => Some("none".into()),
            crate::sandbox::Network::Host => Some("host".into()),
        },
    };
    let render = |e: plan::PlanError| Error::Frontend {
        rendered: e.with_file(&file).render(&ast.source),
    };
    // One planning pass: the planner asks `bases` for each base image's config as it meets it.
    let mut bases = Bases {
        store,
        remote: opts.remote.as_ref(),
        images: BTreeMap::new(),
    };
    let plan = plan::plan(&df, &popts, &mut bases).map_err(|e| match e {
        plan::PlanFailure::Plan(e) => render(e),
        plan::PlanFailure::Base {
            position,
            reference,
            source,
            ..
        } => Error::Image {
            file: file.clone(),
            line: position.line,
            col: position.col,
            reference,
            source: Box::new(source),
        },
    })?;
    let mut cx = Ctx {
        store,
        opts,
        file: file.clone(),
        reporter,
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        keys: plan::CacheKeys::default(),
    };

    // `--from` images (bases came with planning), fetched once.
    let mut images = bases.images;
    for stage in &plan.stages {
        let platform = stage.platform.to_oci();
        let mut refs: Vec<(String, Position)> = Vec::new();
        for step in &stage.steps {
            if let StepKind::Copy(c) = &step.kind {
                if let Source::Image { reference } = &c.source {
                    refs.push((reference.clone(), step.position));
                }
            }
            // `RUN --mount=from=IMAGE` (regression: only COPY's images were fetched, so such
            // a mount failed with "image was not fetched").
            if let StepKind::Run(r) = &step.kind {
                for pm in &r.mounts {
                    if let Source::Image { reference } = &pm.source {
                        refs.push((reference.clone(), step.position));
                    }
                }
            }
        }
        for (r, pos) in refs {
            if images.contains_key(&r) {
                continue;
            }
            let img = load_image(store, &r, &platform, opts.remote.as_ref()).map_err(|e| {
                Error::Image {
                    file: file.clone(),
                    line: pos.line,
                    col: pos.col,
                    reference: r.clone(),
                    source: Box::new(e),
                }
            })?;
            images.insert(r, img);
        }
    }
    for w in &plan.warnings {
        reporter.on_warning(&format!(
            "{file}:{}:{}: {} [{}]",
            w.position.line, w.position.col, w.message, w.rule
        ));
    }

    // Context input digests, then the final cache keys.
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
    let ctx = Context::new(opts.context.clone(), ignore);
    let mut files = FileIndex::load(store);
    let mut digests: Vec<(Input, String)> = Vec::new();
    let mut urls: BTreeMap<String, (PathBuf, super::fetch::Fetched)> = BTreeMap::new();
    for stage in &plan.stages {
        for step in &stage.steps {
            for input in &step.inputs {
                if digests.iter().any(|(i, _)| i == input) {
                    continue;
                }
                let d = match input {
                    Input::Context { paths, excludes } => {
                        context_digest(&ctx, paths, excludes, opts.epoch, &mut files)
                            .map_err(|m| cx.step_err(step.position, &step.created_by, m))?
                    }
                    Input::Url { url } => {
                        let speed = opts
                            .remote
                            .as_ref()
                            .map_or_else(Default::default, |r| r.client.options().speed);
                        let f = super::fetch::fetch(store, url, speed)
                            .map_err(|m| cx.step_err(step.position, &step.created_by, m))?;
                        let d = f.digest.to_string();
                        urls.insert(url.clone(), (store.blob_path(&f.digest), f));
                        d
                    }
                    Input::Image { reference, .. } => match images.get(reference) {
                        Some(img) => img.digest().to_string(),
                        None => continue,
                    },
                    _ => continue,
                };
                digests.push((input.clone(), d));
            }
        }
        for input in &stage.base_inputs {
            if let Input::Image { reference, .. } = input {
                if let Some(img) = images.get(reference) {
                    digests.push((input.clone(), img.digest().to_string()));
                }
            }
        }
    }
    cx.keys = plan::CacheKeys::compute(&plan, &|i| {
        digests.iter().find(|(k, _)| k == i).map(|(_, d)| d.clone())
    });
    run::check_mounts(&plan, opts)
        .and_then(|()| run::check_network(&plan, opts))
        .map_err(|(line, col, instruction, message)| Error::Step {
            file: file.clone(),
            line,
            col,
            instruction,
            message,
        })?;

    // Execute.
    let scratch = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(store.root().join("tmp"))
        .map_err(|source| crate::store::Error::Io {
            action: "cannot create a scratch directory in",
            path: store.root().join("tmp"),
            source,
        })?;
    let cache = LayerCache::new(store);
    check_programs(&cx, &plan, &images, &cache)?;
    // RUN needs the sandbox: start it (and learn what this machine allows) before any step.
    let host = if run::has_run(&plan) {
        let first = plan
            .stages
            .iter()
            .flat_map(|s| s.steps.iter())
            .find(|s| matches!(s.kind, StepKind::Run(_)))
            .map(|s| (s.position, s.created_by.clone()))
            .unwrap_or((Position { line: 1, col: 1 }, String::new()));
        let h = run::start(opts, scratch.path(), run::has_default_network(&plan)).map_err(|e| {
            Error::Sandbox {
                file: file.clone(),
                line: first.0.line,
                col: first.0.col,
                instruction: first.1,
                source: Box::new(e),
            }
        })?;
        for w in &h.warnings {
            reporter.on_warning(&w.to_string());
        }
        Some(h)
    } else {
        None
    };
    let mut done: BTreeMap<StageId, StageState> = BTreeMap::new();
    let mut steps: Vec<StepRecord> = Vec::new();
    let mut counter = 0usize;
    let mut result = Ok(());
    for id in plan.order.clone() {
        let Some(stage) = plan.stage(id) else {
            continue;
        };
        match run_stage(
            &cx,
            stage,
            &images,
            &mut done,
            &ctx,
            &cache,
            scratch.path(),
            &mut steps,
            &mut counter,
            host.as_ref(),
            &urls,
        ) {
            Ok(state) => {
                done.insert(id, state);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    // Steps may have left files only a user namespace can delete (rootless RUN).
    if let Some(h) = &host {
        let _ = h.sandbox.remove_tree(scratch.path());
    }
    result?;
    files.save()?;
    let mut target = done.remove(&plan.target).ok_or_else(|| Error::Frontend {
        rendered: format!("{file}: the target stage was not built"),
    })?;
    let cfg = target.builder.config_mut();
    for (k, v) in &opts.labels {
        cfg.config.labels.insert(k.clone(), v.clone());
    }
    for (k, v) in &opts.default_labels {
        cfg.config
            .labels
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    let annotations: Vec<(String, String)> = opts
        .annotations
        .iter()
        .map(|(k, v)| match cfg.config.labels.get(k) {
            Some(label) if opts.default_labels.contains_key(k) => (k.clone(), label.clone()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    for (k, v) in &annotations {
        target.builder.annotate(k, v);
    }
    target.builder.created(opts.epoch);
    let image = target.builder.build();
    store.put_bytes(&image.raw_config)?;
    store.put_bytes(&image.raw_manifest)?;
    let mut names = Vec::new();
    for t in &opts.tags {
        store.tag(t, &image.descriptor)?;
        names.push(crate::store::normalize_name(t)?);
    }
    for o in &opts.outputs {
        reporter.on_status(&format!("writing {o}"));
        write_from_store(
            store,
            &image,
            o,
            names.first().map(String::as_str),
            opts.remote.as_ref(),
        )
        .map_err(|e| Error::Output(Box::new(e)))?;
    }
    Ok(BuildOutcome {
        image,
        names,
        layers: target.records,
        steps,
        context_files_hashed: files.files_hashed,
        context_files_reused: files.files_reused,
    })
}

/// The digest of what a context input reads (see `crate::cache` for what it covers).
fn context_digest(
    ctx: &Context,
    paths: &[String],
    excludes: &[String],
    epoch: i64,
    files: &mut FileIndex,
) -> std::result::Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let excl =
        Ignore::parse(&excludes.join("\n")).map_err(|e| format!("invalid --exclude: {e}"))?;
    let mut items = Vec::new();
    for p in paths {
        if p.starts_with("http://") || p.starts_with("https://") {
            continue;
        }
        for (name, resolved) in ctx.expand(p).map_err(|e| e.to_string())? {
            for f in ctx.collect(&resolved, &excl).map_err(|e| e.to_string())? {
                let ft = f.md.file_type();
                let (kind, sha, link) = if ft.is_file() {
                    (
                        'f',
                        files.hash(&f.abs, &f.md).map_err(|e| e.to_string())?,
                        String::new(),
                    )
                } else if ft.is_dir() {
                    ('d', [0; 32], String::new())
                } else if ft.is_symlink() {
                    let t = std::fs::read_link(&f.abs)
                        .map_err(|e| format!("cannot read `{}`: {e}", f.abs.display()))?;
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
    Ok(cache::context_digest(&items))
}

fn apply_config(cfg: &mut ImageConfig, edit: &ConfigEdit) {
    let c = &mut cfg.config;
    match edit {
        ConfigEdit::Env { pairs } => {
            let env = c.env.get_or_insert_with(Vec::new);
            for (k, v) in pairs {
                let kv = format!("{k}={v}");
                match env
                    .iter_mut()
                    .find(|e| e.split_once('=').map(|x| x.0) == Some(k.as_str()))
                {
                    Some(e) => *e = kv,
                    None => env.push(kv),
                }
            }
        }
        ConfigEdit::Label { pairs } => {
            for (k, v) in pairs {
                c.labels.insert(k.clone(), v.clone());
            }
        }
        ConfigEdit::Arg { .. } => {}
        ConfigEdit::Cmd { command } => c.cmd = Some(command.clone()),
        ConfigEdit::Entrypoint { command, reset_cmd } => {
            c.entrypoint = command.clone();
            // The planner decided: an ENTRYPOINT resets a CMD the stage inherited.
            if *reset_cmd {
                c.cmd = None;
            }
        }
        ConfigEdit::User { user } => c.user = Some(user.clone()),
        ConfigEdit::Expose { ports } => {
            for p in ports {
                c.exposed_ports.insert(p.clone(), serde_json::json!({}));
            }
        }
        ConfigEdit::Volume { paths } => {
            for p in paths {
                c.volumes.insert(p.clone(), serde_json::json!({}));
            }
        }
        ConfigEdit::StopSignal { signal } => c.stop_signal = Some(signal.clone()),
        ConfigEdit::Shell { shell } => c.shell = Some(shell.clone()),
        ConfigEdit::Healthcheck { check } => {
            use crate::dockerfile::instructions::Healthcheck as H;
            let nz = |v: i64| (v != 0).then_some(v);
            c.healthcheck = Some(match check {
                H::None => oci::Healthcheck {
                    test: vec!["NONE".into()],
                    ..Default::default()
                },
                H::Cmd {
                    test,
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                } => oci::Healthcheck {
                    test: test.clone(),
                    interval: nz(*interval),
                    timeout: nz(*timeout),
                    start_period: nz(*start_period),
                    start_interval: nz(*start_interval),
                    retries: nz(*retries),
                    ..Default::default()
                },
            });
        }
        ConfigEdit::Onbuild { expression } => c
            .on_build
            .get_or_insert_with(Vec::new)
            .push(expression.clone()),
        ConfigEdit::Maintainer { name } => cfg.author = Some(name.clone()),
    }
}

/// `e` and its causes, `: `-separated: a step error is a message, and "cannot write the layer"
/// alone would hide that the disk is full and where.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn write_entries(
    store: &Store,
    opts: &BuildOptions,
    entries: &[Entry],
) -> std::result::Result<(CachedLayer, crate::layer::LayerStats), crate::layer::Error> {
    let mut w = LayerWriter::new(
        store
            .blob_writer()
            .map_err(|e| crate::layer::Error::Write(std::io::Error::other(with_causes(&e))))?,
        LayerOptions {
            compression: opts.compression,
            threads: opts.threads,
            epoch: if opts.clamp_mtimes {
                opts.epoch
            } else {
                i64::MAX
            },
        },
    )?;
    for e in entries {
        w.append(e)?;
    }
    let (blob, summary) = w.finish()?;
    let (digest, size) = blob
        .finish()
        .map_err(|e| crate::layer::Error::Write(std::io::Error::other(with_causes(&e))))?;
    Ok((
        CachedLayer {
            descriptor: Descriptor::new(summary.media_type, digest, size),
            diff_id: summary.diff_id,
        },
        summary.stats,
    ))
}

#[allow(clippy::too_many_arguments)]
fn run_stage(
    cx: &Ctx<'_>,
    stage: &Stage,
    images: &BTreeMap<String, Image>,
    done: &mut BTreeMap<StageId, StageState>,
    ctx: &Context,
    cache: &LayerCache,
    scratch: &Path,
    steps: &mut Vec<StepRecord>,
    counter: &mut usize,
    host: Option<&RunHost>,
    urls: &BTreeMap<String, (PathBuf, super::fetch::Fetched)>,
) -> Result<StageState> {
    let sb = host.map(|h| &h.sandbox);
    let stage_name = stage
        .name
        .clone()
        .unwrap_or_else(|| format!("stage-{}", stage.id));
    let platform = stage.platform.to_oci();
    let mut state = match &stage.base {
        Base::Scratch => StageState::scratch(&platform),
        Base::Image { reference } => StageState::from_image(&images[reference]),
        Base::Stage { stage: parent } => {
            let mut s = done.get(parent).cloned().ok_or_else(|| Error::Frontend {
                rendered: format!(
                    "{}: stage {parent} was not built before stage {}",
                    cx.file, stage.id
                ),
            })?;
            s.rootfs = None;
            s.stack = None;
            s
        }
    };
    let store = cx.store;
    let opts = cx.opts;
    let total = stage.steps.len();
    // Images used by `COPY --from=<image>`, as stage states (for their index and files).
    let mut from_images: BTreeMap<String, StageState> = BTreeMap::new();
    for (i, step) in stage.steps.iter().enumerate() {
        *counter += 1;
        let id = *counter;
        let start = Instant::now();
        cx.reporter.on_step(
            id,
            &format!("[{stage_name} {}/{total}]", i + 1),
            &step.created_by,
        );
        let step_key = cx.keys.step(stage.id, i).unwrap_or_default();
        let key = step_layer_key(step_key, opts);
        let done_step = Done {
            stage: &stage_name,
            step,
            key: step_key,
        };
        let err = |m: String| cx.step_err(step.position, &step.created_by, m);
        let mut cached = false;
        if let StepKind::Workdir { path } = &step.kind {
            state.builder.config_mut().config.working_dir = Some(path.clone());
        }
        let hit = match &step.kind {
            StepKind::Config(_) => None,
            _ => (!opts.no_cache).then(|| cache.get(store, &key)).flatten(),
        };
        // Layer-making steps: a cache hit reuses the layer without reading anything; a miss
        // computes the entries, writes the layer and records it.
        let entries = match (&step.kind, hit) {
            (StepKind::Config(edit), _) => {
                apply_config(state.builder.config_mut(), edit);
                None
            }
            (_, Some(layer)) => {
                state.push(layer, &step.created_by, None, true, 0.0);
                continue_step(cx, id, done_step, true, start, steps);
                continue;
            }
            (StepKind::Workdir { path }, None) => {
                let user = state
                    .builder
                    .config_mut()
                    .config
                    .user
                    .clone()
                    .filter(|u| !u.is_empty());
                let index = state.index(store).map_err(err)?;
                let owner = match &user {
                    Some(u) => Some(resolve_owner(index, u).map_err(err)?),
                    None => None,
                };
                // An existing directory makes no layer.
                Some(workdir_entries(index, path, owner)).filter(|e| !e.is_empty())
            }
            (StepKind::Copy(c), None) => Some(
                copy_step(
                    cx,
                    c,
                    &mut state,
                    done,
                    &mut from_images,
                    images,
                    ctx,
                    scratch,
                    urls,
                    sb,
                )
                .map_err(err)?,
            ),
            (StepKind::Run(r), None) => {
                let host = host.ok_or_else(|| err("the sandbox was not started".into()))?;
                Some(
                    run_step(
                        cx,
                        r,
                        id,
                        &mut state,
                        done,
                        &mut from_images,
                        images,
                        ctx,
                        scratch,
                        &stage_name,
                        host,
                    )
                    .map_err(err)?,
                )
            }
        };
        match entries {
            None => {
                state.builder.empty_step(&step.created_by);
                comment(&mut state.builder);
                cached = true;
            }
            Some(mut entries) => {
                // Every parent of the entries, with its metadata from before the step (not for
                // `COPY --link`, whose layer does not depend on what is below it).
                let link = matches!(&step.kind, StepKind::Copy(c) if c.link);
                if !link {
                    let parents = state
                        .index(store)
                        .map_err(err)?
                        .parent_entries(&entries, opts.epoch);
                    if !parents.is_empty() {
                        entries.extend(parents);
                        entries.sort_by(|a, b| a.path.cmp(&b.path));
                    }
                }
                let (layer, stats) =
                    write_entries(store, opts, &entries).map_err(|e| err(with_causes(&e)))?;
                cache.put(&key, &layer)?;
                state.push(
                    layer,
                    &step.created_by,
                    Some(&entries),
                    false,
                    start.elapsed().as_secs_f64(),
                );
                if let Some(r) = state.records.last_mut() {
                    r.stats = Some(stats);
                }
                if let (StepKind::Run(_), Some(host)) = (&step.kind, host) {
                    match host.kind {
                        SnapshotterKind::Overlay => {
                            state.push_upper(scratch.join(format!("step-{id}/upper")))
                        }
                        SnapshotterKind::Walk => state.mark_rootfs_current(),
                    }
                }
            }
        }
        continue_step(cx, id, done_step, cached, start, steps);
    }
    Ok(state)
}

/// A step as `continue_step` records it: its stage's name, the step, its cache key.
#[derive(Clone, Copy)]
struct Done<'a> {
    stage: &'a str,
    step: &'a plan::Step,
    key: &'a str,
}

/// Reports a finished step and records it for the metadata file.
fn continue_step(
    cx: &Ctx<'_>,
    id: usize,
    done: Done<'_>,
    cached: bool,
    start: Instant,
    steps: &mut Vec<StepRecord>,
) {
    let seconds = start.elapsed().as_secs_f64();
    cx.reporter.on_step_done(id, cached, seconds);
    steps.push(StepRecord {
        stage: done.stage.to_string(),
        step: done.step.created_by.clone(),
        cached,
        seconds,
        cache_key: done.key.to_string(),
    });
}

/// The entries of a COPY or ADD step: resolves `--chown`/`--chmod`, finds the source
/// filesystem (the context, another stage, an image) and applies the copy rules.
#[allow(clippy::too_many_arguments)]
fn copy_step(
    cx: &Ctx<'_>,
    c: &plan::CopyStep,
    state: &mut StageState,
    done: &mut BTreeMap<StageId, StageState>,
    from_images: &mut BTreeMap<String, StageState>,
    images: &BTreeMap<String, Image>,
    ctx: &Context,
    scratch: &Path,
    urls: &BTreeMap<String, (PathBuf, super::fetch::Fetched)>,
    sb: Option<&sandbox::UserNsSandbox>,
) -> std::result::Result<Vec<Entry>, String> {
    let store = cx.store;
    let err = |m: String| m;
    let chmod = c
        .chmod
        .as_deref()
        .map(parse_chmod)
        .transpose()
        .map_err(err)?;
    let owner = match &c.chown {
        Some(spec) => Some(resolve_owner(state.index(store).map_err(err)?, spec).map_err(err)?),
        None => None,
    };
    let empty = FsIndex::default();
    // The source filesystem: the context, another stage, or an image.
    let mut src_state: Option<(FsIndex, PathBuf)> = None;
    match &c.source {
        Source::Context => {}
        Source::Stage { stage: sid } => {
            let other = done
                .get_mut(sid)
                .ok_or_else(|| err(format!("stage {sid} was not built")))?;
            let index = other.index(store).map_err(err)?.clone();
            let root = other
                .rootfs(store, scratch, &format!("stage-{sid}"), sb)
                .map_err(err)?;
            src_state = Some((index, root));
        }
        Source::Image { reference } => {
            let other = from_images
                .entry(reference.clone())
                .or_insert_with(|| StageState::from_image(&images[reference]));
            let index = other.index(store).map_err(err)?.clone();
            let tag: String = reference
                .chars()
                .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
                .collect();
            let root = other
                .rootfs(store, scratch, &format!("image-{tag}"), sb)
                .map_err(err)?;
            src_state = Some((index, root));
        }
    }
    let dest_index = if c.link {
        &empty
    } else {
        state.index(store).map_err(err)?
    }
    .clone();
    let source = match &src_state {
        None => SourceFs::Context(ctx),
        Some((index, root)) => SourceFs::Tree {
            index,
            rootfs: root,
        },
    };
    copy_entries(
        c,
        &CopyInput {
            source,
            dest: &dest_index,
            owner,
            chmod,
            scratch,
            urls,
            epoch: cx.opts.epoch,
        },
    )
    .map_err(|e| e.to_string())
}

/// Runs one RUN step in the sandbox; returns its layer entries. The error text names the
/// command, its exit status and its last output lines.
#[allow(clippy::too_many_arguments)]
fn run_step(
    cx: &Ctx<'_>,
    r: &RunStep,
    id: usize,
    state: &mut StageState,
    done: &mut BTreeMap<StageId, StageState>,
    from_images: &mut BTreeMap<String, StageState>,
    images: &BTreeMap<String, Image>,
    ctx: &Context,
    scratch: &Path,
    stage_name: &str,
    host: &RunHost,
) -> std::result::Result<Vec<Entry>, String> {
    let store = cx.store;
    let sb = Some(&host.sandbox);
    let user = match r.user.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => {
            let o = resolve_owner(state.index(store)?, u)?;
            sandbox::User {
                uid: o.uid,
                gid: o.gid,
                additional_gids: Vec::new(),
            }
        }
        None => sandbox::User::default(),
    };
    if let Some(a0) = r.argv.first().filter(|a| a.starts_with('/')) {
        if let Some(msg) = missing_program(state.index(store)?, a0) {
            return Err(msg);
        }
    }
    let mut tree_root = |src: &Source| -> std::result::Result<PathBuf, String> {
        match src {
            Source::Context => Ok(ctx.root().to_path_buf()),
            Source::Stage { stage } => done
                .get_mut(stage)
                .ok_or_else(|| format!("stage {stage} was not built"))?
                .rootfs(store, scratch, &format!("stage-{stage}"), sb),
            Source::Image { reference } => {
                let img = images
                    .get(reference)
                    .ok_or_else(|| format!("image `{reference}` was not fetched"))?;
                let tag: String = reference
                    .chars()
                    .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
                    .collect();
                from_images
                    .entry(reference.clone())
                    .or_insert_with(|| StageState::from_image(img))
                    .rootfs(store, scratch, &format!("image-{tag}"), sb)
            }
        }
    };
    let (mounts, extra_env) = run::mounts(
        r,
        &mut run::MountEnv {
            store_root: store.root(),
            context_root: ctx.root(),
            secrets: &cx.opts.secrets,
            tree_root: &mut tree_root,
        },
    )?;
    let mut env = r.env.clone();
    env.extend(r.proxy_env.iter().cloned());
    env.extend(extra_env);
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), sandbox::DEFAULT_PATH.into()));
    }
    // The build epoch, as BuildKit exposes the `SOURCE_DATE_EPOCH` build arg to RUN
    // (moby/buildkit#2918): dpkg, pip and py_compile (hash-checked `.pyc` files, valid whatever
    // the sources' clamped mtimes) then build reproducibly. Always set, since kiln always has an
    // epoch; a step's own ENV or ARG of the name wins.
    if !env.iter().any(|(k, _)| k == "SOURCE_DATE_EPOCH") {
        env.push(("SOURCE_DATE_EPOCH".into(), cx.opts.epoch.to_string()));
    }
    let spec = RunSpec {
        argv: r.argv.clone(),
        env,
        cwd: r.workdir.clone(),
        user,
        network: run::network(r)?,
        mounts,
        // BuildKit's hostname inside RUN steps; some build scripts look for it.
        hostname: "buildkitsandbox".into(),
    };
    let step_dir = scratch.join(format!("step-{id}"));
    std::fs::create_dir_all(&step_dir)
        .map_err(|e| format!("cannot create `{}`: {e}", step_dir.display()))?;
    let snap = match host.kind {
        SnapshotterKind::Overlay => {
            let lowers = state.lowers(store, scratch, stage_name, sb)?;
            Snapshot::overlay(lowers, &step_dir).map_err(|e| e.to_string())?
        }
        SnapshotterKind::Walk => Snapshot::walk(state.rootfs(store, scratch, stage_name, sb)?),
    };
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut partial = String::new();
    let outcome = host
        .sandbox
        .run(&snap, &spec, &mut |_, bytes| {
            cx.reporter.on_run_output(id, bytes);
            partial.push_str(&String::from_utf8_lossy(bytes));
            while let Some(i) = partial.find('\n') {
                let line: String = partial.drain(..=i).collect();
                tail.push_back(line.trim_end().to_string());
                if tail.len() > 20 {
                    tail.pop_front();
                }
            }
        })
        .map_err(|e| e.to_string())?;
    for w in &outcome.warnings {
        cx.reporter.on_warning(&w.to_string());
    }
    if !outcome.status.success() {
        if !partial.is_empty() {
            tail.push_back(partial);
        }
        let mut msg = format!(
            "`{}` did not complete successfully: {}",
            r.argv.join(" "),
            outcome.status
        );
        if !tail.is_empty() {
            msg.push_str("\nlast output:\n");
            msg.push_str(&tail.into_iter().collect::<Vec<_>>().join("\n"));
        }
        return Err(msg);
    }
    let mut entries = run::diff_entries(&outcome.diff, state.index(store)?);
    run::stamp_fresh_mtimes(&mut entries, cx.started, cx.opts.epoch);
    Ok(entries)
}

/// The key a step's layer is cached under with these options (`step_key`: its plan key).
fn step_layer_key(step_key: &str, opts: &BuildOptions) -> String {
    cache::layer_key(
        step_key,
        &opts.compression.to_string(),
        opts.epoch,
        opts.clamp_mtimes,
    )
}

/// The error for a RUN whose program (`argv[0]`, absolute: the shell of a shell-form RUN) is
/// not in the image, or `None` when it is.
fn missing_program(index: &FsIndex, a0: &str) -> Option<String> {
    let p = index.resolve(a0.as_bytes(), true);
    index.get(&p).is_none().then(|| format!(
        "`{a0}` does not exist in the image: a shell-form RUN needs it; use the exec form (RUN [\"program\", \"arg\"]) or a base image with a shell"
    ))
}

/// A RUN needs its program (for the shell form, the stage's shell) in the image. Where nothing
/// before a RUN in its stage can have added it (the stage starts from an image or `scratch`,
/// and no COPY, ADD or other RUN comes first), a missing program is reported here, before any
/// step of the build runs. RUN steps the cache will answer are not checked: they do not run.
fn check_programs(
    cx: &Ctx<'_>,
    plan: &plan::BuildPlan,
    images: &BTreeMap<String, Image>,
    cache: &LayerCache,
) -> Result<()> {
    for id in &plan.order {
        let Some(stage) = plan.stage(*id) else {
            continue;
        };
        let mut state = match &stage.base {
            Base::Image { reference } => match images.get(reference) {
                Some(img) => StageState::from_image(img),
                None => continue,
            },
            Base::Scratch => StageState::scratch(&stage.platform.to_oci()),
            Base::Stage { .. } => continue,
        };
        let Some((index, step)) = stage
            .steps
            .iter()
            .enumerate()
            .find(|(_, s)| matches!(s.kind, StepKind::Run(_) | StepKind::Copy(_)))
        else {
            continue;
        };
        let StepKind::Run(r) = &step.kind else {
            continue;
        };
        let key = step_layer_key(cx.keys.step(stage.id, index).unwrap_or_default(), cx.opts);
        if !cx.opts.no_cache && cache.get(cx.store, &key).is_some() {
            continue;
        }
        if let Some(a0) = r.argv.first().filter(|a| a.starts_with('/')) {
            let err = |m: String| cx.step_err(step.position, &step.created_by, m);
            if let Some(msg) = missing_program(state.index(cx.store).map_err(err)?, a0) {
                return Err(err(msg));
            }
        }
    }
    Ok(())
}

/// Directories WORKDIR must create: the missing components of `path`.
fn workdir_entries(index: &FsIndex, path: &str, owner: Option<super::user::Owner>) -> Vec<Entry> {
    let resolved = index.resolve(path.as_bytes(), true);
    let mut out = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    for c in resolved.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        if !cur.is_empty() {
            cur.push(b'/');
        }
        cur.extend_from_slice(c);
        match index.get(&cur) {
            Some(n) if n.kind == NodeKind::Dir => {}
            _ => {
                let mut e = Entry::dir(cur.clone(), 0o755);
                if let Some(o) = owner {
                    e.uid = o.uid;
                    e.gid = o.gid;
                }
                out.push(e);
            }
        }
    }
    out
}
