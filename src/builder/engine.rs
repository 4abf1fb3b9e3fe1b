//! [`Builder`]: one build's values (store, options, reporter, fetched images, context, cache,
//! scratch directory, sandbox) and its progress; [`build`] and [`build_with`] make one and run
//! it. The steps are `impl Builder` blocks in `super::step`, the stage loop in `super::stage`.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::cache::remote::RemoteCache;
use crate::cache::{CachedLayer, FileIndex, LayerCache};
use crate::image::Image;
use crate::plan::{BuildPlan, CacheKeys, Source, StageId};
use crate::progress::{Reporter, Status, Task};
use crate::sandbox::{Emulator, Sandbox, SnapshotterKind};
use crate::store::Store;
use crate::transport::{write_from_store, LayerSource};

use super::context::Context;
use super::error::{Error, Result, StepError};
use super::fetch::Fetched;
use super::fsindex::FsIndex;
use super::inputs::{self, Env, Frontend};
use super::preflight;
use super::state::{image_dir_name, Disk, StageState};
use super::{BuildOptions, BuildOutcome, StepRecord};

/// The sandbox RUN steps go through, and how their snapshots are made.
#[derive(Clone, Copy)]
pub struct RunHost<'a> {
    /// The sandbox ([`crate::sandbox::UserNsSandbox`], or a [`crate::sandbox::FakeSandbox`]).
    pub sandbox: &'a dyn Sandbox,
    /// The snapshotter.
    pub kind: SnapshotterKind,
}

/// One build in progress.
pub struct Builder<'a> {
    pub(super) store: &'a Store,
    pub(super) opts: &'a BuildOptions,
    pub(super) reporter: &'a dyn Reporter,
    /// The Dockerfile, as messages name it.
    pub(super) file: String,
    /// The second the build began: a file in a step's diff with an mtime at or after it was
    /// written with the clock by this build (by the step, or by an earlier one whose layer gave
    /// it the epoch while the walk snapshotter's tree kept the real time).
    pub(super) started: i64,
    /// Base and `--from` images, by reference as the plan names them and platform.
    pub(super) images: BTreeMap<inputs::ImageKey, Image>,
    /// The steps' cache keys, computed from the plan and the input digests.
    pub(super) keys: CacheKeys,
    /// `ADD` URLs, downloaded into the store before any step.
    pub(super) urls: BTreeMap<String, (PathBuf, Fetched)>,
    /// `ADD` git sources, fetched before any step.
    pub(super) gits: BTreeMap<String, super::gitsrc::GitSource>,
    pub(super) context: Context,
    pub(super) cache: LayerCache,
    pub(super) scratch: &'a Path,
    pub(super) host: Option<RunHost<'a>>,
    /// The emulator of each stage whose RUN steps run on a foreign platform.
    pub(super) emulators: BTreeMap<StageId, Emulator>,
    /// Stages built so far.
    pub(super) done: BTreeMap<StageId, StageState>,
    /// Images used by `COPY --from=IMAGE` and `RUN --mount=from=IMAGE`, as stage states (for
    /// their index and files).
    pub(super) from_images: BTreeMap<String, StageState>,
    /// Every step executed, in order, across stages.
    pub(super) steps: Vec<StepRecord>,
    /// Whether the Dockerfile has one stage (its steps' labels then name none).
    pub(super) single_stage: bool,
    /// The `--cache-from` caches.
    pub(super) remote_cache: RemoteCache,
    /// Every layer-making step so far: its stage, layer key and layer (what `--cache-to`
    /// writes).
    pub(super) made: Vec<(StageId, String, CachedLayer)>,
    /// The cache mounts RUN steps ran with: mount key → (directory, the last step's layer key).
    pub(super) mounts_run: BTreeMap<String, (PathBuf, String)>,
    /// Layer keys this build recorded in the store's cache.
    pub(super) written: BTreeSet<String>,
    /// Layer keys whose store cache entries are not trusted (recorded by an attempt that used
    /// a layer of a `--cache-from` found not to verify).
    pub(super) distrusted: BTreeSet<String>,
    /// The `--ssh` agents started so far (on first use), by id; dropped (a key-file agent
    /// killed) with the build.
    pub(super) ssh_agents: BTreeMap<String, crate::sandbox::SshAgent>,
    /// `--no-cache-filter`: stages whose steps no cache answers.
    pub(super) no_cache_stages: BTreeSet<StageId>,
}

