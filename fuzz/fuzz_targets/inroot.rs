//! Fuzz target: `inroot`, the one path resolver. The input describes a tree, then names to
//! resolve in it. Lines before the first NUL make the tree, one entry a line: `d NAME` a
//! directory, `f NAME` a file, `l NAME TARGET` a symlink (TARGET is any bytes: `..`, absolute,
//! long, chained); each entry is created through `inroot::open` of its parent, so a resolver bug
//! that escaped the root would write outside it. Lines after the NUL are names, resolved with
//! `openat2` and with the fallback walk (`How::Walk`), plain and with `O_NOFOLLOW`.
//!
//! Invariants besides "no panic or hang": both ways give the same file (device and inode) or
//! the same error; every file resolved is the root or below it (its `/proc/self/fd` path); a
//! sentinel directory next to the root stays exactly as it was.
#![no_main]

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use kiln::inroot::{self, How};
use libfuzzer_sys::fuzz_target;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

fn listing(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v: Vec<(Vec<u8>, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let data = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().as_bytes().to_vec(), data)
        })
        .collect();
    v.sort();
    v
}

/// Creates one entry: `name` split into parent (resolved in the root) and last component.
fn create(root: &OwnedFd, line: &[u8]) {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(kind), Some(name)) = (parts.next(), parts.next()) else {
        return;
    };
    let (parent, last) = match name.iter().rposition(|&b| b == b'/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (&b""[..], name),
    };
    if last.is_empty() || last == b"." || last == b".." || last.contains(&0) {
        return;
    }
    let Ok(dir) = inroot::open(
        root,
        std::ffi::OsStr::from_bytes(parent),
        OFlags::PATH | OFlags::DIRECTORY,
    ) else {
        return;
    };
    let last = std::ffi::OsStr::from_bytes(last);
    let _ = match kind {
        b"d" => rustix::fs::mkdirat(&dir, last, Mode::from_raw_mode(0o755)).map(drop),
        b"f" => rustix::fs::openat(
            &dir,
            last,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map(drop),
        b"l" => {
            let target = parts.next().unwrap_or_default();
            if target.contains(&0) {
                return;
            }
            rustix::fs::symlinkat(std::ffi::OsStr::from_bytes(target), &dir, last)
        }
        _ => Ok(()),
    };
}

fn id(fd: &OwnedFd) -> (u64, u64) {
    let st = rustix::fs::fstat(fd).unwrap();
    (st.st_dev, st.st_ino)
}

fuzz_target!(|data: &[u8]| {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("sentinel"), b"keep").unwrap();
    // Decoys the names may aim at from inside: links out of the root, absolute and climbing.
    std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
    std::os::unix::fs::symlink("../outside", root.join("up")).unwrap();
    let before = listing(&outside);
    let root_fd = inroot::open_root(&root).unwrap();
    let root_real = std::fs::canonicalize(&root).unwrap();

    let (tree, names) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    for line in tree.split(|&b| b == b'\n').take(64) {
        create(&root_fd, line);
    }
    for name in names.split(|&b| b == b'\n').take(64) {
        if name.contains(&0) {
            continue;
        }
        for flags in [
            OFlags::PATH,
            OFlags::PATH | OFlags::NOFOLLOW,
            OFlags::RDONLY,
        ] {
            let a = inroot::open_with(How::Auto, root_fd.as_fd(), name, flags);
            let w = inroot::open_with(How::Walk, root_fd.as_fd(), name, flags);
            match (&a, &w) {
                (Ok(a), Ok(w)) => assert_eq!(
                    id(a),
                    id(w),
                    "{:?} {flags:?}",
                    String::from_utf8_lossy(name)
                ),
                // openat2 limits the whole name to PATH_MAX, the walk each component to NAME_MAX.
                (Err(Errno::NAMETOOLONG), _) | (_, Err(Errno::NAMETOOLONG)) => {}
                (Err(x), Err(y)) => {
                    assert_eq!(x, y, "{:?} {flags:?}", String::from_utf8_lossy(name))
                }
                _ => panic!(
                    "{:?} {flags:?}: openat2 {:?}, walk {:?}",
                    String::from_utf8_lossy(name),
                    a.as_ref().map(id),
                    w.as_ref().map(id)
                ),
            }
            for fd in [a, w].into_iter().flatten() {
                let at = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
                assert!(
                    at.starts_with(&root_real),
                    "{:?} resolved to {} outside the root",
                    String::from_utf8_lossy(name),
                    at.display()
                );
            }
        }
    }
    assert_eq!(listing(&outside), before, "the sentinel directory changed");
    let beside: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        beside.len(),
        2,
        "something appeared beside the root: {beside:?}"
    );
});
