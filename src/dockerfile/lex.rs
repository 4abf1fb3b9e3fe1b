//! Shell-word lexer and variable expansion: a port of BuildKit's `frontend/dockerfile/shell/lex.go`.
//!
//! [`Lexer::process_word`] expands one word (quotes removed, escapes resolved, `$VAR` and `${VAR…}`
//! forms substituted) without splitting; [`Lexer::process_words`] also splits the result into
//! fields the way BuildKit's `ProcessWords` does (unquoted expansions split on whitespace, quoted
//! parts kept whole).
//!
//! Supported forms: `$V`, `${V}`, `${V:-w}`, `${V-w}`, `${V:+w}`, `${V+w}`, `${V:?m}`, `${V?m}`,
//! `${V#p}`, `${V##p}`, `${V%p}`, `${V%%p}`, `${V/p/r}`, `${V//p/r}`. Positional (`$1`) and special
//! (`$@ $* $# $? $- $$ $! $0`) names are never set. Patterns are globs with `*` and `?`.
//!
//! Quirks kept on purpose, because BuildKit has them and Dockerfiles depend on the results:
//! - the field buffer is shared between nested `${…}` words, so `ProcessWords` of `a${x:-b}c`
//!   loses the `a` exactly as BuildKit does;
//! - `$` followed by a character that cannot start a name is literal.
//!
//! Not copied: BuildKit's unbounded recursion and growth. Nesting of `${…}` deeper than
//! [`MAX_DEPTH`], or a result longer than [`MAX_EXPANSION`], is an error instead of a stack
//! overflow or an out-of-memory.
use std::collections::{BTreeMap, BTreeSet};

/// Deepest nesting of `${…}` the lexer accepts.
pub const MAX_DEPTH: usize = 128;

/// Longest expansion result the lexer produces, in bytes. Repeated `ENV A=$A$A` would otherwise
/// double a value per instruction; real values (PATH and the like) are far below this.
pub const MAX_EXPANSION: usize = 64 * 1024;

/// What went wrong while expanding a word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandErrorKind {
    /// `${` without its closing brace.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${}`, `${:…}` or `${{…}`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// `${V/p` without the second slash.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// A modifier BuildKit does not support (`${x:=y}`, `${x:y}`, `${x:#p}`).
    #[error("unsupported modifier ({modifier}) in substitution")]
    UnsupportedModifier {
        /// The modifier as written.
        modifier: String,
    },
    /// `'` without its closing quote.
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    /// `"` without its closing quote.
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    /// The word ended while looking for `stop`.
    #[error("unexpected end of statement while looking for matching {stop}")]
    UnexpectedEnd {
        /// The character that was expected.
        stop: char,
    },
    /// `${V?msg}` or `${V:?msg}` on an unset (or empty) variable.
    #[error("{name}: {message}")]
    Required {
        /// The variable name.
        name: String,
        /// The message from the word, or BuildKit's default.
        message: String,
    },
    /// A pattern with an invalid escape.
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern {
        /// The pattern as written.
        pattern: String,
        /// Why it is invalid.
        reason: String,
    },
    /// `${…}` nested deeper than [`MAX_DEPTH`].
    #[error("substitutions nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// An expansion longer than [`MAX_EXPANSION`].
    #[error("expansion longer than {MAX_EXPANSION} bytes")]
    TooLong,
}

/// An expansion failure, with the word being processed (BuildKit's `failed to process "…"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {kind}")]
pub struct ExpandError {
    /// The word as written.
    pub word: String,
    /// What went wrong.
    pub kind: ExpandErrorKind,
}

