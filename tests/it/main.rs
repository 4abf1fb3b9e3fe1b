//! kiln's integration tests: one binary, one module per area.
mod support;

mod export;
mod store;
