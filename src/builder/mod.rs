//! The build engine: runs a [`crate::plan::BuildPlan`] into an image in the store.
//!
//! What it owns: fetching bases (the store, `oci:`, `oci-archive:`, `docker-archive:`, a
//! registry, or what a `--build-context` names instead), `ADD <git url>` checkouts, the
//! content digests of step inputs, COPY and ADD, RUN through a
//! [`crate::sandbox::Sandbox`], config edits, WORKDIR, the layer cache, history, and the final
//! image. What it does not: parsing and planning (`dockerfile`, `plan`), writing layer bytes
//! (`layer`), or running processes (`sandbox`).
//!
//! Start at [`build`]. The shape, top down:
//!
//! | file | owns |
//! |---|---|
//! | `engine` | [`Builder`]: one build's values and progress; [`build`] / [`build_with`] |
//! | `inputs` | the Dockerfile, the plan with the bases' configs, the context, input digests |
//! | `preflight` | what is refused before any step runs; starting the sandbox once |
//! | `stage` | the step loop: cache hit or execute, parent directories, the layer, records |
//! | `remote` | the caches outside the store: lookups after the store's, unverifiable hits rebuilt, the export after the build |
//! | `mountcache` | `RUN --mount=type=cache` contents through those caches (`mode=max`): restored into an empty mount before a step runs, written after the build |
//! | `step::copy`, `step::run`, `step::config` | one kind of step each, as `impl Builder` |
//! | `step::mounts`, `step::diff` | `RUN --mount`s; a RUN's diff as layer entries |
//! | [`copy`] | the COPY/ADD rules (sources, wildcards, archives, ownership, modes) |
//! | `state` | a stage's image so far and its files on demand (index, rootfs, overlay lowers) |
//! | [`fsindex`], [`snapshots`], [`context`], [`user`], `fetch` | the views and lookups steps use |
//! | `gitsrc` | `ADD <git url>`: the checkout fetched before any step, its commit the step's input |
//! | `error` | [`Error`] (where) over [`StepError`] (what), a `#[source]` chain to the CLI |
//!
//! A stage's files are never unpacked just to be looked at: COPY, ADD and WORKDIR consult a
//! metadata index of the layers ([`fsindex`]), built by reading layer headers when a step first
//! needs it (and cached per base image); only COPY `--from` another stage or image writes that
//! stage's files to a scratch directory, to read their content. RUN steps with the overlay
//! snapshotter stack their changes over a persistent, read-only unpacked copy of the base image
//! ([`snapshots`]), made once and shared by every later build on that base. A cache hit reuses
//! the stored layer without reading any source file (context files are hashed through the
//! persistent file index of [`crate::cache`], so an unchanged tree is not read either).
//!
//! The sandbox is a seam: [`build_with`] takes any [`RunHost`], so the unit tests (`tests/`,
//! one file per feature: COPY/ADD, RUN, config, stages, cache, errors) run whole builds of small
//! Dockerfiles on a base image made in-process, RUN steps going through
//! [`crate::sandbox::FakeSandbox`]: no user namespaces, no root, no network.

pub mod context;
pub mod copy;
mod engine;
mod error;
mod fetch;
pub mod fsindex;
mod gitsrc;
mod inputs;
mod mountcache;
mod preflight;
mod remote;
pub mod snapshots;
mod stage;
mod state;
mod step;
pub mod user;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::image::Image;
use crate::layer::Compression;
use crate::oci::{Digest, Platform};
use crate::transport::Target;

pub use engine::{build, build_with, Builder, RunHost};
pub use error::{Error, Result, StepError};
pub use fetch::FetchError;
pub use step::mounts::MountError;

