//! The network of a RUN step ([`super::Network`]) and `pasta`, which connects the step's own
//! network namespace to the outside.
//!
//! - `Network::Default`: the helper unshares a network namespace (owned by the step's user
//!   namespace), and kiln attaches `pasta` (package `passt`) to it before the step starts:
//!   pasta creates a tap interface in the namespace with the host's address and routes
//!   (`--config-net`) and relays the step's TCP, UDP and ICMP through ordinary sockets of the
//!   caller on the host. So outbound connections work rootless (`apt-get`, `pip`, `curl`, `git`
//!   need no proxy settings), while the host's loopback (`127.0.0.1`, `::1`) and its abstract
//!   unix sockets, which belong to the host's network namespace, stay out of reach:
//!   `--no-map-gw` stops pasta from mapping the gateway address to the host's loopback, and
//!   `-t none -u none -T none -U none` forwards no port in either direction (pasta's default,
//!   `auto`, would forward every port bound on the host's loopback into the step). This is
//!   podman's rootless `pasta` network without its port forwarding.
//! - `Network::None`: the same namespace with only `lo`; nothing is attached.
//! - `Network::Host`: no network namespace; the step shares the caller's (an entitlement:
//!   `--allow network.host`, checked by the builder).
//!
//! pasta runs in the foreground as kiln's child with `PR_SET_PDEATHSIG`, so it dies with kiln;
//! it is killed when the step ends. Its pid file (`-P`) is written once the namespace is
//! configured, which is what kiln waits for before letting the step start.
use super::error::{Result, SandboxError};
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The program that connects a step's network namespace to the host's network.
pub(crate) const PASTA: &str = "pasta";

/// How long pasta may take to configure the namespace.
const PASTA_READY: Duration = Duration::from_secs(20);

/// What to tell the user when the default network cannot be set up here.
const ALTERNATIVES: &str = "or build without it: `--network none` (no network for RUN steps) or \
     `--network host --allow network.host` (RUN steps share the host's network, loopback \
     services included)";

/// Checks that a step with the default network can be set up here: `pasta` (`given`, else
/// found on `search_path`) is executable and the caller can open `tun` (pasta opens it inside
/// the step's user namespace, where only its permission bits count). Returns pasta's path.
pub(crate) fn check(given: Option<&Path>, search_path: &OsStr, tun: &Path) -> Result<PathBuf> {
    let found = match given {
        Some(p) => rustix::fs::access(p, rustix::fs::Access::EXEC_OK)
            .is_ok()
            .then(|| p.to_owned()),
        None => super::idmap::find_program(search_path, PASTA),
    };
    let Some(pasta) = found else {
        let place = given.map_or("on PATH".to_owned(), |p| format!("at `{}`", p.display()));
        return Err(SandboxError::NetworkUnavailable {
            reason: format!(
                "`{PASTA}` was not found {place}; install it (Debian and Ubuntu: `apt-get install \
                 passt`; Fedora: `dnf install passt`), {ALTERNATIVES}"
            ),
        });
    };
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(tun) {
        return Err(SandboxError::NetworkUnavailable {
            reason: format!(
                "`{}` cannot be opened ({e}); RUN steps get their own network through pasta, \
                 which needs it readable and writable by the building user, as distributions \
                 ship it (`chmod 0666 {}`, mode `crw-rw-rw-`; `modprobe tun` if it is missing), \
                 {ALTERNATIVES}",
                tun.display(),
                tun.display()
            ),
        });
    }
    Ok(pasta)
}

/// A running pasta attached to one step's namespaces; killed and reaped when dropped.
pub(crate) struct Pasta {
    child: Child,
}

