//! Copies of a `rw` bind mount's source where overlayfs is refused ([`super::mounts`]): a tree
//! or one entry between directory descriptors, never following a symlink.
use super::mnt::fd_path;
use rustix::fs::{Mode, OFlags};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

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
pub(crate) fn copy_entry(
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
