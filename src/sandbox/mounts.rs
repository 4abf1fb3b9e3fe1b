//! The step's mount namespace, set up by the init process before `pivot_root`: the root
//! filesystem, `/proc`, a minimal `/dev`, the bound `/etc` files and the extra mounts; and the
//! clean-up afterwards that removes the mount points kiln had to create.
//!
//! Every target is resolved inside the new root with [`crate::inroot`] (`openat2(RESOLVE_IN_ROOT)`
//! or its checked walk) and mounted through its `/proc/self/fd/N` magic link (`mount(2)` takes
//! paths; the magic link names exactly the resolved file), so a symlink in the image
//! (`/etc/hosts -> /x`, or an absolute one) can never make a mount land on the host. Bind
//! sources are resolved the same way inside their own root (the context, a stage, an image),
//! and a writable bind is an overlay or a copy on a private tmpfs, never the source itself. Missing targets are created as
//! *stubs*; after the step the stubs that are still empty are removed and their parent
//! directory's times restored, as BuildKit's `MountStubsCleaner` does, so they leave no trace in
//! the diff.
use super::fail::{cstr, Fail, IoCtx};
use super::protocol::{RunJob, APT_SINGLE_ID_CONF};
use super::snapshot::Root;
use super::MountKind;
use rustix::fs::{Mode, OFlags};
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What to mount: the arguments of `mount(2)` besides the target.
struct Mnt<'a> {
    src: Option<&'a CStr>,
    fstype: Option<&'a CStr>,
    flags: libc::c_ulong,
    data: Option<&'a CStr>,
}

/// What the clean-up needs to know.
#[derive(Debug, Default)]
pub(crate) struct Stubs {
    /// Paths (relative to the root) created by kiln, in creation order, and whether each is a
    /// directory.
    created: Vec<(String, bool)>,
    /// Existing directories in which stubs were created, with their (atime, mtime) before.
    parents: Vec<(String, [libc::timespec; 2])>,
    /// Mount targets, in mount order.
    mounted: Vec<String>,
    /// The root filesystem's mount, which stays the same mount before and after `pivot_root`.
    root: Option<OwnedFd>,
}

fn sys(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `mount(2)` with optional arguments.
pub(crate) fn mount(
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let p = |s: Option<&CStr>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is either null or a NUL-terminated string that outlives the call.
    sys(unsafe { libc::mount(p(src), target.as_ptr(), p(fstype), flags, p(data).cast()) })
}

fn fd_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a formatted number")
}

/// Opens `rel` inside `root` as an `O_PATH` fd, never leaving `root` ([`crate::inroot`]).
fn open_in_root(root: BorrowedFd<'_>, rel: &str) -> io::Result<OwnedFd> {
    Ok(crate::inroot::open(root, rel, OFlags::PATH)?)
}

/// Splits an absolute container path into its components; `..` is refused.
pub(crate) fn relative(target: &str) -> Option<String> {
    let comps: Vec<&str> = target
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if !target.starts_with('/') || comps.contains(&"..") {
        return None;
    }
    Some(comps.join("/"))
}

