//! The build cache: cache key → the layer a step made, and a persistent index that spares
//! re-reading unchanged context files.
//!
//! # Keys
//! A step's key comes from the planner (`crate::plan` lists every input: the parent key, the
//! step's canonical encoding with all values expanded, and the digests of its inputs). The
//! builder supplies the input digests:
//! - context files: [`context_digest`] over every copied path after `.dockerignore` and
//!   `--exclude`: its relative path, type, permission bits, size, symlink target, mtime clamped to
//!   the build epoch, and the SHA-256 of its content, in path order;
//! - another stage: that stage's final key (the planner does this);
//! - an image: its manifest digest.
//!
//! A layer is cached under [`layer_key`]`(step key, compression, epoch)`, because the same step
//! gives other bytes with another compression or another epoch. An entry
//! (`cache-v1/keys/<layer key>.json`) holds the layer's descriptor and diff_id; the blob itself
//! lives in the store and is a gc root while the entry exists. An entry whose blob is gone is a
//! miss. Bump `cache-v1` when the entry format or a key's meaning changes.
//!
//! # The file index
//! `cache-v1/files.idx` maps (device, inode) to (size, mtime, ctime, SHA-256): a file whose four
//! stat values are unchanged is not read again. ctime changes on every content or metadata
//! change, and cannot be set back by users, so a match means the content is the same.
//! The index is loaded once per build and written back atomically; concurrent builds may lose
//! each other's additions, never correctness (every hit is re-checked against a fresh stat).
//!
//! # Outside the store
//! [`remote`]: the same layer keys in a registry or an OCI layout directory
//! (`--cache-to` / `--cache-from`), read before a build and written after it.

pub mod remote;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::oci::{Descriptor, Digest};
use crate::store::{self, Store};

/// Errors of the cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{action} `{}`", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing through the store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a cache entry records about a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    /// The layer blob.
    pub descriptor: Descriptor,
    /// Its diff_id.
    pub diff_id: Digest,
}

/// The key a layer is cached under: the step key, the compression and the epoch.
pub fn layer_key(step_key: &str, compression: &str, epoch: i64, clamp_mtimes: bool) -> String {
    let mut h = Sha256::new();
    // v2: gzip levels follow zlib's ratios (other bytes for the same level than v1).
    // v3: layers list every parent directory of their entries, and RUN steps see
    // SOURCE_DATE_EPOCH (other bytes for the same step than v2).
    h.update(b"kiln-layer-v3\n");
    h.update(step_key.as_bytes());
    h.update(b"\n");
    h.update(compression.as_bytes());
    h.update(b"\n");
    h.update(epoch.to_string().as_bytes());
    if !clamp_mtimes {
        // Not clamped: the mtimes the inputs carry are kept (other bytes for the same epoch).
        h.update(b"\nkeep-mtimes");
    }
    crate::oci::Digest::from_sha256_bytes(&h.finalize())
        .hex()
        .to_string()
}

/// The layer cache of a store.
#[derive(Debug, Clone)]
pub struct LayerCache {
    dir: PathBuf,
    /// The store's `tmp/`, where entries are written before being renamed into place (so a
    /// killed build leaves its half-written entry where `store gc` removes it).
    tmp: PathBuf,
}

impl LayerCache {
    /// The cache of `store` (created on first write).
    pub fn new(store: &Store) -> LayerCache {
        LayerCache {
            dir: store.root().join("cache-v1/keys"),
            tmp: store.tmp_dir(),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The layer cached under `key`, if its blob is still in the store.
    pub fn get(&self, store: &Store, key: &str) -> Option<CachedLayer> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let entry: CachedLayer = serde_json::from_slice(&bytes).ok()?;
        store.contains(&entry.descriptor.digest).then_some(entry)
    }

    /// Records `layer` under `key`.
    pub fn put(&self, key: &str, layer: &CachedLayer) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|source| Error::Io {
            action: "cannot create",
            path: self.dir.clone(),
            source,
        })?;
        let bytes = serde_json::to_vec(layer).expect("cache entries always serialise");
        store::write_atomic(&self.tmp, &self.path(key), &bytes)?;
        Ok(())
    }

    /// Every blob the cache refers to (roots for `store gc`).
    pub fn blobs(&self) -> Vec<Digest> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<CachedLayer>(&b).ok())
            .map(|c| c.descriptor.digest)
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileRecord {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    sha256: [u8; 32],
}

const RECORD_LEN: usize = 8 * 2 + 8 + 16 + 16 + 32;
const INDEX_MAGIC: &[u8; 16] = b"kiln-files-v1\n\0\0";

/// The persistent (device, inode) → content hash index.
#[derive(Debug)]
pub struct FileIndex {
    path: PathBuf,
    /// The store's `tmp/` (see [`LayerCache`]).
    tmp: PathBuf,
    map: HashMap<(u64, u64), FileRecord>,
    dirty: bool,
    /// Files actually read and hashed during this build.
    pub files_hashed: u64,
    /// Bytes read to hash them.
    pub bytes_hashed: u64,
    /// Files answered from the index.
    pub files_reused: u64,
}

