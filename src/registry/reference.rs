//! Image references (`[registry/]repository[:tag][@digest]`) with Docker's normalisation.
//!
//! The grammar is distribution's `reference` package (`reference/regexp.go`): a domain is
//! recognised only when the first path component contains a `.` or a `:` or is `localhost`;
//! otherwise the reference is on Docker Hub (`docker.io`), and a single-component Hub name gets
//! the `library/` prefix. Path components are lower-case alphanumerics joined by `.`, `_`, `__`
//! or runs of `-`; tags are `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; the whole name is at most 255
//! characters. A reference without tag or digest means `:latest`.
use std::fmt;
use std::str::FromStr;

use super::error::{Error, Result};
use crate::oci::Digest;

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The tag a reference without tag or digest means.
pub const DEFAULT_TAG: &str = "latest";
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises `s` (`debian` → `docker.io/library/debian:latest`).
    pub fn parse(s: &str) -> Result<Reference> {
        s.parse()
    }

    /// A reference to `repository` in `registry`, with no tag or digest yet.
    pub fn new(registry: &str, repository: &str) -> Result<Reference> {
        Reference::parse(&format!("{registry}/{repository}")).map(|mut r| {
            r.tag = None;
            r
        })
    }

    /// The registry host, with its port if any (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host to send API requests to: `registry-1.docker.io` for Docker Hub, else
    /// [`Reference::registry`].
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// The repository path inside the registry (`library/debian`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any. A reference parsed with neither tag nor digest has tag `latest`.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to put after `/manifests/`: the digest when there is one, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository with `tag` and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference> {
        validate_tag(tag).map_err(|reason| Error::InvalidReference {
            reference: format!("{}:{tag}", self.name()),
            reason,
        })?;
        Ok(Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to `digest` (the tag, if any, is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same registry with another repository (for cross-repository mounts).
    pub fn with_repository(&self, repository: &str) -> Result<Reference> {
        Reference::new(&self.registry, repository)
    }

    /// The short form Docker prints: Hub names without `docker.io/` and `library/`. A Hub
    /// repository whose first component would read as a registry (`docker.io/a.b/c`,
    /// `docker.io/localhost/c`) keeps `docker.io/`, so the short form parses back to the same
    /// reference.
    pub fn familiar(&self) -> String {
        let first = self.repository.split('/').next().unwrap_or("");
        let looks_like_a_host =
            self.repository.contains('/') && (first.contains(['.', ':']) || first == "localhost");
        let short = self
            .repository
            .strip_prefix("library/")
            .filter(|r| !r.contains('/'))
            .unwrap_or(&self.repository);
        // A bare 64-digit hex name reads as an image ID, which a reference may not be.
        let looks_like_an_id = short.len() == 64 && short.bytes().all(|b| b.is_ascii_hexdigit());
        let mut s = if self.registry == DOCKER_HUB && !looks_like_a_host && !looks_like_an_id {
            short.to_string()
        } else {
            self.name()
        };
        push_suffix(&mut s, self.tag.as_deref(), self.digest.as_ref());
        s
    }
}

/// Maps a registry name to the host that serves its API (Docker Hub's quirk).
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

fn push_suffix(s: &mut String, tag: Option<&str>, digest: Option<&Digest>) {
    if let Some(t) = tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = digest {
        s.push('@');
        s.push_str(&d.to_string());
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        push_suffix(&mut s, self.tag.as_deref(), self.digest.as_ref());
        f.write_str(&s)
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(input: &str) -> Result<Reference> {
        parse(input).map_err(|reason| Error::InvalidReference {
            reference: input.chars().take(300).collect(),
            reason,
        })
    }
}

fn parse(input: &str) -> std::result::Result<Reference, String> {
    if input.is_empty() {
        return Err("empty reference".into());
    }
    // The digest is everything after the first '@'.
    let (rest, digest) = match input.split_once('@') {
        Some((r, d)) => {
            let digest: Digest = d
                .parse()
                .map_err(|e: crate::oci::Error| format!("bad digest: {e}"))?;
            (r, Some(digest))
        }
        None => (input, None),
    };
    // A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let t = &rest[last_slash + i + 1..];
            validate_tag(t)?;
            (&rest[..last_slash + i], Some(t.to_string()))
        }
        None => (rest, None),
    };
    if name.is_empty() {
        return Err("missing repository name".into());
    }
    if name.len() > NAME_MAX {
        return Err(format!("repository name longer than {NAME_MAX} characters"));
    }
    if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        // distribution's `ParseAnyReference` treats this as an image ID; a name it is not.
        return Err("cannot use a 64-character hexadecimal string as a repository name".into());
    }
    let (registry, path) = split_domain(name);
    if let Some(reg) = &registry {
        validate_domain(reg)?;
    }
    if path.is_empty() {
        return Err("missing repository name".into());
    }
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("repository name must be lowercase".into());
    }
    for component in path.split('/') {
        validate_component(component)?;
    }
    let (registry, mut repository) = match registry {
        Some(r) if r == "index.docker.io" => (DOCKER_HUB.to_string(), path.to_string()),
        Some(r) => (r, path.to_string()),
        None => (DOCKER_HUB.to_string(), path.to_string()),
    };
    if registry == DOCKER_HUB && !repository.contains('/') {
        repository = format!("library/{repository}");
    }
    // distribution checks the length of the normalised name (`docker.io/library/…`), so a
    // short form that fits can still be too long.
    if registry.len() + 1 + repository.len() > NAME_MAX {
        return Err(format!(
            "repository name longer than {NAME_MAX} characters once normalised to `{registry}/…`"
        ));
    }
    let tag = match (&tag, &digest) {
        (None, None) => Some(DEFAULT_TAG.to_string()),
        _ => tag,
    };
    Ok(Reference {
        registry,
        repository,
        tag,
        digest,
    })
}