/// Where variables come from during expansion.
pub trait Env {
    /// The value of `name`, if it is set (possibly to the empty string).
    fn get(&self, name: &str) -> Option<&str>;
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        // Last definition wins, as in an env list that is appended to.
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Env for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

/// No variables at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEnv;

impl Env for NoEnv {
    fn get(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// Looks names up case-insensitively, as BuildKit does for Windows targets.
#[derive(Debug)]
pub struct CaseInsensitive<'a, E: Env + ?Sized>(pub &'a E, pub &'a [String]);

impl<E: Env + ?Sized> Env for CaseInsensitive<'_, E> {
    fn get(&self, name: &str) -> Option<&str> {
        if let Some(v) = self.0.get(name) {
            return Some(v);
        }
        self.1
            .iter()
            .rev()
            .find(|k| k.eq_ignore_ascii_case(name) || k.to_uppercase() == name.to_uppercase())
            .and_then(|k| self.0.get(k))
    }
}

/// The result of expanding a word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expanded {
    /// The expanded word, unsplit.
    pub result: String,
    /// The expanded word split into fields.
    pub words: Vec<String>,
    /// Names that were looked up and found.
    pub matched: BTreeSet<String>,
    /// Names that were looked up and not set (input to the `UndefinedVar` lint).
    pub unmatched: BTreeSet<String>,
}

/// The lexer's options. `Lexer::new('\\')` is BuildKit's `shell.NewLex('\\')`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written.
    pub skip_unset_env: bool,
}

impl Lexer {
    /// A lexer with BuildKit's default options and the given escape character.
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Expands `word` as one word (BuildKit's `ProcessWord`).
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<Expanded, ExpandError> {
        let mut sw = ShellWord {
            lex: *self,
            chars: word.chars().collect(),
            pos: 0,
            env,
            raw_escapes: self.raw_escapes,
            words_buf: String::new(),
            depth: 0,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        match sw.process_stop_on(None, self.raw_escapes) {
            Ok((result, words)) => Ok(Expanded {
                result,
                words,
                matched: sw.matched,
                unmatched: sw.unmatched,
            }),
            Err(kind) => Err(ExpandError {
                word: word.to_string(),
                kind,
            }),
        }
    }

    /// Expands `word` and splits it into fields (BuildKit's `ProcessWords`).
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        self.process_word(word, env).map(|e| e.words)
    }
}

struct ShellWord<'a> {
    lex: Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn Env,
    raw_escapes: bool,
    // Shared between nested calls, exactly like BuildKit's `sw.wordsBuffer`.
    words_buf: String,
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// Go's `unicode.IsSpace`.
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace()
}

struct Words {
    words: Vec<String>,
    in_word: bool,
}

