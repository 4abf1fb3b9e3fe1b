//! From a [`Family`] to a [`BakePlan`]: the targets asked for, `--set` overrides applied, tags
//! rendered from git facts, OCI labels and annotations filled in.
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::template::{render_text, sanitize, Template};
use super::{config, Error, Family, Kind, Result, TargetSpec};
use crate::oci::Platform;

/// What git (or CI) says about the work tree.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GitInfo {
    /// The full commit hash.
    pub sha: Option<String>,
    /// The branch (sanitised for tags at render time).
    pub branch: Option<String>,
    /// The `origin` remote's URL, as `https://…` when it can be.
    pub remote: Option<String>,
}

/// One target, ready to build.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedTarget {
    /// The target's name.
    pub name: String,
    /// Variant or other.
    pub kind: Kind,
    /// The Dockerfile.
    pub dockerfile: PathBuf,
    /// The context.
    pub context: PathBuf,
    /// `--target` stage.
    pub stage: Option<String>,
    /// Platforms, one image each (an index when more than one).
    pub platforms: Vec<String>,
    /// The repository the tags belong to.
    pub repository: String,
    /// Full references: `repository:tag`.
    pub tags: Vec<String>,
    /// Build arguments.
    pub build_args: BTreeMap<String, String>,
    /// Labels for the image config.
    pub labels: BTreeMap<String, String>,
    /// Labels for the image config where the Dockerfile set none of that key (the family's
    /// description).
    pub default_labels: BTreeMap<String, String>,
    /// Annotations for the manifest (and the index).
    pub annotations: BTreeMap<String, String>,
    /// The size budget in bytes.
    pub size_budget: Option<u64>,
    /// Labels the lint requires.
    pub required_labels: Vec<String>,
    /// Platform → its `--cache-to` values, rendered (`{platform}` as `linux-amd64`).
    pub cache_to: BTreeMap<String, Vec<String>>,
    /// Platform → its `--cache-from` values, rendered.
    pub cache_from: BTreeMap<String, Vec<String>>,
    /// The attestations its images get.
    #[serde(skip)]
    pub attest: super::Attest,
}

