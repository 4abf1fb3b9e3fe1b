//! The unprivileged user the tests run kiln as, created once (idempotently) when the tests run
//! as root. `useradd -m` on Debian also allocates /etc/subuid and /etc/subgid ranges.
use std::process::Command;
use std::sync::Mutex;

/// The test user's name.
pub const TEST_USER: &str = "kiln-test-user";

static LOCK: Mutex<()> = Mutex::new(());

/// Creates the test user (with subordinate ids) if missing; `Err` says why it cannot.
pub fn ensure_test_user() -> Result<(), String> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !rustix::process::geteuid().is_root() {
        return Err("not running as root, so no test user can be created".into());
    }
    let exists = Command::new("id")
        .arg(TEST_USER)
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        let out = Command::new("useradd")
            .args(["-m", TEST_USER])
            .output()
            .map_err(|e| e.to_string())?;
        // Another test process may have created it meanwhile.
        let exists_now = Command::new("id")
            .arg(TEST_USER)
            .output()
            .is_ok_and(|o| o.status.success());
        if !out.status.success() && !exists_now {
            return Err(format!(
                "useradd failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if !text
            .lines()
            .any(|l| l.starts_with(&format!("{TEST_USER}:")))
        {
            let flag = if file.ends_with("uid") {
                "--add-subuids"
            } else {
                "--add-subgids"
            };
            let out = Command::new("usermod")
                .args([flag, "200000-265535", TEST_USER])
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "usermod failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    Ok(())
}
