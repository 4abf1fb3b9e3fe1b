//! AST nodes → typed instructions and stages (BuildKit's `instructions.Parse`).
use super::flags::{parse_flags, parse_mount, Flags};
use super::{
    Add, ArgDecl, Command, CommandLine, Copy, Dockerfile, From, Healthcheck, InlineSource,
    Instruction, KeyValue, Onbuild, Run, Stage, KEYWORDS,
};
use crate::dockerfile::ast::{Ast, Node, Span, Warning};
use crate::dockerfile::error::{ErrorKind, ParseError};
use crate::dockerfile::lint;
use crate::dockerfile::parser::parse_heredoc;
use crate::dockerfile::suggest::suggest;
use regex::Regex;
use std::sync::OnceLock;

struct Ctx<'a> {
    ast: &'a Ast,
    warnings: Vec<Warning>,
}

impl Ctx<'_> {
    fn err(&self, kind: ErrorKind, span: Span) -> ParseError {
        ParseError::new(kind, span, &self.ast.source, &self.ast.lines)
    }

    fn warn(&mut self, rule: &'static str, message: String, span: Span) {
        self.warnings.push(Warning {
            rule,
            message,
            span,
            position: self.ast.position(span.start),
        });
    }
}

/// Validates every node of `ast` and groups them into global ARGs and stages.
pub fn instructions(ast: &Ast) -> Result<Dockerfile, ParseError> {
    let mut cx = Ctx {
        ast,
        warnings: ast.warnings.clone(),
    };
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &ast.nodes {
        let instruction = parse_node(&mut cx, node)?;
        lint::check_instruction(&instruction, node, ast, &mut cx.warnings);
        let command = Command {
            instruction,
            original: node.original.clone(),
            span: node.span,
            position: ast.position(node.span.start),
        };
        match &command.instruction {
            Instruction::From(from) => stages.push(Stage {
                index: stages.len(),
                from: from.clone(),
                from_command: command,
                commands: Vec::new(),
            }),
            Instruction::Arg { .. } if stages.is_empty() => meta_args.push(command),
            _ => match stages.last_mut() {
                Some(stage) => stage.commands.push(command),
                None => return Err(cx.err(ErrorKind::NoStage, node.keyword_span)),
            },
        }
    }
    lint::check_file(ast, &stages, &mut cx.warnings);
    cx.warnings.sort_by_key(|w| w.span.start);
    Ok(Dockerfile {
        escape: ast.escape,
        directives: ast.directives.clone(),
        meta_args,
        stages,
        warnings: cx.warnings,
        source: ast.source.clone(),
        lines: ast.lines.clone(),
    })
}

/// The arguments' combined span (or the keyword when there are none).
fn args_span(node: &Node) -> Span {
    match (node.args.first(), node.args.last()) {
        (Some(a), Some(b)) => a.span.to(b.span),
        _ => node.keyword_span,
    }
}

fn count_err(cx: &Ctx, node: &Node, expected: &'static str) -> ParseError {
    cx.err(
        ErrorKind::ArgumentCount {
            instruction: node.keyword.to_uppercase(),
            expected,
        },
        args_span(node),
    )
}

fn flags(cx: &Ctx, node: &Node) -> Result<Flags, ParseError> {
    parse_flags(&node.keyword, &node.flags).map_err(|(k, s)| cx.err(k, s))
}

/// BuildKit's `handleJSONArgs`: JSON args as is, shell form joined into one string.
fn command_line(node: &Node, args: &[String]) -> CommandLine {
    if node.json {
        CommandLine::Exec(args.to_vec())
    } else {
        CommandLine::Shell(args.join(" "))
    }
}

