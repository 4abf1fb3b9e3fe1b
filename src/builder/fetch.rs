//! ADD of `http(s)://` URLs: the download goes straight into the store as a blob, so its digest
//! is known before the step runs (it is the step's cache input) and `--checksum` is a compare.
//! The download keeps the minimum rate of `--speed-limit`/`--speed-time` (see
//! [`SpeedLimit`]), as registry transfers do: a server trickling bytes fails the step, naming
//! the URL, instead of holding the build.
use std::io::Read;
use std::time::Duration;

use crate::registry::{redact_url, SlowTransfer, SpeedLimit};

use crate::oci::Digest;
use crate::store::Store;

/// A downloaded URL.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The content's digest (the blob in the store).
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// `Last-Modified`, in seconds since the epoch, which BuildKit uses as the file's mtime.
    pub mtime: Option<i64>,
}

/// Why `ADD URL` cannot download; names the URL (credentials redacted where a transfer was
/// under way) and the status, or the rate.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed.
    #[error("cannot download `{url}`")]
    Request {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The server answered something else than 200.
    #[error("cannot download `{url}`: the server answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The body could not be read (or came too slowly).
    #[error("cannot download `{url}`")]
    Body {
        /// The URL.
        url: String,
        /// The cause ([`SlowTransfer`] for a server below the minimum rate).
        #[source]
        source: std::io::Error,
    },
    /// The store could not take the blob.
    #[error("cannot store the download of `{url}`")]
    Store {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: crate::store::Error,
    },
}

/// Downloads `url` into the store. Errors name the URL and the status, or the rate.
pub fn fetch(store: &Store, url: &str, speed: SpeedLimit) -> Result<Fetched, FetchError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_redirects(10)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(speed.read_timeout(Some(Duration::from_secs(300))))
        .user_agent(format!("kiln/{}", env!("CARGO_PKG_VERSION")).as_str())
        .build()
        .new_agent();
    let mut resp = agent.get(url).call().map_err(|e| FetchError::Request {
        url: url.into(),
        source: Box::new(e),
    })?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(FetchError::Status {
            url: url.into(),
            status,
        });
    }
    let mtime = resp
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    let stored = |source| FetchError::Store {
        url: url.into(),
        source,
    };
    let mut w = store.blob_writer().map_err(stored)?;
    let shown = redact_url(url);
    let mut body = speed.meter(&shown).download(resp.body_mut().as_reader());
    std::io::copy(&mut body as &mut dyn Read, &mut w).map_err(|source| FetchError::Body {
        // A slow server is named without its credentials, as registry transfers are.
        url: match SlowTransfer::from_io(&source) {
            Some(_) => shown.clone(),
            None => url.into(),
        },
        source,
    })?;
    let (digest, size) = w.finish().map_err(stored)?;
    Ok(Fetched {
        digest,
        size,
        mtime,
    })
}

/// The file name ADD gives a URL's content: the last component of its path.
pub fn url_file_name(url: &str) -> String {
    let path = url.split_once("://").map_or(url, |(_, r)| r);
    let path = path.split(['?', '#']).next().unwrap_or("");
    let name = path
        .split_once('/')
        .map_or("", |(_, p)| p)
        .rsplit('/')
        .next()
        .unwrap_or("");
    if name.is_empty() {
        "index.html".to_string()
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::url_file_name;

    #[test]
    fn file_names_come_from_the_url_path() {
        assert_eq!(
            url_file_name("https://example.com/a/b/tool.tar.gz?x=1"),
            "tool.tar.gz"
        );
        assert_eq!(url_file_name("http://127.0.0.1:8080/f"), "f");
        assert_eq!(url_file_name("https://example.com/"), "index.html");
    }
}