impl Stubs {
    /// Makes sure `rel` exists in `root` (a file if `file`, else a directory), creating what is
    /// missing, and returns an `O_PATH` fd of it.
    fn ensure(&mut self, root: BorrowedFd<'_>, rel: &str, file: bool) -> io::Result<OwnedFd> {
        let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        let mut prefix = String::new();
        for (i, comp) in comps.iter().enumerate() {
            let parent = prefix.clone();
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            match open_in_root(root, &prefix) {
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
            let pfd = open_in_root(root, &parent)?;
            if !self.created.iter().any(|(p, _)| *p == parent)
                && !self.parents.iter().any(|(p, _)| *p == parent)
            {
                let st = rustix::fs::fstat(&pfd)?;
                let ts = |s: i64, ns: u64| libc::timespec {
                    tv_sec: s,
                    tv_nsec: ns as i64,
                };
                let times = [
                    ts(st.st_atime as i64, st.st_atime_nsec as u64),
                    ts(st.st_mtime as i64, st.st_mtime_nsec as u64),
                ];
                self.parents.push((parent.clone(), times));
            }
            let make_file = file && i + 1 == comps.len();
            if make_file {
                rustix::fs::openat(
                    &pfd,
                    *comp,
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )?;
            } else {
                rustix::fs::mkdirat(&pfd, *comp, Mode::from_raw_mode(0o755))?;
            }
            self.created.push((prefix.clone(), !make_file));
        }
        open_in_root(root, rel)
    }

    /// Mounts onto `rel` (created if missing) and returns an fd of the new mount's root.
    fn mount_at(
        &mut self,
        root: BorrowedFd<'_>,
        rel: &str,
        file: bool,
        m: Mnt<'_>,
    ) -> io::Result<OwnedFd> {
        let target = self.ensure(root, rel, file)?;
        mount(m.src, &fd_path(target.as_fd()), m.fstype, m.flags, m.data)?;
        self.mounted.push(rel.to_owned());
        open_in_root(root, rel)
    }

    /// After the step (or a failed set-up): unmounts everything kiln mounted, removes the stubs
    /// that are still empty and restores their parents' times. Every path is resolved inside the
    /// root filesystem, so this is safe before `pivot_root` as well as after it.
    pub(crate) fn clean_up(&self) {
        let Some(root) = self.root.as_ref().map(|r| r.as_fd()) else {
            return;
        };
        for rel in self.mounted.iter().rev() {
            if let Ok(fd) = open_in_root(root, rel) {
                // SAFETY: the path is NUL-terminated. Failure only leaves the stub in place.
                unsafe { libc::umount2(fd_path(fd.as_fd()).as_ptr(), libc::MNT_DETACH) };
            }
        }
        let split = |rel: &str| match rel.rsplit_once('/') {
            Some((parent, name)) => (parent.to_owned(), name.to_owned()),
            None => (String::new(), rel.to_owned()),
        };
        for (rel, dir) in self.created.iter().rev() {
            let (parent, name) = split(rel);
            let Ok(pfd) = open_in_root(root, &parent) else {
                continue;
            };
            let flags = rustix::fs::AtFlags::SYMLINK_NOFOLLOW;
            if *dir {
                let _ = rustix::fs::unlinkat(&pfd, name.as_str(), rustix::fs::AtFlags::REMOVEDIR);
            } else if rustix::fs::statat(&pfd, name.as_str(), flags)
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size == 0)
            {
                let _ = rustix::fs::unlinkat(&pfd, name.as_str(), rustix::fs::AtFlags::empty());
            }
        }
        for (rel, times) in &self.parents {
            let (parent, name) = if rel.is_empty() {
                (String::new(), ".".to_owned())
            } else {
                split(rel)
            };
            let Ok(pfd) = open_in_root(root, &parent) else {
                continue;
            };
            let Ok(cname) = CString::new(name) else {
                continue;
            };
            // SAFETY: pfd is a valid directory fd, cname is NUL-terminated and times has the
            // two entries utimensat reads.
            unsafe {
                libc::utimensat(
                    pfd.as_raw_fd(),
                    cname.as_ptr(),
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
        }
    }
}

fn open_host(path: &Path) -> Result<OwnedFd, Fail> {
    rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(io::Error::from)
        .ctx("open host file", Some(path))
}

/// Mounts overlayfs at `merged` with `userxattr` (required in a user namespace). Uses the new
/// mount API with one `lowerdir+` per layer (Linux 6.8+), which has no limit on the total length
/// of the layer paths; older kernels get the classic `lowerdir=a:b:c` option string, which must
/// fit in one page.
pub(crate) fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> io::Result<()> {
    match mount_overlay_fsconfig(lowers, upper, work, merged) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP)
            ) => {}
        other => return other,
    }
    let lowers: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    let c = |s: &OsStr| {
        CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
    };
    mount(
        Some(c"overlay"),
        &c(merged.as_os_str())?,
        Some(c"overlay"),
        0,
        Some(&c(OsStr::new(&data))?),
    )
}

