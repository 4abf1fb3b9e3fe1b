//! Rootless execution of RUN steps in Linux user namespaces, and the snapshots that turn a step
//! into a [`Diff`].
//!
//! This module owns: the [`Sandbox`] trait and its real implementation [`UserNsSandbox`], the
//! hidden helper process that sets up the namespaces ([`helper_main_if_requested`], called first
//! thing by `main.rs`), uid/gid mapping ([`IdMapping`]), the single-id seccomp emulation, the
//! [`probe`] of what this machine allows, SSH agent forwarding ([`ssh`]), the `binfmt_misc` emulators that run foreign-platform
//! programs ([`binfmt`]), the snapshotters ([`Snapshot`]: kernel overlayfs or a
//! metadata walk) and [`FakeSandbox`] for unit tests of build logic. It does not write tar
//! layers (that is `layer`), resolve `USER` names (the builder does, from the stage's
//! `/etc/passwd`), or own cache directories (the store does; they are passed in as [`Mount`]s).
//!
//! Start reading at [`UserNsSandbox::run`]. The process tree of one step is:
//!
//! ```text
//! kiln (any number of threads)
//!  ├─ pasta (default network only): attached to the helper's net+user namespaces for the step
//!  └─ helper: `/proc/self/exe __sandbox-helper`, single-threaded; unshares user+pid+ipc+uts(+net);
//!     │        kiln writes its uid/gid maps; it computes the diff afterwards, as root in the userns
//!     └─ init: pid 1 of the step; own mount namespace: rootfs, /proc, /dev, /sys, /etc files, mounts,
//!        │      pivot_root; reaps orphans, kills what is left, removes the mount points it made
//!        └─ the command: user switched, seccomp (single-id mode), no inherited fds, exec
//! ```
//!
//! Every process dies with its parent (`PR_SET_PDEATHSIG`), and everything in the step's PID
//! namespace dies with init, so killing kiln kills the whole step.
//!
//! # Use from the builder
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kiln::sandbox::{probe, ChangeKind, RunSpec, Sandbox, SandboxOptions, Snapshot};
//! use kiln::sandbox::{SnapshotterKind, UserNsSandbox};
//! # let (scratch, step_dir) = (std::path::Path::new("/tmp"), std::path::Path::new("/tmp/s"));
//! # let layer_dirs: Vec<std::path::PathBuf> = Vec::new();
//! let sandbox = UserNsSandbox::new(SandboxOptions::default()); // helper = /proc/self/exe
//! let report = probe(&sandbox, scratch)?; // once per build; report.warnings → the reporter
//! let kind = report.snapshotter(SnapshotterKind::parse_choice("auto")?)?;
//! let snapshot = match kind {
//!     SnapshotterKind::Overlay => Snapshot::overlay(layer_dirs, step_dir)?, // topmost first
//!     SnapshotterKind::Walk => Snapshot::walk(step_dir.join("rootfs")),
//! };
//! assert!(snapshot.exists("/bin/sh"), "checked before a shell-form RUN");
//! let spec = RunSpec { argv: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()], ..RunSpec::default() };
//! let outcome = sandbox.run(&snapshot, &spec, &mut |_stream, bytes| print!("{}", String::from_utf8_lossy(bytes)))?;
//! if outcome.status.success() {
//!     for change in &outcome.diff.changes {
//!         match &change.kind {
//!             ChangeKind::Upsert(entry) => { /* tar header from entry, content from entry.host_path */ }
//!             ChangeKind::Delete => { /* `.wh.NAME` */ }
//!             ChangeKind::OpaqueDir => { /* `DIR/.wh..wh..opq` */ }
//!         }
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Design decisions
//!
//! - **Identity.** Chosen once per [`UserNsSandbox`] ([`IdMapping`]):
//!   - *real root*: still a user namespace (so the same code path, PID/mount isolation and
//!     `userxattr` overlay), with the identity map `0 0 4294967295`: the step's ids are the host's.
//!   - *rootless with `/etc/subuid`+`/etc/subgid` entries and `newuidmap`/`newgidmap`*: 0 → the
//!     caller, 1.. → the subordinate ranges (buildah's layout); the helpers' exit status is checked.
//!   - *otherwise, single-id mode* ([`SandboxWarning::SingleIdMode`], a warning, not an error,
//!     given once by [`UserNsSandbox::warnings`], with a subordinate range to add that overlaps
//!     no existing range and not the caller's ids): only 0 → the caller. A seccomp filter makes `chown`, `fchown`, `fchownat`, `lchown`,
//!     `setuid`, `setgid`, `setreuid`, `setregid`, `setresuid`, `setresgid`, `setgroups`,
//!     `setfsuid`, `setfsgid` and `mknod`/`mknodat` of devices return 0, as charliecloud's
//!     seccomp mode does, and apt gets `APT::Sandbox::User "root"` (a bound file, never in the
//!     layer), so `apt-get install` and `useradd` work.
//! - **Ownership in layers.** The diff is computed inside the user namespace, so every uid and
//!   gid it reports is the one the step saw: the kernel maps host ids back through the id map.
//!   Base-image files keep their owners only if the rootless unpack gave them the right host ids:
//!   use [`UserNsSandbox::chown_in_namespace`] after unpacking as the caller.
//! - **Readable diffs.** A rootless step may create files the caller cannot read (uid 1000, mode
//!   0600). The helper, as root in the namespace, copies those into a private directory and points
//!   [`Entry::host_path`] at the copy; metadata is always the original's.
//! - **Host-side work on what rootless steps wrote.** A 0700 directory of uid 1000 belongs to a
//!   subordinate uid on the host, so the caller cannot enter it: [`UserNsSandbox::remove_tree`],
//!   [`UserNsSandbox::exec_in_namespace`] (run a host program, e.g. kiln with a hidden
//!   subcommand or a rootless `kiln import`, as root in the namespace) and [`UserNsSandbox::chown_in_namespace`] do that
//!   work as root in a user namespace with the same mapping.
//! - **Network.** Every step but a `--network=host` one gets a network namespace of its own, so
//!   the host's loopback services and abstract unix sockets are out of its reach. For the
//!   default network kiln attaches `pasta` to it, which relays outbound connections through the
//!   caller's own sockets (rootless) and forwards no port; `--network=none` keeps only `lo`. The
//!   `net` module has the flags and the reasons; [`UserNsSandbox::check_network`] tells before a
//!   build whether this machine can do it.
//! - **SSH agents** ([`MountKind::Ssh`]) are relayed read-only through a socket kiln listens
//!   on for the length of the step ([`ssh`]); the step never sees the host's agent socket.
//! - **Secrets** ([`MountKind::Secret`]) reach the helper through its pipe and live on a tmpfs
//!   private to the step's mount namespace: never on disk, in a layer or in the diff.
//! - **No trace of kiln in the layer.** Mount points kiln had to create (`/proc`, `/etc/hosts`,
//!   `RUN --mount` targets, …) are removed after the step and their parents' times restored; the
//!   overlay diff drops copied-up directories whose metadata did not change, the walk diff
//!   ignores directory ctimes.
//!
//! # Limitations
//!
//! - Single-id mode: every file is owned by 0 in the layer, `USER 1000` runs as 0
//!   ([`SandboxWarning::UserIgnored`]), device nodes are not created, setuid programs cannot
//!   change identity.
//! - The step keeps every capability inside its user namespace (no bounding-set drop, no
//!   `no_new_privs`, no default seccomp profile) and there are no cgroup limits.
//! - Only the native syscall ABI is filtered in single-id mode.
//! - `PR_SET_PDEATHSIG` fires when the *thread* that started the helper exits: call
//!   [`Sandbox::run`] from a thread that lives until it returns (it is synchronous anyway).
//! - A failed step leaves its partial changes in the upper directory or the walk root
//!   filesystem: discard them.

