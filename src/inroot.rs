//! One way to turn a name into a file inside a root directory: [`open`] (and its typed wrapper
//! [`open_path`]) resolves a name from a Dockerfile, a build context, an image or a layer inside
//! a root and hands back a file descriptor, never a host path to re-open.
//!
//! Resolution is chroot-like, as the kernel's `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! does it: an absolute name or an absolute symlink target starts again at the root, `..` at the
//! root stays at the root, and no symlink (however chained) leads out of it. That is also how
//! BuildKit resolves a `RUN --mount=type=bind,source=` selector and a COPY source inside its
//! root (its executor's `sub` in `executor/oci` calls continuity's `fs.RootPath`).
//!
//! Where the kernel has `openat2` (Linux 5.6+) it does the work. Where it does not (`ENOSYS`: an
//! old kernel or a seccomp profile that hides it), [`open`] walks the name one component at a
//! time: each component is opened with `O_PATH | O_NOFOLLOW` relative to the directory fd of
//! the one before, a symlink is read with `readlinkat` on its own fd and its target pushed back
//! onto the components still to walk, and `..` pops the stack of directory fds that the walk
//! holds (never the kernel's `..`, so renaming a directory out of the root under a running walk
//! does not take the walk with it). Both paths give the same file for the same tree; the unit
//! tests below run every case through both, and `fuzz/fuzz_targets/inroot.rs` compares them.
//!
//! This module sits at the bottom of the crate (it uses nothing of kiln). Its callers are the
//! layer unpacker (`layer::unpack`), COPY/ADD sources and `RUN --mount` sources from the context
//! (`builder::context`, through [`resolve`], which also reports the resolved name), `RUN --mount`
//! sources from stages and images (`builder::step::run`), and the sandbox: mount targets and bind
//! sources (`sandbox::mounts`), the walk snapshot's `exists` and the namespace-side `chown`
//! (`sandbox::snapshot`, `sandbox::helper`). Two places resolve names without it, by design:
//! a RUN step's working directory is created after `pivot_root`, where the kernel's own root is
//! the step's root filesystem; and `builder::fsindex` resolves layer paths in its in-memory index
//! of a stage (no host file is opened), with the same chroot rules.
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// The kernel's limit on symlinks followed in one resolution (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// A name that could not be resolved inside a root.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve `{name}` inside `{root}`: {source}")]
pub struct Error {
    /// The root the name was resolved in.
    pub root: PathBuf,
    /// The name, as given.
    pub name: String,
    /// Why: `NotFound` for a missing component, `ELOOP` for too many symlinks, `ENOTDIR` for a
    /// component that is not a directory, …
    #[source]
    pub source: io::Error,
}

impl Error {
    /// The kind of the underlying error (e.g. [`io::ErrorKind::NotFound`]).
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

/// How [`open_with`] resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// `openat2` where the kernel has it, else the component walk.
    Auto,
    /// Always the component walk (what a kernel without `openat2` gets); for tests and fuzzing.
    Walk,
}

const UNKNOWN: u8 = 0;
const HAVE: u8 = 1;
const MISSING: u8 = 2;
/// Whether this kernel has `openat2`, learnt from the first call.
static OPENAT2: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Opens `name` inside `root` with `flags`, never leaving `root` (see the module doc). `flags`
/// are `open(2)` flags without `O_CREAT`; `O_NOFOLLOW` applies to the last component only, as
/// with `openat2`. `O_CLOEXEC` is always added. Errors are the kernel's errno.
pub fn open(root: impl AsFd, name: impl AsRef<OsStr>, flags: OFlags) -> Result<OwnedFd, Errno> {
    open_with(How::Auto, root, name.as_ref().as_bytes(), flags)
}

/// [`open`], choosing how to resolve.
pub fn open_with(how: How, root: impl AsFd, name: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
    let root = root.as_fd();
    debug_assert!(
        !flags.contains(OFlags::CREATE),
        "create with *at on a resolved parent"
    );
    let flags = flags | OFlags::CLOEXEC;
    if how == How::Auto && OPENAT2.load(Ordering::Relaxed) != MISSING {
        let rel: &[u8] = if name.is_empty() { b"." } else { name };
        // EAGAIN: a rename or mount raced with `..`; the kernel asks the caller to retry.
        for _ in 0..4 {
            match rustix::fs::openat2(
                root,
                OsStr::from_bytes(rel),
                flags,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                Err(Errno::NOSYS) => {
                    OPENAT2.store(MISSING, Ordering::Relaxed);
                    break;
                }
                Err(Errno::AGAIN) => continue,
                other => {
                    OPENAT2.store(HAVE, Ordering::Relaxed);
                    return other;
                }
            }
        }
    }
    walk(root, name, flags)
}

