//! The planning scope both the planner ([`super::planner`]) and the stage planner
//! ([`super::steps`]) work in: the shared context [`Ctx`] (Dockerfile, options, lexer, warnings,
//! global ARGs), word expansion with `UndefinedVar` warnings, `--from` resolution, the proxy
//! variable names and the canonical JSON encoding. Imports nothing of either, so neither imports
//! the other.
use super::env::VarList;
use super::{PlanError, PlanErrorKind, PlanOptions, Source, StageId};
use crate::dockerfile::ast::{Position, Span, Warning};
use crate::dockerfile::instructions::{Command, Dockerfile};
use crate::dockerfile::lex::Lexer;
use std::collections::BTreeSet;

/// Names BuildKit passes to RUN without an ARG declaration (and keeps out of history).
pub(crate) const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Shared planning context.
pub(crate) struct Ctx<'a> {
    pub(crate) df: &'a Dockerfile,
    pub(crate) opts: &'a PlanOptions,
    pub(crate) lexer: Lexer,
    pub(crate) warnings: Vec<Warning>,
    pub(crate) consumed: BTreeSet<String>,
    /// Global ARGs after resolution, including the predefined ones.
    pub(crate) globals: Vec<(String, Option<String>)>,
}

impl Ctx<'_> {
    /// An error at `span`; `fallback` is used when the span is empty (whole-file errors).
    pub(crate) fn err(&self, kind: PlanErrorKind, span: Span, fallback: Position) -> PlanError {
        let position = if span == Span::default() {
            fallback
        } else {
            self.df.position(span.start)
        };
        PlanError {
            file: None,
            position,
            span,
            kind: Box::new(kind),
        }
    }

    pub(crate) fn build_arg(&mut self, name: &str) -> Option<String> {
        let v = self.opts.build_args.get(name).cloned();
        if v.is_some() {
            self.consumed.insert(name.to_string());
        }
        v
    }

    pub(crate) fn global(&self, name: &str) -> Option<Option<String>> {
        self.globals
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    pub(crate) fn global_env(&self) -> VarList {
        let mut env = VarList::new(false);
        for (k, v) in &self.globals {
            if let Some(v) = v {
                env.set(k, v);
            }
        }
        env
    }
}

/// Expands `word` with `env`, recording `UndefinedVar` warnings when `warn_undefined`.
pub(crate) fn expand(
    cx: &mut Ctx,
    word: &str,
    env: &VarList,
    cmd: &Command,
    warn_undefined: bool,
) -> Result<String, PlanError> {
    let r = cx
        .lexer
        .process_word(word, env)
        .map_err(|e| cx.err(PlanErrorKind::Expand(e), cmd.span, cmd.position))?;
    if warn_undefined {
        undefined(cx, &r.unmatched, cmd);
    }
    Ok(r.result)
}

/// Records one `UndefinedVar` warning per name.
pub(crate) fn undefined(cx: &mut Ctx, names: &BTreeSet<String>, cmd: &Command) {
    for n in names {
        if n.chars().all(|c| c.is_ascii_digit())
            || n.len() == 1 && !n.starts_with(char::is_alphabetic)
        {
            continue;
        }
        let message = format!("usage of undefined variable '${n}'");
        if cx
            .warnings
            .iter()
            .any(|w| w.span == cmd.span && w.message == message)
        {
            continue;
        }
        cx.warnings.push(Warning {
            rule: "UndefinedVar",
            message,
            span: cmd.span,
            position: cmd.position,
        });
    }
}

/// Resolves a `--from` value seen in stage `current`: an earlier stage by name or index, else an
/// image. `$` is refused, and references to the current or a later stage are errors.
pub(crate) fn resolve_from(
    cx: &Ctx,
    value: &str,
    current: StageId,
    span: Span,
    cmd: &Command,
) -> Result<Source, PlanError> {
    if value.contains('$') {
        return Err(cx.err(
            PlanErrorKind::FromExpansion {
                value: value.to_string(),
            },
            span,
            cmd.position,
        ));
    }
    let stages = &cx.df.stages;
    let lower = value.to_lowercase();
    let by_name = stages.iter().find(|s| s.name() == Some(lower.as_str()));
    let by_index = value
        .parse::<usize>()
        .ok()
        .filter(|_| value.chars().all(|c| c.is_ascii_digit()))
        .and_then(|i| stages.get(i));
    let current_name = stages[current]
        .name()
        .map_or_else(|| current.to_string(), str::to_string);
    match by_name.or(by_index) {
        Some(s) if s.index < current => Ok(Source::Stage { stage: s.index }),
        Some(s) if s.index == current && by_name.is_some() => Err(cx.err(
            PlanErrorKind::Cycle {
                stage: current_name,
            },
            span,
            cmd.position,
        )),
        Some(_) => Err(cx.err(
            PlanErrorKind::FutureStage {
                name: value.to_string(),
                current: current_name,
            },
            span,
            cmd.position,
        )),
        None if !value.is_empty() && value.chars().all(|c| c.is_ascii_digit()) => Err(cx.err(
            PlanErrorKind::UnknownStageIndex {
                index: value.to_string(),
            },
            span,
            cmd.position,
        )),
        None => Ok(Source::Image {
            reference: value.to_string(),
        }),
    }
}

/// Keeps the module's key helper in one place for steps.
pub(crate) fn encode<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
