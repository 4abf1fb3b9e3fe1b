//! [`probe`]: decides once per build whether rootless RUN works on this machine, and which
//! snapshotter to use.
//!
//! It reads the sysctls that forbid user namespaces (so the error names the exact setting), then
//! starts the helper once to create a real user namespace and mount overlayfs in it, which is
//! the only reliable test (Debian and Ubuntu patches, AppArmor and seccomp all differ).
use super::error::{Result, SandboxError, SandboxWarning};
use super::protocol::{HelperMessage, Job};
use super::snapshot::SnapshotterKind;
use super::userns::{spawn_helper, UserNsSandbox};
use super::IdMapping;
use std::path::Path;

/// What [`probe`] found.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// The id mapping steps will use.
    pub id_mapping: IdMapping,
    /// Whether kernel overlayfs can be mounted in a user namespace, with its upper directory on
    /// the filesystem of the scratch directory given to [`probe`].
    pub overlay: bool,
    /// Warnings to show once (single-id mode).
    pub warnings: Vec<SandboxWarning>,
}

impl ProbeReport {
    /// The snapshotter to use: the requested one (an error if it cannot work here), else overlay
    /// when available, else walk.
    pub fn snapshotter(&self, requested: Option<SnapshotterKind>) -> Result<SnapshotterKind> {
        match requested {
            Some(SnapshotterKind::Overlay) if !self.overlay => {
                Err(SandboxError::OverlayUnavailable {
                    source: std::io::Error::from_raw_os_error(libc::EPERM),
                })
            }
            Some(kind) => Ok(kind),
            None if self.overlay => Ok(SnapshotterKind::Overlay),
            None => Ok(SnapshotterKind::Walk),
        }
    }
}

/// Fails with the setting and its fix when a sysctl forbids (unprivileged) user namespaces.
fn check_sysctls(read: &dyn Fn(&str) -> Option<String>, root: bool) -> Result<()> {
    let checks: [(&'static str, &'static str, &'static str, bool); 3] = [
        ("/proc/sys/user/max_user_namespaces", "0", "`sysctl -w user.max_user_namespaces=15000`", true),
        (
            "/proc/sys/kernel/unprivileged_userns_clone",
            "0",
            "`sysctl -w kernel.unprivileged_userns_clone=1`",
            !root,
        ),
        (
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "1",
            "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` or an AppArmor profile for kiln with `userns,`",
            !root,
        ),
    ];
    for (setting, bad, fix, applies) in checks {
        if let Some(value) = read(setting).filter(|v| applies && v == bad) {
            return Err(SandboxError::UserNamespacesDisabled {
                setting,
                value,
                fix,
            });
        }
    }
    Ok(())
}

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Checks that user namespaces are allowed and whether overlayfs works in one, using
/// `sandbox`'s helper and id mapping and a temporary directory under `scratch`.
pub fn probe(sandbox: &UserNsSandbox, scratch: &Path) -> Result<ProbeReport> {
    check_sysctls(&read_sysctl, rustix::process::geteuid().is_root())?;
    let dir = tempfile::Builder::new()
        .prefix("kiln-probe-")
        .tempdir_in(scratch)
        .map_err(|source| SandboxError::Io {
            action: "create a directory in",
            path: scratch.to_owned(),
            source,
        })?;
    let mk = |name: &str| {
        let p = dir.path().join(name);
        std::fs::create_dir(&p)
            .map(|_| p.clone())
            .map_err(|source| SandboxError::Io {
                action: "create",
                path: p,
                source,
            })
    };
    let job = Job::ProbeOverlay {
        lower: mk("lower")?,
        upper: mk("upper")?,
        work: mk("work")?,
        merged: mk("merged")?,
    };
    let mut ignore = |_: super::Stream, _: &[u8]| {};
    let overlay = match spawn_helper(
        sandbox.options(),
        sandbox.id_mapping(),
        job,
        None,
        &mut ignore,
    )? {
        HelperMessage::Done { .. } => true,
        // Whatever the reason, an overlay that does not mount here means the walk snapshotter.
        HelperMessage::Failed { stage, .. } if stage == "mount overlay" => false,
        HelperMessage::Failed { stage, path, errno } => {
            return Err(SandboxError::from_helper(stage, path, errno))
        }
        HelperMessage::Unshared => false,
    };
    // overlayfs leaves `work/work` with mode 000, which the caller owns but cannot list.
    let _ = std::fs::set_permissions(
        dir.path().join("work/work"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    );
    Ok(ProbeReport {
        id_mapping: sandbox.id_mapping().clone(),
        overlay,
        warnings: sandbox.warnings().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_overlay_when_it_works_and_a_forced_overlay_fails_without_it() {
        let mut report = ProbeReport {
            id_mapping: IdMapping::Identity,
            overlay: true,
            warnings: Vec::new(),
        };
        assert_eq!(report.snapshotter(None).unwrap(), SnapshotterKind::Overlay);
        report.overlay = false;
        assert_eq!(report.snapshotter(None).unwrap(), SnapshotterKind::Walk);
        assert_eq!(
            report.snapshotter(Some(SnapshotterKind::Walk)).unwrap(),
            SnapshotterKind::Walk
        );
        let err = report
            .snapshotter(Some(SnapshotterKind::Overlay))
            .unwrap_err();
        assert!(err.to_string().contains("--snapshotter walk"), "{err}");
    }

    #[test]
    fn a_disabled_sysctl_is_named_with_its_fix() {
        let read = |p: &str| {
            p.ends_with("unprivileged_userns_clone")
                .then(|| "0".to_owned())
        };
        let err = check_sysctls(&read, false).unwrap_err().to_string();
        assert!(
            err.contains("kernel/unprivileged_userns_clone` is `0`"),
            "{err}"
        );
        assert!(
            err.contains("sysctl -w kernel.unprivileged_userns_clone=1"),
            "{err}"
        );
        // Root is not subject to the unprivileged switches.
        assert!(check_sysctls(&read, true).is_ok());
        let none = |p: &str| p.ends_with("max_user_namespaces").then(|| "0".to_owned());
        assert!(check_sysctls(&none, true).is_err());
    }
}
