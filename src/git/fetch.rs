//! One commit of a repository, fetched shallowly and checked out with the `git` CLI, as
//! BuildKit's `source/git/source.go` does: `git init`, `git fetch --depth=1 --no-tags origin
//! REF` (a full commit id the server does not advertise falls back to a full fetch, as
//! BuildKit's unshallow path), `git checkout` of the fetched commit, then `git submodule update
//! --init --recursive --depth=1`; the `.git` directory is dropped unless it is kept
//! (`keep-git-dir`).
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::url::is_full_sha;
use super::{GitError, GitRef};
use crate::registry::Credential;

/// How a fetch is bounded and authenticated.
#[derive(Clone)]
pub struct FetchOptions {
    /// Keep the `.git` directory in the checkout (BuildKit's `keep-git-dir`).
    pub keep_git_dir: bool,
    /// The credential for the source's host (https/http only), from kiln's credential store.
    /// Without one, git's own configuration (credential helpers) answers.
    pub credential: Option<Credential>,
    /// The longest any one git command may run.
    pub timeout: Duration,
    /// The most bytes the scratch directory may hold.
    pub max_bytes: u64,
}

impl Default for FetchOptions {
    fn default() -> FetchOptions {
        FetchOptions {
            keep_git_dir: false,
            credential: None,
            timeout: Duration::from_secs(600),
            max_bytes: 8 << 30,
        }
    }
}

impl std::fmt::Debug for FetchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchOptions")
            .field("keep_git_dir", &self.keep_git_dir)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout", &self.timeout)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

/// A checked-out commit.
#[derive(Debug, Clone)]
pub struct Checkout {
    /// The work tree (the repository's root; the `:subdir` is [`Checkout::context`]).
    pub root: PathBuf,
    /// The directory the source names: the root, or its `:subdir`, checked to be a directory
    /// inside the root.
    pub context: PathBuf,
    /// The full commit id.
    pub commit: String,
    /// The commit's tree id (`HEAD^{tree}`), for provenance.
    pub tree: String,
}

/// Fetches `r` into `dir` (a new, empty scratch directory the caller removes) and checks it
/// out. The error names the URL and the ref.
pub fn fetch(r: &GitRef, dir: &Path, opts: &FetchOptions) -> Result<Checkout, GitError> {
    let root = dir.join("tree");
    let git = Git {
        r,
        dir,
        opts,
        cwd: root.clone(),
    };
    std::fs::create_dir_all(&root).map_err(|e| git.io("cannot create the checkout", e))?;
    let empty_template = dir.join("template");
    std::fs::create_dir_all(&empty_template).map_err(|e| git.io("cannot create", e))?;
    let mut init = vec!["init", "-q"];
    let template = format!("--template={}", empty_template.display());
    init.push(&template);
    git.run(&init)?;
    git.run(&["remote", "add", "origin", &r.remote])?;
    let wanted = r.reference_or_head();
    let fetched = git.run(&["fetch", "-q", "--depth=1", "--no-tags", "origin", wanted]);
    let commit = match fetched {
        Ok(_) => git.run(&["rev-parse", "--verify", "FETCH_HEAD^{commit}"])?,
        Err(e) => {
            // A commit the server does not let us ask for by id, or an abbreviated id: fetch
            // everything and look for it, as BuildKit does for a commit that is not advertised.
            let looks_like_sha = wanted.len() >= 7 && wanted.bytes().all(|b| b.is_ascii_hexdigit());
            if !looks_like_sha {
                return Err(e);
            }
            git.run(&["fetch", "-q", "--tags", "origin"])?;
            git.run(&[
                "rev-parse",
                "--verify",
                "-q",
                &format!("{wanted}^{{commit}}"),
            ])
            .map_err(|_| git.fail(format!("no commit `{wanted}` in the repository")))?
        }
    };
    let commit = commit.trim().to_string();
    if !is_full_sha(&commit) {
        return Err(git.fail(format!("git answered `{commit}` for the commit")));
    }
    if let Some(c) = &r.commit {
        if *c != commit {
            return Err(git.fail(format!("the ref is at commit {commit}, not {c}")));
        }
    }
    git.run(&["checkout", "-q", "--detach", &commit])?;
    let tree = git
        .run(&["rev-parse", "--verify", "HEAD^{tree}"])?
        .trim()
        .to_string();
    if root.join(".gitmodules").is_file() {
        git.run(&[
            "submodule",
            "update",
            "-q",
            "--init",
            "--recursive",
            "--depth=1",
        ])?;
    }
    if !opts.keep_git_dir {
        remove_git_dirs(&root).map_err(|e| git.io("cannot remove .git", e))?;
    }
    let context = match &r.subdir {
        None => root.clone(),
        Some(s) => subdir(r, &root, s)?,
    };
    Ok(Checkout {
        root,
        context,
        commit,
        tree,
    })
}

