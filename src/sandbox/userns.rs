//! kiln's side of a sandboxed step: [`UserNsSandbox`] spawns the helper, writes its id maps,
//! streams the step's output and collects the result.
//!
//! This side may run in a multi-threaded process: it only uses `std::process::Command` (whose
//! `pre_exec` hook here makes two async-signal-safe calls, `dup2` and `prctl`) and pipes that are
//! close-on-exec, so no descriptor reaches a process started by another thread.
use super::error::{Result, SandboxError, SandboxWarning};
use super::helper::HELPER_ARG;
use super::idmap::{search_path_or_env, IdMapping};
use super::mnt::relative;
use super::protocol::{HelperMessage, HelperRequest, Job, RunJob, RESULT_FD};
use super::snapshot::{Snapshot, SnapshotterKind};
use super::{RunOutcome, RunSpec, Sandbox, Stream};
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// systemd-resolved's list of the upstream servers behind its loopback stub `127.0.0.53`.
const SYSTEMD_RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";

/// How a [`UserNsSandbox`] is set up.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// The kiln binary to re-execute as the helper (`/proc/self/exe`; tests point it at the
    /// built `kiln` binary).
    pub helper_exe: PathBuf,
    /// Where to look for `newuidmap`/`newgidmap` (`PATH` syntax); `None` uses the process's PATH.
    pub search_path: Option<OsString>,
    /// Use single-id mode even when subordinate ids are available.
    pub force_single_id: bool,
    /// The host directory with `resolv.conf`, `hosts`, `subuid` and `subgid` (`/etc`).
    pub etc_dir: PathBuf,
    /// The `pasta` program that connects steps with the default network; `None` looks it up
    /// on `search_path`.
    pub pasta: Option<PathBuf>,
    /// The TUN device pasta opens (`/dev/net/tun`).
    pub tun_device: PathBuf,
    /// The `binfmt_misc` mount that says how foreign programs run (`/proc/sys/fs/binfmt_misc`).
    pub binfmt_dir: PathBuf,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            helper_exe: PathBuf::from("/proc/self/exe"),
            search_path: None,
            force_single_id: false,
            etc_dir: PathBuf::from("/etc"),
            pasta: None,
            tun_device: PathBuf::from("/dev/net/tun"),
            binfmt_dir: PathBuf::from(super::binfmt::BINFMT_DIR),
        }
    }
}

/// Runs steps in user namespaces; see the module documentation of [`crate::sandbox`].
#[derive(Debug, Clone)]
pub struct UserNsSandbox {
    opts: SandboxOptions,
    mapping: IdMapping,
    warnings: Vec<SandboxWarning>,
}

impl UserNsSandbox {
    /// Chooses the id mapping (real root: identity; else subordinate ids if available, else
    /// single-id with a warning). Does not start anything: call [`super::probe`] once per build
    /// to learn whether namespaces and overlay work here.
    pub fn new(opts: SandboxOptions) -> UserNsSandbox {
        let search = search_path_or_env(opts.search_path.as_deref());
        let (mut mapping, warning) = IdMapping::detect(&search, &opts.etc_dir);
        if opts.force_single_id && !matches!(mapping, IdMapping::Single { .. }) {
            let uid = rustix::process::geteuid().as_raw();
            let gid = rustix::process::getegid().as_raw();
            mapping = IdMapping::Single { uid, gid };
        }
        UserNsSandbox {
            opts,
            mapping,
            warnings: warning.into_iter().collect(),
        }
    }

    /// The id mapping every step uses.
    pub fn id_mapping(&self) -> &IdMapping {
        &self.mapping
    }

    /// Warnings about the set-up (single-id mode), to show once per build.
    pub fn warnings(&self) -> &[SandboxWarning] {
        &self.warnings
    }

    /// Gives paths under `root` the owners a layer assigns them, as namespace ids: `entries` are
    /// (relative path, uid, gid). A rootless import unpacks everything as the caller (namespace
    /// id 0) and then calls this for the other owners, so that steps and later diffs see the
    /// layer's real ids. Real root: a plain `lchown`. Subordinate ids: done by the helper as root
    /// in a user namespace with this sandbox's mapping. Single-id mode: a no-op (only id 0
    /// exists; the files stay owned by 0). Setuid and setgid bits are kept.
    pub fn chown_in_namespace(&self, root: &Path, entries: &[(Vec<u8>, u32, u32)]) -> Result<()> {
        if entries.is_empty() || self.mapping.is_single() {
            return Ok(());
        }
        if self.mapping == IdMapping::Identity {
            return super::helper::chown_tree(root, entries)
                .map_err(|f| SandboxError::from_helper(f.stage, f.path, f.errno));
        }
        let job = Job::Chown {
            root: root.to_owned(),
            entries: entries.to_vec(),
        };
        match spawn_helper(&self.opts, &self.mapping, job, None, &mut |_, _| {})? {
            HelperMessage::Failed { stage, path, errno } => {
                Err(SandboxError::from_helper(stage, path, errno))
            }
            _ => Ok(()),
        }
    }

