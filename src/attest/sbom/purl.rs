//! Package URLs as the purl spec writes them (github.com/package-url/purl-spec,
//! `PURL-SPECIFICATION.rst`): `pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS`, each part
//! percent-encoded, qualifiers sorted by key, empty values dropped.

/// Percent-encodes everything but the unreserved characters (RFC 3986), as syft and
/// packageurl-go do for names, versions and qualifier values (`:` in a Debian epoch is `%3A`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A purl: `kind` (`deb`, `apk`, `pypi`, `npm`, `golang`, `cargo`, `docker`), the namespace
/// segments (each encoded on its own, `/` kept between them), the name, the version, and the
/// qualifiers (sorted, empty ones dropped).
pub fn purl(
    kind: &str,
    namespace: &[&str],
    name: &str,
    version: &str,
    q: &[(&str, &str)],
) -> String {
    let mut s = format!("pkg:{kind}/");
    for seg in namespace.iter().filter(|s| !s.is_empty()) {
        s.push_str(&encode(seg));
        s.push('/');
    }
    s.push_str(&encode(name));
    if !version.is_empty() {
        s.push('@');
        s.push_str(&encode(version));
    }
    let mut q: Vec<&(&str, &str)> = q.iter().filter(|(_, v)| !v.is_empty()).collect();
    q.sort();
    for (i, (k, v)) in q.iter().enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(k);
        s.push('=');
        s.push_str(&encode(v));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_encode_each_part_and_sort_qualifiers() {
        assert_eq!(
            purl(
                "deb",
                &["debian"],
                "libc6",
                "2.36-9+deb12u4",
                &[("distro", "debian-12"), ("arch", "amd64")]
            ),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12"
        );
        assert_eq!(
            purl("deb", &["debian"], "perl", "1:5.36", &[]),
            "pkg:deb/debian/perl@1%3A5.36"
        );
        assert_eq!(
            purl("npm", &["@babel"], "core", "7.0.0", &[]),
            "pkg:npm/%40babel/core@7.0.0"
        );
        assert_eq!(
            purl("golang", &["github.com", "x"], "y", "v1.0.0", &[]),
            "pkg:golang/github.com/x/y@v1.0.0"
        );
        assert_eq!(
            purl(
                "docker",
                &[],
                "debian",
                "bookworm",
                &[("platform", "linux/amd64")]
            ),
            "pkg:docker/debian@bookworm?platform=linux%2Famd64"
        );
    }
}
