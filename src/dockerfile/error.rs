//! The front end's error type: what went wrong ([`ErrorKind`]) and where ([`ParseError`]), plus the
//! `FILE:LINE:COL: message` rendering with the source line and a caret.
use super::ast::{LineIndex, Position, Span};
use super::lex::ExpandError;

/// What went wrong while parsing or validating a Dockerfile. Messages are lower-case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// A physical line longer than BuildKit's scanner accepts.
    #[error("dockerfile line greater than max allowed size of {max}")]
    LineTooLong {
        /// The limit in bytes.
        max: usize,
    },
    /// No instruction at all (empty, or only comments).
    #[error("file with no instructions")]
    NoInstructions,
    /// A parser directive given twice.
    #[error("only one {name} parser directive can be used")]
    DuplicateDirective {
        /// The directive key.
        name: String,
    },
    /// `# escape=` with something other than `\` or `` ` ``.
    #[error("invalid escape token '{value}' does not match ` or \\")]
    InvalidEscape {
        /// The value given.
        value: String,
    },
    /// A JSON array with a non-string element.
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    /// `ENV key` / `LABEL key` without a value.
    #[error("{instruction} must have two arguments")]
    MissingValue {
        /// `ENV` or `LABEL`.
        instruction: String,
    },
    /// A `k=v` list with a word that has no `=`.
    #[error("syntax error - can't find = in {word:?}; must be of the form name=value")]
    MissingEquals {
        /// The offending word.
        word: String,
    },
    /// A heredoc whose terminator line never came.
    #[error("unterminated heredoc {name:?}")]
    UnterminatedHeredoc {
        /// The delimiter that was expected.
        name: String,
    },
    /// A heredoc delimiter that could not be lexed.
    #[error("invalid heredoc delimiter: {0}")]
    HeredocDelimiter(#[source] ExpandError),
    /// ONBUILD nested beyond what the parser accepts.
    #[error("instruction nested deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// A keyword that is not a Dockerfile instruction.
    #[error("unknown instruction {name:?}{}", did_you_mean(suggestion))]
    UnknownInstruction {
        /// The keyword as written.
        name: String,
        /// The closest known keyword, if one is close.
        suggestion: Option<String>,
    },
    /// A flag the instruction does not take.
    #[error("unknown flag: --{flag} for {instruction}{}", did_you_mean(&suggestion.as_ref().map(|s| format!("--{s}"))))]
    UnknownFlag {
        /// The flag name, without `--`.
        flag: String,
        /// The instruction.
        instruction: String,
        /// The closest known flag.
        suggestion: Option<String>,
    },
    /// A non-list flag given twice.
    #[error("duplicate flag specified: --{flag}")]
    DuplicateFlag {
        /// The flag name.
        flag: String,
    },
    /// `--flag` without `=value` for a string flag, or `--flag=` for a boolean.
    #[error("missing a value on flag: --{flag}")]
    MissingFlagValue {
        /// The flag name.
        flag: String,
    },
    /// A boolean flag with a value other than true/false.
    #[error("expecting boolean value for flag --{flag}, not: {value}")]
    BadBool {
        /// The flag name.
        flag: String,
        /// The value given.
        value: String,
    },
    /// A flag word that does not start with `--`.
    #[error("arg should start with -- : {word}")]
    BadFlagWord {
        /// The word.
        word: String,
    },
    /// A flag value that is not valid for the flag.
    #[error("invalid value for --{flag}: {reason}")]
    InvalidFlagValue {
        /// The flag name.
        flag: String,
        /// Why.
        reason: String,
    },
    /// Too few or too many arguments.
    #[error("{instruction} requires {expected}")]
    ArgumentCount {
        /// The instruction.
        instruction: String,
        /// What it requires (`exactly one argument`, `at least one argument`, …).
        expected: &'static str,
    },
    /// `FROM` with two or more than three words, or without `AS`.
    #[error("FROM requires either one or three arguments")]
    FromArguments,
    /// An invalid stage name after `AS`.
    #[error(
        "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
    )]
    InvalidStageName {
        /// The name.
        name: String,
    },
    /// An instruction other than ARG before the first FROM.
    #[error("no build stage in current context")]
    NoStage,
    /// `ONBUILD ONBUILD`.
    #[error("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChain,
    /// `ONBUILD FROM` or `ONBUILD MAINTAINER`.
    #[error("{trigger} isn't allowed as an ONBUILD trigger")]
    OnbuildTrigger {
        /// The trigger keyword.
        trigger: String,
    },
    /// `HEALTHCHECK NONE x`.
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArgs,
    /// `HEALTHCHECK FOO`.
    #[error("unknown type {kind:?} in HEALTHCHECK (try CMD)")]
    HealthcheckType {
        /// The type word.
        kind: String,
    },
    /// `HEALTHCHECK CMD` with nothing after it.
    #[error("missing command after HEALTHCHECK CMD")]
    HealthcheckMissingCommand,
    /// A HEALTHCHECK duration that does not parse or is too short.
    #[error("invalid duration for --{flag}: {reason}")]
    Duration {
        /// The flag name.
        flag: String,
        /// Why.
        reason: String,
    },
    /// `SHELL` not in JSON form.
    #[error("{instruction} requires the arguments to be in JSON form")]
    NotJson {
        /// The instruction.
        instruction: String,
    },
    /// An empty VOLUME entry.
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    /// `ARG =x`, `ENV =x`.
    #[error("{instruction} names can not be blank")]
    BlankName {
        /// The instruction.
        instruction: String,
    },
    /// `COPY <<EOF <<EOF2` (destination is a heredoc).
    #[error("{instruction} cannot accept a heredoc as a destination")]
    HeredocDestination {
        /// The instruction.
        instruction: String,
    },
    /// A bad `RUN --mount` value.
    #[error("invalid mount {value:?}: {reason}")]
    InvalidMount {
        /// The flag value.
        value: String,
        /// Why.
        reason: String,
    },
}