    /// Runs a host program as root in a user namespace with this sandbox's id mapping (real
    /// root: directly), passing its output to `out`. For work on trees that rootless steps
    /// wrote to, which the caller itself may not be allowed to touch: unpacking a layer into a
    /// walk root filesystem, copying into it, and so on (e.g. kiln re-executing itself with a
    /// hidden subcommand). `argv[0]` must be an absolute path; `env` is the whole environment; a
    /// program that cannot be executed is [`SandboxError::Exec`].
    pub fn exec_in_namespace(
        &self,
        argv: &[std::ffi::OsString],
        env: &[(std::ffi::OsString, std::ffi::OsString)],
        out: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<super::ExitStatus> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = |s: &std::ffi::OsString| s.as_bytes().to_vec();
        let job = Job::Exec {
            argv: argv.iter().map(bytes).collect(),
            env: env.iter().map(|(k, v)| (bytes(k), bytes(v))).collect(),
        };
        let program = argv
            .first()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if self.mapping == IdMapping::Identity {
            let output = Command::new(argv.first().ok_or(SandboxError::EmptyCommand)?)
                .args(&argv[1..])
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .output()
                .map_err(|source| SandboxError::Exec {
                    program: program.clone(),
                    source,
                })?;
            out(Stream::Stdout, &output.stdout);
            out(Stream::Stderr, &output.stderr);
            let status = match (
                output.status.code(),
                std::os::unix::process::ExitStatusExt::signal(&output.status),
            ) {
                (Some(code), _) => super::ExitStatus::Code(code),
                (None, Some(sig)) => super::ExitStatus::Signal(sig),
                (None, None) => super::ExitStatus::Code(-1),
            };
            return Ok(status);
        }
        let msg = spawn_helper(&self.opts, &self.mapping, job, None, out)?;
        match msg {
            HelperMessage::Done { status, .. } => Ok(status),
            HelperMessage::Failed { stage, errno, .. } if stage == "exec" => {
                Err(SandboxError::Exec {
                    program,
                    source: std::io::Error::from_raw_os_error(errno),
                })
            }
            HelperMessage::Failed { stage, path, errno } => {
                Err(SandboxError::from_helper(stage, path, errno))
            }
            HelperMessage::Unshared => Err(SandboxError::HelperDied {
                status: "protocol: unexpected message".into(),
            }),
        }
    }

    /// Removes a directory tree that steps wrote to (an upper directory, a walk root filesystem,
    /// a scratch directory). A rootless step can leave files the caller cannot delete (a 0700
    /// directory of uid 1000 is a subordinate uid's on the host), so without real root this runs
    /// as root in a user namespace. A missing path is not an error.
    pub fn remove_tree(&self, path: &Path) -> Result<()> {
        let io_error = |source| SandboxError::Io {
            action: "remove",
            path: path.to_owned(),
            source,
        };
        if self.mapping == IdMapping::Identity {
            return super::helper::remove_tree(path).map_err(io_error);
        }
        let job = Job::Remove {
            path: path.to_owned(),
        };
        match spawn_helper(&self.opts, &self.mapping, job, None, &mut |_, _| {})? {
            HelperMessage::Failed { stage, path, errno } => {
                Err(SandboxError::from_helper(stage, path, errno))
            }
            _ => Ok(()),
        }
    }

    /// Checks that steps with the default network ([`super::Network::Default`]) can run here:
    /// `pasta` exists and the caller can open the TUN device. Returns pasta's path; the error
    /// ([`SandboxError::NetworkUnavailable`]) names what to install or fix and the
    /// alternatives. The builder calls it before the first step; [`Sandbox::run`] does too.
    pub fn check_network(&self) -> Result<PathBuf> {
        let search = search_path_or_env(self.opts.search_path.as_deref());
        super::net::check(self.opts.pasta.as_deref(), &search, &self.opts.tun_device)
    }

