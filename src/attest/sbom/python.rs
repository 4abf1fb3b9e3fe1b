//! Python distributions: `NAME.dist-info/METADATA` and `NAME.egg-info/PKG-INFO` (or an
//! `NAME.egg-info` file) under a `site-packages` or `dist-packages` directory, the files
//! `pip list` reads through `importlib.metadata`. The format is email headers (core metadata
//! spec, packaging.python.org); syft's `pkg/cataloger/python/parse_wheel_egg_metadata.go` reads
//! the same fields.
use super::{Ecosystem, Found};

/// Whether `path` (clean, relative) is a distribution's metadata file kiln reads.
pub fn is_metadata(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let n = parts.len();
    let in_site = |i: usize| i > 0 && matches!(parts[i - 1], "site-packages" | "dist-packages");
    match parts.last() {
        Some(&"METADATA") if n >= 3 => parts[n - 2].ends_with(".dist-info") && in_site(n - 2),
        Some(&"PKG-INFO") if n >= 3 => parts[n - 2].ends_with(".egg-info") && in_site(n - 2),
        Some(f) if f.ends_with(".egg-info") && n >= 2 => in_site(n - 1),
        _ => false,
    }
}

/// The distribution a metadata file describes; one without `Name` or `Version` is an error.
pub fn parse(bytes: &[u8]) -> Result<Vec<Found>, String> {
    let text = String::from_utf8_lossy(bytes);
    let mut fields: Vec<(&str, String)> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            break; // the body (the long description) starts here
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.1.push('\n');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim(), v.trim().to_string()));
        }
    }
    let get = |k: &str| {
        fields
            .iter()
            .find(|(f, _)| f.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let (Some(name), Some(version)) = (get("Name"), get("Version")) else {
        return Err("no Name or no Version header".into());
    };
    if name.is_empty() || version.is_empty() {
        return Err("an empty Name or Version header".into());
    }
    let single = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && !s.contains('\n') && s.len() <= 200 && s != "UNKNOWN")
            .then(|| s.to_string())
    };
    let license = get("License-Expression")
        .and_then(single)
        .or_else(|| get("License").and_then(single))
        .or_else(|| {
            let c: Vec<&str> = fields
                .iter()
                .filter(|(f, v)| {
                    f.eq_ignore_ascii_case("Classifier") && v.starts_with("License ::")
                })
                .filter_map(|(_, v)| v.rsplit("::").next().map(str::trim))
                .collect();
            (!c.is_empty()).then(|| c.join(" AND "))
        });
    Ok(vec![Found {
        ecosystem: Ecosystem::Python,
        name: name.to_string(),
        version: version.to_string(),
        arch: None,
        license,
        source: None,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_paths_are_those_pip_reads() {
        assert!(is_metadata(
            "usr/local/lib/python3.11/dist-packages/requests-2.31.0.dist-info/METADATA"
        ));
        assert!(is_metadata(
            "usr/lib/python3/dist-packages/six-1.16.0.egg-info/PKG-INFO"
        ));
        assert!(is_metadata(
            "usr/lib/python3/dist-packages/six-1.16.0.egg-info"
        ));
        assert!(!is_metadata("opt/x.dist-info/METADATA"));
        assert!(!is_metadata(
            "usr/lib/python3/dist-packages/a.dist-info/RECORD"
        ));
    }

    #[test]
    fn headers_until_the_body_with_licence() {
        let p = parse(b"Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nLicense: Apache 2.0\nClassifier: License :: OSI Approved :: Apache Software License\n\nName: not-this\n").unwrap();
        assert_eq!(
            (p[0].name.as_str(), p[0].version.as_str()),
            ("requests", "2.31.0")
        );
        assert_eq!(p[0].license.as_deref(), Some("Apache 2.0"));
        let p = parse(b"Name: x\nVersion: 1\nLicense-Expression: MIT\nLicense: long\n  text\n")
            .unwrap();
        assert_eq!(p[0].license.as_deref(), Some("MIT"));
        assert!(parse(b"Name: x\n\nVersion: 1\n").is_err());
    }
}
