//! Credential lookup and storage: Docker's `config.json`, containers' `auth.json`, credential
//! helpers, and `GITHUB_TOKEN` for `ghcr.io`.
//!
//! Lookup order for a registry (first hit wins), as podman and skopeo do it:
//! 1. the containers auth file (`REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json`),
//!    most specific key first (`host/ns/repo`, `host/ns`, `host`);
//! 2. Docker's `config.json` (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`):
//!    `credHelpers[host]`, then `auths` (same key matching, plus the legacy
//!    `https://index.docker.io/v1/` spellings), then `credsStore`;
//! 3. for `ghcr.io` only, `GITHUB_TOKEN` with `GITHUB_ACTOR` as the user (`github-actions` if
//!    unset: GHCR accepts any user name with a token).
//!
//! The environment is not read here: the CLI fills a [`CredentialEnv`] (see
//! [`CredentialEnv::from_process_env`]). Secrets never appear in `Debug` output or errors.
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

/// The key Docker uses for Docker Hub in `config.json`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A credential for one registry. `Debug` prints the user name only.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A user name and password (or personal access token).
    Basic {
        /// The user name.
        username: String,
        /// The password or token.
        password: String,
    },
    /// A Docker `identitytoken`: an OAuth2 refresh token exchanged at the token server.
    IdentityToken(String),
    /// A bearer token sent as is (a registry token obtained elsewhere).
    RegistryToken(String),
}

impl Credential {
    /// A user name and password.
    pub fn basic(username: &str, password: &str) -> Credential {
        Credential::Basic {
            username: username.to_string(),
            password: password.to_string(),
        }
    }

    /// The user name, when there is one.
    pub fn username(&self) -> Option<&str> {
        match self {
            Credential::Basic { username, .. } => Some(username),
            _ => None,
        }
    }

    /// The `Authorization: Basic …` value, for basic credentials.
    pub(crate) fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            _ => None,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
            Credential::RegistryToken(_) => f.write_str("RegistryToken(<redacted>)"),
        }
    }
}

/// Errors from reading or writing credential stores. They name files and helpers, never secrets.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A credential file could not be read or written.
    #[error("failed to {action} credential file `{path}`")]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A credential file is not the JSON we expect.
    #[error("invalid credential file `{path}`: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the secret itself).
        reason: String,
    },
    /// A credential helper failed to run or answered nonsense.
    #[error("credential helper `docker-credential-{helper}` failed to {action} credentials for `{registry}`: {reason}")]
    Helper {
        /// The helper's suffix (`pass`, `desktop`, …).
        helper: String,
        /// "get", "store" or "erase".
        action: &'static str,
        /// The registry.
        registry: String,
        /// What went wrong (stderr is not included: helpers may echo input).
        reason: String,
    },
    /// No home directory to find `~/.docker/config.json` in.
    #[error("cannot locate docker config.json: neither DOCKER_CONFIG nor HOME is set")]
    NoConfigDir,
}

/// The environment credential lookup depends on, filled by the caller. `Debug` hides
/// `github_token`.
#[derive(Clone, Default)]
pub struct CredentialEnv {
    /// `DOCKER_CONFIG`: the directory holding `config.json`.
    pub docker_config: Option<PathBuf>,
    /// `HOME`.
    pub home: Option<PathBuf>,
    /// `REGISTRY_AUTH_FILE`: the containers auth file.
    pub registry_auth_file: Option<PathBuf>,
    /// `XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// `GITHUB_TOKEN`, used for `ghcr.io`.
    pub github_token: Option<String>,
    /// `GITHUB_ACTOR`, the user name for `GITHUB_TOKEN`.
    pub github_actor: Option<String>,
    /// `PATH`, to find `docker-credential-*` helpers (None: the process's own).
    pub path: Option<OsString>,
}

impl fmt::Debug for CredentialEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialEnv")
            .field("docker_config", &self.docker_config)
            .field("home", &self.home)
            .field("registry_auth_file", &self.registry_auth_file)
            .field("xdg_runtime_dir", &self.xdg_runtime_dir)
            .field(
                "github_token",
                &self.github_token.as_ref().map(|_| "<redacted>"),
            )
            .field("github_actor", &self.github_actor)
            .field("path", &self.path)
            .finish()
    }
}

