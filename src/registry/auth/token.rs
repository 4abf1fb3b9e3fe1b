//! The token request (distribution `docs/spec/auth/token.md` and `oauth.md`).
use std::io::Read;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Credential, Scope};
use crate::oci::limits::MAX_TOKEN_RESPONSE_SIZE;
use crate::registry::error::{parse_envelope, redact_url, Error, Result};
use crate::registry::speed::SpeedLimit;

/// A bearer token and when to stop using it.
#[derive(Clone)]
pub(crate) struct Token {
    pub value: String,
    pub scope: Scope,
    pub expires: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Percent-encodes a query component (RFC 3986 unreserved characters pass).
pub(crate) fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Asks the token server at `realm` for a token covering `scope`.
pub(crate) fn fetch_token(
    agent: &ureq::Agent,
    registry: &str,
    realm: &str,
    service: Option<&str>,
    scope: &Scope,
    credential: Option<&Credential>,
    speed: SpeedLimit,
) -> Result<Token> {
    // One window of silence is too slow, as for any GET (see `SpeedLimit::read_timeout`).
    let per_read = speed.read_timeout(agent.config().timeout_per_read());
    let fail = |status: Option<u16>, reason: String, errors| Error::Token {
        registry: registry.to_string(),
        realm: redact_url(realm),
        status,
        reason,
        errors,
    };
    if !(realm.starts_with("https://") || realm.starts_with("http://")) {
        // Not a network failure, so not `Token` (whose status-less form is temporary).
        return Err(Error::Challenge {
            registry: registry.to_string(),
            challenge: format!("Bearer realm=\"{}\"", redact_url(realm)),
        });
    }
    let started = Instant::now();
    let response = match credential {
        Some(Credential::IdentityToken(refresh)) => {
            // OAuth2 refresh-token grant (`oauth.md`): Docker stores the refresh token a
            // registry (ACR, Harbor with OIDC) handed out at login as `identitytoken`.
            let mut form = vec![
                ("grant_type".to_string(), "refresh_token".to_string()),
                ("refresh_token".to_string(), refresh.clone()),
                ("client_id".to_string(), "kiln".to_string()),
            ];
            if let Some(s) = service {
                form.push(("service".into(), s.to_string()));
            }
            if !scope.is_empty() {
                form.push(("scope".into(), scope.to_params().join(" ")));
            }
            let body: Vec<String> = form
                .iter()
                .map(|(k, v)| format!("{k}={}", encode_query(v)))
                .collect();
            agent
                .post(realm)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .config()
                .timeout_per_read(per_read)
                .build()
                .send(body.join("&").as_bytes())
        }
        _ => {
            let mut url = realm.to_string();
            let mut sep = if url.contains('?') { '&' } else { '?' };
            let mut add = |k: &str, v: &str| {
                url.push(sep);
                url.push_str(k);
                url.push('=');
                url.push_str(&encode_query(v));
                sep = '&';
            };
            if let Some(s) = service {
                add("service", s);
            }
            for s in scope.to_params() {
                add("scope", &s);
            }
            if let Some(user) = credential.and_then(Credential::username) {
                add("account", user);
            }
            let mut req = agent.get(&url);
            if let Some(h) = credential.and_then(Credential::basic_header) {
                req = req.header("Authorization", h);
            }
            req.config().timeout_per_read(per_read).build().call()
        }
    };
    let mut response = response.map_err(|e| {
        fail(
            None,
            format!("request failed: {}", describe_transport(&e)),
            vec![],
        )
    })?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    speed
        .meter(&redact_url(realm))
        .download(response.body_mut().as_reader())
        .take(MAX_TOKEN_RESPONSE_SIZE + 1)
        .read_to_end(&mut body)
        .map_err(|e| {
            fail(
                Some(status),
                format!("reading the answer failed: {e}"),
                vec![],
            )
        })?;
    if body.len() as u64 > MAX_TOKEN_RESPONSE_SIZE {
        return Err(fail(
            Some(status),
            format!("the answer is larger than {MAX_TOKEN_RESPONSE_SIZE} bytes"),
            vec![],
        ));
    }
    if status != 200 {
        let reason = match status {
            401 | 403 => "credentials refused".to_string(),
            s => format!("answered {s}"),
        };
        return Err(fail(Some(status), reason, parse_envelope(&body)));
    }
    let parsed: TokenResponse = serde_json::from_slice(&body)
        .map_err(|_| fail(Some(status), "the answer is not token JSON".into(), vec![]))?;
    let value = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| fail(Some(status), "the answer holds no token".into(), vec![]))?;
    // The spec's default lifetime is 60 s; renew 10 s early so a token does not expire in flight.
    let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(60).max(60));
    Ok(Token {
        value,
        scope: scope.clone(),
        expires: started + lifetime - Duration::from_secs(10),
    })
}

/// A transport error's text without anything a URL could leak (ureq's texts hold no URL except
/// `BadUri`, which we never build from user input with credentials).
pub(crate) fn describe_transport(e: &ureq::Error) -> String {
    match e {
        ureq::Error::BadUri(_) => "invalid URL".to_string(),
        other => other.to_string(),
    }
}
