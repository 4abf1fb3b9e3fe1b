//! Text → [`Ast`]: a port of BuildKit's `parser/parser.go` (line scanning, parser directives,
//! continuations, comments, heredoc bodies).
//!
//! Each logical line (an instruction with its continuation lines joined) is built together with
//! a map from its offsets back to source offsets, so every word keeps a byte span in the file.
//! The per-instruction argument parsers live in the private `line_parsers` module.
//!
//! Deliberate differences from BuildKit, all on input BuildKit would mishandle anyway:
//! - invalid UTF-8 is replaced by U+FFFD before parsing ([`parse_bytes`]);
//! - ONBUILD nested deeper than [`MAX_NESTING`] is an error, not unbounded recursion;
//! - an over-long line is reported at that line, not as "file with no instructions".
use super::ast::{Ast, Directive, Heredoc, LineIndex, Node, Position, Span, Warning, Word};
use super::error::{ErrorKind, ParseError};
use super::lex::Lexer;
use super::line_parsers::{self, LineParse};
use regex::Regex;
use std::sync::OnceLock;

/// Longest physical line BuildKit's scanner accepts, in bytes, without the line feed.
pub const MAX_LINE: usize = 65535;

/// Deepest `ONBUILD ONBUILD …` nesting the parser builds.
pub const MAX_NESTING: usize = 8;

/// Parses raw bytes; invalid UTF-8 is replaced by U+FFFD first.
pub fn parse_bytes(src: &[u8]) -> Result<Ast, ParseError> {
    parse(&String::from_utf8_lossy(src))
}

/// Parses Dockerfile text into an [`Ast`] (BuildKit's `parser.Parse`).
pub fn parse(src: &str) -> Result<Ast, ParseError> {
    Parser::new(src).run()
}

/// One physical line: `start..end` without the line ending, `next` where the following starts.
#[derive(Debug, Clone, Copy)]
struct Line {
    start: usize,
    end: usize,
    next: usize,
}

/// The logical line being assembled, with offsets back into the source.
#[derive(Debug, Default)]
pub(crate) struct Logical {
    pub(crate) text: String,
    /// `(offset in text, offset in source)` at the start of each appended piece.
    segs: Vec<(usize, usize)>,
}

impl Logical {
    fn push(&mut self, piece: &str, src_offset: usize) {
        self.segs.push((self.text.len(), src_offset));
        self.text.push_str(piece);
    }

    /// The source offset of logical offset `off`.
    pub(crate) fn src(&self, off: usize) -> usize {
        let i = match self.segs.binary_search_by(|(l, _)| l.cmp(&off)) {
            Ok(i) => {
                // Several pieces may start at the same offset (empty pieces); take the last.
                let mut j = i;
                while j + 1 < self.segs.len() && self.segs[j + 1].0 == off {
                    j += 1;
                }
                j
            }
            Err(0) => return self.segs.first().map_or(0, |s| s.1),
            Err(i) => i - 1,
        };
        let (l, s) = self.segs[i];
        s + (off - l)
    }

    /// The source span of logical range `a..b`.
    pub(crate) fn span(&self, a: usize, b: usize) -> Span {
        if b <= a {
            let s = self.src(a);
            return Span::new(s, s);
        }
        Span::new(self.src(a), self.src(b - 1) + 1)
    }
}

struct Parser<'a> {
    src: &'a str,
    lines: Vec<Line>,
    index: LineIndex,
    escape: char,
    directives_done: bool,
    directives: Vec<Directive>,
    warnings: Vec<Warning>,
}

fn directive_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // Go's `\s` is ASCII whitespace without \v.
    RE.get_or_init(|| {
        Regex::new(
            r"^#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*$",
        )
        .expect("constant regex is valid")
    })
}

/// Go's `bytes.TrimRight(s, "\r\n")`.
fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

/// Go's `bytes.TrimLeftFunc(s, unicode.IsSpace)`.
fn trim_left_ws(s: &str) -> &str {
    s.trim_start_matches(char::is_whitespace)
}

