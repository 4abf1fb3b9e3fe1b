//! Registry client for the OCI distribution API: references, authentication, manifests, blobs,
//! retries, mirrors and concurrent transfers.
//!
//! What it owns: talking to registries in terms of [`Reference`]s, [`Digest`](crate::oci::Digest)s,
//! raw manifest bytes and byte streams (`std::io::Read`/`Write`). What it does not: the local
//! store or transports; callers open readers and writers (temporary files renamed on success).
//!
//! Start with [`Client::new`] and [`ClientOptions`]; then [`Client::get_manifest`],
//! [`Client::get_blob`], [`Client::push_blob`] and [`Client::put_manifest`], or
//! [`push_blobs`]/[`pull_blobs`] for `--jobs N`. Credentials come from [`Credentials`]
//! (explicit, or looked up through [`CredentialEnv`]); `kiln login`/`logout` use
//! [`store_credential`] and [`erase_credential`].
//!
//! ```no_run
//! use std::io::Read;
//! use kiln::oci::{MediaType, Platform};
//! use kiln::registry::{
//!     push_blobs, BlobUpload, Client, ClientOptions, CredentialEnv, Credentials, NoProgress,
//!     Reference,
//! };
//!
//! # fn main() -> Result<(), kiln::registry::Error> {
//! let client = Client::new(ClientOptions {
//!     credentials: Credentials { env: Some(CredentialEnv::from_process_env()), ..Default::default() },
//!     ..ClientOptions::default()
//! })?;
//! // Pull: the manifest for this platform, then each blob into a temporary file.
//! let src = Reference::parse("debian:12")?;
//! let (manifest, _index) = client.get_image_manifest(&src, &Platform::host())?;
//! let config = &manifest.manifest()?.config;
//! let mut bytes = Vec::new();
//! client.get_blob(&src, &config.digest, Some(config.size), &mut bytes, &NoProgress)?;
//!
//! // Push: every blob, `jobs` at a time (HEAD, mount, or upload; only the config is shown
//! // here), then the manifest by tag.
//! let dst = Reference::parse("127.0.0.1:5000/app:v1")?;
//! let blob = std::sync::Arc::new(bytes);
//! let upload = BlobUpload {
//!     digest: config.digest.clone(),
//!     size: config.size,
//!     open: Box::new(move || Ok(Box::new(std::io::Cursor::new(blob.as_ref().clone())) as Box<dyn Read + Send>)),
//!     mount_from: vec![],
//! };
//! push_blobs(&client, &dst, &[upload], 4, &NoProgress)?;
//! client.put_manifest(&dst, &manifest.bytes, &manifest.media_type)?;
//! # Ok(())
//! # }
//! ```
//!
//! ## HTTP stack: ureq 3 (blocking) + rustls (ring), not reqwest + tokio
//! kiln's build core is synchronous (layer writing is a thread pipeline) and `--jobs N` maps
//! naturally onto N worker threads doing blocking I/O ([`push_blobs`], [`pull_blobs`]), so an
//! async runtime would only add a `block_on` boundary. Measured on this 2-core machine
//! (2026-11-21, cold scratch crates, dev profile, the machine shared with other builds):
//! `ureq 3.5` with `rustls` is 25 crates and 21 s of CPU; `reqwest 0.13` (`rustls`, `http2`,
//! `stream`) with `tokio` is 121 crates and 93 s of CPU, including the aws-lc-sys C build. What
//! we give up, HTTP/2 multiplexing, matters little for a handful of large blob streams, and
//! ureq lets us own redirects (no `Authorization` to another host) and 401 handling. Roots: the
//! bundled Mozilla set, plus CA files and `--cert-dir` `*.crt` files (see [`ClientOptions`]).
//!
//! ## Files
//! `reference.rs` (parsing, normalisation), `auth/` (challenges, scopes, tokens, credentials),
//! `client.rs` (TLS/HTTP choice, ping, auth, redirects, retries), `manifests.rs` (manifests,
//! platforms, tags, referrers), `blobs.rs` (HEAD/GET/mount/upload), `blob_reader.rs` (a blob as
//! a verifying `Read`), `transfer.rs` (parallel blobs, and their progress as
//! [`crate::progress::Reporter`] events), `retry.rs`, `speed.rs` (the minimum
//! transfer rate, `--speed-limit`/`--speed-time`), `mirrors.rs`, `tls.rs`, `error.rs`.
//!
//! ## Trust
//! A registry is hostile until checked. Credentials go only to the registry's own origin and to
//! the token realm its own challenge names (see [`Client`]'s `send`); every body is read with a
//! cap (blobs: their descriptor's size; documents: [`crate::oci::limits`]) and a minimum rate
//! ([`SpeedLimit`]).
pub mod auth;
mod blob_reader;
mod blobs;
mod client;
mod error;
mod manifests;
mod mirrors;
mod reference;
mod retry;
mod speed;
mod tls;
mod transfer;

pub use auth::{
    erase_credential, lookup_credential, parse_challenges, store_credential, Challenge, Credential,
    CredentialEnv, CredentialError, Scope,
};
pub use blob_reader::BlobReader;
pub use blobs::{BlobOutcome, BlobUpload, MountResult, NoProgress, OpenBlob, TransferProgress};
pub use client::{Client, ClientOptions, Credentials, UploadMode};
pub use error::{redact_url, ApiError, Error, Result};
pub use manifests::{
    platforms, referrers_tag, select_platform, RemoteManifest, MANIFEST_MEDIA_TYPES,
    MAX_MANIFEST_SIZE,
};
pub use mirrors::{Mirror, MirrorPolicy, PullSource, RegistriesConfig, RegistryEntry};
pub use reference::{api_host, Reference, DEFAULT_TAG, DOCKER_HUB, DOCKER_HUB_API};
pub use retry::{parse_retry_after, RetryPolicy};
pub use speed::{Meter, MeteredRead, MeteredUpload, SlowTransfer, SpeedLimit};
pub use transfer::{pull_blobs, push_blobs, BlobSink, OpenSink, ReportTransfers};
