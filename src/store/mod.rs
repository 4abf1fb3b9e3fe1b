//! The local store: an OCI image layout on disk under `--root`.
//!
//! Layout: `oci-layout`, `index.json` (names live here as `org.opencontainers.image.ref.name`
//! annotations), `blobs/sha256/<hex>`, `tmp/` (temp files, same filesystem, so renames are atomic),
//! `origins/<hex>` (where a blob can be fetched from, see `origins.rs`; a layer missing from
//! `blobs/` but recorded there is *lazy*), and two lock files. What it owns: blob writes, names, locking, `fsck` and `gc`. What it does not:
//! interpreting images (that is [`crate::image`]) or other layouts (that is [`crate::transport`]).
//!
//! Rules that keep it consistent whatever happens to the process:
//! - every blob is written to a temp file in `tmp/`, hashed while written, and renamed to its final
//!   name only after its digest is known and, when one was expected, verified; so a blob under a
//!   final name always has the content its name says, even after SIGKILL;
//! - `index.json` (and every cache file) is rewritten whole into a temp file in `tmp/` and
//!   renamed, `index.json` under `index.lock`;
//! - every process that writes blobs holds `gc.lock` shared for as long as the [`Store`] lives;
//!   `gc` takes it exclusively, so it never collects a blob that a running build has written but
//!   not yet named, and it empties `tmp/` (temp files, scratch directories of killed builds) only
//!   when no writer can be alive. The lock is an `flock`: the kernel drops it when its holder
//!   dies, even by SIGKILL, so there is no stale lock to recover. The price of this simple
//!   design (the one buildah/containers-storage uses, where containerd uses leases): `gc`
//!   waits until every running kiln on the store has finished.

mod blob;
mod fsck;
mod gc;
mod lock;
mod names;
mod origins;

pub use blob::BlobWriter;
pub use fsck::{FsckProblem, FsckReport};
pub use gc::GcReport;
pub use names::normalize_name;
pub use origins::{origins, record_origin};

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::oci::{self, Digest, Index};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{action} `{}`", path.display())]
    Io {
        /// What was being done ("cannot write", "cannot read", …).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A blob is not in the store.
    #[error("blob `{digest}` is not in the store at `{}`", root.display())]
    BlobNotFound {
        /// The digest.
        digest: Digest,
        /// The store root.
        root: PathBuf,
    },
    /// Content did not match the digest it was expected to have.
    #[error(
        "content of blob `{expected}` does not match its digest (got `{actual}`, {size} bytes)"
    )]
    DigestMismatch {
        /// The digest that was expected.
        expected: Digest,
        /// The digest of what was received.
        actual: Digest,
        /// The bytes received.
        size: u64,
    },
    /// Content had the right digest algorithm but the wrong size.
    #[error("blob `{digest}` has {actual} bytes, expected {expected}")]
    SizeMismatch {
        /// The digest.
        digest: Digest,
        /// The expected size.
        expected: u64,
        /// The actual size.
        actual: u64,
    },
    /// `--root` exists but is not a kiln store / OCI layout.
    #[error("`{}` is not an OCI image layout: {reason}", path.display())]
    NotALayout {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A name is not a valid image name.
    #[error("invalid image name `{name}`: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// No image has this name.
    #[error("no image named `{name}` in the store at `{}`", root.display())]
    NameNotFound {
        /// The name.
        name: String,
        /// The store root.
        root: PathBuf,
    },
    /// A lazy blob (pulled without its bytes) could not be downloaded from its origin.
    #[error("blob `{digest}` was not downloaded yet and fetching it failed: {message}")]
    LazyFetch {
        /// The blob.
        digest: Digest,
        /// What went wrong, naming the registries tried.
        message: String,
    },
    /// A lazy blob was opened by something given no registry to fetch it from.
    #[error("blob `{digest}` was pulled lazily from `{origin}` and is not downloaded; give this operation a registry (as `kiln build` has) or `kiln pull` the image first")]
    Lazy {
        /// The blob.
        digest: Digest,
        /// Where it can be fetched from (the first origin recorded).
        origin: String,
    },
    /// A document in the store could not be parsed.
    #[error("`{}` is corrupt", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: oci::Error,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// An open store. Holds `gc.lock` shared (or exclusive, for gc) while it lives.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    _gc_lock: File,
}

