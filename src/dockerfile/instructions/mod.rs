//! Typed instructions: [`Ast`](super::Ast) → [`Dockerfile`] (global ARGs and stages of
//! [`Command`]s), a port of BuildKit's `instructions/parse.go` and `bflag.go`.
//!
//! Validation done here: known keywords (with a did-you-mean), known flags per instruction and
//! their types (bool, string, repeatable), argument counts, FROM forms and stage names,
//! HEALTHCHECK forms and durations, SHELL in JSON form, ONBUILD triggers, `RUN --mount` syntax,
//! heredoc destinations. Nothing is expanded: every value is as written, and the planner
//! expands the ones BuildKit expands.
//!
//! Quirk kept from BuildKit: ARG, STOPSIGNAL and HEALTHCHECK NONE never validate their flags, so
//! flags there are ignored (with a warning) instead of rejected.
mod flags;
mod parse;

pub use flags::{parse_duration, Mount, MountType};
pub use parse::instructions;

use super::ast::{Directive, Heredoc, LineIndex, Position, Span, Warning};
use serde::Serialize;

/// A command: exec form (JSON array) or shell form (the text, run with the current SHELL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandLine {
    /// `["prog", "arg"]`: run as is.
    Exec(Vec<String>),
    /// `prog arg`: passed to the shell as one string.
    Shell(String),
}

impl CommandLine {
    /// Whether this is the JSON (exec) form.
    pub fn is_exec(&self) -> bool {
        matches!(self, CommandLine::Exec(_))
    }
}

/// `KEY=value` from ENV or LABEL (value not yet expanded or unquoted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The key as written.
    pub key: String,
    /// The value as written (quotes and escapes still in it).
    pub value: String,
    /// Written in the legacy `KEY value` form.
    pub legacy: bool,
    /// Where the pair is.
    pub span: Span,
}

/// One name in an ARG instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    /// The name.
    pub name: String,
    /// The default as written, if any (`ARG a=` gives `Some("")`).
    pub default: Option<String>,
    /// Where the word is.
    pub span: Span,
}

/// An inline source file from a COPY/ADD heredoc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineSource {
    /// The heredoc name, which becomes the file name.
    pub name: String,
    /// The body, chomped when `<<-` was used.
    pub data: String,
    /// Whether the body is expanded with the stage environment.
    pub expand: bool,
}

/// `FROM [--platform=p] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    /// The base as written (image reference, stage name or `scratch`), not expanded.
    pub image: String,
    /// The stage name, lower-cased.
    pub name: Option<String>,
    /// `--platform`, not expanded.
    pub platform: Option<String>,
    /// Where the image word is.
    pub image_span: Span,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    /// The command.
    pub command: CommandLine,
    /// Heredocs in the command (raw content, chomp flag kept).
    pub heredocs: Vec<Heredoc>,
    /// `--mount` values, parsed.
    pub mounts: Vec<Mount>,
    /// `--network`.
    pub network: Option<String>,
    /// `--security`.
    pub security: Option<String>,
    /// `--device` values.
    pub devices: Vec<String>,
}

/// `COPY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    /// Source paths as written.
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub inline: Vec<InlineSource>,
    /// The destination as written.
    pub dest: String,
    /// `--from`.
    pub from: Option<String>,
    /// Where `--from` is.
    pub from_span: Option<Span>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
}

/// `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Add {
    /// Source paths or URLs as written.
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub inline: Vec<InlineSource>,
    /// The destination as written.
    pub dest: String,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--checksum`.
    pub checksum: Option<String>,
    /// `--unpack`, when given.
    pub unpack: Option<bool>,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    /// `HEALTHCHECK [opts] CMD …`.
    Cmd {
        /// `["CMD-SHELL", text]` or `["CMD", args…]`, as in the image config.
        test: Vec<String>,
        /// `--interval` in nanoseconds (0 = unset).
        interval: i64,
        /// `--timeout` in nanoseconds.
        timeout: i64,
        /// `--start-period` in nanoseconds.
        start_period: i64,
        /// `--start-interval` in nanoseconds.
        start_interval: i64,
        /// `--retries` (0 = unset).
        retries: i64,
    },
}

/// `ONBUILD <trigger>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Onbuild {
    /// The trigger text stored in the image config (heredoc bodies appended, as BuildKit does).
    pub expression: String,
    /// The trigger, validated.
    pub trigger: Box<Instruction>,
}

