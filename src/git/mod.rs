//! Git sources, as BuildKit reads them: a build context, a `--build-context` or an `ADD` source
//! given as a git URL (`https://host/repo.git#ref:subdir`, `git@host:repo.git#ref`,
//! `ssh://…`, `git://…`, and kiln's `file:///path/repo.git#ref`).
//!
//! | file | owns |
//! |---|---|
//! | `url` | [`GitRef`]: which strings are git URLs and what their `#ref:subdir` fragment says |
//! | `fetch` | [`fetch`]: a shallow fetch of one commit with the `git` CLI, hostile-repository-safe |
//!
//! The repository is hostile until checked: hooks never run (`core.hooksPath=/dev/null`, an
//! empty template), git never prompts (`GIT_TERMINAL_PROMPT=0`), only the listed protocols are
//! spoken (`file` only for a `file://` source, `ext` never, for submodules too), fsmonitor is
//! off, and every git process is bounded in time and the checkout in size. Credentials reach git
//! through its environment (`GIT_CONFIG_*`, scoped to the source's origin), never a file in the
//! checkout; the remote URL kept with `--keep-git-dir` carries no userinfo.
mod fetch;
mod url;

pub use fetch::{fetch, Checkout, FetchOptions};
pub use url::{is_git_url, GitRef};

/// The credential kiln's store (`kiln login HOST`, Docker's and containers' auth files, by
/// host) has for an http(s) git source, looked up as for a registry of that host.
pub fn credential(
    r: &GitRef,
    credentials: &crate::registry::Credentials,
) -> Option<crate::registry::Credential> {
    if !matches!(r.scheme.as_str(), "http" | "https") {
        return None;
    }
    if let Some(c) = credentials.explicit.get(&r.host) {
        return Some(c.clone());
    }
    let env = credentials.env.as_ref()?;
    crate::registry::lookup_credential(env, &r.host, None)
        .ok()
        .flatten()
}

/// Why a git source cannot be used; names the URL (without credentials) and the ref.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The string is not a git URL kiln reads.
    #[error("`{url}` is not a git URL: {reason}")]
    Parse {
        /// The URL as given (credentials redacted).
        url: String,
        /// Why.
        reason: String,
    },
    /// git failed (unreachable host, unknown ref, refused protocol, …).
    #[error("cannot fetch `{url}` at {reference}: {detail}")]
    Fetch {
        /// The repository URL (credentials redacted).
        url: String,
        /// The ref asked for (`HEAD` when none).
        reference: String,
        /// What git said, last lines of its stderr.
        detail: String,
    },
    /// The fetch or checkout went over its bounds.
    #[error("cannot fetch `{url}` at {reference}: {detail}")]
    Bounds {
        /// The repository URL (credentials redacted).
        url: String,
        /// The ref asked for.
        reference: String,
        /// Which bound.
        detail: String,
    },
    /// The `:subdir` of the fragment is not a directory inside the checkout.
    #[error("`{url}`: the subdirectory `{subdir}` {reason}")]
    Subdir {
        /// The repository URL (credentials redacted).
        url: String,
        /// The subdirectory.
        subdir: String,
        /// Why.
        reason: String,
    },
    /// git could not be started or a scratch file written.
    #[error("git source `{url}`: {what}")]
    Io {
        /// The repository URL (credentials redacted).
        url: String,
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
