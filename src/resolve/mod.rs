//! Image resolution for deployers: which image to run, by a fixed priority, from the `[image]`
//! section of a config file.
//!
//! | rule | key | answer |
//! |---|---|---|
//! | 1 | `digest` | `{name}@{digest}` (immutable) |
//! | 2 | `tag_override` | `{name}:{tag_override}` |
//! | 3 | `version` | the highest tag of `{name}` in the registry matching the semver constraint (pre-releases only when the constraint names one) |
//! | 4 | `image` | the full reference as written |
//! | 5 | a Dockerfile | the first of `dockerfiles` (default `./Dockerfile`, `./v3/Dockerfile`, `./deploy/Dockerfile`) that exists, built and tagged `{name}:{version}-{gitsha}` |
//!
//! There is no default image: with nothing configured, [`resolve`] fails with "no image
//! configured". Verification before use (`verify_signature`, `verify_provenance`, …) is parsed
//! in `verification.rs` and carried in the [`Resolution`]; the caller enforces it with
//! [`crate::sign::verify::enforce`]. What it owns: the `[image]` model and the decision. What it does not: talking to
//! the registry (the caller passes a tag lister) or pulling and building ([`crate::ops::ensure`]).
use std::path::{Path, PathBuf};

use serde::Serialize;
use toml::{Table, Value};

mod verification;
pub use verification::Verification;

/// The default Dockerfile search order for rule 5.
pub const DEFAULT_DOCKERFILES: &[&str] =
    &["./Dockerfile", "./v3/Dockerfile", "./deploy/Dockerfile"];

const KEYS: &[&str] = &[
    "name",
    "digest",
    "tag_override",
    "version",
    "image",
    "dockerfiles",
    "context",
    "build_version",
];

/// The `[image]` section.
#[derive(Debug, Clone, Default)]
pub struct ImageSection {
    /// The config file.
    pub file: PathBuf,
    /// The repository, e.g. `ghcr.io/org/sandbox`.
    pub name: Option<String>,
    /// Rule 1.
    pub digest: Option<crate::oci::Digest>,
    /// Rule 2.
    pub tag_override: Option<String>,
    /// Rule 3.
    pub version: Option<semver::VersionReq>,
    /// Rule 4.
    pub image: Option<String>,
    /// Rule 5: where to look for a Dockerfile, relative to the file's directory.
    pub dockerfiles: Vec<String>,
    /// Rule 5: the build context, relative to the file's directory.
    pub context: String,
    /// Rule 5: the `{version}` of the tag (else `[family].version`, else `0.0.0`).
    pub build_version: String,
    /// What to verify before the image is used.
    pub verification: Verification,
}

/// Which rule chose the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// 1: a pinned digest.
    Digest,
    /// 2: a tag override.
    TagOverride,
    /// 3: a semver constraint against the registry's tags.
    Version,
    /// 4: a full reference.
    Image,
    /// 5: a local Dockerfile build.
    LocalBuild,
}

impl Rule {
    /// The rule's number in the priority order.
    pub fn number(self) -> u8 {
        match self {
            Rule::Digest => 1,
            Rule::TagOverride => 2,
            Rule::Version => 3,
            Rule::Image => 4,
            Rule::LocalBuild => 5,
        }
    }
}

/// The answer.
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    /// The image reference.
    pub reference: String,
    /// The rule that chose it.
    pub rule: Rule,
    /// Its number.
    pub rule_number: u8,
    /// Why, in words.
    pub reason: String,
    /// Rule 5: the Dockerfile.
    pub dockerfile: Option<PathBuf>,
    /// Rule 5: the context.
    pub context: Option<PathBuf>,
    /// A Dockerfile that rules 1–4 can fall back to (`kiln ensure --build-fallback`).
    pub fallback: Option<(PathBuf, PathBuf, String)>,
    /// What to verify before the image is used (the caller enforces it).
    #[serde(skip)]
    pub verification: Verification,
}

