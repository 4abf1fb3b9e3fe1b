//! The stage loop: each step of a stage in order, answered by the layer cache or executed
//! (`super::step`), its entries completed with their parent directories and written as a layer,
//! recorded in the cache, the image and the step records.
use std::time::Instant;

use crate::cache::CachedLayer;
use crate::layer::{Entry, LayerStats, LayerWriter};
use crate::oci::Descriptor;
use crate::plan::{self, Base, Stage, StepKind};
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
}

/// How a step was answered, and from which `--cache-from` for a remote hit.
pub(super) type Answer = (StepCache, Option<String>);

impl Builder<'_> {
    /// Runs every step of `stage` and returns its state.
    pub(super) fn run_stage(&mut self, stage: &Stage) -> Result<StageState> {
        let stage_name = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", stage.id));
        let mut state = self.stage_base(stage)?;
        let total = stage.steps.len();
        let keys = self.keys.stage(stage.id).cloned().unwrap_or_default();
        let emulator = self.emulators.get(&stage.id).cloned();
        for (i, step) in stage.steps.iter().enumerate() {
            self.counter += 1;
            let at = StepAt {
                step,
                id: self.counter,
                stage_name: &stage_name,
                key: keys.steps.get(i).map_or("", String::as_str),
                emulator: emulator.as_ref(),
                stage: stage.id,
            };
            let start = Instant::now();
            let label = format!("[{stage_name} {}/{total}]", i + 1);
            self.reporter.on_step(at.id, &label, &step.created_by);
            let answer = self
                .run_step_of(&at, &mut state, start)
                .map_err(|e| self.step_error(step, e))?;
            self.record_step(&at, answer, start);
        }
        Ok(state)
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
        let (layer, stats) = self.write_entries(&entries)?;
        self.cache.put(&key, &layer)?;
        self.written.insert(key.clone());
        self.made.push((at.stage, key, layer.clone()));
        let seconds = start.elapsed().as_secs_f64();
        state.push(layer, &step.created_by, Some(&entries), false, seconds);
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
        self.reporter.on_step_done(at.id, cached, seconds);
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

    /// Writes `entries` as a layer blob in the store.
    fn write_entries(&self, entries: &[Entry]) -> Result<(CachedLayer, LayerStats), StepError> {
        let opts = self.opts;
        let mut w = LayerWriter::new(self.store.blob_writer()?, opts.layer_options())?;
        for e in entries {
            w.append(e)?;
        }
        let (blob, summary) = w.finish()?;
        let (digest, size) = blob.finish()?;
        let layer = CachedLayer {
            descriptor: Descriptor::new(summary.media_type, digest, size),
            diff_id: summary.diff_id,
        };
        Ok((layer, summary.stats))
    }
}
