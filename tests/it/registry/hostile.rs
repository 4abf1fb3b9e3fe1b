//! Hostile registries, written as the attacks: small threaded HTTP servers (std `TcpListener`)
//! that try to collect the user's password, fill the disk or memory, or hold a build forever.
//! Every server records every request it got (request line, headers, the first KiB of the
//! body), so a test can assert that no `Authorization`, no password and no base64 of it reached
//! a host it must not reach.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln::oci::Digest;
use kiln::registry::{BlobUpload, Client, ClientOptions, Credential, NoProgress, Reference};

use super::fast_retry;
use crate::support::measured::{disk_usage, kiln_measured};
use crate::support::Kiln;

const USER: &str = "kiln-user";
const PASSWORD: &str = "hunter2-s3cret-pw";

/// One request as the hostile server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    /// The request line, headers and the first KiB of the body, as text.
    raw: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<String> {
        self.raw.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

type Handler = dyn Fn(&Seen, &mut Conn) + Send + Sync;

/// The server side of one connection: counts what it sends.
struct Conn {
    stream: TcpStream,
    sent: Arc<AtomicU64>,
}

impl Conn {
    /// Writes all of `b`; false once the client has gone.
    fn send(&mut self, b: &[u8]) -> bool {
        let ok = self.stream.write_all(b).is_ok();
        if ok {
            self.sent.fetch_add(b.len() as u64, Ordering::SeqCst);
        }
        ok
    }

    fn respond(&mut self, status: u16, headers: &[(&str, String)], body: &[u8]) {
        let mut head = format!("HTTP/1.1 {status} Hostile\r\nConnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let _ = self.send(head.as_bytes()) && self.send(body);
    }
}

/// A hostile HTTP server; see the module documentation.
struct Server {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Bytes written to clients, all connections together.
    sent: Arc<AtomicU64>,
}

impl Server {
    fn start(handler: impl Fn(&Seen, &mut Conn) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let sent: Arc<AtomicU64> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let (s, n) = (seen.clone(), sent.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (s, n, h) = (s.clone(), n.clone(), handler.clone());
                std::thread::spawn(move || {
                    let Some(req) = read_request(&stream) else {
                        return;
                    };
                    s.lock().unwrap().push(req.clone());
                    let mut conn = Conn { stream, sent: n };
                    h(&req, &mut conn);
                    let _ = conn.stream.flush();
                    let _ = conn.stream.shutdown(Shutdown::Both);
                });
            }
        });
        Server { addr, seen, sent }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// No request carried `Authorization`, the password, or the base64 of `user:password`.
    fn assert_got_no_credentials(&self) {
        let seen = self.seen();
        assert!(!seen.is_empty(), "the hostile server was never reached");
        let b64 = base64(&format!("{USER}:{PASSWORD}"));
        for s in &seen {
            assert!(
                s.header("authorization").is_none(),
                "Authorization reached {}: {s:?}",
                self.addr
            );
            assert!(
                !s.raw.contains(PASSWORD) && !s.raw.contains(&b64),
                "the password reached {}: {s:?}",
                self.addr
            );
        }
    }
}

fn read_request(stream: &TcpStream) -> Option<Seen> {
    let mut r = BufReader::new(stream.try_clone().ok()?);
    let mut raw = String::new();
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    raw.push_str(&line);
    let mut len = 0u64;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        raw.push_str(&h);
    }
    // At most 64 KiB of the body: a handler may read the rest itself (slowly).
    let mut body = Vec::new();
    r.by_ref()
        .take(len.min(64 << 10))
        .read_to_end(&mut body)
        .ok()?;
    raw.push_str(&String::from_utf8_lossy(&body[..body.len().min(1024)]));
    Some(Seen {
        method,
        target,
        raw,
    })
}

fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Answers `/v2/` as a registry that wants Basic credentials and accepts ours.
fn basic_ping(req: &Seen, c: &mut Conn) -> bool {
    if req.target != "/v2/" {
        return false;
    }
    let good = format!("Basic {}", base64(&format!("{USER}:{PASSWORD}")));
    if req.header("authorization").as_deref() == Some(good.as_str()) {
        c.respond(200, &[], b"{}");
    } else {
        c.respond(
            401,
            &[("WWW-Authenticate", r#"Basic realm="registry""#.to_string())],
            b"",
        );
    }
    true
}

fn client_for(registry: &str) -> Client {
    let mut o = ClientOptions {
        retry: fast_retry(),
        ..ClientOptions::default()
    };
    o.credentials
        .explicit
        .insert(registry.to_string(), Credential::basic(USER, PASSWORD));
    Client::new(o).unwrap()
}

/// The attack: the registry hands out an upload `Location` on another port (another origin),
/// hoping the client sends its `Authorization` there. kiln uploads there without credentials,
/// the thief's 401 is an answer (not a challenge), and the error names the thief's URL.
#[test]
fn an_upload_location_on_another_port_gets_no_credentials() {
    let thief = Server::start(|_, c| {
        c.respond(
            401,
            &[("WWW-Authenticate", r#"Basic realm="thief""#.to_string())],
            b"",
        )
    });
    let thief_url = thief.url("/upload/session-1");
    let registry = Server::start(move |req, c| {
        if basic_ping(req, c) {
            return;
        }
        match (req.method.as_str(), req.target.as_str()) {
            ("HEAD", _) => c.respond(404, &[], b""),
            ("POST", t) if t.starts_with("/v2/app/blobs/uploads/") => {
                c.respond(202, &[("Location", thief_url.clone())], b"")
            }
            _ => c.respond(404, &[], b""),
        }
    });
    let client = client_for(&registry.addr);
    let r = Reference::parse(&format!("{}/app:v1", registry.addr)).unwrap();
    let blob = Arc::new(b"a layer".to_vec());
    let upload = BlobUpload {
        digest: Digest::sha256(&blob),
        size: blob.len() as u64,
        open: Box::new(move || Ok(Box::new(std::io::Cursor::new(blob.to_vec())) as _)),
        mount_from: vec![],
    };
    let e = client.push_blob(&r, &upload, &NoProgress).unwrap_err();
    let text = format!("{e}");
    assert!(text.contains(&thief.url("/upload/session-1")), "{text}");
    assert!(!format!("{e:?}").contains(PASSWORD), "{e:?}");
    // The thief got the upload (the Location is honoured) but nothing to log in with.
    assert!(
        thief.seen().iter().any(|s| s.method == "PUT"),
        "{:?}",
        thief.seen()
    );
    thief.assert_got_no_credentials();
    // The registry itself did get the credentials: the test would see a leak.
    assert!(registry
        .seen()
        .iter()
        .any(|s| s.header("authorization").is_some()));
}

/// The attack: a blob GET redirects to another host, which answers 401 with a Bearer challenge
/// naming its own token realm, hoping the client fetches a token there with the registry's
/// Basic credentials. kiln takes no challenge from another origin: the 401 is the error.
#[test]
fn a_redirect_target_answering_401_with_its_own_realm_gets_no_credentials() {
    let thief = Server::start(|req, c| {
        let realm = format!(
            "Bearer realm=\"http://{}/token\",service=\"thief\"",
            req.header("host").unwrap_or_default()
        );
        c.respond(401, &[("WWW-Authenticate", realm)], b"")
    });
    let thief_blob = thief.url("/storage/blob");
    let registry = Server::start(move |req, c| {
        if basic_ping(req, c) {
            return;
        }
        if req.target.starts_with("/v2/app/blobs/") {
            c.respond(307, &[("Location", thief_blob.clone())], b"");
        } else {
            c.respond(404, &[], b"");
        }
    });
    let client = client_for(&registry.addr);
    let r = Reference::parse(&format!("{}/app:v1", registry.addr)).unwrap();
    let digest = Digest::sha256(b"x");
    let e = client
        .get_blob(&r, &digest, Some(1), &mut Vec::new(), &NoProgress)
        .unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");
    assert!(format!("{e}").contains(&thief.url("/storage/blob")), "{e}");
    assert!(
        !thief.seen().iter().any(|s| s.target.starts_with("/token")),
        "kiln asked the thief's realm for a token: {:?}",
        thief.seen()
    );
    thief.assert_got_no_credentials();
}

/// The attack on uploads: a registry that reads a pushed blob one byte per second. With a
/// 1000 bytes/s minimum over 1 s, the upload fails within seconds (each retry too), naming the
/// upload URL, instead of waiting `io_timeout` (300 s) per write.
#[test]
fn an_upload_drained_one_byte_per_second_is_dropped() {
    let registry = Server::start(|req, c| match req.method.as_str() {
        "GET" if req.target == "/v2/" => c.respond(200, &[], b"{}"),
        "POST" => c.respond(202, &[("Location", "/upload/slow".to_string())], b""),
        "PUT" => {
            let mut byte = [0u8; 1];
            for _ in 0..120 {
                std::thread::sleep(Duration::from_secs(1));
                if c.stream.read(&mut byte).map_or(true, |n| n == 0) {
                    return;
                }
            }
        }
        _ => c.respond(404, &[], b""),
    });
    let client = Client::new(ClientOptions {
        retry: fast_retry(),
        speed: kiln::registry::SpeedLimit {
            bytes_per_sec: 1000,
            window: Duration::from_secs(1),
        },
        ..ClientOptions::default()
    })
    .unwrap();
    let r = Reference::parse(&format!("{}/app:v1", registry.addr)).unwrap();
    let blob = Arc::new(vec![5u8; 32 << 20]);
    let upload = BlobUpload {
        digest: Digest::sha256(&blob),
        size: blob.len() as u64,
        open: Box::new(move || Ok(Box::new(std::io::Cursor::new(blob.to_vec())) as _)),
        mount_from: vec![],
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(client.push_blob(&r, &upload, &NoProgress));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(90))
        .expect("the upload was held for 90 s");
    let e = result.unwrap_err();
    assert!(
        format!("{e}").contains(&registry.url("/upload/slow")),
        "the error does not name the upload URL: {e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Through `kiln pull`: an image whose manifest is honest and whose blobs are the attack.

struct Image {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

fn image(config: Vec<u8>, layer_size: usize) -> Image {
    let layer = vec![7u8; layer_size];
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": Digest::sha256(&config).to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": Digest::sha256(&layer).to_string(), "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    Image {
        config,
        layer,
        manifest,
    }
}

/// An image whose config lists its one (uncompressed) layer's diff_id, as a build needs.
fn consistent_image(layer_size: usize) -> Image {
    let layer = vec![7u8; layer_size];
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [Digest::sha256(&layer).to_string()]}})
    .to_string()
    .into_bytes();
    image(config, layer_size)
}

fn small_config() -> Vec<u8> {
    serde_json::json!({"architecture": "amd64", "os": "linux", "config": {},
                       "rootfs": {"type": "layers", "diff_ids": []}})
    .to_string()
    .into_bytes()
}

/// A registry serving `img`, anonymously; `blob` answers blob GETs itself (or returns false).
fn registry_for(
    img: Arc<Image>,
    blob: impl Fn(&Seen, &mut Conn, &Image) -> bool + Send + Sync + 'static,
) -> Server {
    Server::start(move |req, c| {
        let t = req.target.as_str();
        if t == "/v2/" {
            c.respond(200, &[], b"{}");
        } else if t.starts_with("/v2/app/manifests/") {
            let ct = "application/vnd.oci.image.manifest.v1+json".to_string();
            c.respond(200, &[("Content-Type", ct)], &img.manifest);
        } else if t.starts_with("/v2/app/blobs/") && !blob(req, c, &img) {
            let d = t.rsplit('/').next().unwrap_or("");
            if d == Digest::sha256(&img.config).to_string() {
                c.respond(200, &[], &img.config);
            } else if d == Digest::sha256(&img.layer).to_string() {
                c.respond(200, &[], &img.layer);
            } else {
                c.respond(404, &[], b"");
            }
        } else if !t.starts_with("/v2/app/blobs/") {
            c.respond(404, &[], b"");
        }
    })
}

/// A blob handler that answers GETs of `digest` with a body without end (no `Content-Length`;
/// it gives up after 256 MiB).
fn endless(digest: String) -> impl Fn(&Seen, &mut Conn, &Image) -> bool + Send + Sync + 'static {
    move |req, c, _| {
        if !req.target.ends_with(&digest) {
            return false;
        }
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n";
        if !c.send(head.as_bytes()) {
            return true;
        }
        let chunk = vec![7u8; 64 << 10];
        for _ in 0..(256 << 20) / chunk.len() {
            if !c.send(&chunk) {
                break;
            }
        }
        true
    }
}

/// The attack: a layer of 1 MiB whose GET never ends (no `Content-Length`, bytes until the
/// client goes; the server gives up after 256 MiB). kiln reads at most size + 1 bytes, fails
/// naming the blob and its URL, and leaves nothing in the store.
#[test]
fn an_endless_blob_fails_at_its_declared_size() {
    let img = Arc::new(image(small_config(), 1 << 20));
    let layer = Digest::sha256(&img.layer).to_string();
    let reg = registry_for(img.clone(), endless(layer.clone()));
    let k = Kiln::new();
    let image_ref = format!("{}/app:v1", reg.addr);
    let (ok, err, rss_kib, elapsed) =
        kiln_measured(&k, &["pull", &image_ref], Duration::from_secs(120), &[]);
    eprintln!("kiln pull of an endless blob: {err}");
    assert!(!ok, "the pull of an endless blob succeeded");
    assert!(
        err.contains(&layer) && err.contains(&format!("/v2/app/blobs/{layer}")),
        "the error names neither the blob nor its URL:\n{err}"
    );
    assert!(
        err.contains("1048576"),
        "the error does not say the size:\n{err}"
    );
    let sent = reg.sent.load(Ordering::SeqCst);
    assert!(
        sent < 32 << 20,
        "kiln read {sent} bytes of a 1 MiB blob (in {elapsed:?})"
    );
    assert!(rss_kib < 100 * 1024, "kiln held {rss_kib} KiB");
    let du = disk_usage(&k.root());
    assert!(
        du < 8 << 20,
        "the store holds {du} bytes after the failed pull"
    );
    assert!(!k.ok(&["images"]).contains("app"));
}

/// The same endless layer as a build's lazy base (`FROM` stores the manifest unnamed; the layer
/// is downloaded when `COPY --from` opens it): the download is bounded by the size the pulled
/// manifest declares.
#[test]
fn a_lazy_base_layer_that_never_ends_fails_at_its_declared_size() {
    let img = Arc::new(consistent_image(1 << 20));
    let layer = Digest::sha256(&img.layer).to_string();
    let reg = registry_for(img.clone(), endless(layer.clone()));
    let k = Kiln::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}/app:v1 AS base\nFROM scratch\nCOPY --from=base /a /a\n",
            reg.addr
        ),
    )
    .unwrap();
    let args = ["build", ctx.to_str().unwrap(), "-t", "it/lazy:1"];
    let (ok, err, rss_kib, _) = kiln_measured(&k, &args, Duration::from_secs(120), &[]);
    eprintln!("kiln build from a lazy endless layer: {err}");
    assert!(!ok, "the build from an endless layer succeeded");
    assert!(
        err.contains(&layer) && err.contains("1048576"),
        "the error names neither the layer nor its size:\n{err}"
    );
    let sent = reg.sent.load(Ordering::SeqCst);
    assert!(sent < 32 << 20, "kiln read {sent} bytes of a 1 MiB layer");
    assert!(rss_kib < 100 * 1024, "kiln held {rss_kib} KiB");
    let du = disk_usage(&k.root());
    assert!(
        du < 8 << 20,
        "the store holds {du} bytes after the failed build"
    );
}

