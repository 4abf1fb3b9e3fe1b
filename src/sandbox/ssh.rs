//! SSH agent forwarding for `RUN --mount=type=ssh` (`kiln build --ssh`), as BuildKit's
//! `session/sshforward/sshprovider` does it.
//!
//! - [`SshSource`]: what `--ssh ID=…` names: an agent's socket (`$SSH_AUTH_SOCK` for
//!   `default`), or private key files. Checked before the build: a socket must be a socket,
//!   a key must be one OpenSSH can read without a passphrase ([`SshError::KeyEncrypted`]).
//! - [`SshAgent`]: the agent a build talks to. For a socket, that socket. For key files, a
//!   private `ssh-agent -D` holding only those keys (their bytes given to `ssh-add -` over a
//!   pipe, never copied), its socket in a fresh 0700 directory, killed when the build ends. BuildKit runs an in-process keyring (`agent.NewKeyring()` of
//!   `golang.org/x/crypto/ssh/agent`); kiln runs OpenSSH's own agent instead of a hand-written
//!   one, so every key format and signature flag OpenSSH knows (RSA `rsa-sha2-256`/`512`,
//!   ed25519, ECDSA, PEM and `openssh-key-v1` files) works as with `ssh-add`. It costs one
//!   process per build, started when a step first needs it, not per step: listening and
//!   holding one ed25519 key in 34–187 ms, median 50 ms (10 runs on the shared 2-core test
//!   machine at load 13).
//! - `Forward`: for one step, a socket kiln listens on (in the step's run directory, never
//!   in the root filesystem), bound by the step's init process at the mount's target with its
//!   owner and mode. Each connection is relayed to the agent through a *read-only* filter:
//!   only "list identities" and "sign" reach the agent; adding, removing, locking and
//!   extensions are answered `SSH_AGENT_FAILURE`, as BuildKit's `readOnlyAgent` refuses them.
//!   Nothing of the agent is in the layer (the mount point is a stub removed after the step),
//!   the cache key (the planner keys the mount's text: its id, not the socket or keys) or
//!   the history (the RUN text).
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `--ssh ID=…` forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshSource {
    /// An agent's unix socket.
    Socket(PathBuf),
    /// Private key files, served by a private agent.
    Keys(Vec<PathBuf>),
}

/// Why an SSH source cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// A path that does not exist or cannot be read.
    #[error("`{}` cannot be read", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A socket given together with keys, or two sockets (BuildKit refuses both).
    #[error("give one agent socket, or key files, not both")]
    Mixed,
    /// A key file OpenSSH cannot read.
    #[error("`{}` is not a private key OpenSSH can read: {why}", path.display())]
    NotAKey {
        /// The file.
        path: PathBuf,
        /// What `ssh-keygen` said.
        why: String,
    },
    /// A key with a passphrase (there is no terminal to ask for it).
    #[error(
        "`{}` is encrypted with a passphrase: add it to your agent (`ssh-add {}`) and pass \
         `--ssh default`, or give a key without a passphrase",
        path.display(),
        path.display()
    )]
    KeyEncrypted {
        /// The file.
        path: PathBuf,
    },
    /// OpenSSH's `ssh-agent`, `ssh-add` or `ssh-keygen` is missing or failed to start.
    #[error("`{program}` (package openssh-client) is needed to forward key files")]
    Tool {
        /// The program.
        program: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The private agent did not start or refused a key.
    #[error("the private ssh-agent for key files failed: {why}")]
    Agent {
        /// What went wrong.
        why: String,
    },
}

/// BuildKit reads at most this much of a key file (`io.LimitedReader{N: 100 * 1024}`).
const MAX_KEY_FILE: u64 = 100 * 1024;

impl SshSource {
    /// BuildKit's `toDialer`: one socket, or key files; each path checked now.
    pub fn from_paths(paths: &[PathBuf]) -> Result<SshSource, SshError> {
        use std::os::unix::fs::FileTypeExt;
        let mut sockets = Vec::new();
        let mut keys = Vec::new();
        for p in paths {
            let md = std::fs::metadata(p).map_err(|source| SshError::Read {
                path: p.clone(),
                source,
            })?;
            if md.file_type().is_socket() {
                sockets.push(p.clone());
            } else {
                check_key(p)?;
                keys.push(p.clone());
            }
        }
        match (sockets.len(), keys.is_empty()) {
            (0, false) => Ok(SshSource::Keys(keys)),
            (1, true) => Ok(SshSource::Socket(sockets.remove(0))),
            _ => Err(SshError::Mixed),
        }
    }
}

