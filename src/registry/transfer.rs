//! Concurrent blob transfers: up to `jobs` blobs at once on scoped std threads.
//!
//! Workers take the next blob from a shared counter; after the first error no new blob is
//! started, running ones finish, and that first error is returned. Connections are pooled by
//! the client's agent, so `jobs` threads reuse up to `jobs` connections per registry.
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::auth::Scope;
use super::blobs::{BlobOutcome, BlobUpload, TransferProgress};
use super::client::Client;
use super::error::{Error, Result};
use super::reference::Reference;
use crate::oci::Descriptor;

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