impl Drop for Pasta {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pasta {
    /// Attaches pasta to the network and user namespaces of process `pid` (the helper, after it
    /// unshared them and its id maps are written) and waits until the namespace is configured.
    /// `dir` receives pasta's pid file and log.
    pub(crate) fn start(exe: &Path, pid: u32, dir: &Path) -> Result<Pasta> {
        let pid_file = dir.join("pasta.pid");
        let log = dir.join("pasta.log");
        let log_file = std::fs::File::create(&log).map_err(|source| SandboxError::Io {
            action: "create",
            path: log.clone(),
            source,
        })?;
        let mut cmd = Command::new(exe);
        cmd.args(["--foreground", "--quiet", "--config-net", "--no-map-gw"])
            // No port forwarding at all: `auto` would bind the host's loopback ports in the
            // namespace (-T/-U) and the namespace's ports on the host (-t/-u).
            .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
            .arg("--netns")
            .arg(format!("/proc/{pid}/ns/net"))
            .arg("--userns")
            .arg(format!("/proc/{pid}/ns/user"))
            .arg("--pid")
            .arg(&pid_file);
        if rustix::process::geteuid().is_root() {
            // As root pasta drops to `nobody` by default, who may not open root's namespaces.
            cmd.args(["--runas", "0"]);
        }
        cmd.env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        // SAFETY: the hook runs between fork and exec and only calls prctl, which is
        // async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| SandboxError::Io {
            action: "start",
            path: exe.to_owned(),
            source,
        })?;
        let mut pasta = Pasta { child };
        let started = Instant::now();
        loop {
            if std::fs::metadata(&pid_file).is_ok_and(|m| m.len() > 0) {
                return Ok(pasta);
            }
            let failed = |status: String| SandboxError::NetworkSetup {
                status,
                log: read_log(&log),
            };
            match pasta.child.try_wait() {
                Ok(Some(status)) => return Err(failed(status.to_string())),
                Ok(None) if started.elapsed() > PASTA_READY => {
                    return Err(failed(format!(
                        "not ready after {} seconds",
                        PASTA_READY.as_secs()
                    )))
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => return Err(failed(e.to_string())),
            }
        }
    }
}

/// pasta's messages, without the complaints about a missing syslog.
fn read_log(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(64 * 1024).read_to_string(&mut text);
    }
    text.lines()
        .filter(|l| !l.starts_with("Failed to send") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The step's `/etc/resolv.conf` for a network of its own: the host's, unless every nameserver
/// in it is on the host's loopback (systemd-resolved's `127.0.0.53`, a local dnsmasq), which the
/// step cannot reach; then systemd-resolved's list of upstream servers (`upstream`, from
/// `/run/systemd/resolve/resolv.conf`), as Docker does, when there is one.
pub(crate) fn resolv_conf(host: &[u8], upstream: Option<&[u8]>) -> Vec<u8> {
    let servers = |text: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(text)
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                (words.next() == Some("nameserver"))
                    .then(|| words.next().map(str::to_owned))
                    .flatten()
            })
            .collect()
    };
    let loopback = |s: &String| {
        s.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    };
    let host_servers = servers(host);
    if !host_servers.is_empty() && host_servers.iter().all(loopback) {
        if let Some(up) = upstream {
            let up_servers = servers(up);
            if !up_servers.is_empty() && !up_servers.iter().any(loopback) {
                return up.to_vec();
            }
        }
    }
    host.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_keeps_a_reachable_host_resolver() {
        let host = b"nameserver 10.255.255.53\n";
        assert_eq!(
            resolv_conf(host, Some(b"nameserver 9.9.9.9\n")),
            host.to_vec()
        );
        let mixed = b"nameserver 127.0.0.53\nnameserver 192.0.2.53\n";
        assert_eq!(resolv_conf(mixed, None), mixed.to_vec());
    }

    #[test]
    fn resolv_conf_replaces_a_loopback_resolver_by_the_upstream_list() {
        let host = b"# systemd-resolved\nnameserver 127.0.0.53\noptions edns0\n";
        let up = b"nameserver 192.0.2.53\nnameserver 2001:db8::53\n";
        assert_eq!(resolv_conf(host, Some(up)), up.to_vec());
        assert_eq!(resolv_conf(host, None), host.to_vec());
        // An upstream list that is itself loopback is no better.
        assert_eq!(resolv_conf(host, Some(b"nameserver ::1\n")), host.to_vec());
    }

    #[test]
    fn check_names_what_is_missing_and_the_alternatives() {
        let dir = tempfile::tempdir().unwrap();
        let err = check(None, dir.path().as_os_str(), Path::new("/dev/net/tun"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`pasta` was not found"), "{err}");
        assert!(err.contains("apt-get install passt"), "{err}");
        assert!(err.contains("--network none"), "{err}");
        assert!(err.contains("--allow network.host"), "{err}");
        let fake = dir.path().join(PASTA);
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let err = check(None, dir.path().as_os_str(), &dir.path().join("no-tun"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no-tun` cannot be opened"), "{err}");
        assert!(err.contains("chmod 0666"), "{err}");
        assert_eq!(
            check(None, dir.path().as_os_str(), Path::new("/dev/null")).unwrap(),
            fake
        );
    }
}
