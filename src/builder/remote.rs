//! The caches outside the store (`--cache-from`, `--cache-to`; `crate::cache::remote`), as a
//! build uses them: a step's layer is looked up in the store's cache, then in each
//! `--cache-from` in order. A registry hit is lazy: its bytes are fetched (verified against
//! their digest) only when a step that runs or an export opens the layer.
//!
//! A layer from a cache is untrusted: once the stages are built, every such layer whose bytes
//! were fetched has its diff_id checked, and when a step failed because a layer could not be
//! read (`StepError::ReadLayer`), that layer is fetched again to learn whether it is why. A layer that does not verify is never used
//! again by this build, and the stages are built again without it (the steps it answered run;
//! the store's cache entries the failed attempt wrote are not trusted). Only a build that
//! verified is written to `--cache-to`: the blobs, the config, the manifest last.
use std::collections::{BTreeMap, BTreeSet};

use crate::cache::remote::{self, CacheMode};
use crate::cache::CachedLayer;
use crate::oci::Digest;
use crate::plan::{Base, BuildPlan};
use crate::progress::{Status, Task};

use super::engine::Builder;
use super::error::{Error, Result, StepError};
use super::stage::Answer;
use super::StepCache;

/// The layers an error says could not be read (a lazy layer whose download did not verify
/// ends a step this way).
fn layers_named(e: &Error) -> BTreeSet<Digest> {
    let mut out = BTreeSet::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        // `Error::Step` holds its cause boxed.
        let step = c
            .downcast_ref::<StepError>()
            .or_else(|| c.downcast_ref::<Box<StepError>>().map(|b| &**b));
        if let Some(StepError::ReadLayer { digest, .. }) = step {
            out.insert(digest.clone());
        }
        cur = c.source();
    }
    out
}