/// The `:subdir` inside `root`: relative, no `..`, and a real directory once symlinks are
/// resolved (a symlink pointing out of the checkout is refused).
fn subdir(r: &GitRef, root: &Path, s: &str) -> Result<PathBuf, GitError> {
    let fail = |reason: &str| GitError::Subdir {
        url: r.source_url(),
        subdir: s.to_string(),
        reason: reason.to_string(),
    };
    if s.split('/').any(|c| c == "..") {
        return Err(fail("leaves the repository"));
    }
    let real_root = root
        .canonicalize()
        .map_err(|_| fail("cannot be resolved"))?;
    let p = root
        .join(s)
        .canonicalize()
        .map_err(|_| fail("does not exist in the repository"))?;
    if !p.starts_with(&real_root) {
        return Err(fail("leaves the repository (through a symlink)"));
    }
    if !p.is_dir() {
        return Err(fail("is not a directory"));
    }
    Ok(p)
}

/// Removes every `.git` (the repository's directory, submodules' gitlink files): git never
/// tracks an entry of that name, so each one is git's own.
fn remove_git_dirs(root: &Path) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let ft = e.file_type()?;
            if e.file_name() == ".git" {
                if ft.is_dir() {
                    std::fs::remove_dir_all(e.path())?;
                } else {
                    std::fs::remove_file(e.path())?;
                }
            } else if ft.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(())
}

/// The git commands of one fetch.
struct Git<'a> {
    r: &'a GitRef,
    dir: &'a Path,
    opts: &'a FetchOptions,
    cwd: PathBuf,
}

