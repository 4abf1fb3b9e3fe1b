//! From a [`Family`] to a [`BakePlan`]: the targets asked for, `--set` overrides applied, tags
//! rendered from git facts, OCI labels and annotations filled in.
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::template::{sanitize, Template};
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

/// Applies one `--set TARGET.KEY=VALUE` (TARGET may be `*`) to `family`.
pub fn apply_set(family: &mut Family, set: &str) -> Result<()> {
    let bad = |reason: &str| Error::BadSet {
        value: set.to_string(),
        reason: reason.to_string(),
    };
    let (lhs, value) = set
        .split_once('=')
        .ok_or_else(|| bad("expected TARGET.KEY=VALUE"))?;
    let (target, key) = lhs
        .split_once('.')
        .ok_or_else(|| bad("expected TARGET.KEY=VALUE"))?;
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
        set_one(t, key, value, &root).map_err(|r| bad(&r))?;
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
                    "unknown key `{k}` (known: dockerfile, context, stage, tags, platforms, size_budget, repository, description, args.NAME, labels.NAME)"
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
