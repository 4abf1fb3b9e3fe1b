//! The HTTP client: TLS and plain-HTTP selection, the `/v2/` ping, authentication, retries and
//! redirects. The protocol operations live in `manifests.rs` and `blobs.rs`.
//!
//! Every request goes through [`Client::send`]: it finds the registry's base URL (pinging `/v2/`
//! once per registry, falling back from HTTPS to HTTP only where allowed), attaches the
//! `Authorization` the registry's challenge calls for (fetching and caching a token for the
//! request's scope), follows redirects for GET and HEAD itself (blob GETs redirect to storage;
//! `Authorization` is dropped when the origin changes, as Docker does), answers one 401 by
//! re-authenticating with the scope the challenge names, and retries temporary failures when the
//! body can be sent again.
//!
//! Credentials are scoped to the registry: `Authorization` goes only to URLs of the registry's
//! own origin (scheme, host, port; see [`same_origin`]), and only a 401 from that origin is a
//! challenge. Upload `Location`s and redirects elsewhere get no credentials, and their 401s are
//! answers (go-containerregistry's `matchesHost`, containerd's per-host authorizer). Every
//! response body is read through the speed meter ([`Response::reader`], [`SpeedLimit`]).
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ureq::http;

use super::auth::token::{fetch_token, Token};
use super::auth::{
    lookup_credential, parse_challenges, Challenge, Credential, CredentialEnv, Scope,
};
use super::error::{parse_envelope, redact_url, Error, Result};
use super::mirrors::RegistriesConfig;
use super::reference::api_host;
use super::retry::{parse_retry_after, retry, RetryPolicy, Verdict};
use super::speed::{SlowTransfer, SpeedLimit};

/// How blobs are uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UploadMode {
    /// POST, then one PUT with the whole blob (the default: one round trip, and GHCR limits
    /// PATCH bodies to 4 MiB anyway).
    #[default]
    Monolithic,
    /// POST, PATCHes of `chunk_size` bytes (raised to the registry's `OCI-Chunk-Min-Length`),
    /// then a PUT.
    Chunked {
        /// Bytes per PATCH.
        chunk_size: u64,
    },
}

/// Credentials the client may use: explicit ones first (`--creds`), then the lookup in
/// [`CredentialEnv`] (config.json, auth.json, helpers, `GITHUB_TOKEN`).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Registry name → credential, taking precedence over everything else.
    pub explicit: BTreeMap<String, Credential>,
    /// Where to look credentials up; `None` means anonymous except for `explicit`.
    pub env: Option<CredentialEnv>,
}

/// Options for a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Verify TLS certificates (`--tls-verify`); `false` also allows plain HTTP everywhere.
    pub tls_verify: bool,
    /// Registries (`host[:port]`) to reach without certificate verification and with plain-HTTP
    /// fallback (registries.conf `insecure = true`).
    pub insecure_registries: Vec<String>,
    /// Allow plain HTTP for `localhost` and loopback addresses, as Docker and podman do.
    pub plain_http_loopback: bool,
    /// Extra CA certificate files (PEM) trusted beside the bundled Mozilla roots.
    pub ca_files: Vec<PathBuf>,
    /// Directories whose `*.crt` files are trusted as extra CAs (`--cert-dir`).
    pub cert_dirs: Vec<PathBuf>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Upload mode for blobs.
    pub upload: UploadMode,
    /// Credentials.
    pub credentials: Credentials,
    /// Mirrors and per-registry settings (registries.conf style).
    pub registries: RegistriesConfig,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Connection (and TLS handshake) timeout.
    pub connect_timeout: Duration,
    /// Redirects followed for one GET or HEAD before giving up.
    pub max_redirects: u32,
    /// Longest wait for any single read or write on a connection: a stalled registry fails
    /// (and is retried) instead of hanging. It also bounds the wait for the answer to a blob
    /// PUT, which some storage back ends take long to give, so keep it generous.
    pub io_timeout: Option<Duration>,
    /// The minimum rate of every transfer (`--speed-limit`, `--speed-time`); see
    /// [`SpeedLimit`]. It also shortens the per-read timeout of GET and HEAD requests, and the
    /// per-write timeout of uploads, to one window.
    pub speed: SpeedLimit,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            tls_verify: true,
            insecure_registries: Vec::new(),
            plain_http_loopback: true,
            ca_files: Vec::new(),
            cert_dirs: Vec::new(),
            retry: RetryPolicy::default(),
            upload: UploadMode::default(),
            credentials: Credentials::default(),
            registries: RegistriesConfig::default(),
            user_agent: format!("kiln/{}", env!("CARGO_PKG_VERSION")),
            connect_timeout: Duration::from_secs(30),
            max_redirects: 10,
            io_timeout: Some(Duration::from_secs(300)),
            speed: SpeedLimit::default(),
        }
    }
}

