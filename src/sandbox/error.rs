//! The sandbox's error enum and warnings.
//!
//! Every variant says what is missing or failed and, where there is one, how to fix it. Errors
//! that happen inside the helper process cross the process boundary as a stage name, an optional
//! path and an errno, and are rebuilt here as [`SandboxError::Setup`] or a more specific variant.
use std::io;
use std::path::PathBuf;

/// Result alias of the sandbox module.
pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// Everything that can go wrong while running a step.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No `binfmt_misc` handler runs this platform's programs on this host.
    #[error(
        "RUN steps for {platform} cannot run on this {host} host: {why}; install \
         `qemu-user-static binfmt-support` (as root, with binfmt_misc mounted at \
         /proc/sys/fs/binfmt_misc) to run them under QEMU user emulation, or build {platform} \
         on a native runner and join the images with `kiln index create`"
    )]
    NoEmulator {
        /// The target platform.
        platform: String,
        /// The host's platform.
        host: String,
        /// What was looked for and not found.
        why: String,
    },
    /// A sysctl or security module forbids user namespaces.
    #[error("user namespaces are disabled on this machine: `{setting}` is `{value}`; fix: {fix}")]
    UserNamespacesDisabled {
        /// The file under /proc/sys that says so.
        setting: &'static str,
        /// Its value.
        value: String,
        /// How to allow them.
        fix: &'static str,
    },
    /// `unshare(CLONE_NEWUSER)` itself failed.
    #[error(
        "the kernel refused to create a user namespace; rootless builds need them: check \
         `sysctl user.max_user_namespaces` (must be > 0), `kernel.unprivileged_userns_clone` \
         (must be 1) and `kernel.apparmor_restrict_unprivileged_userns` (must be 0), or run in a \
         container started with `--security-opt seccomp=unconfined`"
    )]
    UserNamespaceRefused {
        /// The errno of `unshare`.
        #[source]
        source: io::Error,
    },
    /// The helper binary could not be started.
    #[error("failed to start the sandbox helper `{exe}`")]
    SpawnHelper {
        /// The executable (normally `/proc/self/exe`).
        exe: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `newuidmap` or `newgidmap` failed.
    #[error(
        "`{program}` failed to write the {kind} map of the sandbox ({status}): {stderr}; check the \
         entries for `{user}` in /etc/subuid and /etc/subgid and that `{program}` is setuid root \
         (package `uidmap`)"
    )]
    IdMapHelper {
        /// `newuidmap` or `newgidmap`.
        program: PathBuf,
        /// `uid` or `gid`.
        kind: &'static str,
        /// Its exit status.
        status: String,
        /// What it printed.
        stderr: String,
        /// The calling user.
        user: String,
    },
    /// Writing a map directly to /proc failed.
    #[error("failed to write `{path}`")]
    IdMapWrite {
        /// The /proc file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading or writing a host file failed.
    #[error("failed to {action} `{path}`")]
    Io {
        /// What kiln was doing (`read`, `create`, …).
        action: &'static str,
        /// The host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A step of the namespace set-up failed inside the helper.
    #[error("sandbox set-up failed: {stage}{}", path.as_ref().map(|p| format!(" `{}`", p.display())).unwrap_or_default())]
    Setup {
        /// What the helper was doing (`mount overlay`, `pivot_root`, …).
        stage: String,
        /// The path involved, if any.
        path: Option<PathBuf>,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// The program of the step does not exist in the root filesystem.
    #[error(
        "`{program}` was not found in the root filesystem (PATH={path}); a shell-form RUN needs \
         the stage's SHELL (default `/bin/sh`) in the image: use the exec form \
         (RUN [\"program\", \"arg\"]) or a base image that has a shell"
    )]
    ProgramNotFound {
        /// `argv[0]`.
        program: String,
        /// The PATH searched.
        path: String,
    },
    /// The program exists but could not be executed.
    #[error("failed to execute `{program}` in the sandbox")]
    Exec {
        /// `argv[0]`.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The requested user or group has no mapping in the user namespace.
    #[error(
        "cannot run as uid {uid} gid {gid}: not mapped in the user namespace; give the calling user \
         a larger range in /etc/subuid and /etc/subgid (at least 65536 ids)"
    )]
    UserNotMapped {
        /// Requested uid.
        uid: u32,
        /// Requested gid.
        gid: u32,
    },
    /// The step has nothing to run.
    #[error("the RUN step has an empty command")]
    EmptyCommand,
    /// A mount target is not an absolute path, or a bound file is missing.
    #[error("invalid mount target `{target}`: {reason}")]
    InvalidMount {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Kernel overlayfs cannot express a lower layer path.
    #[error("layer path `{path}` contains `,` or `:` or a newline, which overlayfs cannot take; use `--snapshotter walk`")]
    OverlayPath {
        /// The offending path.
        path: PathBuf,
    },
    /// Overlay was requested but this kernel or filesystem refuses it in a user namespace.
    #[error(
        "kernel overlayfs cannot be mounted in a user namespace here (needs Linux >= 5.11 and a \
         filesystem with user xattrs for the upper directory); use `--snapshotter walk`"
    )]
    OverlayUnavailable {
        /// The errno of the test mount.
        #[source]
        source: io::Error,
    },
    /// An unknown `--snapshotter` name.
    #[error("unknown snapshotter `{name}`: expected `overlay`, `walk` or `auto`")]
    UnknownSnapshotter {
        /// The name given.
        name: String,
    },
    /// A RUN step with the default network cannot get one here (no `pasta`, no `/dev/net/tun`).
    #[error("RUN steps cannot get their own network on this machine: {reason}")]
    NetworkUnavailable {
        /// What is missing, the fix and the alternatives.
        reason: String,
    },
    /// `pasta` did not set up a step's network.
    #[error("`pasta` failed to set up the network of the RUN step ({status}): {log}")]
    NetworkSetup {
        /// Its exit status, or why kiln stopped waiting.
        status: String,
        /// What it printed.
        log: String,
    },
    /// The helper died without reporting a result.
    #[error(
        "the sandbox helper exited unexpectedly ({status}); the helper executable must be a kiln \
         binary whose `main` calls `sandbox::helper_main_if_requested` first"
    )]
    HelperDied {
        /// Its wait status.
        status: String,
    },
    /// The helper sent something that is not a valid message (a bug: please report it).
    #[error("internal error: bad message from the sandbox helper (please report this bug)")]
    Protocol {
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

impl SandboxError {
    /// Rebuilds an error reported by the helper process from its parts.
    pub(crate) fn from_helper(stage: String, path: Option<PathBuf>, errno: i32) -> Self {
        let source = io::Error::from_raw_os_error(errno);
        if stage == "unshare"
            && matches!(
                errno,
                libc::EPERM | libc::EINVAL | libc::ENOSPC | libc::EUSERS
            )
        {
            return SandboxError::UserNamespaceRefused { source };
        }
        // Refusals of overlay itself; other errors (a missing lower directory, say) are set-up
        // errors with their path.
        if stage == "mount overlay"
            && matches!(errno, libc::EPERM | libc::ENODEV | libc::EOPNOTSUPP)
        {
            return SandboxError::OverlayUnavailable { source };
        }
        SandboxError::Setup {
            stage,
            path,
            source,
        }
    }
}

/// Conditions that do not stop a build but that the user should see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxWarning {
    /// No usable subordinate ids: every file of every layer will be owned by root.
    SingleIdMode {
        /// The calling user.
        user: String,
        /// What was missing.
        missing: &'static str,
        /// The first id of a free 65536-id range to suggest (overlapping no range in
        /// /etc/subuid or /etc/subgid, nor the user's own ids).
        free_start: u64,
    },
    /// Single-id mode cannot switch to this user; the step ran as root instead.
    UserIgnored {
        /// The requested uid.
        uid: u32,
    },
}

impl std::fmt::Display for SandboxWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SandboxWarning::SingleIdMode {
                user,
                missing,
                free_start,
            } => {
                let end = free_start + 65535;
                write!(
                    f,
                    "{missing}: RUN steps use a single-id user namespace, where chown and setuid \
                     are emulated and every file is owned by root in the layer; to fix it: \
                     `usermod --add-subuids {free_start}-{end} --add-subgids {free_start}-{end} \
                     {user}` and install `uidmap` (newuidmap/newgidmap)"
                )
            }
            SandboxWarning::UserIgnored { uid } => write!(
                f,
                "single-id mode: the step ran as root instead of uid {uid} (only id 0 exists)"
            ),
        }
    }
}
