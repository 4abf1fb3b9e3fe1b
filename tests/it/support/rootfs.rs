//! A tiny busybox root filesystem, made from the `busybox-static` package's `/bin/busybox`.
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// The host's static busybox.
pub const BUSYBOX: &str = "/bin/busybox";

/// Whether the busybox-static binary is installed.
pub fn busybox_available() -> bool {
    Path::new(BUSYBOX).is_file()
}

/// Fills `dir` with a busybox rootfs: `/bin/busybox`, every applet as a symlink to it
/// (`busybox --list-full`), `/etc/passwd`, `/etc/group`, and the usual empty directories.
pub fn make_busybox_rootfs(dir: &Path) -> io::Result<()> {
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "dev", "root", "tmp", "var", "home",
    ] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::set_permissions(dir.join("root"), std::fs::Permissions::from_mode(0o700))?;
    std::fs::copy(BUSYBOX, dir.join("bin/busybox"))?;
    std::fs::set_permissions(
        dir.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    let list = Command::new(BUSYBOX).arg("--list-full").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = dir.join(applet.trim_start_matches('/'));
        if applet.is_empty() || link.exists() || link.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        symlink("/bin/busybox", &link)?;
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n",
    )?;
    Ok(())
}