fn mount_overlay_fsconfig(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> io::Result<()> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
        FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags,
    };
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for lower in lowers {
        fsconfig_set_string(&fs, "lowerdir+", lower)?;
    }
    fsconfig_set_string(&fs, "upperdir", upper)?;
    fsconfig_set_string(&fs, "workdir", work)?;
    fsconfig_set_flag(&fs, "userxattr")?;
    fsconfig_create(&fs)?;
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        merged,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// Mounts the root filesystem at its mount point and returns it with an fd of it.
fn mount_root(root: &Root) -> Result<(PathBuf, OwnedFd), Fail> {
    let path = match root {
        Root::Overlay {
            lowers,
            upper,
            work,
            merged,
        } => {
            mount_overlay(lowers, upper, work, merged).map_err(|e| {
                // Name the directory that is missing, if one is.
                let mut dirs = lowers.iter().chain([upper, work]);
                let path = dirs.find(|p| !p.is_dir()).unwrap_or(merged);
                Fail::new("mount overlay", Some(path), &e)
            })?;
            merged.clone()
        }
        Root::Walk { rootfs } => {
            let p = cstr(rootfs)?;
            mount(Some(&p), &p, None, libc::MS_BIND | libc::MS_REC, None)
                .ctx("bind the root filesystem", Some(rootfs))?;
            rootfs.clone()
        }
    };
    let fd = rustix::fs::open(
        &path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
    .ctx("open the root filesystem", Some(&path))?;
    Ok((path, fd))
}

/// Sets up the whole mount namespace of the step and pivots into it. Runs in the init process,
/// which has already unshared its mount namespace.
pub(crate) fn set_up(job: &RunJob, stubs: &mut Stubs) -> Result<(), Fail> {
    mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None).ctx("make / private", None)?;
    let (root_path, root_fd) = mount_root(&job.root)?;
    // `stubs` keeps one fd of the root for the clean-up; this function works on another.
    let root_dup = root_fd.try_clone().ctx("dup the root fd", None)?;
    stubs.root = Some(root_fd);
    let root = root_dup.as_fd();

    // Host sources, opened before anything is mounted over them.
    let devices = ["null", "zero", "full", "random", "urandom", "tty"];
    let dev_fds: Vec<OwnedFd> = devices
        .iter()
        .map(|d| open_host(&Path::new("/dev").join(d)))
        .collect::<Result<_, _>>()?;
    let sys_fd = open_host(Path::new("/sys")).ok();
    let mut etc_fds = Vec::new();
    for (target, src) in &job.etc_files {
        etc_fds.push((target.as_str(), open_host(src)?));
    }
    if let Some(conf) = &job.apt_conf {
        if open_in_root(root, "etc/apt/apt.conf.d").is_ok() {
            etc_fds.push((APT_SINGLE_ID_CONF, open_host(conf)?));
        }
    }
    let mut user_fds = Vec::new();
    let mut secrets_mounted = false;
    let mut rw_mounted = false;
    for m in &job.spec.mounts {
        let fd = match &m.kind {
            MountKind::Bind {
                root,
                source,
                readonly,
            } => {
                let src = open_bind_source(root, source)?;
                Some(if *readonly {
                    src
                } else {
                    writable_copy(job, &mut rw_mounted, user_fds.len(), &src, root, source)?
                })
            }
            MountKind::Cache {
                source,
                uid,
                gid,
                mode,
            } => {
                if !source.exists() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(*mode)
                        .create(source)
                        .ctx("create cache", Some(source))?;
                    let _ = std::os::unix::fs::chown(source, Some(*uid), Some(*gid));
                    let _ = std::fs::set_permissions(
                        source,
                        std::os::unix::fs::PermissionsExt::from_mode(*mode),
                    );
                }
                Some(open_host(source)?)
            }
            MountKind::Tmpfs { .. } => None,
            MountKind::Secret {
                data,
                uid,
                gid,
                mode,
            } => {
                let staged = stage_secret(
                    job,
                    &mut secrets_mounted,
                    user_fds.len(),
                    &data.0,
                    (*uid, *gid, *mode),
                )?;
                Some(staged)
            }
        };
        user_fds.push(fd);
    }

    // Like runc, refuse an image whose /proc or /dev is a symlink: it would put the kernel's
    // file systems somewhere else in the image (never outside it: targets resolve in the root).
    for name in ["proc", "dev"] {
        if is_symlink(root, name) {
            let stage = format!("the image's /{name} is a symlink; it must be a directory");
            return Err(Fail {
                stage,
                path: None,
                errno: libc::ELOOP,
            });
        }
    }
    let nodev_nosuid = libc::MS_NOSUID | libc::MS_NODEV;
    stubs
        .mount_at(
            root,
            "proc",
            false,
            Mnt {
                src: Some(c"proc"),
                fstype: Some(c"proc"),
                flags: nodev_nosuid | libc::MS_NOEXEC,
                data: None,
            },
        )
        .ctx("mount /proc", None)?;
    let dev = stubs
        .mount_at(
            root,
            "dev",
            false,
            Mnt {
                src: Some(c"tmpfs"),
                fstype: Some(c"tmpfs"),
                flags: libc::MS_NOSUID | libc::MS_STRICTATIME,
                data: Some(c"mode=755,size=65536k"),
            },
        )
        .ctx("mount /dev", None)?;
    // /dev is a fresh tmpfs: what is created in it is never a stub.
    for (name, src) in devices.iter().zip(&dev_fds) {
        let node = rustix::fs::openat(
            &dev,
            *name,
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )
        .map_err(io::Error::from)
        .ctx("create /dev node", Some(Path::new(name)))?;
        mount(
            Some(&fd_path(src.as_fd())),
            &fd_path(node.as_fd()),
            None,
            libc::MS_BIND,
            None,
        )
        .ctx("bind /dev node", Some(Path::new(name)))?;
    }
    let mkdir = |name: &str, mode: u32| {
        rustix::fs::mkdirat(&dev, name, Mode::from_raw_mode(mode)).map_err(io::Error::from)
    };
    mkdir("pts", 0o755).ctx("create /dev/pts", None)?;
    mkdir("shm", 0o1777).ctx("create /dev/shm", None)?;
    let pts = open_in_root(root, "dev/pts").ctx("open /dev/pts", None)?;
    let pts_opts = if job.single_id {
        c"newinstance,ptmxmode=0666,mode=0620"
    } else {
        c"newinstance,ptmxmode=0666,mode=0620,gid=5"
    };
    // A pty is a convenience for a build step: carry on without one if devpts refuses.
    let _ = mount(
        Some(c"devpts"),
        &fd_path(pts.as_fd()),
        Some(c"devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(pts_opts),
    );
    let shm = open_in_root(root, "dev/shm").ctx("open /dev/shm", None)?;
    mount(
        Some(c"shm"),
        &fd_path(shm.as_fd()),
        Some(c"tmpfs"),
        nodev_nosuid | libc::MS_NOEXEC,
        Some(c"mode=1777,size=65536k"),
    )
    .ctx("mount /dev/shm", None)?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        rustix::fs::symlinkat(to, &dev, link)
            .map_err(io::Error::from)
            .ctx("create /dev symlink", Some(Path::new(link)))?;
    }

    mount_sys(stubs, root, job, sys_fd.as_ref());
    for (target, src) in &etc_fds {
        // An image whose /etc/hosts is a dangling symlink simply keeps it.
        let bind = Mnt {
            src: Some(&fd_path(src.as_fd())),
            fstype: None,
            flags: libc::MS_BIND,
            data: None,
        };
        let _ = stubs.mount_at(root, target, true, bind);
    }
    for (m, src) in job.spec.mounts.iter().zip(&user_fds) {
        let rel = relative(&m.target).ok_or_else(|| Fail::invalid_mount(&m.target))?;
        let target = Path::new(&m.target);
        match (&m.kind, src) {
            (MountKind::Tmpfs { size }, _) => {
                let data = match size {
                    Some(s) => format!("mode=1777,size={s}"),
                    None => "mode=1777".to_owned(),
                };
                stubs
                    .mount_at(
                        root,
                        &rel,
                        false,
                        Mnt {
                            src: Some(c"tmpfs"),
                            fstype: Some(c"tmpfs"),
                            flags: nodev_nosuid,
                            data: Some(&cstr(&data)?),
                        },
                    )
                    .ctx("mount tmpfs", Some(target))?;
            }
            (kind, Some(src)) => {
                let is_file = rustix::fs::fstat(src)
                    .is_ok_and(|st| st.st_mode & libc::S_IFMT != libc::S_IFDIR);
                let fd = stubs
                    .mount_at(
                        root,
                        &rel,
                        is_file,
                        Mnt {
                            src: Some(&fd_path(src.as_fd())),
                            fstype: None,
                            flags: libc::MS_BIND | libc::MS_REC,
                            data: None,
                        },
                    )
                    .ctx("bind mount", Some(target))?;
                if matches!(
                    kind,
                    MountKind::Bind { readonly: true, .. } | MountKind::Secret { .. }
                ) {
                    remount_readonly(fd.as_fd()).ctx("remount read-only", Some(target))?;
                }
            }
            (_, None) => {}
        }
    }

    pivot(&root_path)?;
    Ok(())
}

