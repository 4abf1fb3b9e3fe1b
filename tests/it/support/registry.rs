//! Starts the real CNCF distribution registry (Debian's `docker-registry`, v2.8) for a test:
//! plain HTTP, htpasswd basic auth behind TLS with a CA generated here, or bearer tokens from an
//! in-process token issuer. The access log (Apache combined format, on the registry's stdout)
//! is kept so tests can count requests. The process is killed on drop.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use super::{free_port, require_tool};

/// How the registry authenticates.
pub enum Mode {
    /// Plain HTTP, no auth.
    Plain,
    /// TLS with a generated CA, and htpasswd basic auth for `user`:`password`.
    BasicTls { user: String, password: String },
    /// Bearer tokens from a [`TokenIssuer`] that knows `users` (name → password).
    Token { users: BTreeMap<String, String> },
}

/// A running registry.
pub struct Registry {
    child: Child,
    /// The temporary directory holding config, storage, certificates and the log.
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The CA that signed the server certificate (TLS mode).
    pub ca_file: Option<PathBuf>,
    /// The token issuer (token mode).
    pub issuer: Option<TokenIssuer>,
    log: PathBuf,
}

/// One access-log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub method: String,
    pub path: String,
    pub status: u16,
}

impl Registry {
    /// Starts a registry, or returns None (after printing why) if a needed tool is missing.
    pub fn start(mode: Mode) -> Option<Registry> {
        if !require_tool("docker-registry", &["--version"]) {
            return None;
        }
        let dir = tempfile::tempdir().expect("creating a temp dir works");
        let root = dir.path();
        let mut extra = String::new();
        let mut ca_file = None;
        let mut issuer = None;
        match &mode {
            Mode::Plain => {}
            Mode::BasicTls { user, password } => {
                if !require_tool("htpasswd", &["-h"]) {
                    // htpasswd -h exits 2 but runs; `is_ok` only checks it exists.
                    return None;
                }
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd runs");
                assert!(out.status.success(), "htpasswd failed");
                std::fs::write(root.join("htpasswd"), &out.stdout).unwrap();
                let tls = generate_tls(root);
                ca_file = Some(tls.ca);
                extra.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                    tls.cert.display(),
                    tls.key.display(),
                    root.join("htpasswd").display()
                ));
            }
            Mode::Token { users } => {
                let iss = TokenIssuer::start(users.clone());
                extra.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    iss.realm(),
                    TokenIssuer::SERVICE,
                    TokenIssuer::ISSUER,
                    iss.write_cert(root).display()
                ));
                issuer = Some(iss);
            }
        }
        let log = root.join("access.log");
        let err_path = root.join("registry.err");
        // A free port can be taken by a parallel test between our probe and the registry's
        // bind: then the registry exits with "address already in use" and we try another.
        for _ in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port());
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  cache:\n    blobdescriptor: inmemory\nhttp:\n  addr: {addr}\n  secret: kiln-test-secret\n  headers:\n    X-Content-Type-Options: [nosniff]\n{extra}",
                root.join("data").display()
            );
            let config_path = root.join("config.yml");
            std::fs::write(&config_path, config).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(&err_path).unwrap())
                .spawn()
                .expect("docker-registry starts");
            match wait_listening(&mut child, &err_path) {
                Ok(()) => {
                    return Some(Registry {
                        child,
                        dir,
                        addr,
                        ca_file,
                        issuer,
                        log,
                    });
                }
                Err(text) if text.contains("address already in use") => continue,
                Err(text) => panic!("registry at {addr} did not start: {text}"),
            }
        }
        panic!("no free port for the registry after 5 tries");
    }

    /// Every request in the access log so far. The registry logs a request after answering
    /// it, so wait until the log stops growing.
    pub fn accesses(&self) -> Vec<Access> {
        let read = || {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            text.lines().filter_map(parse_access).collect::<Vec<_>>()
        };
        let mut last = read();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(40));
            let now = read();
            if now.len() == last.len() {
                return now;
            }
            last = now;
        }
        last
    }

    /// Path to the registry's storage.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for distribution's "listening on" line (logged after the bind succeeded), or returns
/// its error output if it exits first.
fn wait_listening(child: &mut Child, err_path: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(err_path).unwrap_or_default();
        if text.contains("listening on") {
            return Ok(());
        }
        if let Ok(Some(_)) = child.try_wait() {
            return Err(text);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err("timed out waiting for \"listening on\"".into())
}

/// Parses `… "METHOD /path HTTP/1.1" 200 …`.
fn parse_access(line: &str) -> Option<Access> {
    let start = line.find('"')? + 1;
    let rest = &line[start..];
    let end = rest.find('"')?;
    let mut req = rest[..end].split(' ');
    let method = req.next()?.to_string();
    let path = req.next()?.to_string();
    let status = rest[end + 1..]
        .trim_start()
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    Some(Access {
        method,
        path,
        status,
    })
}

struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A CA and a server certificate for 127.0.0.1 and localhost, signed by it.
fn generate_tls(dir: &Path) -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kiln test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let files = TlsFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.ca, ca_cert.pem()).unwrap();
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}

/// Token requests seen: (scopes, user; None = anonymous).
pub type TokenLog = Arc<Mutex<Vec<(Vec<String>, Option<String>)>>>;

