//! `.dockerignore`: a port of moby's `patternmatcher` (pattern → regex with exact, prefix and
//! suffix fast paths, `MatchesOrParentMatches`) and `ignorefile.ReadAll` (comments, BOM,
//! whitespace, `!` exceptions, cleaned paths without a leading `/`).
//!
//! Semantics differ from `.gitignore` on purpose: an unanchored `foo` matches only at the
//! context root, `**` matches any number of directories, a later `!` pattern can re-include a
//! file inside an excluded directory (so a walker must descend into excluded directories when
//! [`Ignore::has_exclusions`] is true), and there is no `{a,b}` alternation.
//!
//! Which file applies is decided by [`choose_ignore_file`]: `<Dockerfile>.dockerignore` next to
//! the Dockerfile wins over `<context>/.dockerignore`, as in BuildKit. [`read_ignore_file`] is the
//! only function here that touches the filesystem.
use regex::Regex;
use std::path::{Path, PathBuf};

/// A bad pattern in an ignore file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    /// `!` alone.
    #[error("line {line}: illegal exclusion pattern: \"!\"")]
    BareExclusion {
        /// 1-based line.
        line: usize,
    },
    /// A pattern that does not compile (an unclosed `[`, for example).
    #[error("line {line}: syntax error in pattern {pattern:?}: {reason}")]
    BadPattern {
        /// 1-based line.
        line: usize,
        /// The pattern after cleaning.
        pattern: String,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchType {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The pattern after cleaning, without `!`.
    pub cleaned: String,
    /// Whether it re-includes (`!pattern`).
    pub exclusion: bool,
    kind: MatchType,
    regex: Option<Regex>,
}

/// A parsed ignore file.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

/// Go's `path.Clean` on slash paths.
pub fn go_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if matches!(out.last(), Some(l) if *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// `ignorefile.ReadAll`: the patterns of an ignore file, with line numbers.
pub fn read_patterns(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let mut line = raw.strip_suffix('\r').unwrap_or(raw);
        if i == 0 {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.starts_with('#') {
            continue;
        }
        let mut p = line.trim();
        if p.is_empty() {
            continue;
        }
        let invert = p.starts_with('!');
        if invert {
            p = p[1..].trim();
        }
        let mut pat = String::new();
        if !p.is_empty() {
            pat = go_clean(p);
            if pat.len() > 1 && pat.starts_with('/') {
                pat.remove(0);
            }
        }
        if invert {
            pat.insert(0, '!');
        }
        out.push((i + 1, pat));
    }
    out
}

fn should_escape(c: char) -> bool {
    ".+()|{}$".contains(c)
}

impl Pattern {
    fn compile(cleaned: &str, exclusion: bool, line: usize) -> Result<Pattern, IgnoreError> {
        let mut re = String::from("^");
        let mut kind = MatchType::Exact;
        let chars: Vec<char> = cleaned.chars().collect();
        let mut i = 0;
        let mut first = true;
        // Inside `[...]` characters go through as in Go, except the ones Rust's regex gives a
        // meaning there (nested `[`, and `&&`, `--`, `~~` set operations).
        let mut in_class = false;
        while i < chars.len() {
            let ch = chars[i];
            i += 1;
            if ch == '*' {
                if chars.get(i) == Some(&'*') {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i >= chars.len() {
                        if kind == MatchType::Exact {
                            kind = MatchType::Prefix;
                        } else {
                            re.push_str(".*");
                            kind = MatchType::Regex;
                        }
                    } else {
                        re.push_str("(.*/)?");
                        kind = MatchType::Regex;
                    }
                    if first {
                        kind = MatchType::Suffix;
                    }
                } else {
                    re.push_str("[^/]*");
                    kind = MatchType::Regex;
                }
            } else if ch == '?' {
                re.push_str("[^/]");
                kind = MatchType::Regex;
            } else if should_escape(ch) {
                re.push('\\');
                re.push(ch);
            } else if ch == '\\' {
                match chars.get(i) {
                    Some(&n) => {
                        i += 1;
                        re.push_str(&regex::escape(&n.to_string()));
                    }
                    None => re.push_str("\\\\"),
                }
            } else if ch == '[' && in_class {
                re.push_str("\\[");
            } else if ch == '[' || ch == ']' {
                in_class = ch == '[';
                re.push(ch);
                kind = MatchType::Regex;
            } else if in_class {
                if matches!(ch, '&' | '~') || (ch == '-' && re.ends_with('-')) {
                    re.push('\\');
                }
                re.push(ch);
            } else {
                re.push_str(&regex::escape(&ch.to_string()));
            }
            first = false;
        }
        let regex = if kind == MatchType::Regex {
            re.push('$');
            Some(Regex::new(&re).map_err(|e| IgnoreError::BadPattern {
                line,
                pattern: cleaned.to_string(),
                reason: e.to_string().lines().last().unwrap_or_default().to_string(),
            })?)
        } else {
            None
        };
        Ok(Pattern {
            cleaned: cleaned.to_string(),
            exclusion,
            kind,
            regex,
        })
    }

    /// Whether this pattern matches `path` (a cleaned, relative, slash path).
    pub fn is_match(&self, path: &str) -> bool {
        match self.kind {
            MatchType::Exact => path == self.cleaned,
            MatchType::Prefix => {
                let p = &self.cleaned[..self.cleaned.len().saturating_sub(2)];
                path.starts_with(p)
            }
            MatchType::Suffix => {
                let suffix = self.cleaned.get(2..).unwrap_or("");
                if path.ends_with(suffix) {
                    return true;
                }
                suffix.starts_with('/') && path == &suffix[1..]
            }
            MatchType::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(path)),
        }
    }
}

impl Ignore {
    /// Parses the text of an ignore file.
    pub fn parse(text: &str) -> Result<Ignore, IgnoreError> {
        let mut ig = Ignore::default();
        for (line, p) in read_patterns(text) {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            let p = go_clean(p);
            let (exclusion, body) = match p.strip_prefix('!') {
                Some("") => return Err(IgnoreError::BareExclusion { line }),
                Some(rest) => (true, rest.to_string()),
                None => (false, p),
            };
            ig.exclusions |= exclusion;
            ig.patterns.push(Pattern::compile(&body, exclusion, line)?);
        }
        Ok(ig)
    }

    /// The compiled patterns, in file order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether any pattern re-includes (`!`), so excluded directories must still be walked.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// moby's `MatchesOrParentMatches`: whether `path` (relative to the context, `/`-separated)
    /// is excluded by the patterns or by a pattern matching one of its parent directories.
    pub fn matches(&self, path: &str) -> bool {
        let path = go_clean(path.trim_start_matches('/'));
        let parent = match path.rfind('/') {
            Some(i) => &path[..i],
            None => ".",
        };
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut m = p.is_match(&path);
            if !m && parent != "." {
                for i in 0..parent_dirs.len() {
                    if p.is_match(&parent_dirs[..=i].join("/")) {
                        m = true;
                        break;
                    }
                }
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }
}

/// Which ignore file applies: `<dockerfile>.dockerignore` when `exists` says it exists (BuildKit
/// looks next to the Dockerfile, whatever its name), else `<context>/.dockerignore` when it
/// exists, else none.
pub fn choose_ignore_file(
    dockerfile: &Path,
    context: &Path,
    exists: &dyn Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if let Some(name) = dockerfile.file_name() {
        let mut n = name.to_os_string();
        n.push(".dockerignore");
        let specific = dockerfile.with_file_name(n);
        if exists(&specific) {
            return Some(specific);
        }
    }
    let general = context.join(".dockerignore");
    exists(&general).then_some(general)
}

/// Reads the ignore file that applies ([`choose_ignore_file`]): its path and text.
pub fn read_ignore_file(
    dockerfile: &Path,
    context: &Path,
) -> std::io::Result<Option<(PathBuf, String)>> {
    match choose_ignore_file(dockerfile, context, &|p| p.is_file()) {
        Some(p) => {
            let text = std::fs::read_to_string(&p)?;
            Ok(Some((p, text)))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(patterns: &str, path: &str) -> bool {
        Ignore::parse(patterns).unwrap().matches(path)
    }

    #[test]
    fn moby_pattern_semantics() {
        assert!(m("foo", "foo"));
        assert!(m("foo", "foo/bar"), "parent directory matches");
        assert!(!m("foo", "a/foo"), "unanchored matches only at the root");
        assert!(m("**/foo", "a/b/foo"));
        assert!(m("**/foo", "foo"));
        assert!(m("*.md", "README.md"));
        assert!(!m("*.md", "docs/a.md"));
        assert!(m("docs/**/*.md", "docs/a/b/c.md"));
        assert!(m("docs/**/*.md", "docs/c.md"));
        assert!(m("/abs", "abs"));
        assert!(m("a/../b", "b"));
        assert!(m("**", "anything/at/all"));
        assert!(m("dir/**", "dir/x"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "a/c"));
        assert!(m("[a-c]x", "bx"));
        assert!(m("*\n!keep.md", "other.md"));
        assert!(!m("*\n!keep.md", "keep.md"));
        assert!(!m("dir\n!dir/keep", "dir/keep"));
        assert!(m("dir\n!dir/keep", "dir/other"));
        assert!(!m("# comment\n\n   \n", "x"));
        assert!(m("\u{feff}x", "x"));
        assert!(m("a.b", "a.b"));
        assert!(!m("a.b", "axb"));
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(matches!(
            Ignore::parse("!"),
            Err(IgnoreError::BareExclusion { line: 1 })
        ));
        assert!(Ignore::parse("ok\n[").is_err());
    }

    #[test]
    fn dockerfile_specific_ignore_file_wins() {
        let df = Path::new("ctx/variants/Dockerfile.python");
        let ctx = Path::new("ctx");
        let both = |_: &Path| true;
        assert_eq!(
            choose_ignore_file(df, ctx, &both),
            Some(PathBuf::from("ctx/variants/Dockerfile.python.dockerignore"))
        );
        let only_general = |p: &Path| {
            p.ends_with(".dockerignore")
                && p.starts_with("ctx")
                && p.parent() == Some(Path::new("ctx"))
        };
        assert_eq!(
            choose_ignore_file(df, ctx, &only_general),
            Some(PathBuf::from("ctx/.dockerignore"))
        );
        assert_eq!(choose_ignore_file(df, ctx, &|_: &Path| false), None);
    }
}