/// Mounts a read-only `/sys`: a fresh sysfs when the step has a network namespace of its own
/// (sysfs may only be mounted by the owner of the network namespace, which the step then is),
/// else (`--network=host`) the host's, bound
/// recursively. Best effort: build steps rarely need it, so failures leave `/sys` empty.
fn mount_sys(stubs: &mut Stubs, root: BorrowedFd<'_>, job: &RunJob, host_sys: Option<&OwnedFd>) {
    if is_symlink(root, "sys") {
        return;
    }
    let ro = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if job.spec.network != super::Network::Host {
        let sysfs = Mnt {
            src: Some(c"sysfs"),
            fstype: Some(c"sysfs"),
            flags: ro,
            data: None,
        };
        let _ = stubs.mount_at(root, "sys", false, sysfs);
        return;
    }
    let Some(host_sys) = host_sys else { return };
    let bind = Mnt {
        src: Some(&fd_path(host_sys.as_fd())),
        fstype: None,
        flags: libc::MS_BIND | libc::MS_REC,
        data: None,
    };
    if let Ok(fd) = stubs.mount_at(root, "sys", false, bind) {
        let _ = remount_readonly(fd.as_fd());
    }
}

/// Resolves a bind mount's `source` inside `root` with the builder's own primitive. The builder
/// resolved it already, but its descriptor belongs to kiln's mount namespace, and the kernel
/// binds only mounts of the caller's namespace (`check_mnt` in `do_loopback`): the same
/// resolution of the same name in the same tree is done again here, after the unshare.
fn open_bind_source(root: &Path, source: &str) -> Result<OwnedFd, Fail> {
    crate::inroot::open_path(root, source, OFlags::PATH).map_err(|e| Fail {
        stage: "resolve the bind source".into(),
        path: Some(root.join(source)),
        errno: e.source.raw_os_error().unwrap_or(libc::EIO),
    })
}

