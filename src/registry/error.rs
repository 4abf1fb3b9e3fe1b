//! The registry module's error type, the distribution error envelope, and URL redaction.
//!
//! Every error that comes from an HTTP exchange keeps the method, the redacted URL, the status and
//! the registry's own error codes (distribution spec, "Error Codes": `{"errors":[{"code",
//! "message","detail"}]}`), so the CLI can print `registry `host` answered 401 …: UNAUTHORIZED:
//! authentication required`. Credentials never reach an error: request URLs never carry user info,
//! query values other than a short list of harmless ones are replaced, and tokens and passwords are
//! only ever held in [`super::Credential`] and the token cache.
use std::io;
use std::time::Duration;

use serde::Deserialize;

use crate::oci::Digest;

/// One entry of the distribution error envelope.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    /// The spec's error code, such as `BLOB_UNKNOWN` or `UNAUTHORIZED`.
    #[serde(default)]
    pub code: String,
    /// The registry's human-readable message.
    #[serde(default)]
    pub message: String,
    /// Extra detail, kept as compact JSON text (registries put arbitrary JSON here).
    #[serde(default, deserialize_with = "detail_as_text")]
    pub detail: Option<String>,
}

fn detail_as_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    errors: Vec<ApiError>,
}

/// Parses an error body; anything that is not the envelope gives an empty list.
pub(crate) fn parse_envelope(body: &[u8]) -> Vec<ApiError> {
    serde_json::from_slice::<Envelope>(body)
        .map(|e| e.errors)
        .unwrap_or_default()
}

/// Formats the registry's codes for a message: `: CODE: message; CODE2: message2`.
fn fmt_api_errors(errors: &[ApiError]) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors
        .iter()
        .map(|e| {
            let mut s = if e.message.is_empty() {
                e.code.clone()
            } else {
                format!("{}: {}", e.code, e.message)
            };
            // Distribution puts the missing scope in `detail` for UNAUTHORIZED/DENIED: useful.
            if let Some(d) = &e.detail {
                if d.len() <= 200 {
                    s.push_str(&format!(" ({d})"));
                }
            }
            s
        })
        .collect();
    format!(": {}", parts.join("; "))
}

