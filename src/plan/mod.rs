//! The build planner: [`Dockerfile`](crate::dockerfile::Dockerfile) + build args + target +
//! a [`BaseResolver`] → [`BuildPlan`] (stage DAG, expanded steps, history text, key inputs),
//! in one pass; then [`CacheKeys::compute`] → the cache keys, a separate value. Pure: no I/O
//! (base images come through the resolver), no environment variables, no clock. Start at
//! [`plan`].
//!
//! # What the planner decides
//! - **ARG scoping** as BuildKit: ARGs before the first FROM are global and usable only in FROM
//!   lines (image and `--platform`) and later global defaults. Inside a stage an ARG resolves to
//!   the `--build-arg` value, else its default expanded with the stage environment, else the
//!   global value, else it is declared but unset. Valued ARGs join the build environment (last
//!   definition wins against ENV, as BuildKit) but never the image `Env`. Stages that use a stage
//!   as their base inherit its ENV and ARGs.
//! - **Predefined ARGs**: `TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`, `TARGETVARIANT`,
//!   `BUILDPLATFORM`, `BUILDOS`, `BUILDARCH`, `BUILDVARIANT` and `TARGETSTAGE` (the `--target`
//!   name, or `default`) are global; a stage sees them after `ARG NAME`. `--build-arg` overrides
//!   them. The proxy variables (`HTTP_PROXY`… in both cases) reach RUN when given as build args,
//!   but stay out of history and cache keys unless declared with ARG.
//! - **Expansion**, with one environment snapshot per instruction: FROM (image, `--platform`;
//!   global scope), ENV and LABEL (keys and values), ARG defaults, ADD/COPY (sources, dest,
//!   `--chown`, `--chmod`, `--checksum`, unquoted heredoc bodies), EXPOSE (with word splitting),
//!   STOPSIGNAL, USER, VOLUME, WORKDIR and `RUN --mount` values except `from`. Never: the text of
//!   RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, MAINTAINER, ONBUILD; `COPY --from` and `--exclude`.
//! - **Stages**: `FROM <earlier stage>` and `COPY --from=<name|index>` / `RUN --mount=from=` make
//!   edges; anything else after `--from` is an image. A reference to the current or a later stage
//!   is an error, cycles are detected, stages not reachable from the target are pruned, and
//!   [`BuildPlan::order`] is a topological order (dependencies first, ties by file position).
//!
//! # Cache keys
//! Every key is `sha256("kiln-cache-v1\n" + parent key + "\n" + encoding + "\n" + inputs…)` in
//! hex ([`key::chain`]). The inputs to a key are exactly:
//! 1. the **parent key**: the previous step's key; for a stage's first step the stage's base
//!    key ([`StageKeys::base`]), which chains from [`key::ROOT`] over the base encoding (the
//!    expanded image reference and platform, `scratch`, or the parent stage) and the digests
//!    of [`Stage::base_inputs`] (the image's, or the parent stage's final key);
//! 2. the step's **canonical encoding** ([`Step::encoding`]): the JSON of its [`StepKind`] with
//!    every value expanded, plus for RUN the build environment (ENV and declared ARGs, in order),
//!    the working directory, user, shell-wrapped argv, mounts, network and security mode, and
//!    heredoc files. Config-only steps encode the edit they make. Spans, `created_by`, undeclared
//!    proxy variables and the step index are **not** inputs;
//! 3. the step's **input digests**, one per entry of [`Step::inputs`], in order: for
//!    [`Input::Stage`] the other stage's final key; for [`Input::Context`], [`Input::Image`],
//!    [`Input::Url`] and [`Input::Git`] a content digest only the builder can compute, given to
//!    [`CacheKeys::compute`] as a function (`None`, as `kiln plan` gives, hashes the
//!    placeholder `unresolved`).
//!
//! The plan is never changed by keying: [`CacheKeys`] holds each step's key by stage id and
//! step index, and each stage's base and final key.
//!
//! Consequently a key changes exactly when the parent key, an expanded value the step uses, or
//! a content digest changes; editing a comment or another stage never changes it.
//!
//! # Base images
//! The planner reads no image. It asks a [`BaseResolver`] (the builder's, which fetches the
//! image) for the [`BaseConfig`] of each reachable stage's base image, once per expanded
//! reference, in build order, before it plans any step, as BuildKit's dockerfile2llb asks its
//! `MetaResolver`; a failure is [`PlanFailure::Base`], located at the FROM. The config gives the
//! stage its environment, working directory, user and shell, and its `OnBuild` triggers are
//! parsed and planned as steps right after the FROM (spans point at the FROM line), as BuildKit
//! runs them. With [`NoBases`] (`kiln plan`, lints, tests) a base image contributes nothing (so
//! `$PATH` from the base expands to empty and no `UndefinedVar` warning is given for
//! image-based stages).
mod bases;
mod copy;
mod env;
mod history;
pub mod key;
mod planner;
pub mod platform;
mod scope;
mod steps;
#[cfg(test)]
mod tests;

