//! The image family: the `kiln.toml` model, targets, tag templates, the resolved bake plan,
//! the digests file and lints.
//!
//! What it owns: reading and validating `kiln.toml` ([`config::load`]) into a [`Family`] of
//! [`TargetSpec`]s (variants discovered from `variants/Dockerfile*` or listed, other targets by
//! glob), applying `--set` overrides and git facts to get a [`BakePlan`] ([`plan::resolve`]:
//! tags, and each target's `cache_to` / `cache_from` rendered per platform), and the lints
//! ([`lint`]). What it does not: building or pushing (that is
//! [`crate::ops::bake`], which runs [`crate::builder::build`] for each target), or the `[image]`
//! section deployers resolve (that is [`crate::resolve`]); `[[registry]]` tables are read by the
//! CLI's registry settings and only accepted here.
pub mod config;
pub mod lint;
pub mod plan;
pub mod template;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::oci::Platform;
pub use plan::{BakePlan, GitInfo, PlannedTarget};
pub use template::Template;

/// The image family a `kiln.toml` describes.
#[derive(Debug, Clone)]
pub struct Family {
    /// The file it was read from.
    pub file: PathBuf,
    /// The file's directory: relative paths start here.
    pub root: PathBuf,
    /// The image name (repository path below the registry), e.g. `sandbox`.
    pub name: String,
    /// The registry and namespace, e.g. `ghcr.io/org`; none means images stay local.
    pub registry: Option<String>,
    /// The release version.
    pub version: semver::Version,
    /// `org.opencontainers.image.title`.
    pub title: Option<String>,
    /// `org.opencontainers.image.description`.
    pub description: Option<String>,
    /// `org.opencontainers.image.source` (else the git remote).
    pub source: Option<String>,
    /// The variant that gets `{version}` and `latest`.
    pub default_variant: String,
    /// Labels every image must carry (lint).
    pub required_labels: Vec<String>,
    /// Build arguments for every target.
    pub build_args: BTreeMap<String, String>,
    /// Labels for every image.
    pub labels: BTreeMap<String, String>,
    /// The targets: variants first, then other targets.
    pub targets: Vec<TargetSpec>,
}

/// Whether a target is a variant of the family image or an image of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A variant: tagged in the family's repository.
    Variant,
    /// Another target (e.g. `ops/docker/*/Dockerfile`): its own repository.
    Other,
}

/// One buildable target.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// Its name (`python`, `ci-runner`).
    pub name: String,
    /// Variant or other.
    pub kind: Kind,
    /// The Dockerfile.
    pub dockerfile: PathBuf,
    /// The build context.
    pub context: PathBuf,
    /// `--target` stage.
    pub stage: Option<String>,
    /// Build arguments (over the family's).
    pub build_args: BTreeMap<String, String>,
    /// Labels (over the family's).
    pub labels: BTreeMap<String, String>,
    /// Platforms to build.
    pub platforms: Vec<Platform>,
    /// Tag templates.
    pub tags: Vec<Template>,
    /// The largest image (compressed layers and config, bytes) the lint allows.
    pub size_budget: Option<u64>,
    /// `org.opencontainers.image.description` for this target.
    pub description: Option<String>,
    /// The repository, overriding `{registry}/{name}` (variants) or `{registry}/{target}`.
    pub repository: Option<String>,
    /// `cache_to` values (`--cache-to` syntax, with `{target}`, `{variant}`, `{platform}` …).
    pub cache_to: Vec<String>,
    /// `cache_from` values (`--cache-from` syntax, templated as `cache_to`).
    pub cache_from: Vec<String>,
    /// `sbom` and `provenance`: the attestations its images get.
    pub attest: Attest,
}

/// The attestations a target's images get (`sbom = true`, `provenance = true|"min"|"max"` in
/// `[family]` or `[target.NAME]`; docs/SUPPLY-CHAIN.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attest {
    /// An SPDX SBOM.
    pub sbom: bool,
    /// SLSA provenance, and its mode.
    pub provenance: Option<crate::attest::provenance::Mode>,
}

/// Tag templates by kind of target.
#[derive(Debug, Clone)]
pub struct TagScheme {
    /// For the default variant: `{version}`, `latest`, `sha-{gitsha}`.
    pub default: Vec<Template>,
    /// For the other variants: `{version}-{variant}`.
    pub variant: Vec<Template>,
    /// For other targets: `{version}`, `latest`.
    pub other: Vec<Template>,
}

impl Default for TagScheme {
    fn default() -> Self {
        let t = |s: &str| Template::parse(s).expect("built-in templates are valid");
        TagScheme {
            default: vec![t("{version}"), t("latest"), t("sha-{gitsha}")],
            variant: vec![t("{version}-{variant}")],
            other: vec![t("{version}"), t("latest")],
        }
    }
}

/// Why a family cannot be read, planned or baked.
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
    /// The file is not TOML.
    #[error("`{}`: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A key kiln does not know.
    #[error("`{}`: unknown key `{key}` (value `{value}`); known here: {known}", file.display())]
    UnknownKey {
        /// The file.
        file: PathBuf,
        /// The dotted key.
        key: String,
        /// Its value.
        value: String,
        /// The keys allowed in that table.
        known: String,
    },
    /// A key whose value is not valid.
    #[error("`{}`: `{key}` = `{value}`: {reason}", file.display())]
    BadValue {
        /// The file.
        file: PathBuf,
        /// The dotted key.
        key: String,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A variant or target file that does not exist.
    #[error("`{}`: `{key}` = `{value}`: `{}` does not exist", file.display(), path.display())]
    MissingFile {
        /// The file.
        file: PathBuf,
        /// The dotted key.
        key: String,
        /// The value.
        value: String,
        /// The missing path.
        path: PathBuf,
    },
    /// Nothing to build.
    #[error("`{}`: no targets: no variants in `{}` and none listed", file.display(), dir.display())]
    NoTargets {
        /// The file.
        file: PathBuf,
        /// The variants directory.
        dir: PathBuf,
    },
    /// A target named on the command line that the family does not have.
    #[error("no target `{name}` in `{}` (targets: {known})", file.display())]
    UnknownTarget {
        /// The file.
        file: PathBuf,
        /// The name asked for.
        name: String,
        /// The targets there are.
        known: String,
    },
    /// A `--set` that cannot be applied.
    #[error("--set `{value}`: {reason}")]
    BadSet {
        /// The argument.
        value: String,
        /// Why.
        reason: String,
    },
    /// A `cache_to` / `cache_from` value cannot be rendered for a target.
    #[error("target `{target}`: `{key}` = `{value}`: {reason}")]
    Cache {
        /// The target.
        target: String,
        /// `cache_to` or `cache_from`.
        key: String,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A tag template cannot be rendered for a target.
    #[error("target `{target}`: tag template `{template}`: {reason}")]
    Render {
        /// The target.
        target: String,
        /// The template.
        template: String,
        /// Why.
        reason: String,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
