//! Git servers on 127.0.0.1 for the git-source tests: the real `git daemon`, and the real
//! `git http-backend` (CGI) behind a small HTTP/1.0 server here that asks for basic auth (and
//! answers `/v2/` like a registry, so `kiln login` can check and store the credential). Both are
//! stopped on drop.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::free_port;

const GIT_CORE: &str = "/usr/lib/git-core";

/// Whether git and its daemon and http-backend are here; missing fails under `CI=true`.
pub fn available() -> bool {
    let ok = Path::new(GIT_CORE).join("git-daemon").is_file()
        && Path::new(GIT_CORE).join("git-http-backend").is_file()
        && super::need("git");
    if !ok && std::env::var("CI").as_deref() == Ok("true") {
        panic!("git, git-daemon and git-http-backend are required in CI");
    }
    ok
}

/// Runs git in `dir` with a fixed identity and no user configuration; returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=kiln", "-c", "user.email=kiln@example.org"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
        .output()
        .unwrap();
    super::assert_success(&out, &args);
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A work tree at `dir` with `files` committed on `main`; returns the commit.
pub fn repo(dir: &Path, files: &[(&str, &str)]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q"]);
    commit(dir, files, "first")
}

/// Writes `files` (a `@` prefix makes a symlink to the rest) and commits them; the commit id.
pub fn commit(dir: &Path, files: &[(&str, &str)], msg: &str) -> String {
    for (name, content) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&p);
        match content.strip_prefix('@') {
            Some(target) => std::os::unix::fs::symlink(target, &p).unwrap(),
            None => std::fs::write(&p, content).unwrap(),
        }
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", msg]);
    git(dir, &["rev-parse", "HEAD"])
}

/// A bare copy of the work tree `src` at `dest` (what the servers export).
pub fn bare(src: &Path, dest: &Path) {
    let out = Command::new("git")
        .args(["clone", "-q", "--bare", "--no-local"])
        .arg(src)
        .arg(dest)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    super::assert_success(&out, &"git clone --bare");
}

/// Pushes `main` and tags of the work tree `src` to the bare `dest`.
pub fn push(src: &Path, dest: &Path) {
    git(
        src,
        &[
            "push",
            "-q",
            "--force",
            "--tags",
            dest.to_str().unwrap(),
            "main",
        ],
    );
}

fn wait_port(port: u16, child: &mut Child) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("the git server exited: {s}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the git server did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `git daemon` exporting every repository under `base`.
pub struct Daemon {
    child: Child,
    pub port: u16,
}

impl Daemon {
    pub fn start(base: &Path) -> Daemon {
        let port = free_port();
        let mut child = Command::new(Path::new(GIT_CORE).join("git-daemon"))
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(port, &mut child);
        Daemon { child, port }
    }

    /// `git://127.0.0.1:PORT/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `git http-backend` behind basic auth for one user.
pub struct Http {
    pub port: u16,
    stop: Arc<AtomicBool>,
    /// Requests answered 401.
    pub unauthorized: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Http {
    pub fn start(base: &Path, user: &str, password: &str) -> Http {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let unauthorized = Arc::new(AtomicUsize::new(0));
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let (s, u, base) = (stop.clone(), unauthorized.clone(), base.to_path_buf());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (want, base, u) = (want.clone(), base.clone(), u.clone());
                        std::thread::spawn(move || {
                            let _ = serve(stream, &want, &base, &u);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Http {
            port,
            stop,
            unauthorized,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// `127.0.0.1:PORT`, as `kiln login` takes it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    want: &str,
    base: &Path,
    unauthorized: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut r = BufReader::new(stream.try_clone()?);
    let mut w = stream;
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end().to_string();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if header("authorization").as_deref() != Some(want) {
        unauthorized.fetch_add(1, Ordering::SeqCst);
        w.write_all(b"HTTP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if path == "/v2/" {
        w.write_all(
            b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )?;
        return Ok(());
    }
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    }
    let mut cgi = Command::new(Path::new(GIT_CORE).join("git-http-backend"))
        .env_clear()
        .env("GIT_PROJECT_ROOT", base)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_USER", "user")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env(
            "HTTP_CONTENT_ENCODING",
            header("content-encoding").unwrap_or_default(),
        )
        .env("GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = cgi.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut out = Vec::new();
    cgi.stdout.take().unwrap().read_to_end(&mut out)?;
    let _ = writer.join();
    cgi.wait()?;
    let split = out
        .windows(4)
        .position(|x| x == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|x| x == b"\n\n").map(|i| (i, 2)));
    let (head, rest) = match split {
        Some((i, n)) => (
            String::from_utf8_lossy(&out[..i]).into_owned(),
            out[i + n..].to_vec(),
        ),
        None => (String::new(), out),
    };
    let mut status = "200 OK".to_string();
    let mut resp = String::new();
    for h in head.lines() {
        match h.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_string(),
            Some(_) => {
                resp.push_str(h.trim_end());
                resp.push_str("\r\n");
            }
            None => {}
        }
    }
    w.write_all(
        format!(
            "HTTP/1.0 {status}\r\n{resp}Content-Length: {}\r\n\r\n",
            rest.len()
        )
        .as_bytes(),
    )?;
    w.write_all(&rest)?;
    Ok(())
}

/// Every file under `dir`, recursively.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}