/// The writable view of a `rw` bind source for mount number `index`: an overlay with `src` as
/// its only lower layer and its upper directory on a tmpfs private to this mount namespace
/// (mounted on first use over `job.rw_dir`), so the step's writes vanish with the step and
/// never reach the source, as BuildKit gives a `rw` bind a throw-away snapshot
/// (`dockerfile2llb/convert_runmount.go`: `llb.ForceNoOutput` on a non-readonly bind). A file,
/// or a directory where overlayfs is refused, is copied onto that tmpfs instead.
fn writable_copy(
    job: &RunJob,
    mounted: &mut bool,
    index: usize,
    src: &OwnedFd,
    root: &Path,
    source: &str,
) -> Result<OwnedFd, Fail> {
    let dir = &job.rw_dir;
    if !*mounted {
        let flags = libc::MS_NOSUID | libc::MS_NODEV;
        mount(
            Some(c"tmpfs"),
            &cstr(dir)?,
            Some(c"tmpfs"),
            flags,
            Some(c"mode=0700"),
        )
        .ctx("mount the tmpfs of rw bind mounts", Some(dir))?;
        *mounted = true;
    }
    let base = dir.join(index.to_string());
    let shown = root.join(source);
    std::fs::create_dir(&base).ctx("create", Some(&base))?;
    let st = rustix::fs::fstat(src)
        .map_err(io::Error::from)
        .ctx("stat the bind source", Some(&shown))?;
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let [upper, work, merged] = ["upper", "work", "merged"].map(|d| base.join(d));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir(d).ctx("create", Some(d))?;
        }
        // The lower layer is the resolved descriptor itself: overlayfs looks the path up with
        // the magic link followed, so nothing is resolved twice.
        let lower = PathBuf::from(OsStr::from_bytes(fd_path(src.as_fd()).as_bytes()));
        if mount_overlay(&[lower], &upper, &work, &merged).is_ok() {
            // The upper directory takes the source's owner and mode, as overlayfs copies up.
            let _ = std::os::unix::fs::chown(&upper, Some(st.st_uid), Some(st.st_gid));
            let mode = std::os::unix::fs::PermissionsExt::from_mode(st.st_mode & 0o7777);
            let _ = std::fs::set_permissions(&upper, mode);
            return open_host(&merged);
        }
        let copy = base.join("copy");
        std::fs::create_dir(&copy).ctx("create", Some(&copy))?;
        let to = open_host(&copy)?;
        copy_tree(src.as_fd(), to.as_fd()).ctx("copy the rw bind source", Some(&shown))?;
        return open_host(&copy);
    }
    let copy = base.join("file");
    copy_entry(
        src.as_fd(),
        None,
        &st,
        open_host(&base)?.as_fd(),
        OsStr::new("file"),
    )
    .ctx("copy the rw bind source", Some(&shown))?;
    open_host(&copy)
}