/// Opens the root directory itself (trusted: a directory kiln chose or the user named), as an
/// `O_PATH` descriptor to pass to [`open`].
pub fn open_root(root: &Path) -> Result<OwnedFd, Error> {
    rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error {
        root: root.to_owned(),
        name: String::new(),
        source: e.into(),
    })
}

/// Opens the root at `root` and `name` inside it with `flags`; the error names both.
pub fn open_path(root: &Path, name: &str, flags: OFlags) -> Result<OwnedFd, Error> {
    let root_fd = open_root(root)?;
    open(root_fd.as_fd(), name, flags).map_err(|e| Error {
        root: root.to_owned(),
        name: name.to_owned(),
        source: e.into(),
    })
}

/// Resolves `name` inside `root` as [`open`] does and also returns the resolved name: where
/// below the root the opened file is, with no symlink, `.` or `..` left (empty for the root
/// itself). Always the component walk, which knows the names it walked (`openat2` does not
/// report them); for callers that match the resolved name, such as COPY's `.dockerignore` check.
pub fn resolve(root: impl AsFd, name: &[u8], flags: OFlags) -> Result<(OwnedFd, Vec<u8>), Errno> {
    let mut names = Vec::new();
    let fd = walk_named(
        root.as_fd(),
        name,
        flags | OFlags::CLOEXEC,
        Some(&mut names),
    )?;
    Ok((fd, names.join(&b'/')))
}

/// The component walk: what [`open`] does without `openat2`.
fn walk(root: BorrowedFd<'_>, name: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
    walk_named(root, name, flags, None)
}

/// The walk; when `names` is given, it receives the resolved components.
fn walk_named(
    root: BorrowedFd<'_>,
    name: &[u8],
    flags: OFlags,
    mut names: Option<&mut Vec<Vec<u8>>>,
) -> Result<OwnedFd, Errno> {
    let comp_flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // Directories entered below the root, innermost last; empty means "at the root".
    let mut stack: Vec<OwnedFd> = Vec::new();
    // Components still to walk, next last. A trailing slash (or `/.`) means the last real
    // component must be a directory and is followed even with O_NOFOLLOW, as in the kernel.
    let mut todo: Vec<Vec<u8>> = Vec::new();
    push_components(&mut todo, name);
    let mut must_be_dir = name.ends_with(b"/") || name.ends_with(b"/.") || name == b".";
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == b".." {
            stack.pop();
            if let Some(n) = names.as_deref_mut() {
                n.pop();
            }
            continue;
        }
        let last = todo.is_empty();
        let cur = stack.last().map_or(root, |d| d.as_fd());
        let fd = rustix::fs::openat(cur, OsStr::from_bytes(&c), comp_flags, Mode::empty())?;
        let st = rustix::fs::fstat(&fd)?;
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFLNK {
            if last && flags.contains(OFlags::NOFOLLOW) && !must_be_dir {
                // The kernel's answer: the link itself for O_PATH, ELOOP otherwise.
                let out = rustix::fs::openat(cur, OsStr::from_bytes(&c), flags, Mode::empty())?;
                if let Some(n) = names.as_deref_mut() {
                    n.push(c);
                }
                return Ok(out);
            }
            hops += 1;
            if hops > MAX_SYMLINKS {
                return Err(Errno::LOOP);
            }
            let target = rustix::fs::readlinkat(&fd, "", Vec::new())?;
            let target = target.as_bytes();
            if target.is_empty() {
                return Err(Errno::NOENT);
            }
            if target.starts_with(b"/") {
                stack.clear();
                if let Some(n) = names.as_deref_mut() {
                    n.clear();
                }
            }
            if last && target.ends_with(b"/") {
                must_be_dir = true;
            }
            push_components(&mut todo, target);
            continue;
        }
        if last {
            if must_be_dir && kind != libc::S_IFDIR {
                return Err(Errno::NOTDIR);
            }
            // Not a symlink a moment ago; O_NOFOLLOW makes a swap since then fail, not escape.
            let out = rustix::fs::openat(
                cur,
                OsStr::from_bytes(&c),
                flags | OFlags::NOFOLLOW,
                Mode::empty(),
            )?;
            if flags.contains(OFlags::PATH) && !flags.contains(OFlags::NOFOLLOW) {
                // O_PATH|O_NOFOLLOW opens a symlink instead of failing: refuse a swapped-in one.
                let st = rustix::fs::fstat(&out)?;
                if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                    return Err(Errno::AGAIN);
                }
            }
            if let Some(n) = names.as_deref_mut() {
                n.push(c);
            }
            return Ok(out);
        }
        if kind != libc::S_IFDIR {
            return Err(Errno::NOTDIR);
        }
        stack.push(fd);
        if let Some(n) = names.as_deref_mut() {
            n.push(c);
        }
    }
    // The name ended at a directory already on the stack (or the root).
    let cur = stack.last().map_or(root, |d| d.as_fd());
    rustix::fs::openat(cur, ".", flags, Mode::empty())
}