fn is_comment(raw: &str) -> bool {
    trim_left_ws(trim_newline(raw)).starts_with('#')
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Parser<'a> {
        let mut lines = Vec::new();
        let mut start = 0;
        let bytes = src.as_bytes();
        while start < bytes.len() {
            match memchr_nl(&bytes[start..]) {
                Some(i) => {
                    lines.push(Line {
                        start,
                        end: start + i,
                        next: start + i + 1,
                    });
                    start += i + 1;
                }
                None => {
                    lines.push(Line {
                        start,
                        end: bytes.len(),
                        next: bytes.len(),
                    });
                    start = bytes.len();
                }
            }
        }
        Parser {
            src,
            lines,
            index: LineIndex::new(src),
            escape: '\\',
            directives_done: false,
            directives: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn err(&self, kind: ErrorKind, span: Span) -> ParseError {
        ParseError::new(kind, span, self.src, &self.index)
    }

    /// The text of line `i` without its line feed, after checking its length.
    fn line(&self, i: usize) -> Result<(&'a str, usize), ParseError> {
        let l = self.lines[i];
        if l.end - l.start > MAX_LINE {
            return Err(self.err(
                ErrorKind::LineTooLong { max: MAX_LINE },
                Span::new(l.start + MAX_LINE, l.end),
            ));
        }
        let mut text = &self.src[l.start..l.end];
        let mut start = l.start;
        if i == 0 {
            if let Some(rest) = text.strip_prefix('\u{feff}') {
                text = rest;
                start += '\u{feff}'.len_utf8();
            }
        }
        Ok((text, start))
    }

    /// BuildKit's `processLine`: drop the line ending, optionally the leading whitespace, turn a
    /// comment into nothing, and look for a parser directive.
    fn process_line(
        &mut self,
        text: &'a str,
        start: usize,
        strip_left: bool,
        line_no: usize,
    ) -> Result<(&'a str, usize), ParseError> {
        let mut t = trim_newline(text);
        let mut off = start;
        if strip_left {
            let trimmed = trim_left_ws(t);
            off += t.len() - trimmed.len();
            t = trimmed;
        }
        self.possible_directive(t, off, line_no)?;
        if t.starts_with('#') {
            return Ok(("", off));
        }
        Ok((t, off))
    }

    fn possible_directive(
        &mut self,
        t: &str,
        off: usize,
        line_no: usize,
    ) -> Result<(), ParseError> {
        if self.directives_done {
            return Ok(());
        }
        let Some(c) = directive_re().captures(t) else {
            self.directives_done = true;
            return Ok(());
        };
        let (Some(k), Some(v)) = (c.get(1), c.get(2)) else {
            self.directives_done = true;
            return Ok(());
        };
        let key = k.as_str().to_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.directives_done = true;
            return Ok(());
        }
        let span = Span::new(off, off + t.len());
        if self.directives.iter().any(|d| d.name == key) {
            return Err(self.err(ErrorKind::DuplicateDirective { name: key }, span));
        }
        let value = v.as_str().to_string();
        if key == "escape" {
            match value.as_str() {
                "\\" => self.escape = '\\',
                "`" => self.escape = '`',
                _ => {
                    let s = Span::new(off + v.start(), off + v.end());
                    return Err(self.err(ErrorKind::InvalidEscape { value }, s));
                }
            }
        }
        self.directives.push(Directive {
            name: key,
            value,
            line: line_no,
            span,
        });
        Ok(())
    }

    /// BuildKit's `trimContinuationCharacter`: returns the line without a trailing escape and
    /// whether the logical line ends here.
    fn trim_continuation<'s>(&self, line: &'s str) -> (&'s str, bool) {
        let esc = self.escape as u8;
        let b = line.as_bytes();
        let mut end = b.len();
        while end > 0 && (b[end - 1] == b' ' || b[end - 1] == b'\t') {
            end -= 1;
        }
        if end == 0 || b[end - 1] != esc {
            return (line, true);
        }
        if end == 1 || b[end - 2] != esc {
            return (&line[..end - 1], false);
        }
        (line, true)
    }

    fn run(mut self) -> Result<Ast, ParseError> {
        let mut nodes = Vec::new();
        let mut i = 0;
        while i < self.lines.len() {
            let (text, start) = self.line(i)?;
            let (processed, off) = self.process_line(text, start, true, i + 1)?;
            i += 1;
            let start_line = i;
            let (first, mut eol) = self.trim_continuation(processed);
            if eol && first.is_empty() {
                continue;
            }
            let mut logical = Logical::default();
            logical.push(first, off);
            let mut empty_line: Option<usize> = None;
            while !eol && i < self.lines.len() {
                let (raw, lstart) = self.line(i)?;
                let (p, poff) = self.process_line(raw, lstart, false, i + 1)?;
                i += 1;
                if is_comment(raw) {
                    continue;
                }
                if trim_left_ws(trim_newline(p)).is_empty() {
                    empty_line.get_or_insert(lstart);
                    continue;
                }
                let (piece, e) = self.trim_continuation(p);
                eol = e;
                logical.push(piece, poff);
            }
            if let Some(at) = empty_line {
                self.warn(
                    "NoEmptyContinuation",
                    "empty continuation line".into(),
                    Span::new(at, at),
                );
            }
            let line_end_src = self.lines[i - 1].end;
            let mut node = self.node_from_logical(&logical, 0)?;
            node.start_line = start_line;
            node.span = Span::new(off, line_end_src);
            if can_contain_heredoc(&node) {
                let docs = heredocs_from_line(&logical.text)
                    .map_err(|e| self.err(e, node.keyword_span))?;
                for (n, mut doc) in docs.into_iter().enumerate() {
                    let body_start = self.lines.get(i).map_or(self.src.len(), |l| l.start);
                    let mut terminated = false;
                    while i < self.lines.len() {
                        let l = self.lines[i];
                        if l.end - l.start > MAX_LINE {
                            self.line(i)?;
                        }
                        let raw = &self.src[l.start..l.next];
                        i += 1;
                        let mut candidate = trim_newline(raw);
                        if doc.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == doc.name {
                            terminated = true;
                            break;
                        }
                        doc.content.push_str(raw);
                    }
                    if !terminated {
                        let span = marker_span(&logical, n).unwrap_or(node.keyword_span);
                        return Err(
                            self.err(ErrorKind::UnterminatedHeredoc { name: doc.name }, span)
                        );
                    }
                    doc.span = Span::new(body_start, self.lines[i - 1].end);
                    node.heredocs.push(doc);
                }
                node.span = Span::new(off, self.lines[i - 1].end);
            }
            node.end_line = i;
            nodes.push(node);
        }
        if nodes.is_empty() {
            let end = self.src.len();
            return Err(self.err(ErrorKind::NoInstructions, Span::new(end, end)));
        }
        Ok(Ast {
            escape: self.escape,
            directives: self.directives,
            nodes,
            warnings: self.warnings,
            source: self.src.to_string(),
            lines: self.index,
        })
    }

    fn warn(&mut self, rule: &'static str, message: String, span: Span) {
        let position: Position = self.index.position(self.src, span.start);
        self.warnings.push(Warning {
            rule,
            message,
            span,
            position,
        });
    }

    /// BuildKit's `newNodeFromLine` on the logical line starting at logical offset `base`.
    fn node_from_logical(&self, logical: &Logical, base: usize) -> Result<Node, ParseError> {
        // ONBUILD chains are walked iteratively so nesting depth is bounded.
        let mut chain: Vec<LineParse> = Vec::new();
        let mut at = base;
        loop {
            let lp = line_parsers::parse_line(&logical.text, at, self.escape)
                .map_err(|(kind, a, b)| self.err(kind, logical.span(a, b)))?;
            let sub = lp.sub_start;
            chain.push(lp);
            match sub {
                Some(s) => {
                    if chain.len() > MAX_NESTING {
                        let l = &chain[chain.len() - 1];
                        return Err(self.err(
                            ErrorKind::TooDeep { max: MAX_NESTING },
                            logical.span(l.keyword.0, l.keyword.1),
                        ));
                    }
                    at = s;
                }
                None => break,
            }
        }
        let mut child: Option<Box<Node>> = None;
        while let Some(lp) = chain.pop() {
            let mut n = self.to_node(logical, lp);
            n.child = child.take();
            child = Some(Box::new(n));
        }
        match child {
            Some(n) => Ok(*n),
            None => Err(self.err(ErrorKind::NoInstructions, Span::default())),
        }
    }

    fn to_node(&self, logical: &Logical, lp: LineParse) -> Node {
        let word = |(v, a, b): (String, usize, usize)| Word {
            value: v,
            span: logical.span(a, b),
        };
        let start = logical.src(lp.start);
        Node {
            keyword: lp.keyword_text,
            keyword_span: logical.span(lp.keyword.0, lp.keyword.1),
            flags: lp.flags.into_iter().map(word).collect(),
            args: lp.args.into_iter().map(word).collect(),
            child: None,
            json: lp.json,
            heredocs: Vec::new(),
            original: logical.text[lp.start..].to_string(),
            span: Span::new(start, logical.src(logical.text.len().saturating_sub(1)) + 1),
            start_line: 0,
            end_line: 0,
        }
    }
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// The span of the `n`th `<<` in the logical line, for heredoc error messages.
fn marker_span(logical: &Logical, n: usize) -> Option<Span> {
    let (i, _) = logical.text.match_indices("<<").nth(n)?;
    let end = logical.text[i..]
        .find(char::is_whitespace)
        .map_or(logical.text.len(), |e| i + e);
    Some(logical.span(i, end))
}

