//! Mirrors and per-registry settings, in the shape of containers' `registries.conf` (v2):
//!
//! ```toml
//! [[registry]]
//! prefix = "docker.io"
//! insecure = false
//! mirrors = [{ location = "127.0.0.1:5000/mirror", insecure = true }]
//! ```
//!
//! A pull of a reference under `prefix` tries each mirror in order, with the prefix replaced by
//! the mirror's `location`, then the upstream (`location` of the entry, else the prefix itself).
//! Pushes go to the upstream only. The longest matching prefix wins; a prefix matches at a path
//! boundary only (`docker.io/lib` does not match `docker.io/library/x`). Parsing the TOML file is
//! the caller's job: these types only derive `Deserialize`.
use serde::Deserialize;

use super::error::{Error, Result};
use super::reference::Reference;

/// Mirrors and settings for every configured registry prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RegistriesConfig {
    /// The `[[registry]]` entries.
    #[serde(default, rename = "registry")]
    pub registries: Vec<RegistryEntry>,
}

/// One `[[registry]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegistryEntry {
    /// The references this entry applies to: `host[:port][/path]` (default: `location`, as in
    /// registries.conf).
    #[serde(default)]
    pub prefix: String,
    /// Where the prefix really lives (rewrites pulls and pushes); default: the prefix itself.
    #[serde(default)]
    pub location: Option<String>,
    /// Skip TLS verification and allow plain HTTP for the upstream.
    #[serde(default)]
    pub insecure: bool,
    /// Refuse to pull from or push to this prefix.
    #[serde(default)]
    pub blocked: bool,
    /// Mirrors, tried in order before the upstream for pulls (`mirrors = [...]`, or
    /// registries.conf's `[[registry.mirror]]` tables).
    #[serde(default, alias = "mirror")]
    pub mirrors: Vec<Mirror>,
    /// Which pulls may use the mirrors.
    #[serde(default)]
    pub pull_from_mirror: MirrorPolicy,
}

/// A mirror of a registry prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Mirror {
    /// `host[:port][/path]` replacing the prefix.
    pub location: String,
    /// Skip TLS verification and allow plain HTTP for this mirror.
    #[serde(default)]
    pub insecure: bool,
}

/// Which references may be pulled from mirrors (registries.conf `pull-from-mirror`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MirrorPolicy {
    /// Every pull.
    #[default]
    All,
    /// Only pulls by digest (a mirror's tags may lag behind).
    DigestOnly,
    /// Only pulls by tag.
    TagOnly,
}

/// One place to try a pull from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSource {
    /// The reference rewritten for this source.
    pub reference: Reference,
    /// Whether this source is a mirror (not the upstream).
    pub mirror: bool,
}

