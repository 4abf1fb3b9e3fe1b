//! Instruction flags (a port of BuildKit's `instructions/bflag.go`), `RUN --mount` values
//! (`commands_runmount.go`) and Go durations for HEALTHCHECK.
use crate::dockerfile::ast::{Span, Word};
use crate::dockerfile::error::ErrorKind;
use crate::dockerfile::suggest::suggest;
use serde::Serialize;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    /// `--link`, `--link=true|false`.
    Bool,
    /// `--from=x`, once.
    String,
    /// `--mount=x`, repeatable.
    Strings,
}

/// The flags an instruction accepts.
pub(crate) fn flag_specs(keyword: &str) -> &'static [(&'static str, FlagKind)] {
    use FlagKind::*;
    match keyword {
        "from" => &[("platform", String)],
        "run" => &[
            ("mount", Strings),
            ("network", String),
            ("security", String),
            ("device", Strings),
        ],
        "copy" => &[
            ("from", String),
            ("chown", String),
            ("chmod", String),
            ("link", Bool),
            ("parents", Bool),
            ("exclude", Strings),
        ],
        "add" => &[
            ("chown", String),
            ("chmod", String),
            ("link", Bool),
            ("keep-git-dir", Bool),
            ("checksum", String),
            ("unpack", Bool),
            ("exclude", Strings),
        ],
        "healthcheck" => &[
            ("interval", String),
            ("timeout", String),
            ("start-period", String),
            ("start-interval", String),
            ("retries", String),
        ],
        _ => &[],
    }
}

/// Parsed flag values: `(name, value, span)` in order.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    values: Vec<(&'static str, String, Span)>,
}

impl Flags {
    /// The value of a string or bool flag.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|v| v.0 == name)
            .map(|v| v.1.as_str())
    }

    /// The span of a flag.
    pub(crate) fn span(&self, name: &str) -> Option<Span> {
        self.values.iter().rev().find(|v| v.0 == name).map(|v| v.2)
    }

    /// A bool flag (absent = false).
    pub(crate) fn bool(&self, name: &str) -> bool {
        self.get(name) == Some("true")
    }

    /// Every value of a repeatable flag, with spans.
    pub(crate) fn all(&self, name: &str) -> Vec<(String, Span)> {
        self.values
            .iter()
            .filter(|v| v.0 == name)
            .map(|v| (v.1.clone(), v.2))
            .collect()
    }
}

/// BuildKit's `BFlags.Parse` for `keyword`'s flags. Errors carry the flag's span.
pub(crate) fn parse_flags(keyword: &str, words: &[Word]) -> Result<Flags, (ErrorKind, Span)> {
    let specs = flag_specs(keyword);
    let mut out = Flags::default();
    for w in words {
        let Some(arg) = w.value.strip_prefix("--") else {
            return Err((
                ErrorKind::BadFlagWord {
                    word: w.value.clone(),
                },
                w.span,
            ));
        };
        if arg.is_empty() {
            break;
        }
        let (name, value) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (arg, None),
        };
        let Some(&(spec_name, kind)) = specs.iter().find(|s| s.0 == name) else {
            return Err((
                ErrorKind::UnknownFlag {
                    flag: name.to_string(),
                    instruction: keyword.to_uppercase(),
                    suggestion: suggest(name, specs.iter().map(|s| s.0)).map(str::to_string),
                },
                w.span,
            ));
        };
        if kind != FlagKind::Strings && out.values.iter().any(|v| v.0 == spec_name) {
            return Err((
                ErrorKind::DuplicateFlag {
                    flag: name.to_string(),
                },
                w.span,
            ));
        }
        let v = match kind {
            FlagKind::Bool => match value {
                Some("") => {
                    return Err((
                        ErrorKind::MissingFlagValue {
                            flag: name.to_string(),
                        },
                        w.span,
                    ))
                }
                None => "true".to_string(),
                Some(v) if v.eq_ignore_ascii_case("true") => "true".to_string(),
                Some(v) if v.eq_ignore_ascii_case("false") => "false".to_string(),
                Some(v) => {
                    return Err((
                        ErrorKind::BadBool {
                            flag: name.to_string(),
                            value: v.to_string(),
                        },
                        w.span,
                    ))
                }
            },
            FlagKind::String | FlagKind::Strings => match value {
                Some(v) => v.to_string(),
                None => {
                    return Err((
                        ErrorKind::MissingFlagValue {
                            flag: name.to_string(),
                        },
                        w.span,
                    ))
                }
            },
        };
        out.values.push((spec_name, v, w.span));
    }
    Ok(out)
}

/// The kind of a `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MountType {
    /// A read-only bind of the context or another stage (the default).
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A secret file or env variable.
    Secret,
    /// An SSH agent socket.
    Ssh,
}

/// One `RUN --mount=…`, values as written (the planner expands all but `from`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Mount {
    /// The type (default bind).
    pub kind: Option<MountType>,
    /// `target`/`dst`/`destination` (a bind without one is mounted at the working directory).
    pub target: Option<String>,
    /// `source`/`src`.
    pub source: Option<String>,
    /// `from`: a stage, image or context.
    pub from: Option<String>,
    /// `ro`/`readonly`/`rw`/`readwrite`.
    pub read_only: Option<bool>,
    /// `id` (cache, secret, ssh).
    pub id: Option<String>,
    /// `sharing=shared|private|locked` (cache).
    pub sharing: Option<String>,
    /// `mode` (octal).
    pub mode: Option<String>,
    /// `uid`.
    pub uid: Option<String>,
    /// `gid`.
    pub gid: Option<String>,
    /// `size` (tmpfs).
    pub size: Option<String>,
    /// `env` (secret).
    pub env: Option<String>,
    /// `required` (secret, ssh).
    pub required: Option<bool>,
    /// The flag value as written.
    pub raw: String,
}

