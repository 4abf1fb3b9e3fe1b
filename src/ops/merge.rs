//! `kiln bake --merge FILE...`: the digests files of several runners (each from
//! `kiln bake TARGET --platform P --push-by-digest`, as `kiln bake --matrix` prints) joined
//! into the tagged manifests and indexes and one digests file, as one `kiln bake --push` on one
//! machine would have made them. The images are read from the registry by digest (manifest and
//! config only: their layers are already there), the index is built from the plan's
//! annotations in the plan's platform order, and every tag is pushed as `kiln bake --push` does.
//! buildx's equivalent is `docker buildx imagetools create` over `push-by-digest=true` outputs
//! (docs.docker.com, "Distribute build across multiple runners").
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::bake::PushFailure;
use super::bake::{push_image, push_index, store_index, BakeError, BakedTarget, PlatformImage};
use crate::bake::BakePlan;
use crate::image::Image;
use crate::progress::Reporter;
use crate::store::Store;
use crate::transport::{self, Target};

/// What `kiln bake --merge` needs.
#[derive(Debug, Clone)]
pub struct MergeOptions {
    /// The plan (the same `kiln.toml`, `--set`s and epoch the runners used).
    pub plan: BakePlan,
    /// The runners' digests files.
    pub files: Vec<PathBuf>,
    /// The registry client.
    pub remote: transport::Remote,
}

/// The joined digests file: the shape of `kiln bake --metadata-file`'s.
#[derive(Debug, Clone, Serialize)]
pub struct MergeResult {
    /// The release version.
    pub version: String,
    /// The git revision.
    pub revision: Option<String>,
    /// `org.opencontainers.image.created`.
    pub created: String,
    /// Target name → result.
    pub targets: BTreeMap<String, BakedTarget>,
    /// The runners' lint findings, each once.
    pub lints: Vec<serde_json::Value>,
}