/// BuildKit's `canContainHeredoc`: RUN, COPY and ADD (also as ONBUILD triggers), not JSON form.
fn can_contain_heredoc(node: &Node) -> bool {
    let n = match (&node.keyword[..], &node.child) {
        ("onbuild", Some(c)) => c,
        _ => node,
    };
    matches!(&n.keyword[..], "run" | "copy" | "add") && !n.json
}

fn heredoc_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^([0-9]*)<<(-?)([^<]*)$").expect("constant regex is valid"))
}

/// BuildKit's `ParseHeredoc`: whether `word` is a heredoc marker, and its name and flags.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, ErrorKind> {
    let Some(c) = heredoc_re().captures(word) else {
        return Ok(None);
    };
    let fd = c
        .get(1)
        .and_then(|m| m.as_str().parse::<u32>().ok())
        .unwrap_or(0);
    let chomp = c.get(2).is_some_and(|m| m.as_str() == "-");
    let rest = c.get(3).map_or("", |m| m.as_str());
    if rest.is_empty() {
        return Ok(None);
    }
    let mut lex = Lexer::new('\\');
    lex.skip_unset_env = true;
    let env = super::lex::NoEnv;
    let words = lex
        .process_words(rest, &env)
        .map_err(ErrorKind::HeredocDelimiter)?;
    if words.len() != 1 {
        return Ok(None);
    }
    lex.raw_quotes = true;
    let raw = lex
        .process_words(rest, &env)
        .map_err(ErrorKind::HeredocDelimiter)?;
    let Some(raw_word) = raw.first().filter(|_| raw.len() == 1) else {
        return Ok(None);
    };
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let word = words.into_iter().next().unwrap_or_default();
    let expand = quotes(&word) == quotes(raw_word);
    Ok(Some(Heredoc {
        name: word,
        fd,
        expand,
        chomp,
        content: String::new(),
        span: Span::default(),
    }))
}

