//! The messages between kiln and its helper process, as JSON lines.
//!
//! kiln writes one [`HelperRequest`] line on the helper's stdin, waits for
//! [`HelperMessage::Unshared`] on fd 3, writes the id maps, and answers `go` on stdin. The helper
//! then runs the step and ends with one [`HelperMessage::Done`] or [`HelperMessage::Failed`].
//! The step's init process reports to the helper with one [`InitReport`] (JSON, on a pipe of its
//! own). The root filesystem in a [`RunJob`] is the [`super::snapshot::Root`] of the step's
//! snapshot, serialised as it is. This is an internal interface between two copies of the same
//! binary, so it has no version.
use super::fail::Fail;
use super::snapshot::{Diff, Root};
use super::{ExitStatus, RunSpec};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The fd number of the helper → kiln message pipe.
pub(crate) const RESULT_FD: i32 = 3;

/// Where single-id mode binds its apt configuration (removed after the step, like every stub).
pub(crate) const APT_SINGLE_ID_CONF: &str = "etc/apt/apt.conf.d/00kiln-single-id";

/// What the helper is asked to do.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HelperRequest {
    /// kiln's pid: the helper exits if it has been re-parented before it set PDEATHSIG.
    pub parent_pid: i32,
    /// The job.
    pub job: Job,
}

/// The two jobs of the helper.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Job {
    /// Run one step.
    Run(Box<RunJob>),
    /// Run a host program as root in a user namespace (no new root filesystem).
    Exec {
        /// The program (an absolute path) and its arguments.
        argv: Vec<Vec<u8>>,
        /// Its complete environment.
        env: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Remove a directory tree, whoever in the namespace owns its files.
    Remove {
        /// The tree.
        path: PathBuf,
    },
    /// Give paths under `root` these owners (namespace ids), keeping setuid/setgid bits.
    Chown {
        /// The tree.
        root: PathBuf,
        /// Relative path, uid, gid.
        entries: Vec<(Vec<u8>, u32, u32)>,
    },
    /// Check whether overlayfs can be mounted in a user namespace, with these directories.
    ProbeOverlay {
        /// An existing lower directory.
        lower: PathBuf,
        /// An empty upper directory.
        upper: PathBuf,
        /// An empty work directory.
        work: PathBuf,
        /// An empty mount point.
        merged: PathBuf,
    },
}

/// Everything the helper needs to run a step.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RunJob {
    /// The step.
    pub spec: RunSpec,
    /// The root filesystem.
    pub root: Root,
    /// Host files bound at /etc/resolv.conf, /etc/hosts and /etc/hostname.
    pub etc_files: Vec<(String, PathBuf)>,
    /// Single-id mode: an apt configuration file bound at `APT_SINGLE_ID_CONF` when the image has
    /// `/etc/apt/apt.conf.d`, because apt checks that dropping privileges to `_apt` really
    /// changed its uid, which the seccomp emulation cannot fake.
    pub apt_conf: Option<PathBuf>,
    /// An empty directory on which the init process mounts a private tmpfs for secrets.
    pub secrets_dir: PathBuf,
    /// An empty directory on which the init process mounts a private tmpfs for the writable
    /// layers of `rw` bind mounts (their writes vanish with the step).
    pub rw_dir: PathBuf,
    /// For each `MountKind::Ssh` of the spec, in order: the socket kiln relays to the agent
    /// ([`super::ssh`]), which init gives the mount's owner and mode and binds at the target.
    #[serde(default)]
    pub ssh_sockets: Vec<PathBuf>,
    /// Only id 0 exists: skip user switching, install the seccomp emulation.
    pub single_id: bool,
    /// The caller is not real root: copy files it could not read into `readable_dir`.
    pub readable_dir: Option<PathBuf>,
}

/// A message from the helper.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum HelperMessage {
    /// The helper unshared its namespaces: write its id maps now.
    Unshared,
    /// The step ran (or the probe finished).
    Done {
        /// How the command ended.
        status: ExitStatus,
        /// The changes (empty if the command failed).
        diff: Diff,
        /// The requested user was ignored (single-id mode).
        user_ignored: bool,
    },
    /// Set-up failed.
    Failed {
        /// What the helper was doing.
        stage: String,
        /// The path involved.
        path: Option<PathBuf>,
        /// The errno.
        errno: i32,
    },
}

/// What the init process reports to the helper.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum InitReport {
    /// The command ran and ended so.
    Exited(ExitStatus),
    /// Set-up or exec failed.
    Failed(Fail),
}
