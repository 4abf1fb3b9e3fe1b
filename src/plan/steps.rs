//! One stage's instructions → [`Step`]s: expansion with the stage environment, ARG resolution,
//! working directory and shell tracking, `created_by` text as BuildKit writes it, and each
//! step's canonical encoding and inputs. COPY and ADD are planned in [`super::copy`].
use super::env::VarList;
use super::history::{
    go_q_slice, go_v_slice, healthcheck_created_by, history_arg, parse_port, resolve_under,
    valid_signal,
};
use super::key::Input;
use super::scope::{encode, expand, resolve_from, Ctx, PROXY_ARGS};
use super::{
    Base, BaseConfig, ConfigEdit, InlineFile, PlanError, PlanErrorKind, PlannedMount, Platform,
    RunStep, Source, Step, StepKind,
};
use crate::dockerfile::instructions::{
    Command, CommandLine, Instruction, MountType, Stage as StageDef,
};
use crate::dockerfile::lex::Lexer;
use crate::dockerfile::parser::parse_heredoc;
use serde::Serialize;

/// Most port entries one EXPOSE may produce (ranges expanded).
const MAX_PORTS: usize = 3 * 65536;

/// Largest build environment (sum of names and values) a stage may hold. Real ones are a few
/// KiB; the limit keeps `ENV` growth tricks from multiplying memory across RUN steps.
pub(crate) const MAX_ENV: usize = 256 * 1024;

/// The build state carried through a stage (and into stages based on it).
#[derive(Debug, Clone)]
pub(crate) struct State {
    /// ENV and valued ARGs: what RUN sees and what words expand with.
    pub(crate) env: VarList,
    /// ENV only: the image config `Env`.
    pub(crate) config_env: VarList,
    /// ARGs declared so far, with their values.
    pub(crate) args: Vec<(String, Option<String>)>,
    pub(crate) workdir: String,
    pub(crate) user: Option<String>,
    pub(crate) shell: Vec<String>,
    /// Whether the environment is fully known (no unknown base image env).
    pub(crate) env_complete: bool,
    /// Whether this stage has set CMD: until it has, an ENTRYPOINT resets the CMD it inherited.
    pub(crate) cmd_set: bool,
}

impl State {
    /// The state a stage starts in: the base image's config when the resolver gave it.
    pub(crate) fn initial(base: &Base, platform: &Platform, config: Option<&BaseConfig>) -> State {
        let ci = platform.is_windows();
        let shell: Vec<String> = if ci {
            vec!["cmd".into(), "/S".into(), "/C".into()]
        } else {
            vec!["/bin/sh".into(), "-c".into()]
        };
        let mut s = State {
            env: VarList::new(ci),
            config_env: VarList::new(ci),
            args: Vec::new(),
            workdir: "/".into(),
            user: None,
            shell,
            env_complete: !matches!(base, Base::Image { .. }),
            cmd_set: false,
        };
        if let Base::Image { .. } = base {
            if let Some(cfg) = config {
                for (k, v) in &cfg.env {
                    s.env.set(k, v);
                    s.config_env.set(k, v);
                }
                if let Some(w) = &cfg.working_dir {
                    if !w.is_empty() {
                        s.workdir = w.clone();
                    }
                }
                s.user = cfg.user.clone().filter(|u| !u.is_empty());
                if let Some(sh) = &cfg.shell {
                    if !sh.is_empty() {
                        s.shell = sh.clone();
                    }
                }
                s.env_complete = true;
            }
        }
        s
    }
}

impl State {
    /// The state a stage based on this one starts in: everything carries over except that
    /// the new stage has not set CMD yet.
    pub(crate) fn child(&self) -> State {
        State {
            cmd_set: false,
            ..self.clone()
        }
    }
}

pub(crate) struct StagePlanner<'c, 'a> {
    pub(crate) cx: &'c mut Ctx<'a>,
    pub(crate) stage: &'a StageDef,
    pub(crate) state: State,
}

impl StagePlanner<'_, '_> {
    pub(super) fn exp(&mut self, word: &str, cmd: &Command) -> Result<String, PlanError> {
        let warn = self.state.env_complete;
        let env = self.state.env.clone();
        expand(self.cx, word, &env, cmd, warn)
    }

