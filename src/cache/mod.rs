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
//! The index is loaded once per build (as flat records sorted by (device, inode): 88 bytes a
//! file in memory, as on disk) and written back atomically once the context is hashed, before
//! the steps run; concurrent builds may lose each other's additions, never correctness (every
//! hit is re-checked against a fresh stat).
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

/// One file of the index, as it is on disk: (device, inode), the stat values that must be
/// unchanged, and the content's SHA-256. 88 bytes, nothing on the heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileRecord {
    key: (u64, u64),
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    sha256: [u8; 32],
}

const RECORD_LEN: usize = 8 * 2 + 8 + 16 + 16 + 32;
const INDEX_MAGIC: &[u8; 16] = b"kiln-files-v1\n\0\0";

/// What the index needs to know of a file's stat to trust a hash it recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// mtime (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// ctime (seconds, nanoseconds).
    pub ctime: (i64, i64),
}

impl From<&std::fs::Metadata> for FileStat {
    fn from(md: &std::fs::Metadata) -> FileStat {
        FileStat {
            dev: md.dev(),
            ino: md.ino(),
            size: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }
}

/// Sorts `records` by key, keeping the last of each key (as a map's later insert wins).
fn sort_last_wins(records: &mut Vec<FileRecord>) {
    records.reverse();
    records.sort_by_key(|r| r.key);
    records.dedup_by_key(|r| r.key);
}

/// The persistent (device, inode) → content hash index.
///
/// Kept as flat, sorted records (a context of a million files costs 88 MB here, where a hash
/// map of the same records cost twice that and more while it grew): the records read from the
/// store, searched by binary search, and the records hashed since the last
/// [`FileIndex::settle`], folded into them in place.
#[derive(Debug)]
pub struct FileIndex {
    path: PathBuf,
    /// The store's `tmp/` (see [`LayerCache`]).
    tmp: PathBuf,
    /// Sorted by key, one record per key.
    records: Vec<FileRecord>,
    /// Hashed since the last settle, in the order they were hashed.
    added: Vec<FileRecord>,
    /// For files with several links: their index in `added`, so a second path to the same
    /// inode is not read again before the next settle.
    linked: HashMap<(u64, u64), usize>,
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
        let mut records = Vec::new();
        // Read record by record: the file of a large context is not held twice.
        if let Ok(f) = File::open(&path) {
            let len = f.metadata().map_or(0, |m| m.len()) as usize;
            let mut r = std::io::BufReader::with_capacity(1 << 16, f);
            let mut magic = [0u8; 16];
            if r.read_exact(&mut magic).is_ok() && &magic == INDEX_MAGIC {
                records.reserve_exact(len.saturating_sub(16) / RECORD_LEN);
                let mut rec = [0u8; RECORD_LEN];
                while r.read_exact(&mut rec).is_ok() {
                    let u =
                        |i: usize| u64::from_le_bytes(rec[i..i + 8].try_into().expect("8 bytes"));
                    let i = |o: usize| u(o) as i64;
                    let mut sha = [0u8; 32];
                    sha.copy_from_slice(&rec[56..88]);
                    records.push(FileRecord {
                        key: (u(0), u(8)),
                        size: u(16),
                        mtime: (i(24), i(32)),
                        ctime: (i(40), i(48)),
                        sha256: sha,
                    });
                }
            }
        }
        // Written sorted; a file that is not (or repeats a key: the last one wins, as the
        // map this replaced did) is put right here rather than misread.
        if !records.windows(2).all(|w| w[0].key < w[1].key) {
            sort_last_wins(&mut records);
        }
        FileIndex {
            path,
            tmp: store.tmp_dir(),
            records,
            added: Vec::new(),
            linked: HashMap::new(),
            dirty: false,
            files_hashed: 0,
            bytes_hashed: 0,
            files_reused: 0,
        }
    }

    /// Bytes the index holds in memory, by a fixed accounting (the records' buffers at their
    /// capacity, and the hard-link table at its length): what a context of N files costs.
    pub fn heap_bytes(&self) -> usize {
        let rec = std::mem::size_of::<FileRecord>();
        (self.records.capacity() + self.added.capacity()) * rec
            + self.linked.len() * (std::mem::size_of::<((u64, u64), usize)>() + 1)
    }

