//! The deterministic layer pipeline: entries → tar stream → `diff_id` → gzip/zstd → blob.
//!
//! What it owns: turning a directory or a list of [`Entry`] values into the bytes of a layer,
//! bit-for-bit reproducibly, in one streaming pass with bounded memory. What it does not: where the
//! bytes go (the caller hands in any `Write`, usually a store blob writer that computes the
//! compressed `digest`). Also here, beside the compressors: recognising a compressed stream by
//! its magic bytes and decompressing it ([`sniff_compression`], [`decompressor`]), and applying
//! a layer to a directory ([`apply_layer`]).
//!
//! Start at [`LayerWriter`]. Its pipeline, on 2 cores:
//!
//! ```text
//!  walk thread (append_dir): SortedWalk hands entries over as they become final ──────┐
//!  caller thread: tar header → file read straight into the gzip block → SHA-256 ───────┤
//!  gzip: 1 MiB blocks → N worker threads (libdeflate, one gzip member per block)       │
//!        → writer thread puts members back in order → sink                             │
//!  zstd: libzstd with N ≥ 1 worker threads → sink                                      │
//! ```
//!
//! Determinism rules (design notes; change them only with a new expected digest):
//! - entries are sorted by path bytes, so parents come before children; the root is not emitted;
//! - numeric uid/gid are kept, user and group names are empty, atime/ctime are never written,
//!   mtimes are clamped to the build epoch (`min(mtime, epoch)`, never below 0; `i64::MAX`
//!   keeps them): mtimes older than the epoch survive, so a `.py` keeps the mtime its `.pyc`
//!   names. The builder clamps only when an epoch was given, and gives the epoch to the files
//!   a RUN step writes with the clock and to the context's files itself; `kiln import` and
//!   `kiln layer` keep mtimes unless given one (see the README's "Timestamps");
//! - a layer the builder writes lists every parent directory of its entries, with the
//!   metadata it had before the step, so an unpacker never invents one (`COPY --link` aside);
//! - headers are ustar, with a PAX extended header only for what ustar cannot hold (long paths or
//!   link targets, sizes ≥ 8 GiB, ids ≥ 2^21, xattrs), PAX records sorted by key;
//! - hardlinks are written as links to the first path (in sorted order) of the same inode;
//!   files are never written sparse;
//! - gzip output is independent of the thread count: the input is cut into fixed 1 MiB blocks,
//!   each compressed alone into one gzip member (mtime 0, no name), so which thread compresses a
//!   block cannot change its bytes (see [`ParallelGzipWriter`] for why members and libdeflate);
//!   zstd uses libzstd's multithreaded mode with at least one worker, whose output is identical for
//!   any worker count ≥ 1.

mod compress;
mod decompress;
mod entry;
mod gzip;
mod stats;
pub(crate) mod tar;
pub use self::tar::{TarGuard, MAX_SPARSE_EXTENSION_BLOCKS, MAX_SPECIAL_MEMBER};
mod unpack;
mod walk;
mod writer;

pub use compress::{Compression, DEFAULT_GZIP_LEVEL, DEFAULT_ZSTD_LEVEL};
pub use decompress::{decompressor, sniff_compression, Compressed, SNIFF_LEN};
pub use entry::{
    clean_path, path_components, Entry, EntryKind, FileSource, OPAQUE_WHITEOUT, WHITEOUT_PREFIX,
};
pub use gzip::ParallelGzipWriter;
pub use stats::LayerStats;
pub use unpack::{apply_layer, UnpackOptions, UnpackReport};
pub use walk::{keep_xattr, walk, IdMap, WalkOptions, OVERFLOW_ID};
pub use writer::{LayerOptions, LayerSummary, LayerWriter};

use std::path::PathBuf;

/// Errors from building a layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read.
    #[error("cannot read `{}`", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The tree holds a file type a layer cannot carry.
    #[error("`{}` is a socket; sockets cannot be stored in a layer", path.display())]
    Socket {
        /// The path.
        path: PathBuf,
    },
    /// A file's size changed while it was being read.
    #[error("`{}` changed while it was being read ({expected} bytes expected, {actual} read)", path.display())]
    FileChanged {
        /// The path.
        path: PathBuf,
        /// The size recorded when the tree was walked.
        expected: u64,
        /// The bytes actually read.
        actual: u64,
    },
    /// An entry path is not a clean relative path.
    #[error("invalid entry path `{path}`: {reason}")]
    InvalidPath {
        /// The path, lossily decoded.
        path: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// An invalid compression setting.
    #[error("invalid compression `{value}`: expected gzip, zstd or none, optionally with `:LEVEL` (gzip 1-9, zstd 1-19)")]
    InvalidCompression {
        /// The text given.
        value: String,
    },
    /// A layer member cannot be applied.
    #[error("cannot apply layer member `{member}`: {reason}")]
    Unpack {
        /// The member's path as written in the tar.
        member: String,
        /// Why.
        reason: String,
    },
    /// A layer's tar stream is malformed, truncated, or holds a member kiln refuses to buffer.
    #[error("invalid layer tar stream {position}: {reason}")]
    InvalidTar {
        /// Where: `at its start` or `after member `PATH``.
        position: String,
        /// Why.
        reason: String,
    },
    /// Applying a layer member failed on the filesystem.
    #[error("cannot apply layer member `{member}`")]
    UnpackIo {
        /// The member's path as written in the tar.
        member: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing the layer's output failed.
    #[error("cannot write the layer")]
    Write(#[source] std::io::Error),
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A sink whose every write fails with "disk full", for the pipeline's error-path tests.
#[cfg(test)]
pub(crate) struct FullSink;

#[cfg(test)]
impl std::io::Write for FullSink {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "disk full",
        ))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