/// One instruction, one variant per keyword. Values are as written (not expanded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Instruction {
    /// `ADD`.
    Add(Add),
    /// `ARG`, one or more names.
    Arg {
        /// The declarations.
        args: Vec<ArgDecl>,
    },
    /// `CMD`.
    Cmd {
        /// The command.
        command: CommandLine,
    },
    /// `COPY`.
    Copy(Copy),
    /// `ENTRYPOINT` (`Exec([])` clears it).
    Entrypoint {
        /// The command.
        command: CommandLine,
    },
    /// `ENV`.
    Env {
        /// The pairs.
        pairs: Vec<KeyValue>,
    },
    /// `EXPOSE` (ports as written, expanded with word splitting later).
    Expose {
        /// The port words.
        ports: Vec<String>,
    },
    /// `FROM`.
    From(From),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `LABEL`.
    Label {
        /// The pairs.
        pairs: Vec<KeyValue>,
    },
    /// `MAINTAINER` (deprecated).
    Maintainer {
        /// The text.
        name: String,
    },
    /// `ONBUILD`.
    Onbuild(Onbuild),
    /// `RUN`.
    Run(Run),
    /// `SHELL`.
    Shell {
        /// The new shell.
        shell: Vec<String>,
    },
    /// `STOPSIGNAL`.
    Stopsignal {
        /// The signal as written.
        signal: String,
    },
    /// `USER`.
    User {
        /// `user[:group]` as written.
        user: String,
    },
    /// `VOLUME`.
    Volume {
        /// The paths as written.
        paths: Vec<String>,
    },
    /// `WORKDIR`.
    Workdir {
        /// The path as written.
        path: String,
    },
}

impl Instruction {
    /// The keyword, upper-case.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::Add(_) => "ADD",
            Instruction::Arg { .. } => "ARG",
            Instruction::Cmd { .. } => "CMD",
            Instruction::Copy(_) => "COPY",
            Instruction::Entrypoint { .. } => "ENTRYPOINT",
            Instruction::Env { .. } => "ENV",
            Instruction::Expose { .. } => "EXPOSE",
            Instruction::From(_) => "FROM",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Label { .. } => "LABEL",
            Instruction::Maintainer { .. } => "MAINTAINER",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Run(_) => "RUN",
            Instruction::Shell { .. } => "SHELL",
            Instruction::Stopsignal { .. } => "STOPSIGNAL",
            Instruction::User { .. } => "USER",
            Instruction::Volume { .. } => "VOLUME",
            Instruction::Workdir { .. } => "WORKDIR",
        }
    }
}

/// Every instruction keyword BuildKit knows, upper-case.
pub const KEYWORDS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// An instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Command {
    /// The instruction.
    pub instruction: Instruction,
    /// The logical line (continuations joined), BuildKit's `Original`.
    pub original: String,
    /// The whole instruction in the source.
    pub span: Span,
    /// Where it starts.
    pub position: Position,
}

/// A build stage: a FROM and the commands after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// 0-based index among the stages.
    pub index: usize,
    /// The FROM.
    pub from: From,
    /// The FROM line as a command (for its span and text).
    pub from_command: Command,
    /// The commands in the stage.
    pub commands: Vec<Command>,
}

impl Stage {
    /// The stage name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.from.name.as_deref()
    }
}

/// A validated Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    /// The escape character.
    pub escape: char,
    /// Parser directives.
    pub directives: Vec<Directive>,
    /// ARG instructions before the first FROM.
    pub meta_args: Vec<Command>,
    /// The stages, in file order.
    pub stages: Vec<Stage>,
    /// Parse and validation warnings, in file order.
    pub warnings: Vec<Warning>,
    /// The source text the spans refer to.
    #[serde(skip)]
    pub source: String,
    /// Line index of `source`.
    #[serde(skip)]
    pub lines: LineIndex,
}

impl Dockerfile {
    /// The line and column of a byte offset.
    pub fn position(&self, offset: usize) -> Position {
        self.lines.position(&self.source, offset)
    }
}