/// Splits off the registry when the first component looks like one.
fn split_domain(name: &str) -> (Option<String>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (Some(first.to_string()), rest)
        }
        _ => (None, name),
    }
}

fn validate_domain(domain: &str) -> std::result::Result<(), String> {
    let bad = || format!("invalid registry host `{domain}`");
    // IPv6 literal: [::1]:5000
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(bad());
        }
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match domain.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid port in registry host `{domain}`"));
        }
    }
    if domain.starts_with('[') {
        return Ok(());
    }
    for label in host.split('.') {
        let b = label.as_bytes();
        let ok = !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

/// A path component: `[a-z0-9]+` joined by `.`, `_`, `__` or any run of `-`.
fn validate_component(c: &str) -> std::result::Result<(), String> {
    let bad = || format!("invalid repository path component `{c}`");
    let b = c.as_bytes();
    if b.is_empty() {
        return Err("empty repository path component".into());
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(bad());
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

fn validate_tag(t: &str) -> std::result::Result<(), String> {
    let b = t.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    if b.is_empty() {
        return Err("empty tag".into());
    }
    if b.len() > TAG_MAX {
        return Err(format!("tag longer than {TAG_MAX} characters"));
    }
    if !word(b[0]) || !b.iter().all(|&x| word(x) || x == b'.' || x == b'-') {
        return Err(format!("invalid tag `{t}`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_docker_hub_names() {
        assert_eq!(norm("debian"), "docker.io/library/debian:latest");
        assert_eq!(norm("debian:12"), "docker.io/library/debian:12");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            norm("index.docker.io/library/debian"),
            "docker.io/library/debian:latest"
        );
        assert_eq!(norm("docker.io/debian"), "docker.io/library/debian:latest");
        let r = Reference::parse("debian").unwrap();
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.familiar(), "debian:latest");
    }

    /// Found by the `reference` fuzz target: the familiar form of a Hub repository whose first
    /// component holds a `.` parsed back as that registry.
    #[test]
    fn the_familiar_form_parses_back_to_the_same_reference() {
        for s in [
            "docker.io/ldocker.io/lirbary/stb",
            "docker.io/localhost/app:1",
            "docker.io/a.b/c",
            "docker.io/library/a.b",
            "debian",
            "user/app:2",
            "ghcr.io/o/r:v1",
            // found by the fuzz target too: the short form is an image ID
            "docker.io/2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881",
        ] {
            let r = Reference::parse(s).unwrap();
            assert_eq!(Reference::parse(&r.familiar()).unwrap(), r, "{s}");
        }
        assert_eq!(
            Reference::parse("docker.io/a.b/c").unwrap().familiar(),
            "docker.io/a.b/c:latest"
        );
    }

    /// Found by the `reference` fuzz target: a 255-character short name was accepted, but its
    /// normalised form (`docker.io/…`) is longer than 255 and did not parse back.
    #[test]
    fn the_name_length_limit_applies_to_the_normalised_name() {
        let short = format!("{}/a", "j".repeat(253));
        assert_eq!(short.len(), 255);
        let e = Reference::parse(&short).unwrap_err().to_string();
        assert!(e.contains("once normalised"), "{e}");
        let fits = format!("{}/a", "j".repeat(255 - "docker.io/".len() - 2));
        let r = Reference::parse(&fits).unwrap();
        assert_eq!(r.name().len(), 255);
        assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
        // `library/` counts too.
        assert!(Reference::parse(&"k".repeat(240)).is_err());
    }

    #[test]
    fn parses_hosts_ports_tags_and_digests() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = Reference::parse(&format!("127.0.0.1:5000/a/b-c__d:v1.2@{d}")).unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "a/b-c__d");
        assert_eq!(r.tag(), Some("v1.2"));
        assert_eq!(r.digest().unwrap().to_string(), d);
        assert_eq!(r.manifest_reference(), d);
        let r = Reference::parse(&format!("localhost/app@{d}")).unwrap();
        assert_eq!(r.registry(), "localhost");
        assert_eq!(r.tag(), None);
        let r = Reference::parse("localhost:5000/app").unwrap();
        assert_eq!(r.tag(), Some("latest"));
        let r = Reference::parse("[::1]:5000/app:x").unwrap();
        assert_eq!(r.registry(), "[::1]:5000");
        assert_eq!(r.to_string(), "[::1]:5000/app:x");
    }

    #[test]
    fn rejects_malformed_references() {
        for bad in [
            "",
            "Debian",
            "docker.io/Library/debian",
            "debian:",
            "debian:-x",
            "a//b",
            "a/b/",
            "-a",
            "a@sha256:123",
            "a:b:c",
            "host_name.com/app",
            "host.com:port/app",
            &"a".repeat(256),
            &format!("a:{}", "t".repeat(129)),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            let err = Reference::parse(bad).expect_err(bad);
            assert!(
                err.to_string().starts_with("invalid image reference"),
                "{err}"
            );
        }
    }

    #[test]
    fn with_tag_and_repository() {
        let r = Reference::parse("reg.example/a:1").unwrap();
        assert_eq!(r.with_tag("2").unwrap().to_string(), "reg.example/a:2");
        assert!(r.with_tag("bad tag").is_err());
        assert_eq!(r.with_repository("b").unwrap().name(), "reg.example/b");
    }
}