/// What the ping learnt about a registry.
#[derive(Clone)]
struct HostState {
    /// `https://host` or `http://host`.
    base: String,
    /// The last challenge the registry sent, if it wants authentication.
    challenge: Option<Challenge>,
}

/// A request body.
pub(crate) enum Body<'a> {
    /// No body.
    Empty,
    /// Bytes in memory: the request can be replayed.
    Bytes(&'a [u8]),
    /// A stream of `len` bytes: sent once; a failure is retried by the caller.
    Reader { reader: &'a mut dyn Read, len: u64 },
}

/// A registry response of any status.
pub(crate) struct Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: ureq::Body,
    /// The URL that answered (after redirects), unredacted: it may be needed for a Location.
    pub url: String,
    pub method: &'static str,
    pub registry: String,
    /// The minimum rate its body must keep.
    pub speed: SpeedLimit,
}

impl Response {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body, read through the speed meter (see [`SpeedLimit`]). Read errors carry a
    /// [`SlowTransfer`] when the meter stopped the transfer; map them with
    /// [`Error::from_body_io`].
    pub fn reader(self) -> impl Read + Send + 'static {
        self.speed
            .meter(&redact_url(&self.url))
            .download(self.body.into_reader())
    }

    /// Turns this response into the error it stands for, reading at most
    /// [`MAX_ERROR_BODY_SIZE`](crate::oci::limits::MAX_ERROR_BODY_SIZE) of its body.
    pub fn into_error(self) -> Error {
        let (registry, method, url, status) = (
            self.registry.clone(),
            self.method,
            self.url.clone(),
            self.status,
        );
        let retry_after = self
            .header("retry-after")
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let mut body = Vec::new();
        let _ = self
            .reader()
            .take(crate::oci::limits::MAX_ERROR_BODY_SIZE)
            .read_to_end(&mut body);
        Error::Status {
            registry,
            method,
            url: redact_url(&url),
            status,
            errors: parse_envelope(&body),
            retry_after,
        }
    }

    /// Ok if the status is one of `ok`, else the error it stands for.
    pub fn expect(self, ok: &[u16]) -> Result<Response> {
        if ok.contains(&self.status) {
            Ok(self)
        } else {
            Err(self.into_error())
        }
    }

    /// Reads and drops the rest of the body so the connection can be reused.
    pub fn drain(self) {
        let _ = std::io::copy(&mut self.reader().take(1 << 20), &mut std::io::sink());
    }
}

