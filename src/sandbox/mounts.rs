//! The step's mount namespace, set up by the init process before `pivot_root`: the root
//! filesystem, `/proc`, a minimal `/dev`, the bound `/etc` files and the extra mounts (an SSH
//! agent's relay socket among them, bound as a file); and the
//! clean-up afterwards that removes the mount points kiln had to create.
//!
//! Every target is resolved inside the new root with [`crate::inroot`] (`openat2(RESOLVE_IN_ROOT)`
//! or its checked walk) and mounted through its `/proc/self/fd/N` magic link (`mount(2)` takes
//! paths; the magic link names exactly the resolved file), so a symlink in the image
//! (`/etc/hosts -> /x`, or an absolute one) can never make a mount land on the host. Bind
//! sources are resolved the same way inside their own root (the context, a stage, an image),
//! and a writable bind is an overlay or a copy ([`super::copy`]) on a private tmpfs, never the
//! source itself. Missing targets are created as *stubs* ([`super::mnt::Stubs`]); after the step
//! the stubs that are still empty are removed and their parent directory's times restored, as
//! BuildKit's `MountStubsCleaner` does, so they leave no trace in the diff. The primitives
//! (`mount(2)`, overlayfs, the magic links) are in [`super::mnt`].
use super::copy::{copy_entry, copy_tree};
use super::fail::{cstr, Fail, IoCtx};
use super::mnt::{fd_path, mount, mount_overlay, open_in_root, relative, sys, Mnt, Stubs};
use super::protocol::{RunJob, APT_SINGLE_ID_CONF};
use super::snapshot::Root;
use super::MountKind;
use rustix::fs::{Mode, OFlags};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

fn open_host(path: &Path) -> Result<OwnedFd, Fail> {
    rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(io::Error::from)
        .ctx("open host file", Some(path))
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
    let mut ssh_sockets = job.ssh_sockets.iter();
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
            MountKind::Ssh { uid, gid, mode, .. } => {
                let socket = ssh_sockets
                    .next()
                    .ok_or_else(|| Fail::invalid_mount(&m.target))?;
                // Root in the namespace gives kiln's socket the mount's owner and mode (in
                // single-id mode only id 0 exists: the owner stays 0 there).
                let _ = std::os::unix::fs::chown(socket, Some(*uid), Some(*gid));
                std::fs::set_permissions(
                    socket,
                    std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
                )
                .ctx("chmod the ssh agent socket", Some(socket))?;
                Some(open_host(socket)?)
            }
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
