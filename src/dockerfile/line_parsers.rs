//! Per-instruction argument parsers: a port of BuildKit's `parser/line_parsers.go` and
//! `parser/split_command.go`, keeping offsets into the logical line.
//!
//! Each parser turns the text after the keyword and flags into the argument words the AST dump
//! shows: JSON arrays, whitespace-split lists, ENV/LABEL `key value sep` triplets, ARG words,
//! or the rest of the line as one word.
use super::error::ErrorKind;
use super::lex::is_space;

/// A word with its `start..end` offsets in the logical line.
pub(crate) type OffWord = (String, usize, usize);

/// The result of parsing one logical line (or an ONBUILD trigger inside it).
#[derive(Debug, Default)]
pub(crate) struct LineParse {
    /// Where this instruction starts in the logical line.
    pub start: usize,
    /// The keyword's offsets.
    pub keyword: (usize, usize),
    /// The keyword, lower-cased.
    pub keyword_text: String,
    /// Flags, processed.
    pub flags: Vec<OffWord>,
    /// Arguments.
    pub args: Vec<OffWord>,
    /// Whether the arguments were JSON.
    pub json: bool,
    /// For ONBUILD: where the trigger starts.
    pub sub_start: Option<usize>,
}

type LpResult<T> = Result<T, (ErrorKind, usize, usize)>;

/// BuildKit's `tokenWhitespace` / `reWhitespace`: `[\t\v\f\r ]`.
fn is_token_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Go's `strings.TrimSpace` on `text[a..b]`, as offsets.
fn trim_span(text: &str, a: usize, b: usize) -> (usize, usize) {
    let s = &text[a..b];
    let l = s.len() - s.trim_start_matches(char::is_whitespace).len();
    let t = s.trim_end_matches(char::is_whitespace).len();
    if t <= l {
        return (a + l, a + l);
    }
    (a + l, a + t)
}

/// Parses the instruction starting at offset `at` of `text`.
pub(crate) fn parse_line(text: &str, at: usize, escape: char) -> LpResult<LineParse> {
    let (a, b) = trim_span(text, at, text.len());
    let trimmed = &text[a..b];
    let (cmd_end, rest) = match trimmed.find(is_token_ws) {
        Some(i) => {
            let after = trimmed[i..]
                .find(|c| !is_token_ws(c))
                .map_or(trimmed.len(), |j| i + j);
            (a + i, Some(a + after))
        }
        None => (b, None),
    };
    let mut lp = LineParse {
        start: at,
        keyword: (a, cmd_end),
        keyword_text: text[a..cmd_end].to_lowercase(),
        ..LineParse::default()
    };
    let (mut args_a, mut args_b) = (b, b);
    if let Some(r) = rest {
        let (args_start, flags) = extract_builder_flags(text, r, b);
        lp.flags = flags;
        if let Some(s) = args_start {
            (args_a, args_b) = trim_span(text, s, b);
        }
    }
    let rest = &text[args_a..args_b];
    match lp.keyword_text.as_str() {
        "add" | "copy" | "volume" => {
            if let Some(words) = parse_json(text, args_a, args_b)? {
                lp.args = words;
                lp.json = true;
            } else {
                lp.args = whitespace_delimited(text, args_a, args_b);
            }
        }
        "arg" => lp.args = parse_words(text, args_a, args_b, escape),
        "cmd" | "entrypoint" | "run" | "shell" => {
            (lp.args, lp.json) = maybe_json(text, args_a, args_b)?;
        }
        "env" | "label" => {
            let kw = if lp.keyword_text == "env" {
                "ENV"
            } else {
                "LABEL"
            };
            lp.args = parse_name_val(text, args_a, args_b, escape, kw)?;
        }
        "expose" | "from" => lp.args = whitespace_delimited(text, args_a, args_b),
        "healthcheck" => (lp.args, lp.json) = parse_health(text, args_a, args_b)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if !rest.is_empty() {
                lp.args = vec![(rest.to_string(), args_a, args_b)];
            }
        }
        "onbuild" => {
            if !rest.is_empty() {
                lp.sub_start = Some(args_a);
            }
        }
        // BuildKit's parseIgnore: an unknown instruction keeps one empty argument node.
        _ => lp.args = vec![(String::new(), args_a, args_a)],
    }
    Ok(lp)
}