    pub(super) fn exp_opt(
        &mut self,
        w: &Option<String>,
        cmd: &Command,
    ) -> Result<Option<String>, PlanError> {
        w.as_ref().map(|w| self.exp(w, cmd)).transpose()
    }

    fn wrap(&self, c: &CommandLine) -> Vec<String> {
        match c {
            CommandLine::Exec(v) => v.clone(),
            CommandLine::Shell(s) => {
                let mut v = self.state.shell.clone();
                v.push(s.clone());
                v
            }
        }
    }

    pub(super) fn content_source(
        &mut self,
        from: &Option<String>,
        cmd: &Command,
    ) -> Result<Source, PlanError> {
        match from {
            None => Ok(Source::Context),
            Some(f) => resolve_from(self.cx, f, self.stage.index, cmd.span, cmd),
        }
    }

    /// Plans `triggers` (a base image's ONBUILD) and then the stage's own commands.
    pub(crate) fn plan_steps(&mut self, triggers: &[Command]) -> Result<Vec<Step>, PlanError> {
        let mut steps = Vec::with_capacity(triggers.len() + self.stage.commands.len());
        for cmd in triggers.iter().chain(&self.stage.commands) {
            steps.push(self.plan_step(cmd)?);
        }
        Ok(steps)
    }

    fn plan_step(&mut self, cmd: &Command) -> Result<Step, PlanError> {
        let mut inputs = Vec::new();
        let name = progress_name(self.cx.lexer, cmd, &self.state.env);
        let (kind, created_by, empty_layer) = match &cmd.instruction {
            Instruction::Arg { args } => {
                // Names are resolved one after another, each default seeing the ARGs before it
                // on the same line (BuildKit's `dispatchArg`); a default is only expanded when no
                // build arg overrides it.
                let mut resolved = Vec::new();
                let mut shown = Vec::new();
                for a in args {
                    let value = match (self.cx.build_arg(&a.name), &a.default) {
                        (Some(v), d) => {
                            shown.push(match d {
                                Some(d) => format!("{}={d}", a.name),
                                None => a.name.clone(),
                            });
                            Some(v)
                        }
                        (None, Some(d)) => {
                            let env = self.state.env.clone();
                            let v = expand(self.cx, d, &env, cmd, self.state.env_complete)?;
                            shown.push(history_arg(&a.name, &v));
                            Some(v)
                        }
                        (None, None) => {
                            shown.push(a.name.clone());
                            self.cx.global(&a.name).flatten()
                        }
                    };
                    if let Some(v) = &value {
                        self.state.env.set(&a.name, v);
                    }
                    // A re-declared ARG keeps its first position (BuildKit's `runCommandString`).
                    match self.state.args.iter_mut().find(|(n, _)| *n == a.name) {
                        Some(slot) => slot.1 = value.clone(),
                        None => self.state.args.push((a.name.clone(), value.clone())),
                    }
                    resolved.push((a.name.clone(), value));
                }
                let cb = format!("ARG {}", shown.join(" "));
                (
                    StepKind::Config(ConfigEdit::Arg { args: resolved }),
                    cb,
                    true,
                )
            }
            Instruction::Env { pairs } | Instruction::Label { pairs } => {
                let is_env = matches!(cmd.instruction, Instruction::Env { .. });
                let env = self.state.env.clone();
                let warn = self.state.env_complete;
                let mut out = Vec::new();
                for p in pairs {
                    let k = expand(self.cx, &p.key, &env, cmd, warn)?;
                    let v = expand(self.cx, &p.value, &env, cmd, warn)?;
                    out.push((k, v));
                }
                let text: Vec<String> = out.iter().map(|(k, v)| format!("{k}={v}")).collect();
                if is_env {
                    for (k, v) in &out {
                        self.state.env.set(k, v);
                        self.state.config_env.set(k, v);
                    }
                    let cb = format!("ENV {}", text.join(" "));
                    (StepKind::Config(ConfigEdit::Env { pairs: out }), cb, true)
                } else {
                    let cb = format!("LABEL {}", text.join(" "));
                    (StepKind::Config(ConfigEdit::Label { pairs: out }), cb, true)
                }
            }
            Instruction::Run(run) => {
                let mut heredocs = Vec::new();
                let argv = match &run.command {
                    CommandLine::Shell(line) if !run.heredocs.is_empty() => {
                        let single = run.heredocs.len() == 1
                            && parse_heredoc(line.trim())
                                .ok()
                                .flatten()
                                .is_some_and(|h| h.name == run.heredocs[0].name);
                        if single {
                            // `RUN <<EOF`: the body is the script.
                            let h = &run.heredocs[0];
                            let body = h.chomped_content();
                            heredocs.push(InlineFile {
                                name: h.name.clone(),
                                data: body.clone(),
                            });
                            if body.starts_with("#!") {
                                vec![format!("/dev/pipes/{}", h.name)]
                            } else {
                                self.wrap(&CommandLine::Shell(body))
                            }
                        } else {
                            // The shell interprets the heredocs: line, then bodies and terminators.
                            let mut text = line.clone();
                            for h in &run.heredocs {
                                text.push('\n');
                                text.push_str(&h.content);
                                text.push_str(&h.name);
                                heredocs.push(InlineFile {
                                    name: h.name.clone(),
                                    data: h.content.clone(),
                                });
                            }
                            self.wrap(&CommandLine::Shell(text))
                        }
                    }
                    c => self.wrap(c),
                };
                let mut mounts = Vec::new();
                for m in &run.mounts {
                    let mut pm = m.clone();
                    for f in [
                        &mut pm.target,
                        &mut pm.source,
                        &mut pm.id,
                        &mut pm.mode,
                        &mut pm.uid,
                        &mut pm.gid,
                        &mut pm.size,
                        &mut pm.env,
                    ] {
                        if let Some(v) = f.as_ref() {
                            let e = self.exp(&v.clone(), cmd)?;
                            *f = Some(e);
                        }
                    }
                    let source = self.content_source(&m.from, cmd)?;
                    if matches!(pm.mount_type(), MountType::Bind) {
                        match &source {
                            Source::Context => inputs.push(Input::Context {
                                paths: vec![pm.source.clone().unwrap_or_else(|| ".".into())],
                                excludes: Vec::new(),
                            }),
                            Source::Stage { stage } => inputs.push(Input::Stage { stage: *stage }),
                            Source::Image { reference } => inputs.push(Input::Image {
                                reference: reference.clone(),
                                platform: String::new(),
                            }),
                        }
                    }
                    mounts.push(PlannedMount { mount: pm, source });
                }
                let declared: Vec<String> = self.state.args.iter().map(|a| a.0.clone()).collect();
                let proxy_env: Vec<(String, String)> = PROXY_ARGS
                    .iter()
                    .filter(|p| !declared.iter().any(|d| d == *p))
                    .filter_map(|p| {
                        self.cx
                            .opts
                            .build_args
                            .get(*p)
                            .map(|v| (p.to_string(), v.clone()))
                    })
                    .collect();
                for (p, _) in &proxy_env {
                    self.cx.consumed.insert(p.clone());
                }
                let shown_args: Vec<String> = self
                    .state
                    .args
                    .iter()
                    .map(|(k, v)| {
                        let v = self
                            .state
                            .env
                            .lookup(k)
                            .map(str::to_string)
                            .or_else(|| v.clone())
                            .unwrap_or_default();
                        history_arg(k, &v)
                    })
                    .collect();
                let prefix = if shown_args.is_empty() {
                    String::new()
                } else {
                    format!("|{} {} ", shown_args.len(), shown_args.join(" "))
                };
                let cb = format!("RUN {prefix}{} # buildkit", argv.join(" "));
                let step = RunStep {
                    argv,
                    heredocs,
                    env: self.state.env.entries.clone(),
                    proxy_env,
                    workdir: self.state.workdir.clone(),
                    user: self.state.user.clone(),
                    mounts,
                    // The RUN's own `none` or `host` wins over the build's `--network`, which
                    // applies to `RUN --network=default` too (BuildKit's dispatchRunNetwork adds
                    // no network option for `default`, so the state's forced mode stays); both
                    // enter the key through the ExecOp's `network` field, as here.
                    network: match (run.network.as_deref(), &self.cx.opts.network) {
                        (None | Some("default"), Some(build)) => Some(build.clone()),
                        _ => run.network.clone(),
                    },
                    security: run.security.clone(),
                };
                (StepKind::Run(step), cb, false)
            }
            Instruction::Copy(c) => {
                let (cs, cb) = self.plan_copy_instruction(cmd, c, &mut inputs)?;
                (StepKind::Copy(cs), cb, false)
            }
            Instruction::Add(a) => {
                let (cs, cb) = self.plan_add_instruction(cmd, a, &mut inputs)?;
                (StepKind::Copy(cs), cb, false)
            }
            Instruction::Workdir { path } => {
                let p = self.exp(path, cmd)?;
                let wd = resolve_under(&self.state.workdir, &p);
                self.state.workdir = wd.clone();
                let cb = format!("WORKDIR {wd}");
                let empty = wd == "/";
                (StepKind::Workdir { path: wd }, cb, empty)
            }
            Instruction::User { user } => {
                let u = self.exp(user, cmd)?;
                self.state.user = Some(u.clone());
                let cb = format!("USER {u}");
                (StepKind::Config(ConfigEdit::User { user: u }), cb, true)
            }
            Instruction::Cmd { command } => {
                self.state.cmd_set = true;
                let c = self.wrap(command);
                let cb = format!("CMD {}", go_q_slice(&c));
                (StepKind::Config(ConfigEdit::Cmd { command: c }), cb, true)
            }
            Instruction::Entrypoint { command } => {
                let c = match command {
                    CommandLine::Exec(v) if v.is_empty() => None,
                    c => Some(self.wrap(c)),
                };
                let cb = format!("ENTRYPOINT {}", go_q_slice(c.as_deref().unwrap_or(&[])));
                // BuildKit's dispatchEntrypoint: an ENTRYPOINT resets the CMD the stage
                // inherited, unless the stage set CMD itself before it.
                let edit = ConfigEdit::Entrypoint {
                    command: c,
                    reset_cmd: !self.state.cmd_set,
                };
                (StepKind::Config(edit), cb, true)
            }
            Instruction::Expose { ports } => {
                let env = self.state.env.clone();
                // A set: repeated ranges collapse, so the list stays bounded (3 × 65536).
                let mut out = std::collections::BTreeSet::new();
                let mut generated = 0;
                for p in ports {
                    let words = self.cx.lexer.process_words(p, &env).map_err(|e| {
                        self.cx
                            .err(PlanErrorKind::Expand(e), cmd.span, cmd.position)
                    })?;
                    for w in words {
                        let ports = parse_port(&w).map_err(|reason| {
                            self.cx.err(
                                PlanErrorKind::InvalidPort {
                                    value: w.clone(),
                                    reason,
                                },
                                cmd.span,
                                cmd.position,
                            )
                        })?;
                        generated += ports.len();
                        if generated > MAX_PORTS {
                            let reason = format!("more than {MAX_PORTS} ports in one EXPOSE");
                            return Err(self.cx.err(
                                PlanErrorKind::InvalidPort { value: w, reason },
                                cmd.span,
                                cmd.position,
                            ));
                        }
                        out.extend(ports);
                    }
                }
                // BuildKit prints the port set with Go's `%v` of a map: sorted `map[k:{} …]`.
                let shown: Vec<String> = out.iter().map(|k| format!("{k}:{{}}")).collect();
                let out: Vec<String> = out.into_iter().collect();
                let cb = format!("EXPOSE map[{}]", shown.join(" "));
                (
                    StepKind::Config(ConfigEdit::Expose { ports: out }),
                    cb,
                    true,
                )
            }
            Instruction::Volume { paths } => {
                let mut out = Vec::new();
                for p in paths {
                    out.push(self.exp(p, cmd)?);
                }
                let cb = format!("VOLUME {}", go_v_slice(&out));
                (
                    StepKind::Config(ConfigEdit::Volume { paths: out }),
                    cb,
                    true,
                )
            }
            Instruction::Stopsignal { signal } => {
                let s = self.exp(signal, cmd)?;
                if !valid_signal(&s) {
                    return Err(self.cx.err(
                        PlanErrorKind::InvalidSignal { signal: s },
                        cmd.span,
                        cmd.position,
                    ));
                }
                let cb = format!("STOPSIGNAL {s}");
                (
                    StepKind::Config(ConfigEdit::StopSignal { signal: s }),
                    cb,
                    true,
                )
            }
            Instruction::Shell { shell } => {
                self.state.shell = shell.clone();
                let cb = format!("SHELL {}", go_v_slice(shell));
                let edit = ConfigEdit::Shell {
                    shell: shell.clone(),
                };
                (StepKind::Config(edit), cb, true)
            }
            Instruction::Healthcheck(h) => {
                let cb = healthcheck_created_by(h);
                let edit = ConfigEdit::Healthcheck { check: h.clone() };
                (StepKind::Config(edit), cb, true)
            }
            Instruction::Onbuild(o) => {
                let cb = format!("ONBUILD {}", o.expression);
                let edit = ConfigEdit::Onbuild {
                    expression: o.expression.clone(),
                };
                (StepKind::Config(edit), cb, true)
            }
            Instruction::Maintainer { name } => {
                let cb = format!("MAINTAINER {name}");
                let edit = ConfigEdit::Maintainer { name: name.clone() };
                (StepKind::Config(edit), cb, true)
            }
            // FROM never appears inside a stage's commands.
            Instruction::From(_) => {
                let edit = ConfigEdit::Arg { args: Vec::new() };
                (StepKind::Config(edit), String::new(), true)
            }
        };
        if self.state.env.size() > MAX_ENV {
            return Err(self.cx.err(
                PlanErrorKind::EnvTooLarge { max: MAX_ENV },
                cmd.span,
                cmd.position,
            ));
        }
        #[derive(Serialize)]
        struct Enc<'a> {
            v: &'static str,
            step: &'a StepKind,
        }
        // Undeclared proxy variables are deliberately not part of the key (BuildKit keeps them
        // out of history and cache too), and neither is how a mount was spelled.
        let mut keyed = kind.clone();
        if let StepKind::Run(r) = &mut keyed {
            r.proxy_env.clear();
            // The parsed, expanded mount fields are keyed; the text as written is not.
            for m in &mut r.mounts {
                m.mount.raw.clear();
            }
        }
        let encoding = encode(&Enc {
            v: "kiln-step-v1",
            step: &keyed,
        });
        Ok(Step {
            kind,
            span: cmd.span,
            position: cmd.position,
            created_by,
            name,
            empty_layer,
            encoding,
            inputs,
        })
    }
}

