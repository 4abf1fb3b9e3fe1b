//! The hidden helper process: kiln re-executes itself (`/proc/self/exe __sandbox-helper`) so
//! that namespace set-up runs in a fresh single-threaded process, where `unshare(CLONE_NEWUSER)`
//! is allowed and `fork` is safe.
//!
//! The helper unshares the user, PID, IPC and UTS namespaces (and the network one, except for
//! `--network=host`), lets kiln write its id maps (and attach pasta to the network namespace), forks the step's init process
//! ([`super::init`]), and after the step computes the [`super::Diff`] as root in the user
//! namespace, where it can read every file the step made and sees the step's own ids. It talks
//! to kiln over its stdin and fd 3 ([`super::protocol`]); its stdout and stderr are the step's.
//! What fails on this side of the pipe is a [`Fail`] ([`super::fail`]), sent as
//! [`HelperMessage::Failed`].
use super::fail::{Fail, IoCtx};
use super::protocol::{HelperMessage, HelperRequest, InitReport, Job, RunJob, RESULT_FD};
use super::snapshot::{self, overlay, walk, Diff, Root};
use super::{init, mnt, ExitStatus, Network};
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The first argument that turns the kiln binary into the sandbox helper.
pub const HELPER_ARG: &str = "__sandbox-helper";

/// If this process was started as the sandbox helper, runs it and exits; otherwise returns at
/// once. `main` calls this before anything else.
pub fn helper_main_if_requested() {
    if std::env::args_os().nth(1).as_deref() != Some(OsStr::new(HELPER_ARG)) {
        return;
    }
    let code = match helper_main() {
        Ok(()) => 0,
        Err(fail) => {
            let _ = send(&HelperMessage::Failed {
                stage: fail.stage,
                path: fail.path,
                errno: fail.errno,
            });
            1
        }
    };
    std::process::exit(code);
}

/// Writes one message line to kiln.
fn send(msg: &HelperMessage) -> io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(io::Error::other)?;
    line.push(b'\n');
    // SAFETY: fd 3 was set up by kiln for the helper's messages; ManuallyDrop keeps it open.
    let mut out = ManuallyDrop::new(unsafe { File::from_raw_fd(RESULT_FD) });
    out.write_all(&line)
}

fn helper_main() -> Result<(), Fail> {
    // Descriptors that kiln's own caller leaked to kiln (without close-on-exec) stop here.
    // SAFETY: close_range only closes this process's descriptors above fd 3, none of which
    // this process uses.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            RESULT_FD as libc::c_uint + 1,
            libc::c_uint::MAX,
            0,
        )
    };
    // SAFETY: fd 0 is the control pipe kiln gave us; nothing else in this process owns it.
    let mut control = BufReader::new(unsafe { File::from_raw_fd(0) });
    let mut line = String::new();
    control.read_line(&mut line).ctx("read the request", None)?;
    let request: HelperRequest = serde_json::from_str(&line).map_err(|_| Fail {
        stage: "decode the request".into(),
        path: None,
        errno: libc::EINVAL,
    })?;
    // PR_SET_PDEATHSIG was set before exec; if kiln died before that, we have a new parent.
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(request.parent_pid) {
        return Err(Fail {
            stage: "kiln exited".into(),
            path: None,
            errno: libc::ESRCH,
        });
    }
    match request.job {
        Job::ProbeOverlay {
            lower,
            upper,
            work,
            merged,
        } => {
            unshare_and_wait(&mut control, libc::CLONE_NEWUSER | libc::CLONE_NEWNS)?;
            mnt::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)
                .ctx("make / private", None)?;
            mnt::mount_overlay(&[lower], &upper, &work, &merged)
                .ctx("mount overlay", Some(&merged))?;
            let done = HelperMessage::Done {
                status: ExitStatus::Code(0),
                diff: Diff::default(),
                user_ignored: false,
            };
            send(&done).ctx("report", None)
        }
        Job::Chown { root, entries } => {
            unshare_and_wait(&mut control, libc::CLONE_NEWUSER)?;
            chown_tree(&root, &entries)?;
            let done = HelperMessage::Done {
                status: ExitStatus::Code(0),
                diff: Diff::default(),
                user_ignored: false,
            };
            send(&done).ctx("report", None)
        }
        Job::Exec { argv, env } => {
            unshare_and_wait(&mut control, libc::CLONE_NEWUSER)?;
            let status = exec_and_wait(&argv, &env)?;
            let done = HelperMessage::Done {
                status,
                diff: Diff::default(),
                user_ignored: false,
            };
            send(&done).ctx("report", None)
        }
        Job::Remove { path } => {
            unshare_and_wait(&mut control, libc::CLONE_NEWUSER)?;
            remove_tree(&path).ctx("remove", Some(&path))?;
            let done = HelperMessage::Done {
                status: ExitStatus::Code(0),
                diff: Diff::default(),
                user_ignored: false,
            };
            send(&done).ctx("report", None)
        }
        Job::Run(job) => run(&mut control, &job),
    }
}