pub use bases::{BaseConfig, BaseResolver, NoBases, PlanFailure};
pub use history::is_git_source;
pub use key::{CacheKeys, Input, StageKeys};
pub use planner::plan;
pub use platform::Platform;

use crate::dockerfile::ast::{Position, Span, Warning};
use crate::dockerfile::instructions::Healthcheck;
use crate::dockerfile::lex::ExpandError;
use serde::Serialize;
use std::collections::BTreeMap;

/// Index of a stage in the Dockerfile (0-based, counting every FROM).
pub type StageId = usize;

/// What the planner needs besides the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// `--build-arg NAME=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`; the last stage when absent.
    pub target: Option<String>,
    /// The platform being built for.
    pub target_platform: Platform,
    /// The platform the build runs on.
    pub build_platform: Platform,
    /// The build's `--network` (`none` or `host`) for RUN steps without a `--network` flag of
    /// their own; `None` for the default network, which keeps their cache keys unchanged.
    pub network: Option<String>,
}

impl Default for PlanOptions {
    fn default() -> PlanOptions {
        PlanOptions {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: Platform::linux_amd64(),
            build_platform: Platform::linux_amd64(),
            network: None,
        }
    }
}

/// Where a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Base {
    /// An image reference (expanded), pulled for the stage's platform.
    Image {
        /// The reference.
        reference: String,
    },
    /// An earlier stage of this Dockerfile.
    Stage {
        /// Its id.
        stage: StageId,
    },
    /// The empty filesystem.
    Scratch,
}

/// Where COPY/ADD/mount content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// The build context.
    Context,
    /// Another stage's filesystem.
    Stage {
        /// Its id.
        stage: StageId,
    },
    /// An image (or named context) reference.
    Image {
        /// The reference as written.
        reference: String,
    },
}

/// A file written from a heredoc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineFile {
    /// The heredoc name (file name for COPY/ADD, pipe name for RUN).
    pub name: String,
    /// The content (chomped, and expanded when the delimiter was unquoted, for COPY/ADD).
    pub data: String,
}

/// A planned `RUN --mount`, values expanded (except `from`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedMount {
    /// The mount as parsed.
    pub mount: crate::dockerfile::instructions::Mount,
    /// Where a bind or cache mount's content comes from.
    pub source: Source,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunStep {
    /// The argv to execute (shell form already wrapped with the stage's SHELL).
    pub argv: Vec<String>,
    /// Heredoc files the command reads (raw bodies; the shell interprets them).
    pub heredocs: Vec<InlineFile>,
    /// The build environment: ENV and valued ARGs, in order, later entries winning.
    pub env: Vec<(String, String)>,
    /// Proxy build args given but not declared: in the environment, not in history or keys.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub proxy_env: Vec<(String, String)>,
    /// The working directory.
    pub workdir: String,
    /// The user, if set.
    pub user: Option<String>,
    /// Mounts.
    pub mounts: Vec<PlannedMount>,
    /// `--network`.
    pub network: Option<String>,
    /// `--security`.
    pub security: Option<String>,
}

/// `COPY` and `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyStep {
    /// `ADD` rather than COPY.
    pub add: bool,
    /// Where the sources are read from.
    pub source: Source,
    /// Source paths (or URLs for ADD), expanded.
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub inline: Vec<InlineFile>,
    /// The destination, expanded and resolved against the working directory.
    pub dest: String,
    /// `--chown`, expanded.
    pub chown: Option<String>,
    /// `--chmod`, expanded.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns (not expanded).
    pub excludes: Vec<String>,
    /// ADD `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// ADD `--checksum`, expanded.
    pub checksum: Option<String>,
    /// ADD `--unpack`.
    pub unpack: Option<bool>,
}

