//! Reading `kiln.toml` into a [`Family`]: every key checked, every error naming the file, the
//! key and the value.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::template::Template;
use super::{Attest, Error, Family, Kind, Result, TagScheme, TargetSpec};
use crate::oci::Platform;

const TOP: &[&str] = &["family", "tags", "target", "image", "registry"];
const FAMILY: &[&str] = &[
    "name",
    "registry",
    "version",
    "title",
    "description",
    "source",
    "default_variant",
    "variants_dir",
    "variants",
    "targets",
    "target_name",
    "platforms",
    "required_labels",
    "size_budget",
    "build_args",
    "labels",
    "cache_to",
    "cache_from",
    "sbom",
    "provenance",
];
const TAGS: &[&str] = &["default", "variant", "other"];
const TARGET: &[&str] = &[
    "dockerfile",
    "context",
    "stage",
    "build_args",
    "labels",
    "platforms",
    "tags",
    "size_budget",
    "description",
    "repository",
    "cache_to",
    "cache_from",
    "sbom",
    "provenance",
];

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<Family> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Validates `text` as the contents of `path` (relative paths in it are relative to its
/// directory).
pub fn parse(path: &Path, text: &str) -> Result<Family> {
    let table: Table = toml::from_str(text).map_err(|e| Error::Syntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let cx = Cx { file: path };
    cx.keys(&table, "", TOP)?;
    let fam = match table.get("family") {
        Some(Value::Table(t)) => t,
        Some(v) => return Err(cx.bad("family", v, "expected a table `[family]`")),
        None => return Err(cx.missing("family", "the file has no `[family]` table")),
    };
    cx.keys(fam, "family.", FAMILY)?;
    let root = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let name = cx
        .string(fam, "family.", "name")?
        .ok_or_else(|| cx.missing("family.name", "the image name is required"))?;
    if !valid_repository(&name) {
        return Err(cx.bad(
            "family.name",
            &fam["name"],
            "expected a lower-case repository name such as `sandbox`",
        ));
    }
    let registry = cx.string(fam, "family.", "registry")?;
    let version_text = cx
        .string(fam, "family.", "version")?
        .ok_or_else(|| cx.missing("family.version", "the release version is required"))?;
    let version = semver::Version::parse(&version_text).map_err(|e| {
        cx.bad(
            "family.version",
            &fam["version"],
            &format!("not a semantic version: {e}"),
        )
    })?;
    let platforms = match cx.strings(fam, "family.", "platforms")? {
        Some(p) => cx.platforms("family.platforms", &p)?,
        None => vec![Platform::host()],
    };
    let default_budget = cx.size(fam, "family.", "size_budget")?;
    let family_cache_to = cx.cache(fam, "family.", "cache_to")?.unwrap_or_default();
    let family_cache_from = cx.cache(fam, "family.", "cache_from")?.unwrap_or_default();
    let family_attest = cx.attest(fam, "family.", Attest::default())?;
    let default_variant = cx
        .string(fam, "family.", "default_variant")?
        .unwrap_or_else(|| "full".into());
    let tags = match table.get("tags") {
        None => TagScheme::default(),
        Some(Value::Table(t)) => {
            cx.keys(t, "tags.", TAGS)?;
            let d = TagScheme::default();
            TagScheme {
                default: cx.templates(t, "tags.", "default")?.unwrap_or(d.default),
                variant: cx.templates(t, "tags.", "variant")?.unwrap_or(d.variant),
                other: cx.templates(t, "tags.", "other")?.unwrap_or(d.other),
            }
        }
        Some(v) => return Err(cx.bad("tags", v, "expected a table `[tags]`")),
    };
    let overrides = match table.get("target") {
        None => Table::new(),
        Some(Value::Table(t)) => t.clone(),
        Some(v) => return Err(cx.bad("target", v, "expected tables `[target.NAME]`")),
    };

    // Variants: listed, or discovered from the variants directory.
    let vdir_text = cx
        .string(fam, "family.", "variants_dir")?
        .unwrap_or_else(|| "variants".into());
    let vdir = root.join(&vdir_text);
    let file_for = |v: &str| {
        if v == default_variant {
            vdir.join("Dockerfile")
        } else {
            vdir.join(format!("Dockerfile.{v}"))
        }
    };
    let mut targets: Vec<TargetSpec> = Vec::new();
    let listed = cx.strings(fam, "family.", "variants")?;
    let variant_names: Vec<String> = match &listed {
        Some(l) => l.clone(),
        None => discover(&vdir, &default_variant),
    };
    for v in &variant_names {
        if !valid_target_name(v) {
            return Err(cx.bad(
                "family.variants",
                &Value::String(v.clone()),
                "a variant name is lower-case letters, digits and `-`",
            ));
        }
        let explicit = overrides.get(v).and_then(|t| t.get("dockerfile")).is_some();
        let dockerfile = file_for(v);
        if !explicit && !dockerfile.is_file() {
            return Err(Error::MissingFile {
                file: path.to_path_buf(),
                key: "family.variants".into(),
                value: v.clone(),
                path: dockerfile,
            });
        }
        targets.push(TargetSpec {
            name: v.clone(),
            kind: Kind::Variant,
            dockerfile,
            context: vdir.clone(),
            stage: None,
            build_args: BTreeMap::new(),
            labels: BTreeMap::new(),
            platforms: platforms.clone(),
            tags: if *v == default_variant {
                tags.default.clone()
            } else {
                tags.variant.clone()
            },
            size_budget: default_budget,
            description: None,
            repository: None,
            cache_to: family_cache_to.clone(),
            cache_from: family_cache_from.clone(),
            attest: family_attest,
        });
    }

    // Other targets: globs such as `ops/docker/*/Dockerfile`, named by `target_name`.
    let name_tpl = cx
        .string(fam, "family.", "target_name")?
        .unwrap_or_else(|| "{1}".into());
    for pattern in cx.strings(fam, "family.", "targets")?.unwrap_or_default() {
        for (file, caps) in glob(&root, &pattern) {
            let mut n = name_tpl.clone();
            for (i, c) in caps.iter().enumerate() {
                n = n.replace(&format!("{{{}}}", i + 1), c);
            }
            if !valid_target_name(&n) || !n.contains('-') {
                return Err(cx.bad(
                    "family.target_name",
                    &Value::String(name_tpl.clone()),
                    &format!("names `{}` as `{n}`, which is not a target name (expected {{category}}-{{purpose}}: lower-case letters, digits and `-`)", file.display()),
                ));
            }
            if targets.iter().any(|t| t.name == n) {
                return Err(cx.bad(
                    "family.targets",
                    &Value::String(pattern.clone()),
                    &format!("a second target is named `{n}`"),
                ));
            }
            targets.push(TargetSpec {
                name: n,
                kind: Kind::Other,
                context: file.parent().map(Path::to_path_buf).unwrap_or(root.clone()),
                dockerfile: file,
                stage: None,
                build_args: BTreeMap::new(),
                labels: BTreeMap::new(),
                platforms: platforms.clone(),
                tags: tags.other.clone(),
                size_budget: default_budget,
                description: None,
                repository: None,
                cache_to: family_cache_to.clone(),
                cache_from: family_cache_from.clone(),
                attest: family_attest,
            });
        }
    }

    // `[target.NAME]`: overrides of a known target, or a new one with its own `dockerfile`.
    for (tname, tv) in &overrides {
        let prefix = format!("target.{tname}.");
        let Value::Table(t) = tv else {
            return Err(cx.bad(&format!("target.{tname}"), tv, "expected a table"));
        };
        cx.keys(t, &prefix, TARGET)?;
        let idx = match targets.iter().position(|x| &x.name == tname) {
            Some(i) => i,
            None => {
                let Some(df) = cx.string(t, &prefix, "dockerfile")? else {
                    return Err(cx.bad(
                        &format!("target.{tname}"),
                        tv,
                        &format!("no variant or target is named `{tname}`, and the table gives no `dockerfile`"),
                    ));
                };
                let file = root.join(&df);
                targets.push(TargetSpec {
                    name: tname.clone(),
                    kind: Kind::Other,
                    context: file.parent().map(Path::to_path_buf).unwrap_or(root.clone()),
                    dockerfile: file,
                    stage: None,
                    build_args: BTreeMap::new(),
                    labels: BTreeMap::new(),
                    platforms: platforms.clone(),
                    tags: tags.other.clone(),
                    size_budget: default_budget,
                    description: None,
                    repository: None,
                    cache_to: family_cache_to.clone(),
                    cache_from: family_cache_from.clone(),
                    attest: family_attest,
                });
                targets.len() - 1
            }
        };
        let spec = &mut targets[idx];
        if let Some(df) = cx.string(t, &prefix, "dockerfile")? {
            spec.dockerfile = root.join(&df);
            if !spec.dockerfile.is_file() {
                return Err(Error::MissingFile {
                    file: path.to_path_buf(),
                    key: format!("{prefix}dockerfile"),
                    value: df,
                    path: spec.dockerfile.clone(),
                });
            }
        }
        if let Some(c) = cx.string(t, &prefix, "context")? {
            spec.context = root.join(c);
        }
        spec.stage = cx.string(t, &prefix, "stage")?.or(spec.stage.take());
        spec.build_args.extend(cx.map(t, &prefix, "build_args")?);
        spec.labels.extend(cx.map(t, &prefix, "labels")?);
        if let Some(p) = cx.strings(t, &prefix, "platforms")? {
            spec.platforms = cx.platforms(&format!("{prefix}platforms"), &p)?;
        }
        if let Some(tags) = cx.templates(t, &prefix, "tags")? {
            spec.tags = tags;
        }
        if let Some(b) = cx.size(t, &prefix, "size_budget")? {
            spec.size_budget = Some(b);
        }
        spec.description = cx.string(t, &prefix, "description")?;
        spec.repository = cx.string(t, &prefix, "repository")?;
        if let Some(c) = cx.cache(t, &prefix, "cache_to")? {
            spec.cache_to = c;
        }
        if let Some(c) = cx.cache(t, &prefix, "cache_from")? {
            spec.cache_from = c;
        }
        spec.attest = cx.attest(t, &prefix, spec.attest)?;
    }
    if targets.is_empty() {
        return Err(Error::NoTargets {
            file: path.to_path_buf(),
            dir: vdir,
        });
    }
    Ok(Family {
        file: path.to_path_buf(),
        root,
        name,
        registry,
        version,
        title: cx.string(fam, "family.", "title")?,
        description: cx.string(fam, "family.", "description")?,
        source: cx.string(fam, "family.", "source")?,
        default_variant,
        required_labels: cx
            .strings(fam, "family.", "required_labels")?
            .unwrap_or_default(),
        build_args: cx.map(fam, "family.", "build_args")?,
        labels: cx.map(fam, "family.", "labels")?,
        targets,
    })
}

/// `Dockerfile` is the default variant, `Dockerfile.NAME` the variant NAME; sorted, the
/// default first.
fn discover(dir: &Path, default_variant: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            if n == "Dockerfile" {
                Some(default_variant.to_string())
            } else {
                n.strip_prefix("Dockerfile.")
                    .filter(|v| valid_target_name(v) && *v != "dockerignore")
                    .map(str::to_string)
            }
        })
        .collect();
    names.sort_by_key(|n| (n != default_variant, n.clone()));
    names
}