/// BuildKit's `extractBuilderFlags` on `text[from..to]`: leading `--` words become flags. Returns
/// where the remaining arguments start (`None` when nothing is left) and the flags.
///
/// Like BuildKit, this walks bytes, so a non-ASCII byte inside a flag becomes the Latin-1
/// character of the same value. Unlike BuildKit, only ASCII bytes count as whitespace: Go also
/// treats the bytes 0x85 and 0xA0 (continuation bytes of UTF-8 characters) as spaces, which
/// would cut a character in half.
fn extract_builder_flags(text: &str, from: usize, to: usize) -> (Option<usize>, Vec<OffWord>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let line = &text.as_bytes()[from..to];
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut word_start = 0;
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= line.len() {
        let ch = line.get(pos).copied().unwrap_or(0);
        if phase == Phase::Spaces {
            if pos == line.len() {
                break;
            }
            if byte_space(ch) {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == line.len() || line[pos + 1] != b'-' {
                return (Some(from + pos), words);
            }
            phase = Phase::Word;
            word_start = pos;
        }
        if pos == line.len() {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push((word, from + word_start, from + pos));
            }
            break;
        }
        if phase == Phase::Word {
            if byte_space(ch) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (Some(from + pos), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push((std::mem::take(&mut word), from + word_start, from + pos));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if c == b'\\' {
                if pos + 1 == line.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = line[pos];
            }
            word.push(c as char);
            pos += 1;
            continue;
        }
        // Inside quotes.
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if c == b'\\' {
            if pos + 1 == line.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = line[pos];
        }
        word.push(c as char);
        pos += 1;
    }
    (None, words)
}

/// An ASCII whitespace byte.
fn byte_space(b: u8) -> bool {
    b.is_ascii() && is_space(b as char)
}

/// BuildKit's `parseStringsWhitespaceDelimited`.
fn whitespace_delimited(text: &str, a: usize, b: usize) -> Vec<OffWord> {
    let mut out = Vec::new();
    if a >= b {
        return out;
    }
    let s = &text[a..b];
    let mut start: Option<usize> = Some(0);
    for (i, c) in s.char_indices() {
        if is_token_ws(c) {
            if let Some(st) = start.take() {
                out.push((s[st..i].to_string(), a + st, a + i));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        out.push((s[st..].to_string(), a + st, b));
    }
    out
}

/// BuildKit's `parseJSON`: `Ok(None)` when the text is not a JSON array of strings (it is then
/// treated as shell form), an error when it is an array with a non-string element.
fn parse_json(text: &str, a: usize, b: usize) -> LpResult<Option<Vec<OffWord>>> {
    let s = &text[a..b];
    let t = s.trim_start_matches(char::is_whitespace);
    if !t.starts_with('[') {
        return Ok(None);
    }
    // Like Go's json.Decoder, only the first value counts; anything after it is ignored.
    let mut it = serde_json::Deserializer::from_str(t).into_iter::<serde_json::Value>();
    let Some(Ok(serde_json::Value::Array(items))) = it.next() else {
        return Ok(None);
    };
    let mut words = Vec::with_capacity(items.len());
    for v in items {
        match v {
            serde_json::Value::String(s) => words.push((s, a, b)),
            _ => return Err((ErrorKind::NotStringArray, a, b)),
        }
    }
    Ok(Some(words))
}

/// BuildKit's `parseMaybeJSON`: a JSON array, or the whole rest as one word.
fn maybe_json(text: &str, a: usize, b: usize) -> LpResult<(Vec<OffWord>, bool)> {
    if a >= b {
        return Ok((Vec::new(), false));
    }
    if let Some(w) = parse_json(text, a, b)? {
        return Ok((w, true));
    }
    Ok((vec![(text[a..b].to_string(), a, b)], false))
}

/// BuildKit's `parseHealthConfig`: the type word, then the rest like CMD.
fn parse_health(text: &str, a: usize, b: usize) -> LpResult<(Vec<OffWord>, bool)> {
    let s = &text[a..b];
    let sep = s.find(char::is_whitespace).unwrap_or(s.len());
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let next = s[sep..]
        .find(|c: char| !c.is_whitespace())
        .map_or(s.len(), |i| sep + i);
    let mut out = vec![(s[..sep].to_string(), a, a + sep)];
    let (rest, json) = maybe_json(text, a + next, b)?;
    out.extend(rest);
    Ok((out, json))
}

/// BuildKit's `parseWords`: splits on unquoted whitespace, keeping quotes and escapes.
pub(crate) fn parse_words(text: &str, a: usize, b: usize, escape: char) -> Vec<OffWord> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let rest = &text[a..b];
    let chars: Vec<(usize, char)> = rest.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut start = 0;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut i = 0;
    let off = |i: usize| chars.get(i).map_or(rest.len(), |c| c.0);
    loop {
        let at_end = i >= chars.len();
        let ch = chars.get(i).map_or('\0', |c| c.1);
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_space(ch) {
                i += 1;
                continue;
            }
            phase = Phase::Word;
            start = i;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push((word, a + off(start), b));
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push((std::mem::take(&mut word), a + off(start), a + off(i)));
                }
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            let mut c = ch;
            if c == escape {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                word.push(c);
                i += 1;
                c = chars[i].1;
            }
            word.push(c);
            i += 1;
            continue;
        }
        // Inside quotes.
        if ch == quote {
            phase = Phase::Word;
        }
        let mut c = ch;
        if c == escape && quote != '\'' {
            if i + 1 == chars.len() {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            i += 1;
            word.push(c);
            c = chars[i].1;
        }
        word.push(c);
        i += 1;
    }
    words
}

/// BuildKit's `parseNameVal` for ENV and LABEL: `key value sep` triplets.
fn parse_name_val(
    text: &str,
    a: usize,
    b: usize,
    escape: char,
    keyword: &str,
) -> LpResult<Vec<OffWord>> {
    let words = parse_words(text, a, b, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.0.contains('=') {
        // The legacy form `KEY value with spaces`.
        let rest = &text[a..b];
        let Some(i) = rest.find(is_token_ws) else {
            return Err((
                ErrorKind::MissingValue {
                    instruction: keyword.to_string(),
                },
                a,
                b,
            ));
        };
        let j = rest[i..]
            .find(|c| !is_token_ws(c))
            .map_or(rest.len(), |j| i + j);
        return Ok(vec![
            (rest[..i].to_string(), a, a + i),
            (rest[j..].to_string(), a + j, b),
            (String::new(), b, b),
        ]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for (w, s, e) in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err((ErrorKind::MissingEquals { word: w.clone() }, s, e));
        };
        let eq = s + k.len();
        out.push((k.to_string(), s, eq));
        out.push((v.to_string(), (eq + 1).min(e), e));
        out.push(("=".to_string(), eq, eq + 1));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        parse_words(s, 0, s.len(), '\\')
            .into_iter()
            .map(|w| w.0)
            .collect()
    }

    #[test]
    fn parse_words_keeps_quotes() {
        assert_eq!(
            words(r#"abc="123 456" def"#),
            vec![r#"abc="123 456""#, "def"]
        );
        assert_eq!(words(r"a\ b c"), vec![r"a\ b", "c"]);
    }

    #[test]
    fn flags_stop_at_first_plain_word() {
        let s = "--from=x --link src dst";
        let (rest, flags) = extract_builder_flags(s, 0, s.len());
        assert_eq!(&s[rest.unwrap()..], "src dst");
        assert_eq!(flags.len(), 2);
    }
}