/// A change to the image config only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConfigEdit {
    /// Set `Env` entries (replacing existing keys in place).
    Env {
        /// Expanded pairs.
        pairs: Vec<(String, String)>,
    },
    /// Set labels.
    Label {
        /// Expanded pairs.
        pairs: Vec<(String, String)>,
    },
    /// Declare build args (no config change; history only).
    Arg {
        /// Names with their resolved values.
        args: Vec<(String, Option<String>)>,
    },
    /// Set `Cmd`.
    Cmd {
        /// The command (shell form wrapped).
        command: Vec<String>,
    },
    /// Set `Entrypoint` (`None` clears it).
    Entrypoint {
        /// The command (shell form wrapped).
        command: Option<Vec<String>>,
        /// Also clear `Cmd`: the stage has not set CMD before this ENTRYPOINT, so the CMD it
        /// has is inherited (from the base image or the parent stage) and BuildKit resets it.
        /// Not serialized, so not part of the step's encoding: it follows from the steps
        /// before it and the base, which the parent key already covers.
        #[serde(skip)]
        reset_cmd: bool,
    },
    /// Set `User`.
    User {
        /// Expanded.
        user: String,
    },
    /// Add `ExposedPorts` (`port/proto`).
    Expose {
        /// Normalised ports.
        ports: Vec<String>,
    },
    /// Add `Volumes`.
    Volume {
        /// Expanded paths.
        paths: Vec<String>,
    },
    /// Set `StopSignal`.
    StopSignal {
        /// Expanded.
        signal: String,
    },
    /// Set `Shell`.
    Shell {
        /// The shell.
        shell: Vec<String>,
    },
    /// Set `Healthcheck`.
    Healthcheck {
        /// The check.
        check: Healthcheck,
    },
    /// Add an `OnBuild` trigger.
    Onbuild {
        /// The trigger text.
        expression: String,
    },
    /// Set `Author`.
    Maintainer {
        /// The text.
        name: String,
    },
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    /// Run a command in the sandbox.
    Run(RunStep),
    /// Copy files in.
    Copy(CopyStep),
    /// Set (and create) the working directory.
    Workdir {
        /// The absolute path.
        path: String,
    },
    /// Change the config only.
    Config(ConfigEdit),
}

/// One instruction of a stage, planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// What to do.
    pub kind: StepKind,
    /// The instruction in the Dockerfile.
    pub span: Span,
    /// Where it starts.
    pub position: Position,
    /// The history `created_by` text, as BuildKit writes it.
    pub created_by: String,
    /// The instruction as BuildKit's progress and errors name it: the logical line as written
    /// (continuation lines joined, flags kept), the keyword upper-cased and variables expanded
    /// with the step's environment (dockerfile2llb's `uppercaseCmd(processCmdEnv(…))`). Never
    /// Go struct syntax, unlike `created_by` for EXPOSE or HEALTHCHECK.
    pub name: String,
    /// Whether the step makes no layer (history `empty_layer`).
    pub empty_layer: bool,
    /// The canonical encoding hashed into the cache key.
    pub encoding: String,
    /// Content the key depends on, in the order its digests are hashed.
    pub inputs: Vec<Input>,
}

/// A stage of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// Its id (index among the Dockerfile's FROMs).
    pub id: StageId,
    /// Its name, if any.
    pub name: Option<String>,
    /// Where it starts from.
    pub base: Base,
    /// The FROM instruction in the Dockerfile.
    pub span: Span,
    /// Where the FROM instruction starts: errors about the base (a base image that cannot be
    /// read, its ONBUILD triggers) name this line and column.
    pub position: Position,
    /// The platform it is built for.
    pub platform: Platform,
    /// The FROM line's `created_by`-free source text.
    pub from_source: String,
    /// Inputs of the base key (the image, or the parent stage).
    pub base_inputs: Vec<Input>,
    /// The steps.
    pub steps: Vec<Step>,
    /// The final environment (ENV only), as it goes into the image config.
    pub env: Vec<(String, String)>,
    /// The final working directory.
    pub workdir: String,
}

