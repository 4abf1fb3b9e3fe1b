//! The mount primitives under [`super::mounts`]: `mount(2)` and overlayfs, the
//! `/proc/self/fd/N` magic link that names a descriptor resolved inside the root ([`fd_path`],
//! [`open_in_root`], [`relative`]), and the [`Stubs`]: the mount points kiln had to create in
//! the root filesystem, removed again after the step (with their parents' times restored) so
//! they leave no trace in the diff. It imports nothing of the sandbox; the helper's overlay
//! probe uses it too.
use rustix::fs::{Mode, OFlags};
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What to mount: the arguments of `mount(2)` besides the target.
pub(crate) struct Mnt<'a> {
    pub src: Option<&'a CStr>,
    pub fstype: Option<&'a CStr>,
    pub flags: libc::c_ulong,
    pub data: Option<&'a CStr>,
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
    pub root: Option<OwnedFd>,
}

/// A libc return code as an `io::Result`: a negative one is the errno.
pub(crate) fn sys(rc: libc::c_int) -> io::Result<()> {
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

/// The `/proc/self/fd/N` magic link of `fd`: the path that names exactly the resolved file, for
/// the calls that take paths (`mount(2)`, reopening an `O_PATH` descriptor).
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a formatted number")
}

/// Opens `rel` inside `root` as an `O_PATH` fd, never leaving `root` ([`crate::inroot`]).
pub(crate) fn open_in_root(root: BorrowedFd<'_>, rel: &str) -> io::Result<OwnedFd> {
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
    pub(crate) fn mount_at(
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
