//! The stage loop: each step of a stage in order, answered by the layer cache or executed
//! (`super::step`), its entries completed with their parent directories and written as a layer,
//! recorded in the cache, the image and the step records.
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Instant;

use crate::cache::CachedLayer;
use crate::layer::{Entry, EntryKind, LayerStats, LayerWriter};
use crate::oci::Descriptor;
use crate::plan::{self, Base, Stage, StepKind};
use crate::progress::{Status, Task, STATUS_INTERVAL};
use crate::sandbox::{Emulator, SnapshotterKind};

use super::engine::Builder;
use super::error::{Error, Result, StepError};
use super::state::{comment, StageState};
use super::step::config::apply_config;
use super::{StepCache, StepRecord};

/// One step of a stage being run: which, and where in the build.
pub(super) struct StepAt<'p> {
    pub(super) step: &'p plan::Step,
    /// The build-wide step number the reporter knows it by.
    pub(super) id: usize,
    /// The stage's name (or `stage-N`).
    pub(super) stage_name: &'p str,
    /// Its cache key.
    pub(super) key: &'p str,
    /// The emulator RUN steps of a foreign-platform stage go through.
    pub(super) emulator: Option<&'p Emulator>,
    /// Its stage.
    pub(super) stage: plan::StageId,
    /// Its progress, when it is reported (config-only steps are not).
    pub(super) task: Option<&'p Task<'p>>,
}

/// The `[NAME i/n]` labels of one stage's reported steps.
struct Labels {
    name: String,
    index: usize,
    total: usize,
}

impl Labels {
    fn new(stage: &Stage, name: &str) -> Labels {
        let from = usize::from(matches!(stage.base, Base::Image { .. }));
        let steps = stage
            .steps
            .iter()
            .filter(|s| !matches!(s.kind, StepKind::Config(_)))
            .count();
        Labels {
            name: name.to_string(),
            index: 0,
            total: from + steps,
        }
    }

    /// The next label: the index padded to the total's width, as Go's `%*d` with
    /// `1+log10(total)` (`[build  2/12]`).
    fn next(&mut self) -> String {
        self.index += 1;
        let width = self.total.max(1).to_string().len();
        let prefix = if self.name.is_empty() {
            String::new()
        } else {
            format!("{} ", self.name)
        };
        format!("[{prefix}{:>width$}/{}]", self.index, self.total)
    }
}

/// Whether the step just recorded was answered by a cache: only a real hit is shown CACHED (a
/// WORKDIR that made no layer did no work, but was not in any cache either).
fn answer_cached(steps: &[StepRecord]) -> bool {
    steps
        .last()
        .is_some_and(|r| matches!(r.cache, StepCache::Local | StepCache::Remote))
}

/// An error and its causes on one line, as a failed step's status shows it.
fn chain(e: &StepError) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// How a step was answered, and from which `--cache-from` for a remote hit.
pub(super) type Answer = (StepCache, Option<String>);