/// A token server for the registry's `auth: token` mode. It signs ES256 JWTs whose header
/// carries the certificate in `x5c`: distribution 2.8 (`registry/auth/token/token.go`,
/// `VerifySigningKey`) verifies that chain against `rootcertbundle` and takes the key from the
/// leaf. Anonymous requests get `pull` only; known users get what they ask for; a wrong password
/// gets 401.
pub struct TokenIssuer {
    port: u16,
    cert_pem: String,
    /// Every request's scopes and user (None = anonymous), in order.
    pub requests: TokenLog,
}

impl TokenIssuer {
    pub const SERVICE: &'static str = "kiln-test-registry";
    pub const ISSUER: &'static str = "kiln-test-issuer";

    fn start(users: BTreeMap<String, String>) -> TokenIssuer {
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["kiln-token-issuer".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kiln token issuer");
        let cert = params.self_signed(&key).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let signer =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der(), &rng)
                .unwrap();
        let x5c = base64::engine::general_purpose::STANDARD.encode(cert.der());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve_token(stream, &users, &signer, &x5c, &log);
            }
        });
        TokenIssuer {
            port,
            cert_pem: cert.pem(),
            requests,
        }
    }

    /// The realm URL.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    fn write_cert(&self, dir: &Path) -> PathBuf {
        let p = dir.join("token.crt");
        std::fs::write(&p, &self.cert_pem).unwrap();
        p
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let v = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?');
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve_token(
    stream: TcpStream,
    users: &BTreeMap<String, String>,
    signer: &ring::signature::EcdsaKeyPair,
    x5c: &str,
    log: &Mutex<Vec<(Vec<String>, Option<String>)>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut auth = None;
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let target = request_line.split(' ').nth(1).unwrap_or("/");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut scopes = Vec::new();
    for kv in query.split('&') {
        if let Some(("scope", v)) = kv.split_once('=') {
            scopes.push(url_decode(v));
        }
    }
    let mut user = None;
    if request_line.starts_with("POST") {
        // OAuth2 refresh-token grant (distribution `docs/spec/auth/oauth.md`): the refresh
        // token a user logged in with is `users["<refresh>"]`, and it acts as user `refresh`.
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        let form = String::from_utf8_lossy(&body).into_owned();
        let field = |name: &str| {
            form.split('&').find_map(|kv| {
                kv.split_once('=')
                    .filter(|(k, _)| *k == name)
                    .map(|(_, v)| url_decode(v))
            })
        };
        scopes = field("scope")
            .map(|s| s.split(' ').map(str::to_string).collect())
            .unwrap_or_default();
        let ok = field("grant_type").as_deref() == Some("refresh_token")
            && field("refresh_token").is_some()
            && field("refresh_token").as_deref() == users.get("<refresh>").map(String::as_str);
        if !ok {
            log.lock().unwrap().push((scopes, Some("refresh".into())));
            let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"invalid refresh token"}]}"#;
            return respond(stream, "401 Unauthorized", body);
        }
        user = Some("refresh".to_string());
    }
    if let Some(b) = auth.as_deref().and_then(|a| a.strip_prefix("Basic ")) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b)
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&decoded).into_owned();
        let (u, p) = text.split_once(':').unwrap_or((&text, ""));
        if users.get(u).map(String::as_str) != Some(p) {
            log.lock().unwrap().push((scopes, Some(u.to_string())));
            let body =
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"invalid username or password"}]}"#;
            return respond(stream, "401 Unauthorized", body);
        }
        user = Some(u.to_string());
    }
    log.lock().unwrap().push((scopes.clone(), user.clone()));
    let mut access = Vec::new();
    for s in &scopes {
        let mut parts = s.splitn(3, ':');
        if let (Some("repository"), Some(name), Some(actions)) =
            (parts.next(), parts.next(), parts.next())
        {
            let granted: Vec<&str> = actions
                .split(',')
                .filter(|a| user.is_some() || *a == "pull")
                .collect();
            access
                .push(serde_json::json!({"type": "repository", "name": name, "actions": granted}));
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": TokenIssuer::ISSUER,
        "sub": user.clone().unwrap_or_default(),
        "aud": TokenIssuer::SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", scopes.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let rng = ring::rand::SystemRandom::new();
    let sig = signer.sign(&rng, signing_input.as_bytes()).unwrap();
    let token = format!("{signing_input}.{}", b64url(sig.as_ref()));
    // Token servers answer `token`; OAuth2 ones `access_token`: exercise both.
    let key = if request_line.starts_with("POST") {
        "access_token"
    } else {
        "token"
    };
    let body = serde_json::json!({key: token, "expires_in": 300}).to_string();
    respond(stream, "200 OK", &body)
}

fn respond(mut stream: TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Drain so the client does not see a reset.
    let _ = stream.read(&mut [0u8; 16]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_parse() {
        let l = r#"127.0.0.1 - - [21/Nov/2026:12:00:00 +0000] "HEAD /v2/a/blobs/sha256:ab HTTP/1.1" 200 0 "" "kiln/0.1.0""#;
        assert_eq!(
            parse_access(l),
            Some(Access {
                method: "HEAD".into(),
                path: "/v2/a/blobs/sha256:ab".into(),
                status: 200
            })
        );
    }
}