impl CredentialEnv {
    /// Reads the variables above from the process environment (for the CLI).
    pub fn from_process_env() -> CredentialEnv {
        let path = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let text = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        CredentialEnv {
            docker_config: path("DOCKER_CONFIG"),
            home: path("HOME"),
            registry_auth_file: path("REGISTRY_AUTH_FILE"),
            xdg_runtime_dir: path("XDG_RUNTIME_DIR"),
            github_token: text("GITHUB_TOKEN"),
            github_actor: text("GITHUB_ACTOR"),
            path: std::env::var_os("PATH"),
        }
    }

    /// The Docker `config.json` path.
    pub fn docker_config_path(&self) -> Result<PathBuf, CredentialError> {
        match (&self.docker_config, &self.home) {
            (Some(d), _) => Ok(d.join("config.json")),
            (None, Some(h)) => Ok(h.join(".docker").join("config.json")),
            (None, None) => Err(CredentialError::NoConfigDir),
        }
    }

    /// The containers auth file path, if one is configured.
    pub fn auth_file_path(&self) -> Option<PathBuf> {
        self.registry_auth_file.clone().or_else(|| {
            self.xdg_runtime_dir
                .as_ref()
                .map(|d| d.join("containers").join("auth.json"))
        })
    }
}

/// Finds the credential for `registry` (and optionally `repository`, for per-repository entries
/// in `auth.json`). `Ok(None)` means anonymous.
pub fn lookup_credential(
    env: &CredentialEnv,
    registry: &str,
    repository: Option<&str>,
) -> Result<Option<Credential>, CredentialError> {
    let keys = candidate_keys(registry, repository);
    if let Some(path) = env.auth_file_path() {
        if let Some(doc) = read_json_file(&path)? {
            if let Some(c) = from_auths(&doc, &keys, &path)? {
                return Ok(Some(c));
            }
        }
    }
    if let Ok(path) = env.docker_config_path() {
        if let Some(doc) = read_json_file(&path)? {
            if let Some(helper) = doc
                .get("credHelpers")
                .and_then(|h| h.get(registry))
                .and_then(Value::as_str)
            {
                return helper_get(env, helper, registry);
            }
            if let Some(c) = from_auths(&doc, &keys, &path)? {
                return Ok(Some(c));
            }
            if let Some(store) = doc.get("credsStore").and_then(Value::as_str) {
                if let Some(c) = helper_get(env, store, registry)? {
                    return Ok(Some(c));
                }
            }
        }
    }
    if registry == "ghcr.io" {
        if let Some(token) = &env.github_token {
            let user = env.github_actor.as_deref().unwrap_or("github-actions");
            return Ok(Some(Credential::basic(user, token)));
        }
    }
    Ok(None)
}

/// The `auths` keys that may hold `registry`'s credential, most specific first.
fn candidate_keys(registry: &str, repository: Option<&str>) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(repo) = repository {
        let mut parts: Vec<&str> = repo.split('/').collect();
        while !parts.is_empty() {
            keys.push(format!("{registry}/{}", parts.join("/")));
            parts.pop();
        }
    }
    keys.push(registry.to_string());
    keys
}

/// Normalises an `auths` key: drops the scheme and any path (`https://host/v1/` → `host`), and
/// maps Docker Hub's historical names to `docker.io`.
fn normalise_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"));
    let k = match k {
        // With a scheme, the path is an API version (`/v1/`), not a repository.
        Some(rest) => rest.split('/').next().unwrap_or(rest),
        None => key.trim_end_matches('/'),
    };
    match k {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => match k.split_once('/') {
            Some(("index.docker.io" | "registry-1.docker.io", rest)) => format!("docker.io/{rest}"),
            _ => k.to_string(),
        },
    }
}