/// Errors from the registry client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image reference does not follow Docker's grammar.
    #[error("invalid image reference `{reference}`: {reason}")]
    InvalidReference {
        /// The text that failed to parse.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry's host name does not resolve.
    #[error("registry `{registry}` not found: the host name does not resolve ({method} {url})")]
    HostNotFound {
        /// The registry host.
        registry: String,
        /// The HTTP method.
        method: &'static str,
        /// The redacted URL.
        url: String,
    },
    /// The connection failed, broke, or timed out, or TLS failed.
    #[error("cannot talk to registry `{registry}` ({method} {url})")]
    Transport {
        /// The registry host.
        registry: String,
        /// The HTTP method.
        method: &'static str,
        /// The redacted URL.
        url: String,
        /// The underlying error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// A transfer fell below the minimum rate (`--speed-limit`/`--speed-time`).
    #[error("registry `{registry}` is too slow ({method} {url})")]
    TooSlow {
        /// The registry host.
        registry: String,
        /// The HTTP method.
        method: &'static str,
        /// The redacted URL.
        url: String,
        /// The rate, the window and what moved in it.
        #[source]
        source: super::speed::SlowTransfer,
    },
    /// A blob body went on past the size its descriptor declares; kiln stopped reading at the
    /// first byte too many.
    #[error(
        "blob `{digest}` from {url} is longer than the {expected} bytes its descriptor declares"
    )]
    BlobTooLong {
        /// The blob.
        digest: Digest,
        /// The redacted URL.
        url: String,
        /// The declared size.
        expected: u64,
    },
    /// The registry answered with an unexpected status.
    #[error("registry `{registry}` answered {status} to {method} {url}{}", fmt_api_errors(.errors))]
    Status {
        /// The registry host.
        registry: String,
        /// The HTTP method.
        method: &'static str,
        /// The redacted URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The registry's error envelope, if it sent one.
        errors: Vec<ApiError>,
        /// The `Retry-After` delay the registry asked for, if any.
        retry_after: Option<Duration>,
    },
    /// The token server refused to issue a token, or answered something unusable.
    #[error("token server `{realm}` for registry `{registry}` failed: {reason}{}", fmt_api_errors(.errors))]
    Token {
        /// The registry host.
        registry: String,
        /// The redacted realm URL.
        realm: String,
        /// The HTTP status, when the server answered.
        status: Option<u16>,
        /// What went wrong.
        reason: String,
        /// The token server's error envelope, if any.
        errors: Vec<ApiError>,
    },
    /// The registry asked for an authentication scheme we do not speak, or a malformed one.
    #[error("registry `{registry}` sent an unusable authentication challenge `{challenge}`")]
    Challenge {
        /// The registry host.
        registry: String,
        /// The `WWW-Authenticate` value (it carries no secret).
        challenge: String,
    },
    /// Bytes received do not hash to the digest they were asked for.
    #[error("digest mismatch for {what} from {url}: expected `{expected}`, got `{actual}`")]
    DigestMismatch {
        /// "blob" or "manifest".
        what: &'static str,
        /// The redacted URL.
        url: String,
        /// The digest asked for.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// Bytes received are not as many as the descriptor says.
    #[error(
        "size mismatch for blob `{digest}` from {url}: expected {expected} bytes, got {actual}"
    )]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The redacted URL.
        url: String,
        /// The size asked for.
        expected: u64,
        /// The size received.
        actual: u64,
    },
    /// A manifest is larger than we accept.
    #[error("manifest at {url} is larger than {limit} bytes")]
    ManifestTooLarge {
        /// The redacted URL.
        url: String,
        /// The limit (4 MiB, the distribution spec's recommended minimum).
        limit: u64,
    },
    /// A manifest's media type is neither an image manifest nor an index.
    #[error("manifest at {url} has unsupported media type `{media_type}`")]
    UnsupportedMediaType {
        /// The redacted URL.
        url: String,
        /// The media type the registry sent.
        media_type: String,
    },
    /// Redirects went on longer than the limit (or looped).
    #[error("too many redirects (more than {limit}) from {method} {url}")]
    TooManyRedirects {
        /// The HTTP method.
        method: &'static str,
        /// The redacted URL of the first request.
        url: String,
        /// The limit.
        limit: u32,
    },
    /// A required response header is missing or malformed.
    #[error("registry `{registry}` sent no usable `{header}` header for {method} {url}")]
    BadHeader {
        /// The registry host.
        registry: String,
        /// The HTTP method.
        method: &'static str,
        /// The redacted URL.
        url: String,
        /// The header name.
        header: &'static str,
    },
    /// An index has no manifest for the requested platform.
    #[error("no manifest for platform `{platform}` in index {url} (available: {})", .available.join(", "))]
    NoMatchingPlatform {
        /// The platform asked for.
        platform: String,
        /// The redacted URL of the index.
        url: String,
        /// The platforms the index lists.
        available: Vec<String>,
    },
    /// A JSON document from the registry does not parse.
    #[error("invalid {what} JSON from {url}")]
    Json {
        /// Which document.
        what: &'static str,
        /// The redacted URL.
        url: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// An OCI document did not parse.
    #[error(transparent)]
    Oci(#[from] crate::oci::Error),
    /// Reading the local bytes of a blob to upload failed.
    #[error("failed to read blob `{digest}` for upload")]
    ReadBlob {
        /// The blob.
        digest: Digest,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing downloaded bytes to the caller's writer failed.
    #[error("failed to write blob `{digest}`")]
    WriteBlob {
        /// The blob.
        digest: Digest,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A local reader gave a different number of bytes than the size we announced.
    #[error("blob `{digest}` to upload is {actual} bytes, not the {expected} announced")]
    UploadSize {
        /// The blob.
        digest: Digest,
        /// The size announced.
        expected: u64,
        /// The size read.
        actual: u64,
    },
    /// A foreign layer's descriptor lists no URL we can download from.
    #[error("foreign blob `{digest}` has no http(s) URL to download from")]
    NoBlobUrls {
        /// The blob.
        digest: Digest,
    },
    /// Only sha256 digests can be verified while streaming.
    #[error("unsupported digest algorithm in `{digest}`: kiln verifies sha256 only")]
    UnsupportedDigest {
        /// The digest.
        digest: Digest,
    },
    /// A CA certificate file or directory could not be read or parsed.
    #[error("failed to load CA certificates from `{path}`: {reason}")]
    Certificates {
        /// The file or directory.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Credentials could not be looked up, stored or removed.
    #[error(transparent)]
    Credentials(#[from] super::auth::CredentialError),
    /// A mirror configuration is invalid.
    #[error("invalid mirror configuration for prefix `{prefix}`: {reason}")]
    MirrorConfig {
        /// The `[[registry]]` prefix.
        prefix: String,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// The error for an I/O failure while moving a body: [`Error::TooSlow`] when the speed meter
    /// stopped it, else [`Error::Transport`].
    pub(crate) fn from_body_io(
        registry: &str,
        method: &'static str,
        url: &str,
        e: io::Error,
    ) -> Error {
        if let Some(slow) = super::speed::SlowTransfer::from_io(&e) {
            return Error::TooSlow {
                registry: registry.to_string(),
                method,
                url: url.to_string(),
                source: slow.clone(),
            };
        }
        Error::Transport {
            registry: registry.to_string(),
            method,
            url: url.to_string(),
            source: Box::new(ureq::Error::Io(e)),
        }
    }
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether retrying the same request may succeed: connection failures, 408, 429, 500, 502,
    /// 503, 504, and the codes a registry uses for "try later" (`TOOMANYREQUESTS`,
    /// `UNAVAILABLE`). Mirrors go-containerregistry's `transport.Error.Temporary`.
    pub fn is_temporary(&self) -> bool {
        match self {
            Error::Transport { source, .. } => transport_is_temporary(source),
            Error::Status { status, errors, .. } => {
                matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
                    || errors
                        .iter()
                        .any(|e| e.code == "TOOMANYREQUESTS" || e.code == "UNAVAILABLE")
            }
            Error::Token { status, .. } => {
                status.is_none_or(|s| matches!(s, 408 | 429 | 500 | 502 | 503 | 504))
            }
            // A stall or a trickle may be a dead connection: a new one (resuming) may be fine;
            // each attempt is bounded by the window, so the retries are too.
            Error::TooSlow { .. } => true,
            // A body cut short or corrupted in transit: a fresh download may be whole.
            Error::SizeMismatch { .. } | Error::DigestMismatch { .. } => true,
            _ => false,
        }
    }

    /// The HTTP status, when the error is a registry answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            Error::Token { status, .. } => *status,
            _ => None,
        }
    }

    /// The registry's error codes (`MANIFEST_UNKNOWN`, `DENIED`, …), if it sent any.
    pub fn codes(&self) -> Vec<&str> {
        match self {
            Error::Status { errors, .. } | Error::Token { errors, .. } => {
                errors.iter().map(|e| e.code.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Whether the registry said the object does not exist (404 or a `*_UNKNOWN` code).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Status { status: 404, .. })
            || self.codes().iter().any(|c| c.ends_with("_UNKNOWN"))
    }

    /// Whether the registry refused our credentials or our lack of them (401, 403).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
    }

    /// Whether the registry refused a manifest for its media type or content (400
    /// `MANIFEST_INVALID`, 415, or `UNSUPPORTED`): the caller may retry with the Docker v2
    /// media types, which some older registries (Quay before 3.6, Artifactory) still require.
    pub fn is_manifest_rejected(&self) -> bool {
        matches!(self.status(), Some(415))
            || (self.status() == Some(400)
                && self
                    .codes()
                    .iter()
                    .any(|c| *c == "MANIFEST_INVALID" || *c == "UNSUPPORTED"))
    }

    /// The delay the registry asked for with `Retry-After`.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

fn transport_is_temporary(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => !matches!(
            io.kind(),
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData | io::ErrorKind::Unsupported
        ),
        ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed | ureq::Error::Protocol(_) => true,
        _ => false,
    }
}

/// Query parameters whose values carry no secret and help in messages.
const SAFE_QUERY_KEYS: &[&str] = &[
    "digest",
    "mount",
    "from",
    "n",
    "last",
    "artifactType",
    "scope",
    "service",
];

/// Redacts a URL for messages: drops user info and replaces every query value except harmless ones
/// (upload `_state` blobs and storage redirects carry signatures: S3's `X-Amz-Signature`, GCS's
/// `Signature`).
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = String::with_capacity(url.len());
    match base.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            out.push_str(host);
            out.push_str(path);
        }
        None => out.push_str(base),
    }
    if let Some(q) = query {
        out.push('?');
        let parts: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                // Digests are shown as digests (`sha256:…`), so a message names the blob.
                Some((k, v)) if k == "digest" || k == "mount" => {
                    format!("{k}={}", v.replace("%3A", ":").replace("%3a", ":"))
                }
                Some((k, v)) if SAFE_QUERY_KEYS.contains(&k) => format!("{k}={v}"),
                Some((k, _)) => format!("{k}=REDACTED"),
                None => kv.to_string(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_drops_user_info_and_signatures() {
        let u = "https://user:secret@s3.example/bucket/blob?X-Amz-Signature=abc&digest=sha256:1";
        let r = redact_url(u);
        assert_eq!(
            r,
            "https://s3.example/bucket/blob?X-Amz-Signature=REDACTED&digest=sha256:1"
        );
        assert!(!r.contains("secret"));
        assert_eq!(
            redact_url("http://r/v2/a/blobs/uploads/x?_state=s&digest=sha256%3Aab"),
            "http://r/v2/a/blobs/uploads/x?_state=REDACTED&digest=sha256:ab"
        );
    }

    #[test]
    fn envelope_parses_codes_and_detail() {
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository","Name":"a","Action":"pull"}]}]}"#;
        let errs = parse_envelope(body);
        assert_eq!(errs[0].code, "UNAUTHORIZED");
        assert!(errs[0].detail.as_deref().unwrap().contains("repository"));
        assert!(parse_envelope(b"<html>").is_empty());
    }

    #[test]
    fn temporary_statuses() {
        let e = |status| Error::Status {
            registry: "r".into(),
            method: "GET",
            url: "u".into(),
            status,
            errors: vec![],
            retry_after: None,
        };
        assert!(e(503).is_temporary());
        assert!(e(429).is_temporary());
        assert!(!e(404).is_temporary());
        assert!(!e(401).is_temporary());
    }
}
