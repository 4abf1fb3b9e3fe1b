//! Why a build, or one of its steps, failed: [`Error`] for the build (naming the Dockerfile
//! location or the object) and [`StepError`] for what went wrong inside a step. Causes stay a
//! `#[source]` chain down to the I/O error; the CLI renders the chain once (`error:` then one
//! `caused by:` line per cause), so nothing here flattens it into text.
use std::path::PathBuf;

use crate::oci::Digest;
use crate::sandbox::{ExitStatus, SandboxError};

use super::context::SourceError;
use super::copy::CopyError;
use super::fetch::FetchError;
use super::step::mounts::MountError;
use super::user::OwnerError;

/// Why a build failed. Every error names the Dockerfile location or the object it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Dockerfile cannot be read.
    #[error("cannot read the Dockerfile `{}`", path.display())]
    Dockerfile {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The context is not a readable directory.
    #[error("the build context `{}` is not a readable directory", path.display())]
    Context {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `--no-cache-filter` names a stage the Dockerfile does not have.
    #[error("--no-cache-filter `{name}`: the Dockerfile has no stage named so{}", .suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    NoCacheFilter {
        /// The name given.
        name: String,
        /// The closest stage name.
        suggestion: Option<String>,
    },
    /// The Dockerfile does not parse or plan: the message has `file:line:col:`, the source
    /// line and a caret.
    #[error("{rendered}")]
    Frontend {
        /// The rendered error.
        rendered: String,
    },
    /// RUN cannot work on this machine or with these options; says what is missing.
    #[error("{file}:{line}:{col}: {instruction}: cannot run RUN steps")]
    Sandbox {
        /// The Dockerfile.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// The first RUN instruction.
        instruction: String,
        /// Why, and how to fix it.
        #[source]
        source: Box<SandboxError>,
    },
    /// A step failed (or was refused before the build started).
    #[error("{file}:{line}:{col}: {instruction}")]
    Step {
        /// The Dockerfile.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// The instruction, as BuildKit names it (`plan::Step::name`).
        instruction: String,
        /// What went wrong.
        #[source]
        source: Box<StepError>,
    },
    /// A base or `--from` image cannot be used.
    #[error("{file}:{line}:{col}: cannot use image `{reference}`{}", did_you_mean(.stage.as_deref()))]
    Image {
        /// The Dockerfile.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// The reference.
        reference: String,
        /// For a `--from=NAME` that names no stage: the stage whose name is close to it (a
        /// typo is read as an image reference, as BuildKit reads it, and fails as one).
        stage: Option<String>,
        /// The cause.
        #[source]
        source: Box<crate::transport::Error>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// Writing a layer failed.
    #[error(transparent)]
    Layer(#[from] crate::layer::Error),
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] crate::cache::Error),
    /// Writing an output failed.
    #[error(transparent)]
    Output(Box<crate::transport::Error>),
    /// The image was built, but a `--cache-to` could not be written.
    #[error("the image was built, but its cache could not be written")]
    CacheExport(#[source] Box<crate::cache::remote::Error>),
}

impl Error {
    /// The error of `step` in the Dockerfile `file`, naming where it is.
    pub fn step(file: &str, step: &crate::plan::Step, source: StepError) -> Error {
        Error::Step {
            file: file.to_string(),
            line: step.position.line,
            col: step.position.col,
            instruction: step.name.clone(),
            source: Box::new(source),
        }
    }

    /// The message of a step error, and its causes, as one line each (for tests and logs that
    /// want the whole story without the CLI).
    pub fn chain_text(&self) -> String {
        let mut s = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cause = c.source();
        }
        s
    }
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong inside one step; [`Error::Step`] adds where.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// COPY or ADD cannot copy its sources.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// A context source of COPY or ADD cannot be used.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A RUN command ended without success.
    #[error("`{}` did not complete successfully: {status}{}", argv.join(" "), last_output(tail))]
    Run {
        /// The command.
        argv: Vec<String>,
        /// How it ended.
        status: ExitStatus,
        /// Its last output lines (at most 20).
        tail: Vec<String>,
    },
    /// The program of a RUN (the shell of a shell-form RUN) is not in the image.
    #[error("`{program}` does not exist in the image: a shell-form RUN needs it; use the exec form (RUN [\"program\", \"arg\"]) or a base image with a shell")]
    MissingProgram {
        /// The absolute path of the program.
        program: String,
    },
    /// A `USER` or `--chown` name cannot be resolved.
    #[error(transparent)]
    Owner(#[from] OwnerError),
    /// A `RUN --mount` cannot be provided.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// `ADD URL` cannot be downloaded.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// An `ADD` git source could not be fetched.
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    /// A file of the build cannot be read or written.
    #[error("cannot {action} `{}`", path.display())]
    Io {
        /// What was being done ("create", "read", …).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A layer of the stage (or of a `--from` source) cannot be read or applied.
    #[error("layer `{digest}`")]
    ReadLayer {
        /// The layer.
        digest: Digest,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The step's layer cannot be written.
    #[error("cannot write the step's layer")]
    Layer(#[from] crate::layer::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] crate::cache::Error),
    /// The sandbox failed (not the command: see [`StepError::Run`]).
    #[error(transparent)]
    Sandbox(Box<SandboxError>),
    /// Files unpacked for a step cannot be given their owners.
    #[error("cannot give the files of {what} their owners")]
    Owners {
        /// The layer or directory.
        what: String,
        /// The cause.
        #[source]
        source: Box<SandboxError>,
    },
    /// `RUN --network=host` without the `network.host` entitlement.
    #[error("{what} needs the `network.host` entitlement: pass `--allow network.host` to let RUN steps share the host's network, its loopback services and abstract unix sockets included")]
    NetworkHost {
        /// `--network host` or `RUN --network=host`.
        what: &'static str,
    },
    /// A stage or image a step uses was not made ready (a bug in the build order).
    #[error("{what} was not built before this step")]
    NotReady {
        /// The stage or image.
        what: String,
    },
}

fn last_output(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("\nlast output:\n{}", tail.join("\n"))
    }
}

impl From<SandboxError> for StepError {
    fn from(e: SandboxError) -> Self {
        StepError::Sandbox(Box::new(e))
    }
}

impl StepError {
    /// An I/O error on `path`.
    pub(super) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> StepError {
        let path = path.to_path_buf();
        move |source| StepError::Io {
            action,
            path,
            source,
        }
    }

    /// A layer that cannot be read or applied.
    pub(super) fn layer(
        digest: &Digest,
    ) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> StepError + '_ {
        move |source| StepError::ReadLayer {
            digest: digest.clone(),
            source,
        }
    }
}

/// The hint after an image error when the reference looks like a misspelt stage name.
fn did_you_mean(stage: Option<&str>) -> String {
    stage.map_or_else(String::new, |s| {
        format!(" (no stage has that name; did you mean the stage `{s}`?)")
    })
}
