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
//!
//! Build steps are BuildKit's vertices: each has an id (`#N` in plain output), a name as
//! BuildKit shows it (`[build 2/5] RUN apt-get update`, `[internal] load build context`,
//! `exporting to image`), status lines with optional byte counts (`writing layer 12.5MB / 300MB`,
//! `naming to …`), output lines, and an end (done, cached or failed). [`Task`] is the handle
//! library code holds while a step runs. A renderer attributes the blob transfers that happen
//! while a step runs to it, as BuildKit shows layer pulls under `FROM` and pushes under
//! `exporting to image`. When a build is over, [`Reporter::on_result`] carries its digests.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

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
    /// A status line of step `id` (BuildKit's vertex status): new, advanced or completed.
    /// Sent at most every [`STATUS_INTERVAL`] while it advances.
    fn on_step_status(&self, _id: usize, _status: &Status<'_>) {}
    /// Step `id` failed with `error` (its whole message, causes joined by `: `).
    fn on_step_error(&self, _id: usize, _error: &str) {}
    /// The build is over: what it made.
    fn on_result(&self, _result: &BuildResult) {}
}

/// One status line of a step, as BuildKit's `VertexStatus`: `name`, with `current` of `total`
/// units (bytes when `bytes`), completed when `done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status<'a> {
    /// What it is, also the line's identity within its step (`writing layer`,
    /// `transferring context`, `naming to docker.io/library/app:latest`).
    pub name: &'a str,
    /// How far it is.
    pub current: u64,
    /// Of how much, when known (0: unknown).
    pub total: u64,
    /// Whether `current` and `total` count bytes (drawn as `12.58MB / 27.15MB`).
    pub bytes: bool,
    /// Whether it has completed.
    pub done: bool,
}

impl<'a> Status<'a> {
    /// A completed status line without counts (`writing image sha256:… done`).
    pub fn done(name: &'a str) -> Status<'a> {
        Status {
            name,
            current: 0,
            total: 0,
            bytes: false,
            done: true,
        }
    }

    /// A byte counter: `current` of `total` bytes (0: unknown).
    pub fn bytes(name: &'a str, current: u64, total: u64, done: bool) -> Status<'a> {
        Status {
            name,
            current,
            total,
            bytes: true,
            done,
        }
    }
}

/// The digests of one built image (one platform).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDigests {
    /// Its platform (`linux/amd64`).
    pub platform: String,
    /// The manifest's digest.
    pub manifest: Digest,
    /// The config's digest (the image id docker shows).
    pub config: Digest,
}

/// What a build made: the digest printed on stdout, the images, the names given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    /// The digest the build prints (the index's for several platforms, else the manifest's).
    pub digest: Digest,
    /// The index's digest, when several platforms were built into one.
    pub index: Option<Digest>,
    /// One entry per platform.
    pub images: Vec<ImageDigests>,
    /// The names (tags) given to it.
    pub names: Vec<String>,
}

/// A new step id, unique in this process (ids are handed out in order, so a build's steps
/// come in the order they started; renderers number them for display as they first see them).
pub fn next_id() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// How often a step's advancing status is reported, at most.
pub const STATUS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// A running step: started with a name, given status lines, ended once. Dropping it without
/// ending it reports nothing more (the error that ended the build is reported by the caller).
pub struct Task<'r> {
    reporter: &'r dyn Reporter,
    id: usize,
    start: Instant,
}

