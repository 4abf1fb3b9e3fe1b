//! The `Reporter` trait: library code reports what it does through it; only `cli::render` draws.
//!
//! Library code never prints. Operations take `&dyn Reporter` and call it for warnings, build steps
//! and blob transfers; the CLI picks a renderer (terminal, plain lines, JSON lines, quiet) and tests
//! use a recording reporter.

/// Receives progress events from library code. Every method has a no-op default.
pub trait Reporter: Send + Sync {
    /// A warning the user should see (with its location already in the text).
    fn on_warning(&self, _text: &str) {}
    /// A free-form status line, such as "writing layer".
    fn on_status(&self, _text: &str) {}
    /// A build step starts: `label` is like `[build 2/5]`, `text` the instruction.
    fn on_step(&self, _id: usize, _label: &str, _text: &str) {}
    /// A build step ended: from the cache, or after `seconds`.
    fn on_step_done(&self, _id: usize, _cached: bool, _seconds: f64) {}
    /// Output of a RUN step.
    fn on_run_output(&self, _id: usize, _bytes: &[u8]) {}
}

/// A reporter that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopReporter;

impl Reporter for NoopReporter {}