/// Unshares `flags`, tells kiln, and waits until it has written the id maps.
fn unshare_and_wait(control: &mut BufReader<File>, flags: libc::c_int) -> Result<(), Fail> {
    // SAFETY: unshare has no memory-safety preconditions; this process is single-threaded,
    // which CLONE_NEWUSER requires.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(Fail::new("unshare", None, &io::Error::last_os_error()));
    }
    send(&HelperMessage::Unshared).ctx("report", None)?;
    let mut go = String::new();
    control
        .read_line(&mut go)
        .ctx("wait for the id maps", None)?;
    if go.trim_end() != "go" {
        return Err(Fail {
            stage: "wait for the id maps".into(),
            path: None,
            errno: libc::ECANCELED,
        });
    }
    Ok(())
}

fn run(control: &mut BufReader<File>, job: &RunJob) -> Result<(), Fail> {
    let mut flags =
        libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    // Every network but the host's is a namespace of the step's own (kiln attaches pasta to it
    // for the default network, before it answers "go").
    if job.spec.network != Network::Host {
        flags |= libc::CLONE_NEWNET;
    }
    unshare_and_wait(control, flags)?;
    // kiln has nothing more to say: stdin becomes /dev/null for everything below.
    let null = File::open("/dev/null").ctx("open /dev/null", None)?;
    // SAFETY: dup2 onto our own stdin (the control pipe, which we no longer read).
    unsafe { libc::dup2(null.as_raw_fd(), 0) };

    let before = match &job.root {
        Root::Walk { rootfs } => {
            Some(walk::scan(rootfs).ctx("scan the root filesystem", Some(rootfs))?)
        }
        Root::Overlay { .. } => None,
    };
    let (report_r, report_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(io::Error::from)
        .ctx("create a pipe", None)?;
    // SAFETY: this process is single-threaded (a fresh exec of kiln that started no threads),
    // so the child may keep running ordinary Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Fail::new(
            "fork the init process",
            None,
            &io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        drop(report_r);
        init::init_main(job, report_w);
    }
    drop(report_w);
    // The step's output pipes must reach EOF when the step's last process is gone.
    let null = File::open("/dev/null").ctx("open /dev/null", None)?;
    for fd in [1, 2] {
        // SAFETY: dup2 onto our own stdio fds; null stays valid for the call.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
    let report = read_report(report_r);
    let mut wstatus = 0;
    // SAFETY: pid is our child; wstatus is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut wstatus, 0) };
    let status = match report {
        Some(InitReport::Exited(status)) => status,
        Some(InitReport::Failed(fail)) => return Err(fail),
        None => {
            return Err(Fail {
                stage: "the init process died".into(),
                path: None,
                errno: libc::ECHILD,
            })
        }
    };
    let user_ignored = job.single_id && job.spec.user.uid != 0;
    let mut diff = Diff::default();
    if status.success() {
        diff = match (&job.root, before) {
            (Root::Overlay { upper, lowers, .. }, _) => {
                overlay::diff(upper, lowers).ctx("read the upper directory", Some(upper))?
            }
            (Root::Walk { rootfs }, Some(before)) => {
                let after = walk::scan(rootfs).ctx("scan the root filesystem", Some(rootfs))?;
                walk::diff(&before, &after)
            }
            (Root::Walk { .. }, None) => Diff::default(),
        };
        if let Some(dir) = &job.readable_dir {
            let root = match &job.root {
                Root::Overlay { upper, .. } => upper,
                Root::Walk { rootfs } => rootfs,
            };
            snapshot::make_readable(&mut diff, root, dir)
                .ctx("copy unreadable files", Some(dir))?;
        }
    }
    send(&HelperMessage::Done {
        status,
        diff,
        user_ignored,
    })
    .ctx("report", None)
}

fn read_report(fd: OwnedFd) -> Option<InitReport> {
    let mut text = Vec::new();
    File::from(fd).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Changes the owner of each entry (never following a symlink, never leaving `root`) and puts
/// back the setuid and setgid bits that chown clears.
pub(crate) fn chown_tree(root: &Path, entries: &[(Vec<u8>, u32, u32)]) -> Result<(), Fail> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
    .ctx("open", Some(root))?;
    for (rel, uid, gid) in entries {
        let rel = Path::new(OsStr::from_bytes(rel));
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            continue;
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = crate::inroot::open(&root_fd, parent, flags)
            .map_err(io::Error::from)
            .ctx("open", Some(rel))?;
        let st = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io::Error::from)
            .ctx("stat", Some(rel))?;
        let owner = |id: u32| Some(rustix::process::Uid::from_raw(id));
        rustix::fs::chownat(
            &dir,
            name,
            owner(*uid),
            Some(rustix::process::Gid::from_raw(*gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io::Error::from)
        .ctx("chown", Some(rel))?;
        let special = st.st_mode & (libc::S_ISUID | libc::S_ISGID);
        if special != 0 && st.st_mode & libc::S_IFMT != libc::S_IFLNK {
            rustix::fs::chmodat(
                &dir,
                name,
                Mode::from_raw_mode(st.st_mode & 0o7777),
                AtFlags::empty(),
            )
            .map_err(io::Error::from)
            .ctx("chmod", Some(rel))?;
        }
    }
    Ok(())
}

/// Threads that empty a tree's directories at once. Removing a step's files is bound by the file
/// system's latency, not the CPU: ext4 frees each written-back file's blocks through its journal.
/// 20,000 files of 20 KiB written back took 3.4 s to remove from one thread and 1.75 s from 8 on
/// 2 cores (issue #21: the tail of the family's full variant was its apt step's upper directory
/// being removed).
const REMOVE_THREADS: usize = 8;

/// Removes `path` and everything below it; a missing path is not an error. Files go first, from
/// [`REMOVE_THREADS`] threads; the emptied directories then go with `remove_dir_all`, which also
/// reports anything that could not be removed. Nothing runs in the tree any more (the step's
/// processes are gone), and symbolic links are removed, never followed.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => {
            unlink_files_in_parallel(path);
            std::fs::remove_dir_all(path)
        }
        Ok(_) => std::fs::remove_file(path),
    }
}

