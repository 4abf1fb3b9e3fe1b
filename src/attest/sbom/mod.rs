//! The software bill of materials of an image: which packages its layers install.
//!
//! Scanners read the files package managers keep (Debian's dpkg database and distroless's
//! `status.d`, Alpine's apk database, Python's `*.dist-info`/`*.egg-info`, npm's
//! `node_modules/**/package.json`) and the build information compilers embed in binaries (Go's
//! build info, `cargo auditable`'s `.dep-v0`). Each layer is read once ([`layer::scan`]); its
//! findings are cached in the store by diff_id and [`SCANNER_VERSION`] ([`cache`]), so a
//! rebuild reads only its new layers. [`merge`] applies the layers in order as the root
//! filesystem would have them: a file a later layer rewrites replaces the earlier one (a
//! package keeps the layer that first installed it at that version), a whiteout removes what
//! it names. Input is hostile: every read is capped, and what does not parse is a warning
//! naming the layer and the path, never a failed scan.
pub mod apk;
pub mod binary;
pub mod cache;
pub mod dpkg;
pub mod layer;
pub mod npm;
pub mod purl;
pub mod python;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::image::Image;
use crate::oci::Digest;
use crate::transport::LayerSource;

pub use layer::LayerFindings;

/// The version of the scanners: part of every cache entry's key, bumped when a scanner
/// changes what it finds.
pub const SCANNER_VERSION: u32 = 1;

/// Which package manager (or compiler) a package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    /// Debian's dpkg.
    Deb,
    /// Alpine's apk.
    Apk,
    /// Python distributions.
    Python,
    /// npm packages.
    Npm,
    /// Go modules compiled into a binary.
    Golang,
    /// Rust crates compiled into a binary (`cargo auditable`).
    Cargo,
}

impl Ecosystem {
    /// Its name in ids and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Ecosystem::Deb => "deb",
            Ecosystem::Apk => "apk",
            Ecosystem::Python => "python",
            Ecosystem::Npm => "npm",
            Ecosystem::Golang => "golang",
            Ecosystem::Cargo => "cargo",
        }
    }
}

/// A package as a scanner found it in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// Its ecosystem.
    pub ecosystem: Ecosystem,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its architecture (deb, apk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// The licence its metadata declares, as written there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// The source package (deb `Source`, apk `o`), when it differs from the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A package of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    /// What was found.
    #[serde(flatten)]
    pub found: Found,
    /// Its package URL.
    pub purl: String,
    /// The file it was found in, absolute (`/var/lib/dpkg/status`).
    pub path: String,
    /// The diff_id of the layer that installed it.
    pub layer: Digest,
}

/// The distribution an image says it is (`/etc/os-release`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Distro {
    /// `ID` (`debian`, `alpine`, `ubuntu`).
    pub id: String,
    /// `VERSION_ID` (`12`, `3.19.1`).
    pub version_id: String,
}

impl Distro {
    /// Parses os-release's `KEY=value` lines (values optionally quoted).
    pub fn parse(text: &str) -> Option<Distro> {
        let mut d = Distro::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
            match k.trim() {
                "ID" => d.id = v,
                "VERSION_ID" => d.version_id = v,
                _ => {}
            }
        }
        (!d.id.is_empty()).then_some(d)
    }
}

/// An image's packages, and what could not be read.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// The packages, sorted by ecosystem, name, version and path.
    pub packages: Vec<Package>,
    /// Warnings naming the layer and the path.
    pub warnings: Vec<String>,
    /// The distribution, when the image says.
    pub distro: Option<Distro>,
    /// Layers read for this scan.
    pub layers_scanned: usize,
    /// Layers answered by the cache.
    pub layers_cached: usize,
}