    fn lookup(&self, key: (u64, u64)) -> Option<FileRecord> {
        if let Ok(i) = self.records.binary_search_by_key(&key, |r| r.key) {
            return Some(self.records[i]);
        }
        self.linked.get(&key).map(|&i| self.added[i])
    }

    /// The SHA-256 of the file at `path` whose stat values are `st`, from the index when they
    /// are unchanged, else by reading it.
    pub fn hash(&mut self, path: &Path, st: &FileStat, nlink: u64) -> Result<[u8; 32]> {
        let key = (st.dev, st.ino);
        let rec = FileRecord {
            key,
            size: st.size,
            mtime: st.mtime,
            ctime: st.ctime,
            sha256: [0; 32],
        };
        if let Some(r) = self.lookup(key) {
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
        if nlink > 1 {
            self.linked.insert(key, self.added.len());
        }
        self.added.push(FileRecord { sha256, ..rec });
        self.dirty = true;
        Ok(sha256)
    }

    /// Folds the records hashed since the last call into the sorted ones, so later look-ups
    /// find them (a file already there is replaced in place; new ones are appended and the
    /// whole sorted again, in place).
    pub fn settle(&mut self) {
        let mut added = std::mem::take(&mut self.added);
        self.linked = HashMap::new();
        if added.is_empty() {
            return;
        }
        // The last record hashed for a key wins.
        sort_last_wins(&mut added);
        if self.records.is_empty() {
            self.records = added;
            return;
        }
        let mut fresh = Vec::new();
        for r in added {
            match self.records.binary_search_by_key(&r.key, |x| x.key) {
                Ok(i) => self.records[i] = r,
                Err(_) => fresh.push(r),
            }
        }
        // Both sorted: merged from the back into the grown vector, in one pass (a build
        // settles once per COPY source, and re-sorting a million records each time would not
        // be free).
        let (mut i, mut j) = (self.records.len(), fresh.len());
        self.records.extend_from_slice(&fresh);
        while j > 0 {
            let k = i + j - 1;
            if i > 0 && self.records[i - 1].key > fresh[j - 1].key {
                self.records[k] = self.records[i - 1];
                i -= 1;
            } else {
                self.records[k] = fresh[j - 1];
                j -= 1;
            }
        }
    }

    /// Writes the index back if it changed.
    pub fn save(&mut self) -> Result<()> {
        self.settle();
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
        let records = &self.records;
        store::write_atomic_with(&self.tmp, &self.path, |out| {
            out.write_all(INDEX_MAGIC)?;
            for r in records {
                for v in [
                    r.key.0,
                    r.key.1,
                    r.size,
                    r.mtime.0 as u64,
                    r.mtime.1 as u64,
                    r.ctime.0 as u64,
                    r.ctime.1 as u64,
                ] {
                    out.write_all(&v.to_le_bytes())?;
                }
                out.write_all(&r.sha256)?;
            }
            Ok(())
        })?;
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
    let mut h = ContextDigest::default();
    for i in items {
        h.push(i);
    }
    h.finish()
}

/// [`context_digest`], fed one item at a time: a context's items are hashed as they are read,
/// never all held.
#[derive(Default)]
pub struct ContextDigest(Sha256);

impl ContextDigest {
    /// Adds the next item, in path order.
    pub fn push(&mut self, i: &ContextItem) {
        let h = &mut self.0;
        h.update(i.path.as_bytes());
        h.update([0, i.kind as u8]);
        h.update(i.mode.to_le_bytes());
        h.update(i.size.to_le_bytes());
        h.update(i.mtime.to_le_bytes());
        h.update(i.link.as_bytes());
        h.update([0]);
        h.update(i.sha256);
    }

    /// The digest of the items pushed.
    pub fn finish(self) -> String {
        format!(
            "sha256:{}",
            Digest::from_sha256_bytes(&self.0.finalize()).hex()
        )
    }
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
        let st = |f: &Path| FileStat::from(&std::fs::metadata(f).unwrap());
        let a = idx.hash(&f, &st(&f), 1).unwrap();
        idx.save().unwrap();
        let mut idx = FileIndex::load(&store);
        assert_eq!(idx.hash(&f, &st(&f), 1).unwrap(), a);
        assert_eq!((idx.files_reused, idx.files_hashed), (1, 0));
        std::fs::write(&f, b"two").unwrap();
        let b = idx.hash(&f, &st(&f), 1).unwrap();
        assert_ne!(a, b);
        assert_eq!(idx.files_hashed, 1);
    }

    /// #21: a context of N files costs the file index 88 bytes a file (flat records), not a
    /// hash map's buckets; a second path to a hard-linked file is not read again; what a
    /// build added is found by the next one, the changed file replaced, not duplicated.
    #[test]
    fn the_file_index_holds_88_bytes_a_file_and_finds_what_it_added() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        let n = 2000;
        let st = |f: &Path| {
            let md = std::fs::symlink_metadata(f).unwrap();
            (FileStat::from(&md), md.nlink())
        };
        for i in 0..n {
            std::fs::write(ctx.join(format!("f{i}")), format!("{i}")).unwrap();
        }
        std::fs::hard_link(ctx.join("f0"), ctx.join("link")).unwrap();
        let mut idx = FileIndex::load(&store);
        for name in (0..n).map(|i| format!("f{i}")).chain(["link".into()]) {
            let (s, nlink) = st(&ctx.join(&name));
            idx.hash(&ctx.join(&name), &s, nlink).unwrap();
        }
        assert_eq!((idx.files_hashed, idx.files_reused), (n as u64, 1));
        idx.settle();
        assert!(
            idx.heap_bytes() <= n * RECORD_LEN * 5 / 4,
            "{} bytes for {n} files",
            idx.heap_bytes()
        );
        idx.save().unwrap();
        // Changed (a new file under the old name): hashed again, the record replaced.
        std::fs::remove_file(ctx.join("f7")).unwrap();
        std::fs::write(ctx.join("f7"), b"seven").unwrap();
        let mut idx = FileIndex::load(&store);
        assert_eq!(idx.records.len(), n);
        for i in 0..n {
            let f = ctx.join(format!("f{i}"));
            let (s, nlink) = st(&f);
            let sha = idx.hash(&f, &s, nlink).unwrap();
            let want: [u8; 32] = Sha256::digest(std::fs::read(&f).unwrap()).into();
            assert_eq!(sha, want, "f{i}");
        }
        assert_eq!((idx.files_hashed, idx.files_reused), (1, n as u64 - 1));
        idx.save().unwrap();
        let idx = FileIndex::load(&store);
        assert!(idx.records.len() >= n && idx.records.len() <= n + 1);
        assert!(idx.records.windows(2).all(|w| w[0].key < w[1].key));
    }

    /// Records hashed since the last settle are merged into the sorted ones: interleaved keys
    /// end in order, a key already there is replaced, the last of a repeated key wins.
    #[test]
    fn settle_merges_new_records_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        let rec = |k: u64, tag: u8| FileRecord {
            key: (1, k),
            size: 0,
            mtime: (0, 0),
            ctime: (0, 0),
            sha256: [tag; 32],
        };
        let mut idx = FileIndex::load(&store);
        idx.records = (0..10).map(|k| rec(k * 2, 0)).collect();
        idx.added = vec![
            rec(19, 1),
            rec(5, 1),
            rec(4, 1),
            rec(0, 1),
            rec(5, 2),
            rec(21, 1),
        ];
        idx.settle();
        let keys: Vec<u64> = idx.records.iter().map(|r| r.key.1).collect();
        assert_eq!(
            keys,
            [0, 2, 4, 5, 6, 8, 10, 12, 14, 16, 18, 19, 21],
            "{keys:?}"
        );
        let tag = |k: u64| idx.lookup((1, k)).unwrap().sha256[0];
        assert_eq!((tag(0), tag(4), tag(5), tag(2), tag(21)), (1, 1, 2, 0, 1));
        assert!(idx.added.is_empty());
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