/// Everything a build needs to know.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The context directory.
    pub context: PathBuf,
    /// The Dockerfile.
    pub dockerfile: PathBuf,
    /// Names in the local store.
    pub tags: Vec<String>,
    /// `--build-arg`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// The target platform.
    pub platform: Platform,
    /// Extra destinations.
    pub outputs: Vec<Target>,
    /// Layer compression.
    pub compression: Compression,
    /// Compression threads (0: one per core).
    pub threads: usize,
    /// The build epoch: config `created` and history times, `SOURCE_DATE_EPOCH` in every RUN,
    /// and the mtime of every file a step writes with the clock (see [`BuildOptions::clamp_mtimes`]).
    pub epoch: i64,
    /// Whether every mtime in the layers kiln writes is clamped to the epoch (`min(mtime,
    /// epoch)`, the reproducible-builds convention): when the user gave an epoch
    /// (`--source-date-epoch`, `SOURCE_DATE_EPOCH`, `--timestamp`). Otherwise mtimes that come
    /// with the inputs (base layers, packages a RUN unpacks, `COPY --from` sources, archives)
    /// are kept, since they are as reproducible as the inputs; the files a RUN step writes with
    /// the clock (mtime at or after the build's start), the context's files (whose mtimes git
    /// does not keep) and `ADD URL` downloads (cached by content, not Last-Modified) get the
    /// epoch either way. The default epoch then need not move with each
    /// commit, so the cache keys, which include it, survive commits.
    pub clamp_mtimes: bool,
    /// Ignore the cache (the results are still recorded in it).
    pub no_cache: bool,
    /// `--label`, applied to the final image's config.
    pub labels: BTreeMap<String, String>,
    /// Labels applied to the final image's config only where it has no label of that key (a
    /// bake family's defaults, which a variant's own `LABEL` overrides). An annotation of the
    /// same key takes the label's final value.
    pub default_labels: BTreeMap<String, String>,
    /// `--annotation`, applied to the final manifest.
    pub annotations: BTreeMap<String, String>,
    /// `--secret id=…`: secrets RUN steps may mount. Never written to a layer, history or key.
    pub secrets: BTreeMap<String, Secret>,
    /// `--snapshotter`: how RUN steps are snapshotted (probed when `None`).
    pub snapshotter: Option<crate::sandbox::SnapshotterKind>,
    /// The kiln executable, re-executed as the RUN sandbox helper.
    pub helper_exe: PathBuf,
    /// Never map subordinate ids, even when there are some (single-id mode).
    pub single_id: bool,
    /// The registry client: bases and `--from` images that are not in the store are pulled,
    /// and `docker://` outputs pushed, through it.
    pub remote: Option<crate::transport::Remote>,
    /// `--network`: the network of RUN steps without a `--network` flag of their own.
    pub network: crate::sandbox::Network,
    /// `--allow network.host` (BuildKit's entitlement): RUN steps may use the host's network.
    pub allow_network_host: bool,
    /// `--cache-from`: caches outside the store (registries, OCI layout directories) that
    /// answer a step the store's cache does not, in order.
    pub cache_from: Vec<crate::cache::remote::CacheLocation>,
    /// `--cache-to`: where the layer keys of this build are written after it succeeds.
    pub cache_to: Vec<crate::cache::remote::CacheExport>,
    /// `--build-context NAME=…`: what `FROM NAME`, `COPY --from=NAME` and
    /// `RUN --mount=from=NAME` read instead of the image `NAME`.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// `--ssh ID=…`: the SSH agents `RUN --mount=type=ssh,id=ID` steps may use, by id; a
    /// key-file agent is started at the first step that needs it. Never in a layer, key or
    /// history.
    pub ssh: BTreeMap<String, crate::sandbox::SshSource>,
    /// `--add-host`: (name, address) lines appended to every RUN step's `/etc/hosts`.
    pub add_hosts: Vec<(String, std::net::IpAddr)>,
    /// `--pull`: a base or `--from` image named by tag is resolved against its registry even
    /// when the store has the name (the store's image is used only when the registry answers
    /// with the same manifest).
    pub pull: bool,
    /// `--no-cache-filter`: the stages (by name) whose steps are never answered by
    /// a cache (the store's or a `--cache-from`'s); their results are still recorded.
    pub no_cache_filter: Vec<String>,
}

/// A named build context (`--build-context NAME=VALUE`), as BuildKit's dockerui
/// `namedContext` reads one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// An image, as kiln names one: a store name (pulled when absent; `docker-image://REF`),
    /// `oci:DIR[:REF|:sha256:…]` (`oci-layout://`), …
    Image(String),
    /// A directory: a local path, or a git checkout.
    Dir(PathBuf),
}

