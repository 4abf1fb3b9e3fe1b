//! kiln's integration tests: one binary, one module per area.
mod support;

mod attest;
mod bake;
mod build;
mod build_diff;
mod buildx_flags;
mod buildx_lines;
mod cli;
mod dockerfile;
mod export;
mod family;
mod fidelity;
mod gitsrc;
mod hardening;
mod hostile;
mod multiarch;
mod multiarch_family;
mod plan;
mod progress;
mod registry;
mod resolve;
mod run;
mod sandbox;
mod store;
mod unpack;
