//! Alpine's package database `lib/apk/db/installed`: one `K:value` line per field, packages
//! separated by blank lines (apk-tools `src/database.c`; syft's
//! `pkg/cataloger/alpine/parse_apk_db.go`). `P` name, `V` version, `A` arch, `L` licence,
//! `o` origin.
use super::{Ecosystem, Found};

/// The packages of an `installed` file; one without `P` or `V` is an error naming its position.
pub fn parse(bytes: &[u8]) -> Result<Vec<Found>, String> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let mut cur: Vec<(char, &str)> = Vec::new();
    let mut n = 0;
    let mut flush = |cur: &mut Vec<(char, &str)>| -> Result<(), String> {
        if cur.is_empty() {
            return Ok(());
        }
        n += 1;
        let get = |k: char| cur.iter().find(|(f, _)| *f == k).map(|(_, v)| *v);
        let (Some(name), Some(version)) = (get('P'), get('V')) else {
            return Err(format!("package {n} has no P: or no V: line"));
        };
        out.push(Found {
            ecosystem: Ecosystem::Apk,
            name: name.to_string(),
            version: version.to_string(),
            arch: get('A').map(str::to_string),
            license: get('L').map(str::to_string).filter(|l| !l.is_empty()),
            source: get('o').filter(|o| *o != name).map(str::to_string),
        });
        cur.clear();
        Ok(())
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut cur)?;
            continue;
        }
        let mut chars = line.chars();
        if let (Some(k), Some(':')) = (chars.next(), chars.next()) {
            cur.push((k, &line[k.len_utf8() + 1..]));
        }
    }
    flush(&mut cur)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_with_licence() {
        let p = parse(b"C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\no:musl\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\nL:GPL-2.0-only\n").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].name.as_str(), p[0].version.as_str()),
            ("musl", "1.2.4-r2")
        );
        assert_eq!(p[1].license.as_deref(), Some("GPL-2.0-only"));
        assert!(parse(b"P:x\n\n").unwrap_err().contains("package 1"));
    }
}