fn from_auths(
    doc: &Value,
    keys: &[String],
    path: &Path,
) -> Result<Option<Credential>, CredentialError> {
    let Some(auths) = doc.get("auths").and_then(Value::as_object) else {
        return Ok(None);
    };
    let normalised: Vec<(String, &Value)> =
        auths.iter().map(|(k, v)| (normalise_key(k), v)).collect();
    for key in keys {
        if let Some((_, entry)) = normalised.iter().find(|(k, _)| k == key) {
            if let Some(c) = parse_entry(entry, path)? {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

fn parse_entry(entry: &Value, path: &Path) -> Result<Option<Credential>, CredentialError> {
    let s = |k: &str| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    if let Some(token) = s("identitytoken") {
        return Ok(Some(Credential::IdentityToken(token.to_string())));
    }
    if let Some(token) = s("registrytoken") {
        return Ok(Some(Credential::RegistryToken(token.to_string())));
    }
    if let Some(auth) = s("auth") {
        let bad = |reason: &str| CredentialError::Format {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("an `auth` value is not base64"))?;
        let text = String::from_utf8(raw).map_err(|_| bad("an `auth` value is not UTF-8"))?;
        let (user, pass) = text
            .split_once(':')
            .ok_or_else(|| bad("an `auth` value is not `user:password`"))?;
        return Ok(Some(Credential::basic(user, pass.trim_end_matches('\n'))));
    }
    if let (Some(u), Some(p)) = (s("username"), s("password")) {
        return Ok(Some(Credential::basic(u, p)));
    }
    Ok(None)
}

fn read_json_file(path: &Path) -> Result<Option<Value>, CredentialError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CredentialError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Value::Object(Map::new())));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| CredentialError::Format {
            path: path.to_path_buf(),
            // serde_json's message has line/column only, never the content.
            reason: e.to_string(),
        })
}

/// The server URL a credential helper expects (Docker Hub keeps its legacy key).
fn helper_server_url(registry: &str) -> &str {
    if registry == "docker.io" {
        DOCKER_HUB_AUTH_KEY
    } else {
        registry
    }
}