/// Whether `name` (`host/path`) is under `prefix` at a path boundary.
fn has_prefix(name: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    name == prefix
        || name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Replaces `prefix` with `location` in `r`'s name, keeping tag and digest.
fn rewrite(r: &Reference, prefix: &str, location: &str) -> Result<Reference> {
    let name = r.name();
    let rest = &name[prefix.trim_end_matches('/').len()..];
    let mut text = format!("{}{rest}", location.trim_end_matches('/'));
    if let Some(t) = r.tag() {
        text.push(':');
        text.push_str(t);
    }
    if let Some(d) = r.digest() {
        text.push('@');
        text.push_str(&d.to_string());
    }
    Reference::parse(&text).map_err(|e| Error::MirrorConfig {
        prefix: prefix.to_string(),
        reason: format!("rewriting `{r}` with `{location}` gives an invalid reference: {e}"),
    })
}

impl RegistryEntry {
    /// The effective prefix: `prefix`, else `location`.
    pub fn effective_prefix(&self) -> &str {
        if self.prefix.is_empty() {
            self.location.as_deref().unwrap_or("")
        } else {
            &self.prefix
        }
    }
}

impl RegistriesConfig {
    /// The entry with the longest prefix matching `r`, if any.
    pub fn entry_for(&self, r: &Reference) -> Option<&RegistryEntry> {
        let name = r.name();
        self.registries
            .iter()
            .filter(|e| !e.effective_prefix().is_empty() && has_prefix(&name, e.effective_prefix()))
            .max_by_key(|e| e.effective_prefix().len())
    }

    /// Whether `registry` (a host) is marked insecure, as an upstream location or a mirror.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let host_of = |loc: &str| loc.split('/').next().unwrap_or(loc).to_string();
        self.registries.iter().any(|e| {
            (e.insecure
                && host_of(e.location.as_deref().unwrap_or(e.effective_prefix())) == registry)
                || e.mirrors
                    .iter()
                    .any(|m| m.insecure && host_of(&m.location) == registry)
        })
    }

    /// Where to pull `r` from, in order: the mirrors its policy allows, then the upstream.
    pub fn pull_sources(&self, r: &Reference) -> Result<Vec<PullSource>> {
        let Some(entry) = self.entry_for(r) else {
            return Ok(vec![PullSource {
                reference: r.clone(),
                mirror: false,
            }]);
        };
        if entry.blocked {
            return Err(Error::MirrorConfig {
                prefix: entry.effective_prefix().to_string(),
                reason: format!("pulling `{r}` is blocked by the configuration"),
            });
        }
        let by_digest = r.digest().is_some();
        let allowed = match entry.pull_from_mirror {
            MirrorPolicy::All => true,
            MirrorPolicy::DigestOnly => by_digest,
            MirrorPolicy::TagOnly => !by_digest,
        };
        let mut out = Vec::new();
        if allowed {
            for m in &entry.mirrors {
                out.push(PullSource {
                    reference: rewrite(r, entry.effective_prefix(), &m.location)?,
                    mirror: true,
                });
            }
        }
        out.push(PullSource {
            reference: self.push_target(r)?,
            mirror: false,
        });
        Ok(out)
    }

    /// Where to push `r`: the upstream location (never a mirror).
    pub fn push_target(&self, r: &Reference) -> Result<Reference> {
        match self.entry_for(r) {
            Some(e) if e.blocked => Err(Error::MirrorConfig {
                prefix: e.effective_prefix().to_string(),
                reason: format!("`{r}` is blocked by the configuration"),
            }),
            Some(e) => match &e.location {
                Some(loc) => rewrite(r, e.effective_prefix(), loc),
                None => Ok(r.clone()),
            },
            None => Ok(r.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RegistriesConfig {
        RegistriesConfig {
            registries: vec![RegistryEntry {
                prefix: "docker.io".into(),
                mirrors: vec![
                    Mirror {
                        location: "127.0.0.1:5000/mirror".into(),
                        insecure: true,
                    },
                    Mirror {
                        location: "mirror.example".into(),
                        insecure: false,
                    },
                ],
                ..RegistryEntry::default()
            }],
        }
    }

    #[test]
    fn mirrors_come_first_then_upstream() {
        let r = Reference::parse("debian:12").unwrap();
        let s = cfg().pull_sources(&r).unwrap();
        let names: Vec<String> = s.iter().map(|p| p.reference.to_string()).collect();
        assert_eq!(
            names,
            vec![
                "127.0.0.1:5000/mirror/library/debian:12",
                "mirror.example/library/debian:12",
                "docker.io/library/debian:12",
            ]
        );
        assert!(s[0].mirror && !s[2].mirror);
        assert!(cfg().is_insecure("127.0.0.1:5000"));
        assert!(!cfg().is_insecure("mirror.example"));
        let other = Reference::parse("quay.io/a/b").unwrap();
        assert_eq!(cfg().pull_sources(&other).unwrap().len(), 1);
        assert_eq!(cfg().push_target(&r).unwrap(), r);
    }

    #[test]
    fn registries_conf_spellings_are_accepted() {
        // `[[registry]] location = "…"  [[registry.mirror]] location = "…"`, as JSON.
        let c: RegistriesConfig = serde_json::from_value(serde_json::json!({
            "registry": [{"location": "quay.io", "insecure": true,
                          "mirror": [{"location": "mirror.local/quay"}],
                          "pull-from-mirror": "digest-only"}]
        }))
        .unwrap();
        let by_tag = Reference::parse("quay.io/a/b:1").unwrap();
        assert_eq!(
            c.pull_sources(&by_tag).unwrap().len(),
            1,
            "digest-only skips tags"
        );
        let d = crate::oci::Digest::sha256(b"x");
        let by_digest = Reference::parse(&format!("quay.io/a/b@{d}")).unwrap();
        let s = c.pull_sources(&by_digest).unwrap();
        assert_eq!(
            s[0].reference.to_string(),
            format!("mirror.local/quay/a/b@{d}")
        );
        assert!(c.is_insecure("quay.io"));
    }

    #[test]
    fn prefix_matches_at_path_boundaries_only() {
        assert!(has_prefix("docker.io/library/x", "docker.io/library"));
        assert!(!has_prefix("docker.io/library/x", "docker.io/lib"));
    }
}