impl Builder<'_> {
    /// The layer cached under `key`: the store's, then a `--cache-from`'s.
    pub(super) fn lookup(&mut self, key: &str) -> Option<(CachedLayer, Answer)> {
        if self.opts.no_cache {
            return None;
        }
        if !self.distrusted.contains(key) {
            if let Some(l) = self.cache.get(self.store, key) {
                return Some((l, (StepCache::Local, None)));
            }
        }
        let hit = self.remote_cache.get(self.store, key, self.reporter)?;
        // A layer copied into the store (from a cache directory, verified) is the store's
        // cache entry from now on; a lazy one is not (the store's cache needs the blob).
        if self.store.contains(&hit.layer.descriptor.digest)
            && self.cache.put(key, &hit.layer).is_ok()
        {
            self.written.insert(key.to_string());
        }
        Some((hit.layer, (StepCache::Remote, Some(hit.from))))
    }

    /// Every stage, built again (without them) as long as layers from a `--cache-from` turn
    /// out not to verify. Ends: each round denies at least one more layer.
    pub(super) fn run_stages_verified(&mut self, plan: &BuildPlan) -> Result<()> {
        loop {
            let result = self.run_stages(plan);
            let named = match &result {
                Err(e) => layers_named(e),
                Ok(()) => BTreeSet::new(),
            };
            let bad = self.unverified(&named);
            if bad.is_empty() {
                return result;
            }
            for (layer, why) in &bad {
                self.reporter.on_warning(&format!(
                    "layer `{}` from the cache does not verify ({why}); the steps it answered are built again",
                    layer.descriptor.digest
                ));
                self.remote_cache.deny(&layer.descriptor.digest);
            }
            self.reset_attempt()?;
        }
    }

    /// The lazy cache layers that do not verify: those fetched (by the build, or now when the
    /// error that ended the build names them: `failed`) whose bytes or diff_id are not what the
    /// cache says.
    fn unverified(&mut self, failed: &BTreeSet<Digest>) -> Vec<(CachedLayer, String)> {
        let mut bad = Vec::new();
        for l in self.remote_cache.unchecked() {
            let d = &l.descriptor;
            if !self.store.contains(&d.digest) {
                if !failed.contains(&d.digest) {
                    continue;
                }
                if let Err(e) = self.layers().open_blob_sized(&d.digest, Some(d.size)) {
                    bad.push((l.clone(), remote::chain(&e)));
                    continue;
                }
            }
            match remote::diff_id(self.store, d) {
                Ok(id) if id == l.diff_id => self.remote_cache.checked(&d.digest),
                Ok(id) => bad.push((l.clone(), format!("its diff_id is `{id}`"))),
                Err(e) => bad.push((l.clone(), e.to_string())),
            }
        }
        bad
    }

    /// Forgets what a failed attempt built, so the stages can be built again.
    fn reset_attempt(&mut self) -> Result<()> {
        self.done.clear();
        self.from_images.clear();
        self.steps.clear();
        self.made.clear();
        self.mounts_run.clear();
        let written = std::mem::take(&mut self.written);
        self.distrusted.extend(written);
        // Steps may have left files only a user namespace can delete (rootless RUN).
        let entries =
            std::fs::read_dir(self.scratch).map_err(|source| crate::store::Error::Io {
                action: "cannot read the scratch directory",
                path: self.scratch.to_path_buf(),
                source,
            })?;
        for e in entries.flatten() {
            let p = e.path();
            let gone = match self.host {
                Some(h) => h.sandbox.remove_tree(&p).is_ok(),
                None => std::fs::remove_dir_all(&p)
                    .or_else(|_| std::fs::remove_file(&p))
                    .is_ok(),
            };
            if !gone && p.exists() {
                return Err(crate::store::Error::Io {
                    action: "cannot empty the scratch directory of",
                    path: p,
                    source: std::io::Error::other("it could not be removed"),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Writes every `--cache-to`: the layers of the final image's stages (`mode=min`) or of
    /// every stage built (`mode=max`). With `ignore-error=true` a failure is a warning.
    pub(super) fn export_caches(&self, plan: &BuildPlan) -> Result<()> {
        if self.opts.cache_to.is_empty() {
            return Ok(());
        }
        let mut finals = BTreeSet::new();
        let mut at = Some(plan.target);
        while let Some(id) = at.filter(|id| finals.insert(*id)) {
            at = match plan.stage(id).map(|s| &s.base) {
                Some(Base::Stage { stage }) => Some(*stage),
                _ => None,
            };
        }
        let mounts = if self.opts.cache_to.iter().any(|t| t.mode == CacheMode::Max) {
            self.mount_contents()
        } else {
            BTreeMap::new()
        };
        for to in &self.opts.cache_to {
            let layers: BTreeMap<String, CachedLayer> = self
                .made
                .iter()
                .filter(|(stage, _, _)| to.mode == CacheMode::Max || finals.contains(stage))
                .map(|(_, k, l)| (k.clone(), l.clone()))
                .collect();
            let mounts = match to.mode {
                CacheMode::Max => mounts.clone(),
                CacheMode::Min => BTreeMap::new(),
            };
            // BuildKit's `exporting cache to …` step; the blobs' transfers show under it.
            let task = Task::start(
                self.reporter,
                "",
                &format!("exporting cache to {}", to.location),
            );
            task.status(&Status::done(&format!(
                "preparing {} layers, {} cache mounts",
                layers.len(),
                mounts.len()
            )));
            let (store, remote) = (self.store, self.opts.remote.as_ref());
            match remote::export(store, remote, &to.location, layers, mounts) {
                Ok(_) => task.done(),
                Err(e) if to.ignore_error => {
                    task.failed(&remote::chain(&e));
                    self.reporter.on_warning(&format!(
                        "{} (ignored: ignore-error=true)",
                        remote::chain(&e)
                    ))
                }
                Err(e) => {
                    task.failed(&remote::chain(&e));
                    return Err(Error::CacheExport(Box::new(e)));
                }
            }
        }
        Ok(())
    }
}
