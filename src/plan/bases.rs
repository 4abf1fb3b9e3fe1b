//! Base images as the planner sees them: the [`BaseConfig`] parts of an image config, the
//! [`BaseResolver`] a builder answers them through while the Dockerfile is planned, and
//! [`PlanFailure`], a planning error or a base that could not be resolved.
//!
//! As BuildKit's dockerfile2llb (`ConvertOpt.MetaResolver`, called from `resolveBaseImage` for
//! every reachable stage before any instruction is dispatched, its error located at the stage's
//! FROM), the planner asks for each base image's config once, during the one planning pass.
use super::{PlanError, Platform};
use crate::dockerfile::ast::{Position, Span};
use serde::Serialize;
use std::convert::Infallible;
use std::fmt;

/// The parts of a base image config the planner uses.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct BaseConfig {
    /// `Env`, in order.
    pub env: Vec<(String, String)>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `Shell`.
    pub shell: Option<Vec<String>>,
    /// `OnBuild` triggers: run right after the FROM that uses the image, in order.
    pub onbuild: Vec<String>,
}

/// Answers the planner's question "what is the config of this base image?".
///
/// The planner calls [`BaseResolver::resolve`] for every stage it plans (the ones reachable from
/// the target) whose FROM names an image, in build order, before it plans any step, and once per
/// expanded reference and platform: a second stage on the same reference and platform reuses
/// the first answer (a builder keeps one image per reference and platform).
pub trait BaseResolver {
    /// Why a base could not be resolved.
    type Error;

    /// The config of `reference` (expanded, as written after FROM) for `platform`; `position`
    /// is the FROM that names it. `Ok(None)` means "unknown": the stage then starts with an
    /// empty environment, `/`, no user and the default shell, and its `UndefinedVar` warnings
    /// are not given.
    fn resolve(
        &mut self,
        reference: &str,
        platform: &Platform,
        position: Position,
    ) -> Result<Option<BaseConfig>, Self::Error>;
}

/// The resolver that knows no base: `kiln plan`, lints and tests plan without reading images.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBases;

impl BaseResolver for NoBases {
    type Error = Infallible;

    fn resolve(
        &mut self,
        _reference: &str,
        _platform: &Platform,
        _position: Position,
    ) -> Result<Option<BaseConfig>, Infallible> {
        Ok(None)
    }
}

/// Why planning failed: the Dockerfile, or a base image the resolver could not give.
#[derive(Debug)]
pub enum PlanFailure<E> {
    /// The Dockerfile (or a base's ONBUILD trigger) is wrong.
    Plan(PlanError),
    /// The resolver failed on a base image.
    Base {
        /// The file name, when the caller gave one.
        file: Option<String>,
        /// The FROM naming the image.
        position: Position,
        /// The FROM instruction's bytes.
        span: Span,
        /// The expanded reference.
        reference: String,
        /// The resolver's error.
        source: E,
    },
}

impl<E> From<PlanError> for PlanFailure<E> {
    fn from(e: PlanError) -> PlanFailure<E> {
        PlanFailure::Plan(e)
    }
}

/// With [`NoBases`] planning can only fail on the Dockerfile.
impl From<PlanFailure<Infallible>> for PlanError {
    fn from(f: PlanFailure<Infallible>) -> PlanError {
        match f {
            PlanFailure::Plan(e) => e,
            PlanFailure::Base { source, .. } => match source {},
        }
    }
}

impl<E> PlanFailure<E> {
    /// The same failure, naming `file`.
    pub fn with_file(self, file: impl Into<String>) -> PlanFailure<E> {
        match self {
            PlanFailure::Plan(e) => PlanFailure::Plan(e.with_file(file)),
            PlanFailure::Base {
                position,
                span,
                reference,
                source,
                ..
            } => PlanFailure::Base {
                file: Some(file.into()),
                position,
                span,
                reference,
                source,
            },
        }
    }
}

impl<E: fmt::Display> PlanFailure<E> {
    /// `FILE:LINE:COL: message[: cause]`, the source line and a caret line (as
    /// [`PlanError::render`]).
    pub fn render(&self, src: &str) -> String {
        match self {
            PlanFailure::Plan(e) => e.render(src),
            PlanFailure::Base { span, source, .. } => format!(
                "{self}: {source}\n{}",
                crate::dockerfile::error::caret(src, *span)
            ),
        }
    }
}

impl<E: fmt::Display> fmt::Display for PlanFailure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanFailure::Plan(e) => e.fmt(f),
            PlanFailure::Base {
                file,
                position,
                reference,
                ..
            } => {
                if let Some(file) = file {
                    write!(f, "{file}:")?;
                }
                // The cause is the error's `source`, as in the builder's errors.
                write!(
                    f,
                    "{}:{}: cannot use base image `{reference}`",
                    position.line, position.col
                )
            }
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for PlanFailure<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PlanFailure::Plan(e) => e.source(),
            PlanFailure::Base { source, .. } => Some(source),
        }
    }
}
