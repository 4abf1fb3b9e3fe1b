//! One stage's instructions → [`Step`]s: expansion with the stage environment, ARG resolution,
//! working directory and shell tracking, `created_by` text as BuildKit writes it, and each
//! step's canonical encoding and inputs.
use super::build::{encode, expand, resolve_from, undefined, Ctx, PROXY_ARGS};
use super::env::VarList;
use super::key::Input;
use super::{
    Base, ConfigEdit, CopyStep, InlineFile, PlanError, PlanErrorKind, PlanOptions, PlannedMount,
    Platform, RunStep, Source, Step, StepKind,
};
use crate::dockerfile::ast::go_quote;
use crate::dockerfile::instructions::{
    Command, CommandLine, Healthcheck, Instruction, MountType, Stage as StageDef,
};
use crate::dockerfile::lex::Lexer;
use crate::dockerfile::parser::parse_heredoc;
use serde::Serialize;

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
}

impl State {
    pub(crate) fn initial(base: &Base, platform: &Platform, opts: &PlanOptions) -> State {
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
        };
        if let Base::Image { reference } = base {
            if let Some(cfg) = opts.base_configs.get(reference) {
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

pub(crate) struct StagePlanner<'c, 'a> {
    pub(crate) cx: &'c mut Ctx<'a>,
    pub(crate) stage: &'a StageDef,
    pub(crate) state: State,
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_q_slice(v: &[String]) -> String {
    let parts: Vec<String> = v.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", parts.join(" "))
}

/// Go's `%v` of a `[]string`: `[a b]`.
fn go_v_slice(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// Go's `path.Clean` for absolute slash paths.
pub(crate) fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

fn resolve_under(workdir: &str, p: &str) -> String {
    if p.starts_with('/') {
        clean_path(p)
    } else {
        clean_path(&format!("{workdir}/{p}"))
    }
}

/// Go's `time.Duration.String` for non-negative durations.
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let frac = |v: u64, unit: u64| -> String {
        let whole = v / unit;
        let rem = v % unit;
        if rem == 0 {
            return whole.to_string();
        }
        let digits = unit.to_string().len() - 1;
        let f = format!("{rem:0digits$}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    };
    let s = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", frac(u, 1_000))
    } else if u < 1_000_000_000 {
        format!("{}ms", frac(u, 1_000_000))
    } else {
        let h = u / 3_600_000_000_000;
        let m = (u / 60_000_000_000) % 60;
        let s = u % 60_000_000_000;
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&format!("{}s", frac(s, 1_000_000_000)));
        out
    };
    if neg {
        format!("-{s}")
    } else {
        s
    }
}

/// Go's `strconv.QuoteRune` of an int, as `%q` prints ints.
fn go_q_int(i: i64) -> String {
    match u32::try_from(i).ok().and_then(char::from_u32) {
        Some(c) => {
            let q = go_quote(&c.to_string());
            let inner = &q[1..q.len() - 1];
            let inner = if inner == "\\\"" { "\"" } else { inner };
            let inner = if inner == "'" { "\\'" } else { inner };
            format!("'{inner}'")
        }
        None => format!("%!q(int={i})"),
    }
}

fn healthcheck_created_by(h: &Healthcheck) -> String {
    let (test, iv, to, sp, si, r) = match h {
        Healthcheck::None => (vec!["NONE".to_string()], 0, 0, 0, 0, 0),
        Healthcheck::Cmd {
            test,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => (
            test.clone(),
            *interval,
            *timeout,
            *start_period,
            *start_interval,
            *retries,
        ),
    };
    format!(
        "HEALTHCHECK &{{{} {} {} {} {} {}}}",
        go_q_slice(&test),
        go_quote(&go_duration(iv)),
        go_quote(&go_duration(to)),
        go_quote(&go_duration(sp)),
        go_quote(&go_duration(si)),
        go_q_int(r)
    )
}

fn is_git_source(s: &str) -> bool {
    s.starts_with("git@")
        || s.starts_with("git://")
        || ((s.starts_with("https://") || s.starts_with("http://"))
            && s.split('#').next().is_some_and(|u| u.ends_with(".git")))
}

impl StagePlanner<'_, '_> {
    fn exp(&mut self, word: &str, cmd: &Command) -> Result<String, PlanError> {
        let warn = self.state.env_complete;
        let env = self.state.env.clone();
        expand(self.cx, word, &env, cmd, warn)
    }

    fn exp_opt(&mut self, w: &Option<String>, cmd: &Command) -> Result<Option<String>, PlanError> {
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

    fn content_source(
        &mut self,
        from: &Option<String>,
        cmd: &Command,
    ) -> Result<Source, PlanError> {
        match from {
            None => Ok(Source::Context),
            Some(f) => resolve_from(self.cx, f, self.stage.index, cmd.span, cmd),
        }
    }

    pub(crate) fn plan_steps(&mut self) -> Result<Vec<Step>, PlanError> {
        let mut steps = Vec::with_capacity(self.stage.commands.len());
        for cmd in &self.stage.commands {
            steps.push(self.plan_step(cmd)?);
        }
        Ok(steps)
    }

    fn plan_step(&mut self, cmd: &Command) -> Result<Step, PlanError> {
        let mut inputs = Vec::new();
        let (kind, created_by, empty_layer) = match &cmd.instruction {
            Instruction::Arg { args } => {
                let env = self.state.env.clone();
                let mut resolved = Vec::new();
                let mut shown = Vec::new();
                for a in args {
                    let default = match &a.default {
                        Some(d) => Some(expand(self.cx, d, &env, cmd, self.state.env_complete)?),
                        None => None,
                    };
                    shown.push(match &default {
                        Some(d) => format!("{}={d}", a.name),
                        None => a.name.clone(),
                    });
                    let value = match (self.cx.build_arg(&a.name), default) {
                        (Some(v), _) => Some(v),
                        (None, Some(d)) => Some(d),
                        (None, None) => self.cx.global(&a.name).flatten(),
                    };
                    resolved.push((a.name.clone(), value));
                }
                for (k, v) in &resolved {
                    if let Some(v) = v {
                        self.state.env.set(k, v);
                    }
                    self.state.args.retain(|(n, _)| n != k);
                    self.state.args.push((k.clone(), v.clone()));
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
                        format!("{k}={v}")
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
                    network: run.network.clone(),
                    security: run.security.clone(),
                };
                (StepKind::Run(step), cb, false)
            }
            Instruction::Copy(c) => {
                let l = CopyLike {
                    add: false,
                    srcs: &c.sources,
                    inline: &c.inline,
                    dest: &c.dest,
                    from: c.from.clone(),
                    chown: &c.chown,
                    chmod: &c.chmod,
                    link: c.link,
                    parents: c.parents,
                    excludes: &c.excludes,
                    keep_git_dir: false,
                    checksum: &None,
                    unpack: None,
                };
                let (cs, cb) = self.plan_copy(cmd, l, &mut inputs)?;
                (StepKind::Copy(cs), cb, false)
            }
            Instruction::Add(a) => {
                let l = CopyLike {
                    add: true,
                    srcs: &a.sources,
                    inline: &a.inline,
                    dest: &a.dest,
                    from: None,
                    chown: &a.chown,
                    chmod: &a.chmod,
                    link: a.link,
                    parents: false,
                    excludes: &a.excludes,
                    keep_git_dir: a.keep_git_dir,
                    checksum: &a.checksum,
                    unpack: a.unpack,
                };
                let (cs, cb) = self.plan_copy(cmd, l, &mut inputs)?;
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
                (
                    StepKind::Config(ConfigEdit::Entrypoint { command: c }),
                    cb,
                    true,
                )
            }
            Instruction::Expose { ports } => {
                let env = self.state.env.clone();
                let mut out = Vec::new();
                for p in ports {
                    let words = self.cx.lexer.process_words(p, &env).map_err(|e| {
                        self.cx
                            .err(PlanErrorKind::Expand(e), cmd.span, cmd.position)
                    })?;
                    for w in words {
                        out.extend(parse_port(&w).map_err(|reason| {
                            self.cx.err(
                                PlanErrorKind::InvalidPort {
                                    value: w.clone(),
                                    reason,
                                },
                                cmd.span,
                                cmd.position,
                            )
                        })?);
                    }
                }
                let cb = format!("EXPOSE {}", out.join(" "));
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
        #[derive(Serialize)]
        struct Enc<'a> {
            v: &'static str,
            step: &'a StepKind,
        }
        // Undeclared proxy variables are deliberately not part of the key (BuildKit keeps them
        // out of history and cache too).
        let mut keyed = kind.clone();
        if let StepKind::Run(r) = &mut keyed {
            r.proxy_env.clear();
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
            empty_layer,
            encoding,
            inputs,
            cache_key: String::new(),
        })
    }

    fn plan_copy(
        &mut self,
        cmd: &Command,
        l: CopyLike<'_>,
        inputs: &mut Vec<Input>,
    ) -> Result<(CopyStep, String), PlanError> {
        let CopyLike {
            add,
            srcs,
            inline,
            dest,
            from,
            chown,
            chmod,
            link,
            parents,
            excludes,
            ..
        } = l;
        let source = self.content_source(&from, cmd)?;
        let mut sources = Vec::new();
        for s in srcs {
            sources.push(self.exp(s, cmd)?);
        }
        let dest_x = self.exp(dest, cmd)?;
        let mut files = Vec::new();
        for f in inline {
            let data = if f.expand {
                let mut lex = Lexer::new(self.cx.df.escape);
                lex.skip_process_quotes = true;
                let env = self.state.env.clone();
                let r = lex.process_word(&f.data, &env).map_err(|e| {
                    self.cx
                        .err(PlanErrorKind::Expand(e), cmd.span, cmd.position)
                })?;
                if self.state.env_complete {
                    undefined(self.cx, &r.unmatched, cmd);
                }
                r.result
            } else {
                f.data.clone()
            };
            files.push(InlineFile {
                name: f.name.clone(),
                data,
            });
        }
        let chown = self.exp_opt(chown, cmd)?;
        let chmod = self.exp_opt(chmod, cmd)?;
        let (keep_git_dir, unpack) = (l.keep_git_dir, l.unpack);
        let checksum = self.exp_opt(l.checksum, cmd)?;
        // A relative destination is under WORKDIR; a trailing slash (or `.`) means a directory.
        let dir = dest_x.ends_with('/') || dest_x == "." || dest_x.ends_with("/.");
        let mut resolved = resolve_under(&self.state.workdir, &dest_x);
        if dir && !resolved.ends_with('/') {
            resolved.push('/');
        }
        match &source {
            Source::Context => {
                let mut local = Vec::new();
                for s in &sources {
                    if add && is_git_source(s) {
                        inputs.push(Input::Git { url: s.clone() });
                    } else if add && (s.starts_with("http://") || s.starts_with("https://")) {
                        inputs.push(Input::Url { url: s.clone() });
                    } else {
                        local.push(s.clone());
                    }
                }
                if !local.is_empty() {
                    inputs.insert(
                        0,
                        Input::Context {
                            paths: local,
                            excludes: excludes.to_vec(),
                        },
                    );
                }
            }
            Source::Stage { stage } => inputs.push(Input::Stage { stage: *stage }),
            Source::Image { reference } => inputs.push(Input::Image {
                reference: reference.clone(),
                platform: String::new(),
            }),
        }
        let mut cb = String::from(if add { "ADD" } else { "COPY" });
        for s in &sources {
            cb.push(' ');
            cb.push_str(s);
        }
        for f in &files {
            cb.push_str(" <<");
            cb.push_str(&f.name);
        }
        cb.push(' ');
        cb.push_str(&dest_x);
        cb.push_str(" # buildkit");
        Ok((
            CopyStep {
                add,
                source,
                sources,
                inline: files,
                dest: resolved,
                chown,
                chmod,
                link,
                parents,
                excludes: excludes.to_vec(),
                keep_git_dir,
                checksum,
                unpack,
            },
            cb,
        ))
    }
}

/// The fields COPY and ADD share.
struct CopyLike<'a> {
    add: bool,
    srcs: &'a [String],
    inline: &'a [crate::dockerfile::instructions::InlineSource],
    dest: &'a str,
    from: Option<String>,
    chown: &'a Option<String>,
    chmod: &'a Option<String>,
    link: bool,
    parents: bool,
    excludes: &'a [String],
    keep_git_dir: bool,
    checksum: &'a Option<String>,
    unpack: Option<bool>,
}

/// Parses one EXPOSE word into `port/proto` entries (ranges expanded).
fn parse_port(w: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match w.rsplit_once('/') {
        Some((p, proto)) => (p, proto.to_lowercase()),
        None => (w, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto {proto:?}"));
    }
    // `ip:host:container` is accepted by BuildKit (with a lint); the container port counts.
    let ports = ports.rsplit(':').next().unwrap_or(ports);
    let num = |s: &str| -> Result<u32, String> {
        let n: u32 = s
            .parse()
            .map_err(|_| format!("invalid containerPort: {s}"))?;
        if n > 65535 {
            return Err(format!("value out of range (0-65535): {n}"));
        }
        Ok(n)
    };
    let (a, b) = match ports.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let n = num(ports)?;
            (n, n)
        }
    };
    if b < a {
        return Err(format!("invalid range {ports}"));
    }
    Ok((a..=b).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formatting_helpers() {
        assert_eq!(go_duration(5_000_000_000), "5s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_q_int(3), "'\\x03'");
        assert_eq!(clean_path("/a/./b/../c/"), "/a/c");
        assert_eq!(parse_port("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(parse_port("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(
            parse_port("8000-8001").unwrap(),
            vec!["8000/tcp", "8001/tcp"]
        );
        assert!(parse_port("80/foo").is_err());
        assert!(parse_port("99999").is_err());
    }
}