/// A step's environment as its name shows it: a secret-looking variable's value is
/// [`super::history::REDACTED`], as in history (BuildKit shows the value; a token passed with
/// `--build-arg` would reach every CI log).
struct Redacted<'a>(&'a VarList);

impl crate::dockerfile::lex::Env for Redacted<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        let value = crate::dockerfile::lex::Env::get(self.0, name)?;
        if !value.is_empty() && super::history::is_secret_arg(name) {
            return Some(super::history::REDACTED);
        }
        Some(value)
    }
}

/// The name BuildKit's progress gives `cmd`: its logical line with the keyword upper-cased and
/// variables expanded in the environment before the step (dockerfile2llb's
/// `uppercaseCmd(processCmdEnv(shlex, c.String(), env))`; RUN's lexer keeps quotes and leaves
/// unset variables as written, as dispatchRun sets `RawQuotes` and `SkipUnsetEnv`). A line that
/// does not expand is shown as written.
pub(crate) fn progress_name(lexer: Lexer, cmd: &Command, env: &VarList) -> String {
    let mut lexer = lexer;
    if matches!(cmd.instruction, Instruction::Run(_)) {
        lexer.raw_quotes = true;
        lexer.skip_unset_env = true;
    }
    let text = cmd.original.trim();
    let expanded = match lexer.process_word(text, &Redacted(env)) {
        Ok(e) => e.result,
        Err(_) => text.to_string(),
    };
    match expanded.split_once(' ') {
        Some((keyword, rest)) => format!("{} {rest}", keyword.to_uppercase()),
        None => expanded.to_uppercase(),
    }
}