    pub(crate) fn options(&self) -> &SandboxOptions {
        &self.opts
    }

    /// Checks what can be known about `spec` before anything runs: a command, absolute mount
    /// targets, and a user, group and supplementary groups that exist in the id mapping (single-id
    /// mode runs every user as 0, with a warning, instead). [`Sandbox::run`] checks this too; the
    /// builder can call it for every step before the first one runs.
    pub fn check(&self, spec: &RunSpec) -> Result<()> {
        if spec.argv.is_empty() {
            return Err(SandboxError::EmptyCommand);
        }
        for m in &spec.mounts {
            if relative(&m.target).is_none_or(|r| r.is_empty()) {
                let reason = "must be an absolute path below `/` without `..`";
                return Err(SandboxError::InvalidMount {
                    target: m.target.clone(),
                    reason,
                });
            }
        }
        let user = &spec.user;
        let all_mapped = self.mapping.contains(user.uid, user.gid)
            && user
                .additional_gids
                .iter()
                .all(|g| self.mapping.contains(0, *g));
        if !self.mapping.is_single() && !all_mapped {
            return Err(SandboxError::UserNotMapped {
                uid: user.uid,
                gid: user.gid,
            });
        }
        Ok(())
    }

    /// In single-id mode, writes the apt configuration that keeps apt from dropping privileges
    /// to `_apt` (its uid check would fail: there is no uid but 0), as charliecloud does.
    fn apt_conf(&self, dir: &Path) -> Result<Option<PathBuf>> {
        if !self.mapping.is_single() {
            return Ok(None);
        }
        let path = dir.join("apt-single-id.conf");
        let text = "// Written by kiln for single-id mode; not part of the image.\nAPT::Sandbox::User \"root\";\n";
        std::fs::write(&path, text).map_err(|source| SandboxError::Io {
            action: "write",
            path: path.clone(),
            source,
        })?;
        Ok(Some(path))
    }

    /// Writes /etc/resolv.conf, /etc/hosts and /etc/hostname for the step into `dir`.
    fn etc_files(&self, spec: &RunSpec, dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        let host = |name: &str| std::fs::read(self.opts.etc_dir.join(name)).unwrap_or_default();
        let resolv = match spec.network {
            // A loopback resolver of the host is out of the step's reach.
            super::Network::Default => super::net::resolv_conf(
                &host("resolv.conf"),
                std::fs::read(SYSTEMD_RESOLVED_UPSTREAM).ok().as_deref(),
            ),
            super::Network::None | super::Network::Host => host("resolv.conf"),
        };
        let mut hosts = host("hosts");
        if hosts.is_empty() {
            hosts = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_vec();
        }
        hosts.extend_from_slice(format!("127.0.1.1\t{}\n", spec.hostname).as_bytes());
        // `--add-host`, after the host's lines as Docker appends its `ExtraHosts`.
        for (name, ip) in &spec.extra_hosts {
            hosts.extend_from_slice(format!("{ip}\t{name}\n").as_bytes());
        }
        let files = [
            ("etc/resolv.conf", resolv),
            ("etc/hosts", hosts),
            ("etc/hostname", format!("{}\n", spec.hostname).into_bytes()),
        ];
        let mut out = Vec::new();
        for (target, content) in files {
            let path = dir.join(target.trim_start_matches("etc/"));
            std::fs::write(&path, content).map_err(|source| SandboxError::Io {
                action: "write",
                path: path.clone(),
                source,
            })?;
            out.push((target.to_owned(), path));
        }
        Ok(out)
    }
}