/// Files matching `pattern` (`*` matches one path component), with what each `*` matched.
fn glob(root: &Path, pattern: &str) -> Vec<(PathBuf, Vec<String>)> {
    let mut found = vec![(root.to_path_buf(), Vec::new())];
    for part in pattern.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let mut next = Vec::new();
        for (dir, caps) in found {
            if part.contains('*') {
                let (pre, post) = part.split_once('*').unwrap_or((part, ""));
                let mut entries: Vec<String> = std::fs::read_dir(&dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| {
                        n.len() >= pre.len() + post.len()
                            && n.starts_with(pre)
                            && n.ends_with(post)
                            && !n.starts_with('.')
                    })
                    .collect();
                entries.sort();
                for n in entries {
                    let mut c = caps.clone();
                    c.push(n[pre.len()..n.len() - post.len()].to_string());
                    next.push((dir.join(&n), c));
                }
            } else if dir.join(part).exists() {
                next.push((dir.join(part), caps));
            }
        }
        found = next;
    }
    found.retain(|(p, _)| p.is_file());
    found
}

fn valid_target_name(n: &str) -> bool {
    !n.is_empty()
        && n.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn valid_repository(n: &str) -> bool {
    !n.is_empty()
        && n.split('/').all(|p| {
            !p.is_empty()
                && p.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
        })
}

/// Parses `800MB`, `1.5GiB`, `1024` (bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    (n >= 0.0).then_some((n * mult) as u64)
}

