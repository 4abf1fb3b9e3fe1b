//! Blobs: HEAD, verified streaming GET, cross-repository mount, and uploads (monolithic or
//! chunked) that restart from a fresh reader when they break.
//!
//! Push order for one blob (go-containerregistry `remote/write.go` does the same): HEAD, and
//! skip it if the registry has it; try a mount from each `mount_from` repository (201 means
//! done; a 202 is the registry declining — Harbor and GHCR do, and distribution does when the
//! source is missing — and hands us an upload session, which we use); else POST an upload
//! session; then PUT the whole blob (or PATCH chunks, then PUT). A temporary failure anywhere
//! re-opens the reader and starts a new session for that blob only, after a HEAD in case the
//! failed PUT landed after all.
use std::io::{self, Read, Write};

use super::auth::Scope;
use super::client::{add_query, resolve_url, Body, Client, UploadMode};
use super::error::{redact_url, Error, Result};
use super::reference::Reference;
use super::retry::{retry, Attempt, Verdict};
use crate::oci::{Algorithm, Digest, Sha256Writer};

pub use crate::progress::BlobOutcome;

/// Progress of blob transfers. Every method has a no-op default; implementations must be cheap
/// (they are called from worker threads for every buffer). [`super::ReportTransfers`] turns
/// them into [`crate::progress::Reporter`] events.
pub trait TransferProgress: Send + Sync {
    /// A transfer of `size` bytes starts.
    fn on_start(&self, _digest: &Digest, _size: u64) {}
    /// `bytes` more bytes were sent or received.
    fn on_bytes(&self, _digest: &Digest, _bytes: u64) {}
    /// A transfer failed temporarily. An upload starts over (bytes reported so far for this
    /// digest no longer count); a download resumes where it stopped (they still count).
    fn on_retry(&self, _digest: &Digest, _error: &Error) {}
    /// A transfer finished.
    fn on_done(&self, _digest: &Digest, _outcome: BlobOutcome) {}
}

/// A [`TransferProgress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl TransferProgress for NoProgress {}

/// Opens a fresh reader over a blob's bytes (called again for every restart).
pub type OpenBlob = dyn Fn() -> io::Result<Box<dyn Read + Send>> + Send + Sync;

/// A blob to push.
pub struct BlobUpload {
    /// Its digest (the registry checks it on the final PUT).
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Opens its bytes; called once per attempt.
    pub open: Box<OpenBlob>,
    /// Repositories in the same registry that may hold it, tried for a mount in order.
    pub mount_from: Vec<String>,
}

impl std::fmt::Debug for BlobUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobUpload")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("mount_from", &self.mount_from)
            .finish_non_exhaustive()
    }
}

/// The answer to a mount request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountResult {
    /// 201: the blob is now in the target repository.
    Mounted,
    /// 202: the registry declined and opened an upload session at this URL instead.
    Session(String),
}

/// A reader that counts, reports progress, and remembers whether the source itself failed.
struct Counting<'a> {
    inner: &'a mut dyn Read,
    count: u64,
    /// The size announced; reaching EOF before it is the caller's bug, not the network's.
    expected: u64,
    ended_short: bool,
    source_error: Option<io::Error>,
    digest: &'a Digest,
    progress: &'a dyn TransferProgress,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() && self.count < self.expected => {
                // An error, not Ok(0): an HTTP body writer that was promised `expected` bytes
                // would keep asking for more.
                self.ended_short = true;
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the local blob is shorter than announced",
                ))
            }
            Ok(n) => {
                self.count += n as u64;
                if n > 0 {
                    self.progress.on_bytes(self.digest, n as u64);
                }
                Ok(n)
            }
            Err(e) => {
                let kind = e.kind();
                self.source_error = Some(e);
                Err(io::Error::new(kind, "reading the local blob failed"))
            }
        }
    }
}

impl Client {
    fn blob_path(r: &Reference, digest: &Digest) -> String {
        format!("/v2/{}/blobs/{digest}", r.repository())
    }