impl Sandbox for UserNsSandbox {
    fn run(
        &self,
        root: &Snapshot,
        spec: &RunSpec,
        out: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<RunOutcome> {
        self.check(spec)?;
        let pasta = match spec.network {
            super::Network::Default => Some(self.check_network()?),
            super::Network::None | super::Network::Host => None,
        };
        let scratch = match root.kind() {
            SnapshotterKind::Overlay => root.upper().and_then(Path::parent),
            SnapshotterKind::Walk => root.rootfs().and_then(Path::parent),
        }
        .map(Path::to_owned)
        .unwrap_or_else(std::env::temp_dir);
        // Kept after the step: readable copies are read by the layer writer later; the builder
        // removes its scratch directories.
        let run_dir = tempfile::Builder::new()
            .prefix("kiln-run-")
            .tempdir_in(&scratch)
            .map_err(|source| SandboxError::Io {
                action: "create a directory in",
                path: scratch.clone(),
                source,
            })?
            .keep();
        let make_dir = |name: &str| {
            let dir = run_dir.join(name);
            std::fs::create_dir(&dir).map_err(|source| SandboxError::Io {
                action: "create",
                path: dir.clone(),
                source,
            })?;
            Ok::<_, SandboxError>(dir)
        };
        // SSH agents: one read-only relay per mount, listening until the step is over.
        let forwards = super::ssh::Forward::for_spec(spec, &run_dir.join("ssh"))?;
        let job = RunJob {
            ssh_sockets: forwards.iter().map(|f| f.path().to_owned()).collect(),
            spec: spec.clone(),
            root: root.root().clone(),
            etc_files: self.etc_files(spec, &run_dir)?,
            apt_conf: self.apt_conf(&run_dir)?,
            secrets_dir: make_dir("secrets")?,
            rw_dir: make_dir("rw")?,
            single_id: self.mapping.is_single(),
            readable_dir: (self.mapping != IdMapping::Identity).then(|| run_dir.join("readable")),
        };
        let net = pasta.as_deref().map(|p| (p, run_dir.as_path()));
        let msg = spawn_helper(&self.opts, &self.mapping, Job::Run(Box::new(job)), net, out);
        drop(forwards);
        let msg = msg?;
        match msg {
            HelperMessage::Done {
                status,
                diff,
                user_ignored,
            } => {
                // The sandbox's own warnings (single-id mode) were reported once, with the
                // probe; only this step's go here.
                let mut warnings = Vec::new();
                if user_ignored {
                    warnings.push(SandboxWarning::UserIgnored { uid: spec.user.uid });
                }
                Ok(RunOutcome {
                    status,
                    diff,
                    warnings,
                })
            }
            HelperMessage::Failed { stage, path, errno } => {
                Err(helper_error(spec, stage, path, errno))
            }
            HelperMessage::Unshared => Err(SandboxError::HelperDied {
                status: "protocol: unexpected message".into(),
            }),
        }
    }

    fn remove_tree(&self, path: &Path) -> Result<()> {
        UserNsSandbox::remove_tree(self, path)
    }

    fn chown_in_namespace(&self, root: &Path, entries: &[(Vec<u8>, u32, u32)]) -> Result<()> {
        UserNsSandbox::chown_in_namespace(self, root, entries)
    }

    fn ownership(&self) -> String {
        format!("userns {:?}", self.id_mapping())
    }

    fn emulator(&self, platform: &crate::oci::Platform) -> Result<Option<super::Emulator>> {
        super::binfmt::emulator(&self.options().binfmt_dir, platform).map_err(|why| {
            SandboxError::NoEmulator {
                platform: platform.to_string(),
                host: crate::oci::Platform::host().to_string(),
                why,
            }
        })
    }
}

fn helper_error(spec: &RunSpec, stage: String, path: Option<PathBuf>, errno: i32) -> SandboxError {
    let program = spec.argv.first().cloned().unwrap_or_default();
    match (stage.as_str(), errno) {
        ("exec", libc::ENOENT) => {
            let path = spec
                .env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map_or(super::DEFAULT_PATH, |(_, v)| v)
                .to_owned();
            SandboxError::ProgramNotFound { program, path }
        }
        ("exec", _) => SandboxError::Exec {
            program,
            source: std::io::Error::from_raw_os_error(errno),
        },
        ("switch user: id not mapped", _) => SandboxError::UserNotMapped {
            uid: spec.user.uid,
            gid: spec.user.gid,
        },
        _ => SandboxError::from_helper(stage, path, errno),
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| SandboxError::Io {
        action: "create a pipe",
        path: PathBuf::new(),
        source: e.into(),
    })
}

/// Starts the helper with `job`, writes its id maps, attaches `pasta` (program, directory for
/// its pid file and log) to its network namespace if given, streams its stdout/stderr to `out`
/// and returns its last message.
pub(crate) fn spawn_helper(
    opts: &SandboxOptions,
    mapping: &IdMapping,
    job: Job,
    pasta: Option<(&Path, &Path)>,
    out: &mut dyn FnMut(Stream, &[u8]),
) -> Result<HelperMessage> {
    let (control_r, control_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (result_r, result_w) = pipe()?;
    let result_raw = result_w.as_raw_fd();
    let mut cmd = Command::new(&opts.helper_exe);
    cmd.arg(HELPER_ARG)
        .env_clear()
        .stdin(Stdio::from(control_r))
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w));
    // SAFETY: the hook runs between fork and exec and only makes async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || {
            if result_raw == RESULT_FD {
                if libc::fcntl(RESULT_FD, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(result_raw, RESULT_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| SandboxError::SpawnHelper {
        exe: opts.helper_exe.clone(),
        source,
    })?;
    drop(cmd);
    drop(result_w);
    let mut session = Session {
        child,
        result: result_r,
        buf: Vec::new(),
        done: false,
    };
    let request = HelperRequest {
        parent_pid: std::process::id() as i32,
        job,
    };
    let mut line =
        serde_json::to_vec(&request).map_err(|source| SandboxError::Protocol { source })?;
    line.push(b'\n');
    let mut control = std::fs::File::from(control_w);
    // A write error means the helper died; its wait status tells the story below.
    let _ = control.write_all(&line);

    match session.next_message()? {
        Some(HelperMessage::Unshared) => {}
        Some(msg) => return Ok(msg),
        None => return Err(session.died()),
    }
    // On failure, dropping the session kills the helper, which is waiting for "go".
    mapping.write(session.child.id())?;
    // The step starts only when its network is up; pasta is killed after the step (when this
    // guard drops, before the session's).
    let _pasta = match pasta {
        Some((exe, dir)) => Some(super::net::Pasta::start(exe, session.child.id(), dir)?),
        None => None,
    };
    let _ = control.write_all(b"go\n");
    drop(control);
    session.pump(out_r, err_r, out)?;
    let msg = session.next_message()?;
    match msg {
        Some(msg) => {
            let _ = session.child.wait();
            Ok(msg)
        }
        None => Err(session.died()),
    }
}

/// One helper process and its message pipe. Dropping it kills and reaps the helper if it is
/// still running (after an error), so no helper outlives a failed [`spawn_helper`].
struct Session {
    child: std::process::Child,
    result: OwnedFd,
    buf: Vec<u8>,
    done: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Both are no-ops for a helper that was already waited for.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Session {
    /// The next complete message line, reading more if needed; `None` at EOF.
    fn next_message(&mut self) -> Result<Option<HelperMessage>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let msg = serde_json::from_slice(&line)
                    .map_err(|source| SandboxError::Protocol { source })?;
                return Ok(Some(msg));
            }
            if self.done {
                return Ok(None);
            }
            let mut chunk = [0u8; 65536];
            match rustix::io::read(&self.result, &mut chunk) {
                Ok(0) => self.done = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => self.done = true,
            }
        }
    }

