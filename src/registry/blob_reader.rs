//! A blob as a verifying `Read`: for lazy layers and registry-to-registry copies that stream
//! from one registry's GET straight into another's PUT without a temporary file.
//!
//! The reader hashes what it hands out and, at the end of the stream, fails with
//! `InvalidData` (wrapping [`Error::DigestMismatch`] or [`Error::SizeMismatch`]) if the bytes do
//! not match: a consumer must treat everything it read as unverified until it sees `Ok(0)`. A
//! connection that breaks mid-body is resumed with a `Range` request, as in
//! [`Client::get_blob`]. With a size, a body longer than it fails at the first byte too many, and
//! every body is read through the speed meter ([`super::SpeedLimit`]).
use std::io::{self, Read};

use sha2::Digest as _;

use super::auth::Scope;
use super::client::{Body, Client};
use super::error::{redact_url, Error, Result};
use super::reference::Reference;
use crate::oci::{Algorithm, Digest};

/// A streaming, verifying reader over one blob. See the module documentation.
pub struct BlobReader {
    client: Client,
    reference: Reference,
    digest: Digest,
    size: Option<u64>,
    body: Option<Box<dyn Read + Send>>,
    hasher: sha2::Sha256,
    read: u64,
    skip: u64,
    retries: u32,
    url: String,
    done: bool,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("digest", &self.digest)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Opens a blob for streaming. The first request is made now, so a missing blob or refused
    /// credentials are a registry [`Error`] here rather than an I/O error on the first read.
    pub fn open_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<BlobReader> {
        if digest.algorithm() != Algorithm::Sha256 {
            return Err(Error::UnsupportedDigest {
                digest: digest.clone(),
            });
        }
        let mut reader = BlobReader {
            client: self.clone(),
            reference: r.clone(),
            digest: digest.clone(),
            size,
            body: None,
            hasher: sha2::Sha256::new(),
            read: 0,
            skip: 0,
            retries: 0,
            url: String::new(),
            done: false,
        };
        reader.request()?;
        Ok(reader)
    }
}

impl BlobReader {
    /// (Re)opens the body at the current offset.
    fn request(&mut self) -> Result<()> {
        let r = &self.reference;
        let path = format!("/v2/{}/blobs/{}", r.repository(), self.digest);
        let offset = self.read;
        let headers: Vec<(&str, String)> = if offset > 0 {
            vec![("Range", format!("bytes={offset}-"))]
        } else {
            vec![]
        };
        let scope = Scope::pull(r.repository());
        let resp = self
            .client
            .send(r.registry(), "GET", &path, &headers, Body::Empty, &scope)?
            .expect(&[200, 206])?;
        let resumed = resp.status == 206
            && resp
                .header("content-range")
                .is_some_and(|v| v.starts_with(&format!("bytes {offset}-")));
        // A registry that ignores `Range` sends everything again: drop what we already have.
        self.skip = if offset > 0 && !resumed { offset } else { 0 };
        self.url = redact_url(&resp.url);
        self.body = Some(Box::new(resp.reader()));
        Ok(())
    }

    fn finish(&mut self) -> io::Result<usize> {
        self.done = true;
        if let Some(want) = self.size {
            if self.read != want {
                return Err(invalid(Error::SizeMismatch {
                    digest: self.digest.clone(),
                    url: self.url.clone(),
                    expected: want,
                    actual: self.read,
                }));
            }
        }
        let actual = Digest::from_sha256_bytes(&self.hasher.clone().finalize());
        if actual != self.digest {
            return Err(invalid(Error::DigestMismatch {
                what: "blob",
                url: self.url.clone(),
                expected: self.digest.clone(),
                actual,
            }));
        }
        Ok(0)
    }

    /// Waits and reopens after a broken body, if retries are left.
    fn retry(&mut self, cause: io::Error) -> io::Result<()> {
        let policy = self.client.options().retry.clone();
        if self.retries >= policy.max_retries {
            return Err(cause);
        }
        std::thread::sleep(policy.delay(self.retries, None));
        self.retries += 1;
        self.body = None;
        self.request().map_err(io::Error::other)
    }
}

fn invalid(e: Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.done {
                return Ok(0);
            }
            if self.body.is_none() {
                self.request().map_err(io::Error::other)?;
            }
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            match body.read(buf) {
                Ok(0) => {
                    if self.size.is_some_and(|want| self.read < want) {
                        let cut =
                            io::Error::new(io::ErrorKind::UnexpectedEof, "blob body ended early");
                        self.retry(cut)?;
                        continue;
                    }
                    return self.finish();
                }
                Ok(mut n) => {
                    if self.skip > 0 {
                        let drop = self.skip.min(n as u64) as usize;
                        self.skip -= drop as u64;
                        buf.copy_within(drop..n, 0);
                        n -= drop;
                        if n == 0 {
                            continue;
                        }
                    }
                    if self.size.is_some_and(|want| self.read + n as u64 > want) {
                        return self.finish_oversized(n);
                    }
                    self.hasher.update(&buf[..n]);
                    self.read += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => self.retry(e)?,
            }
        }
    }
}

impl BlobReader {
    fn finish_oversized(&mut self, _n: usize) -> io::Result<usize> {
        self.done = true;
        Err(invalid(Error::BlobTooLong {
            digest: self.digest.clone(),
            url: self.url.clone(),
            expected: self.size.unwrap_or(0),
        }))
    }
}