/// Whether a private key is encrypted: an `openssh-key-v1` key whose cipher is not `none`,
/// or a PEM key marked `Proc-Type: 4,ENCRYPTED` or `ENCRYPTED PRIVATE KEY` (PKCS#8).
fn encrypted(pem: &[u8]) -> bool {
    use base64::Engine as _;
    let text = String::from_utf8_lossy(pem);
    if text.contains("Proc-Type: 4,ENCRYPTED") || text.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        return true;
    }
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(body.trim()) else {
        return false;
    };
    // PROTOCOL.key: "openssh-key-v1\0", then string ciphername (u32 length, bytes).
    let Some(rest) = raw.strip_prefix(b"openssh-key-v1\0".as_slice()) else {
        return false;
    };
    let Some(len) = rest
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    else {
        return false;
    };
    rest.get(4..4 + len as usize) != Some(b"none".as_slice())
}

/// Reads a key file (at most BuildKit's 100 KiB).
fn read_key(path: &Path) -> Result<Vec<u8>, SshError> {
    let read = |source| SshError::Read {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(SshError::NotAKey {
            path: path.to_owned(),
            why: format!("larger than {MAX_KEY_FILE} bytes"),
        });
    }
    Ok(bytes)
}

/// Runs an OpenSSH `program` with `bytes` on its stdin (a pipe, so the key's file mode does
/// not matter, as BuildKit reads a key whatever its mode); its stderr when it fails.
fn with_stdin(
    program: &'static str,
    args: &[&str],
    env: &[(&str, &Path)],
    bytes: &[u8],
) -> Result<Result<(), String>, SshError> {
    let tool = |source| SshError::Tool { program, source };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("SSH_ASKPASS_REQUIRE", "never")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(tool)?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(bytes);
    }
    let out = child.wait_with_output().map_err(tool)?;
    if out.status.success() {
        return Ok(Ok(()));
    }
    Ok(Err(String::from_utf8_lossy(&out.stderr).trim().to_string()))
}

/// A key file OpenSSH reads without a passphrase: not encrypted, and `ssh-keygen -y` derives
/// its public key.
fn check_key(path: &Path) -> Result<(), SshError> {
    let bytes = read_key(path)?;
    if encrypted(&bytes) {
        return Err(SshError::KeyEncrypted {
            path: path.to_owned(),
        });
    }
    let args = ["-y", "-P", "", "-f", "/dev/stdin"];
    with_stdin("ssh-keygen", &args, &[], &bytes)?.map_err(|why| SshError::NotAKey {
        path: path.to_owned(),
        why,
    })
}

/// The agent one `--ssh` id is served by, for the length of a build.
#[derive(Debug)]
pub struct SshAgent {
    socket: PathBuf,
    private: Option<(Child, tempfile::TempDir)>,
}