/// Copies the directory `from` (an `O_PATH` fd) into the existing directory `to`, never
/// following a symlink: files, directories and symlinks with their owners and modes (best
/// effort: ids the namespace does not map keep the copier's); sockets, FIFOs and devices are
/// left out. Every name is opened relative to its parent's descriptor.
pub(crate) fn copy_tree(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    let dir = rustix::fs::openat(
        from,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(&dir)? {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(std::ffi::OsString::from(OsStr::from_bytes(name)));
        }
    }
    names.sort();
    for name in names {
        let st = rustix::fs::statat(&dir, &name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
        copy_entry(dir.as_fd(), Some(&name), &st, to, &name)?;
    }
    Ok(())
}

/// Copies one entry: `name` in `parent` (or `parent` itself when `name` is `None`) with stat
/// `st`, to `name_to` in `to`.
fn copy_entry(
    parent: BorrowedFd<'_>,
    name: Option<&OsStr>,
    st: &rustix::fs::Stat,
    to: BorrowedFd<'_>,
    name_to: &OsStr,
) -> io::Result<()> {
    let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
    let owner = |fd: BorrowedFd<'_>, name: &OsStr, flags| {
        let _ = rustix::fs::chownat(
            fd,
            name,
            Some(rustix::process::Uid::from_raw(st.st_uid)),
            Some(rustix::process::Gid::from_raw(st.st_gid)),
            flags,
        );
    };
    let src_name = name.unwrap_or(OsStr::new(""));
    let nofollow = OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            rustix::fs::mkdirat(to, name_to, Mode::from_raw_mode(0o700))?;
            let sub = rustix::fs::openat(parent, src_name, OFlags::PATH | nofollow, Mode::empty())?;
            let sub_to = rustix::fs::openat(to, name_to, OFlags::PATH | nofollow, Mode::empty())?;
            copy_tree(sub.as_fd(), sub_to.as_fd())?;
            owner(to, name_to, rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
            rustix::fs::chmodat(to, name_to, mode, rustix::fs::AtFlags::empty())?;
        }
        libc::S_IFREG => {
            let src = if name.is_some() {
                rustix::fs::openat(parent, src_name, OFlags::RDONLY | nofollow, Mode::empty())?
            } else {
                // The resolved O_PATH descriptor of the source itself cannot be read: reopen it
                // through its magic link (the only way to turn O_PATH into a readable fd).
                rustix::fs::open(
                    OsStr::from_bytes(fd_path(parent).as_bytes()),
                    OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?
            };
            let dst = rustix::fs::openat(
                to,
                name_to,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | nofollow,
                Mode::from_raw_mode(0o600),
            )?;
            io::copy(
                &mut std::fs::File::from(src),
                &mut std::fs::File::from(dst.try_clone()?),
            )?;
            let _ = rustix::fs::fchown(
                &dst,
                Some(rustix::process::Uid::from_raw(st.st_uid)),
                Some(rustix::process::Gid::from_raw(st.st_gid)),
            );
            rustix::fs::fchmod(&dst, mode)?;
            let ts = rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: st.st_atime as _,
                    tv_nsec: st.st_atime_nsec as _,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: st.st_mtime as _,
                    tv_nsec: st.st_mtime_nsec as _,
                },
            };
            let _ = rustix::fs::futimens(&dst, &ts);
        }
        libc::S_IFLNK => {
            let target = rustix::fs::readlinkat(parent, src_name, Vec::new())?;
            rustix::fs::symlinkat(&target, to, name_to)?;
            owner(to, name_to, rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
        }
        _ => {}
    }
    Ok(())
}