/// The whole plan: the reachable stages in build order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildPlan {
    /// Reachable stages, in [`BuildPlan::order`].
    pub stages: Vec<Stage>,
    /// Stage ids in topological order, dependencies first.
    pub order: Vec<StageId>,
    /// The target stage.
    pub target: StageId,
    /// Global ARGs after resolution (name, value).
    pub global_args: Vec<(String, Option<String>)>,
    /// Build args that no ARG consumed.
    pub unused_build_args: Vec<String>,
    /// Warnings: the Dockerfile's and the planner's (`UndefinedVar`).
    pub warnings: Vec<Warning>,
}

impl BuildPlan {
    /// The planned stage with this id, if it is reachable.
    pub fn stage(&self, id: StageId) -> Option<&Stage> {
        self.stages.iter().find(|s| s.id == id)
    }
}

/// What went wrong while planning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanErrorKind {
    /// The Dockerfile has no FROM.
    #[error("no build stage in the Dockerfile")]
    NoStages,
    /// `--target` names no stage.
    #[error("target stage {name:?} could not be found{}", suggestion.as_ref().map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default())]
    UnknownTarget {
        /// The name given.
        name: String,
        /// The closest stage name.
        suggestion: Option<String>,
    },
    /// Variable expansion failed.
    #[error(transparent)]
    Expand(#[from] ExpandError),
    /// `FROM --platform=$X` expanded to nothing.
    #[error("empty platform value from expression {expr:?}")]
    EmptyPlatform {
        /// The expression.
        expr: String,
    },
    /// A platform that is not `os/arch[/variant]`.
    #[error("invalid platform {value:?}: expected os/arch[/variant]")]
    InvalidPlatform {
        /// The value.
        value: String,
    },
    /// A FROM image that expanded to nothing.
    #[error("base name ({expr}) should not be blank")]
    BlankBase {
        /// The expression.
        expr: String,
    },
    /// `COPY --from=$X`.
    #[error("variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround")]
    FromExpansion {
        /// The value.
        value: String,
    },
    /// A reference to the current or a later stage.
    #[error(
        "cannot copy from stage {name:?}, it needs to be defined before current stage {current:?}"
    )]
    FutureStage {
        /// The stage referred to.
        name: String,
        /// The current stage.
        current: String,
    },
    /// `--from=<n>` with no stage `n`.
    #[error("no build stage with index {index} (stage indexes count FROM instructions from 0)")]
    UnknownStageIndex {
        /// The index as written.
        index: String,
    },
    /// A dependency cycle between stages.
    #[error("circular dependency detected on stage: {stage}")]
    Cycle {
        /// A stage on the cycle.
        stage: String,
    },
    /// A base image's ONBUILD trigger that does not parse or validate.
    #[error("base image ONBUILD trigger {trigger:?}: {message}")]
    OnbuildTrigger {
        /// The trigger text.
        trigger: String,
        /// Why it was rejected.
        message: String,
    },
    /// The build environment grew beyond the planner's limit.
    #[error("build environment larger than {max} bytes")]
    EnvTooLarge {
        /// The limit.
        max: usize,
    },
    /// A STOPSIGNAL that is not a signal.
    #[error("invalid signal: {signal}")]
    InvalidSignal {
        /// The value after expansion.
        signal: String,
    },
    /// A bad EXPOSE value.
    #[error("invalid port {value:?}: {reason}")]
    InvalidPort {
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
}

/// A planning error with its location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}:{}: {kind}", file.as_deref().map(|f| format!("{f}:")).unwrap_or_default(), position.line, position.col)]
pub struct PlanError {
    /// The file name, when the caller gave one.
    pub file: Option<String>,
    /// Where (line 1, column 1 for whole-file errors).
    pub position: Position,
    /// The offending bytes.
    pub span: Span,
    /// What went wrong (boxed to keep `Result`s small).
    pub kind: Box<PlanErrorKind>,
}

impl PlanError {
    /// The same error, naming `file`.
    pub fn with_file(mut self, file: impl Into<String>) -> PlanError {
        self.file = Some(file.into());
        self
    }

    /// `FILE:LINE:COL: message`, the source line and a caret line.
    pub fn render(&self, src: &str) -> String {
        format!(
            "{self}\n{}",
            crate::dockerfile::error::caret(src, self.span)
        )
    }
}