impl SshAgent {
    /// Connects `source`: a socket is used as it is; key files are loaded into a private
    /// `ssh-agent` (killed when this value is dropped).
    pub fn start(source: &SshSource) -> Result<SshAgent, SshError> {
        let keys = match source {
            SshSource::Socket(p) => {
                return Ok(SshAgent {
                    socket: p.clone(),
                    private: None,
                })
            }
            SshSource::Keys(keys) => keys,
        };
        let agent_err = |why: String| SshError::Agent { why };
        let dir = tempfile::Builder::new()
            .prefix("kiln-ssh-")
            .tempdir()
            .map_err(|e| agent_err(format!("cannot create its directory: {e}")))?;
        let socket = dir.path().join("agent");
        let mut cmd = Command::new("ssh-agent");
        cmd.arg("-D").arg("-a").arg(&socket);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|source| SshError::Tool {
            program: "ssh-agent",
            source,
        })?;
        let mut agent = SshAgent {
            socket,
            private: Some((child, dir)),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&agent.socket).is_err() {
            if let Some((c, _)) = &mut agent.private {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(agent_err(format!("ssh-agent exited: {status}")));
                }
            }
            if Instant::now() > deadline {
                return Err(agent_err("ssh-agent did not listen within 10s".into()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for key in keys {
            let bytes = read_key(key)?;
            let env = [("SSH_AUTH_SOCK", agent.socket.as_path())];
            with_stdin("ssh-add", &["-q", "-"], &env, &bytes)?
                .map_err(|said| agent_err(format!("ssh-add {}: {said}", key.display())))?;
        }
        Ok(agent)
    }

    /// The agent's socket on the host.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        if let Some((child, _dir)) = &mut self.private {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The child dies with kiln, as the sandbox helper does.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The agent protocol's message numbers (draft-miller-ssh-agent, section 5.1).
const SSH_AGENT_FAILURE: u8 = 5;
const SSH_AGENTC_REQUEST_IDENTITIES: u8 = 11;
const SSH_AGENTC_SIGN_REQUEST: u8 = 13;
/// OpenSSH's `AGENT_MAX_LEN`: a longer message is a protocol error.
const AGENT_MAX_LEN: u32 = 256 * 1024;

/// One step's forwarded agent: a socket kiln listens on and relays, read-only, to the agent.
/// Dropping it stops listening; connections still open end with the step's processes.
#[derive(Debug)]
pub(crate) struct Forward {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forward {
    /// Listens at `dir/name` (`dir` private to the caller) and relays to `agent`.
    pub(crate) fn start(agent: &Path, dir: &Path, name: &str) -> io::Result<Forward> {
        // A unix socket path is limited to 107 bytes; the run directory may be deeper. Bind
        // through the directory's descriptor, whose magic link is short.
        let d = std::fs::File::open(dir)?;
        let short = PathBuf::from(format!("/proc/self/fd/{}/{name}", d.as_raw_fd()));
        let listener = UnixListener::bind(&short)?;
        drop(d);
        let path = dir.join(name);
        let stop = Arc::new(AtomicBool::new(false));
        let (agent, flag) = (agent.to_owned(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("kiln-ssh-forward".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let agent = agent.clone();
                    let _ = std::thread::Builder::new()
                        .name("kiln-ssh-conn".into())
                        .spawn(move || {
                            let _ = relay(conn, &agent);
                        });
                }
            })?;
        Ok(Forward {
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// One relay for each `MountKind::Ssh` of `spec`, in order, listening in `dir` (created,
    /// 0700, when there is one).
    pub(crate) fn for_spec(spec: &super::RunSpec, dir: &Path) -> super::Result<Vec<Forward>> {
        let mut out = Vec::new();
        for m in &spec.mounts {
            let super::MountKind::Ssh { agent, .. } = &m.kind else {
                continue;
            };
            let name = out.len().to_string();
            let io = |action: &'static str, path: PathBuf| {
                move |source| super::SandboxError::Io {
                    action,
                    path,
                    source,
                }
            };
            if out.is_empty() {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(dir)
                    .map_err(io("create", dir.to_owned()))?;
            }
            out.push(Forward::start(agent, dir, &name).map_err(io("listen on", dir.join(&name)))?);
        }
        Ok(out)
    }

    /// The listening socket on the host (what the step's init binds at the target).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop: it sees the flag and ends.
        let d = self.path.parent().and_then(|p| std::fs::File::open(p).ok());
        let woke = match (d, self.path.file_name()) {
            (Some(d), Some(name)) => {
                let short = PathBuf::from(format!("/proc/self/fd/{}", d.as_raw_fd())).join(name);
                UnixStream::connect(short).is_ok()
            }
            _ => false,
        };
        // Not woken (the socket was removed): the thread stays blocked; leave it, never hang.
        if let Some(t) = self.thread.take().filter(|_| woke) {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one agent message (length, then that many bytes); `None` at a clean end of stream.
fn read_message(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = u32::from_be_bytes(len);
    if n == 0 || n > AGENT_MAX_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("agent message of {n} bytes"),
        ));
    }
    let mut body = vec![0u8; n as usize];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

fn write_message(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let n = u32::try_from(body.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    w.write_all(&n.to_be_bytes())?;
    w.write_all(body)
}

/// Whether a request may reach the agent: listing keys and signing only.
fn allowed(body: &[u8]) -> bool {
    matches!(
        body.first(),
        Some(&SSH_AGENTC_REQUEST_IDENTITIES | &SSH_AGENTC_SIGN_REQUEST)
    )
}

/// Relays one client connection: each allowed request to the agent and its one answer back;
/// anything else is answered `SSH_AGENT_FAILURE` without reaching the agent.
fn relay(mut client: UnixStream, agent: &Path) -> io::Result<()> {
    let mut upstream: Option<UnixStream> = None;
    while let Some(req) = read_message(&mut client)? {
        if !allowed(&req) {
            write_message(&mut client, &[SSH_AGENT_FAILURE])?;
            continue;
        }
        let up = match &mut upstream {
            Some(u) => u,
            None => upstream.insert(UnixStream::connect(agent)?),
        };
        write_message(up, &req)?;
        let Some(answer) = read_message(up)? else {
            return Ok(());
        };
        write_message(&mut client, &answer)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake agent answering every request with `[type + 100]`, recording what it got.
    fn fake_agent(dir: &Path) -> (PathBuf, std::sync::mpsc::Receiver<u8>) {
        let path = dir.join("upstream");
        let l = UnixListener::bind(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let mut c = c.unwrap();
                let tx = tx.clone();
                std::thread::spawn(move || {
                    while let Ok(Some(m)) = read_message(&mut c) {
                        tx.send(m[0]).unwrap();
                        write_message(&mut c, &[m[0] + 100]).unwrap();
                    }
                });
            }
        });
        (path, rx)
    }

    #[test]
    fn only_listing_and_signing_reach_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let (up, seen) = fake_agent(dir.path());
        let fwd = Forward::start(&up, dir.path(), "fwd").unwrap();
        let mut c = UnixStream::connect(fwd.path()).unwrap();
        // list, add identity (17), remove all (19), lock (22), extension (27), sign
        for (req, answer) in [
            (11u8, 111u8),
            (17, SSH_AGENT_FAILURE),
            (19, SSH_AGENT_FAILURE),
            (22, SSH_AGENT_FAILURE),
            (27, SSH_AGENT_FAILURE),
            (13, 113),
        ] {
            write_message(&mut c, &[req, 0, 0]).unwrap();
            assert_eq!(
                read_message(&mut c).unwrap().unwrap(),
                vec![answer],
                "{req}"
            );
        }
        assert_eq!(seen.try_iter().collect::<Vec<_>>(), vec![11, 13]);
        drop(c);
        let path = fwd.path().to_owned();
        drop(fwd);
        assert!(!path.exists(), "the socket is removed with the forward");
    }

    #[test]
    fn an_oversized_message_closes_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (up, seen) = fake_agent(dir.path());
        let fwd = Forward::start(&up, dir.path(), "fwd").unwrap();
        let mut c = UnixStream::connect(fwd.path()).unwrap();
        c.write_all(&(AGENT_MAX_LEN + 1).to_be_bytes()).unwrap();
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).unwrap();
        assert!(buf.is_empty());
        assert_eq!(seen.try_iter().count(), 0);
    }

    #[test]
    fn a_deep_directory_still_gets_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(100)).join("e".repeat(100));
        std::fs::create_dir_all(&deep).unwrap();
        let (up, _seen) = fake_agent(dir.path());
        let fwd = Forward::start(&up, &deep, "fwd").unwrap();
        assert!(fwd.path().as_os_str().len() > 108);
        let d = std::fs::File::open(&deep).unwrap();
        let short = PathBuf::from(format!("/proc/self/fd/{}/fwd", d.as_raw_fd()));
        let mut c = UnixStream::connect(short).unwrap();
        write_message(&mut c, &[11]).unwrap();
        assert_eq!(read_message(&mut c).unwrap().unwrap(), vec![111]);
    }

    #[test]
    fn encrypted_keys_are_recognised_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        for (pass, want) in [("", false), ("a passphrase", true)] {
            let key = dir.path().join(format!("k{}", pass.len()));
            let made = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", pass, "-f"])
                .arg(&key)
                .status()
                .unwrap();
            assert!(made.success());
            assert_eq!(encrypted(&std::fs::read(&key).unwrap()), want, "{pass:?}");
        }
        let pem = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(encrypted(pem));
        assert!(encrypted(
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
        ));
        assert!(!encrypted(b"not a key"));
    }