impl Git<'_> {
    fn fail(&self, detail: String) -> GitError {
        GitError::Fetch {
            url: self.r.source_url(),
            reference: self.r.reference_or_head().to_string(),
            detail,
        }
    }

    fn io(&self, what: &str, source: std::io::Error) -> GitError {
        GitError::Io {
            url: self.r.source_url(),
            what: what.to_string(),
            source,
        }
    }

    /// `git` with the hardening every command gets.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("git");
        let file = if self.r.scheme == "file" {
            "always"
        } else {
            "never"
        };
        let config = [
            "core.hooksPath=/dev/null".to_string(),
            "core.fsmonitor=false".into(),
            "core.symlinks=true".into(),
            "submodule.recurse=false".into(),
            "protocol.allow=never".into(),
            "protocol.https.allow=always".into(),
            "protocol.http.allow=always".into(),
            "protocol.ssh.allow=always".into(),
            "protocol.git.allow=always".into(),
            format!("protocol.file.allow={file}"),
            "protocol.ext.allow=never".into(),
            "advice.detachedHead=false".into(),
            "init.defaultBranch=kiln".into(),
        ];
        for kv in &config {
            c.arg("-c").arg(kv);
        }
        c.args(args)
            .current_dir(&self.cwd)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_PROTOCOL_FROM_USER", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("LC_ALL", "C")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .env_remove("GIT_OBJECT_DIRECTORY")
            .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
            .env_remove("GIT_CONFIG_PARAMETERS")
            .env_remove("GIT_CONFIG_COUNT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if std::env::var_os("GIT_SSH_COMMAND").is_none() && std::env::var_os("GIT_SSH").is_none() {
            // No host-key or passphrase prompt on a terminal the build does not own.
            c.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
        if let Some(h) = self.auth_header() {
            // As BuildKit's GIT_AUTH_HEADER / GIT_AUTH_TOKEN: an `http.<origin>/.extraHeader`,
            // here through the environment (not the command line, not a file), for the
            // source's origin only.
            let key = format!("http.{}://{}/.extraHeader", self.r.scheme, self.r.host);
            c.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", key)
                .env("GIT_CONFIG_VALUE_0", format!("Authorization: {h}"));
        }
        c
    }

    /// The `Authorization` value for an http(s) source: the URL's own password, else the
    /// credential kiln's store has for the host.
    fn auth_header(&self) -> Option<String> {
        if !matches!(self.r.scheme.as_str(), "http" | "https") {
            return None;
        }
        let b64 =
            |u: &str, p: &str| base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        if let Some(p) = &self.r.password {
            return Some(format!(
                "Basic {}",
                b64(self.r.user.as_deref().unwrap_or(""), p)
            ));
        }
        match &self.opts.credential {
            Some(Credential::Basic { username, password }) => {
                Some(format!("Basic {}", b64(username, password)))
            }
            Some(Credential::RegistryToken(t)) => Some(format!("Bearer {t}")),
            Some(Credential::IdentityToken(_)) | None => None,
        }
    }

    /// Runs one git command within the time and size bounds; its stdout, or an error with the
    /// last lines of its stderr.
    fn run(&self, args: &[&str]) -> Result<String, GitError> {
        let mut child = self
            .command(args)
            .spawn()
            .map_err(|e| self.io("cannot run `git` (is git installed?)", e))?;
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let out_t = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = out.by_ref().take(1 << 20).read_to_end(&mut b);
            std::io::copy(&mut out, &mut std::io::sink()).ok();
            b
        });
        let err_t = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = err.by_ref().take(1 << 20).read_to_end(&mut b);
            std::io::copy(&mut err, &mut std::io::sink()).ok();
            b
        });
        let start = Instant::now();
        let mut last_size_check = start;
        let over = loop {
            match child.try_wait() {
                Ok(Some(_)) => break None,
                Ok(None) => {}
                Err(e) => return Err(self.io("cannot wait for git", e)),
            }
            if start.elapsed() > self.opts.timeout {
                break Some(format!(
                    "`git {}` ran longer than {}s",
                    args.first().unwrap_or(&""),
                    self.opts.timeout.as_secs()
                ));
            }
            if last_size_check.elapsed() > Duration::from_millis(500) {
                last_size_check = Instant::now();
                if dir_size(self.dir) > self.opts.max_bytes {
                    break Some(format!(
                        "the repository is larger than {} MiB",
                        self.opts.max_bytes >> 20
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(detail) = over {
            // The whole process group: git's helpers (remote-https, ssh, upload-pack) too.
            let _ = rustix::process::kill_process_group(
                rustix::process::Pid::from_child(&child),
                rustix::process::Signal::KILL,
            );
            let _ = child.wait();
            return Err(GitError::Bounds {
                url: self.r.source_url(),
                reference: self.r.reference_or_head().to_string(),
                detail,
            });
        }
        let status = child
            .wait()
            .map_err(|e| self.io("cannot wait for git", e))?;
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        if !status.success() {
            let text = String::from_utf8_lossy(&stderr);
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(4)..].join("; ");
            return Err(self.fail(format!(
                "`git {}` failed ({status}): {}",
                args.first().unwrap_or(&""),
                crate::registry::redact_url(&tail)
            )));
        }
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    }
}

/// Bytes under `dir` (files only, symlinks not followed); best effort.
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else {
                total += md.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(c: &Command) -> Vec<(String, String)> {
        c.get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().into_owned(),
                    v?.to_string_lossy().into_owned(),
                ))
            })
            .collect()
    }

    #[test]
    fn credentials_go_to_the_environment_scoped_to_the_origin_never_the_command_line() {
        let r = GitRef::parse("https://git.example.com/r.git#main").unwrap();
        let opts = FetchOptions {
            credential: Some(Credential::basic("ci", "s3cr3t")),
            ..FetchOptions::default()
        };
        let dir = Path::new("/nonexistent");
        let git = Git {
            r: &r,
            dir,
            opts: &opts,
            cwd: dir.to_path_buf(),
        };
        let c = git.command(&["fetch", "origin", "main"]);
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(!args
            .iter()
            .any(|a| a.contains("s3cr3t") || a.contains("czNjcjN0")));
        let env = env_of(&c);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(
            get("GIT_CONFIG_KEY_0").as_deref(),
            Some("http.https://git.example.com/.extraHeader")
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode("ci:s3cr3t");
        assert_eq!(
            get("GIT_CONFIG_VALUE_0"),
            Some(format!("Authorization: Basic {b64}"))
        );
        assert_eq!(get("GIT_TERMINAL_PROMPT").as_deref(), Some("0"));
        assert!(args.contains(&"core.hooksPath=/dev/null".to_string()));
        assert!(args.contains(&"protocol.file.allow=never".to_string()));
        // Not for ssh or git://: no header at all.
        let r = GitRef::parse("git@git.example.com:r.git").unwrap();
        let git = Git { r: &r, ..git };
        assert!(get_none(&git.command(&["fetch"])));
    }

    fn get_none(c: &Command) -> bool {
        !env_of(c).iter().any(|(k, _)| k == "GIT_CONFIG_VALUE_0")
    }
}
