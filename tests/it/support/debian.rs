//! The Debian bookworm minbase tree some sandbox tests use when it is cached on the machine
//! (`debootstrap --variant=minbase bookworm /var/tmp/kiln-sandbox-bookworm`), and the copy of it
//! owned by the unprivileged test user.
use super::users::TEST_USER;
use std::path::PathBuf;

/// The cached `debootstrap --variant=minbase bookworm` tree (owned by the current user), if any.
pub fn debian_rootfs() -> Option<PathBuf> {
    let dir = std::env::var_os("KILN_IT_DEBIAN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEBIAN_ROOTFS));
    dir.join("usr/bin/apt-get").exists().then_some(dir)
}

/// Where the tests look for a Debian bookworm minbase tree made by `debootstrap`.
pub const DEBIAN_ROOTFS: &str = "/var/tmp/kiln-sandbox-bookworm";

/// A copy of the Debian tree owned by the test user, as a rootless `kiln import` would unpack
/// it (made once; every id becomes the user's, that is 0 in the namespace).
pub fn debian_rootfs_for_test_user() -> Option<PathBuf> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src = debian_rootfs()?;
    let dst = PathBuf::from(format!("{}-{TEST_USER}", src.display()));
    if dst.join("usr/bin/apt-get").exists() {
        return Some(dst);
    }
    let tmp = PathBuf::from(format!("{}.tmp", dst.display()));
    let _ = std::fs::remove_dir_all(&tmp);
    let ok = |c: &mut std::process::Command| c.status().is_ok_and(|s| s.success());
    if ok(std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&tmp))
        // A rootless import cannot create device nodes either.
        && ok(std::process::Command::new("find").arg(tmp.join("dev")).args(["-mindepth", "1", "-delete"]))
        && ok(std::process::Command::new("chown")
            .args(["-R", "-h", &format!("{TEST_USER}:{TEST_USER}")])
            .arg(&tmp))
        && std::fs::rename(&tmp, &dst).is_ok()
    {
        return Some(dst);
    }
    None
}
