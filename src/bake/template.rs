//! Tag templates: `{version}`, `{variant}`, `{gitsha}`, `{branch}` placeholders in tag text.
use std::collections::BTreeMap;

/// The placeholders a tag template may use.
pub const PLACEHOLDERS: &[&str] = &["version", "variant", "gitsha", "branch"];

/// The placeholders a `cache_to` / `cache_from` value may use.
pub const CACHE_PLACEHOLDERS: &[&str] = &[
    "target", "variant", "platform", "version", "gitsha", "branch",
];

/// Checks a `cache_to` / `cache_from` value: braces balanced, only [`CACHE_PLACEHOLDERS`].
/// The value itself (buildx's cache syntax) is checked once rendered, by the CLI.
pub fn check_text(text: &str) -> Result<(), String> {
    scan(text, CACHE_PLACEHOLDERS, &|_| Ok(()))
}

/// Walks `text`: braces balanced, every placeholder one of `known`, and each literal part
/// accepted by `literal`. The one scanner of tag templates and cache values.
fn scan(
    text: &str,
    known: &[&str],
    literal: &dyn Fn(&str) -> Result<(), String>,
) -> Result<(), String> {
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        literal(&rest[..open])?;
        if rest.as_bytes()[open] == b'}' {
            return Err("`}` without a matching `{`".into());
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| "`{` without a matching `}`".to_string())?;
        let name = &after[..close];
        if !known.contains(&name) {
            return Err(format!(
                "unknown placeholder `{{{name}}}` (known: {})",
                known
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    literal(rest)
}

/// Fills the placeholders of a value [`check_text`] accepted.
pub fn render_text(text: &str, vars: &BTreeMap<&str, String>) -> Result<String, String> {
    check_text(text)?;
    let mut out = text.to_string();
    for p in CACHE_PLACEHOLDERS {
        let key = format!("{{{p}}}");
        if out.contains(&key) {
            let v = vars
                .get(p)
                .ok_or_else(|| format!("`{{{p}}}` has no value here"))?;
            out = out.replace(&key, v);
        }
    }
    Ok(out)
}

/// A validated tag template such as `{version}-{variant}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Template(String);

impl Template {
    /// Checks `text`: braces balanced, only known placeholders, and the literal parts valid
    /// tag characters. Returns the reason when it is not a template.
    pub fn parse(text: &str) -> Result<Template, String> {
        if text.is_empty() {
            return Err("a tag template cannot be empty".into());
        }
        scan(text, PLACEHOLDERS, &literal)?;
        Ok(Template(text.to_string()))
    }

    /// The template text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the template uses `{name}`.
    pub fn uses(&self, name: &str) -> bool {
        self.0.contains(&format!("{{{name}}}"))
    }

    /// Fills the placeholders from `vars` and checks the result is a valid tag.
    pub fn render(&self, vars: &BTreeMap<&str, String>) -> Result<String, String> {
        let mut out = self.0.clone();
        for p in PLACEHOLDERS {
            let key = format!("{{{p}}}");
            if out.contains(&key) {
                let v = vars
                    .get(p)
                    .ok_or_else(|| format!("`{{{p}}}` has no value here"))?;
                out = out.replace(&key, v);
            }
        }
        if !is_tag(&out) {
            return Err(format!("renders to `{out}`, which is not a valid tag"));
        }
        Ok(out)
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn literal(s: &str) -> Result<(), String> {
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        Some(c) => Err(format!("`{c}` cannot appear in a tag")),
        None => Ok(()),
    }
}

/// Whether `s` is a valid tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A branch name as a tag component: `/` and other characters a tag cannot hold become `-`.
pub fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.starts_with(['.', '-']) {
        out.remove(0);
    }
    out.truncate(100);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_validate_and_render() {
        let t = Template::parse("{version}-{variant}").unwrap();
        let vars = BTreeMap::from([("version", "0.1.0".into()), ("variant", "python".into())]);
        assert_eq!(t.render(&vars).unwrap(), "0.1.0-python");
        assert!(Template::parse("{colour}")
            .unwrap_err()
            .contains("{colour}"));
        assert!(Template::parse("{version").is_err());
        assert!(Template::parse("v}").is_err());
        assert!(Template::parse("a b").is_err());
        let t = Template::parse("sha-{gitsha}").unwrap();
        assert!(t.render(&vars).unwrap_err().contains("{gitsha}"));
        assert_eq!(sanitize("feature/x y"), "feature-x-y");
    }

    #[test]
    fn cache_values_render_target_variant_and_platform() {
        let vars = BTreeMap::from([
            ("target", "python".into()),
            ("variant", "python".into()),
            ("platform", "linux-amd64".into()),
        ]);
        assert_eq!(
            render_text("type=registry,ref=r/c:{variant}-{platform},mode=max", &vars).unwrap(),
            "type=registry,ref=r/c:python-linux-amd64,mode=max"
        );
        assert!(check_text("r/c:{colour}").unwrap_err().contains("{colour}"));
        assert!(check_text("r/c:{target").is_err());
        assert!(render_text("r/c:{gitsha}", &vars)
            .unwrap_err()
            .contains("{gitsha}"));
    }
}