/// Unlinks every non-directory below `root`: threads share a queue of directories, each empties
/// one and queues its subdirectories. Errors are left for the `remove_dir_all` that follows.
fn unlink_files_in_parallel(root: &Path) {
    use std::sync::{Condvar, Mutex};
    struct Queue {
        dirs: Vec<PathBuf>,
        busy: usize,
    }
    let queue = Mutex::new(Queue {
        dirs: vec![root.to_path_buf()],
        busy: 0,
    });
    let wake = Condvar::new();
    let worker = || loop {
        let dir = {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(d) = q.dirs.pop() {
                    q.busy += 1;
                    break d;
                }
                if q.busy == 0 {
                    wake.notify_all();
                    return;
                }
                q = wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let mut subdirs = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                match e.file_type() {
                    Ok(t) if t.is_dir() => subdirs.push(e.path()),
                    Ok(_) => {
                        let _ = std::fs::remove_file(e.path());
                    }
                    Err(_) => {}
                }
            }
        }
        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
        q.dirs.extend(subdirs);
        q.busy -= 1;
        wake.notify_all();
    };
    std::thread::scope(|s| {
        for _ in 0..REMOVE_THREADS {
            s.spawn(worker);
        }
    });
}

/// Forks, execs `argv` with `env` in the child (stdin `/dev/null`, no descriptor above 2), and
/// returns how it ended.
fn exec_and_wait(argv: &[Vec<u8>], env: &[(Vec<u8>, Vec<u8>)]) -> Result<ExitStatus, Fail> {
    let program = argv
        .first()
        .map(|p| PathBuf::from(OsStr::from_bytes(p)))
        .unwrap_or_default();
    let c = |b: &[u8]| {
        CString::new(b).map_err(|_| {
            Fail::new(
                "argument with a NUL byte",
                None,
                &io::Error::from_raw_os_error(libc::EINVAL),
            )
        })
    };
    let args: Vec<CString> = argv.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
    let envs: Vec<CString> = env
        .iter()
        .map(|(k, v)| c(&[k.as_slice(), b"=", v.as_slice()].concat()))
        .collect::<Result<_, _>>()?;
    if args.is_empty() {
        return Err(Fail::new(
            "exec",
            None,
            &io::Error::from_raw_os_error(libc::ENOENT),
        ));
    }
    let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let (argp, envp) = (ptrs(&args), ptrs(&envs));
    let null = File::open("/dev/null").ctx("open /dev/null", None)?;
    // Close-on-exec: it only carries an errno back if exec fails.
    let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(io::Error::from)
        .ctx("create a pipe", None)?;
    // SAFETY: this process is single-threaded; the child only makes syscalls before exec.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Fail::new("fork", None, &io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: plain syscalls on valid descriptors and pointers (argp and envp are
        // NULL-terminated arrays of NUL-terminated strings that outlive the calls).
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            libc::dup2(null.as_raw_fd(), 0);
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                4 as libc::c_uint,
            );
            libc::execve(args[0].as_ptr(), argp.as_ptr(), envp.as_ptr());
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO)
                .to_ne_bytes();
            libc::write(err_w.as_raw_fd(), errno.as_ptr().cast(), errno.len());
            libc::_exit(127);
        }
    }
    drop((null, err_w));
    let mut errno = [0u8; 4];
    if File::from(err_r).read_exact(&mut errno).is_ok() {
        // SAFETY: pid is our child, which is exiting; reap it.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        let err = io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
        return Err(Fail::new("exec", Some(&program), &err));
    }
    let mut w = 0;
    loop {
        // SAFETY: pid is our child and w a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut w, 0) };
        if rc == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(Fail::new("wait", Some(&program), &err));
        }
    }
    Ok(if libc::WIFSIGNALED(w) {
        ExitStatus::Signal(libc::WTERMSIG(w))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(w))
    })
}

#[cfg(test)]
mod tests {
    use super::remove_tree;
    use std::os::unix::fs::symlink;

    /// The parallel removal empties deep and wide trees, removes symbolic links without following
    /// them (a link to a directory outside, and one to a file outside, leave their targets), and
    /// a missing path is not an error.
    #[test]
    fn remove_tree_removes_everything_below_and_nothing_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let root = tmp.path().join("tree");
        for d in 0..40 {
            let dir = root.join(format!("d{d}/a/b"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..25 {
                std::fs::write(dir.join(format!("f{f}")), b"data").unwrap();
                std::fs::write(root.join(format!("d{d}/g{f}")), b"data").unwrap();
            }
        }
        symlink(&outside, root.join("d0/to-dir")).unwrap();
        symlink(outside.join("keep"), root.join("d1/a/to-file")).unwrap();
        std::fs::write(root.join("top"), b"x").unwrap();
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"x");
        remove_tree(&root).unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        remove_tree(&file).unwrap();
        assert!(!file.exists());
    }
}
