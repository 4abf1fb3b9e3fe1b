//! kiln's integration tests: one binary, one module per area.
mod support;

mod build;
mod dockerfile;
mod export;
mod plan;
mod registry;
mod run;
mod sandbox;
mod store;
mod unpack;