/// A registry client. Cheap to clone; share it between worker threads.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    opts: ClientOptions,
    verified: ureq::Agent,
    unverified: ureq::Agent,
    hosts: Mutex<HashMap<String, HostState>>,
    tokens: Mutex<HashMap<String, Vec<Token>>>,
    token_fetch: Mutex<()>,
    credentials: Mutex<HashMap<String, Option<Credential>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client with `opts`; fails only if a CA file cannot be loaded.
    pub fn new(opts: ClientOptions) -> Result<Client> {
        let roots = super::tls::root_certs(&opts.ca_files, &opts.cert_dirs)?;
        let agent = |verify: bool| {
            let tls = ureq::tls::TlsConfig::builder()
                .root_certs(roots.clone())
                .disable_verification(!verify)
                .build();
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .user_agent(opts.user_agent.as_str())
                .timeout_connect(Some(opts.connect_timeout))
                .timeout_per_read(opts.io_timeout)
                .timeout_per_write(opts.io_timeout)
                .tls_config(tls)
                .build()
                .new_agent()
        };
        Ok(Client {
            inner: Arc::new(Inner {
                verified: agent(true),
                unverified: agent(false),
                opts,
                hosts: Mutex::new(HashMap::new()),
                tokens: Mutex::new(HashMap::new()),
                token_fetch: Mutex::new(()),
                credentials: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// Whether `registry` may be reached without TLS verification and over plain HTTP.
    fn is_insecure(&self, registry: &str) -> bool {
        let o = &self.inner.opts;
        !o.tls_verify
            || o.insecure_registries.iter().any(|r| r == registry)
            || o.registries.is_insecure(registry)
    }

    fn allows_http(&self, registry: &str) -> bool {
        self.is_insecure(registry) || (self.inner.opts.plain_http_loopback && is_loopback(registry))
    }

    fn agent_for(&self, registry: &str) -> &ureq::Agent {
        if self.is_insecure(registry) {
            &self.inner.unverified
        } else {
            &self.inner.verified
        }
    }

    /// Pings `GET /v2/` on `registry` (once per client): decides between HTTPS and HTTP and
    /// records the authentication challenge, if any.
    pub fn ping(&self, registry: &str) -> Result<()> {
        self.host(registry).map(|_| ())
    }

    fn host(&self, registry: &str) -> Result<HostState> {
        if let Some(h) = lock(&self.inner.hosts).get(registry) {
            return Ok(h.clone());
        }
        let host = api_host(registry);
        let https = format!("https://{host}");
        // Try HTTPS once; fall back to HTTP only where allowed, retrying whichever we settle on.
        let state = match self.ping_once(registry, &https) {
            Ok(s) => s,
            Err(e) if self.allows_http(registry) && !matches!(e, Error::HostNotFound { .. }) => {
                let http = format!("http://{host}");
                match self.with_retries(|| self.ping_once(registry, &http)) {
                    Ok(s) => s,
                    // A TLS server whose certificate we do not trust answers plain HTTP with
                    // 400; the certificate problem is the useful error then.
                    Err(http_err) => return Err(if is_tls_failure(&e) { e } else { http_err }),
                }
            }
            Err(e) if e.is_temporary() => self.with_retries(|| self.ping_once(registry, &https))?,
            Err(e) => return Err(e),
        };
        lock(&self.inner.hosts).insert(registry.to_string(), state.clone());
        Ok(state)
    }

    fn ping_once(&self, registry: &str, base: &str) -> Result<HostState> {
        let url = format!("{base}/v2/");
        let resp = self.raw_send(registry, "GET", &url, &[], Body::Empty, None)?;
        let status = resp.status;
        if status == 401 && !same_origin(&resp.url, base) {
            // `/v2/` redirected elsewhere and that host wants credentials: it is not the
            // registry, so its challenge must not become the registry's.
            return Err(resp.into_error());
        }
        let challenge = resp
            .header("www-authenticate")
            .map(parse_challenges)
            .and_then(|c| pick_challenge(&c));
        match status {
            200..=299 => {
                resp.drain();
                Ok(HostState {
                    base: base.to_string(),
                    challenge: None,
                })
            }
            401 => {
                let Some(challenge) = challenge else {
                    let header = resp.header("www-authenticate").unwrap_or("").to_string();
                    return Err(Error::Challenge {
                        registry: registry.to_string(),
                        challenge: header,
                    });
                };
                resp.drain();
                Ok(HostState {
                    base: base.to_string(),
                    challenge: Some(challenge),
                })
            }
            // Over HTTPS any other client-error answer still proves the endpoint (some
            // registries and proxies answer 404 or 403 on `/v2/` and authenticate per
            // request; a 401 there teaches us the challenge later). Over plain HTTP it does
            // not: a TLS port answers 400 to HTTP.
            402..=499 if base.starts_with("https://") && !matches!(status, 408 | 429) => {
                resp.drain();
                Ok(HostState {
                    base: base.to_string(),
                    challenge: None,
                })
            }
            _ => Err(resp.into_error()),
        }
    }

    /// Checks that the credentials for `registry` are accepted (for `kiln login`): pings it,
    /// then sends `GET /v2/` with whatever authentication its challenge asks for. A registry
    /// that wants no authentication passes.
    pub fn check_credentials(&self, registry: &str) -> Result<()> {
        self.send(registry, "GET", "/v2/", &[], Body::Empty, &Scope::none())?
            .expect(&[200])?
            .drain();
        Ok(())
    }

    /// Pings `registry` and obtains a token for `scope` now (if the registry wants tokens), so
    /// that parallel workers find it cached and a streamed upload never meets a first 401.
    pub fn authenticate(&self, registry: &str, scope: &Scope) -> Result<()> {
        self.authorization(registry, scope, false).map(|_| ())
    }

    /// The base URL (`https://host`) of `registry`, pinging it first if needed.
    pub(crate) fn base_url(&self, registry: &str) -> Result<String> {
        Ok(self.host(registry)?.base)
    }

    /// The credential for `registry` (cached per client; helpers are slow).
    fn credential(&self, registry: &str, repository: Option<&str>) -> Result<Option<Credential>> {
        if let Some(c) = self.inner.opts.credentials.explicit.get(registry) {
            return Ok(Some(c.clone()));
        }
        // auth.json may hold per-repository entries, so the cache key includes the repository.
        let key = format!("{registry}/{}", repository.unwrap_or(""));
        if let Some(c) = lock(&self.inner.credentials).get(&key) {
            return Ok(c.clone());
        }
        let found = match &self.inner.opts.credentials.env {
            Some(env) => lookup_credential(env, registry, repository)?,
            None => None,
        };
        lock(&self.inner.credentials).insert(key, found.clone());
        Ok(found)
    }

    /// The `Authorization` value for a request needing `scope` on `registry`.
    fn authorization(&self, registry: &str, scope: &Scope, fresh: bool) -> Result<Option<String>> {
        let state = self.host(registry)?;
        let repo_hint = scope
            .to_params()
            .first()
            .and_then(|s| s.split(':').nth(1).map(str::to_string));
        match state.challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self
                .credential(registry, repo_hint.as_deref())?
                .and_then(|c| c.basic_header())),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let cred = self.credential(registry, repo_hint.as_deref())?;
                if let Some(Credential::RegistryToken(t)) = &cred {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let cached = || {
                    let now = Instant::now();
                    lock(&self.inner.tokens).get(registry).and_then(|ts| {
                        ts.iter()
                            .find(|t| t.expires > now && t.scope.covers(scope))
                            .map(|t| format!("Bearer {}", t.value))
                    })
                };
                if !fresh {
                    if let Some(h) = cached() {
                        return Ok(Some(h));
                    }
                }
                // One token request at a time: `jobs` workers starting together would otherwise
                // each ask for the same token.
                let _single_flight = lock(&self.inner.token_fetch);
                if !fresh {
                    if let Some(h) = cached() {
                        return Ok(Some(h));
                    }
                }
                let agent = self.agent_for(registry);
                let token = self.with_retries(|| {
                    fetch_token(
                        agent,
                        registry,
                        &realm,
                        service.as_deref(),
                        scope,
                        cred.as_ref(),
                        self.inner.opts.speed,
                    )
                })?;
                let header = format!("Bearer {}", token.value);
                let mut tokens = lock(&self.inner.tokens);
                let list = tokens.entry(registry.to_string()).or_default();
                let now = Instant::now();
                list.retain(|t| t.expires > now && !scope.covers(&t.scope));
                list.push(token);
                Ok(Some(header))
            }
        }
    }

    /// Runs `f` until it succeeds, fails for good, or the retries run out (temporary errors
    /// are retried, honouring `Retry-After`).
    pub(crate) fn with_retries<T>(&self, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        retry(
            &self.inner.opts.retry,
            |_| f(),
            |e| match e.is_temporary() {
                true => Verdict::Retry(e.retry_after()),
                false => Verdict::Stop,
            },
            drop,
        )
    }

    /// Sends a request to `registry` needing `scope`, with authentication, redirects and retries.
    /// `url` is a path (`/v2/…`) or an absolute URL from a `Location` header. Returns responses
    /// of every status; use [`Response::expect`].
    pub(crate) fn send(
        &self,
        registry: &str,
        method: &'static str,
        url: &str,
        headers: &[(&str, String)],
        mut body: Body<'_>,
        scope: &Scope,
    ) -> Result<Response> {
        let base = self.base_url(registry)?;
        let url = if url.starts_with('/') {
            format!("{base}{url}")
        } else {
            url.to_string()
        };
        // Credentials are scoped to the registry they are for: an `Authorization` header goes
        // only to the registry's own origin (scheme, host and port), never to an upload
        // `Location` or a redirect on another one. go-containerregistry does the same
        // (`pkg/v1/remote/transport/bearer.go` sets the header only when `matchesHost`, and
        // `basic.go` only when the request's host is the target), and so does containerd
        // (`core/remotes/docker/authorizer.go` keys auth handlers, challenges and the
        // credentials it looks up by the host of the request or of the 401 response).
        let ours = same_origin(&url, &base);
        let replayable = !matches!(body, Body::Reader { .. });
        let mut reauthed = false;
        let mut scope = scope.clone();
        // One attempt: the request, and once more at once if the registry's 401 taught us a
        // new challenge or scope (that does not count as a retry).
        let attempt = |_| -> std::result::Result<Response, Failed> {
            loop {
                let auth = if ours {
                    self.authorization(registry, &scope, reauthed)
                        .map_err(Failed::Final)?
                } else {
                    None
                };
                let this_body = match &mut body {
                    Body::Empty => Body::Empty,
                    Body::Bytes(b) => Body::Bytes(b),
                    Body::Reader { reader, len } => Body::Reader {
                        reader: &mut **reader,
                        len: *len,
                    },
                };
                let resp = self
                    .raw_send(registry, method, &url, headers, this_body, auth.as_deref())
                    .map_err(Failed::Transport)?;
                // Only the registry itself may tell us how to authenticate to it: a 401 from
                // another origin (an upload `Location` or a redirect target elsewhere) is an
                // answer, not a challenge. Taking its `WWW-Authenticate` would send the
                // registry's credentials to a token realm that host names (containerd keys
                // challenges by the host that sent them for the same reason).
                if resp.status == 401 && !same_origin(&resp.url, &base) {
                    return Ok(resp);
                }
                if resp.status == 401 && !reauthed {
                    // The token lacks a scope (or expired), or the registry wants auth only
                    // now (a ping that answered 200 to anonymous): learn the challenge, widen
                    // the scope with what it names, and get a fresh token.
                    let challenges = resp.header("www-authenticate").map(parse_challenges);
                    let Some(challenge) = challenges.as_deref().and_then(pick_challenge) else {
                        return Ok(resp);
                    };
                    if let Challenge::Bearer {
                        scope: Some(raw), ..
                    } = &challenge
                    {
                        scope = scope.clone().with_raw(raw);
                    }
                    if let Some(h) = lock(&self.inner.hosts).get_mut(registry) {
                        h.challenge = Some(challenge);
                    }
                    reauthed = true;
                    if !replayable {
                        // The body is spent; get the token now so the caller's restart has it.
                        self.authorization(registry, &scope, true)
                            .map_err(Failed::Final)?;
                        return Ok(resp);
                    }
                    resp.drain();
                    continue;
                }
                if matches!(resp.status, 408 | 429 | 500 | 502 | 503 | 504) {
                    return Err(Failed::Status(Box::new(resp)));
                }
                return Ok(resp);
            }
        };
        let result = retry(
            &self.inner.opts.retry,
            attempt,
            |failed| match failed {
                Failed::Status(resp) if replayable => Verdict::Retry(
                    resp.header("retry-after")
                        .and_then(|v| parse_retry_after(v, SystemTime::now())),
                ),
                // `raw_send` answers every status, so its errors carry no `Retry-After`.
                Failed::Transport(e) if replayable && e.is_temporary() => Verdict::Retry(None),
                _ => Verdict::Stop,
            },
            |failed| {
                if let Failed::Status(resp) = failed {
                    resp.drain();
                }
            },
        );
        match result {
            Ok(resp) => Ok(resp),
            Err(Failed::Status(resp)) => Ok(*resp),
            Err(Failed::Transport(e) | Failed::Final(e)) => Err(e),
        }
    }

    /// One request and its redirects (GET and HEAD only), no auth handling, no retries.
    pub(crate) fn raw_send(
        &self,
        registry: &str,
        method: &'static str,
        url: &str,
        headers: &[(&str, String)],
        body: Body<'_>,
        auth: Option<&str>,
    ) -> Result<Response> {
        let agent = self.agent_for(registry);
        let first_url = url.to_string();
        let mut url = url.to_string();
        let mut auth = auth.map(str::to_string);
        let mut body = Some(body);
        let limit = self.inner.opts.max_redirects;
        for _ in 0..=limit {
            let transport = |source: ureq::Error| match source {
                // ureq reports a failed getaddrinfo as an I/O error from std's resolver.
                ureq::Error::HostNotFound => Error::HostNotFound {
                    registry: registry.to_string(),
                    method,
                    url: redact_url(&url),
                },
                ureq::Error::Io(e) if SlowTransfer::from_io(&e).is_some() => {
                    Error::from_body_io(registry, method, &redact_url(&url), e)
                }
                ureq::Error::Io(ref e) if e.to_string().contains("failed to lookup address") => {
                    Error::HostNotFound {
                        registry: registry.to_string(),
                        method,
                        url: redact_url(&url),
                    }
                }
                source => Error::Transport {
                    registry: registry.to_string(),
                    method,
                    url: redact_url(&url),
                    source: Box::new(source),
                },
            };
            // GET and HEAD answers come at once, so one window of silence is too slow; an upload's
            // answer may take the storage back end a while, so it waits for `io_timeout`.
            let o = &self.inner.opts;
            let (per_read, per_write) = if matches!(method, "GET" | "HEAD") {
                (o.speed.read_timeout(o.io_timeout), o.io_timeout)
            } else {
                (o.io_timeout, o.speed.read_timeout(o.io_timeout))
            };
            let mut builder = http::Request::builder().method(method).uri(url.as_str());
            for (k, v) in headers {
                builder = builder.header(*k, v.as_str());
            }
            if let Some(a) = &auth {
                builder = builder.header("Authorization", a.as_str());
            }
            let result = match body.take().unwrap_or(Body::Empty) {
                Body::Empty if matches!(method, "POST" | "PUT" | "PATCH") => builder
                    .body(&b""[..])
                    .map_err(|e| transport(ureq::Error::Http(e)))
                    .and_then(|r| run(agent, r, per_read, per_write).map_err(transport)),
                Body::Empty => builder
                    .body(())
                    .map_err(|e| transport(ureq::Error::Http(e)))
                    .and_then(|r| run(agent, r, per_read, per_write).map_err(transport)),
                Body::Bytes(b) => builder
                    .body(b)
                    .map_err(|e| transport(ureq::Error::Http(e)))
                    .and_then(|r| run(agent, r, per_read, per_write).map_err(transport)),
                Body::Reader { reader, len } => {
                    let mut metered = o.speed.meter(&redact_url(&url)).upload(reader);
                    builder
                        .header("Content-Length", len.to_string())
                        .body(ureq::SendBody::from_reader(&mut metered))
                        .map_err(|e| transport(ureq::Error::Http(e)))
                        .and_then(|r| run(agent, r, per_read, per_write).map_err(transport))
                }
            };
            let resp = result?;
            let status = resp.status().as_u16();
            let redirect =
                matches!(status, 301 | 302 | 303 | 307 | 308) && matches!(method, "GET" | "HEAD");
            let (parts, body_in) = resp.into_parts();
            if !redirect {
                return Ok(Response {
                    status,
                    headers: parts.headers,
                    body: body_in,
                    url,
                    method,
                    registry: registry.to_string(),
                    speed: self.inner.opts.speed,
                });
            }
            let Some(location) = parts.headers.get("location").and_then(|v| v.to_str().ok()) else {
                return Err(Error::BadHeader {
                    registry: registry.to_string(),
                    method,
                    url: redact_url(&url),
                    header: "Location",
                });
            };
            let next = resolve_url(&url, location);
            // Storage back ends (S3, GCS) get a pre-signed URL; our token must not follow, nor
            // come back if a later hop returns to the registry (go-containerregistry's
            // `matchesHost` and Go's `http.Client` drop it on a host change too).
            if !same_origin(&next, &url) {
                auth = None;
            }
            url = next;
        }
        Err(Error::TooManyRedirects {
            method,
            url: redact_url(&first_url),
            limit,
        })
    }
}

/// Why one attempt of [`Client::send`] did not give the answer.
enum Failed {
    /// The request did not get through (retried when temporary and the body can be sent again).
    Transport(Error),
    /// A status worth asking again for (408, 429, 5xx); the answer if retries run out.
    Status(Box<Response>),
    /// Authentication failed: it has retried on its own already.
    Final(Error),
}

/// Runs `r` on `agent` with these per-read and per-write timeouts.
fn run<B: ureq::AsSendBody>(
    agent: &ureq::Agent,
    r: http::Request<B>,
    per_read: Option<Duration>,
    per_write: Option<Duration>,
) -> std::result::Result<http::Response<ureq::Body>, ureq::Error> {
    let r = agent
        .configure_request(r)
        .timeout_per_read(per_read)
        .timeout_per_write(per_write)
        .build();
    agent.run(r)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these maps leaves it consistent (plain inserts), so go on.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Prefers Bearer over Basic when a registry offers both.
fn pick_challenge(challenges: &[Challenge]) -> Option<Challenge> {
    challenges
        .iter()
        .find(|c| matches!(c, Challenge::Bearer { .. }))
        .or_else(|| challenges.first())
        .cloned()
}

/// Whether the error is a TLS failure (handshake, certificate, or not TLS at all).
fn is_tls_failure(e: &Error) -> bool {
    match e {
        Error::Transport { source, .. } => {
            matches!(
                **source,
                ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_)
            ) || matches!(&**source, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData)
        }
        _ => false,
    }
}

fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether two absolute URLs have the same origin: scheme, host (case-insensitive) and port,
/// the default port filled in (go-containerregistry's `canonicalAddress` does the same).
pub(crate) fn same_origin(a: &str, b: &str) -> bool {
    fn origin(url: &str) -> Option<(String, String, u16)> {
        let (scheme, rest) = authority(url).split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        // Drop user info, which never carries into an origin.
        let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let default = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return None,
        };
        let (host, port) = match host_port.strip_prefix('[') {
            Some(v6) => {
                let (h, after) = v6.split_once(']')?;
                (h, after.strip_prefix(':'))
            }
            None => match host_port.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host_port, None),
            },
        };
        let port = match port {
            Some(p) => p.parse().ok()?,
            None => default,
        };
        Some((scheme, host.to_ascii_lowercase(), port))
    }
    matches!((origin(a), origin(b)), (Some(x), Some(y)) if x == y)
}