pub mod binfmt;
mod copy;
mod error;
mod fail;
mod fake;
mod helper;
mod idmap;
mod init;
mod mnt;
mod mounts;
mod net;
mod probe;
mod protocol;
mod seccomp;
pub mod snapshot;
pub mod ssh;
mod userns;

pub use binfmt::Emulator;
pub use error::{Result, SandboxError, SandboxWarning};
pub use fake::{Bound, FakeSandbox, ScriptedChange};
pub use helper::{helper_main_if_requested, HELPER_ARG};
pub use idmap::{caller_view, IdMapping, IdRange};
pub use probe::{probe, ProbeReport};
pub use snapshot::{Change, ChangeKind, Diff, Entry, FileKind, Snapshot, SnapshotterKind};
pub use ssh::{SshAgent, SshError, SshSource};
pub use userns::{SandboxOptions, UserNsSandbox};

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Runs one RUN step on a snapshot and reports what it changed; and the host-side work on the
/// trees steps write, which needs the same identity. The builder knows sandboxes only through
/// this trait: [`UserNsSandbox`] in kiln, [`FakeSandbox`] in unit tests of build logic.
pub trait Sandbox {
    /// Runs `spec` on `root`, streaming the command's output to `out`, and returns its exit
    /// status and (when it succeeded) the [`Diff`] of the root filesystem.
    fn run(
        &self,
        root: &Snapshot,
        spec: &RunSpec,
        out: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<RunOutcome>;

    /// Removes `path` and everything below it, including what a rootless step wrote that the
    /// caller cannot delete (a 0700 directory of a subordinate uid).
    fn remove_tree(&self, path: &Path) -> Result<()>;

    /// Gives paths under `root` owners, as ids inside the sandbox: `entries` are (relative path,
    /// uid, gid). Files unpacked as the caller then look to steps as the layer says.
    fn chown_in_namespace(&self, root: &Path, entries: &[(Vec<u8>, u32, u32)]) -> Result<()>;

    /// How the files this sandbox owns are owned on the host (the id mapping), in words: part
    /// of the key of a persistent unpacked snapshot, whose owners on disk depend on it.
    fn ownership(&self) -> String;

    /// How programs of `platform` run in this sandbox: `None` natively, or the QEMU user
    /// emulator registered in `binfmt_misc` ([`binfmt`]); [`SandboxError::NoEmulator`] when
    /// nothing would run them. Checked before the first step of a build.
    fn emulator(&self, platform: &crate::oci::Platform) -> Result<Option<Emulator>>;
}

/// What a step is: the command and the environment it runs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The program and its arguments; a program without `/` is looked up in the `PATH` of `env`.
    pub argv: Vec<String>,
    /// The complete environment of the command (ENV plus build ARGs); nothing else is inherited.
    pub env: Vec<(String, String)>,
    /// The working directory inside the root filesystem; created (mode 0755, owner 0) if missing.
    pub cwd: String,
    /// Who the command runs as, already resolved to numbers by the builder.
    pub user: User,
    /// Which network the step sees.
    pub network: Network,
    /// Extra mounts (`RUN --mount`), applied in order after the standard ones.
    pub mounts: Vec<Mount>,
    /// The hostname inside the step, also written to `/etc/hostname`.
    pub hostname: String,
    /// `--add-host`: (name, address) lines appended to the step's `/etc/hosts`, a file bound
    /// over the image's for the step only (never in the layer).
    #[serde(default)]
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
}

