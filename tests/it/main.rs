//! kiln's integration tests: one binary, one module per area.
mod support;

mod bake;
mod build;
mod build_diff;
mod dockerfile;
mod export;
mod hostile;
mod plan;
mod registry;
mod registry_cli;
mod resolve;
mod run;
mod sandbox;
mod store;
mod unpack;
