//! Integration tests: one binary, one module per area (`support/` holds shared harnesses).
mod registry;
mod support;
