//! [`BlobWriter`]: a temp file that becomes a blob only once its digest is known.
use std::io::{self, Write};
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;

use crate::oci::Digest;

use super::{io_err, Error, Result, Store};

/// Writes a blob: bytes go to a temp file in the store's `tmp/` while being hashed; `finish`
/// renames it to `blobs/sha256/<digest>`. Dropped without `finish`, the temp file is deleted.
pub struct BlobWriter {
    file: io::BufWriter<NamedTempFile>,
    hasher: Sha256,
    size: u64,
    blobs: PathBuf,
}

impl BlobWriter {
    pub(super) fn new(store: &Store) -> Result<BlobWriter> {
        Self::new_in(store.root())
    }

    /// A writer into the store at `root`, for code that must own what it captures (a blob
    /// download running on another thread while the caller holds the [`Store`] and its lock).
    pub fn new_in(root: &std::path::Path) -> Result<BlobWriter> {
        let tmp_dir = root.join("tmp");
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&tmp_dir)
            .map_err(io_err("cannot create a temp file in", &tmp_dir))?;
        Ok(BlobWriter {
            file: io::BufWriter::with_capacity(256 * 1024, file),
            hasher: Sha256::new(),
            size: 0,
            blobs: root.join("blobs/sha256"),
        })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Names the blob after the digest of what was written; returns the digest and size.
    pub fn finish(self) -> Result<(Digest, u64)> {
        let digest = Digest::from_sha256_bytes(&self.hasher.clone().finalize());
        let size = self.size;
        self.persist(&digest)?;
        Ok((digest, size))
    }

    /// Like [`BlobWriter::finish`], but fails (and deletes the temp file) unless the content has
    /// `expected` as its digest and, when given, `size` bytes.
    pub fn finish_expecting(self, expected: &Digest, size: Option<u64>) -> Result<()> {
        // Size first: a source longer than its descriptor (read up to one byte past it) is
        // reported as that, not as a digest mismatch.
        if let Some(s) = size {
            if s != self.size {
                return Err(Error::SizeMismatch {
                    digest: expected.clone(),
                    expected: s,
                    actual: self.size,
                });
            }
        }
        let actual = Digest::from_sha256_bytes(&self.hasher.clone().finalize());
        if &actual != expected {
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                actual,
                size: self.size,
            });
        }
        self.persist(expected)
    }

    fn persist(self, digest: &Digest) -> Result<()> {
        let dest = self.blobs.join(digest.hex());
        let tmp = self.file.into_inner().map_err(|e| Error::Io {
            action: "cannot write",
            path: dest.clone(),
            source: e.into_error(),
        })?;
        tmp.persist(&dest).map_err(|e| Error::Io {
            action: "cannot write",
            path: dest,
            source: e.error,
        })?;
        Ok(())
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.hasher.update(buf);
        self.size += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
