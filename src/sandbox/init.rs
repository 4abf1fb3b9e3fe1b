//! The step's init process (PID 1 of its PID namespace) and the command it starts.
//!
//! Init unshares its own mount namespace (so `pivot_root` does not move the helper's root), sets
//! up the mounts ([`super::mounts`]), forks the command, reaps every process that ends up
//! orphaned under it, and when the command exits kills whatever the command left behind (a
//! backgrounded `sleep 100 &`): nothing of a step outlives it. Then it removes the mount points
//! it created and reports the exit status to the helper.
//!
//! The command process switches to the requested user (or, in single-id mode, installs the
//! seccomp emulation instead), gets `/dev/null` as stdin and no other inherited descriptor, and
//! execs the program found in the step's `PATH`.
use super::fail::{cstr, Fail, IoCtx};
use super::protocol::{InitReport, RunJob};
use super::{mnt, mounts, seccomp, ExitStatus, Network, DEFAULT_PATH};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// Runs init in the freshly forked child of the helper and exits.
pub(crate) fn init_main(job: &RunJob, report: OwnedFd) -> ! {
    let outcome = match init(job, &report) {
        Ok(status) => InitReport::Exited(status),
        Err(fail) => InitReport::Failed(fail),
    };
    if let Ok(text) = serde_json::to_vec(&outcome) {
        let _ = File::from(report).write_all(&text);
    }
    // SAFETY: _exit ends the process without running the helper's atexit handlers twice.
    unsafe { libc::_exit(0) }
}

fn set_pdeathsig() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
}

fn init(job: &RunJob, report: &OwnedFd) -> Result<ExitStatus, Fail> {
    set_pdeathsig();
    // Only the helper talks to kiln.
    // SAFETY: closing our copy of the helper's message pipe; nothing in this process uses it.
    unsafe { libc::close(super::protocol::RESULT_FD) };
    // getppid() is 0 for a PID namespace's init, so check the helper is alive through the pipe:
    // if it died before PDEATHSIG was set, the read end is closed and poll reports an error.
    let mut pfd = libc::pollfd {
        fd: report.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: pfd is one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, 0) } > 0 && pfd.revents & libc::POLLERR != 0 {
        // SAFETY: see init_main.
        unsafe { libc::_exit(1) };
    }
    // SAFETY: unshare has no memory-safety preconditions; this process is single-threaded.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(Fail::new(
            "unshare the mount namespace",
            None,
            &io::Error::last_os_error(),
        ));
    }
    let host = job.spec.hostname.as_bytes();
    // SAFETY: host is valid for host.len() bytes.
    if unsafe { libc::sethostname(host.as_ptr().cast(), host.len()) } != 0 {
        return Err(Fail::new(
            "set the hostname",
            None,
            &io::Error::last_os_error(),
        ));
    }
    let mut stubs = mnt::Stubs::default();
    let result = mounts::set_up(job, &mut stubs).and_then(|()| run_command(job));
    // Also after a failure: the mounts die with this namespace, but the stubs would stay in the
    // image.
    stubs.clean_up();
    result
}

/// Starts the command, reaps everything until it exits, then kills what it left behind.
fn run_command(job: &RunJob) -> Result<ExitStatus, Fail> {
    if job.spec.network != Network::Host {
        mounts::loopback_up().ctx("bring up the loopback interface", None)?;
    }
    let exec = Exec::prepare(job)?;
    let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(io::Error::from)
        .ctx("create a pipe", None)?;
    // SAFETY: single-threaded process; the child runs ordinary Rust code until exec.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(Fail::new(
            "fork the command",
            None,
            &io::Error::last_os_error(),
        ));
    }
    if child == 0 {
        drop(err_r);
        let fail = exec.run(job);
        if let Ok(text) = serde_json::to_vec(&fail) {
            let _ = File::from(err_w).write_all(&text);
        }
        // SAFETY: see init_main.
        unsafe { libc::_exit(127) };
    }
    drop(err_w);
    let mut text = Vec::new();
    let _ = File::from(err_r).read_to_end(&mut text);
    let exec_failed: Option<Fail> = serde_json::from_slice(&text).ok();

    let mut status = ExitStatus::Code(127);
    loop {
        let mut w = 0;
        // SAFETY: w is a valid out-pointer; -1 waits for any child, adopted orphans included.
        let pid = unsafe { libc::waitpid(-1, &mut w, 0) };
        if pid < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        if pid == child {
            status = if libc::WIFSIGNALED(w) {
                ExitStatus::Signal(libc::WTERMSIG(w))
            } else {
                ExitStatus::Code(libc::WEXITSTATUS(w))
            };
            break;
        }
    }
    // Kill what the command left behind; as PID 1, kill(-1) reaches every other process here.
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    // SAFETY: reaping with a null status pointer is allowed.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } > 0
        || io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
    match exec_failed {
        Some(fail) => Err(fail),
        None => Ok(status),
    }
}

/// Everything the command process needs, allocated before the fork.
struct Exec {
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    program: String,
}