/// Writes secret number `index` into the step's private tmpfs (mounted on first use over
/// `job.secrets_dir`, in this mount namespace only) with its owner and mode, and returns an
/// `O_PATH` fd of it to bind at the target.
fn stage_secret(
    job: &RunJob,
    mounted: &mut bool,
    index: usize,
    data: &[u8],
    (uid, gid, mode): (u32, u32, u32),
) -> Result<OwnedFd, Fail> {
    let dir = &job.secrets_dir;
    if !*mounted {
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        mount(
            Some(c"tmpfs"),
            &cstr(dir)?,
            Some(c"tmpfs"),
            flags,
            Some(c"mode=0711"),
        )
        .ctx("mount the secrets tmpfs", Some(dir))?;
        *mounted = true;
    }
    let path = dir.join(index.to_string());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .ctx("write a secret", Some(&path))?;
    std::io::Write::write_all(&mut file, data).ctx("write a secret", Some(&path))?;
    // In single-id mode only id 0 exists: the owner stays 0 there.
    let _ = std::os::unix::fs::fchown(&file, Some(uid), Some(gid));
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777))
        .ctx("chmod a secret", Some(&path))?;
    open_host(&path)
}

/// Whether `name`, directly in `root`, is a symlink.
fn is_symlink(root: BorrowedFd<'_>, name: &str) -> bool {
    rustix::fs::statat(root, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
}

/// Remounts a bind mount read-only, keeping the flags the kernel locked on it.
fn remount_readonly(fd: BorrowedFd<'_>) -> io::Result<()> {
    let st = rustix::fs::fstatvfs(fd)?;
    let f = st.f_flag;
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
    for (st_flag, ms) in [
        (rustix::fs::StatVfsMountFlags::NOSUID, libc::MS_NOSUID),
        (rustix::fs::StatVfsMountFlags::NODEV, libc::MS_NODEV),
        (rustix::fs::StatVfsMountFlags::NOEXEC, libc::MS_NOEXEC),
        (rustix::fs::StatVfsMountFlags::NOATIME, libc::MS_NOATIME),
        (
            rustix::fs::StatVfsMountFlags::NODIRATIME,
            libc::MS_NODIRATIME,
        ),
        (rustix::fs::StatVfsMountFlags::RELATIME, libc::MS_RELATIME),
    ] {
        if f.contains(st_flag) {
            flags |= ms;
        }
    }
    mount(None, &fd_path(fd), None, flags, None)
}

/// `pivot_root` into `new_root` without a put-old directory (the runc way: pivot onto ".", then
/// detach the old root stacked on top).
fn pivot(new_root: &Path) -> Result<(), Fail> {
    std::env::set_current_dir(new_root).ctx("chdir to the root filesystem", Some(new_root))?;
    rustix::process::pivot_root(".", ".")
        .map_err(io::Error::from)
        .ctx("pivot_root", Some(new_root))?;
    // SAFETY: "." is a valid NUL-terminated path; detaching the old root only affects this namespace.
    sys(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) })
        .ctx("detach the old root", None)?;
    std::env::set_current_dir("/").ctx("chdir /", None)?;
    Ok(())
}