/// Why resolution failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be read.
    #[error("cannot read `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML.
    #[error("`{}`: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The message.
        message: String,
    },
    /// An `[image]` key kiln does not know.
    #[error("`{}`: unknown key `image.{key}` (value `{value}`); known: {}", file.display(), KEYS.join(", "))]
    UnknownKey {
        /// The file.
        file: PathBuf,
        /// The key.
        key: String,
        /// Its value.
        value: String,
    },
    /// A value that is not valid.
    #[error("`{}`: `image.{key}` = `{value}`: {reason}", file.display())]
    BadValue {
        /// The file.
        file: PathBuf,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// Nothing configured.
    #[error("no image configured in `{}`: set `digest`, `tag_override`, `version` or `image` under [image], or `name` with a Dockerfile in {}", file.display(), searched.join(", "))]
    NoImage {
        /// The file.
        file: PathBuf,
        /// The Dockerfiles looked for.
        searched: Vec<String>,
    },
    /// A rule needs `name`.
    #[error("`{}`: `image.{key}` needs `image.name` (the repository)", file.display())]
    NeedsName {
        /// The file.
        file: PathBuf,
        /// The key that needs it.
        key: &'static str,
    },
    /// The registry's tag list cannot be read.
    #[error("cannot list the tags of `{repository}`")]
    Tags {
        /// The repository.
        repository: String,
        /// The cause.
        #[source]
        source: Box<crate::registry::Error>,
    },
    /// A version constraint no tag matches, and no lower rule applies.
    #[error("no tag of `{repository}` matches `{constraint}` (tags: {tags})")]
    NoMatch {
        /// The repository.
        repository: String,
        /// The constraint.
        constraint: String,
        /// The tags there are.
        tags: String,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads the `[image]` section of `path`; `Ok(None)` when there is none. Other tables (such as
/// `[family]` and `[[registry]]`) belong to other commands.
pub fn load(path: &Path) -> Result<Option<ImageSection>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses `text` as the contents of `path`.
pub fn parse(path: &Path, text: &str) -> Result<Option<ImageSection>> {
    let table: Table = toml::from_str(text).map_err(|e| Error::Syntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let file = path.to_path_buf();
    let Some(v) = table.get("image") else {
        return Ok(None);
    };
    let bad = |key: &str, value: &Value, reason: &str| Error::BadValue {
        file: file.clone(),
        key: key.to_string(),
        value: show(value),
        reason: reason.to_string(),
    };
    let Value::Table(t) = v else {
        return Err(bad("", v, "expected a table `[image]`"));
    };
    for (k, v) in t {
        if !KEYS.contains(&k.as_str()) && !verification::KEYS.contains(&k.as_str()) {
            return Err(Error::UnknownKey {
                file: file.clone(),
                key: k.clone(),
                value: show(v),
            });
        }
    }
    let string = |k: &str| -> Result<Option<String>> {
        match t.get(k) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(v) => Err(bad(k, v, "expected a non-empty string")),
        }
    };
    let mut s = ImageSection {
        file: file.clone(),
        name: string("name")?,
        tag_override: string("tag_override")?,
        image: string("image")?,
        context: string("context")?.unwrap_or_else(|| ".".into()),
        verification: verification::parse(&file, t)?,
        ..Default::default()
    };
    if let Some(d) = string("digest")? {
        s.digest = Some(
            d.parse()
                .map_err(|e: crate::oci::Error| bad("digest", &t["digest"], &e.to_string()))?,
        );
    }
    if let Some(v) = string("version")? {
        s.version = Some(semver::VersionReq::parse(&v).map_err(|e| {
            bad(
                "version",
                &t["version"],
                &format!("not a semver constraint: {e}"),
            )
        })?);
    }
    if let Some(r) = &s.image {
        crate::registry::Reference::parse(r)
            .map_err(|e| bad("image", &t["image"], &e.to_string()))?;
    }
    if let Some(tag) = &s.tag_override {
        if !crate::bake::template::is_tag(tag) {
            return Err(bad("tag_override", &t["tag_override"], "not a valid tag"));
        }
    }
    s.dockerfiles = match t.get("dockerfiles") {
        None => DEFAULT_DOCKERFILES.iter().map(|s| s.to_string()).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                v => Err(bad("dockerfiles", v, "expected a path")),
            })
            .collect::<Result<_>>()?,
        Some(v) => Err(bad("dockerfiles", v, "expected an array of paths"))?,
    };
    let family_version = table
        .get("family")
        .and_then(|f| f.get("version"))
        .and_then(Value::as_str)
        .map(str::to_string);
    s.build_version = string("build_version")?
        .or(family_version)
        .unwrap_or_else(|| "0.0.0".into());
    Ok(Some(s))
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => d.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(show).collect::<Vec<_>>().join(", ")),
        Value::Table(_) => "(a table)".into(),
    }
}