impl Default for RunSpec {
    fn default() -> Self {
        RunSpec {
            argv: Vec::new(),
            env: vec![("PATH".into(), DEFAULT_PATH.into())],
            cwd: "/".into(),
            user: User::default(),
            network: Network::Default,
            mounts: Vec::new(),
            hostname: "kiln".into(),
            extra_hosts: Vec::new(),
        }
    }
}

/// The `PATH` used to find the program when `env` sets none (the same as BuildKit's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Numeric identity of the command inside the user namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub additional_gids: Vec<u32>,
}

/// The network of a step (`RUN --network=`); see the design decisions above.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// A network namespace of the step's own, connected to the outside by `pasta`: outbound
    /// connections work; the host's loopback services and abstract unix sockets do not.
    #[default]
    Default,
    /// A new network namespace with only a loopback interface (up).
    None,
    /// The host's network namespace (the builder requires the `network.host` entitlement).
    Host,
}

/// One `RUN --mount` (or any extra mount) inside the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the root filesystem; created if missing and left out of the diff.
    pub target: String,
    /// What is mounted there.
    pub kind: MountKind,
}

/// The kinds of [`Mount`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A file or directory from a host tree bound into the step. `source` is resolved inside
    /// `root` with [`crate::inroot`], by the builder and again by the sandbox (which cannot bind
    /// a descriptor opened in another mount namespace), so a symlink never leads out of `root`.
    /// A writable one (`readonly: false`) is an overlay (or a copy) on a tmpfs private to the
    /// step: its writes vanish with the step, as in BuildKit, and never reach `root`.
    Bind {
        /// The tree the source is resolved in: the build context, or a stage's or an image's
        /// root filesystem (chosen by kiln or named by the user, so trusted).
        root: PathBuf,
        /// The name inside `root` (from the Dockerfile: untrusted); empty for `root` itself.
        source: String,
        /// Whether the step may not write to it.
        readonly: bool,
    },
    /// A fresh tmpfs, gone after the step.
    Tmpfs {
        /// Size limit in bytes (the kernel default, half of RAM, when `None`).
        size: Option<u64>,
    },
    /// A secret (`RUN --mount=type=secret`): its bytes travel to the helper over a pipe, are
    /// written to a tmpfs private to the step's mount namespace and bound read-only at the
    /// target, so they never touch the disk, the layer or the diff.
    Secret {
        /// The secret's content.
        data: SecretData,
        /// Owner of the file inside the user namespace (BuildKit's default is 0).
        uid: u32,
        /// Group of the file.
        gid: u32,
        /// Permission bits (BuildKit's default is 0o400).
        mode: u32,
    },
    /// An SSH agent (`RUN --mount=type=ssh`): the sandbox listens on a socket of its own in
    /// the step's run directory, relays it read-only to `agent` ([`ssh`]) while the step
    /// runs, and binds it at the target with this owner and mode. Never in the layer.
    Ssh {
        /// The agent's socket on the host ([`SshAgent::socket`]).
        agent: PathBuf,
        /// Owner of the socket inside the user namespace (BuildKit's default is 0).
        uid: u32,
        /// Group of the socket.
        gid: u32,
        /// Permission bits (BuildKit's default is 0o600).
        mode: u32,
    },
    /// A persistent cache directory owned by the store, bound read-write.
    Cache {
        /// The host directory; created with `uid`, `gid` and `mode` if it does not exist yet.
        source: PathBuf,
        /// Owner inside the user namespace when created.
        uid: u32,
        /// Group inside the user namespace when created.
        gid: u32,
        /// Permission bits when created.
        mode: u32,
    },
}

/// The bytes of a secret; `Debug` shows only their length, so specs can be logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretData(pub Vec<u8>);

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretData(<{} bytes>)", self.0.len())
    }
}

/// Which output stream a chunk of step output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How the step's command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Code(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// The result of [`Sandbox::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// How the command ended.
    pub status: ExitStatus,
    /// The changes to the root filesystem; empty when the command failed (the build stops then).
    pub diff: Diff,
    /// Things the user should know about this step, such as running as root because single-id
    /// mode has no uid 1000 (the sandbox's own warnings are in [`UserNsSandbox::warnings`]).
    pub warnings: Vec<SandboxWarning>,
}