    /// `HEAD` of a blob: its size if the repository has it, `None` if not.
    pub fn blob_exists(&self, r: &Reference, digest: &Digest) -> Result<Option<u64>> {
        let path = Self::blob_path(r, digest);
        let resp = self.send(
            r.registry(),
            "HEAD",
            &path,
            &[],
            Body::Empty,
            &Scope::pull(r.repository()),
        )?;
        if resp.status == 404 {
            return Ok(None);
        }
        let resp = resp.expect(&[200])?;
        Ok(Some(
            resp.header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        ))
    }

    /// Streams a blob into `out` while hashing it, and returns Ok only if the bytes match
    /// `digest` (and `size`, when given). A connection that breaks mid-body is resumed with a
    /// `Range` request (or by skipping what we have if the registry ignores `Range`). On error,
    /// `out` holds garbage: write to a temporary file and rename only on Ok.
    pub fn get_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        size: Option<u64>,
        out: &mut dyn Write,
        progress: &dyn TransferProgress,
    ) -> Result<u64> {
        if digest.algorithm() != Algorithm::Sha256 {
            return Err(Error::UnsupportedDigest {
                digest: digest.clone(),
            });
        }
        let path = Self::blob_path(r, digest);
        let scope = Scope::pull(r.repository());
        let mut hasher = Sha256Writer::new(out);
        let mut last_url = String::new();
        progress.on_start(digest, size.unwrap_or(0));
        // Each attempt asks for the bytes from where the last one stopped.
        let attempt = |_| -> std::result::Result<(), Attempt<Error>> {
            let offset = hasher.written();
            let headers: Vec<(&str, String)> = if offset > 0 {
                vec![("Range", format!("bytes={offset}-"))]
            } else {
                vec![]
            };
            // `send` has retried the request itself.
            let resp = self
                .send(r.registry(), "GET", &path, &headers, Body::Empty, &scope)
                .and_then(|resp| resp.expect(&[200, 206]))
                .map_err(Attempt::Final)?;
            last_url = redact_url(&resp.url);
            let mut skip = 0;
            if offset > 0 {
                let resumed = resp.status == 206
                    && resp
                        .header("content-range")
                        .is_some_and(|v| v.starts_with(&format!("bytes {offset}-")));
                if !resumed {
                    // The registry sent the whole blob again: drop what we already have.
                    skip = offset;
                }
            }
            let mut reader = resp.reader();
            // Never more than the descriptor says (plus one byte, to see that there is more):
            // an endless body fails here instead of filling the disk.
            let bound = size.map(|want| want.saturating_sub(offset) + skip + 1);
            match copy_body(&mut reader, &mut hasher, skip, bound, digest, progress) {
                Ok(()) => {}
                Err(CopyError::Write(source)) => {
                    return Err(Attempt::Final(Error::WriteBlob {
                        digest: digest.clone(),
                        source,
                    }))
                }
                Err(CopyError::TooLong) => {
                    return Err(Attempt::Final(Error::BlobTooLong {
                        digest: digest.clone(),
                        url: last_url.clone(),
                        expected: size.unwrap_or(0),
                    }))
                }
                Err(CopyError::Read(e)) => {
                    let err = Error::from_body_io(r.registry(), "GET", &last_url, e);
                    return Err(Attempt::Again(err));
                }
            }
            let got = hasher.written();
            match size {
                Some(want) if got != want => {
                    let err = Error::SizeMismatch {
                        digest: digest.clone(),
                        url: last_url.clone(),
                        expected: want,
                        actual: got,
                    };
                    // A body shorter than promised without an I/O error (no Content-Length)
                    // resumes too.
                    Err(match got < want {
                        true => Attempt::Again(err),
                        false => Attempt::Final(err),
                    })
                }
                _ => Ok(()),
            }
        };
        retry(
            &self.options().retry,
            attempt,
            |a| match a {
                Attempt::Again(_) => Verdict::Retry(None),
                Attempt::Final(_) => Verdict::Stop,
            },
            |a| progress.on_retry(digest, a.error()),
        )
        .map_err(Attempt::into_error)?;
        hasher.flush().map_err(|source| Error::WriteBlob {
            digest: digest.clone(),
            source,
        })?;
        let (_, actual, n) = hasher.finish();
        if &actual != digest {
            return Err(Error::DigestMismatch {
                what: "blob",
                url: last_url,
                expected: digest.clone(),
                actual,
            });
        }
        progress.on_done(digest, BlobOutcome::Downloaded);
        Ok(n)
    }

    /// Downloads a foreign (non-distributable) layer from the `urls` of its descriptor, the way
    /// Docker fetched Windows base layers: anonymous GETs, redirects followed, the bytes verified
    /// against the descriptor's digest and size. Only `http` and `https` URLs are tried, in
    /// order, moving on only while nothing has been written to `out`.
    pub fn get_foreign_blob(
        &self,
        desc: &crate::oci::Descriptor,
        out: &mut dyn Write,
        progress: &dyn TransferProgress,
    ) -> Result<u64> {
        if desc.digest.algorithm() != Algorithm::Sha256 {
            return Err(Error::UnsupportedDigest {
                digest: desc.digest.clone(),
            });
        }
        let mut hasher = Sha256Writer::new(out);
        let mut last_err = None;
        progress.on_start(&desc.digest, desc.size);
        for url in desc
            .urls
            .iter()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        {
            let host = super::client::authority(url)
                .split("://")
                .nth(1)
                .unwrap_or(url)
                .to_string();
            let attempt = self
                .raw_send(&host, "GET", url, &[], Body::Empty, None)
                .and_then(|resp| resp.expect(&[200]));
            let resp = match attempt {
                Ok(r) => r,
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            };
            let shown = redact_url(url);
            match copy_body(
                &mut resp.reader(),
                &mut hasher,
                0,
                Some(desc.size + 1),
                &desc.digest,
                progress,
            ) {
                Ok(()) => {}
                Err(CopyError::Write(source)) => {
                    return Err(Error::WriteBlob {
                        digest: desc.digest.clone(),
                        source,
                    })
                }
                Err(CopyError::TooLong) => {
                    return Err(Error::BlobTooLong {
                        digest: desc.digest.clone(),
                        url: shown,
                        expected: desc.size,
                    })
                }
                Err(CopyError::Read(e)) => {
                    let err = Error::from_body_io(&host, "GET", &shown, e);
                    if hasher.written() > 0 {
                        return Err(err);
                    }
                    last_err = Some(err);
                    continue;
                }
            }
            let n = hasher.written();
            hasher.flush().map_err(|source| Error::WriteBlob {
                digest: desc.digest.clone(),
                source,
            })?;
            let (_, actual, _) = hasher.finish();
            if n != desc.size {
                return Err(Error::SizeMismatch {
                    digest: desc.digest.clone(),
                    url: shown,
                    expected: desc.size,
                    actual: n,
                });
            }
            if actual != desc.digest {
                return Err(Error::DigestMismatch {
                    what: "blob",
                    url: shown,
                    expected: desc.digest.clone(),
                    actual,
                });
            }
            progress.on_done(&desc.digest, BlobOutcome::Downloaded);
            return Ok(n);
        }
        Err(last_err.unwrap_or_else(|| Error::NoBlobUrls {
            digest: desc.digest.clone(),
        }))
    }

    /// Asks the registry to mount `digest` from repository `from` into `r`'s repository.
    pub fn mount_blob(&self, r: &Reference, digest: &Digest, from: &str) -> Result<MountResult> {
        let path = format!("/v2/{}/blobs/uploads/", r.repository());
        let path = add_query(
            &add_query(&path, "mount", &digest.to_string()),
            "from",
            from,
        );
        // The token must cover pull on the source too, or the registry silently declines.
        let scope = Scope::push(r.repository()).with(from, &["pull"]);
        let resp = self.send(r.registry(), "POST", &path, &[], Body::Empty, &scope)?;
        match resp.status {
            201 => {
                resp.drain();
                Ok(MountResult::Mounted)
            }
            202 => {
                let loc = location(&resp)?;
                resp.drain();
                Ok(MountResult::Session(loc))
            }
            _ => Err(resp.into_error()),
        }
    }

    /// Opens an upload session: its URL and the registry's minimum chunk size, if it states one.
    fn start_upload(&self, r: &Reference) -> Result<(String, u64)> {
        let path = format!("/v2/{}/blobs/uploads/", r.repository());
        let resp = self
            .send(
                r.registry(),
                "POST",
                &path,
                &[],
                Body::Empty,
                &Scope::push(r.repository()),
            )?
            .expect(&[202])?;
        let loc = location(&resp)?;
        let min = resp
            .header("oci-chunk-min-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        resp.drain();
        Ok((loc, min))
    }

    /// Pushes one blob: skip, mount, or upload, restarting that blob on temporary failures.
    pub fn push_blob(
        &self,
        r: &Reference,
        blob: &BlobUpload,
        progress: &dyn TransferProgress,
    ) -> Result<BlobOutcome> {
        progress.on_start(&blob.digest, blob.size);
        let outcome = self.push_blob_inner(r, blob, progress)?;
        progress.on_done(&blob.digest, outcome);
        Ok(outcome)
    }

    fn push_blob_inner(
        &self,
        r: &Reference,
        blob: &BlobUpload,
        progress: &dyn TransferProgress,
    ) -> Result<BlobOutcome> {
        if self.blob_exists(r, &blob.digest)?.is_some() {
            return Ok(BlobOutcome::Existed);
        }
        let mut session: Option<(String, u64)> = None;
        for from in blob
            .mount_from
            .iter()
            .filter(|f| f.as_str() != r.repository())
        {
            match self.mount_blob(r, &blob.digest, from) {
                Ok(MountResult::Mounted) => return Ok(BlobOutcome::Mounted),
                Ok(MountResult::Session(loc)) => {
                    session = Some((loc, 0));
                    break;
                }
                // A registry that refuses mounts outright (404, 401/403 on the source, 405)
                // still takes uploads.
                Err(e) if !e.is_temporary() => continue,
                Err(e) => return Err(e),
            }
        }
        let mut reauthed = false;
        retry(
            &self.options().retry,
            |attempt| {
                // The PUT may have landed even though its answer was lost.
                if attempt > 0 {
                    if let Ok(Some(_)) = self.blob_exists(r, &blob.digest) {
                        return Ok(());
                    }
                }
                let (loc, min_chunk) = match session.take() {
                    Some(s) => s,
                    // `send` has retried the POST itself.
                    None => self.start_upload(r).map_err(Attempt::Final)?,
                };
                self.upload(r, blob, &loc, min_chunk, progress)
                    .map_err(Attempt::Again)
            },
            |a| match a {
                // The token expired mid-upload: `send` fetched a new one; go again once.
                Attempt::Again(e) if e.is_unauthorized() && !reauthed => {
                    reauthed = true;
                    Verdict::RetryAnyway(e.retry_after())
                }
                Attempt::Again(e) if e.is_temporary() => Verdict::Retry(e.retry_after()),
                _ => Verdict::Stop,
            },
            |a| progress.on_retry(&blob.digest, a.error()),
        )
        .map(|()| BlobOutcome::Uploaded)
        .map_err(Attempt::into_error)
    }

    fn upload(
        &self,
        r: &Reference,
        blob: &BlobUpload,
        loc: &str,
        min_chunk: u64,
        progress: &dyn TransferProgress,
    ) -> Result<()> {
        let mut source = (blob.open)().map_err(|source| Error::ReadBlob {
            digest: blob.digest.clone(),
            source,
        })?;
        let mut counting = Counting {
            inner: &mut *source,
            count: 0,
            expected: blob.size,
            ended_short: false,
            source_error: None,
            digest: &blob.digest,
            progress,
        };
        let scope = Scope::push(r.repository());
        let digest_text = blob.digest.to_string();
        let result = match self.options().upload {
            UploadMode::Monolithic => {
                let url = add_query(loc, "digest", &digest_text);
                let headers = [("Content-Type", "application/octet-stream".to_string())];
                let body = Body::Reader {
                    reader: &mut counting,
                    len: blob.size,
                };
                self.send(r.registry(), "PUT", &url, &headers, body, &scope)
                    .and_then(|resp| resp.expect(&[201, 204]))
                    .map(|resp| resp.drain())
            }
            UploadMode::Chunked { chunk_size } => self.upload_chunks(
                r,
                blob,
                loc,
                chunk_size.max(min_chunk).max(1),
                &mut counting,
                &scope,
            ),
        };
        if let Some(source) = counting.source_error.take() {
            return Err(Error::ReadBlob {
                digest: blob.digest.clone(),
                source,
            });
        }
        if result.is_err() && counting.ended_short {
            return Err(Error::UploadSize {
                digest: blob.digest.clone(),
                expected: blob.size,
                actual: counting.count,
            });
        }
        result
    }

    fn upload_chunks(
        &self,
        r: &Reference,
        blob: &BlobUpload,
        loc: &str,
        chunk: u64,
        reader: &mut Counting<'_>,
        scope: &Scope,
    ) -> Result<()> {
        let mut loc = loc.to_string();
        let mut offset = 0u64;
        while offset < blob.size {
            let n = chunk.min(blob.size - offset);
            let headers = [
                ("Content-Type", "application/octet-stream".to_string()),
                // distribution and the OCI spec use `start-end`, inclusive, without `bytes `.
                ("Content-Range", format!("{offset}-{}", offset + n - 1)),
            ];
            let mut part = (&mut *reader).take(n);
            let body = Body::Reader {
                reader: &mut part,
                len: n,
            };
            // The spec answers a PATCH with 202; some proxies in front of registries send 204.
            let resp = self
                .send(r.registry(), "PATCH", &loc, &headers, body, scope)?
                .expect(&[202, 204])?;
            loc = location(&resp)?;
            resp.drain();
            offset += n;
        }
        let url = add_query(&loc, "digest", &blob.digest.to_string());
        self.send(r.registry(), "PUT", &url, &[], Body::Empty, scope)?
            .expect(&[201, 204])?
            .drain();
        Ok(())
    }
}