/// Picks the highest tag matching `req` (tags may have a leading `v`; others are ignored).
pub fn best_tag<'a>(tags: &'a [String], req: &semver::VersionReq) -> Option<&'a String> {
    tags.iter()
        .filter_map(|t| {
            semver::Version::parse(t.strip_prefix('v').unwrap_or(t))
                .ok()
                .map(|v| (v, t))
        })
        .filter(|(v, _)| req.matches(v))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, t)| t)
}

/// Resolves `section` (`None`: no `[image]` section in `file`). `list_tags` reads a
/// repository's tags from its registry; `gitsha` names the work tree's commit for rule 5.
pub fn resolve(
    file: &Path,
    section: Option<&ImageSection>,
    list_tags: &dyn Fn(&str) -> Result<Vec<String>, crate::registry::Error>,
    gitsha: Option<&str>,
) -> Result<Resolution> {
    let defaults: Vec<String> = DEFAULT_DOCKERFILES.iter().map(|s| s.to_string()).collect();
    let Some(s) = section else {
        return Err(Error::NoImage {
            file: file.to_path_buf(),
            searched: defaults,
        });
    };
    let dir = s
        .file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let found = s
        .dockerfiles
        .iter()
        .map(|d| (d, dir.join(d)))
        .find(|(_, p)| p.is_file());
    let local = match (&s.name, &found) {
        (Some(name), Some((rel, path))) => {
            let sha: String = gitsha.unwrap_or("local").chars().take(12).collect();
            Some((
                path.clone(),
                dir.join(&s.context),
                format!("{name}:{}-{sha}", s.build_version),
                rel.to_string(),
            ))
        }
        _ => None,
    };
    let fallback = local
        .as_ref()
        .map(|(p, c, r, _)| (p.clone(), c.clone(), r.clone()));
    let answer = |reference: String, rule: Rule, reason: String| Resolution {
        reference,
        rule,
        rule_number: rule.number(),
        reason,
        dockerfile: None,
        context: None,
        fallback: fallback.clone(),
        verification: s.verification.clone(),
    };
    let name = |key: &'static str| {
        s.name.clone().ok_or_else(|| Error::NeedsName {
            file: s.file.clone(),
            key,
        })
    };
    if let Some(d) = &s.digest {
        return Ok(answer(
            format!("{}@{d}", name("digest")?),
            Rule::Digest,
            format!("rule 1: `digest` pins {d}"),
        ));
    }
    if let Some(t) = &s.tag_override {
        return Ok(answer(
            format!("{}:{t}", name("tag_override")?),
            Rule::TagOverride,
            format!("rule 2: `tag_override` = {t}"),
        ));
    }
    let mut missed = None;
    if let Some(req) = &s.version {
        let repo = name("version")?;
        let tags = list_tags(&repo).map_err(|e| Error::Tags {
            repository: repo.clone(),
            source: Box::new(e),
        })?;
        if let Some(t) = best_tag(&tags, req) {
            return Ok(answer(
                format!("{repo}:{t}"),
                Rule::Version,
                format!(
                    "rule 3: `version` = {req} matched {t}, the highest of {} tag(s)",
                    tags.len()
                ),
            ));
        }
        missed = Some(Error::NoMatch {
            repository: repo,
            constraint: req.to_string(),
            tags: tags.join(", "),
        });
    }
    let note = missed
        .as_ref()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    if let Some(i) = &s.image {
        return Ok(answer(
            i.clone(),
            Rule::Image,
            format!("rule 4: `image` = {i}{note}"),
        ));
    }
    if let Some((path, context, reference, rel)) = local {
        let mut a = answer(
            reference,
            Rule::LocalBuild,
            format!("rule 5: build {rel}{note}"),
        );
        a.dockerfile = Some(path);
        a.context = Some(context);
        return Ok(a);
    }
    Err(missed.unwrap_or(Error::NoImage {
        file: s.file.clone(),
        searched: s.dockerfiles.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_match_wins_and_prereleases_need_asking() {
        let tags: Vec<String> = ["1.2.0", "1.10.0", "2.0.0-rc1", "latest"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = |s: &str| semver::VersionReq::parse(s).unwrap();
        assert_eq!(best_tag(&tags, &r("^1")).unwrap(), "1.10.0");
        assert_eq!(best_tag(&tags, &r(">=1.0")).unwrap(), "1.10.0");
        assert_eq!(best_tag(&tags, &r("~1.2")).unwrap(), "1.2.0");
        assert_eq!(best_tag(&tags, &r(">=2.0.0-rc1")).unwrap(), "2.0.0-rc1");
        assert!(best_tag(&tags, &r("^3")).is_none());
    }
}