/// Brings the loopback interface of a new network namespace up.
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh, valid fd that nothing else owns.
    let sock: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; all zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: ifr is a valid ifreq that SIOCGIFFLAGS fills.
    sys(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) })?;
    // SAFETY: SIOCGIFFLAGS set the flags member of the union.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: ifr is a valid ifreq naming "lo" with its flags.
    sys(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy a `rw` bind gets where overlayfs is refused: files, directories (with modes and
    /// times) and symlinks as symlinks, never followed; nothing written outside the copy.
    #[test]
    fn copy_tree_copies_links_as_links_and_never_follows_them() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst, out) = (
            t.path().join("src"),
            t.path().join("dst"),
            t.path().join("out"),
        );
        for d in [&src, &dst, &out] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::create_dir(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), "f").unwrap();
        std::fs::write(out.join("secret"), "host").unwrap();
        std::os::unix::fs::symlink(&out, src.join("abs")).unwrap();
        std::os::unix::fs::symlink("../out/secret", src.join("rel")).unwrap();
        let mode = |p: &Path, m| {
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap()
        };
        mode(&src.join("sub/f"), 0o640);
        mode(&src.join("sub"), 0o750);
        let from = crate::inroot::open_root(&src).unwrap();
        let to = crate::inroot::open_root(&dst).unwrap();
        copy_tree(from.as_fd(), to.as_fd()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let md = |p: &Path| std::fs::symlink_metadata(p).unwrap();
        assert_eq!(std::fs::read(dst.join("sub/f")).unwrap(), b"f");
        assert_eq!(md(&dst.join("sub/f")).permissions().mode() & 0o7777, 0o640);
        assert_eq!(md(&dst.join("sub")).permissions().mode() & 0o7777, 0o750);
        assert_eq!(std::fs::read_link(dst.join("abs")).unwrap(), out);
        assert_eq!(
            std::fs::read_link(dst.join("rel")).unwrap(),
            Path::new("../out/secret")
        );
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            1,
            "the copy wrote through a link"
        );
        // A file source: the resolved O_PATH descriptor itself.
        let f = crate::inroot::open_path(&src, "sub/f", OFlags::PATH).unwrap();
        let st = rustix::fs::fstat(&f).unwrap();
        copy_entry(f.as_fd(), None, &st, to.as_fd(), OsStr::new("file")).unwrap();
        assert_eq!(std::fs::read(dst.join("file")).unwrap(), b"f");
    }
}