fn did_you_mean(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean {s:?}?)"),
        None => String::new(),
    }
}

/// A parse or validation error with its location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}:{}: {kind}", file.as_deref().map(|f| format!("{f}:")).unwrap_or_default(), position.line, position.col)]
pub struct ParseError {
    /// The file name, when the caller gave one ([`ParseError::with_file`]).
    pub file: Option<String>,
    /// 1-based line and column of `span.start`.
    pub position: Position,
    /// The offending bytes.
    pub span: Span,
    /// What went wrong (boxed to keep `Result`s small).
    pub kind: Box<ErrorKind>,
}

impl ParseError {
    /// An error at `span` of `src`.
    pub fn new(kind: ErrorKind, span: Span, src: &str, lines: &LineIndex) -> ParseError {
        ParseError {
            file: None,
            position: lines.position(src, span.start),
            span,
            kind: Box::new(kind),
        }
    }

    /// The same error, naming `file`.
    pub fn with_file(mut self, file: impl Into<String>) -> ParseError {
        self.file = Some(file.into());
        self
    }

    /// `FILE:LINE:COL: message`, then the source line and a caret line under the span.
    pub fn render(&self, src: &str) -> String {
        format!("{self}\n{}", caret(src, self.span))
    }
}

/// The source line holding `span.start` and a line of carets under the span (on that line).
pub fn caret(src: &str, span: Span) -> String {
    let start = span.start.min(src.len());
    let line_start = src[..floor_boundary(src, start)]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line_end = src[line_start..]
        .find('\n')
        .map_or(src.len(), |i| line_start + i);
    let line = src[line_start..line_end].trim_end_matches('\r');
    let start = floor_boundary(src, start).max(line_start);
    let end = floor_boundary(src, span.end.min(line_start + line.len())).max(start);
    let mut marks = String::new();
    for c in src[line_start..start].chars() {
        marks.push(if c == '\t' { '\t' } else { ' ' });
    }
    let n = src[start..end].chars().count().max(1);
    marks.push_str(&"^".repeat(n));
    format!("{line}\n{marks}")
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
