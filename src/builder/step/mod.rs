//! One file per kind of step, each an `impl` block of [`super::Builder`] or the pure rules it
//! applies: COPY and ADD ([`copy`]), RUN ([`run`], its mounts in [`mounts`], its diff as layer
//! entries in [`diff`]), and the config edits and WORKDIR ([`config`]). The stage loop that
//! calls them, the cache and the layer writing are in `super::stage`.
pub(super) mod config;
pub(super) mod copy;
pub(super) mod diff;
pub(super) mod mounts;
pub(super) mod run;