/// Runs the build described by `opts`; the image ends in the store under its tags. RUN steps
/// go through kiln's rootless sandbox, started before the first step when the plan has one.
pub fn build(store: &Store, opts: &BuildOptions, reporter: &dyn Reporter) -> Result<BuildOutcome> {
    build_with(store, opts, reporter, None)
}

/// As [`build`], with RUN steps going through `host` when given (a
/// [`crate::sandbox::FakeSandbox`] in unit tests) instead of a sandbox started here.
pub fn build_with(
    store: &Store,
    opts: &BuildOptions,
    reporter: &dyn Reporter,
    host: Option<RunHost<'_>>,
) -> Result<BuildOutcome> {
    let front = read_frontend(opts, reporter)?;
    let env = Env {
        store,
        opts,
        file: &front.file,
        reporter,
    };
    let no_cache_stages = inputs::no_cache_stages(opts, &front)?;
    let (plan, images) = inputs::plan_with_bases(env, &front)?;
    for w in &plan.warnings {
        reporter.on_warning(&format!(
            "{}:{}:{}: {} [{}]",
            front.file, w.position.line, w.position.col, w.message, w.rule
        ));
    }
    let context = inputs::context(opts, reporter)?;
    let mut files = FileIndex::load(store);
    let task = Task::start(reporter, "[internal]", "load build context");
    let gathered = inputs::gather(env, &plan, &images, &context, &mut files);
    match &gathered {
        Ok(g) => {
            let size = g.context.unwrap_or(0);
            task.status(&Status::bytes("transferring context:", size, 0, true));
            task.done();
        }
        Err(e) => task.failed(&e.chain_text()),
    }
    let gathered = gathered?;
    // The file index is written (and its records dropped) before the steps run: only
    // gathering reads it, and a large context's records need not be held during COPY.
    files.save()?;
    let (files_hashed, files_reused) = (files.files_hashed, files.files_reused);
    drop(files);
    let keys = CacheKeys::compute(&plan, &|i| gathered.digest(i));
    preflight::check_run_steps(env, &plan)?;
    let scratch = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(store.root().join("tmp"))
        .map_err(|source| crate::store::Error::Io {
            action: "cannot create a scratch directory in",
            path: store.root().join("tmp"),
            source,
        })?;
    let cache = LayerCache::new(store);
    let remote_cache = RemoteCache::load(&opts.cache_from, opts.remote.as_ref(), reporter);
    let hit = |key: &str| cache.get(store, key).is_some() || remote_cache.contains(key);
    let hit = |stage: StageId, key: &str| !no_cache_stages.contains(&stage) && hit(key);
    preflight::check_programs(env, &plan, &keys, &images, &hit)?;
    // RUN needs the sandbox: start it (and learn what this machine allows) before any step.
    let started = match host {
        None if preflight::has_run(&plan) => {
            Some(preflight::start(env, &plan, scratch.path(), reporter)?)
        }
        _ => None,
    };
    let host = host.or_else(|| {
        started.as_ref().map(|(sandbox, kind)| RunHost {
            sandbox,
            kind: *kind,
        })
    });
    // Foreign-platform RUN steps need an emulator: found (or refused) before any step.
    let emulators = match host {
        Some(h) => preflight::emulators(env, &plan, h.sandbox)?,
        None => BTreeMap::new(),
    };
    let mut b = Builder {
        store,
        opts,
        reporter,
        file: front.file.clone(),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        images,
        keys,
        urls: gathered.urls,
        gits: gathered.gits,
        context,
        cache,
        scratch: scratch.path(),
        host,
        emulators,
        done: BTreeMap::new(),
        from_images: BTreeMap::new(),
        steps: Vec::new(),
        single_stage: front.dockerfile.stages.len() == 1,
        remote_cache,
        made: Vec::new(),
        mounts_run: BTreeMap::new(),
        written: BTreeSet::new(),
        distrusted: BTreeSet::new(),
        ssh_agents: BTreeMap::new(),
        no_cache_stages,
    };
    let result = b.run_stages_verified(&plan);
    // Steps may have left files only a user namespace can delete (rootless RUN).
    if let Some(h) = &b.host {
        let _ = h.sandbox.remove_tree(scratch.path());
    }
    result?;
    let mut outcome = b.finish(&plan)?;
    b.export_caches(&plan)?;
    outcome.context_files_hashed = files_hashed;
    outcome.context_files_reused = files_reused;
    Ok(outcome)
}

