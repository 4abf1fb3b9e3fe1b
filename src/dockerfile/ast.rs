//! The low-level syntax tree: one [`Node`] per instruction, with byte spans, and its dump in
//! BuildKit's s-expression form (`(from "ubuntu")`).
//!
//! Words here are exactly what BuildKit's line parsers produce: nothing is expanded and quotes in
//! ENV/LABEL/ARG words are kept. Typed instructions are built from this by
//! [`crate::dockerfile::instructions()`].
use serde::Serialize;

/// A byte range in the source text (`start..end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start,
            end: end.max(start),
        }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// A 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

/// Maps byte offsets to lines and columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    /// Indexes `src`.
    pub fn new(src: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(
            src.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { starts }
    }

    /// The position of byte `offset` in `src` (the text this index was built from).
    pub fn position(&self, src: &str, offset: usize) -> Position {
        let offset = offset.min(src.len());
        let line = match self.starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.starts.get(line).copied().unwrap_or(0);
        let col = src
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or_else(|| offset - start)
            + 1;
        Position {
            line: line + 1,
            col,
        }
    }

    /// The byte offset where 1-based `line` starts.
    pub fn line_start(&self, line: usize) -> Option<usize> {
        self.starts.get(line.checked_sub(1)?).copied()
    }
}

/// One word of an instruction, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Word {
    /// The text, as the line parser produced it (not expanded).
    pub value: String,
    /// Where it is in the source. For JSON elements this is the whole array.
    pub span: Span,
}

/// A here-document attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter name with quotes removed (`EOF` for `<<'EOF'`); for COPY/ADD the file name.
    pub name: String,
    /// The file descriptor prefix (`3` in `3<<EOF`), 0 when absent.
    pub fd: u32,
    /// Whether the body is expanded (no part of the delimiter was quoted).
    pub expand: bool,
    /// Whether leading tabs are stripped (`<<-`).
    pub chomp: bool,
    /// The raw body lines, each with its line ending, up to (not including) the terminator.
    pub content: String,
    /// The body and terminator lines in the source.
    pub span: Span,
}

impl Heredoc {
    /// The body as used: leading tabs removed from every line when `chomp` is set.
    pub fn chomped_content(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        let mut out = String::with_capacity(self.content.len());
        for line in self.content.split_inclusive('\n') {
            out.push_str(line.trim_start_matches('\t'));
        }
        out
    }
}

/// One instruction, as BuildKit's parser sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The keyword, lower-cased (`run`); unknown keywords are kept.
    pub keyword: String,
    /// Where the keyword is.
    pub keyword_span: Span,
    /// Leading `--flag[=value]` words, quotes and escapes processed.
    pub flags: Vec<Word>,
    /// The argument words.
    pub args: Vec<Word>,
    /// The trigger of an `ONBUILD`.
    pub child: Option<Box<Node>>,
    /// Whether the arguments were a JSON array.
    pub json: bool,
    /// Here-documents, in the order their markers appear.
    pub heredocs: Vec<Heredoc>,
    /// The logical line (continuations joined, comments dropped), BuildKit's `Original`.
    pub original: String,
    /// The whole instruction in the source, heredoc bodies included.
    pub span: Span,
    /// 1-based first line.
    pub start_line: usize,
    /// 1-based last line (heredoc terminators included).
    pub end_line: usize,
}

impl Node {
    /// BuildKit's `Node.Dump()` for this instruction, without the surrounding parentheses.
    pub fn dump(&self) -> String {
        let mut s = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            s.push_str(" [");
            for (i, f) in self.flags.iter().enumerate() {
                if i > 0 {
                    s.push(' ');
                }
                s.push_str(&go_quote(&f.value));
            }
            s.push(']');
        }
        if let Some(child) = &self.child {
            s.push_str(" (");
            s.push_str(&child.dump());
            s.push(')');
        }
        for a in &self.args {
            s.push(' ');
            s.push_str(&go_quote(&a.value));
        }
        go_trim_space(&s).to_string()
    }

    /// The argument values as plain strings.
    pub fn arg_values(&self) -> Vec<String> {
        self.args.iter().map(|a| a.value.clone()).collect()
    }
}

/// A parser directive at the top of the file (`# escape=\``).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// The key, lower-cased (`syntax`, `escape`, `check`).
    pub name: String,
    /// The value as written.
    pub value: String,
    /// 1-based line.
    pub line: usize,
    /// The directive line.
    pub span: Span,
}

/// A warning found while parsing or validating, with its location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// BuildKit's lint rule name (`NoEmptyContinuation`, `MaintainerDeprecated`, …).
    pub rule: &'static str,
    /// What is wrong, lower-case.
    pub message: String,
    /// Where.
    pub span: Span,
    /// 1-based line and column of `span.start`.
    pub position: Position,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ast {
    /// The escape character in effect (`\` or `` ` ``).
    pub escape: char,
    /// The parser directives found at the top.
    pub directives: Vec<Directive>,
    /// The instructions, in file order.
    pub nodes: Vec<Node>,
    /// Parse-level warnings (empty continuation lines).
    pub warnings: Vec<Warning>,
    /// The source text the spans refer to (invalid UTF-8 replaced by U+FFFD).
    #[serde(skip)]
    pub source: String,
    /// Line index of `source`.
    #[serde(skip)]
    pub lines: LineIndex,
}

impl Ast {
    /// The whole tree in BuildKit's dump form: one `(…)` line per instruction, joined by `\n`,
    /// with no final newline (BuildKit's test files add one).
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            s.push('(');
            s.push_str(&n.dump());
            s.push_str(")\n");
        }
        go_trim_space(&s).to_string()
    }

    /// The value of a directive (`syntax`, `escape`, `check`), if present.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }

    /// The line and column of a byte offset.
    pub fn position(&self, offset: usize) -> Position {
        self.lines.position(&self.source, offset)
    }
}

/// Go's `strings.TrimSpace`.
pub(crate) fn go_trim_space(s: &str) -> &str {
    s.trim_matches(char::is_whitespace)
}

/// Go's `unicode.IsPrint`, approximated with the standard library: letters, marks, numbers,
/// punctuation, symbols and U+0020 are printable; controls, other spaces, format characters,
/// private use, non-characters and the unassigned planes are not. (Unassigned code points
/// inside otherwise assigned blocks are treated as printable; Go would escape them.)
fn go_is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    !matches!(u,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x180E | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xE000..=0xF8FF | 0xFEFF
        | 0xFFF9..=0xFFFB | 0xFFFE | 0xFFFF | 0xF0000..=0x10FFFF
        // Unassigned planes and the tag characters (Go: not graphic).
        | 0x323B0..=0xDFFFF | 0xE0000..=0xE00FF | 0xE01F0..=0xEFFFF)
        && (u & 0xFFFE) != 0xFFFE
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if go_is_print(c) => out.push(c),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\u{0}\n\t♥"), "\"\\x00\\n\\t♥\"");
        assert_eq!(go_quote("\u{a0}"), "\"\\u00a0\"");
        // Found by diffing fuzz-corpus dumps against BuildKit's parser (PyPI `dockerfile`).
        assert_eq!(go_quote("\u{edab1}"), "\"\\U000edab1\"");
    }

    #[test]
    fn positions_count_characters() {
        let src = "ab\nc♥d\n";
        let idx = LineIndex::new(src);
        assert_eq!(idx.position(src, 0), Position { line: 1, col: 1 });
        assert_eq!(idx.position(src, 3), Position { line: 2, col: 1 });
        assert_eq!(idx.position(src, 7), Position { line: 2, col: 3 });
    }
}