impl Mount {
    /// The mount type, `bind` when not given.
    pub fn mount_type(&self) -> MountType {
        self.kind.unwrap_or(MountType::Bind)
    }
}

/// Splits a CSV record the way Go's `encoding/csv` does for one line (quotes group fields).
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if at_start && c == '"' {
            // Quoted field: `""` is a literal quote.
            loop {
                match chars.next() {
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        cur.push('"');
                    }
                    Some('"') => break,
                    Some(c) => cur.push(c),
                }
            }
            at_start = false;
            continue;
        }
        if c == ',' {
            out.push(std::mem::take(&mut cur));
            at_start = true;
            continue;
        }
        at_start = false;
        cur.push(c);
    }
    out.push(cur);
    Ok(out)
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(format!("invalid value for {key}: {v}")),
    }
}

/// Parses one `--mount` value (BuildKit's `parseMount`), validating keys per type.
pub(crate) fn parse_mount(value: &str) -> Result<Mount, ErrorKind> {
    let bad = |reason: String| ErrorKind::InvalidMount {
        value: value.to_string(),
        reason,
    };
    let mut m = Mount {
        raw: value.to_string(),
        ..Mount::default()
    };
    let fields = csv_fields(value).map_err(bad)?;
    for field in fields {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_string())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        match (key.as_str(), val) {
            ("readonly" | "ro", None) => m.read_only = Some(true),
            ("readwrite" | "rw", None) => m.read_only = Some(false),
            ("required", None) => m.required = Some(true),
            ("type", Some(v)) => {
                m.kind = Some(match v.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => return Err(bad(format!("unsupported mount type {v:?}"))),
                })
            }
            ("target" | "dst" | "destination", Some(v)) => m.target = Some(v),
            ("source" | "src", Some(v)) => m.source = Some(v),
            ("from", Some(v)) => m.from = Some(v),
            ("readonly" | "ro", Some(v)) => m.read_only = Some(parse_bool(&key, &v).map_err(bad)?),
            ("readwrite" | "rw", Some(v)) => {
                m.read_only = Some(!parse_bool(&key, &v).map_err(bad)?)
            }
            ("required", Some(v)) => m.required = Some(parse_bool(&key, &v).map_err(bad)?),
            ("id", Some(v)) => m.id = Some(v),
            ("sharing", Some(v)) => {
                if !matches!(
                    v.to_ascii_lowercase().as_str(),
                    "shared" | "private" | "locked"
                ) {
                    return Err(bad(format!("unsupported sharing value {v:?}")));
                }
                m.sharing = Some(v.to_ascii_lowercase())
            }
            ("mode", Some(v)) => m.mode = Some(v),
            ("uid", Some(v)) => m.uid = Some(v),
            ("gid", Some(v)) => m.gid = Some(v),
            ("size", Some(v)) => m.size = Some(v),
            ("env", Some(v)) => m.env = Some(v),
            (k, Some(_)) => return Err(bad(format!("unexpected key '{k}'"))),
            (k, None) => return Err(bad(format!("unexpected key '{k}'"))),
        }
    }
    let t = m.mount_type();
    // A bind mount without a target is mounted at the working directory (moby/buildkit's own
    // Dockerfile relies on it); caches and tmpfs need one.
    if m.target.is_none() && matches!(t, MountType::Cache | MountType::Tmpfs) {
        return Err(bad("mount destination (target) is required".into()));
    }
    if m.sharing.is_some() && t != MountType::Cache {
        return Err(bad("sharing is only allowed for cache mounts".into()));
    }
    if (m.mode.is_some() || m.uid.is_some() || m.gid.is_some())
        && matches!(t, MountType::Bind | MountType::Tmpfs)
    {
        return Err(bad(
            "mode, uid and gid are not allowed on bind and tmpfs mounts".into(),
        ));
    }
    if m.from.is_some() && t == MountType::Secret {
        return Err(bad("secret mounts cannot have 'from'".into()));
    }
    Ok(m)
}

/// Parses a Go duration (`1h30m`, `5s`, `1.5ms`, `0`) into nanoseconds, as `time.ParseDuration`.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {s:?}");
    let mut rest = s;
    let mut neg = false;
    if let Some(r) = rest.strip_prefix('-') {
        neg = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_end];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(invalid());
        }
        let n: f64 = num.parse().map_err(|_| invalid())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        let mult = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            _ => return Err(format!("time: unknown unit {unit:?} in duration {s:?}")),
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    if total > i64::MAX as f64 {
        return Err(invalid());
    }
    let v = total as i64;
    Ok(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("5s"), Ok(5_000_000_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("1.5ms"), Ok(1_500_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn mounts_parse_and_validate() {
        let m = parse_mount("type=cache,target=/root/.cache,sharing=locked").unwrap();
        assert_eq!(m.mount_type(), MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert!(parse_mount("type=cache").is_err());
        assert!(parse_mount("type=secret,id=x,from=y").is_err());
        assert!(parse_mount("target=/x,bogus=1").is_err());
        let m = parse_mount("type=secret,id=aws,required").unwrap();
        assert_eq!(m.required, Some(true));
    }
}