/// The absolute upload URL from a response's `Location`.
fn location(resp: &super::client::Response) -> Result<String> {
    resp.header("location")
        .filter(|l| !l.is_empty())
        .map(|l| resolve_url(&resp.url, l))
        .ok_or_else(|| Error::BadHeader {
            registry: resp.registry.clone(),
            method: resp.method,
            url: redact_url(&resp.url),
            header: "Location",
        })
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
    /// The body reached `bound` bytes: longer than its descriptor says.
    TooLong,
}

/// Copies a response body into the hashing writer, dropping the first `skip` bytes. With a
/// `bound`, reading that many bytes is [`CopyError::TooLong`] (pass the expected length plus
/// one): the bytes past the end are never written.
fn copy_body(
    reader: &mut dyn Read,
    out: &mut dyn Write,
    mut skip: u64,
    bound: Option<u64>,
    digest: &Digest,
    progress: &dyn TransferProgress,
) -> std::result::Result<(), CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut reader = reader.take(bound.unwrap_or(u64::MAX));
    let mut seen = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        seen += n as u64;
        let mut n = n;
        if bound.is_some_and(|b| seen >= b) {
            // Keep what fits (the last byte read is the one too many), then stop.
            n -= 1;
            if n == 0 {
                return Err(CopyError::TooLong);
            }
        }
        let mut chunk = &buf[..n];
        if skip > 0 {
            let drop = skip.min(n as u64) as usize;
            skip -= drop as u64;
            chunk = &chunk[drop..];
        }
        if !chunk.is_empty() {
            out.write_all(chunk).map_err(CopyError::Write)?;
            progress.on_bytes(digest, chunk.len() as u64);
        }
        if bound.is_some_and(|b| seen >= b) {
            return Err(CopyError::TooLong);
        }
    }
}
