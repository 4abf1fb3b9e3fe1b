//! `kiln store fsck`: every blob's digest and size, and every reference from `index.json` down.
//!
//! A layer that is missing but has an origin record is *lazy* (pulled for a build without its
//! bytes, downloaded when something opens it): counted in [`FsckReport::lazy`], not a problem.
//! Manifests, indexes and configs are never lazy.
use std::collections::BTreeSet;
use std::io::Read;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::oci::{self, Descriptor, Digest, Index, Manifest};

use super::{io_err, read_index, Result, Store};

/// One problem found by fsck.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FsckProblem {
    /// A blob's content does not hash to its name.
    Corrupt {
        /// The blob's name.
        digest: String,
        /// What its content hashes to.
        actual: String,
    },
    /// A referenced blob is missing.
    Missing {
        /// The missing blob.
        digest: String,
        /// What refers to it.
        referenced_by: String,
    },
    /// A referenced blob has another size than its descriptor says.
    WrongSize {
        /// The blob.
        digest: String,
        /// The descriptor's size.
        expected: u64,
        /// The file's size.
        actual: u64,
    },
    /// A manifest, index or config could not be parsed.
    Unparseable {
        /// The blob.
        digest: String,
        /// The parser's message.
        error: String,
    },
    /// A file under `blobs/` whose name is not a digest.
    StrayFile {
        /// The path relative to the root.
        path: String,
    },
}

impl std::fmt::Display for FsckProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsckProblem::Corrupt { digest, actual } => {
                write!(
                    f,
                    "blob `{digest}` is corrupt: its content hashes to `{actual}`"
                )
            }
            FsckProblem::Missing {
                digest,
                referenced_by,
            } => {
                write!(
                    f,
                    "blob `{digest}` is missing (referenced by {referenced_by})"
                )
            }
            FsckProblem::WrongSize {
                digest,
                expected,
                actual,
            } => {
                write!(
                    f,
                    "blob `{digest}` has {actual} bytes, its descriptor says {expected}"
                )
            }
            FsckProblem::Unparseable { digest, error } => {
                write!(f, "blob `{digest}` cannot be parsed: {error}")
            }
            FsckProblem::StrayFile { path } => write!(f, "`{path}` is not named after a digest"),
        }
    }
}

/// What fsck checked and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FsckReport {
    /// Blobs whose content was hashed.
    pub blobs_checked: u64,
    /// Bytes hashed.
    pub bytes_checked: u64,
    /// Names in `index.json`.
    pub names: u64,
    /// Referenced layers not downloaded yet that have a recorded origin.
    pub lazy: u64,
    /// Problems, empty when the store is consistent.
    pub problems: Vec<FsckProblem>,
}

pub(super) fn fsck(store: &Store) -> Result<FsckReport> {
    let mut report = FsckReport::default();
    let dir = store.root().join("blobs/sha256");
    let mut present = BTreeSet::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(io_err("cannot read", &dir))?
        .filter_map(|e| e.ok())
        .collect();
    names.sort_by_key(|e| e.file_name());
    let mut buf = vec![0u8; 1 << 20];
    for entry in names {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(digest) = format!("sha256:{name}").parse::<Digest>() else {
            report.problems.push(FsckProblem::StrayFile {
                path: format!("blobs/sha256/{name}"),
            });
            continue;
        };
        let path = entry.path();
        let mut f = std::fs::File::open(&path).map_err(io_err("cannot read", &path))?;
        let mut h = Sha256::new();
        loop {
            let n = f.read(&mut buf).map_err(io_err("cannot read", &path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            report.bytes_checked += n as u64;
        }
        report.blobs_checked += 1;
        let actual = Digest::from_sha256_bytes(&h.finalize());
        if actual != digest {
            report.problems.push(FsckProblem::Corrupt {
                digest: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        present.insert(digest);
    }
    let index = read_index(store.root())?;
    report.names = index.manifests.len() as u64;
    let mut seen = BTreeSet::new();
    for d in &index.manifests {
        let by = match d.ref_name() {
            Some(n) => format!("name `{n}`"),
            None => "index.json".to_string(),
        };
        check(store, d, &by, false, &present, &mut seen, &mut report);
    }
    Ok(report)
}

fn check(
    store: &Store,
    d: &Descriptor,
    by: &str,
    layer: bool,
    present: &BTreeSet<Digest>,
    seen: &mut BTreeSet<Digest>,
    report: &mut FsckReport,
) {
    if !seen.insert(d.digest.clone()) {
        return;
    }
    if !present.contains(&d.digest) {
        // Foreign layers may legitimately live elsewhere; lazy layers are fetched on demand.
        if layer && !super::origins(store, &d.digest).is_empty() {
            report.lazy += 1;
        } else if !d.media_type.is_foreign_layer() {
            report.problems.push(FsckProblem::Missing {
                digest: d.digest.to_string(),
                referenced_by: by.to_string(),
            });
        }
        return;
    }
    let actual = std::fs::metadata(store.blob_path(&d.digest))
        .map(|m| m.len())
        .unwrap_or(0);
    if actual != d.size {
        report.problems.push(FsckProblem::WrongSize {
            digest: d.digest.to_string(),
            expected: d.size,
            actual,
        });
        return;
    }
    let by_me = format!("`{}`", d.digest);
    let unparseable = |e: &dyn std::fmt::Display| FsckProblem::Unparseable {
        digest: d.digest.to_string(),
        error: e.to_string(),
    };
    if d.media_type.is_manifest() || d.media_type.is_index() {
        let bytes = match store.read_blob(&d.digest) {
            Ok(b) => b,
            Err(e) => return report.problems.push(unparseable(&e)),
        };
        if d.media_type.is_index() {
            match oci::from_json::<Index>("index", &bytes) {
                Ok(i) => {
                    for m in &i.manifests {
                        check(store, m, &by_me, false, present, seen, report);
                    }
                }
                Err(e) => report.problems.push(unparseable(&e)),
            }
        } else {
            match oci::from_json::<Manifest>("manifest", &bytes) {
                Ok(m) => {
                    check(store, &m.config, &by_me, false, present, seen, report);
                    if let Ok(b) = store.read_blob(&m.config.digest) {
                        if let Err(e) = oci::from_json::<oci::ImageConfig>("image config", &b) {
                            report.problems.push(FsckProblem::Unparseable {
                                digest: m.config.digest.to_string(),
                                error: e.to_string(),
                            });
                        }
                    }
                    for l in &m.layers {
                        check(store, l, &by_me, true, present, seen, report);
                    }
                }
                Err(e) => report.problems.push(unparseable(&e)),
            }
        }
    }
}
