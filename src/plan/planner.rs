//! [`plan`]: global ARGs, stage bases, the stage graph (edges, cycles, pruning, order), then
//! each reachable stage's steps (in [`super::steps`]) and the cache keys. The scope both share
//! is [`super::scope`].
use super::env::VarList;
use super::key::Input;
use super::scope::{expand, resolve_from, Ctx, PROXY_ARGS};
use super::steps::{StagePlanner, State};
use super::{
    Base, BaseConfig, BaseResolver, BuildPlan, PlanError, PlanErrorKind, PlanFailure, PlanOptions,
    Platform, Source, Stage, StageId,
};
use crate::dockerfile::ast::{Position, Span, Warning};
use crate::dockerfile::instructions::{Command, Dockerfile, Instruction};
use crate::dockerfile::lex::Lexer;
use crate::dockerfile::suggest::suggest;
use std::collections::{BTreeMap, BTreeSet};

fn platform_args(prefix: &str, p: &Platform) -> Vec<(String, Option<String>)> {
    vec![
        (format!("{prefix}PLATFORM"), Some(p.to_string())),
        (format!("{prefix}OS"), Some(p.os.clone())),
        (format!("{prefix}ARCH"), Some(p.arch.clone())),
        (format!("{prefix}VARIANT"), Some(p.variant.clone())),
    ]
}