    #[test]
    fn a_key_readable_by_others_is_still_a_key() {
        // BuildKit reads a key whatever its mode; OpenSSH refuses a 0644 key file, so kiln
        // hands the bytes over a pipe.
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let source = SshSource::from_paths(std::slice::from_ref(&key)).unwrap();
        let agent = SshAgent::start(&source).unwrap();
        let listed = Command::new("ssh-add")
            .arg("-L")
            .env("SSH_AUTH_SOCK", agent.socket())
            .output()
            .unwrap();
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        assert_eq!(String::from_utf8_lossy(&listed.stdout), public);
    }

    #[test]
    fn sockets_and_keys_are_classified_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let _l = UnixListener::bind(&sock).unwrap();
        assert_eq!(
            SshSource::from_paths(std::slice::from_ref(&sock)).unwrap(),
            SshSource::Socket(sock.clone())
        );
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "not a key").unwrap();
        let e = SshSource::from_paths(std::slice::from_ref(&junk)).unwrap_err();
        assert!(matches!(e, SshError::NotAKey { .. }), "{e}");
        let e = SshSource::from_paths(&[sock.clone(), sock]).unwrap_err();
        assert!(matches!(e, SshError::Mixed), "{e}");
        let e = SshSource::from_paths(&[dir.path().join("missing")]).unwrap_err();
        assert!(matches!(e, SshError::Read { .. }), "{e}");
    }
}
