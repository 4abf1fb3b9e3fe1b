//! How the processes on the far side of the helper pipe fail: a [`Fail`] is a stage, a path and
//! an errno, which the helper sends to kiln as [`super::protocol::HelperMessage::Failed`] and
//! kiln turns into a [`super::SandboxError`]. The helper ([`super::helper`]), the step's init
//! ([`super::init`]) and its mount set-up ([`super::mounts`]) all report through it; it imports
//! nothing of the sandbox, so they all import it and none of them imports another for it.
use serde::{Deserialize, Serialize};
use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A failure inside the helper, init or command process, sent to kiln as a stage, path and errno.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Fail {
    pub stage: String,
    pub path: Option<PathBuf>,
    pub errno: i32,
}

impl Fail {
    pub(crate) fn new(stage: &str, path: Option<&Path>, err: &io::Error) -> Fail {
        Fail {
            stage: stage.to_owned(),
            path: path.map(Path::to_owned),
            errno: err.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    pub(crate) fn invalid_mount(target: &str) -> Fail {
        Fail {
            stage: "resolve mount target".into(),
            path: Some(target.into()),
            errno: libc::EINVAL,
        }
    }
}

/// Attaches a stage and path to an I/O error.
pub(crate) trait IoCtx<T> {
    /// Turns the error into a [`Fail`].
    fn ctx(self, stage: &str, path: Option<&Path>) -> Result<T, Fail>;
}

impl<T> IoCtx<T> for io::Result<T> {
    fn ctx(self, stage: &str, path: Option<&Path>) -> Result<T, Fail> {
        self.map_err(|e| Fail::new(stage, path, &e))
    }
}

/// A C string of a path or text (which never holds a NUL when it comes from the OS or JSON).
pub(crate) fn cstr(s: impl AsRef<OsStr>) -> Result<CString, Fail> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| Fail {
        stage: "path contains a NUL byte".into(),
        path: Some(PathBuf::from(s.as_ref())),
        errno: libc::EINVAL,
    })
}
