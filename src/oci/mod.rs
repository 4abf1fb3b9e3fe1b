//! OCI data types: [`Digest`], [`MediaType`], [`Descriptor`], [`Platform`], [`Manifest`],
//! [`Index`], our own [`ImageConfig`], canonical JSON, and the size caps on untrusted documents
//! ([`limits`]).
//!
//! What it owns: parsing, validating and serialising the JSON documents of the OCI image spec
//! (and their Docker v2 counterparts). What it does not: any I/O. `digest` always means the hash
//! of the bytes as stored (for a layer, the compressed bytes); `diff_id` is the hash of the
//! uncompressed tar.
//!
//! Why our own types and not `oci-spec`: its maps are `HashMap`s (non-deterministic JSON), and its
//! image config drops Docker's `Healthcheck`, `OnBuild`, `Shell` and `ArgsEscaped`. Here every map
//! is a `BTreeMap`, every struct keeps unknown fields in `extra`, and [`to_canonical_json`] sorts
//! object keys itself, so the same document always serialises to the same bytes.

mod config;
mod digest;
mod json;
pub mod limits;
mod manifest;
mod media_type;
mod platform;

pub use config::{rfc3339, ContainerConfig, Healthcheck, History, ImageConfig, RootFs};
pub use digest::{Algorithm, Digest, Sha256Writer};
pub use json::{from_json, to_canonical_json};
pub use manifest::{Descriptor, Index, Manifest, ANNOTATION_REF_NAME};
pub use media_type::{LayerCompression, MediaType};
pub use platform::Platform;

/// Errors from parsing OCI documents and values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A digest string is not `algorithm:hex` with a known algorithm and the right length.
    #[error("invalid digest `{value}`: {reason}")]
    InvalidDigest {
        /// The text that failed to parse.
        value: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A platform string is not `os/arch[/variant]`.
    #[error("invalid platform `{value}`: {reason}")]
    InvalidPlatform {
        /// The text that failed to parse.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A JSON document could not be parsed as the expected type.
    #[error("invalid {what} JSON: {source}")]
    Json {
        /// Which document ("manifest", "index", "image config", …).
        what: &'static str,
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