/// `scheme://authority` of an absolute URL.
pub(crate) fn authority(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    let end = url[after..]
        .find(['/', '?'])
        .map_or(url.len(), |i| after + i);
    &url[..end]
}

/// Resolves a `Location` value against the URL that sent it (RFC 9110 section 10.2.2 allows
/// relative references; distribution sends absolute ones, others do not).
pub(crate) fn resolve_url(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    if let Some(rest) = location.strip_prefix("//") {
        let scheme = base.split("://").next().unwrap_or("https");
        return format!("{scheme}://{rest}");
    }
    if location.starts_with('/') {
        return format!("{}{location}", authority(base));
    }
    let path_end = base.find('?').unwrap_or(base.len());
    let dir_end = base[..path_end].rfind('/').map_or(path_end, |i| i + 1);
    format!("{}{location}", &base[..dir_end])
}

/// Appends `key=value` to a URL's query.
pub(crate) fn add_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{sep}{key}={}",
        super::auth::token::encode_query(value)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_locations() {
        let base = "http://r:5000/v2/a/blobs/uploads/";
        assert_eq!(
            resolve_url(base, "/v2/a/blobs/uploads/x?_state=1"),
            "http://r:5000/v2/a/blobs/uploads/x?_state=1"
        );
        assert_eq!(resolve_url(base, "https://s3/x"), "https://s3/x");
        assert_eq!(resolve_url(base, "//cdn/x"), "http://cdn/x");
        assert_eq!(resolve_url(base, "x"), "http://r:5000/v2/a/blobs/uploads/x");
        assert_eq!(authority("https://h:1/p?q"), "https://h:1");
        assert!(same_origin("https://H:443/v2/", "https://h"));
        assert!(same_origin("http://[::1]:80/x", "http://[::1]/y"));
        assert!(!same_origin(
            "http://127.0.0.1:5000/x",
            "http://127.0.0.1:5001/x"
        ));
        assert!(!same_origin("http://r/x", "https://r/x"));
        assert!(!same_origin("http://r.evil/x", "http://r/x"));
        assert!(!same_origin("ftp://r/x", "ftp://r/x"));
        assert_eq!(
            add_query("http://h/p?a=1", "digest", "sha256:ab"),
            "http://h/p?a=1&digest=sha256%3Aab"
        );
    }

    #[test]
    fn client_is_shareable_between_threads() {
        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<Client>();
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example:5000"));
    }
}