impl BuildOptions {
    /// The named context `reference` names: by its exact name, or as the same normalised image
    /// name (`alpine` and `docker.io/library/alpine:latest`), as BuildKit looks them up.
    pub fn named_context(&self, reference: &str) -> Option<&NamedContext> {
        if let Some(c) = self.named_contexts.get(reference) {
            return Some(c);
        }
        let full = |r: &str| {
            crate::registry::Reference::parse(r)
                .ok()
                .map(|r| r.to_string())
        };
        let norm = full(reference)?;
        self.named_contexts
            .iter()
            .find(|(k, _)| full(k).as_deref() == Some(norm.as_str()))
            .map(|(_, c)| c)
    }

    /// How the layers a step writes are made: compression, threads, and mtimes clamped to the
    /// epoch when one was given.
    pub fn layer_options(&self) -> crate::layer::LayerOptions {
        crate::layer::LayerOptions {
            compression: self.compression,
            threads: self.threads,
            // Clamped only to an epoch the user gave (see `clamp_mtimes`).
            epoch: if self.clamp_mtimes {
                self.epoch
            } else {
                i64::MAX
            },
        }
    }

    /// The key a step's layer is cached under with these options (`step_key`: its plan key):
    /// the compression and the timestamp rules change the layer's bytes.
    pub fn layer_key(&self, step_key: &str) -> String {
        crate::cache::layer_key(
            step_key,
            &self.compression.to_string(),
            self.epoch,
            self.clamp_mtimes,
        )
    }
}

/// A build secret's bytes. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// One layer of the result, for `--metadata-file`.
#[derive(Debug, Clone, Serialize)]
pub struct LayerRecord {
    /// The blob digest.
    pub digest: Digest,
    /// The diff_id.
    pub diff_id: Digest,
    /// The blob size.
    pub size: u64,
    /// The step that made it (history `created_by`), or `base` for the base image's layers.
    pub step: String,
    /// Whether it came from the cache (or the base image).
    pub cached: bool,
    /// Seconds spent making it.
    pub seconds: f64,
    /// For a layer this build wrote: what each stage of the layer pipeline cost (entries,
    /// bytes read, tarred, hashed, compressed and written; busy seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<crate::layer::LayerStats>,
}

/// One executed step, for progress and metadata (read back by `kiln bake --merge`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StepRecord {
    /// The stage's name or index.
    pub stage: String,
    /// The instruction (history text).
    pub step: String,
    /// Whether it was a cache hit (or made no layer and needed no work).
    pub cached: bool,
    /// Where its layer came from: `local` (the store's cache), `remote` (a `--cache-from`),
    /// `ran`, or `none` (a config step: no layer).
    pub cache: StepCache,
    /// For a `remote` hit: the cache, as `--cache-from` named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_from: Option<String>,
    /// Seconds spent.
    pub seconds: f64,
    /// The cache key.
    pub cache_key: String,
}

/// How a step was answered (see [`StepRecord::cache`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepCache {
    /// A hit in the store's layer cache.
    Local,
    /// A hit in a `--cache-from` cache.
    Remote,
    /// Executed.
    Ran,
    /// A config step (no layer, no work).
    None,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The image of the target stage.
    pub image: Image,
    /// Its names.
    pub names: Vec<String>,
    /// Its layers, base first.
    pub layers: Vec<LayerRecord>,
    /// Every step executed, in order, across stages.
    pub steps: Vec<StepRecord>,
    /// Context files read and hashed / answered by the file index.
    pub context_files_hashed: u64,
    /// Context files whose hash came from the index.
    pub context_files_reused: u64,
    /// Base and `--from` images as the plan names them: reference, platform (empty for a
    /// `--from` image), manifest digest (for provenance).
    pub images: Vec<(String, String, crate::oci::Digest)>,
    /// `ADD` URLs and their content's digest (for provenance).
    pub urls: Vec<(String, crate::oci::Digest)>,
}