/// Errors of a scan: a layer that cannot be read at all (a broken store, a failed lazy
/// download); bad content inside a readable layer is a warning instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening the layer.
    #[error("cannot open layer `{diff_id}`")]
    Open {
        /// The layer.
        diff_id: Digest,
        /// Why.
        #[source]
        source: Box<crate::transport::Error>,
    },
    /// Reading its tar stream.
    #[error("cannot read layer `{diff_id}` as a tar stream")]
    Read {
        /// The layer.
        diff_id: Digest,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The purl of `f` given the image's distribution.
pub fn purl_of(f: &Found, distro: Option<&Distro>) -> String {
    let distro_q = distro
        .map(|d| {
            if d.version_id.is_empty() {
                d.id.clone()
            } else {
                format!("{}-{}", d.id, d.version_id)
            }
        })
        .unwrap_or_default();
    let arch = f.arch.as_deref().unwrap_or("");
    let upstream = f.source.as_deref().unwrap_or("");
    match f.ecosystem {
        Ecosystem::Deb => {
            let ns = distro.map_or("debian", |d| d.id.as_str());
            purl::purl(
                "deb",
                &[ns],
                &f.name,
                &f.version,
                &[
                    ("arch", arch),
                    ("distro", &distro_q),
                    ("upstream", upstream),
                ],
            )
        }
        Ecosystem::Apk => {
            let ns = distro.map_or("alpine", |d| d.id.as_str());
            purl::purl(
                "apk",
                &[ns],
                &f.name,
                &f.version,
                &[
                    ("arch", arch),
                    ("distro", &distro_q),
                    ("upstream", upstream),
                ],
            )
        }
        // The purl spec's pypi names are lower case with `_` as `-`.
        Ecosystem::Python => purl::purl(
            "pypi",
            &[],
            &f.name.to_ascii_lowercase().replace('_', "-"),
            &f.version,
            &[],
        ),
        Ecosystem::Npm => match f.name.split_once('/') {
            Some((scope, name)) if scope.starts_with('@') => {
                purl::purl("npm", &[scope], name, &f.version, &[])
            }
            _ => purl::purl("npm", &[], &f.name, &f.version, &[]),
        },
        Ecosystem::Golang => {
            let parts: Vec<&str> = f.name.split('/').collect();
            let (name, ns) = parts.split_last().unwrap_or((&"", &[]));
            purl::purl("golang", ns, name, &f.version, &[])
        }
        Ecosystem::Cargo => purl::purl("cargo", &[], &f.name, &f.version, &[]),
    }
}

/// Applies the layers' findings in order (base first), as the root filesystem has them.
pub fn merge(layers: &[(Digest, LayerFindings)]) -> Scan {
    // path → (package, layer it was first installed in at this version)
    let mut files: BTreeMap<String, Vec<(Found, Digest)>> = BTreeMap::new();
    let mut os_release: BTreeMap<String, String> = BTreeMap::new();
    let mut warnings = Vec::new();
    let under =
        |p: &str, dir: &str| dir.is_empty() || p == dir || p.starts_with(&format!("{dir}/"));
    for (diff_id, f) in layers {
        for dir in &f.opaque {
            files.retain(|p, _| !(p.starts_with(&format!("{dir}/")) || dir.is_empty()));
            os_release.retain(|p, _| !(p.starts_with(&format!("{dir}/")) || dir.is_empty()));
        }
        for gone in &f.removed {
            files.retain(|p, _| !under(p, gone));
            os_release.retain(|p, _| !under(p, gone));
        }
        for (path, found) in &f.files {
            let before = files.remove(path).unwrap_or_default();
            let now = found
                .iter()
                .map(|p| {
                    let layer = before
                        .iter()
                        .find(|(q, _)| {
                            q.name == p.name && q.version == p.version && q.ecosystem == p.ecosystem
                        })
                        .map_or_else(|| diff_id.clone(), |(_, l)| l.clone());
                    (p.clone(), layer)
                })
                .collect();
            files.insert(path.clone(), now);
        }
        os_release.extend(f.os_release.clone());
        warnings.extend(f.warnings.iter().map(|w| format!("layer {diff_id}: {w}")));
    }
    let distro = os_release
        .get("etc/os-release")
        .or_else(|| os_release.get("usr/lib/os-release"))
        .and_then(|t| Distro::parse(t));
    let mut packages: Vec<Package> = files
        .into_iter()
        .flat_map(|(path, found)| {
            let distro = distro.clone();
            found.into_iter().map(move |(f, layer)| Package {
                purl: purl_of(&f, distro.as_ref()),
                path: format!("/{path}"),
                layer,
                found: f,
            })
        })
        .collect();
    packages.sort_by(|a, b| {
        (a.found.ecosystem, &a.found.name, &a.found.version, &a.path).cmp(&(
            b.found.ecosystem,
            &b.found.name,
            &b.found.version,
            &b.path,
        ))
    });
    Scan {
        packages,
        warnings,
        distro,
        layers_scanned: 0,
        layers_cached: 0,
    }
}

/// Scans `image`'s layers (each from the cache when it has it) and merges them.
pub fn scan_image(layers: LayerSource<'_>, image: &Image) -> Result<Scan, Error> {
    let store = layers.store();
    let mut found = Vec::new();
    let (mut scanned, mut cached) = (0, 0);
    for (desc, diff_id) in image.layers().iter().zip(image.diff_ids()) {
        if let Some(f) = cache::get(store, diff_id) {
            cached += 1;
            found.push((diff_id.clone(), f));
            continue;
        }
        let mut r = layers.open_layer(desc).map_err(|e| Error::Open {
            diff_id: diff_id.clone(),
            source: Box::new(e),
        })?;
        let (mut f, actual) = layer::scan(&mut r).map_err(|source| Error::Read {
            diff_id: diff_id.clone(),
            source,
        })?;
        scanned += 1;
        if &actual == diff_id {
            cache::put(store, diff_id, &f);
        } else {
            f.warnings.push(format!(
                "the layer's content has diff_id {actual}, not the {diff_id} the config names: \
                 its findings are not cached"
            ));
        }
        found.push((diff_id.clone(), f));
    }
    let mut s = merge(&found);
    s.layers_scanned = scanned;
    s.layers_cached = cached;
    Ok(s)
}