/// The attack: a manifest whose config is 256 MiB (real bytes, the right digest). Configs are
/// read whole, so kiln refuses it by its descriptor before fetching anything of it.
#[test]
fn a_256_mib_config_is_refused_before_it_is_fetched() {
    let mut config = small_config();
    config.pop();
    config.extend_from_slice(br#","padding":""#);
    config.resize(256 << 20, b'a');
    let n = config.len();
    config[n - 2] = b'"';
    config[n - 1] = b'}';
    let img = Arc::new(image(config, 1000));
    let config_digest = Digest::sha256(&img.config).to_string();
    let reg = registry_for(img, |_, _, _| false);
    let k = Kiln::new();
    let image_ref = format!("{}/app:v1", reg.addr);
    let (ok, err, rss_kib, _) =
        kiln_measured(&k, &["pull", &image_ref], Duration::from_secs(120), &[]);
    eprintln!("kiln pull of a 256 MiB config: {err}");
    assert!(!ok, "a 256 MiB config was accepted");
    assert!(
        err.contains(&config_digest) && err.contains("4194304") && err.contains(&reg.addr),
        "the error does not name the config, the limit and the registry:\n{err}"
    );
    let fetched = reg
        .seen()
        .iter()
        .any(|s| s.target.ends_with(&config_digest));
    assert!(!fetched, "the config was fetched");
    assert!(rss_kib < 100 * 1024, "kiln held {rss_kib} KiB");
    assert!(disk_usage(&k.root()) < 8 << 20);
}

/// The attack: a registry that sends a layer one byte per second, which no per-read timeout
/// catches. With `--speed-limit 1000 --speed-time 1`, kiln gives up within seconds, naming the
/// URL and the rate.
#[test]
fn a_registry_sending_one_byte_per_second_is_dropped() {
    let img = Arc::new(image(small_config(), 4096));
    let layer = Digest::sha256(&img.layer).to_string();
    let l2 = layer.clone();
    let reg = registry_for(img, move |req, c, img| {
        if !req.target.ends_with(&l2) {
            return false;
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            img.layer.len()
        );
        if !c.send(head.as_bytes()) {
            return true;
        }
        for b in &img.layer {
            std::thread::sleep(Duration::from_secs(1));
            if !c.send(&[*b]) {
                break;
            }
        }
        true
    });
    let k = Kiln::new();
    let image_ref = format!("{}/app:v1", reg.addr);
    let args = [
        "--speed-limit",
        "1000",
        "--speed-time",
        "1",
        "pull",
        &image_ref,
    ];
    let (ok, err, _, elapsed) = kiln_measured(&k, &args, Duration::from_secs(120), &[]);
    eprintln!("kiln pull at one byte per second ({elapsed:?}): {err}");
    assert!(!ok, "the trickling pull succeeded");
    assert!(
        elapsed < Duration::from_secs(60),
        "kiln was held {elapsed:?}:\n{err}"
    );
    assert!(
        err.contains(&format!("/v2/app/blobs/{layer}")) && err.contains("1000 bytes/s"),
        "the error names neither the URL nor the rate:\n{err}"
    );
    assert!(disk_usage(&k.root()) < 8 << 20);
}

/// The same for `ADD URL`: a web server sending one byte per second fails the build within
/// seconds, naming the URL and the rate.
#[test]
fn add_url_from_a_server_sending_one_byte_per_second_fails() {
    let web = Server::start(|_, c| {
        let body = vec![b'x'; 4096];
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        if !c.send(head.as_bytes()) {
            return;
        }
        for b in body {
            std::thread::sleep(Duration::from_secs(1));
            if !c.send(&[b]) {
                break;
            }
        }
    });
    let k = Kiln::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let url = web.url("/tool.bin");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nADD {url} /tool.bin\n"),
    )
    .unwrap();
    let args = [
        "--speed-limit",
        "1000",
        "--speed-time",
        "1",
        "build",
        ctx.to_str().unwrap(),
        "-t",
        "it/slow:1",
    ];
    let (ok, err, _, elapsed) = kiln_measured(&k, &args, Duration::from_secs(120), &[]);
    eprintln!("ADD URL at one byte per second ({elapsed:?}): {err}");
    assert!(!ok, "the trickling ADD succeeded");
    assert!(
        elapsed < Duration::from_secs(30),
        "held {elapsed:?}:\n{err}"
    );
    assert!(
        err.contains(&url) && err.contains("1000 bytes/s"),
        "the error names neither the URL nor the rate:\n{err}"
    );
    assert!(!k.ok(&["images"]).contains("it/slow"));
}
