//! A busybox root filesystem from Debian's `busybox-static`, for bases the tests import.
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::{need, Kiln};

/// Writes a busybox rootfs (applets as symlinks, a few users and groups) into `dir`.
/// Returns false (test skipped) when busybox is missing outside CI.
pub fn rootfs(dir: &Path) -> bool {
    if !need("busybox") {
        return false;
    }
    let bb = which("busybox").expect("need() checked busybox is on PATH");
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root", "home/app", "var",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(&bb, dir.join("bin/busybox")).unwrap();
    let list = std::process::Command::new(&bb)
        .arg("--list-full")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "bin/busybox" && !applet.is_empty() {
            let _ = symlink("/bin/busybox", dir.join(applet));
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nweb:x:1001:1002:web:/var/www:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\napp:x:1000:\nstaff:x:50:\nweb:x:1002:\nnogroup:x:65534:\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    // `kiln import` keeps mtimes unless given an epoch: the same tree whenever it is made.
    set_mtimes(dir, BUSYBOX_MTIME);
    true
}

/// The mtime of every path of the busybox tree.
pub const BUSYBOX_MTIME: i64 = 1_600_000_000;

/// Sets the mtime (and atime) of `root` and every path below it, not following symlinks.
pub fn set_mtimes(root: &Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
        rustix::fs::utimensat(
            rustix::fs::CWD,
            &p,
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// Imports a busybox base into `k`'s store as `name`, also written as an OCI archive; returns
/// the archive path, or `None` when the test must be skipped.
pub fn import(k: &Kiln, name: &str) -> Option<PathBuf> {
    let root = k.path("busybox-rootfs");
    if !root.exists() {
        std::fs::create_dir_all(&root).unwrap();
        if !rootfs(&root) {
            return None;
        }
    }
    let archive = k.path("busybox.oci.tar");
    k.ok(&[
        "import",
        root.to_str().unwrap(),
        "-t",
        name,
        "--cmd",
        "/bin/sh",
        "--env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "-o",
        &format!("oci-archive:{}", archive.display()),
    ]);
    Some(archive)
}