/// Pushes the components of `name` onto `todo` so that the first is popped first; `.` and empty
/// components are dropped.
fn push_components(todo: &mut Vec<Vec<u8>>, name: &[u8]) {
    for c in name.split(|&b| b == b'/').rev() {
        if !c.is_empty() && c != b"." {
            todo.push(c.to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A root with tricky links and a sentinel directory beside it.
    fn tree() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let out = t.path().join("outside");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("secret"), "host").unwrap();
        std::fs::write(root.join("secret"), "inside").unwrap();
        std::fs::write(root.join("a/b/f"), "f").unwrap();
        // What a link climbing out finds: the same name inside the root.
        std::fs::create_dir_all(root.join("outside")).unwrap();
        std::fs::write(root.join("outside/secret"), "decoy").unwrap();
        symlink("../outside/secret", root.join("up")).unwrap();
        symlink("../../../../../../outside/secret", root.join("a/deep")).unwrap();
        symlink(out.join("secret"), root.join("abs")).unwrap();
        symlink("/secret", root.join("abs_inside")).unwrap();
        symlink("a/b", root.join("ab")).unwrap();
        symlink("ab/../..", root.join("climb")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        symlink("missing", root.join("dangling")).unwrap();
        symlink("/", root.join("slash")).unwrap();
        symlink("up", root.join("chain")).unwrap();
        symlink("/proc/self/root/etc/passwd", root.join("magic")).unwrap();
        (t, root)
    }

    fn read(fd: &OwnedFd) -> String {
        // An O_PATH fd cannot be read; reopening it through /proc is fine in a test.
        let raw = std::os::fd::AsRawFd::as_raw_fd(fd);
        std::fs::read_to_string(format!("/proc/self/fd/{raw}")).unwrap()
    }

    fn id(fd: &OwnedFd) -> (u64, u64) {
        let st = rustix::fs::fstat(fd).unwrap();
        (st.st_dev, st.st_ino)
    }

    const CASES: &[(&str, Result<&str, Errno>)] = &[
        ("secret", Ok("inside")),
        ("/secret", Ok("inside")),
        ("../../secret", Ok("inside")),
        ("up", Ok("decoy")),
        ("a/deep", Ok("decoy")),
        ("abs", Err(Errno::NOENT)),
        ("abs_inside", Ok("inside")),
        ("chain", Ok("decoy")),
        ("ab/f", Ok("f")),
        ("ab/../../../secret", Ok("inside")),
        ("climb/secret", Ok("inside")),
        ("slash/slash/secret", Ok("inside")),
        ("loop1", Err(Errno::LOOP)),
        ("dangling", Err(Errno::NOENT)),
        ("secret/x", Err(Errno::NOTDIR)),
        ("magic", Err(Errno::NOENT)),
    ];

    fn check(how: How) {
        let (_t, root) = tree();
        let r = open_root(&root).unwrap();
        for (name, want) in CASES {
            let got = open_with(how, r.as_fd(), name.as_bytes(), OFlags::PATH);
            match (want, got) {
                (Ok(text), Ok(fd)) => assert_eq!(read(&fd), *text, "{how:?} {name}"),
                (Err(e), Err(g)) => assert_eq!(*e, g, "{how:?} {name}"),
                (w, g) => panic!("{how:?} {name}: want {w:?}, got {g:?}"),
            }
        }
        // Directories: the root itself, whatever way the name climbs.
        for name in [
            "",
            ".",
            "/",
            "..",
            "a/..",
            "a/b/../../..",
            "slash",
            "climb",
            "ab/../..",
        ] {
            let fd = open_with(how, r.as_fd(), name.as_bytes(), OFlags::PATH).unwrap();
            assert_eq!(id(&fd), id(&r), "{how:?} `{name}` is not the root");
        }
        // O_NOFOLLOW: the last link itself with O_PATH, ELOOP otherwise; a trailing slash
        // follows anyway and wants a directory.
        let nf = OFlags::PATH | OFlags::NOFOLLOW;
        let link = open_with(how, r.as_fd(), b"up", nf).unwrap();
        let st = rustix::fs::fstat(&link).unwrap();
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFLNK, "{how:?}");
        assert_eq!(
            open_with(how, r.as_fd(), b"up", OFlags::RDONLY | OFlags::NOFOLLOW).unwrap_err(),
            Errno::LOOP
        );
        let ab = open_with(how, r.as_fd(), b"ab/", nf).unwrap();
        let b = open_with(how, r.as_fd(), b"a/b", OFlags::PATH).unwrap();
        assert_eq!(id(&ab), id(&b), "{how:?}");
        assert_eq!(
            open_with(how, r.as_fd(), b"secret/", OFlags::PATH).unwrap_err(),
            Errno::NOTDIR
        );
        // Flags reach the last component: O_DIRECTORY on a file.
        assert_eq!(
            open_with(how, r.as_fd(), b"up", OFlags::RDONLY | OFlags::DIRECTORY).unwrap_err(),
            Errno::NOTDIR
        );
        let long = vec![b'x'; 300];
        assert_eq!(
            open_with(how, r.as_fd(), &long, OFlags::PATH).unwrap_err(),
            Errno::NAMETOOLONG
        );
    }

    #[test]
    fn names_and_links_resolve_inside_the_root_with_openat2() {
        check(How::Auto);
    }

    #[test]
    fn names_and_links_resolve_inside_the_root_with_the_fallback_walk() {
        check(How::Walk);
    }

    #[test]
    fn resolve_reports_the_name_it_opened() {
        let (_t, root) = tree();
        let r = open_root(&root).unwrap();
        for (name, want) in [
            ("up", "outside/secret"),
            ("abs_inside", "secret"),
            ("ab/f", "a/b/f"),
            ("climb", ""),
            ("slash/ab/../b/f", "a/b/f"),
            ("/", ""),
        ] {
            let (fd, got) = resolve(&r, name.as_bytes(), OFlags::PATH).unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), want, "{name}");
            let direct = open_with(How::Auto, &r, want.as_bytes(), OFlags::PATH).unwrap();
            assert_eq!(id(&fd), id(&direct), "{name}");
        }
        assert_eq!(
            resolve(&r, b"dangling", OFlags::PATH).unwrap_err(),
            Errno::NOENT
        );
    }

    #[test]
    fn the_typed_error_names_the_root_and_the_name() {
        let (_t, root) = tree();
        let e = open_path(&root, "a/../dangling", OFlags::PATH).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let msg = e.to_string();
        assert!(msg.contains(&root.display().to_string()) && msg.contains("`a/../dangling`"));
    }

    #[test]
    fn a_chain_of_forty_links_resolves_and_forty_one_do_not() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::write(root.join("l0"), "end").unwrap();
        for i in 1..=41 {
            symlink(format!("/l{}", i - 1), root.join(format!("l{i}"))).unwrap();
        }
        let r = open_root(root).unwrap();
        for how in [How::Auto, How::Walk] {
            let fd = open_with(how, r.as_fd(), b"l40", OFlags::PATH).unwrap();
            assert_eq!(read(&fd), "end");
            let e = open_with(how, r.as_fd(), b"l41", OFlags::PATH).unwrap_err();
            assert_eq!(e, Errno::LOOP, "{how:?}");
        }
    }
}
