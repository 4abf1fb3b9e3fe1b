//! npm packages: `node_modules/NAME/package.json` and `node_modules/@SCOPE/NAME/package.json`.
//! Other `package.json` files under `node_modules` (a package's `lib/package.json`, test
//! fixtures) are not packages, and one without `name` or `version` is skipped, as syft's
//! `pkg/cataloger/javascript/parse_package_json.go` does.
use super::{Ecosystem, Found};

/// Whether `path` is an installed package's manifest.
pub fn is_manifest(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let n = parts.len();
    if parts.last() != Some(&"package.json") || n < 3 {
        return false;
    }
    if parts[n - 3] == "node_modules" && !parts[n - 2].starts_with('@') {
        return true;
    }
    n >= 4 && parts[n - 4] == "node_modules" && parts[n - 3].starts_with('@')
}

/// The package a manifest names; invalid JSON is an error, a manifest without a name or
/// version is no package.
pub fn parse(bytes: &[u8]) -> Result<Vec<Found>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::trim);
    let (Some(name), Some(version)) = (s("name"), s("version")) else {
        return Ok(Vec::new());
    };
    if name.is_empty() || version.is_empty() {
        return Ok(Vec::new());
    }
    let typ = |x: &serde_json::Value| -> Option<String> {
        x.as_str()
            .or_else(|| x.get("type").and_then(|t| t.as_str()))
            .map(str::to_string)
    };
    let license = v.get("license").and_then(typ).or_else(|| {
        let l: Vec<String> = v
            .get("licenses")?
            .as_array()?
            .iter()
            .filter_map(typ)
            .collect();
        (!l.is_empty()).then(|| l.join(" OR "))
    });
    Ok(vec![Found {
        ecosystem: Ecosystem::Npm,
        name: name.to_string(),
        version: version.to_string(),
        arch: None,
        license: license.filter(|l| !l.is_empty()),
        source: None,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_dirs_only_and_licences() {
        assert!(is_manifest("app/node_modules/express/package.json"));
        assert!(is_manifest("usr/lib/node_modules/@babel/core/package.json"));
        assert!(!is_manifest("app/node_modules/express/lib/package.json"));
        assert!(!is_manifest("app/package.json"));
        let p =
            parse(br#"{"name":"@babel/core","version":"7.0.0","license":{"type":"MIT"}}"#).unwrap();
        assert_eq!(p[0].license.as_deref(), Some("MIT"));
        assert!(parse(br#"{"name":"x"}"#).unwrap().is_empty());
        assert!(parse(b"{nope").is_err());
        assert!(parse(br#"{"name":1,"version":[]}"#).unwrap().is_empty());
    }
}
