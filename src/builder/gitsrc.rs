//! `ADD <git url> DEST`: the repository is fetched at its ref (through [`crate::git`]) into a
//! scratch directory under the store's `tmp/` before any step runs, so its commit is the step's
//! cache input (a moved branch rebuilds, an unchanged commit is a hit); the step then copies the
//! checkout like a context directory, without `.git` unless `--keep-git-dir`.
use std::path::PathBuf;

use crate::git::{self, FetchOptions, GitRef};
use crate::store::Store;

use super::error::StepError;
use super::BuildOptions;

/// A fetched `ADD` git source.
#[derive(Debug)]
pub struct GitSource {
    /// Holds the checkout; removed with the build.
    _dir: tempfile::TempDir,
    /// The directory the URL names (the checkout's root or its `:subdir`). Its `.git` is kept;
    /// the step leaves it out unless `--keep-git-dir`.
    pub context: PathBuf,
    /// The full commit id.
    pub commit: String,
}

/// Fetches `url` for an `ADD`, with the credential the build's registry client has for its host.
pub(super) fn fetch(store: &Store, opts: &BuildOptions, url: &str) -> Result<GitSource, StepError> {
    let r = GitRef::parse(url)?;
    let tmp = store.tmp_dir();
    let io = |source| {
        StepError::Git(git::GitError::Io {
            url: r.source_url(),
            what: format!("cannot create a scratch directory in {}", tmp.display()),
            source,
        })
    };
    std::fs::create_dir_all(&tmp).map_err(io)?;
    let dir = tempfile::Builder::new()
        .prefix("add-git-")
        .tempdir_in(&tmp)
        .map_err(io)?;
    let fetch_opts = FetchOptions {
        // The same URL may be added with and without `--keep-git-dir`: keep it here, and let
        // each step choose.
        keep_git_dir: true,
        credential: opts
            .remote
            .as_ref()
            .and_then(|remote| git::credential(&r, &remote.client.options().credentials)),
        ..FetchOptions::default()
    };
    let checkout = git::fetch(&r, dir.path(), &fetch_opts)?;
    Ok(GitSource {
        _dir: dir,
        context: checkout.context,
        commit: checkout.commit,
    })
}
