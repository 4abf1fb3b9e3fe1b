//! Operations: one function per command, taking an options struct and a [`Reporter`].
//!
//! Operations never print and never read the environment: the CLI resolves flags and environment
//! into the options structs, and draws whatever the reporter receives.
//!
//! [`Reporter`]: crate::progress::Reporter

pub(crate) mod attest;
mod bake;
mod build;
mod copy;
mod diff;
mod import;
mod index;
mod inspect;
mod layer;
mod merge;
mod resolve;
mod rootfs;
mod source;
mod store;

pub use attest::{
    attach, attest_image, parse_rfc3339, sbom, write_attached, Attached, AttestError,
    AttestOptions, ImageAttestations, SbomFormat,
};
pub use bake::{
    bake, build_platforms, check_emulation, push_index, store_index, BakeError, BakeOptions,
    BakeResult, BakedTarget, PlatformAttestations, PlatformImage, PushFailure, TargetCache,
};
pub use build::{build, metadata};
pub use copy::{copy, CopyOptions};
pub use diff::{
    diff, ChangeKind, DiffOptions, DiffResult, DiffSide, FileMeta, FileType, PathChange,
};
pub use import::{import, ImportOptions, ImportResult};
pub use index::{create_index, IndexError, IndexOptions, IndexResult};
pub use inspect::{images, inspect, ImageSummary, Inspection, LayerInfo};
pub use layer::{layer, LayerCommandOptions, LayerResult};
pub use merge::{merge, MergeError, MergeOptions, MergeResult};
pub use resolve::{ensure, EnsureError, Ensured};
pub use rootfs::{export_rootfs, RootfsDest, RootfsError};
pub use source::{git_context, tar_context, Scratch, StdinContext};
pub use store::{fsck, gc};

use std::path::PathBuf;

/// Errors from operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building a layer failed.
    #[error(transparent)]
    Layer(#[from] crate::layer::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// A transport failed.
    #[error(transparent)]
    Transport(Box<crate::transport::Error>),
    /// An image is invalid.
    #[error(transparent)]
    Image(#[from] crate::image::Error),
    /// A source path is not usable.
    #[error("cannot import `{}`: {reason}", path.display())]
    BadSource {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tar member cannot be imported.
    #[error("`{}`: member `{member}`: {reason}", archive.display())]
    BadMember {
        /// The archive.
        archive: PathBuf,
        /// The member's path.
        member: String,
        /// What is wrong.
        reason: String,
    },
    /// A layer's tar cannot be read as a file tree (`kiln diff`).
    #[error("{image}: layer {layer}: member `{member}`: {reason}")]
    BadLayer {
        /// The image.
        image: String,
        /// The layer's blob digest.
        layer: crate::oci::Digest,
        /// The member (or where the stream broke off).
        member: String,
        /// What is wrong.
        reason: String,
    },
    /// `fsck` found problems.
    #[error("the store at `{}` has {count} problem(s)", root.display())]
    FsckFailed {
        /// The store root.
        root: PathBuf,
        /// How many.
        count: usize,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::transport::Error> for Error {
    fn from(e: crate::transport::Error) -> Self {
        Error::Transport(Box::new(e))
    }
}
