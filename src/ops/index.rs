//! `kiln index create`: merges images (store names or `docker://` references, one platform
//! each, e.g. built on different CI runners) into one OCI index, stored under a name and pushed
//! when the name is a `docker://` reference.
use serde::Serialize;

use crate::image::Image;
use crate::oci::Digest;
use crate::progress::Reporter;
use crate::store::Store;
use crate::transport::{self, Remote, Target};

/// What `index create` needs.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Where the index goes: a store name, or `docker://REF` (also kept in the store).
    pub dest: Target,
    /// The images, one per platform.
    pub images: Vec<Target>,
    /// The registry client.
    pub remote: Option<Remote>,
}

/// What `index create` made.
#[derive(Debug, Clone, Serialize)]
pub struct IndexResult {
    /// The index digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// `platform → manifest digest`.
    pub manifests: Vec<(String, Digest)>,
    /// Whether it was pushed.
    pub pushed: bool,
}

/// Why `index create` failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// An image cannot be read.
    #[error("cannot read the image `{source_ref}`")]
    Read {
        /// The image.
        source_ref: String,
        /// The cause.
        #[source]
        source: Box<transport::Error>,
    },
    /// Two images of the same platform.
    #[error("`{first}` and `{second}` are both {platform}: an index holds one image per platform")]
    Duplicate {
        /// The first image.
        first: String,
        /// The second.
        second: String,
        /// Their platform.
        platform: String,
    },
    /// No images.
    #[error("an index needs at least one image")]
    Empty,
    /// The destination is not a store name or registry reference.
    #[error("`{dest}`: an index goes to the store (NAME) or a registry (docker://REF)")]
    BadDest {
        /// The destination.
        dest: String,
    },
    /// Pushing failed.
    #[error("cannot push the index to `{dest}`: {message}")]
    Push {
        /// The destination.
        dest: String,
        /// Why.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// Creates the index.
pub fn create_index(
    store: &Store,
    opts: &IndexOptions,
    reporter: &dyn Reporter,
) -> Result<IndexResult, IndexError> {
    if opts.images.is_empty() {
        return Err(IndexError::Empty);
    }
    let mut images: Vec<(String, Image)> = Vec::new();
    for src in &opts.images {
        reporter.on_status(&format!("reading {src}"));
        let img = read_one(store, src, opts.remote.as_ref()).map_err(|e| IndexError::Read {
            source_ref: src.to_string(),
            source: Box::new(e),
        })?;
        let p = img.platform().to_string();
        if let Some((first, _)) = images.iter().find(|(_, i)| i.platform().to_string() == p) {
            return Err(IndexError::Duplicate {
                first: first.clone(),
                second: src.to_string(),
                platform: p,
            });
        }
        images.push((src.to_string(), img));
    }
    let imgs: Vec<Image> = images.iter().map(|(_, i)| i.clone()).collect();
    let (desc, bytes) = super::bake::store_index(store, &imgs, &Default::default())?;
    let mut pushed = false;
    match &opts.dest {
        Target::Store(n) => store.tag(n, &desc)?,
        Target::Registry(r) => {
            let remote = opts.remote.as_ref().ok_or_else(|| IndexError::Push {
                dest: r.clone(),
                message: "no registry client".into(),
            })?;
            super::bake::push_index(store, remote, &imgs, &desc, &bytes, r).map_err(
                |(dest, f)| IndexError::Push {
                    dest,
                    message: match f {
                        super::bake::PushFailure::Transport(e) => chain(&*e),
                        super::bake::PushFailure::Registry(e) => chain(&*e),
                    },
                },
            )?;
            pushed = true;
            if let Ok(Target::Store(n)) = r.parse::<Target>() {
                store.tag(&n, &desc)?;
            }
        }
        other => {
            return Err(IndexError::BadDest {
                dest: other.to_string(),
            })
        }
    }
    Ok(IndexResult {
        digest: desc.digest,
        size: desc.size,
        manifests: imgs
            .iter()
            .map(|i| (i.platform().to_string(), i.digest().clone()))
            .collect(),
        pushed,
    })
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Reads one image: a store name as is (an index in the store is not an image here), a
/// registry reference as the single manifest it names.
fn read_one(store: &Store, src: &Target, remote: Option<&Remote>) -> transport::Result<Image> {
    transport::read_into_store(store, src, None, remote)
}
