//! The unprivileged user the tests run kiln as, created once (idempotently) when the tests run
//! as root. `useradd -m` on Debian also allocates /etc/subuid and /etc/subgid ranges.
use std::os::unix::fs::PermissionsExt;
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

/// Runs the ignored test `test` of this test binary as the test user, through `runuser` (and
/// `wrapper`, a command prefix such as `unshare --map-root-user`), with
/// only the environment `env` (plus `TMPDIR=/tmp` and `KILN_IT_KILN`, a copy of the kiln binary
/// the user can execute). Returns whether it passed, and its output.
pub fn run_test_as_test_user(
    test: &str,
    env: &[(&str, String)],
    wrapper: &[&str],
) -> (bool, String) {
    let dir = tempfile::Builder::new()
        .prefix("kiln-it-bin-")
        .tempdir()
        .expect("temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let test_bin = dir.path().join("it");
    let kiln = dir.path().join("kiln");
    std::fs::copy(std::env::current_exe().expect("test binary"), &test_bin)
        .expect("copy the test binary");
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &kiln).expect("copy kiln");
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", TEST_USER, "--"])
        .args(wrapper)
        .args(["env", "-i", "TMPDIR=/tmp"]);
    cmd.arg(format!("KILN_IT_KILN={}", kiln.display()));
    for (key, value) in env {
        cmd.arg(format!("{key}={value}"));
    }
    let out = cmd
        .arg(&test_bin)
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .current_dir("/tmp")
        .output()
        .expect("runuser");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = out.status.success() && text.contains("1 passed");
    (passed, text)
}
