//! Concurrent blob transfers: up to `jobs` blobs at once on scoped std threads.
//!
//! Workers take the next blob from a shared counter; after the first error no new blob is
//! started, running ones finish, and that first error is returned. Connections are pooled by
//! the client's agent, so `jobs` threads reuse up to `jobs` connections per registry.
//!
//! [`ReportTransfers`] reports the transfers to a [`Reporter`].
use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::auth::Scope;
use super::blobs::{BlobOutcome, BlobUpload, TransferProgress};
use super::client::Client;
use super::error::{Error, Result};
use super::reference::Reference;
use crate::oci::{Descriptor, Digest};
use crate::progress::{Direction, Reporter, TRANSFER_PROGRESS_STEP};

/// A [`TransferProgress`] that reports to a [`Reporter`]: it keeps each transfer's size and
/// bytes so far, and sends `on_transfer_progress` every [`TRANSFER_PROGRESS_STEP`] bytes
/// rather than for every buffer.
pub struct ReportTransfers<'a> {
    reporter: &'a dyn Reporter,
    direction: Direction,
    /// Digest → (size, bytes so far, bytes at the last progress event).
    transfers: Mutex<HashMap<Digest, (u64, u64, u64)>>,
}

impl<'a> ReportTransfers<'a> {
    /// Reports transfers in `direction` to `reporter`.
    pub fn new(reporter: &'a dyn Reporter, direction: Direction) -> ReportTransfers<'a> {
        ReportTransfers {
            reporter,
            direction,
            transfers: Mutex::new(HashMap::new()),
        }
    }

    fn transfers(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, (u64, u64, u64)>> {
        self.transfers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TransferProgress for ReportTransfers<'_> {
    fn on_start(&self, digest: &Digest, size: u64) {
        self.transfers().insert(digest.clone(), (size, 0, 0));
        self.reporter
            .on_transfer_start(digest, size, self.direction);
    }

    fn on_bytes(&self, digest: &Digest, bytes: u64) {
        let due = {
            let mut t = self.transfers();
            let Some((size, done, shown)) = t.get_mut(digest) else {
                return;
            };
            *done += bytes;
            let due = *done >= shown.saturating_add(TRANSFER_PROGRESS_STEP) || *done == *size;
            if due {
                *shown = *done;
            }
            due.then_some((*size, *done))
        };
        // The reporter is called without the lock held: it may be slow (a terminal).
        if let Some((size, done)) = due {
            self.reporter.on_transfer_progress(digest, size, done);
        }
    }

    fn on_retry(&self, digest: &Digest, error: &Error) {
        if self.direction == Direction::Upload {
            // An upload starts over from a fresh reader.
            if let Some((_, done, shown)) = self.transfers().get_mut(digest) {
                (*done, *shown) = (0, 0);
            }
        }
        self.reporter.on_transfer_retry(digest, &error.to_string());
    }

    fn on_done(&self, digest: &Digest, outcome: BlobOutcome) {
        let size = self
            .transfers()
            .remove(digest)
            .map_or(0, |(size, _, _)| size);
        self.reporter.on_transfer_done(digest, size, outcome);
    }
}

/// Where a downloaded blob goes: a writer (a temporary file) that is committed (renamed into
/// place) only after the blob was verified, and dropped otherwise.
pub trait BlobSink: Write + Send {
    /// Makes the verified bytes visible under their final name.
    fn commit(self: Box<Self>) -> io::Result<()>;
}

/// Opens a sink for a descriptor.
pub type OpenSink = dyn Fn(&Descriptor) -> io::Result<Box<dyn BlobSink>> + Sync;

fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let workers = jobs.clamp(1, items.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if failed.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { return };
                match f(item) {
                    Ok(r) => results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r),
                    Err(e) => {
                        failed.store(true, Ordering::SeqCst);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every item ran when no worker failed"))
        .collect())
}

/// Pushes `blobs` to `r`'s repository, `jobs` at a time; returns each blob's outcome, in order.
pub fn push_blobs(
    client: &Client,
    r: &Reference,
    blobs: &[BlobUpload],
    jobs: usize,
    progress: &dyn TransferProgress,
) -> Result<Vec<BlobOutcome>> {
    // Authenticate once before the workers start, so they share one token whose scope covers
    // the push and every mount source.
    let mut scope = Scope::push(r.repository());
    for b in blobs {
        for from in &b.mount_from {
            scope = scope.with(from, &["pull"]);
        }
    }
    client.authenticate(r.registry(), &scope)?;
    // The same blob twice in one push (two identical layers) is pushed once.
    let mut first: Vec<usize> = Vec::with_capacity(blobs.len());
    let mut unique: Vec<&BlobUpload> = Vec::new();
    for b in blobs {
        match unique.iter().position(|u| u.digest == b.digest) {
            Some(i) => first.push(i),
            None => {
                first.push(unique.len());
                unique.push(b);
            }
        }
    }
    let outcomes = run_parallel(&unique, jobs, |b| client.push_blob(r, b, progress))?;
    Ok(first.into_iter().map(|i| outcomes[i]).collect())
}

/// Downloads `blobs` from `r`'s repository into sinks from `open`, `jobs` at a time; each sink
/// is committed only after its blob's digest and size were verified.
pub fn pull_blobs(
    client: &Client,
    r: &Reference,
    blobs: &[Descriptor],
    jobs: usize,
    progress: &dyn TransferProgress,
    open: &OpenSink,
) -> Result<()> {
    client.authenticate(r.registry(), &Scope::pull(r.repository()))?;
    run_parallel(blobs, jobs, |d| {
        let write_err = |source| Error::WriteBlob {
            digest: d.digest.clone(),
            source,
        };
        let mut sink = open(d).map_err(write_err)?;
        client.get_blob(r, &d.digest, Some(d.size), &mut sink, progress)?;
        sink.commit().map_err(write_err)
    })
    .map(|_| ())
}