impl FileIndex {
    /// Loads the index of `store` (empty if missing or unreadable).
    pub fn load(store: &Store) -> FileIndex {
        let path = store.root().join("cache-v1/files.idx");
        let mut map = HashMap::new();
        if let Ok(bytes) = std::fs::read(&path) {
            if bytes.len() >= 16 && &bytes[..16] == INDEX_MAGIC {
                for r in bytes[16..].chunks_exact(RECORD_LEN) {
                    let u = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().expect("8 bytes"));
                    let i = |o: usize| u(o) as i64;
                    let mut sha = [0u8; 32];
                    sha.copy_from_slice(&r[56..88]);
                    map.insert(
                        (u(0), u(8)),
                        FileRecord {
                            size: u(16),
                            mtime: (i(24), i(32)),
                            ctime: (i(40), i(48)),
                            sha256: sha,
                        },
                    );
                }
            }
        }
        FileIndex {
            path,
            tmp: store.tmp_dir(),
            map,
            dirty: false,
            files_hashed: 0,
            bytes_hashed: 0,
            files_reused: 0,
        }
    }

    /// The SHA-256 of the file at `path` whose metadata is `md`, from the index when its stat
    /// values are unchanged, else by reading it.
    pub fn hash(&mut self, path: &Path, md: &std::fs::Metadata) -> Result<[u8; 32]> {
        let key = (md.dev(), md.ino());
        let rec = FileRecord {
            size: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            sha256: [0; 32],
        };
        if let Some(r) = self.map.get(&key) {
            if r.size == rec.size && r.mtime == rec.mtime && r.ctime == rec.ctime {
                self.files_reused += 1;
                return Ok(r.sha256);
            }
        }
        let io = |source| Error::Io {
            action: "cannot read",
            path: path.to_path_buf(),
            source,
        };
        let mut f = File::open(path).map_err(io)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            self.bytes_hashed += n as u64;
        }
        self.files_hashed += 1;
        let sha256: [u8; 32] = h.finalize().into();
        self.map.insert(key, FileRecord { sha256, ..rec });
        self.dirty = true;
        Ok(sha256)
    }

    /// Writes the index back if it changed.
    pub fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let dir = self
            .path
            .parent()
            .expect("the index path has a parent")
            .to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            action: "cannot create",
            path: dir.clone(),
            source,
        })?;
        let mut out = Vec::with_capacity(16 + self.map.len() * RECORD_LEN);
        out.extend_from_slice(INDEX_MAGIC);
        let mut keys: Vec<_> = self.map.keys().copied().collect();
        keys.sort_unstable();
        for k in keys {
            let r = &self.map[&k];
            for v in [
                k.0,
                k.1,
                r.size,
                r.mtime.0 as u64,
                r.mtime.1 as u64,
                r.ctime.0 as u64,
                r.ctime.1 as u64,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&r.sha256);
        }
        store::write_atomic(&self.tmp, &self.path, &out)?;
        self.dirty = false;
        Ok(())
    }
}

/// One file of a context input, as hashed into [`context_digest`].
#[derive(Debug, Clone)]
pub struct ContextItem {
    /// Path relative to the context (or to the source stage's root).
    pub path: String,
    /// `f`, `d`, `l`, `p` (fifo), `c`, `b`.
    pub kind: char,
    /// Permission bits.
    pub mode: u32,
    /// Size in bytes (files).
    pub size: u64,
    /// mtime, clamped to the epoch.
    pub mtime: i64,
    /// Symlink target.
    pub link: String,
    /// Content SHA-256 (files).
    pub sha256: [u8; 32],
}

/// The digest of a set of context files (see the module doc for what it covers).
pub fn context_digest(items: &[ContextItem]) -> String {
    let mut h = Sha256::new();
    for i in items {
        h.update(i.path.as_bytes());
        h.update([0, i.kind as u8]);
        h.update(i.mode.to_le_bytes());
        h.update(i.size.to_le_bytes());
        h.update(i.mtime.to_le_bytes());
        h.update(i.link.as_bytes());
        h.update([0]);
        h.update(i.sha256);
    }
    format!("sha256:{}", Digest::from_sha256_bytes(&h.finalize()).hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_index_reuses_hashes_until_a_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"one").unwrap();
        let mut idx = FileIndex::load(&store);
        let a = idx.hash(&f, &std::fs::metadata(&f).unwrap()).unwrap();
        idx.save().unwrap();
        let mut idx = FileIndex::load(&store);
        assert_eq!(idx.hash(&f, &std::fs::metadata(&f).unwrap()).unwrap(), a);
        assert_eq!((idx.files_reused, idx.files_hashed), (1, 0));
        std::fs::write(&f, b"two").unwrap();
        let b = idx.hash(&f, &std::fs::metadata(&f).unwrap()).unwrap();
        assert_ne!(a, b);
        assert_eq!(idx.files_hashed, 1);
    }

    #[test]
    fn layer_keys_depend_on_compression_and_epoch() {
        let k = layer_key("abc", "gzip:6", 0, true);
        assert_ne!(k, layer_key("abc", "zstd:3", 0, true));
        assert_ne!(k, layer_key("abc", "gzip:6", 1, true));
        assert_ne!(k, layer_key("abd", "gzip:6", 0, true));
        assert_ne!(k, layer_key("abc", "gzip:6", 0, false));
    }
}