/// Reads the Dockerfile, reported as BuildKit's `[internal] load build definition from NAME`.
fn read_frontend(opts: &BuildOptions, reporter: &dyn Reporter) -> Result<Frontend> {
    let name = opts
        .dockerfile
        .file_name()
        .map_or_else(|| "Dockerfile".into(), |n| n.to_string_lossy());
    let task = Task::start(
        reporter,
        "[internal]",
        &format!("load build definition from {name}"),
    );
    match Frontend::read(opts) {
        Ok(f) => {
            let size = f.source.len() as u64;
            task.status(&Status::bytes("transferring dockerfile:", size, 0, true));
            task.done();
            Ok(f)
        }
        Err(e) => {
            task.failed(&e.chain_text());
            Err(e)
        }
    }
}

impl<'a> Builder<'a> {
    /// The store, scratch directory and sandbox, as stage states use them.
    pub(super) fn disk(&self) -> Disk<'a> {
        Disk {
            layers: self.layers(),
            scratch: self.scratch,
            sandbox: self.host.map(|h| h.sandbox),
        }
    }

    /// The layers steps read: the store's, lazy ones fetched through the build's registry.
    pub(super) fn layers(&self) -> LayerSource<'a> {
        LayerSource::new(self.store, self.opts.remote.as_ref())
    }

    /// An error of `step`, naming where it is.
    pub(super) fn step_error(&self, step: &crate::plan::Step, source: StepError) -> Error {
        Error::step(&self.file, step, source)
    }

    /// Every stage of the plan, dependencies first; the states are kept in `done`.
    pub(super) fn run_stages(&mut self, plan: &BuildPlan) -> Result<()> {
        for id in &plan.order {
            let Some(stage) = plan.stage(*id) else {
                continue;
            };
            let state = self.run_stage(stage)?;
            self.done.insert(*id, state);
        }
        Ok(())
    }

    /// The state of a `--from` source (another stage, an image) and the name of its scratch
    /// directories; `None` for the build context.
    fn source_state(
        &mut self,
        src: &Source,
    ) -> Result<Option<(&mut StageState, String)>, StepError> {
        Ok(Some(match src {
            Source::Context => return Ok(None),
            Source::Stage { stage } => (
                self.done
                    .get_mut(stage)
                    .ok_or_else(|| StepError::NotReady {
                        what: format!("stage {stage}"),
                    })?,
                format!("stage-{stage}"),
            ),
            Source::Image { reference } => {
                let img = self
                    .images
                    .get(&(reference.clone(), String::new()))
                    .ok_or_else(|| StepError::NotReady {
                        what: format!("image `{reference}`"),
                    })?;
                let state = self
                    .from_images
                    .entry(reference.clone())
                    .or_insert_with(|| StageState::from_image(img));
                (state, image_dir_name(reference))
            }
        }))
    }

    /// The files of a `--from` source as its index and a directory holding them; `None` for
    /// the build context, which COPY reads in place.
    pub(super) fn source_tree(
        &mut self,
        src: &Source,
    ) -> Result<Option<(FsIndex, PathBuf)>, StepError> {
        let disk = self.disk();
        let Some((state, name)) = self.source_state(src)? else {
            return Ok(None);
        };
        let index = state.index(disk.layers)?.clone();
        Ok(Some((index, state.rootfs(disk, &name)?)))
    }

    /// The directory holding a `--from` source's files; `None` for the build context.
    pub(super) fn source_root(&mut self, src: &Source) -> Result<Option<PathBuf>, StepError> {
        // `RUN --mount=from=NAME` of a directory `--build-context`: that directory.
        if let Source::Image { reference } = src {
            if let Some(super::NamedContext::Dir(d)) = self.opts.named_context(reference) {
                return Ok(Some(d.clone()));
            }
        }
        let disk = self.disk();
        match self.source_state(src)? {
            Some((state, name)) => Ok(Some(state.rootfs(disk, &name)?)),
            None => Ok(None),
        }
    }

    /// The target stage as the final image: `--label`s, annotations, the epoch; stored, tagged
    /// and written to every output.
    fn finish(&mut self, plan: &BuildPlan) -> Result<BuildOutcome> {
        let (store, opts) = (self.store, self.opts);
        let mut target = self
            .done
            .remove(&plan.target)
            .ok_or_else(|| Error::Frontend {
                rendered: format!("{}: the target stage was not built", self.file),
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
        // An annotation of a default label's key takes the label's final value.
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
        // BuildKit's image exporter: `exporting to image` with its status lines; a push's
        // blob transfers show under it.
        let task = Task::start(self.reporter, "", "exporting to image");
        let names = match export(store, opts, &image, &task) {
            Ok(names) => names,
            Err(e) => {
                task.failed(&e.chain_text());
                return Err(e);
            }
        };
        task.done();
        Ok(BuildOutcome {
            image,
            names,
            layers: target.records,
            steps: std::mem::take(&mut self.steps),
            context_files_hashed: 0,
            context_files_reused: 0,
            images: self
                .images
                .iter()
                .map(|((r, p), img)| (r.clone(), p.clone(), img.digest().clone()))
                .collect(),
            urls: self
                .urls
                .iter()
                .map(|(u, (_, f))| (u.clone(), f.digest.clone()))
                .collect(),
        })
    }
}

/// Stores the image's manifest and config, names it and pushes it to `opts.outputs`, reporting
/// each part as a status of `task`; returns the names.
fn export(
    store: &Store,
    opts: &BuildOptions,
    image: &Image,
    task: &Task<'_>,
) -> Result<Vec<String>> {
    task.status(&Status::done("exporting layers"));
    store.put_bytes(&image.raw_config)?;
    store.put_bytes(&image.raw_manifest)?;
    task.status(&Status::done(&format!(
        "exporting manifest {}",
        image.digest()
    )));
    task.status(&Status::done(&format!(
        "exporting config {}",
        image.manifest.config.digest
    )));
    let mut names = Vec::new();
    for t in &opts.tags {
        store.tag(t, &image.descriptor)?;
        let name = crate::store::normalize_name(t)?;
        task.status(&Status::done(&format!("naming to {name}")));
        names.push(name);
    }
    for o in &opts.outputs {
        let name = names.first().map(String::as_str);
        task.status(&Status {
            done: false,
            ..Status::done("pushing layers")
        });
        write_from_store(store, image, o, name, opts.remote.as_ref())
            .map_err(|e| Error::Output(Box::new(e)))?;
        task.status(&Status::done("pushing layers"));
        let shown = match o {
            crate::transport::Target::Registry(r) => r.clone(),
            other => other.to_string(),
        };
        task.status(&Status::done(&format!(
            "pushing manifest for {shown}@{}",
            image.digest()
        )));
    }
    Ok(names)
}
