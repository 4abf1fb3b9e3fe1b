//! Debian's package database: `var/lib/dpkg/status` (paragraphs of `Field: value` lines, as
//! `dpkg-query` reads them) and distroless's `var/lib/dpkg/status.d/NAME` (one paragraph per
//! file, no `Status` field). Only installed packages count (`Status: install ok installed`, as
//! `dpkg-query -W` lists them; syft's `pkg/cataloger/debian/parse_dpkg_db.go` does the same).
use super::{Ecosystem, Found};

/// One paragraph's fields (first line of each; continuation lines are skipped).
fn paragraphs(text: &str) -> Vec<Vec<(&str, &str)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim(), v.trim()));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The installed packages of a status file. A paragraph without `Package` or `Version` is an
/// error (the database is damaged), naming its position.
pub fn parse(bytes: &[u8], status_d: bool) -> Result<Vec<Found>, String> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    for (i, p) in paragraphs(&text).into_iter().enumerate() {
        let get = |k: &str| {
            p.iter()
                .find(|(f, _)| f.eq_ignore_ascii_case(k))
                .map(|(_, v)| *v)
        };
        let installed = match get("Status") {
            Some(s) => s.split_whitespace().nth(2) == Some("installed"),
            None => status_d,
        };
        if !installed {
            continue;
        }
        let (Some(name), Some(version)) = (get("Package"), get("Version")) else {
            return Err(format!(
                "paragraph {} has no Package or no Version field",
                i + 1
            ));
        };
        if name.is_empty() || version.is_empty() {
            return Err(format!(
                "paragraph {} has an empty Package or Version",
                i + 1
            ));
        }
        let source = get("Source")
            .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
            .filter(|s| !s.is_empty() && s != name);
        out.push(Found {
            ecosystem: Ecosystem::Deb,
            name: name.to_string(),
            version: version.to_string(),
            arch: get("Architecture").map(str::to_string),
            license: None,
            source,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_packages_only_with_arch_and_source() {
        let text = b"Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nSource: glibc\nVersion: 2.36-9\nDescription: x\n more\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: perl\nStatus: install ok installed\nVersion: 1:5.36\n";
        let p = parse(text, false).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].name.as_str(), p[0].version.as_str()),
            ("libc6", "2.36-9")
        );
        assert_eq!(p[0].arch.as_deref(), Some("amd64"));
        assert_eq!(p[0].source.as_deref(), Some("glibc"));
        assert_eq!(p[1].version, "1:5.36");
    }

    #[test]
    fn a_distroless_status_d_file_is_one_package_and_damage_is_an_error() {
        let p = parse(
            b"Package: tzdata\nVersion: 2024a\nArchitecture: all\n",
            true,
        )
        .unwrap();
        assert_eq!(p[0].name, "tzdata");
        assert!(parse(b"Status: install ok installed\nPackage: x\n", false)
            .unwrap_err()
            .contains("paragraph 1"));
        // Binary junk is not a panic.
        let _ = parse(&[0xff, 0xfe, b':', b'\n', 0, 0], false);
    }
}
