//! Build contexts that are not a directory: a git repository at a ref ([`git_context`]) and a
//! tar stream ([`tar_context`], `kiln build -` as `docker build -`). Each lands in a scratch
//! directory under the store's `tmp/`, removed when the returned [`Scratch`] is dropped (and by
//! `gc` after a crash).
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::git::{self, Checkout, FetchOptions, GitError, GitRef};
use crate::store::Store;

/// A scratch directory under the store's `tmp/`, removed on drop.
#[derive(Debug)]
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// A new, empty scratch directory in `store`'s `tmp/`.
    pub fn new(store: &Store, prefix: &str) -> std::io::Result<Scratch> {
        let tmp = store.tmp_dir();
        std::fs::create_dir_all(&tmp)?;
        Ok(Scratch(
            tempfile::Builder::new().prefix(prefix).tempdir_in(tmp)?,
        ))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Fetches the git source `r` into a scratch directory of `store`: the checkout, and the
/// scratch that holds it (the checkout lives as long as it).
pub fn git_context(
    store: &Store,
    r: &GitRef,
    opts: &FetchOptions,
) -> Result<(Scratch, Checkout), GitError> {
    let scratch = Scratch::new(store, "git-").map_err(|source| GitError::Io {
        url: r.source_url(),
        what: format!(
            "cannot create a scratch directory in {}",
            store.tmp_dir().display()
        ),
        source,
    })?;
    let checkout = git::fetch(r, scratch.path(), opts)?;
    Ok((scratch, checkout))
}

/// What a stdin context held.
#[derive(Debug)]
pub enum StdinContext {
    /// A tar archive, unpacked into this directory.
    Tar(PathBuf),
    /// Not an archive: a Dockerfile (as `docker build -`), written to this file; the context
    /// is empty (the scratch's `context/`).
    Dockerfile {
        /// The Dockerfile.
        dockerfile: PathBuf,
        /// The empty context directory.
        context: PathBuf,
    },
}

/// Reads a context from `input` (stdin): a tar (plain, gzip, bzip2, xz or zstd) unpacked with
/// the image layer unpacker's checks (no member outside the directory, links resolved inside
/// it, no device nodes, owners not applied), or else a Dockerfile with an empty context.
pub fn tar_context(
    store: &Store,
    input: impl Read,
) -> Result<(Scratch, StdinContext), crate::ops::Error> {
    let name = Path::new("<stdin>");
    let bad = |reason: String| crate::ops::Error::BadSource {
        path: name.to_path_buf(),
        reason,
    };
    let scratch = Scratch::new(store, "stdin-")
        .map_err(|e| bad(format!("cannot create a scratch directory: {e}")))?;
    let (head, rest) = peek_head(input, 512).map_err(|e| bad(format!("cannot read: {e}")))?;
    let r = BufReader::with_capacity(1 << 16, rest);
    let format = crate::layer::sniff_compression(&head);
    let is_tar = |h: &[u8]| h.len() >= 262 && &h[257..262] == b"ustar";
    let reader: Box<dyn Read> = match format {
        crate::layer::Compressed::None if is_tar(&head) => Box::new(r),
        crate::layer::Compressed::None => {
            // `docker build -`: the bytes are a Dockerfile.
            let mut text = Vec::new();
            // A Dockerfile is text; bounded as an image config is.
            r.take(crate::oci::limits::MAX_CONFIG_SIZE)
                .read_to_end(&mut text)
                .map_err(|e| bad(format!("cannot read: {e}")))?;
            let dockerfile = scratch.path().join("Dockerfile");
            let context = scratch.path().join("context");
            std::fs::create_dir(&context).map_err(|e| bad(e.to_string()))?;
            std::fs::write(&dockerfile, text).map_err(|e| bad(e.to_string()))?;
            return Ok((
                scratch,
                StdinContext::Dockerfile {
                    dockerfile,
                    context,
                },
            ));
        }
        f => crate::layer::decompressor(r, f, name).map_err(|e| bad(e.to_string()))?,
    };
    let (h, peek) = peek_head(reader, 512).map_err(|e| bad(format!("cannot decompress: {e}")))?;
    if !is_tar(&h) {
        return Err(bad("compressed, but not a tar archive".into()));
    }
    let dir = scratch.path().join("context");
    std::fs::create_dir(&dir).map_err(|e| bad(e.to_string()))?;
    crate::layer::apply_layer(
        peek,
        &dir,
        &crate::layer::UnpackOptions { ownership: false },
    )
    .map_err(|e| bad(format!("not a usable tar context: {e}")))?;
    Ok((scratch, StdinContext::Tar(dir)))
}

/// The first `n` bytes of `r` (fewer at its end; a pipe may hand them over in pieces), and a
/// reader of the whole stream.
fn peek_head<R: Read>(mut r: R, n: usize) -> std::io::Result<(Vec<u8>, impl Read)> {
    let mut head = Vec::with_capacity(n);
    (&mut r).take(n as u64).read_to_end(&mut head)?;
    Ok((head.clone(), std::io::Cursor::new(head).chain(r)))
}