impl PlannedTarget {
    /// The platforms, parsed.
    pub fn platform_list(&self) -> Vec<Platform> {
        self.platforms
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

/// The resolved plan `kiln bake --print` shows.
#[derive(Debug, Clone, Serialize)]
pub struct BakePlan {
    /// The `kiln.toml`.
    pub file: PathBuf,
    /// The release version.
    pub version: String,
    /// The git facts used.
    pub git: GitInfo,
    /// `org.opencontainers.image.created`.
    pub created: String,
    /// The targets, in build order.
    pub targets: Vec<PlannedTarget>,
}

/// Applies one `--set TARGET.KEY=VALUE` (TARGET may be `*`) to `family`; `cache-to` and
/// `cache-from` take one value each (it has commas) and `TARGET.KEY+=VALUE` appends one, as
/// buildx bake's `--set` does; an empty value clears the list.
pub fn apply_set(family: &mut Family, set: &str) -> Result<()> {
    let bad = |reason: &str| Error::BadSet {
        value: set.to_string(),
        reason: reason.to_string(),
    };
    let (lhs, value) = set
        .split_once('=')
        .ok_or_else(|| bad("expected TARGET.KEY=VALUE"))?;
    let (lhs, append) = match lhs.strip_suffix('+') {
        Some(l) => (l, true),
        None => (lhs, false),
    };
    let (target, key) = lhs
        .split_once('.')
        .ok_or_else(|| bad("expected TARGET.KEY=VALUE"))?;
    if append && !is_cache_key(key) {
        return Err(bad("`+=` appends to cache-to and cache-from only"));
    }
    let names: Vec<String> = family.targets.iter().map(|t| t.name.clone()).collect();
    if target != "*" && !names.iter().any(|n| n == target) {
        return Err(bad(&format!(
            "no target `{target}` (targets: {})",
            names.join(", ")
        )));
    }
    let root = family.root.clone();
    for t in family
        .targets
        .iter_mut()
        .filter(|t| target == "*" || t.name == target)
    {
        if is_cache_key(key) {
            set_cache(t, key, value, append).map_err(|r| bad(&r))?;
        } else {
            set_one(t, key, value, &root).map_err(|r| bad(&r))?;
        }
    }
    Ok(())
}

fn is_cache_key(key: &str) -> bool {
    matches!(key, "cache-to" | "cache_to" | "cache-from" | "cache_from")
}

fn set_cache(
    t: &mut TargetSpec,
    key: &str,
    value: &str,
    append: bool,
) -> std::result::Result<(), String> {
    let list = if key.ends_with("to") {
        &mut t.cache_to
    } else {
        &mut t.cache_from
    };
    if !append {
        list.clear();
    }
    if !value.trim().is_empty() {
        super::template::check_text(value)?;
        list.push(value.trim().to_string());
    }
    Ok(())
}

fn set_one(
    t: &mut TargetSpec,
    key: &str,
    value: &str,
    root: &std::path::Path,
) -> std::result::Result<(), String> {
    let list = || value.split(',').map(str::trim).filter(|s| !s.is_empty());
    match key {
        "dockerfile" => t.dockerfile = root.join(value),
        "context" => t.context = root.join(value),
        "stage" | "target" => t.stage = Some(value.to_string()),
        "repository" => t.repository = Some(value.to_string()),
        "description" => t.description = Some(value.to_string()),
        "tags" => {
            t.tags = list()
                .map(|s| Template::parse(s).map_err(|r| format!("bad tag template `{s}`: {r}")))
                .collect::<std::result::Result<_, _>>()?
        }
        "platform" | "platforms" => {
            t.platforms = list()
                .map(config::platform)
                .collect::<std::result::Result<_, _>>()?;
            if t.platforms.is_empty() {
                return Err("name at least one platform".into());
            }
        }
        "size_budget" => {
            t.size_budget = Some(
                config::parse_size(value)
                    .ok_or_else(|| format!("`{value}` is not a size such as 800MB"))?,
            )
        }
        k => {
            if let Some(n) = k
                .strip_prefix("args.")
                .or_else(|| k.strip_prefix("build_args."))
            {
                t.build_args.insert(n.to_string(), value.to_string());
            } else if let Some(n) = k.strip_prefix("labels.") {
                t.labels.insert(n.to_string(), value.to_string());
            } else {
                return Err(format!(
                    "unknown key `{k}` (known: dockerfile, context, stage, tags, platforms, size_budget, repository, description, cache-to, cache-from, args.NAME, labels.NAME)"
                ));
            }
        }
    }
    Ok(())
}

/// Resolves the targets named in `only` (all when empty) into a plan.
pub fn resolve(family: &Family, only: &[String], git: &GitInfo, epoch: i64) -> Result<BakePlan> {
    for n in only {
        if !family.targets.iter().any(|t| &t.name == n) {
            return Err(Error::UnknownTarget {
                file: family.file.clone(),
                name: n.clone(),
                known: family
                    .targets
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let created = crate::oci::rfc3339(epoch);
    let version = family.version.to_string();
    let mut targets = Vec::new();
    for t in family
        .targets
        .iter()
        .filter(|t| only.is_empty() || only.contains(&t.name))
    {
        let repository = t.repository.clone().unwrap_or_else(|| {
            let leaf = match t.kind {
                Kind::Variant => family.name.clone(),
                Kind::Other => t.name.clone(),
            };
            match &family.registry {
                Some(r) => format!("{}/{leaf}", r.trim_end_matches('/')),
                None => leaf,
            }
        });
        let mut vars: BTreeMap<&str, String> = BTreeMap::new();
        vars.insert("version", version.clone());
        vars.insert("variant", t.name.clone());
        vars.insert("target", t.name.clone());
        if let Some(s) = &git.sha {
            vars.insert("gitsha", s.chars().take(12).collect());
        }
        if let Some(b) = &git.branch {
            vars.insert("branch", sanitize(b));
        }
        let mut tags = Vec::new();
        for tpl in &t.tags {
            let tag = tpl.render(&vars).map_err(|reason| Error::Render {
                target: t.name.clone(),
                template: tpl.to_string(),
                reason: if tpl.uses("gitsha") && git.sha.is_none() {
                    format!(
                        "{reason}: `{}` is not in a git work tree (or set GITHUB_SHA)",
                        family.root.display()
                    )
                } else {
                    reason
                },
            })?;
            let r = format!("{repository}:{tag}");
            if !tags.contains(&r) {
                tags.push(r);
            }
        }
        let oci = |k: &str| format!("org.opencontainers.image.{k}");
        let mut meta: BTreeMap<String, String> = BTreeMap::new();
        meta.insert(oci("version"), version.clone());
        meta.insert(oci("created"), created.clone());
        meta.insert(
            oci("title"),
            match (&family.title, t.kind) {
                (Some(title), Kind::Variant) if t.name == family.default_variant => title.clone(),
                (Some(title), _) => format!("{title} ({})", t.name),
                (None, _) => format!("{}-{}", family.name, t.name),
            },
        );
        // A target's own description (kiln.toml) is a label like the others; the family's is
        // a default that the variant's Dockerfile `LABEL` overrides.
        let mut default_labels = BTreeMap::new();
        if let Some(d) = t.description.as_ref().or(family.description.as_ref()) {
            meta.insert(oci("description"), d.clone());
        }
        if let (None, Some(d)) = (&t.description, &family.description) {
            default_labels.insert(oci("description"), d.clone());
        }
        if let Some(s) = family.source.as_ref().or(git.remote.as_ref()) {
            meta.insert(oci("source"), s.clone());
        }
        if let Some(s) = &git.sha {
            meta.insert(oci("revision"), s.clone());
        }
        let mut labels = meta.clone();
        labels.retain(|k, _| !default_labels.contains_key(k));
        labels.extend(family.labels.clone());
        labels.extend(t.labels.clone());
        // The variants' Dockerfiles take the same facts as build arguments for their LABELs.
        let mut build_args = BTreeMap::new();
        build_args.insert("VERSION".to_string(), version.clone());
        build_args.insert("CREATED".to_string(), created.clone());
        build_args.insert("VARIANT".to_string(), t.name.clone());
        if let Some(s) = &git.sha {
            build_args.insert("REVISION".to_string(), s.clone());
        }
        if let Some(s) = family.source.as_ref().or(git.remote.as_ref()) {
            build_args.insert("SOURCE".to_string(), s.clone());
        }
        build_args.extend(family.build_args.clone());
        build_args.extend(t.build_args.clone());
        let (cache_to, cache_from) = cache_refs(t, &vars)?;
        targets.push(PlannedTarget {
            name: t.name.clone(),
            kind: t.kind,
            dockerfile: t.dockerfile.clone(),
            context: t.context.clone(),
            stage: t.stage.clone(),
            platforms: t.platforms.iter().map(ToString::to_string).collect(),
            repository,
            tags,
            build_args,
            labels,
            default_labels,
            annotations: meta,
            size_budget: t.size_budget,
            required_labels: family.required_labels.clone(),
            cache_to,
            cache_from,
            attest: t.attest,
        });
    }
    Ok(BakePlan {
        file: family.file.clone(),
        version,
        git: git.clone(),
        created,
        targets,
    })
}

/// A platform as a tag component: `linux/arm64/v8` → `linux-arm64-v8`.
pub fn platform_slug(p: &str) -> String {
    sanitize(p)
}

type CacheRefs = BTreeMap<String, Vec<String>>;

/// Renders a target's `cache_to` / `cache_from` for each of its platforms. Two platforms
/// writing one cache ref would overwrite each other, so a target of several platforms needs
/// `{platform}` in every `cache_to`.
fn cache_refs(t: &TargetSpec, vars: &BTreeMap<&str, String>) -> Result<(CacheRefs, CacheRefs)> {
    let err = |key: &str, value: &str, reason: String| Error::Cache {
        target: t.name.clone(),
        key: key.into(),
        value: value.into(),
        reason,
    };
    if t.platforms.len() > 1 {
        if let Some(v) = t.cache_to.iter().find(|v| !v.contains("{platform}")) {
            return Err(err(
                "cache_to",
                v,
                format!(
                    "the target builds {} platforms and each needs its own cache ref: put `{{platform}}` in it",
                    t.platforms.len()
                ),
            ));
        }
    }
    let mut to = BTreeMap::new();
    let mut from = BTreeMap::new();
    for p in &t.platforms {
        let p = p.to_string();
        let mut vars = vars.clone();
        vars.insert("platform", platform_slug(&p));
        let render = |key: &str, list: &[String]| {
            list.iter()
                .map(|v| render_text(v, &vars).map_err(|r| err(key, v, r)))
                .collect::<Result<Vec<_>>>()
        };
        to.insert(p.clone(), render("cache_to", &t.cache_to)?);
        from.insert(p, render("cache_from", &t.cache_from)?);
    }
    Ok((to, from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(toml: &str) -> (tempfile::TempDir, Family) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("variants")).unwrap();
        for f in ["Dockerfile", "Dockerfile.python"] {
            std::fs::write(dir.path().join("variants").join(f), "FROM scratch\n").unwrap();
        }
        let file = dir.path().join("kiln.toml");
        std::fs::write(&file, format!("{toml}{TAGS}")).unwrap();
        let fam = config::load(&file).unwrap();
        (dir, fam)
    }

    const HEAD: &str =
        "[family]\nname = \"sandbox\"\nversion = \"0.1.0\"\nplatforms = [\"linux/amd64\"]\n";
    const TAGS: &str = "\n[tags]\ndefault = [\"{version}\"]\n";

    #[test]
    fn cache_refs_are_per_target_templated_and_overridden_by_set() {
        let (_d, mut fam) = family(&format!(
            "{HEAD}cache_to = \"type=registry,ref=r.example/c:{{variant}},mode=max\"\n\
             cache_from = [\"r.example/c:{{target}}\", \"type=local,src=/c/{{platform}}\"]\n\
             [target.python]\ncache_to = \"type=local,dest=/tmp/{{target}}\"\n"
        ));
        let plan = resolve(&fam, &[], &GitInfo::default(), 0).unwrap();
        let full = &plan.targets[0];
        assert_eq!(full.name, "full");
        assert_eq!(
            full.cache_to["linux/amd64"],
            ["type=registry,ref=r.example/c:full,mode=max"]
        );
        assert_eq!(
            full.cache_from["linux/amd64"],
            ["r.example/c:full", "type=local,src=/c/linux-amd64"]
        );
        assert_eq!(
            plan.targets[1].cache_to["linux/amd64"],
            ["type=local,dest=/tmp/python"]
        );
        // `=` replaces the list (one value, commas and all), `+=` appends, empty clears.
        apply_set(
            &mut fam,
            "python.cache-to=type=registry,ref=x/y:{variant},mode=max",
        )
        .unwrap();
        apply_set(&mut fam, "python.cache-to+=type=local,dest=/d").unwrap();
        apply_set(&mut fam, "*.cache-from=").unwrap();
        let plan = resolve(&fam, &["python".into()], &GitInfo::default(), 0).unwrap();
        let py = &plan.targets[0];
        assert_eq!(
            py.cache_to["linux/amd64"],
            [
                "type=registry,ref=x/y:python,mode=max",
                "type=local,dest=/d"
            ]
        );
        assert!(py.cache_from["linux/amd64"].is_empty());
        assert!(apply_set(&mut fam, "python.tags+=x").is_err());
        assert!(apply_set(&mut fam, "python.cache-to=r/c:{colour}").is_err());
    }

    #[test]
    fn a_target_of_several_platforms_needs_platform_in_its_cache_to() {
        let (_d, fam) = family(&format!(
            "{HEAD}cache_to = \"r.example/c:{{variant}}\"\n[target.full]\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n"
        ));
        let e = resolve(&fam, &[], &GitInfo::default(), 0).unwrap_err();
        assert!(e.to_string().contains("{platform}"), "{e}");
        assert!(e.to_string().contains("target `full`"), "{e}");
    }

    #[test]
    fn bad_cache_values_in_the_file_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("variants")).unwrap();
        std::fs::write(dir.path().join("variants/Dockerfile"), "FROM scratch\n").unwrap();
        let file = dir.path().join("kiln.toml");
        for (toml, key) in [
            (
                format!("{HEAD}cache_to = \"r/c:{{colour}}\"\n"),
                "family.cache_to",
            ),
            (format!("{HEAD}cache_from = 3\n"), "family.cache_from"),
            (
                format!("{HEAD}[target.full]\ncache_to = [\"r/c:{{variant\"]\n"),
                "target.full.cache_to",
            ),
        ] {
            std::fs::write(&file, format!("{toml}{TAGS}")).unwrap();
            let e = config::load(&file).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }
}
