//! A Debian bookworm minbase tree made with `debootstrap` once per machine (cached at
//! [`crate::support::debian::DEBIAN_ROOTFS`]), and a tarball of it any user can `kiln import`;
//! and the same for a foreign architecture ([`foreign_rootfs_tarball`]: `debootstrap --arch`,
//! its second stage under the QEMU user emulator registered in `binfmt_misc`, cached beside it).
use std::path::{Path, PathBuf};
use std::process::Command;

use super::skip;
use crate::support::debian::{debian_rootfs, DEBIAN_ROOTFS};

/// The mirror apt on this machine uses (deb822 or one-line sources), else deb.debian.org.
fn mirror() -> String {
    let mut texts = Vec::new();
    for f in [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ] {
        texts.push(std::fs::read_to_string(f).unwrap_or_default());
    }
    for text in texts {
        for line in text.lines() {
            let line = line.trim();
            if let Some(uris) = line.strip_prefix("URIs:") {
                if let Some(u) = uris.split_whitespace().find(|u| !u.contains("security")) {
                    return u.to_string();
                }
            }
            if let Some(rest) = line.strip_prefix("deb ") {
                if let Some(u) = rest
                    .split_whitespace()
                    .find(|w| w.starts_with("http") && !w.contains("security"))
                {
                    return u.to_string();
                }
            }
        }
    }
    "http://deb.debian.org/debian".into()
}

/// The cached minbase tree, made with `debootstrap` when missing (minutes, once per machine).
pub fn ensure_rootfs() -> Option<PathBuf> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = debian_rootfs() {
        return Some(d);
    }
    if !crate::support::is_root() {
        skip("debootstrap needs root and no Debian tree is cached");
        return None;
    }
    if !crate::support::need("debootstrap") {
        return None;
    }
    let dst = PathBuf::from(DEBIAN_ROOTFS);
    let tmp = PathBuf::from(format!("{DEBIAN_ROOTFS}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&tmp)
        .arg(mirror())
        .output()
        .expect("debootstrap");
    assert!(
        out.status.success(),
        "debootstrap failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &dst).unwrap();
    Some(dst)
}

/// A tarball of the tree (numeric owners kept), readable by every user; made once.
pub fn rootfs_tarball() -> Option<PathBuf> {
    let tree = ensure_rootfs()?;
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    Some(tarball(&tree))
}

/// Where the `debootstrap --arch=ARCH` tree is cached (beside the native one).
pub fn foreign_rootfs_dir(arch: &str) -> PathBuf {
    PathBuf::from(format!("{DEBIAN_ROOTFS}-{arch}"))
}

/// The minbase tree of a foreign `arch` (e.g. `arm64`), made once per machine with
/// `debootstrap --arch=ARCH`: debootstrap unpacks the packages, then chroots into the tree for
/// the second stage, whose binaries the kernel hands to the emulator registered in
/// `binfmt_misc` (Debian's `qemu-user-static` registers it with `F`, so nothing of the emulator
/// is copied into the tree; what `qemu-debootstrap` used to do by hand). Cold: about as long as
/// the second stage takes under emulation (minutes).
pub fn ensure_foreign_rootfs(arch: &str) -> Option<PathBuf> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dst = foreign_rootfs_dir(arch);
    if dst.join("usr/bin/apt-get").exists() {
        return Some(dst);
    }
    if !crate::support::is_root() {
        skip(&format!(
            "debootstrap --arch={arch} needs root and no tree is cached at {}",
            dst.display()
        ));
        return None;
    }
    if !crate::support::need("debootstrap") {
        return None;
    }
    let tmp = PathBuf::from(format!("{}.tmp", dst.display()));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--arch={arch}"), "bookworm"])
        .arg(&tmp)
        .arg(mirror())
        .output()
        .expect("debootstrap");
    assert!(
        out.status.success(),
        "debootstrap --arch={arch} failed (is its emulator registered in binfmt_misc?): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &dst).unwrap();
    Some(dst)
}

/// A tarball of the foreign `arch` tree (numeric owners kept), readable by every user; made once.
pub fn foreign_rootfs_tarball(arch: &str) -> Option<PathBuf> {
    let tree = ensure_foreign_rootfs(arch)?;
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    Some(tarball(&tree))
}

/// `TREE.tar`, made unless it is newer than the tree.
fn tarball(tree: &Path) -> PathBuf {
    let tar = PathBuf::from(format!("{}.tar", tree.display()));
    if fresh(&tar, tree) {
        return tar;
    }
    let tmp = PathBuf::from(format!("{}.tar.tmp", tree.display()));
    crate::support::run(
        Command::new("tar")
            .arg("-C")
            .arg(tree)
            .args(["--numeric-owner", "-cf"])
            .arg(&tmp)
            .arg("."),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, &tar).unwrap();
    tar
}

fn fresh(tar: &Path, tree: &Path) -> bool {
    let (Ok(t), Ok(d)) = (std::fs::metadata(tar), std::fs::metadata(tree)) else {
        return false;
    };
    t.modified().unwrap() >= d.modified().unwrap()
}