impl Exec {
    fn prepare(job: &RunJob) -> Result<Exec, Fail> {
        let spec = &job.spec;
        let program = spec.argv.first().cloned().unwrap_or_default();
        let path = spec
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
        let candidates = if program.contains('/') {
            vec![cstr(&program)?]
        } else {
            path.split(':')
                .filter(|d| !d.is_empty())
                .map(|d| cstr(format!("{}/{program}", d.trim_end_matches('/'))))
                .collect::<Result<_, _>>()?
        };
        let argv = spec.argv.iter().map(cstr).collect::<Result<_, _>>()?;
        let mut envp: Vec<CString> = spec
            .env
            .iter()
            .map(|(k, v)| cstr(format!("{k}={v}")))
            .collect::<Result<_, _>>()?;
        if !spec.env.iter().any(|(k, _)| k == "PATH") {
            envp.push(cstr(format!("PATH={DEFAULT_PATH}"))?);
        }
        Ok(Exec {
            candidates,
            argv,
            envp,
            program,
        })
    }

    /// Becomes the command; returns only on failure.
    fn run(self, job: &RunJob) -> Fail {
        match self.try_run(job) {
            Ok(never) => match never {},
            Err(fail) => fail,
        }
    }

    fn try_run(self, job: &RunJob) -> Result<std::convert::Infallible, Fail> {
        set_pdeathsig();
        reset_signals();
        // SAFETY: umask has no memory effects.
        unsafe { libc::umask(0o022) };
        let spec = &job.spec;
        let cwd = Path::new(&spec.cwd);
        std::fs::create_dir_all(cwd).ctx("create the working directory", Some(cwd))?;
        std::env::set_current_dir(cwd).ctx("chdir to the working directory", Some(cwd))?;
        if job.single_id {
            seccomp::install().ctx("install the single-id seccomp filter", None)?;
        } else {
            switch_user(&spec.user)?;
        }
        let null = File::open("/dev/null").ctx("open /dev/null", None)?;
        if null.as_raw_fd() == 0 {
            // It already is stdin: keep it open.
            std::mem::forget(null);
        } else {
            // SAFETY: dup2 onto stdin; null is valid for the call.
            unsafe { libc::dup2(null.as_raw_fd(), 0) };
        }
        close_inherited_fds();
        let argv = nul_terminated(&self.argv);
        let envp = nul_terminated(&self.envp);
        let mut last = io::Error::from_raw_os_error(libc::ENOENT);
        for candidate in &self.candidates {
            // SAFETY: candidate, argv and envp are NUL-terminated strings and pointer arrays
            // that outlive the call; execve only returns on failure.
            unsafe { libc::execve(candidate.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => {}
                Some(libc::EACCES) => last = err,
                _ => return Err(Fail::new("exec", Some(Path::new(&self.program)), &err)),
            }
        }
        Err(Fail::new("exec", Some(Path::new(&self.program)), &last))
    }
}

fn nul_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Sets supplementary groups, gid and uid (in that order: after setuid we could not).
fn switch_user(user: &super::User) -> Result<(), Fail> {
    let not_mapped = |e: io::Error| {
        if e.raw_os_error() == Some(libc::EINVAL) {
            Fail {
                stage: "switch user: id not mapped".into(),
                path: None,
                errno: libc::EINVAL,
            }
        } else {
            Fail::new("switch user", None, &e)
        }
    };
    let groups: Vec<libc::gid_t> = user.additional_gids.clone();
    // SAFETY: groups is valid for groups.len() entries.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        return Err(not_mapped(io::Error::last_os_error()));
    }
    // SAFETY: plain id-setting syscalls.
    if unsafe { libc::setresgid(user.gid, user.gid, user.gid) } != 0 {
        return Err(not_mapped(io::Error::last_os_error()));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(user.uid, user.uid, user.uid) } != 0 {
        return Err(not_mapped(io::Error::last_os_error()));
    }
    Ok(())
}

/// Restores default dispositions and an empty mask: kiln (like every Rust program) ignores
/// SIGPIPE, and ignored signals survive exec, which would break `yes | head` in a step.
fn reset_signals() {
    /// The kernel's `struct sigaction` (x86_64 and aarch64 share this layout).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // The raw syscall, because glibc's signal() refuses its reserved real-time signals (32, 33),
    // which a caller of kiln may have left ignored.
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: `default` is a valid kernel sigaction that outlives the call; the old
            // action is not requested; invalid numbers just fail.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                )
            };
        }
    }
    // SAFETY: set is a valid sigset_t filled by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Marks every descriptor above 2 close-on-exec (including the exec-error pipe, which then
/// closes by itself when exec succeeds).
fn close_inherited_fds() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes flags of this process's descriptors.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return;
    }
    // Kernels before 5.11: walk /proc/self/fd instead.
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<i32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        for fd in fds.into_iter().filter(|&fd| fd > 2) {
            // SAFETY: setting FD_CLOEXEC on a possibly-closed fd is harmless.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}