impl Builder<'_> {
    /// Runs every step of `stage` and returns its state. Steps are reported as BuildKit's
    /// dockerfile2llb names its vertices (`prefixCommand`): `[NAME i/n]` with the stage's name
    /// (`stage-N` when unnamed, nothing when the Dockerfile has one stage) and a count of the
    /// steps that are vertices: the FROM of an image, RUN, COPY, ADD and WORKDIR. Config-only
    /// steps (ENV, LABEL, EXPOSE, …) are not reported at all, as BuildKit makes no vertex of them.
    pub(super) fn run_stage(&mut self, stage: &Stage) -> Result<StageState> {
        let stage_name = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", stage.id));
        let mut labels = Labels::new(stage, if self.single_stage { "" } else { &stage_name });
        let mut state = self.stage_base(stage)?;
        if let Base::Image { reference } = &stage.base {
            self.report_from(reference, stage, &mut labels);
        }
        let keys = self.keys.stage(stage.id).cloned().unwrap_or_default();
        let emulator = self.emulators.get(&stage.id).cloned();
        for (i, step) in stage.steps.iter().enumerate() {
            let reporter = self.reporter;
            let task = match &step.kind {
                StepKind::Config(_) => None,
                _ => Some(Task::start(reporter, &labels.next(), &step.name)),
            };
            let at = StepAt {
                step,
                id: task.as_ref().map_or(0, Task::id),
                stage_name: &stage_name,
                key: keys.steps.get(i).map_or("", String::as_str),
                emulator: emulator.as_ref(),
                stage: stage.id,
                task: task.as_ref(),
            };
            let start = Instant::now();
            let answer = match self.run_step_of(&at, &mut state, start) {
                Ok(a) => a,
                Err(e) => {
                    if let Some(t) = task {
                        t.failed(&chain(&e));
                    }
                    return Err(self.step_error(step, e));
                }
            };
            self.record_step(&at, answer, start);
            match task {
                Some(t) if answer_cached(&self.steps) => t.cached(),
                Some(t) => t.done(),
                None => {}
            }
        }
        Ok(state)
    }

    /// Reports the FROM of an image as BuildKit does: `FROM name@digest`, cached when every
    /// layer is in the store already (others are fetched when a step first reads them, and
    /// their transfers show under that step).
    fn report_from(&self, reference: &str, stage: &Stage, labels: &mut Labels) {
        let key = (reference.to_string(), stage.platform.to_string());
        let Some(img) = self.images.get(&key) else {
            return;
        };
        let name = match crate::registry::Reference::parse(reference) {
            Ok(r) if r.digest().is_some() => r.to_string(),
            Ok(r) => format!("{r}@{}", img.digest()),
            Err(_) => reference.to_string(),
        };
        let local = img.layers().iter().all(|l| self.store.contains(&l.digest));
        let task = Task::start(self.reporter, &labels.next(), &format!("FROM {name}"));
        task.status(&Status::done(&format!("resolve {name}")));
        if local {
            task.cached();
        } else {
            task.done();
        }
    }

    /// The state a stage starts from: `scratch`, an image, or another stage's final state.
    fn stage_base(&self, stage: &Stage) -> Result<StageState> {
        Ok(match &stage.base {
            Base::Scratch => StageState::scratch(&stage.platform.to_oci()),
            Base::Image { reference } => {
                let key = (reference.clone(), stage.platform.to_string());
                let img = self.images.get(&key).ok_or_else(|| Error::Frontend {
                    rendered: format!(
                        "{}: the base `{reference}` ({}) was not fetched",
                        self.file, key.1
                    ),
                })?;
                StageState::from_image(img)
            }
            Base::Stage { stage: parent } => {
                let mut s = self
                    .done
                    .get(parent)
                    .cloned()
                    .ok_or_else(|| Error::Frontend {
                        rendered: format!(
                            "{}: stage {parent} was not built before stage {}",
                            self.file, stage.id
                        ),
                    })?;
                s.rootfs = None;
                s.stack = None;
                s
            }
        })
    }

    /// One step: a config edit, a cache hit (the store's, then `--cache-from`'s), or executed
    /// and written as a layer. Returns how it was answered.
    fn run_step_of(
        &mut self,
        at: &StepAt<'_>,
        state: &mut StageState,
        start: Instant,
    ) -> Result<Answer, StepError> {
        let step = at.step;
        let key = self.opts.layer_key(at.key);
        if let StepKind::Workdir { path } = &step.kind {
            state.builder.config_mut().config.working_dir = Some(path.clone());
        }
        if let StepKind::Config(edit) = &step.kind {
            apply_config(state.builder.config_mut(), edit);
            state.builder.empty_step(&step.created_by);
            comment(&mut state.builder);
            return Ok((StepCache::None, None));
        }
        // Layer-making steps: a cache hit reuses the layer without reading anything; a miss
        // computes the entries, writes the layer and records it.
        let cached = if self.no_cache_stages.contains(&at.stage) {
            None // --no-cache-filter
        } else {
            self.lookup(&key)
        };
        if let Some((layer, answer)) = cached {
            self.made.push((at.stage, key, layer.clone()));
            state.push(layer, &step.created_by, None, true, 0.0);
            return Ok(answer);
        }
        let entries = match &step.kind {
            StepKind::Workdir { path } => self.workdir_step(path, state)?,
            StepKind::Copy(c) => Some(self.copy_step(c, state)?),
            StepKind::Run(r) => Some(self.run_step(r, at, state)?),
            StepKind::Config(_) => None,
        };
        let Some(mut entries) = entries else {
            // An existing WORKDIR makes no layer.
            state.builder.empty_step(&step.created_by);
            comment(&mut state.builder);
            return Ok((StepCache::None, None));
        };
        // Every parent of the entries, with its metadata from before the step (not for
        // `COPY --link`, whose layer does not depend on what is below it).
        if !matches!(&step.kind, StepKind::Copy(c) if c.link) {
            let parents = state
                .index(self.layers())?
                .parent_entries(&entries, self.opts.epoch);
            if !parents.is_empty() {
                entries.extend(parents);
                entries.sort_by(|a, b| a.path.cmp(&b.path));
            }
        }
        let (layer, stats) = self.write_entries(&entries, at.task)?;
        self.cache.put(&key, &layer)?;
        self.written.insert(key.clone());
        self.made.push((at.stage, key, layer.clone()));
        let seconds = start.elapsed().as_secs_f64();
        state.push(layer, &step.created_by, Some(entries), false, seconds);
        if let Some(r) = state.records.last_mut() {
            r.stats = Some(stats);
        }
        if let (StepKind::Run(_), Some(host)) = (&step.kind, self.host) {
            match host.kind {
                SnapshotterKind::Overlay => {
                    state.push_upper(self.scratch.join(format!("step-{}/upper", at.id)))
                }
                SnapshotterKind::Walk => state.mark_rootfs_current(),
            }
        }
        Ok((StepCache::Ran, None))
    }

    /// Reports a finished step and records it for the metadata file.
    fn record_step(&mut self, at: &StepAt<'_>, (cache, from): Answer, start: Instant) {
        let seconds = start.elapsed().as_secs_f64();
        let cached = cache != StepCache::Ran;
        self.steps.push(StepRecord {
            stage: at.stage_name.to_string(),
            step: at.step.created_by.clone(),
            cached,
            cache,
            cache_from: from,
            seconds,
            cache_key: at.key.to_string(),
        });
    }

    /// Writes `entries` as a layer blob in the store. A big layer's progress (the file bytes
    /// read of their total) is reported as the step's `writing layer` status while it is written.
    fn write_entries(
        &self,
        entries: &[Entry],
        task: Option<&Task<'_>>,
    ) -> Result<(CachedLayer, LayerStats), StepError> {
        let opts = self.opts;
        let total: u64 = entries
            .iter()
            .map(|e| match &e.kind {
                EntryKind::File { size, .. } => *size,
                _ => 0,
            })
            .sum();
        let mut w = LayerWriter::new(self.store.blob_writer()?, opts.layer_options())?;
        let read = w.bytes_read();
        let task = task.filter(|_| total >= BIG_LAYER);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let written = std::thread::scope(|scope| {
            if let Some(task) = task {
                let read = &read;
                scope.spawn(move || {
                    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(STATUS_INTERVAL)
                    {
                        let done = read.load(Ordering::Relaxed);
                        task.status(&Status::bytes("writing layer", done, total, false));
                    }
                });
            }
            let r = entries
                .iter()
                .try_for_each(|e| w.append(e))
                .and_then(|()| w.finish());
            drop(stop);
            r
        });
        let (blob, summary) = written?;
        if let Some(task) = task {
            task.status(&Status::bytes("writing layer", total, total, true));
        }
        let (digest, size) = blob.finish()?;
        let layer = CachedLayer {
            descriptor: Descriptor::new(summary.media_type, digest, size),
            diff_id: summary.diff_id,
        };
        Ok((layer, summary.stats))
    }
}

/// The size of the files in a layer from which its writing is reported with bytes.
const BIG_LAYER: u64 = 8 << 20;