/// BuildKit's `heredocsFromLine`: every heredoc marker among the shell words of `line`.
pub fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, ErrorKind> {
    let mut lex = Lexer::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset_env = true;
    // BuildKit ignores lexing errors here: the line then simply has no heredocs.
    let words = lex
        .process_words(line, &super::lex::NoEnv)
        .unwrap_or_default();
    let mut docs = Vec::new();
    for w in words {
        if let Some(h) = parse_heredoc(&w)? {
            docs.push(h);
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heredoc_marker_forms() {
        let h = |s: &str| parse_heredoc(s).unwrap();
        let d = h("<<EOF").unwrap();
        assert_eq!(
            (d.name.as_str(), d.expand, d.chomp, d.fd),
            ("EOF", true, false, 0)
        );
        let d = h("<<-'EOF'").unwrap();
        assert_eq!((d.name.as_str(), d.expand, d.chomp), ("EOF", false, true));
        let d = h("3<<EO\"F\"").unwrap();
        assert_eq!((d.name.as_str(), d.expand, d.fd), ("EOF", false, 3));
        assert!(h("<<").is_none());
        assert!(h("<EOF").is_none());
        assert!(h("<<<EOF").is_none());
        assert!(parse_heredoc("<<'EOF").is_err());
    }

    #[test]
    fn continuation_maps_back_to_source() {
        let src = "FROM a\nRUN echo \\\n  hi\n";
        let ast = parse(src).unwrap();
        let run = &ast.nodes[1];
        let w = &run.args[0];
        assert_eq!(w.value, "echo   hi");
        assert_eq!(&src[w.span.start..w.span.start + 4], "echo");
        assert_eq!(&src[w.span.end - 2..w.span.end], "hi");
    }
}
