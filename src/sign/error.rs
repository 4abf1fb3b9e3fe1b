//! The one error type of [`crate::sign`].
use std::path::PathBuf;

/// What can go wrong signing or verifying.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A registry error.
    #[error(transparent)]
    Registry(#[from] crate::registry::Error),
    /// A document the registry sent did not parse.
    #[error(transparent)]
    Oci(#[from] crate::oci::Error),
    /// A key file is not what it should be.
    #[error("{path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The password did not open the private key.
    #[error("{path}: wrong password (the private key did not decrypt)")]
    WrongPassword {
        /// The file.
        path: String,
    },
    /// Encoding a key failed.
    #[error("key: {0}")]
    Key(String),
    /// The system random source failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file exists and `--force` was not given.
    #[error("{} exists; pass --force to overwrite it", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A signature or attestation manifest is malformed.
    #[error("{reference}: {reason}")]
    Layout {
        /// What was read.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// Verification failed.
    #[error("{0}")]
    Verify(String),
    /// Keyless verification was asked for.
    #[error("keyless verification (--certificate-identity) needs Fulcio and Rekor, which are not available: kiln verifies key-based signatures only (--key)")]
    KeylessUnavailable,
}
