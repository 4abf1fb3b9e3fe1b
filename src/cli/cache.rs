//! `--cache-to` / `--cache-from` values, with buildx's syntax (`docker buildx build`, its
//! `util/buildflags/cache.go`): comma-separated `KEY=VALUE` fields, or a bare reference that
//! means `type=registry,ref=REF`.
//!
//! - `type=registry,ref=REPO[:TAG][,mode=min|max][,compression=gzip|zstd][,ignore-error=true]`
//! - `type=local,dest=DIR[,mode=min|max][,ignore-error=true]` (`--cache-to`),
//!   `type=local,src=DIR` (`--cache-from`): an OCI image layout directory.
//!
//! `compression=` names the compression of the cache's layers; kiln's cache layers are the
//! image's own blobs, so it must agree with `--compression` (an error says so otherwise).
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::cache::remote::{CacheExport, CacheLocation, CacheMode};
use crate::registry::Reference;

/// A parsed `--cache-to`, with the compression it asks for (`gzip`, `zstd`), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTo {
    /// The export.
    pub export: CacheExport,
    /// `compression=`.
    pub compression: Option<String>,
}

fn fields(flag: &str, spec: &str) -> Result<BTreeMap<String, String>, String> {
    if !spec.contains('=') {
        return Ok([
            ("type".to_string(), "registry".to_string()),
            ("ref".to_string(), spec.to_string()),
        ]
        .into_iter()
        .collect());
    }
    let mut m = BTreeMap::new();
    for part in spec.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            return Err(format!("{flag} `{spec}`: `{part}` is not KEY=VALUE"));
        };
        if m.insert(k.trim().to_string(), v.trim().to_string())
            .is_some()
        {
            return Err(format!("{flag} `{spec}`: `{k}` is given twice"));
        }
    }
    Ok(m)
}

fn location(
    flag: &str,
    spec: &str,
    m: &mut BTreeMap<String, String>,
    dir_key: &str,
) -> Result<CacheLocation, String> {
    let bad = |why: String| format!("{flag} `{spec}`: {why}");
    let ty = m
        .remove("type")
        .ok_or_else(|| bad("no `type=` (registry or local)".into()))?;
    match ty.as_str() {
        "registry" => {
            let r = m
                .remove("ref")
                .ok_or_else(|| bad("`type=registry` needs `ref=REPO[:TAG]`".into()))?;
            Reference::parse(&r)
                .map(CacheLocation::Registry)
                .map_err(|e| bad(format!("`ref={r}`: {e}")))
        }
        "local" => {
            let d = m
                .remove(dir_key)
                .filter(|d| !d.is_empty())
                .ok_or_else(|| bad(format!("`type=local` needs `{dir_key}=DIR`")))?;
            Ok(CacheLocation::Local(PathBuf::from(d)))
        }
        other => Err(bad(format!(
            "the `{other}` cache type is not supported; kiln has `registry` and `local`"
        ))),
    }
}

fn no_more(flag: &str, spec: &str, m: &BTreeMap<String, String>) -> Result<(), String> {
    match m.keys().next() {
        Some(k) => Err(format!("{flag} `{spec}`: unknown field `{k}`")),
        None => Ok(()),
    }
}

fn boolean(flag: &str, spec: &str, v: Option<String>) -> Result<bool, String> {
    match v.as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(o) => Err(format!("{flag} `{spec}`: `{o}` is not `true` or `false`")),
    }
}

/// Parses one `--cache-from`.
pub fn parse_cache_from(spec: &str) -> Result<CacheLocation, String> {
    let flag = "--cache-from";
    let mut m = fields(flag, spec)?;
    let loc = location(flag, spec, &mut m, "src")?;
    // Reading a cache never fails a build: accepted for buildx's sake.
    boolean(flag, spec, m.remove("ignore-error"))?;
    no_more(flag, spec, &m)?;
    Ok(loc)
}

/// Parses one `--cache-to`.
pub fn parse_cache_to(spec: &str) -> Result<CacheTo, String> {
    let flag = "--cache-to";
    let mut m = fields(flag, spec)?;
    let location = location(flag, spec, &mut m, "dest")?;
    let mode = match m.remove("mode").as_deref() {
        None | Some("min") => CacheMode::Min,
        Some("max") => CacheMode::Max,
        Some(o) => return Err(format!("{flag} `{spec}`: `mode={o}`: expected min or max")),
    };
    let compression = match m.remove("compression") {
        None => None,
        Some(c) if c == "gzip" || c == "zstd" => Some(c),
        Some(c) => {
            return Err(format!(
                "{flag} `{spec}`: `compression={c}`: expected gzip or zstd"
            ))
        }
    };
    let ignore_error = boolean(flag, spec, m.remove("ignore-error"))?;
    no_more(flag, spec, &m)?;
    Ok(CacheTo {
        export: CacheExport {
            location,
            mode,
            ignore_error,
        },
        compression,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(s: &str) -> CacheLocation {
        CacheLocation::Registry(Reference::parse(s).unwrap())
    }

    #[test]
    fn cache_from_takes_buildx_forms() {
        assert_eq!(
            parse_cache_from("localhost:5000/app:cache").unwrap(),
            reg("localhost:5000/app:cache")
        );
        assert_eq!(
            parse_cache_from("type=registry,ref=localhost:5000/app:cache").unwrap(),
            reg("localhost:5000/app:cache")
        );
        assert_eq!(
            parse_cache_from("type=local,src=/tmp/c").unwrap(),
            CacheLocation::Local("/tmp/c".into())
        );
        for bad in [
            "type=local,dest=/tmp/c",
            "type=gha",
            "ref=x",
            "type=registry",
            "type=registry,ref=Bad Ref",
            "type=registry,ref=a,mode=max",
            "type=registry,ref=a,ref=b",
        ] {
            assert!(parse_cache_from(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cache_to_takes_buildx_forms() {
        let t = parse_cache_to(
            "type=registry,ref=localhost:5000/app:cache,mode=max,compression=zstd,ignore-error=true",
        )
        .unwrap();
        assert_eq!(t.export.location, reg("localhost:5000/app:cache"));
        assert_eq!(t.export.mode, CacheMode::Max);
        assert!(t.export.ignore_error);
        assert_eq!(t.compression.as_deref(), Some("zstd"));
        let t = parse_cache_to("type=local,dest=/tmp/c").unwrap();
        assert_eq!(t.export.location, CacheLocation::Local("/tmp/c".into()));
        assert_eq!(t.export.mode, CacheMode::Min);
        assert!(!t.export.ignore_error);
        assert_eq!(
            parse_cache_to("localhost:5000/c").unwrap().export.location,
            reg("localhost:5000/c")
        );
        for bad in [
            "type=local,src=/tmp/c",
            "type=registry,ref=a,mode=all",
            "type=registry,ref=a,compression=xz",
            "type=registry,ref=a,ignore-error=yes",
            "type=registry,ref=a,oops=1",
            "type=inline",
        ] {
            assert!(parse_cache_to(bad).is_err(), "{bad}");
        }
    }
}