/// Why a merge failed.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A digests file cannot be read.
    #[error("cannot read `{}`", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A digests file is not one `kiln bake --metadata-file` wrote.
    #[error("`{}`: not a kiln bake digests file: {reason}", file.display())]
    Format {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file was made from another version, revision or epoch than this plan.
    #[error("`{}`: `{field}` is `{found}` but this plan says `{expected}` (merge with the kiln.toml, revision, --set and SOURCE_DATE_EPOCH the runners used)", file.display())]
    Mismatch {
        /// The file.
        file: PathBuf,
        /// `version`, `revision` or `created`.
        field: String,
        /// What the file says.
        found: String,
        /// What the plan says.
        expected: String,
    },
    /// No file has this target's image for this platform.
    #[error("target `{target}` ({platform}): in none of the digests files")]
    Missing {
        /// The target.
        target: String,
        /// The platform.
        platform: String,
    },
    /// A target the plan does not have, or a platform the target is not built for.
    #[error("`{}`: target `{target}` ({platform}) is not in this plan", file.display())]
    Unknown {
        /// The file.
        file: PathBuf,
        /// The target.
        target: String,
        /// The platform.
        platform: String,
    },
    /// Two files disagree.
    #[error("target `{target}` ({platform}): the digests files disagree: {detail}")]
    Conflict {
        /// The target.
        target: String,
        /// The platform.
        platform: String,
        /// Which file says which digest.
        detail: String,
    },
    /// An image cannot be read from the registry.
    #[error("target `{target}`: cannot read `{reference}`")]
    Image {
        /// The target.
        target: String,
        /// The reference.
        reference: String,
        /// The cause.
        #[source]
        source: Box<transport::Error>,
    },
    /// The image read is not the platform the file says.
    #[error("`{reference}` is {found}, but the digests file says {expected}")]
    Platform {
        /// The reference.
        reference: String,
        /// Its platform.
        found: String,
        /// The file's.
        expected: String,
    },
    /// Pushing or storing failed.
    #[error(transparent)]
    Bake(#[from] BakeError),
}

/// The largest digests file `--merge` reads (one entry per target and platform: a few hundred
/// bytes each).
const MAX_DIGESTS_FILE_SIZE: u64 = 16 * 1024 * 1024;

/// Reads a runner's digests file (an artifact of another job): whole, but never more than a
/// digests file can need.
fn read_digests_file(file: &Path) -> Result<Vec<u8>, MergeError> {
    std::fs::File::open(file)
        .and_then(|mut f| {
            crate::oci::limits::read_capped(&mut f, MAX_DIGESTS_FILE_SIZE, "the digests file")
        })
        .map_err(|source| MergeError::Read {
            file: file.to_path_buf(),
            source,
        })
}

type Found = BTreeMap<(String, String), (PathBuf, PlatformImage)>;

/// Reads every file: `(target, platform)` → the image, and the lints.
fn read_files(opts: &MergeOptions) -> Result<(Found, Vec<serde_json::Value>), MergeError> {
    let mut found: Found = BTreeMap::new();
    let mut lints = Vec::new();
    for file in &opts.files {
        let bytes = read_digests_file(file)?;
        let bad = |reason: String| MergeError::Format {
            file: file.clone(),
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let plan = &opts.plan;
        for (field, expected) in [
            ("version", Some(plan.version.clone())),
            ("revision", plan.git.sha.clone()),
            ("created", Some(plan.created.clone())),
        ] {
            let found = v[field].as_str().map(str::to_string);
            if found != expected {
                return Err(MergeError::Mismatch {
                    file: file.clone(),
                    field: field.into(),
                    found: found.unwrap_or_else(|| "(none)".into()),
                    expected: expected.unwrap_or_else(|| "(none)".into()),
                });
            }
        }
        let targets = v["targets"]
            .as_object()
            .ok_or_else(|| bad("no `targets` object".into()))?;
        for (name, t) in targets {
            let images: Vec<PlatformImage> = serde_json::from_value(t["images"].clone())
                .map_err(|e| bad(format!("targets.{name}.images: {e}")))?;
            for img in images {
                let key = (name.clone(), img.platform.clone());
                let known = plan
                    .targets
                    .iter()
                    .any(|p| &p.name == name && p.platforms.contains(&img.platform));
                if !known {
                    return Err(MergeError::Unknown {
                        file: file.clone(),
                        target: name.clone(),
                        platform: img.platform,
                    });
                }
                if let Some((f, first)) = found.get(&key) {
                    if first.digest != img.digest {
                        return Err(MergeError::Conflict {
                            target: name.clone(),
                            platform: img.platform.clone(),
                            detail: format!(
                                "`{}` says {}, `{}` says {}",
                                f.display(),
                                first.digest,
                                file.display(),
                                img.digest
                            ),
                        });
                    }
                    continue;
                }
                found.insert(key, (file.clone(), img));
            }
        }
        for l in v["lints"].as_array().into_iter().flatten() {
            if !lints.contains(l) {
                lints.push(l.clone());
            }
        }
    }
    Ok((found, lints))
}

/// Runs the merge.
pub fn merge(
    store: &Store,
    opts: &MergeOptions,
    reporter: &dyn Reporter,
) -> Result<MergeResult, MergeError> {
    let (mut found, lints) = read_files(opts)?;
    // Every image of every target is checked present before anything is pushed.
    for t in &opts.plan.targets {
        for p in &t.platforms {
            if !found.contains_key(&(t.name.clone(), p.clone())) {
                return Err(MergeError::Missing {
                    target: t.name.clone(),
                    platform: p.clone(),
                });
            }
        }
    }
    let mut targets = BTreeMap::new();
    for t in &opts.plan.targets {
        reporter.on_status(&format!("merge: target `{}`", t.name));
        let mut images: Vec<Image> = Vec::new();
        let mut records = Vec::new();
        for p in &t.platforms {
            let (_, rec) = found
                .remove(&(t.name.clone(), p.clone()))
                .expect("checked above");
            let reference = format!("{}@{}", t.repository, rec.digest);
            let img = transport::read_base_into_store(
                store,
                &Target::Registry(reference.clone()),
                None,
                Some(&opts.remote),
            )
            .map_err(|source| MergeError::Image {
                target: t.name.clone(),
                reference: reference.clone(),
                source: Box::new(source),
            })?;
            let plat = img.platform().to_string();
            if plat != rec.platform {
                return Err(MergeError::Platform {
                    reference,
                    found: plat,
                    expected: rec.platform,
                });
            }
            images.push(img);
            records.push(rec);
        }
        let baked = tag_and_push(store, opts, t, &images, records)?;
        targets.insert(t.name.clone(), baked);
    }
    Ok(MergeResult {
        version: opts.plan.version.clone(),
        revision: opts.plan.git.sha.clone(),
        created: opts.plan.created.clone(),
        targets,
        lints,
    })
}

/// The index (several platforms) or the image, under every tag, in the store and the registry.
fn tag_and_push(
    store: &Store,
    opts: &MergeOptions,
    t: &crate::bake::PlannedTarget,
    images: &[Image],
    records: Vec<PlatformImage>,
) -> Result<BakedTarget, MergeError> {
    let write = |dest: String, f: PushFailure| match f {
        PushFailure::Transport(source) => BakeError::Write {
            target: t.name.clone(),
            dest,
            source,
        },
        PushFailure::Registry(source) => BakeError::Registry {
            target: t.name.clone(),
            reference: dest,
            source,
        },
    };
    let (top, index_bytes) = if images.len() > 1 {
        let (d, bytes) = store_index(store, images, &t.annotations).map_err(BakeError::from)?;
        (d, Some(bytes))
    } else {
        (images[0].descriptor.clone(), None)
    };
    let mut pushed = Vec::new();
    let mut up_to_date = Vec::new();
    for tag in &t.tags {
        store.tag(tag, &top).map_err(BakeError::from)?;
        let uploaded = match &index_bytes {
            Some(bytes) => push_index(store, &opts.remote, images, &top, bytes, tag)
                .map_err(|(dest, f)| write(dest, f))?,
            None => push_image(&opts.remote, store, &images[0], tag).map_err(|source| {
                BakeError::Write {
                    target: t.name.clone(),
                    dest: format!("docker://{tag}"),
                    source: Box::new(source),
                }
            })?,
        };
        if !uploaded {
            up_to_date.push(tag.clone());
        }
        pushed.push(tag.clone());
    }
    Ok(BakedTarget {
        digest: top.digest.clone(),
        media_type: top.media_type.to_string(),
        tags: t.tags.clone(),
        platforms: t.platforms.clone(),
        size: records.iter().map(|r| r.size).sum(),
        cached: records.iter().all(|r| r.steps.iter().all(|s| s.cached)),
        pushed,
        up_to_date,
        images: records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digests_file_over_the_cap_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("digests.json");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_DIGESTS_FILE_SIZE + 1).unwrap();
        let err = read_digests_file(&big).unwrap_err();
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(text.contains("digests.json"), "{text}");
        assert!(text.contains("limit"), "{text}");
        let ok = dir.path().join("ok.json");
        std::fs::write(&ok, b"{}").unwrap();
        assert_eq!(read_digests_file(&ok).unwrap(), b"{}");
    }
}