/// Parses a platform list entry, for `--set` and the file.
pub(super) fn platform(s: &str) -> std::result::Result<Platform, String> {
    s.parse::<Platform>().map_err(|e| e.to_string())
}

struct Cx<'a> {
    file: &'a Path,
}

impl Cx<'_> {
    fn bad(&self, key: &str, value: &Value, reason: &str) -> Error {
        Error::BadValue {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            value: show(value),
            reason: reason.to_string(),
        }
    }

    fn missing(&self, key: &str, reason: &str) -> Error {
        Error::BadValue {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            value: "(missing)".into(),
            reason: reason.to_string(),
        }
    }

    fn keys(&self, t: &Table, prefix: &str, allowed: &[&str]) -> Result<()> {
        for (k, v) in t {
            if !allowed.contains(&k.as_str()) {
                return Err(Error::UnknownKey {
                    file: self.file.to_path_buf(),
                    key: format!("{prefix}{k}"),
                    value: show(v),
                    known: allowed.join(", "),
                });
            }
        }
        Ok(())
    }

    fn string(&self, t: &Table, prefix: &str, k: &str) -> Result<Option<String>> {
        match t.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.bad(&format!("{prefix}{k}"), v, "expected a string")),
        }
    }

    /// A string or an array of strings.
    fn strings(&self, t: &Table, prefix: &str, k: &str) -> Result<Option<Vec<String>>> {
        match t.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    v => Err(self.bad(&format!("{prefix}{k}"), v, "expected a string")),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(v) => Err(self.bad(
                &format!("{prefix}{k}"),
                v,
                "expected a string or an array of strings",
            )),
        }
    }

    fn map(&self, t: &Table, prefix: &str, k: &str) -> Result<BTreeMap<String, String>> {
        match t.get(k) {
            None => Ok(BTreeMap::new()),
            Some(Value::Table(m)) => m
                .iter()
                .map(|(mk, v)| match v {
                    Value::String(s) => Ok((mk.clone(), s.clone())),
                    Value::Integer(i) => Ok((mk.clone(), i.to_string())),
                    Value::Boolean(b) => Ok((mk.clone(), b.to_string())),
                    v => Err(self.bad(&format!("{prefix}{k}.{mk}"), v, "expected a string")),
                })
                .collect(),
            Some(v) => Err(self.bad(&format!("{prefix}{k}"), v, "expected a table")),
        }
    }

    fn templates(&self, t: &Table, prefix: &str, k: &str) -> Result<Option<Vec<Template>>> {
        let Some(list) = self.strings(t, prefix, k)? else {
            return Ok(None);
        };
        list.iter()
            .map(|s| {
                Template::parse(s).map_err(|reason| {
                    self.bad(
                        &format!("{prefix}{k}"),
                        &Value::String(s.clone()),
                        &format!("bad tag template: {reason}"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// `cache_to` / `cache_from`: a string or a list of strings, placeholders checked.
    fn cache(&self, t: &Table, prefix: &str, k: &str) -> Result<Option<Vec<String>>> {
        let Some(list) = self.strings(t, prefix, k)? else {
            return Ok(None);
        };
        for s in &list {
            super::template::check_text(s).map_err(|reason| {
                self.bad(&format!("{prefix}{k}"), &Value::String(s.clone()), &reason)
            })?;
        }
        Ok(Some(list))
    }

    /// `sbom = true|false` and `provenance = true|false|"min"|"max"` over `base`.
    fn attest(&self, t: &Table, prefix: &str, base: Attest) -> Result<Attest> {
        use crate::attest::provenance::Mode;
        let mut a = base;
        match t.get("sbom") {
            None => {}
            Some(Value::Boolean(b)) => a.sbom = *b,
            Some(v) => return Err(self.bad(&format!("{prefix}sbom"), v, "expected true or false")),
        }
        match t.get("provenance") {
            None => {}
            Some(Value::Boolean(b)) => a.provenance = b.then_some(Mode::Min),
            Some(Value::String(m)) if m == "min" => a.provenance = Some(Mode::Min),
            Some(Value::String(m)) if m == "max" => a.provenance = Some(Mode::Max),
            Some(v) => {
                return Err(self.bad(
                    &format!("{prefix}provenance"),
                    v,
                    "expected true, false, \"min\" or \"max\"",
                ))
            }
        }
        Ok(a)
    }

    fn size(&self, t: &Table, prefix: &str, k: &str) -> Result<Option<u64>> {
        match t.get(k) {
            None => Ok(None),
            Some(Value::Integer(i)) if *i >= 0 => Ok(Some(*i as u64)),
            Some(v @ Value::String(s)) => parse_size(s).map(Some).ok_or_else(|| {
                self.bad(
                    &format!("{prefix}{k}"),
                    v,
                    "expected a size such as `800MB` or `1.5GiB`",
                )
            }),
            Some(v) => Err(self.bad(&format!("{prefix}{k}"), v, "expected a size")),
        }
    }

    fn platforms(&self, key: &str, list: &[String]) -> Result<Vec<Platform>> {
        if list.is_empty() {
            return Err(self.bad(key, &Value::Array(vec![]), "name at least one platform"));
        }
        list.iter()
            .map(|s| {
                platform(s).map_err(|reason| self.bad(key, &Value::String(s.clone()), &reason))
            })
            .collect()
    }
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