impl<'r> Task<'r> {
    /// Reports a new step as started, named `label` (`[build 2/5]`, `[internal]`, or empty)
    /// and `text`.
    pub fn start(reporter: &'r dyn Reporter, label: &str, text: &str) -> Task<'r> {
        let id = next_id();
        reporter.on_step(id, label, text);
        Task {
            reporter,
            id,
            start: Instant::now(),
        }
    }

    /// Its id.
    pub fn id(&self) -> usize {
        self.id
    }

    /// When it started.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// Reports a status line.
    pub fn status(&self, status: &Status<'_>) {
        self.reporter.on_step_status(self.id, status);
    }

    /// Reports it as done, after the time since it started.
    pub fn done(self) {
        let seconds = self.start.elapsed().as_secs_f64();
        self.reporter.on_step_done(self.id, false, seconds);
    }

    /// Reports it as answered by the cache.
    pub fn cached(self) {
        self.reporter.on_step_done(self.id, true, 0.0);
    }

    /// Reports it as failed with `error`.
    pub fn failed(self, error: &str) {
        self.reporter.on_step_error(self.id, error);
    }
}

/// How many bytes a transfer moves between two [`Reporter::on_transfer_progress`] events.
pub const TRANSFER_PROGRESS_STEP: u64 = 1 << 20;

/// Forwards everything to another reporter, the steps' labels prefixed with a platform as
/// BuildKit names the steps of a multi-platform build (`[linux/arm64 build 2/5]`,
/// `[linux/arm64 internal]`). A method added to [`Reporter`] must be forwarded here too.
pub struct PlatformSteps<'r> {
    /// Where the events go.
    pub inner: &'r dyn Reporter,
    /// The platform (`linux/arm64`).
    pub platform: String,
}

impl Reporter for PlatformSteps<'_> {
    fn on_warning(&self, text: &str) {
        self.inner.on_warning(text);
    }
    fn on_status(&self, text: &str) {
        self.inner.on_status(text);
    }
    fn on_step(&self, id: usize, label: &str, text: &str) {
        match label.strip_prefix('[') {
            Some(rest) => {
                let label = format!("[{} {rest}", self.platform);
                self.inner.on_step(id, &label, text);
            }
            None => self.inner.on_step(id, label, text),
        }
    }
    fn on_step_done(&self, id: usize, cached: bool, seconds: f64) {
        self.inner.on_step_done(id, cached, seconds);
    }
    fn on_run_output(&self, id: usize, bytes: &[u8]) {
        self.inner.on_run_output(id, bytes);
    }
    fn on_transfer_start(&self, digest: &Digest, size: u64, direction: Direction) {
        self.inner.on_transfer_start(digest, size, direction);
    }
    fn on_transfer_progress(&self, digest: &Digest, size: u64, done: u64) {
        self.inner.on_transfer_progress(digest, size, done);
    }
    fn on_transfer_retry(&self, digest: &Digest, error: &str) {
        self.inner.on_transfer_retry(digest, error);
    }
    fn on_transfer_done(&self, digest: &Digest, size: u64, outcome: BlobOutcome) {
        self.inner.on_transfer_done(digest, size, outcome);
    }
    fn on_step_status(&self, id: usize, status: &Status<'_>) {
        self.inner.on_step_status(id, status);
    }
    fn on_step_error(&self, id: usize, error: &str) {
        self.inner.on_step_error(id, error);
    }
    fn on_result(&self, result: &BuildResult) {
        self.inner.on_result(result);
    }
}

/// A reporter that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopReporter;

impl Reporter for NoopReporter {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Labels(Mutex<Vec<String>>);

    impl Reporter for Labels {
        fn on_step(&self, _id: usize, label: &str, text: &str) {
            self.0.lock().unwrap().push(format!("{label}|{text}"));
        }
    }

    #[test]
    fn a_platforms_steps_are_labelled_as_buildkit_labels_them() {
        let inner = Labels::default();
        let r = PlatformSteps {
            inner: &inner,
            platform: "linux/arm64".into(),
        };
        Task::start(&r, "[build 2/5]", "RUN make").done();
        Task::start(&r, "[internal]", "load build context").done();
        Task::start(&r, "", "exporting to image").done();
        assert_eq!(
            *inner.0.lock().unwrap(),
            [
                "[linux/arm64 build 2/5]|RUN make",
                "[linux/arm64 internal]|load build context",
                "|exporting to image",
            ]
        );
    }
}
