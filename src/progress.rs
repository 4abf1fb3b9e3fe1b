//! The `Reporter` trait: library code reports what it does through it; only `cli::render` draws.
//!
//! Library code never prints. Operations take `&dyn Reporter` and call it for warnings, build steps
//! and blob transfers; the CLI picks a renderer (terminal, plain lines, JSON lines, quiet) and tests
//! use a recording reporter.
//!
//! Blob transfers (pulls, pushes, `kiln copy`, lazy layers fetched during a build) arrive as
//! `on_transfer_*` events: each names the blob's digest and total size, and progress events say
//! how many bytes have moved so far, enough for a live view of every transfer in flight. The
//! registry client reports them through [`crate::registry::ReportTransfers`]; this module sits
//! below the registry in the module map for that reason and depends on [`crate::oci`] only.
use crate::oci::Digest;

/// Which way a blob moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From a registry.
    Download,
    /// To a registry.
    Upload,
}

/// How a blob transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// The registry had it already (a HEAD answered 200).
    Existed,
    /// A cross-repository mount made it appear without upload.
    Mounted,
    /// Its bytes were uploaded.
    Uploaded,
    /// Its bytes were downloaded and verified.
    Downloaded,
}

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
    /// A blob transfer of `size` bytes starts (transfers run in parallel; the digest tells
    /// them apart).
    fn on_transfer_start(&self, _digest: &Digest, _size: u64, _direction: Direction) {}
    /// `done` of the blob's `size` bytes have moved. Sent each time another
    /// [`TRANSFER_PROGRESS_STEP`] bytes have moved, and when the last byte has; after an
    /// upload's retry `done` starts again from 0 (a download resumes and keeps counting).
    fn on_transfer_progress(&self, _digest: &Digest, _size: u64, _done: u64) {}
    /// A transfer failed temporarily and is tried again.
    fn on_transfer_retry(&self, _digest: &Digest, _error: &str) {}
    /// A transfer finished, verified.
    fn on_transfer_done(&self, _digest: &Digest, _size: u64, _outcome: BlobOutcome) {}
}

/// How many bytes a transfer moves between two [`Reporter::on_transfer_progress`] events.
pub const TRANSFER_PROGRESS_STEP: u64 = 1 << 20;

/// A reporter that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopReporter;

impl Reporter for NoopReporter {}