impl<'a> ShellWord<'a> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn add_char(&mut self, w: &mut Words, ch: char) {
        if is_space(ch) && w.in_word {
            if !self.words_buf.is_empty() {
                w.words.push(std::mem::take(&mut self.words_buf));
                w.in_word = false;
            }
        } else if !is_space(ch) {
            self.add_raw_char(w, ch);
        }
    }

    fn add_raw_char(&mut self, w: &mut Words, ch: char) {
        self.words_buf.push(ch);
        w.in_word = true;
    }

    fn get_words(&mut self, mut w: Words) -> Vec<String> {
        if !self.words_buf.is_empty() {
            w.words.push(std::mem::take(&mut self.words_buf));
        }
        w.words
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ExpandErrorKind> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ExpandErrorKind::TooDeep);
        }
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        r
    }

    fn process_stop_on_inner(
        &mut self,
        stop: Option<char>,
    ) -> Result<(String, Vec<String>), ExpandErrorKind> {
        let mut result = String::new();
        self.words_buf.clear();
        let mut words = Words {
            words: Vec::new(),
            in_word: false,
        };
        while let Some(ch) = self.peek() {
            if result.len() > MAX_EXPANSION || self.words_buf.len() > MAX_EXPANSION {
                return Err(ExpandErrorKind::TooLong);
            }
            if Some(ch) == stop {
                self.next();
                let w = self.get_words(words);
                return Ok((result, w));
            }
            let quotes = !self.lex.skip_process_quotes;
            if ch == '$' {
                let tmp = self.process_dollar()?;
                result.push_str(&tmp);
                for c in tmp.chars() {
                    self.add_char(&mut words, c);
                }
            } else if quotes && (ch == '\'' || ch == '"') {
                let tmp = if ch == '\'' {
                    self.process_single_quote()?
                } else {
                    self.process_double_quote()?
                };
                result.push_str(&tmp);
                self.words_buf.push_str(&tmp);
                words.in_word = true;
            } else {
                let mut ch = ch;
                self.next();
                if ch == self.lex.escape {
                    if self.raw_escapes {
                        self.add_raw_char(&mut words, ch);
                        result.push(ch);
                    }
                    match self.next() {
                        None => break,
                        Some(c) => ch = c,
                    }
                    self.add_raw_char(&mut words, ch);
                } else {
                    self.add_char(&mut words, ch);
                }
                result.push(ch);
            }
        }
        if let Some(stop) = stop {
            return Err(ExpandErrorKind::UnexpectedEnd { stop });
        }
        if result.len() > MAX_EXPANSION {
            return Err(ExpandErrorKind::TooLong);
        }
        let w = self.get_words(words);
        Ok((result, w))
    }

    fn process_single_quote(&mut self) -> Result<String, ExpandErrorKind> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(ExpandErrorKind::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, ExpandErrorKind> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err(ExpandErrorKind::UnterminatedDoubleQuote),
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let Some(mut ch) = self.next() else {
                        continue;
                    };
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lex.escape => {
                                self.next();
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.get(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, ExpandErrorKind> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err(ExpandErrorKind::MissingBrace),
            Some('{') | Some('}') | Some(':') => return Err(ExpandErrorKind::BadSubstitution),
            _ => {}
        }
        let name = self.process_name();
        let Some(mut ch) = self.next() else {
            return Err(ExpandErrorKind::MissingBrace);
        };
        let mut chs = ch.to_string();
        let mut null_is_unset = false;
        match ch {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                if ch == ':' {
                    null_is_unset = true;
                    match self.next() {
                        Some(c) => {
                            ch = c;
                            chs.push(c);
                        }
                        // Go's scanner returns EOF (-1) here; the modifier is then unsupported.
                        None => {
                            return Err(ExpandErrorKind::UnsupportedModifier { modifier: chs });
                        }
                    }
                }
                let raw = ch == '#' || ch == '%';
                if null_is_unset && raw {
                    return Err(ExpandErrorKind::UnsupportedModifier { modifier: chs });
                }
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none()
                            && !matches!(e, ExpandErrorKind::TooDeep | ExpandErrorKind::TooLong)
                        {
                            return Err(ExpandErrorKind::MissingBrace);
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let empty = value
                    .as_deref()
                    .is_none_or(|v| null_is_unset && v.is_empty());
                match ch {
                    '-' => Ok(if empty {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if empty { String::new() } else { word }),
                    '?' => match value {
                        None => Err(ExpandErrorKind::Required {
                            name,
                            message: if word.is_empty() {
                                "is not allowed to be unset".into()
                            } else {
                                word
                            },
                        }),
                        Some(v) if null_is_unset && v.is_empty() => {
                            Err(ExpandErrorKind::Required {
                                name,
                                message: if word.is_empty() {
                                    "is not allowed to be empty".into()
                                } else {
                                    word
                                },
                            })
                        }
                        Some(v) => Ok(v),
                    },
                    '%' | '#' => {
                        let value = value.unwrap_or_default();
                        let (greedy, pat) = match word.strip_prefix(ch) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        if ch == '%' {
                            trim_suffix(&pat, &value, greedy)
                        } else {
                            trim_prefix(&pat, &value, greedy)
                        }
                    }
                    _ => Err(ExpandErrorKind::UnsupportedModifier { modifier: chs }),
                }
            }
            '/' => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none()
                            && !matches!(e, ExpandErrorKind::TooDeep | ExpandErrorKind::TooLong)
                        {
                            return Err(ExpandErrorKind::MissingSlash);
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none()
                            && !matches!(e, ExpandErrorKind::TooDeep | ExpandErrorKind::TooLong)
                        {
                            return Err(ExpandErrorKind::MissingBrace);
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                let Some(value) = value else {
                    if self.lex.skip_unset_env {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    return Ok(String::new());
                };
                let re = shell_pattern_regex(&pattern, true, false)?;
                if replace_all {
                    Ok(re
                        .replace_all(&value, regex::NoExpand(&replacement))
                        .into_owned())
                } else if let Some(m) = re.find(&value) {
                    Ok(format!(
                        "{}{}{}",
                        &value[..m.start()],
                        replacement,
                        &value[m.end()..]
                    ))
                } else {
                    Ok(value)
                }
            }
            _ => Err(ExpandErrorKind::UnsupportedModifier { modifier: chs }),
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(c) = self.peek() {
                    if !is_digit(c) {
                        break;
                    }
                    self.next();
                    name.push(c);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphabetic() && !is_digit(ch) && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }
}

/// Go's `unicode.IsDigit` (decimal digits only).
fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Converts a shell glob (`*`, `?`, `\*`, `\?`, `\\`) into a regex, as BuildKit's
/// `convertShellPatternToRegex` does (no bracket expressions).
fn shell_pattern_regex(
    pattern: &str,
    greedy: bool,
    anchored: bool,
) -> Result<regex::Regex, ExpandErrorKind> {
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut it = pattern.chars().peekable();
    while let Some(tok) = it.next() {
        match tok {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => {
                if matches!(it.peek(), Some('}') | Some('/')) {
                    continue;
                }
                match it.next() {
                    Some(c @ ('*' | '?' | '\\')) => {
                        out.push('\\');
                        out.push(c);
                    }
                    other => {
                        return Err(ExpandErrorKind::InvalidPattern {
                            pattern: pattern.to_string(),
                            reason: match other {
                                Some(c) => format!("invalid escape '\\{c}'"),
                                None => "invalid escape '\\'".to_string(),
                            },
                        });
                    }
                }
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    regex::Regex::new(&out).map_err(|e| ExpandErrorKind::InvalidPattern {
        pattern: pattern.to_string(),
        reason: e.to_string(),
    })
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, ExpandErrorKind> {
    let re = shell_pattern_regex(pattern, greedy, true)?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// Reverses a pattern without reversing its escapes (`a\*c` → `c\*a`).
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    let mut groups: Vec<Vec<char>> = Vec::new();
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            groups.push(vec![chars[i], chars[i + 1]]);
            i += 2;
        } else {
            groups.push(vec![chars[i]]);
            i += 1;
        }
    }
    for g in groups.into_iter().rev() {
        out.extend(g);
    }
    out.into_iter().collect()
}

fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, ExpandErrorKind> {
    // Regexes cannot find the shortest rightmost match, so both sides are reversed and the
    // search becomes a leftmost one, as in BuildKit.
    let p = reverse_pattern(pattern);
    let v: String = value.chars().rev().collect();
    let s = trim_prefix(&p, &v, greedy)?;
    Ok(s.chars().rev().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        vec![
            ("PWD".into(), "/home".into()),
            ("x".into(), "abcabc".into()),
        ]
    }

    #[test]
    fn expands_pattern_forms() {
        let l = Lexer::new('\\');
        let e = env();
        let w = |s: &str| l.process_word(s, &e).map(|r| r.result);
        assert_eq!(w("${x#a*b}").unwrap(), "cabc");
        assert_eq!(w("${x##a*b}").unwrap(), "c");
        assert_eq!(w("${x%b*c}").unwrap(), "abca");
        assert_eq!(w("${x%%b*c}").unwrap(), "a");
        assert_eq!(w("${x/b/X}").unwrap(), "aXcabc");
        assert_eq!(w("${x//b/X}").unwrap(), "aXcaXc");
        assert!(w("${x:=y}").is_err());
        assert!(w("${x:#y}").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let l = Lexer::new('\\');
        let s = "${a:-".repeat(10_000);
        assert!(l.process_word(&s, &NoEnv).is_err());
    }
}