/// Plans the build of `opts.target` (or the last stage) of `df`, in one pass: `bases` is asked
/// for the config of each reachable stage's base image (once per reference and platform, in build order,
/// before any step is planned), which gives the stage its environment, working directory,
/// user, shell and the ONBUILD triggers planned right after its FROM.
pub fn plan<R: BaseResolver + ?Sized>(
    df: &Dockerfile,
    opts: &PlanOptions,
    bases: &mut R,
) -> Result<BuildPlan, PlanFailure<R::Error>> {
    let mut cx = Ctx {
        df,
        opts,
        lexer: Lexer::new(df.escape),
        warnings: df.warnings.clone(),
        consumed: BTreeSet::new(),
        globals: Vec::new(),
    };
    let Some(last) = df.stages.last() else {
        return Err(PlanFailure::Plan(cx.err(
            PlanErrorKind::NoStages,
            Span::default(),
            Position { line: 1, col: 1 },
        )));
    };
    let target = match &opts.target {
        None => last.index,
        Some(t) => {
            let lower = t.to_lowercase();
            match df.stages.iter().find(|s| s.name() == Some(lower.as_str())) {
                Some(s) => s.index,
                None => {
                    let names = df.stages.iter().filter_map(|s| s.name());
                    let suggestion = suggest(&lower, names).map(str::to_string);
                    return Err(PlanFailure::Plan(cx.err(
                        PlanErrorKind::UnknownTarget {
                            name: t.clone(),
                            suggestion,
                        },
                        Span::default(),
                        Position { line: 1, col: 1 },
                    )));
                }
            }
        }
    };

    // Global scope: predefined platform args, then the ARGs before the first FROM.
    let target_stage = match &opts.target {
        Some(t) => t.to_lowercase(),
        None => "default".to_string(),
    };
    cx.globals
        .extend(platform_args("TARGET", &opts.target_platform));
    cx.globals
        .extend(platform_args("BUILD", &opts.build_platform));
    cx.globals.push(("TARGETSTAGE".into(), Some(target_stage)));
    for (k, v) in cx.globals.iter_mut() {
        if let Some(b) = opts.build_args.get(k.as_str()) {
            *v = Some(b.clone());
        }
    }
    for cmd in &df.meta_args {
        let Instruction::Arg { args } = &cmd.instruction else {
            continue;
        };
        // One name after another: a default sees the global ARGs declared before it.
        for a in args {
            let value = match (cx.build_arg(&a.name), &a.default) {
                (Some(v), _) => Some(v),
                (None, Some(d)) => {
                    let env = cx.global_env();
                    Some(expand(&mut cx, d, &env, cmd, true)?)
                }
                (None, None) => cx.global(&a.name).flatten(),
            };
            cx.globals.push((a.name.clone(), value));
        }
    }

    // Stage bases and platforms, expanded in global scope.
    let mut bases_of: Vec<(Base, Platform)> = Vec::new();
    for s in &df.stages {
        let env = cx.global_env();
        let cmd = &s.from_command;
        let image = expand(&mut cx, &s.from.image, &env, cmd, false)?;
        undefined_in_from(&mut cx, &s.from.image, &env, cmd);
        if image.is_empty() {
            return Err(PlanFailure::Plan(cx.err(
                PlanErrorKind::BlankBase {
                    expr: s.from.image.clone(),
                },
                s.from.image_span,
                cmd.position,
            )));
        }
        let platform = match &s.from.platform {
            None => opts.target_platform.clone(),
            Some(p) => {
                let v = expand(&mut cx, p, &env, cmd, false)?;
                if v.is_empty() {
                    return Err(PlanFailure::Plan(cx.err(
                        PlanErrorKind::EmptyPlatform { expr: p.clone() },
                        cmd.span,
                        cmd.position,
                    )));
                }
                Platform::parse(&v).ok_or_else(|| {
                    cx.err(
                        PlanErrorKind::InvalidPlatform { value: v.clone() },
                        cmd.span,
                        cmd.position,
                    )
                })?
            }
        };
        let lower = image.to_lowercase();
        let base = if let Some(p) = df.stages[..s.index]
            .iter()
            .find(|p| p.name() == Some(lower.as_str()))
        {
            Base::Stage { stage: p.index }
        } else if lower == "scratch" {
            Base::Scratch
        } else {
            Base::Image { reference: image }
        };
        bases_of.push((base, platform));
    }

    // Edges: base stage, COPY --from, RUN --mount from.
    let mut deps: Vec<BTreeSet<StageId>> = vec![BTreeSet::new(); df.stages.len()];
    for s in &df.stages {
        if let Base::Stage { stage } = bases_of[s.index].0 {
            deps[s.index].insert(stage);
        }
        for c in &s.commands {
            for (from, span) in from_refs(c) {
                if let Source::Stage { stage } = resolve_from(&cx, &from, s.index, span, c)? {
                    deps[s.index].insert(stage);
                }
            }
        }
    }
    let order = topo_order(&cx, target, &deps)?;

    // Plan each reachable stage in order; children start from their parent's final state.
    // Base image configs, resolved once per reference and platform before any step is planned
    // (BuildKit's `resolveStages` before `dispatchStages`): a `FROM --platform=$BUILDPLATFORM`
    // stage and a target-platform stage on the same name are two images.
    let mut configs: BTreeMap<(String, String), Option<BaseConfig>> = BTreeMap::new();
    for &id in &order {
        let (Base::Image { reference }, platform) = &bases_of[id] else {
            continue;
        };
        let key = (reference.clone(), platform.to_string());
        if configs.contains_key(&key) {
            continue;
        }
        let from = &df.stages[id].from_command;
        let config = bases
            .resolve(reference, platform, from.position)
            .map_err(|source| PlanFailure::Base {
                file: None,
                position: from.position,
                span: from.span,
                reference: reference.clone(),
                source,
            })?;
        configs.insert(key, config);
    }

    let mut states: BTreeMap<StageId, State> = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for &id in &order {
        let def = &df.stages[id];
        let (base, platform) = bases_of[id].clone();
        let config = match &base {
            Base::Image { reference } => configs
                .get(&(reference.clone(), platform.to_string()))
                .and_then(Option::as_ref),
            _ => None,
        };
        let state = match &base {
            Base::Stage { stage } => states.get(stage).map(State::child),
            _ => None,
        }
        .unwrap_or_else(|| State::initial(&base, &platform, config));
        let base_inputs = match &base {
            Base::Image { reference } => vec![Input::Image {
                reference: reference.clone(),
                platform: platform.to_string(),
            }],
            Base::Stage { stage } => vec![Input::Stage { stage: *stage }],
            Base::Scratch => Vec::new(),
        };
        let mut sp = StagePlanner {
            cx: &mut cx,
            stage: def,
            state,
        };
        let triggers = onbuild_triggers(sp.cx, &sp.stage.from_command, config)?;
        let steps = sp.plan_steps(&triggers)?;
        let final_state = sp.state;
        stages.push(Stage {
            id,
            name: def.from.name.clone(),
            base,
            span: def.from_command.span,
            position: def.from_command.position,
            platform,
            from_source: def.from_command.original.trim().to_string(),
            base_inputs,
            steps,
            env: final_state.config_env.entries.clone(),
            workdir: final_state.workdir.clone(),
        });
        states.insert(id, final_state);
    }

    let mut unused: Vec<String> = opts
        .build_args
        .keys()
        .filter(|k| !cx.consumed.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
        .filter(|k| !cx.globals.iter().any(|(g, _)| g == *k))
        .cloned()
        .collect();
    unused.sort();
    Ok(BuildPlan {
        stages,
        order,
        target,
        global_args: cx.globals.clone(),
        unused_build_args: unused,
        warnings: cx.warnings,
    })
}

/// BuildKit's `UndefinedArgInFrom`: a FROM that uses a name no global ARG declares.
fn undefined_in_from(cx: &mut Ctx, word: &str, env: &VarList, cmd: &Command) {
    let Ok(r) = cx.lexer.process_word(word, env) else {
        return;
    };
    for n in r.unmatched {
        cx.warnings.push(Warning {
            rule: "UndefinedArgInFrom",
            message: format!("FROM argument '{n}' is not declared"),
            span: cmd.span,
            position: cmd.position,
        });
    }
}

/// Every `--from` a command refers to (COPY and RUN mounts), unexpanded, with its span.
pub(crate) fn from_refs(c: &Command) -> Vec<(String, Span)> {
    let mut out = Vec::new();
    let mut visit = |i: &Instruction| match i {
        Instruction::Copy(cp) => {
            if let Some(f) = &cp.from {
                out.push((f.clone(), cp.from_span.unwrap_or(c.span)));
            }
        }
        Instruction::Run(r) => {
            for m in &r.mounts {
                if let Some(f) = &m.from {
                    out.push((f.clone(), c.span));
                }
            }
        }
        _ => {}
    };
    visit(&c.instruction);
    out
}

/// The stages reachable from `target`, dependencies first (Kahn's algorithm, ties by index).
fn topo_order(
    cx: &Ctx,
    target: StageId,
    deps: &[BTreeSet<StageId>],
) -> Result<Vec<StageId>, PlanError> {
    let mut reachable = BTreeSet::new();
    let mut stack = vec![target];
    while let Some(s) = stack.pop() {
        if reachable.insert(s) {
            stack.extend(deps[s].iter().copied());
        }
    }
    let mut remaining: BTreeMap<StageId, BTreeSet<StageId>> = reachable
        .iter()
        .map(|&s| (s, deps[s].intersection(&reachable).copied().collect()))
        .collect();
    let mut order = Vec::with_capacity(remaining.len());
    while !remaining.is_empty() {
        let Some(next) = remaining
            .iter()
            .find(|(_, d)| d.is_empty())
            .map(|(s, _)| *s)
        else {
            let stage = remaining.keys().next().copied().unwrap_or(target);
            let s = &cx.df.stages[stage];
            return Err(cx.err(
                PlanErrorKind::Cycle {
                    stage: s.name().map_or_else(|| stage.to_string(), str::to_string),
                },
                s.from_command.span,
                s.from_command.position,
            ));
        };
        remaining.remove(&next);
        for d in remaining.values_mut() {
            d.remove(&next);
        }
        order.push(next);
    }
    Ok(order)
}

/// A base image's ONBUILD triggers as commands located at the FROM line.
fn onbuild_triggers(
    cx: &Ctx,
    from: &Command,
    config: Option<&BaseConfig>,
) -> Result<Vec<Command>, PlanError> {
    let Some(cfg) = config else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for t in &cfg.onbuild {
        let bad = |message: String| {
            cx.err(
                PlanErrorKind::OnbuildTrigger {
                    trigger: t.clone(),
                    message,
                },
                from.span,
                from.position,
            )
        };
        // Parsed as the only instruction of a one-stage file, the way BuildKit re-parses it.
        let text = format!("FROM scratch\n{t}\n");
        let ast = crate::dockerfile::parse(&text).map_err(|e| bad(e.kind.to_string()))?;
        if ast.nodes.len() != 2 {
            return Err(bad("onbuild trigger should be a single expression".into()));
        }
        if matches!(
            ast.nodes[1].keyword.as_str(),
            "onbuild" | "from" | "maintainer"
        ) {
            return Err(bad("not allowed as an ONBUILD trigger".into()));
        }
        let df = crate::dockerfile::instructions(&ast).map_err(|e| bad(e.kind.to_string()))?;
        for c in df.stages.into_iter().flat_map(|s| s.commands) {
            out.push(Command {
                span: from.span,
                position: from.position,
                ..c
            });
        }
    }
    Ok(out)
}