fn parse_node(cx: &mut Ctx, node: &Node) -> Result<Instruction, ParseError> {
    let args = node.arg_values();
    let kw = node.keyword.as_str();
    Ok(match kw {
        "env" | "label" => {
            flags(cx, node)?;
            let upper = kw.to_uppercase();
            if args.is_empty() {
                return Err(count_err(cx, node, "at least one argument"));
            }
            let mut pairs = Vec::new();
            for t in node.args.chunks(3) {
                let [k, v, sep] = t else {
                    return Err(count_err(cx, node, "key-value pairs"));
                };
                if k.value.is_empty() {
                    return Err(cx.err(ErrorKind::BlankName { instruction: upper }, k.span));
                }
                pairs.push(KeyValue {
                    key: k.value.clone(),
                    value: v.value.clone(),
                    legacy: sep.value.is_empty(),
                    span: k.span.to(v.span),
                });
            }
            if kw == "env" {
                Instruction::Env { pairs }
            } else {
                Instruction::Label { pairs }
            }
        }
        "maintainer" => {
            if args.len() != 1 {
                return Err(count_err(cx, node, "exactly one argument"));
            }
            flags(cx, node)?;
            Instruction::Maintainer {
                name: args[0].clone(),
            }
        }
        "add" | "copy" => parse_copy_add(cx, node, &args)?,
        "from" => {
            let name = match args.len() {
                1 => None,
                3 if args[1].eq_ignore_ascii_case("as") => {
                    let n = args[2].to_lowercase();
                    if !stage_name_re().is_match(&n) {
                        return Err(cx.err(
                            ErrorKind::InvalidStageName {
                                name: args[2].clone(),
                            },
                            node.args[2].span,
                        ));
                    }
                    Some(n)
                }
                _ => return Err(cx.err(ErrorKind::FromArguments, args_span(node))),
            };
            let f = flags(cx, node)?;
            Instruction::From(From {
                image: args[0].clone(),
                name,
                platform: f.get("platform").map(str::to_string),
                image_span: node.args[0].span,
            })
        }
        "onbuild" => parse_onbuild(cx, node)?,
        "workdir" | "user" | "stopsignal" => {
            if args.len() != 1 {
                return Err(count_err(cx, node, "exactly one argument"));
            }
            let v = args[0].clone();
            match kw {
                "workdir" => {
                    flags(cx, node)?;
                    Instruction::Workdir { path: v }
                }
                "user" => {
                    flags(cx, node)?;
                    Instruction::User { user: v }
                }
                _ => {
                    ignored_flags(cx, node);
                    Instruction::Stopsignal { signal: v }
                }
            }
        }
        "run" => {
            let f = flags(cx, node)?;
            let mut mounts = Vec::new();
            for (v, span) in f.all("mount") {
                mounts.push(parse_mount(&v).map_err(|k| cx.err(k, span))?);
            }
            for name in ["network", "security"] {
                if let (Some(v), Some(span)) = (f.get(name), f.span(name)) {
                    let ok = match name {
                        "network" => matches!(v, "default" | "none" | "host"),
                        _ => matches!(v, "sandbox" | "insecure"),
                    };
                    if !ok {
                        let reason = format!("unsupported value {v:?}");
                        return Err(cx.err(
                            ErrorKind::InvalidFlagValue {
                                flag: name.to_string(),
                                reason,
                            },
                            span,
                        ));
                    }
                }
            }
            Instruction::Run(Run {
                command: command_line(node, &args),
                heredocs: node.heredocs.clone(),
                mounts,
                network: f.get("network").map(str::to_string),
                security: f.get("security").map(str::to_string),
                devices: f.all("device").into_iter().map(|d| d.0).collect(),
            })
        }
        "cmd" => {
            flags(cx, node)?;
            Instruction::Cmd {
                command: command_line(node, &args),
            }
        }
        "entrypoint" => {
            flags(cx, node)?;
            Instruction::Entrypoint {
                command: command_line(node, &args),
            }
        }
        "healthcheck" => parse_healthcheck(cx, node, &args)?,
        "expose" => {
            if args.is_empty() {
                return Err(count_err(cx, node, "at least one argument"));
            }
            flags(cx, node)?;
            let mut ports = args.clone();
            ports.sort();
            Instruction::Expose { ports }
        }
        "volume" => {
            if args.is_empty() {
                return Err(count_err(cx, node, "at least one argument"));
            }
            flags(cx, node)?;
            let mut paths = Vec::new();
            for w in &node.args {
                let v = w.value.trim();
                if v.is_empty() {
                    return Err(cx.err(ErrorKind::EmptyVolume, w.span));
                }
                paths.push(v.to_string());
            }
            Instruction::Volume { paths }
        }
        "arg" => {
            if args.is_empty() {
                return Err(count_err(cx, node, "at least one argument"));
            }
            ignored_flags(cx, node);
            let mut decls = Vec::new();
            for w in &node.args {
                let (name, default) = match w.value.split_once('=') {
                    Some((n, d)) => (n.to_string(), Some(d.to_string())),
                    None => (w.value.clone(), None),
                };
                if name.is_empty() {
                    return Err(cx.err(
                        ErrorKind::BlankName {
                            instruction: "ARG".into(),
                        },
                        w.span,
                    ));
                }
                decls.push(ArgDecl {
                    name,
                    default,
                    span: w.span,
                });
            }
            Instruction::Arg { args: decls }
        }
        "shell" => {
            flags(cx, node)?;
            if args.is_empty() {
                return Err(count_err(cx, node, "at least one argument"));
            }
            if !node.json {
                return Err(cx.err(
                    ErrorKind::NotJson {
                        instruction: "SHELL".into(),
                    },
                    args_span(node),
                ));
            }
            Instruction::Shell { shell: args }
        }
        _ => {
            let written = cx
                .ast
                .source
                .get(node.keyword_span.start..node.keyword_span.end)
                .unwrap_or(&node.keyword)
                .to_string();
            let suggestion = suggest(&node.keyword, KEYWORDS).map(str::to_string);
            return Err(cx.err(
                ErrorKind::UnknownInstruction {
                    name: written,
                    suggestion,
                },
                node.keyword_span,
            ));
        }
    })
}