fn helper_command(env: &CredentialEnv, helper: &str) -> Command {
    let name = format!("docker-credential-{helper}");
    let program = env
        .path
        .as_ref()
        .and_then(|p| {
            std::env::split_paths(p)
                .map(|d| d.join(&name))
                .find(|c| c.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(&name));
    let mut cmd = Command::new(program);
    if let Some(p) = &env.path {
        cmd.env("PATH", p);
    }
    cmd
}

fn run_helper(
    env: &CredentialEnv,
    helper: &str,
    action: &'static str,
    registry: &str,
    input: &[u8],
) -> Result<(bool, Vec<u8>), CredentialError> {
    let fail = |reason: String| CredentialError::Helper {
        helper: helper.to_string(),
        action,
        registry: registry.to_string(),
        reason,
    };
    let mut child = helper_command(env, helper)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| fail(format!("cannot write its input: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("cannot wait for it: {e}")))?;
    Ok((out.status.success(), out.stdout))
}

fn helper_get(
    env: &CredentialEnv,
    helper: &str,
    registry: &str,
) -> Result<Option<Credential>, CredentialError> {
    let url = helper_server_url(registry);
    let (ok, stdout) = run_helper(env, helper, "get", registry, url.as_bytes())?;
    if !ok {
        // The helper protocol reports "credentials not found" on stdout with a failure status.
        let text = String::from_utf8_lossy(&stdout);
        if text.contains("not found") || text.trim().is_empty() {
            return Ok(None);
        }
        return Err(CredentialError::Helper {
            helper: helper.to_string(),
            action: "get",
            registry: registry.to_string(),
            reason: "it exited with an error".into(),
        });
    }
    let v: Value = serde_json::from_slice(&stdout).map_err(|_| CredentialError::Helper {
        helper: helper.to_string(),
        action: "get",
        registry: registry.to_string(),
        reason: "its answer is not JSON".into(),
    })?;
    let user = v
        .get("Username")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or_default();
    if secret.is_empty() {
        return Ok(None);
    }
    // Docker's convention: user `<token>` means the secret is an identity token.
    if user == "<token>" {
        return Ok(Some(Credential::IdentityToken(secret.to_string())));
    }
    Ok(Some(Credential::basic(user, secret)))
}

/// The helper configured for `registry` in `config.json`, if any (`credHelpers`, else `credsStore`).
fn configured_helper(doc: &Value, registry: &str) -> Option<String> {
    doc.get("credHelpers")
        .and_then(|h| h.get(registry))
        .or_else(|| doc.get("credsStore"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The `auths` key Docker writes for `registry`.
fn auth_key(registry: &str) -> &str {
    helper_server_url(registry)
}

/// Stores a user name and password for `registry` (for `kiln login`): through the configured
/// credential helper if `config.json` names one, else as a base64 `auth` entry written atomically
/// (temporary file, mode 0600, then rename). Returns the file or helper that holds it.
pub fn store_credential(
    env: &CredentialEnv,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<String, CredentialError> {
    let path = env.docker_config_path()?;
    let mut doc = read_json_file(&path)?.unwrap_or_else(|| Value::Object(Map::new()));
    if let Some(helper) = configured_helper(&doc, registry) {
        let input = serde_json::json!({
            "ServerURL": helper_server_url(registry),
            "Username": username,
            "Secret": password,
        });
        let (ok, _) = run_helper(
            env,
            &helper,
            "store",
            registry,
            input.to_string().as_bytes(),
        )?;
        if !ok {
            return Err(CredentialError::Helper {
                helper,
                action: "store",
                registry: registry.to_string(),
                reason: "it exited with an error".into(),
            });
        }
        return Ok(format!("docker-credential-{helper}"));
    }
    let obj = as_object(&mut doc, &path)?;
    let auths = obj
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let auths = auths
        .as_object_mut()
        .ok_or_else(|| CredentialError::Format {
            path: path.clone(),
            reason: "`auths` is not an object".into(),
        })?;
    // Drop other spellings of the same registry so the new entry is the one found.
    auths.retain(|k, _| normalise_key(k) != registry);
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut entry = BTreeMap::new();
    entry.insert("auth", auth);
    auths.insert(auth_key(registry).to_string(), serde_json::json!(entry));
    write_json_atomic(&path, &doc)?;
    Ok(path.display().to_string())
}

/// Removes `registry`'s credential (for `kiln logout`). Returns whether one was found.
pub fn erase_credential(env: &CredentialEnv, registry: &str) -> Result<bool, CredentialError> {
    let mut found = false;
    if let Some(path) = env.auth_file_path() {
        if let Some(mut doc) = read_json_file(&path)? {
            if remove_auth(&mut doc, registry) {
                write_json_atomic(&path, &doc)?;
                found = true;
            }
        }
    }
    let path = env.docker_config_path()?;
    if let Some(mut doc) = read_json_file(&path)? {
        if let Some(helper) = configured_helper(&doc, registry) {
            let url = helper_server_url(registry);
            let (ok, _) = run_helper(env, &helper, "erase", registry, url.as_bytes())?;
            found |= ok;
        }
        if remove_auth(&mut doc, registry) {
            write_json_atomic(&path, &doc)?;
            found = true;
        }
    }
    Ok(found)
}

fn remove_auth(doc: &mut Value, registry: &str) -> bool {
    let Some(auths) = doc.get_mut("auths").and_then(Value::as_object_mut) else {
        return false;
    };
    let before = auths.len();
    auths.retain(|k, _| normalise_key(k) != registry);
    auths.len() != before
}

fn as_object<'a>(
    doc: &'a mut Value,
    path: &Path,
) -> Result<&'a mut Map<String, Value>, CredentialError> {
    doc.as_object_mut().ok_or_else(|| CredentialError::Format {
        path: path.to_path_buf(),
        reason: "the top level is not an object".into(),
    })
}

/// Writes `doc` to `path` through a 0600 temporary file in the same directory and a rename, so a
/// reader sees either the old file or the new one, and the secrets are never world-readable.
fn write_json_atomic(path: &Path, doc: &Value) -> Result<(), CredentialError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io_err = |source| CredentialError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err)?;
    let mut bytes = serde_json::to_vec_pretty(doc).expect("a JSON value always serialises");
    bytes.push(b'\n');
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("config.json"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let c = Credential::basic("alice", "hunter2");
        let d = format!("{c:?}");
        assert!(d.contains("alice") && !d.contains("hunter2"), "{d}");
        assert!(!format!("{:?}", Credential::IdentityToken("tok".into())).contains("tok\""));
    }

    #[test]
    fn keys_normalise() {
        assert_eq!(normalise_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(
            normalise_key("http://reg.example:5000/v2/"),
            "reg.example:5000"
        );
        assert_eq!(normalise_key("quay.io/org/repo"), "quay.io/org/repo");
        assert_eq!(
            candidate_keys("quay.io", Some("org/repo")),
            vec!["quay.io/org/repo", "quay.io/org", "quay.io"]
        );
    }
}
