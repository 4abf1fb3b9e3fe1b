//! Authentication: `WWW-Authenticate` challenges, scopes, the token flow and its cache, and the
//! credential lookup in [`credentials`].
//!
//! The flow is the distribution token spec (`docs/spec/auth/token.md`): a request answered 401
//! carries a challenge; for `Bearer` we GET the realm with `service` and one `scope` per repository
//! (with HTTP basic credentials when we have some; anonymous otherwise), or POST an OAuth2
//! refresh-token grant when the credential is a Docker `identitytoken`, and retry the request with
//! the token. Tokens are cached per registry and scope until shortly before they expire; for
//! `Basic` we send the credentials on every request to that registry.
//!
//! This module does not send requests itself except the token request (`token.rs`); the client
//! decides when to authenticate.
pub mod credentials;
pub(crate) mod token;

pub use credentials::{
    erase_credential, lookup_credential, store_credential, Credential, CredentialEnv,
    CredentialError,
};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer realm="…",service="…",scope="…"`: get a token from `realm`.
    Bearer {
        /// The token server URL.
        realm: String,
        /// The service the token is for (the registry's name at the token server).
        service: Option<String>,
        /// The scope the registry asked for, if it said.
        scope: Option<String>,
    },
    /// `Basic realm="…"`: send the user name and password with every request.
    Basic,
}

/// Parses a `WWW-Authenticate` value into the challenges it holds (RFC 7235 section 4.1: several
/// challenges may share one header, each a scheme followed by comma-separated `key=value`
/// parameters, values quoted or not). Unknown schemes are skipped.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut scheme: Option<String> = None;
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    let b = header.as_bytes();
    let mut i = 0;
    let mut just_saw_scheme = false;
    let flush =
        |scheme: &Option<String>, params: &BTreeMap<String, String>, out: &mut Vec<_>| match scheme
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("bearer") => {
                if let Some(realm) = params.get("realm") {
                    out.push(Challenge::Bearer {
                        realm: realm.clone(),
                        service: params.get("service").cloned(),
                        scope: params.get("scope").cloned(),
                    });
                }
            }
            Some("basic") => out.push(Challenge::Basic),
            _ => {}
        };
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',' || b[i] == b'\t') {
            i += 1;
        }
        let start = i;
        while i < b.len() && !matches!(b[i], b' ' | b',' | b'=' | b'\t') {
            i += 1;
        }
        if start == i {
            break;
        }
        let word = &header[start..i];
        if i < b.len() && b[i] == b'=' && !(i + 1 < b.len() && b[i + 1] == b'=') {
            // key=value
            i += 1;
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    let ch_len = utf8_len(b[i]);
                    v.push_str(&header[i..(i + ch_len).min(b.len())]);
                    i += ch_len;
                }
                i += 1;
                v
            } else {
                let vs = i;
                while i < b.len() && b[i] != b',' && b[i] != b' ' {
                    i += 1;
                }
                header[vs..i].to_string()
            };
            params.insert(word.to_ascii_lowercase(), value);
            just_saw_scheme = false;
        } else {
            // token68 (e.g. `Basic abc==`) right after a scheme, or a new scheme.
            let had_padding = i < b.len() && b[i] == b'=';
            while i < b.len() && b[i] == b'=' {
                i += 1;
            }
            if just_saw_scheme && (had_padding || !is_known_scheme(word)) {
                just_saw_scheme = false;
                continue;
            }
            flush(&scheme, &params, &mut out);
            just_saw_scheme = true;
            scheme = Some(word.to_string());
            params.clear();
        }
    }
    flush(&scheme, &params, &mut out);
    out
}

fn is_known_scheme(word: &str) -> bool {
    ["basic", "bearer", "digest", "negotiate"].contains(&word.to_ascii_lowercase().as_str())
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

/// The access a request needs: `repository:<name>:<actions>` scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    /// Repository name → sorted actions (`pull`, `push`, `delete`, `*`).
    repositories: BTreeMap<String, BTreeSet<String>>,
    /// Other scopes, verbatim (`registry:catalog:*`).
    other: BTreeSet<String>,
}

impl Scope {
    /// No scope (the `/v2/` ping).
    pub fn none() -> Scope {
        Scope::default()
    }

    /// Pull access to `repository`.
    pub fn pull(repository: &str) -> Scope {
        Scope::default().with(repository, &["pull"])
    }

    /// Pull and push access to `repository`.
    pub fn push(repository: &str) -> Scope {
        Scope::default().with(repository, &["pull", "push"])
    }

    /// Adds `actions` on `repository` (scope widening: a push adds `push` to `pull`; a
    /// cross-repository mount adds `repository:<from>:pull`).
    pub fn with(mut self, repository: &str, actions: &[&str]) -> Scope {
        let set = self.repositories.entry(repository.to_string()).or_default();
        set.extend(actions.iter().map(|a| a.to_string()));
        self
    }

    /// Adds every scope of `other`.
    pub fn union(mut self, other: &Scope) -> Scope {
        for (repo, actions) in &other.repositories {
            self.repositories
                .entry(repo.clone())
                .or_default()
                .extend(actions.iter().cloned());
        }
        self.other.extend(other.other.iter().cloned());
        self
    }

    /// Adds a scope string as the registry sent it in a challenge.
    pub fn with_raw(mut self, raw: &str) -> Scope {
        for one in raw.split(' ').filter(|s| !s.is_empty()) {
            let mut parts = one.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                // The name may contain a port-less host only; `repository:a/b:pull,push`.
                (Some("repository"), Some(name), Some(actions)) => {
                    let acts: Vec<&str> = actions.split(',').collect();
                    self = self.with(name, &acts);
                }
                _ => {
                    self.other.insert(one.to_string());
                }
            }
        }
        self
    }

    /// Whether no access is asked for.
    pub fn is_empty(&self) -> bool {
        self.repositories.is_empty() && self.other.is_empty()
    }

    /// Whether `self` grants everything `wanted` asks for.
    pub fn covers(&self, wanted: &Scope) -> bool {
        wanted.repositories.iter().all(|(repo, acts)| {
            self.repositories
                .get(repo)
                .is_some_and(|have| have.contains("*") || acts.is_subset(have))
        }) && wanted.other.is_subset(&self.other)
    }

    /// The scope strings to send as `scope=` parameters, one per resource.
    pub fn to_params(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .repositories
            .iter()
            .map(|(repo, acts)| {
                format!(
                    "repository:{repo}:{}",
                    acts.iter().cloned().collect::<Vec<_>>().join(",")
                )
            })
            .collect();
        out.extend(self.other.iter().cloned());
        out
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_params().join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#;
        assert_eq!(
            parse_challenges(h),
            vec![Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/debian:pull".into()),
            }]
        );
    }

    #[test]
    fn parses_basic_and_several_challenges() {
        assert_eq!(
            parse_challenges(r#"Basic realm="peers-realm""#),
            vec![Challenge::Basic]
        );
        let h = r#"Basic realm="x", Bearer realm="http://t/token", service=reg"#;
        let c = parse_challenges(h);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], Challenge::Basic);
        assert!(matches!(&c[1], Challenge::Bearer { service: Some(s), .. } if s == "reg"));
        assert!(parse_challenges("Negotiate").is_empty());
        assert!(parse_challenges("").is_empty());
        assert!(
            parse_challenges(r#"Bearer service="x""#).is_empty(),
            "bearer without realm"
        );
    }

    #[test]
    fn hostile_headers_never_panic() {
        let alphabet: Vec<char> = "Bearer Basic realm=\"\\,= \tservice scope é€😀xyz"
            .chars()
            .collect();
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..5000 {
            let mut h = String::new();
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                h.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let _ = parse_challenges(&h);
            let _ = crate::registry::Reference::parse(&h);
        }
    }

    #[test]
    fn scopes_widen_and_cover() {
        let pull = Scope::pull("a");
        let push = Scope::push("a").with("b", &["pull"]);
        assert!(push.covers(&pull));
        assert!(!pull.covers(&push));
        assert_eq!(
            push.to_params(),
            vec!["repository:a:pull,push", "repository:b:pull"]
        );
        let raw = Scope::none().with_raw("repository:a:push,pull");
        assert!(
            raw.covers(&push.clone().union(&Scope::none()).with("a", &[]))
                || raw.covers(&Scope::push("a"))
        );
        assert!(Scope::none().with("a", &["*"]).covers(&Scope::push("a")));
    }
}