fn stage_name_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[a-z][a-z0-9\-_\.]*$").expect("constant regex is valid"))
}

/// ARG, STOPSIGNAL and HEALTHCHECK NONE: BuildKit never parses these flags; we warn.
fn ignored_flags(cx: &mut Ctx, node: &Node) {
    for f in &node.flags {
        let msg = format!(
            "flag {} is ignored on {} (BuildKit ignores it too)",
            f.value,
            node.keyword.to_uppercase()
        );
        cx.warn("IgnoredFlag", msg, f.span);
    }
}

fn parse_copy_add(cx: &mut Ctx, node: &Node, args: &[String]) -> Result<Instruction, ParseError> {
    let upper = node.keyword.to_uppercase();
    if args.len() < 2 {
        return Err(count_err(
            cx,
            node,
            "at least two arguments, but only one was provided; destination could not be determined",
        ));
    }
    let f = flags(cx, node)?;
    let (srcs, dest) = args.split_at(args.len() - 1);
    let dest = dest[0].clone();
    let dest_is_heredoc = parse_heredoc(&dest).ok().flatten().is_some();
    if dest_is_heredoc && !node.json {
        return Err(cx.err(
            ErrorKind::HeredocDestination { instruction: upper },
            node.args[args.len() - 1].span,
        ));
    }
    let mut sources = Vec::new();
    let mut inline = Vec::new();
    for s in srcs {
        match parse_heredoc(s).ok().flatten().filter(|_| !node.json) {
            Some(h) => {
                let body = node.heredocs.iter().find(|d| d.name == h.name);
                let data = match body {
                    Some(b) if h.chomp => b.chomped_content(),
                    Some(b) => b.content.clone(),
                    None => String::new(),
                };
                inline.push(InlineSource {
                    name: h.name,
                    data,
                    expand: h.expand,
                });
            }
            None => sources.push(s.clone()),
        }
    }
    let s = |n: &str| f.get(n).map(str::to_string);
    Ok(if node.keyword == "copy" {
        Instruction::Copy(Copy {
            sources,
            inline,
            dest,
            from: s("from"),
            from_span: f.span("from"),
            chown: s("chown"),
            chmod: s("chmod"),
            link: f.bool("link"),
            parents: f.bool("parents"),
            excludes: f.all("exclude").into_iter().map(|e| e.0).collect(),
        })
    } else {
        Instruction::Add(Add {
            sources,
            inline,
            dest,
            chown: s("chown"),
            chmod: s("chmod"),
            link: f.bool("link"),
            keep_git_dir: f.bool("keep-git-dir"),
            checksum: s("checksum"),
            unpack: f.get("unpack").map(|v| v == "true"),
            excludes: f.all("exclude").into_iter().map(|e| e.0).collect(),
        })
    })
}

