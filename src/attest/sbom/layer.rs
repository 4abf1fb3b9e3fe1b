//! One layer's findings: its tar read once, each file a scanner knows by its path (or, for
//! binaries, by an executable ELF header) read whole under a size cap, whiteouts recorded; the
//! findings are what [`super::merge`] applies in layer order. Nothing is written to disk and
//! paths are only compared as strings, so a hostile member name cannot escape anything; a
//! member over its cap, or whose metadata does not parse, is a warning naming the path.
use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::{apk, binary, dpkg, npm, python, Found};
use crate::oci::Digest;

/// The largest package database (dpkg `status`, apk `installed`) read.
pub const MAX_DB: u64 = 64 * 1024 * 1024;
/// The largest Python metadata file, `package.json` or `os-release` read.
pub const MAX_METADATA: u64 = 4 * 1024 * 1024;
/// The largest binary read for embedded build information.
pub const MAX_BINARY: u64 = 256 * 1024 * 1024;

/// What one layer holds for the SBOM (cached by diff_id, see [`super::cache`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerFindings {
    /// Each file a scanner read: its clean path and the packages in it (empty when it held
    /// none or did not parse: it still hides a lower layer's file at that path).
    pub files: BTreeMap<String, Vec<Found>>,
    /// Paths this layer deletes (`.wh.NAME`).
    pub removed: Vec<String>,
    /// Directories this layer makes opaque (`.wh..wh..opq`).
    pub opaque: Vec<String>,
    /// `etc/os-release` and `usr/lib/os-release`, when this layer writes them.
    pub os_release: BTreeMap<String, String>,
    /// Warnings: `path: reason`.
    pub warnings: Vec<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Dpkg,
    DpkgD,
    Apk,
    Python,
    Npm,
    OsRelease,
    Binary,
}

/// Which scanner reads `path` (clean, relative), given its mode.
fn kind(path: &str, mode: u32) -> Option<Kind> {
    if path == "var/lib/dpkg/status" {
        return Some(Kind::Dpkg);
    }
    if let Some(rest) = path.strip_prefix("var/lib/dpkg/status.d/") {
        return (!rest.contains('/') && !rest.ends_with(".md5sums")).then_some(Kind::DpkgD);
    }
    if path == "lib/apk/db/installed" {
        return Some(Kind::Apk);
    }
    if path == "etc/os-release" || path == "usr/lib/os-release" {
        return Some(Kind::OsRelease);
    }
    if python::is_metadata(path) {
        return Some(Kind::Python);
    }
    if npm::is_manifest(path) {
        return Some(Kind::Npm);
    }
    (mode & 0o111 != 0).then_some(Kind::Binary)
}

/// A member name as a clean relative path: `./` and `/` prefixes gone, `.` parts dropped;
/// `None` for a name with `..` or that is not UTF-8 (no scanner's path has either).
pub fn clean(raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?;
    let mut parts = Vec::new();
    for p in s.split('/') {
        match p {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

struct Hashing<R> {
    inner: R,
    hash: sha2::Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Scans the uncompressed tar `r`; returns the findings and the diff_id of what was read
/// (all of it), so a config that names another diff_id is caught before its findings are
/// cached under it.
pub fn scan(r: &mut dyn Read) -> std::io::Result<(LayerFindings, Digest)> {
    let mut hashing = Hashing {
        inner: r,
        hash: sha2::Sha256::new(),
    };
    let mut f = LayerFindings::default();
    {
        let mut ar = tar::Archive::new(&mut hashing);
        for entry in ar.entries()? {
            let mut e = entry?;
            let Some(path) = clean(&e.path_bytes()) else {
                continue;
            };
            let (dir, base) = match path.rsplit_once('/') {
                Some((d, b)) => (d, b),
                None => ("", path.as_str()),
            };
            if base == crate::layer::OPAQUE_WHITEOUT {
                f.opaque.push(dir.to_string());
                continue;
            }
            if let Some(name) = base.strip_prefix(crate::layer::WHITEOUT_PREFIX) {
                f.removed.push(if dir.is_empty() {
                    name.to_string()
                } else {
                    format!("{dir}/{name}")
                });
                continue;
            }
            let et = e.header().entry_type();
            if et.is_hard_link() {
                // A hard link to a file this layer already read carries its findings.
                let target = e.link_name_bytes().and_then(|t| clean(&t));
                if let Some(found) = target.and_then(|t| f.files.get(&t).cloned()) {
                    f.files.insert(path, found);
                }
                continue;
            }
            if !et.is_file() {
                // A directory, symlink or device at a path hides nothing a scanner reads
                // (except a file replaced by one: that file is gone).
                f.files.remove(&path);
                continue;
            }
            let mode = e.header().mode().unwrap_or(0);
            let Some(k) = kind(&path, mode) else {
                continue;
            };
            let size = e.header().size().unwrap_or(0);
            read_member(&mut f, &mut e, &path, k, size)?;
        }
    }
    std::io::copy(&mut hashing, &mut std::io::sink())?;
    let diff_id = Digest::from_sha256_bytes(&hashing.hash.finalize());
    Ok((f, diff_id))
}

fn read_member(
    f: &mut LayerFindings,
    e: &mut dyn Read,
    path: &str,
    k: Kind,
    size: u64,
) -> std::io::Result<()> {
    let cap = match k {
        Kind::Dpkg | Kind::Apk => MAX_DB,
        Kind::Binary => MAX_BINARY,
        _ => MAX_METADATA,
    };
    if k == Kind::Binary {
        let mut head = [0u8; 4];
        if size < 64 || e.read_exact(&mut head).is_err() || !binary::is_elf(&head) {
            return Ok(());
        }
        if size > cap {
            f.warnings.push(format!(
                "/{path}: a {size}-byte binary, over the {cap}-byte limit: not read"
            ));
            f.files.insert(path.to_string(), Vec::new());
            return Ok(());
        }
        let mut bytes = head.to_vec();
        e.take(cap).read_to_end(&mut bytes)?;
        found(f, path, binary::parse(&bytes));
        return Ok(());
    }
    if size > cap {
        f.warnings.push(format!(
            "/{path}: {size} bytes, over the {cap}-byte limit on package metadata: not read"
        ));
        f.files.insert(path.to_string(), Vec::new());
        return Ok(());
    }
    let mut bytes = Vec::new();
    e.take(cap).read_to_end(&mut bytes)?;
    let parsed = match k {
        Kind::Dpkg => dpkg::parse(&bytes, false),
        Kind::DpkgD => dpkg::parse(&bytes, true),
        Kind::Apk => apk::parse(&bytes),
        Kind::Python => python::parse(&bytes),
        Kind::Npm => npm::parse(&bytes),
        Kind::OsRelease => {
            f.os_release.insert(
                path.to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            );
            return Ok(());
        }
        Kind::Binary => unreachable!("read above"),
    };
    found(f, path, parsed);
    Ok(())
}

fn found(f: &mut LayerFindings, path: &str, parsed: Result<Vec<Found>, String>) {
    match parsed {
        Ok(p) => {
            f.files.insert(path.to_string(), p);
        }
        Err(why) => {
            f.warnings.push(format!("/{path}: {why}"));
            f.files.insert(path.to_string(), Vec::new());
        }
    }
}