    fn died(&mut self) -> SandboxError {
        let status = self
            .child
            .wait()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        SandboxError::HelperDied { status }
    }

    /// Streams stdout and stderr to `out` and buffers result messages until all three close.
    fn pump(
        &mut self,
        out_r: OwnedFd,
        err_r: OwnedFd,
        out: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<()> {
        let mut open = [Some(out_r), Some(err_r)];
        let mut chunk = vec![0u8; 65536];
        while open.iter().any(Option::is_some) || !self.done {
            let mut fds: Vec<libc::pollfd> = Vec::new();
            let mut who: Vec<usize> = Vec::new();
            for (i, fd) in open.iter().enumerate() {
                if let Some(fd) = fd {
                    fds.push(libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    who.push(i);
                }
            }
            if !self.done {
                fds.push(libc::pollfd {
                    fd: self.result.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                who.push(2);
            }
            // SAFETY: fds is a valid array of fds.len() pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(SandboxError::Io {
                    action: "poll",
                    path: PathBuf::new(),
                    source: std::io::Error::last_os_error(),
                });
            }
            for (pfd, &i) in fds.iter().zip(&who) {
                if pfd.revents == 0 {
                    continue;
                }
                if i == 2 {
                    match rustix::io::read(&self.result, &mut chunk) {
                        Ok(0) | Err(rustix::io::Errno::BADF) => self.done = true,
                        Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                        Err(_) => {}
                    }
                    continue;
                }
                let Some(fd) = &open[i] else { continue };
                match rustix::io::read(fd, &mut chunk) {
                    Ok(0) => open[i] = None,
                    Ok(n) => out(
                        if i == 0 {
                            Stream::Stdout
                        } else {
                            Stream::Stderr
                        },
                        &chunk[..n],
                    ),
                    Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                    Err(_) => open[i] = None,
                }
            }
        }
        Ok(())
    }
}