fn parse_onbuild(cx: &mut Ctx, node: &Node) -> Result<Instruction, ParseError> {
    let Some(child) = &node.child else {
        return Err(count_err(cx, node, "at least one argument"));
    };
    flags(cx, node)?;
    let trigger = child.keyword.to_uppercase();
    match trigger.as_str() {
        "ONBUILD" => return Err(cx.err(ErrorKind::OnbuildChain, child.keyword_span)),
        "MAINTAINER" | "FROM" => {
            return Err(cx.err(ErrorKind::OnbuildTrigger { trigger }, child.keyword_span))
        }
        _ => {}
    }
    // The trigger's heredocs are attached to the ONBUILD node by the parser.
    let mut inner = (**child).clone();
    inner.heredocs = node.heredocs.clone();
    let parsed = parse_node(cx, &inner)?;
    // BuildKit stores the text after ONBUILD, plus each heredoc body and terminator.
    let mut expression = onbuild_re().replace(&node.original, "").into_owned();
    for h in &node.heredocs {
        expression.push('\n');
        expression.push_str(&h.content);
        expression.push_str(&h.name);
    }
    Ok(Instruction::Onbuild(Onbuild {
        expression,
        trigger: Box::new(parsed),
    }))
}

fn onbuild_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(?i)^\s*ONBUILD\s*").expect("constant regex is valid"))
}

fn parse_healthcheck(
    cx: &mut Ctx,
    node: &Node,
    args: &[String],
) -> Result<Instruction, ParseError> {
    let Some(first) = args.first() else {
        return Err(count_err(cx, node, "at least one argument"));
    };
    let typ = first.to_uppercase();
    let rest = &args[1..];
    if typ == "NONE" {
        if !rest.is_empty() {
            return Err(cx.err(ErrorKind::HealthcheckNoneArgs, args_span(node)));
        }
        ignored_flags(cx, node);
        return Ok(Instruction::Healthcheck(Healthcheck::None));
    }
    let f = flags(cx, node)?;
    if typ != "CMD" {
        return Err(cx.err(ErrorKind::HealthcheckType { kind: typ }, node.args[0].span));
    }
    let cmd: Vec<String> = if node.json {
        rest.to_vec()
    } else if rest.is_empty() {
        Vec::new()
    } else {
        vec![rest.join(" ")]
    };
    if cmd.is_empty() {
        return Err(cx.err(ErrorKind::HealthcheckMissingCommand, node.args[0].span));
    }
    let mut test = vec![if node.json { "CMD" } else { "CMD-SHELL" }.to_string()];
    test.extend(cmd);
    let dur = |name: &str| -> Result<i64, ParseError> {
        let (Some(v), Some(span)) = (f.get(name), f.span(name)) else {
            return Ok(0);
        };
        if v.is_empty() {
            return Ok(0);
        }
        let d = super::parse_duration(v).map_err(|reason| {
            cx.err(
                ErrorKind::Duration {
                    flag: name.to_string(),
                    reason,
                },
                span,
            )
        })?;
        if d != 0 && d < 1_000_000 {
            return Err(cx.err(
                ErrorKind::Duration {
                    flag: name.to_string(),
                    reason: "cannot be less than 1ms".into(),
                },
                span,
            ));
        }
        Ok(d)
    };
    let (interval, timeout) = (dur("interval")?, dur("timeout")?);
    let (start_period, start_interval) = (dur("start-period")?, dur("start-interval")?);
    let retries = match (f.get("retries"), f.span("retries")) {
        (Some(v), Some(span)) if !v.is_empty() => {
            let r: i64 = v.parse::<i32>().map(i64::from).map_err(|_| {
                cx.err(
                    ErrorKind::InvalidFlagValue {
                        flag: "retries".into(),
                        reason: format!("{v:?} is not an integer"),
                    },
                    span,
                )
            })?;
            if r < 0 {
                return Err(cx.err(
                    ErrorKind::InvalidFlagValue {
                        flag: "retries".into(),
                        reason: format!("cannot be negative ({r})"),
                    },
                    span,
                ));
            }
            r
        }
        _ => 0,
    };
    Ok(Instruction::Healthcheck(Healthcheck::Cmd {
        test,
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
    }))
}