impl Store {
    /// Opens the store at `root`, creating the layout if the directory is missing or empty.
    pub fn open(root: &Path) -> Result<Store> {
        Self::open_with(root, false)
    }

    /// Opens the store holding `gc.lock` exclusively: waits for every other kiln using it.
    pub fn open_exclusive(root: &Path) -> Result<Store> {
        Self::open_with(root, true)
    }

    fn open_with(root: &Path, exclusive: bool) -> Result<Store> {
        init_layout(root)?;
        for d in ["blobs/sha256", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io_err("cannot create", &p))?;
        }
        let gc_lock = lock::open_lock(&root.join("gc.lock"), exclusive)?;
        Ok(Store {
            root: root.to_path_buf(),
            _gc_lock: gc_lock,
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store's `tmp/`: temp files and scratch directories, on the store's filesystem so they
    /// can be renamed into place; whatever is left there when no kiln runs is removed by `gc`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// Whether the blob exists.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a blob for reading. The content is trusted (it was verified when written; `fsck`
    /// re-verifies); use [`Store::read_blob`] for small documents that must be checked now.
    /// The store never reaches a registry: a lazy blob (missing, with an origin record) is an
    /// [`Error::Lazy`] here, and is read through `transport::LayerSource`, which downloads it.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let p = self.blob_path(digest);
        File::open(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                match origins::origins(self, digest).into_iter().next() {
                    Some(origin) => Error::Lazy {
                        digest: digest.clone(),
                        origin,
                    },
                    None => Error::BlobNotFound {
                        digest: digest.clone(),
                        root: self.root.clone(),
                    },
                }
            } else {
                Error::Io {
                    action: "cannot read",
                    path: p,
                    source: e,
                }
            }
        })
    }

    /// Reads a whole blob and verifies its digest (for manifests and configs).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let p = self.blob_path(digest);
        self.open_blob(digest)?
            .read_to_end(&mut bytes)
            .map_err(io_err("cannot read", &p))?;
        if !digest.matches(&bytes) {
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual: Digest::sha256(&bytes),
                size: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// Starts writing a new blob into a temp file.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        BlobWriter::new(self)
    }

    /// Stores `bytes` and returns their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::sha256(bytes);
        if self.contains(&digest) {
            return Ok(digest);
        }
        let mut w = self.blob_writer()?;
        std::io::Write::write_all(&mut w, bytes).map_err(io_err("cannot write", &self.root))?;
        w.finish_expecting(&digest, Some(bytes.len() as u64))?;
        Ok(digest)
    }

    /// Copies `from` into the store, verifying it has `digest` and `size` before naming it. With a
    /// size, at most `size + 1` bytes are read: a source longer than it says (an endless one)
    /// fails at the first extra byte instead of filling the disk.
    pub fn put_verified(
        &self,
        digest: &Digest,
        size: Option<u64>,
        from: &mut dyn Read,
    ) -> Result<()> {
        if self.contains(digest) {
            return Ok(());
        }
        let mut w = self.blob_writer()?;
        let mut from = from.take(size.map_or(u64::MAX, |s| s.saturating_add(1)));
        std::io::copy(&mut from, &mut w).map_err(io_err("cannot copy into", &self.root))?;
        w.finish_expecting(digest, size)?;
        Ok(())
    }

    /// The store's `index.json`.
    pub fn index(&self) -> Result<Index> {
        read_index(&self.root)
    }

    /// Points `name` at `descriptor` (a manifest or index), replacing what it pointed at.
    pub fn tag(&self, name: &str, descriptor: &oci::Descriptor) -> Result<()> {
        names::tag(self, name, descriptor)
    }

    /// The descriptor `name` points at.
    pub fn resolve(&self, name: &str) -> Result<oci::Descriptor> {
        names::resolve(self, name)
    }

    /// Removes `name`; the blobs stay until `gc`.
    pub fn untag(&self, name: &str) -> Result<bool> {
        names::untag(self, name)
    }

    /// Verifies every blob's digest and size and every reference.
    pub fn fsck(&self) -> Result<FsckReport> {
        fsck::fsck(self)
    }

    /// Removes blobs nothing refers to, and stale temp files. Needs [`Store::open_exclusive`].
    pub fn gc(&self, extra_roots: &[Digest]) -> Result<GcReport> {
        gc::gc(self, extra_roots)
    }
}

const LAYOUT_FILE: &str = "oci-layout";
/// The prefix of [`write_atomic`]'s temp files.
pub(crate) const ATOMIC_TMP_PREFIX: &str = ".tmp-";
const LAYOUT_JSON: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Makes `root` an OCI layout if it is missing or an empty directory; checks it otherwise.
pub(crate) fn init_layout(root: &Path) -> Result<()> {
    match std::fs::metadata(root) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::NotALayout {
                path: root.to_path_buf(),
                reason: "it exists and is not a directory".into(),
            })
        }
        Ok(_) => {}
        Err(_) => std::fs::create_dir_all(root).map_err(io_err("cannot create", root))?,
    }
    let layout = root.join(LAYOUT_FILE);
    if !layout.exists() {
        let mut entries = std::fs::read_dir(root).map_err(io_err("cannot read", root))?;
        // What a first open killed before it wrote `oci-layout` leaves behind still counts as
        // empty, or one SIGKILL at the wrong moment would make the store unusable.
        let empty = entries.all(|e| {
            e.map(|e| match e.file_name().to_str() {
                Some(n) => {
                    matches!(n, "gc.lock" | "index.lock" | "blobs" | "tmp")
                        || n.starts_with(ATOMIC_TMP_PREFIX)
                }
                None => false,
            })
            .unwrap_or(false)
        });
        if !empty {
            return Err(Error::NotALayout {
                path: root.to_path_buf(),
                reason: "it is a non-empty directory without an `oci-layout` file".into(),
            });
        }
        write_atomic(root, &layout, LAYOUT_JSON)?;
    } else {
        let text = std::fs::read(&layout).map_err(io_err("cannot read", &layout))?;
        let v: serde_json::Value =
            oci::from_json("oci-layout", &text).map_err(|source| Error::Corrupt {
                path: layout.clone(),
                source,
            })?;
        if v.get("imageLayoutVersion")
            .and_then(|v| v.as_str())
            .is_none()
        {
            return Err(Error::NotALayout {
                path: root.to_path_buf(),
                reason: "`oci-layout` has no imageLayoutVersion".into(),
            });
        }
    }
    let index = root.join("index.json");
    if !index.exists() {
        write_atomic(root, &index, &oci::to_canonical_json(&Index::new()))?;
    }
    Ok(())
}

pub(crate) fn read_index(root: &Path) -> Result<Index> {
    let p = root.join("index.json");
    let bytes = std::fs::read(&p).map_err(io_err("cannot read", &p))?;
    oci::from_json("index", &bytes).map_err(|source| Error::Corrupt { path: p, source })
}

/// Writes `bytes` to `dest` through a temp file in `dir` (same filesystem), fsync, rename.
pub(crate) fn write_atomic(dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(dir, dest, |w| w.write_all(bytes))
}

/// As [`write_atomic`], with the content written by `write` (buffered), so a large file is
/// never held in memory whole.
pub(crate) fn write_atomic_with(
    dir: &Path,
    dest: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(ATOMIC_TMP_PREFIX)
        .tempfile_in(dir)
        .map_err(io_err("cannot create a temp file in", dir))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 16, tmp.as_file_mut());
    write(&mut w)
        .and_then(|()| std::io::Write::flush(&mut w))
        .map_err(io_err("cannot write", dest))?;
    drop(w);
    tmp.as_file()
        .sync_all()
        .map_err(io_err("cannot sync", dest))?;
    tmp.persist(dest).map_err(|e| Error::Io {
        action: "cannot write",
        path: dest.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_open_killed_before_oci_layout_was_written_does_not_break_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        std::fs::create_dir_all(root.join("blobs")).unwrap();
        std::fs::write(root.join(".tmp-Ab12Cd"), b"{\"imageLay").unwrap();
        let store = Store::open(&root).unwrap();
        assert!(store.index().unwrap().manifests.is_empty());
        // Anything else still makes the directory foreign.
        let other = dir.path().join("o");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("notes.txt"), b"mine").unwrap();
        assert!(matches!(Store::open(&other), Err(Error::NotALayout { .. })));
    }
}
