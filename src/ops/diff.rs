//! `kiln diff A B`: which paths of two images' file trees differ, and how.
//!
//! Each image's merged tree is computed from its layer tars as they stream by, without writing
//! anything to disk: entries in layer order, whiteouts (`.wh.NAME`) and opaque directories
//! (`.wh..wh..opq`) removing what lower layers put there, a non-directory replacing a directory
//! dropping what was below it, a hard link taking its target's content and metadata (as an
//! unpacker makes it share the inode). For every path the tree keeps its type, permission bits,
//! owner, size, mtime, xattrs (PAX `SCHILY.xattr.*`), link target or device numbers, the sha256
//! of a regular file's content, and which layer (index and blob digest) last wrote it.
//!
//! The config is compared too (each top-level key and each key of `config`), since two images
//! with the same files still differ when their configs do. Images outside the store are read
//! into it first, as `kiln inspect` does (from a registry, the layers only as they are read).
//!
//! Both images are untrusted input. What bounds the reads: manifests and configs come through
//! the transports' caps (`oci::limits`) and blobs are verified against their digests; each layer
//! is read through `LayerSource::open_layer`, whose `TarGuard` refuses oversized PAX records, long
//! names and sparse maps before they are buffered; file content is hashed as it streams (memory
//! grows with the number of paths, not with file sizes); member paths are cleaned and a path
//! that climbs out of the root, or a hard link to nothing held, is an error naming the member.
//! Nothing is unpacked, so no host path is ever opened from a member's name.
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;

use base64::Engine as _;
use serde::Serialize;
use sha2::Digest as _;

use crate::image::Image;
use crate::layer::clean_path;
use crate::oci::{Digest, Platform};
use crate::store::Store;
use crate::transport::{read_base_into_store, LayerSource, Remote, Target};

use super::{Error, Result};

/// What `kiln diff` compares.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// The first image (`a`).
    pub a: Target,
    /// The second image (`b`).
    pub b: Target,
    /// Which platform to take from a multi-platform image [default: the host's].
    pub platform: Option<Platform>,
    /// The registry client, for `docker://` images.
    pub remote: Option<Remote>,
}

/// One side of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct DiffSide {
    /// The image as named on the command line.
    pub image: String,
    /// Its manifest digest.
    pub digest: Digest,
    /// Its layers' blob digests, base first (a path's `layer` indexes this list).
    pub layers: Vec<Digest>,
}

/// A path's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// A regular file (or a hard link to one).
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A FIFO.
    Fifo,
}

impl FileType {
    fn name(self) -> &'static str {
        match self {
            FileType::File => "file",
            FileType::Dir => "dir",
            FileType::Symlink => "symlink",
            FileType::Char => "char",
            FileType::Block => "block",
            FileType::Fifo => "fifo",
        }
    }
}

/// A path's metadata in one image's merged tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileMeta {
    /// The type.
    #[serde(rename = "type")]
    pub kind: FileType,
    /// Permission bits (with setuid, setgid, sticky), as four octal digits.
    pub mode: String,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Content bytes (regular files; 0 otherwise).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// The sha256 of a regular file's content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// A symlink's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// `major,minor` of a device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Extended attributes: name → value, base64.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    /// Index of the layer that last wrote the path, base first.
    pub layer: usize,
    /// That layer's blob digest.
    pub layer_digest: Digest,
}

/// How a path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only in `b`.
    Added,
    /// Only in `a`.
    Removed,
    /// In both, different.
    Modified,
}

/// One differing path.
#[derive(Debug, Clone, Serialize)]
pub struct PathChange {
    /// The absolute path (bytes that are not UTF-8 written as `\xNN`).
    pub path: String,
    /// Added, removed or modified.
    pub change: ChangeKind,
    /// For `modified`: which of `type`, `content`, `mode`, `uid`, `gid`, `xattrs`, `link`,
    /// `device`, `mtime` differ, in that order.
    pub fields: Vec<&'static str>,
    /// The path in `a` (absent when added).
    pub a: Option<FileMeta>,
    /// The path in `b` (absent when removed).
    pub b: Option<FileMeta>,
}

/// What `kiln diff` found.
#[derive(Debug, Clone, Serialize)]
pub struct DiffResult {
    /// The first image.
    pub a: DiffSide,
    /// The second image.
    pub b: DiffSide,
    /// Whether the file trees and the configs are the same.
    pub identical: bool,
    /// Config keys whose values differ: top-level keys (`history`, `created`, …) and
    /// `config.KEY` for the keys of the runtime config (`config.Labels`, `config.Env`, …).
    pub config: Vec<String>,
    /// Every differing path, sorted by path bytes.
    pub paths: Vec<PathChange>,
}

/// Compares two images' file trees and configs.
pub fn diff(store: &Store, opts: &DiffOptions) -> Result<DiffResult> {
    let read = |t: &Target| {
        read_base_into_store(store, t, opts.platform.as_ref(), opts.remote.as_ref())
            .map_err(Error::from)
    };
    let a = read(&opts.a)?;
    let b = read(&opts.b)?;
    let side = |t: &Target, i: &Image| DiffSide {
        image: t.to_string(),
        digest: i.digest().clone(),
        layers: i.layers().iter().map(|l| l.digest.clone()).collect(),
    };
    let (sa, sb) = (side(&opts.a, &a), side(&opts.b, &b));
    let config = config_changes(&a.raw_config, &b.raw_config);
    // The same diff_ids make the same tree: no need to read them.
    let paths = if a.diff_ids() == b.diff_ids() {
        Vec::new()
    } else {
        let layers = LayerSource::new(store, opts.remote.as_ref());
        let ta = tree(layers, &opts.a, &a)?;
        let tb = tree(layers, &opts.b, &b)?;
        compare(&ta, &tb)
    };
    Ok(DiffResult {
        identical: paths.is_empty() && config.is_empty(),
        a: sa,
        b: sb,
        config,
        paths,
    })
}

/// The differing keys of two configs (raw JSON), as [`DiffResult::config`] lists them.
fn config_changes(a: &[u8], b: &[u8]) -> Vec<String> {
    let parse = |raw: &[u8]| {
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(raw)
            .unwrap_or_default()
    };
    let (a, b) = (parse(a), parse(b));
    let mut out = Vec::new();
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let (va, vb) = (a.get(k), b.get(k));
        if va == vb {
            continue;
        }
        match (va, vb) {
            (Some(serde_json::Value::Object(ca)), Some(serde_json::Value::Object(cb)))
                if k == "config" =>
            {
                let inner: BTreeSet<&String> = ca.keys().chain(cb.keys()).collect();
                for i in inner {
                    if ca.get(i) != cb.get(i) {
                        out.push(format!("config.{i}"));
                    }
                }
            }
            _ => out.push(k.clone()),
        }
    }
    out
}

/// One image's merged tree: path (relative, clean; `""` is the root) → metadata.
type Tree = BTreeMap<Vec<u8>, FileMeta>;

/// Reads every layer of `image` (in order) into its merged tree.
fn tree(layers: LayerSource<'_>, target: &Target, image: &Image) -> Result<Tree> {
    let mut tree = Tree::new();
    for (i, layer) in image.layers().iter().enumerate() {
        let reader = layers.open_layer(layer)?;
        apply_layer(&mut tree, reader, i, &layer.digest).map_err(|(member, reason)| {
            Error::BadLayer {
                image: target.to_string(),
                layer: layer.digest.clone(),
                member,
                reason,
            }
        })?;
    }
    Ok(tree)
}

/// Removes `path` and everything below it, except what `keep` (this layer's own entries) holds.
fn remove_tree(tree: &mut Tree, path: &[u8], keep: &HashSet<Vec<u8>>) {
    let mut prefix = path.to_vec();
    prefix.push(b'/');
    let victims: Vec<Vec<u8>> = std::iter::once(path.to_vec())
        .chain(
            tree.range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone()),
        )
        .filter(|k| !keep.contains(k))
        .collect();
    for v in victims {
        tree.remove(&v);
    }
}

/// Applies one layer's uncompressed tar to `tree`. Errors name the member and what is wrong.
fn apply_layer(
    tree: &mut Tree,
    layer: impl Read,
    index: usize,
    digest: &Digest,
) -> std::result::Result<(), (String, String)> {
    let mut archive = tar::Archive::new(layer);
    // Whiteouts hide what lower layers hold, never this layer's own entries (OCI image-spec,
    // "Whiteouts": "files that are children of the whiteout's parent in the same layer are not
    // hidden"); BuildKit and containerd's `archive.Apply` treat them the same way.
    let mut added: HashSet<Vec<u8>> = HashSet::new();
    let mut last = String::from("(the first member)");
    let entries = archive
        .entries()
        .map_err(|e| (last.clone(), e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| (format!("after {last}"), e.to_string()))?;
        let raw = entry.path_bytes().into_owned();
        last = show(&raw);
        let fail = |reason: String| (show(&raw), reason);
        let path = clean_path(&raw).ok_or_else(|| fail("the path leaves the root".into()))?;
        let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&path[..0], &path[..]),
        };
        if name == b".wh..wh..opq" {
            let mut prefix = dir.to_vec();
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            let victims: Vec<Vec<u8>> = tree
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .filter(|k| !k.is_empty() && !added.contains(k))
                .collect();
            for v in victims {
                tree.remove(&v);
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            let mut p = dir.to_vec();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(hidden);
            remove_tree(tree, &p, &added);
            continue;
        }
        let mut pax: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        if let Some(exts) = entry.pax_extensions().map_err(|e| fail(e.to_string()))? {
            for ext in exts {
                let ext = ext.map_err(|e| fail(e.to_string()))?;
                if let Ok(k) = ext.key() {
                    pax.insert(k.to_string(), ext.value_bytes().to_vec());
                }
            }
        }
        let h = entry.header();
        let num = |key: &str, header: Option<u64>| -> Option<u64> {
            pax.get(key)
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                .or(header)
        };
        let uid = num("uid", h.uid().ok()).unwrap_or(0);
        let gid = num("gid", h.gid().ok()).unwrap_or(0);
        // A PAX mtime may carry a fraction: whole seconds are what an unpacker keeps everywhere.
        let mtime = pax
            .get("mtime")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
            .or_else(|| h.mtime().ok().map(|m| m as i64))
            .unwrap_or(0);
        let mode = h.mode().unwrap_or(0) & 0o7777;
        let xattrs: BTreeMap<String, String> = pax
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix("SCHILY.xattr.")?;
                Some((
                    name.to_string(),
                    base64::engine::general_purpose::STANDARD.encode(v),
                ))
            })
            .collect();
        let entry_type = h.entry_type();
        let mut meta = FileMeta {
            kind: FileType::File,
            mode: format!("{mode:04o}"),
            uid,
            gid,
            size: 0,
            mtime,
            digest: None,
            link: None,
            device: None,
            xattrs,
            layer: index,
            layer_digest: digest.clone(),
        };
        match entry_type {
            tar::EntryType::Directory => meta.kind = FileType::Dir,
            tar::EntryType::Symlink => {
                meta.kind = FileType::Symlink;
                let target = entry.link_name_bytes().unwrap_or_default();
                meta.link = Some(show(&target));
            }
            tar::EntryType::Link => {
                // A hard link is its target: the same content and metadata.
                let target = entry
                    .link_name_bytes()
                    .and_then(|l| clean_path(&l))
                    .ok_or_else(|| fail("a hard link without a usable target".into()))?;
                let mut linked = tree.get(&target).cloned().ok_or_else(|| {
                    fail(format!(
                        "a hard link to `{}`, which no layer so far holds",
                        show(&target)
                    ))
                })?;
                if linked.kind == FileType::Dir {
                    return Err(fail("a hard link to a directory".into()));
                }
                linked.layer = index;
                linked.layer_digest = digest.clone();
                meta = linked;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut hasher = sha2::Sha256::new();
                let n = std::io::copy(&mut entry, &mut HashWriter(&mut hasher))
                    .map_err(|e| fail(format!("reading the content: {e}")))?;
                meta.size = n;
                meta.digest = Some(Digest::from_sha256_bytes(&hasher.finalize()));
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                meta.kind = if entry_type == tar::EntryType::Char {
                    FileType::Char
                } else {
                    FileType::Block
                };
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                meta.device = Some(format!("{major},{minor}"));
            }
            tar::EntryType::Fifo => meta.kind = FileType::Fifo,
            // Extension headers were consumed by the tar reader; other types hold no path.
            _ => continue,
        }
        // A non-directory in place of a directory drops what was below it.
        if meta.kind != FileType::Dir && tree.get(&path).is_some_and(|m| m.kind == FileType::Dir) {
            remove_tree(tree, &path, &added);
        }
        // Missing parents exist implicitly, as an unpacker creates them.
        let mut p = path.as_slice();
        while let Some(i) = p.iter().rposition(|&b| b == b'/') {
            p = &p[..i];
            if tree.contains_key(p) {
                break;
            }
            let mut parent = meta.clone();
            parent.kind = FileType::Dir;
            parent.mode = "0755".into();
            (parent.uid, parent.gid, parent.size, parent.mtime) = (0, 0, 0, 0);
            (parent.digest, parent.link, parent.device) = (None, None, None);
            parent.xattrs.clear();
            tree.insert(p.to_vec(), parent);
        }
        added.insert(path.clone());
        tree.insert(path, meta);
    }
    Ok(())
}

/// Feeds what is written into a hasher.
struct HashWriter<'a>(&'a mut sha2::Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every path that differs between two trees, sorted by path bytes.
fn compare(a: &Tree, b: &Tree) -> Vec<PathChange> {
    let keys: BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for k in keys {
        let path = format!("/{}", show(k));
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) => {
                let fields = differing(x, y);
                if !fields.is_empty() {
                    out.push(PathChange {
                        path,
                        change: ChangeKind::Modified,
                        fields,
                        a: Some(x.clone()),
                        b: Some(y.clone()),
                    });
                }
            }
            (x, y) => out.push(PathChange {
                path,
                change: if x.is_some() {
                    ChangeKind::Removed
                } else {
                    ChangeKind::Added
                },
                fields: Vec::new(),
                a: x.cloned(),
                b: y.cloned(),
            }),
        }
    }
    out
}

/// Which fields of two metadata records differ (the layer they came from does not count).
fn differing(a: &FileMeta, b: &FileMeta) -> Vec<&'static str> {
    [
        ("type", a.kind != b.kind),
        (
            "content",
            a.kind == b.kind && (a.digest != b.digest || a.size != b.size),
        ),
        ("mode", a.mode != b.mode),
        ("uid", a.uid != b.uid),
        ("gid", a.gid != b.gid),
        ("xattrs", a.xattrs != b.xattrs),
        ("link", a.link != b.link),
        ("device", a.device != b.device),
        ("mtime", a.mtime != b.mtime),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect()
}

/// Path bytes as text: UTF-8 as is, other bytes as `\xNN` (and `\` itself as `\\`).
fn show(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

impl DiffResult {
    /// The human-readable report: one line per differing path, sorted by path, then a summary
    /// (empty when the images are identical).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let at = |m: &FileMeta| format!("layer {} {}", m.layer, m.layer_digest.short());
        for c in &self.paths {
            match (c.change, &c.a, &c.b) {
                (ChangeKind::Added, _, Some(b)) => {
                    s += &format!("+ {} ({}) [b: {}]\n", c.path, b.kind.name(), at(b));
                }
                (ChangeKind::Removed, Some(a), _) => {
                    s += &format!("- {} ({}) [a: {}]\n", c.path, a.kind.name(), at(a));
                }
                (_, Some(a), Some(b)) => {
                    let what: Vec<String> = c.fields.iter().map(|f| field(f, a, b)).collect();
                    s += &format!(
                        "M {}: {} [a: {}; b: {}]\n",
                        c.path,
                        what.join(", "),
                        at(a),
                        at(b)
                    );
                }
                _ => {}
            }
        }
        for k in &self.config {
            s += &format!("C config {k}\n");
        }
        if !self.identical {
            let n = |k: ChangeKind| self.paths.iter().filter(|c| c.change == k).count();
            s += &format!(
                "{} path(s) differ ({} added, {} removed, {} modified), {} config key(s)\n",
                self.paths.len(),
                n(ChangeKind::Added),
                n(ChangeKind::Removed),
                n(ChangeKind::Modified),
                self.config.len()
            );
        }
        s
    }
}

/// One field's change, `name a -> b`.
fn field(name: &str, a: &FileMeta, b: &FileMeta) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    match name {
        "type" => format!("type {} -> {}", a.kind.name(), b.kind.name()),
        "content" => format!(
            "content {}/{}B -> {}/{}B",
            a.digest.as_ref().map(|d| d.short()).unwrap_or_default(),
            a.size,
            b.digest.as_ref().map(|d| d.short()).unwrap_or_default(),
            b.size
        ),
        "mode" => format!("mode {} -> {}", a.mode, b.mode),
        "uid" => format!("uid {} -> {}", a.uid, b.uid),
        "gid" => format!("gid {} -> {}", a.gid, b.gid),
        "xattrs" => {
            let names: BTreeSet<&String> = a
                .xattrs
                .keys()
                .chain(b.xattrs.keys())
                .filter(|k| a.xattrs.get(*k) != b.xattrs.get(*k))
                .collect();
            format!(
                "xattrs {}",
                names.into_iter().cloned().collect::<Vec<_>>().join(",")
            )
        }
        "link" => format!("link {} -> {}", opt(&a.link), opt(&b.link)),
        "device" => format!("device {} -> {}", opt(&a.device), opt(&b.device)),
        "mtime" => format!("mtime {} -> {}", a.mtime, b.mtime),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of `(path, type, body-or-link, mode, mtime)` members (with PAX xattrs when given).
    struct T {
        b: tar::Builder<Vec<u8>>,
    }

    impl T {
        fn new() -> T {
            T {
                b: tar::Builder::new(Vec::new()),
            }
        }
        fn header(kind: tar::EntryType, mode: u32, mtime: u64, size: u64) -> tar::Header {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_mtime(mtime);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(size);
            h
        }
        fn file(mut self, path: &str, body: &[u8], mode: u32, mtime: u64) -> T {
            let mut h = T::header(tar::EntryType::Regular, mode, mtime, body.len() as u64);
            self.b.append_data(&mut h, path, body).unwrap();
            self
        }
        fn owned(mut self, path: &str, body: &[u8], uid: u64) -> T {
            let mut h = T::header(tar::EntryType::Regular, 0o644, 0, body.len() as u64);
            h.set_uid(uid);
            self.b.append_data(&mut h, path, body).unwrap();
            self
        }
        fn dir(mut self, path: &str, mode: u32) -> T {
            let mut h = T::header(tar::EntryType::Directory, mode, 0, 0);
            self.b.append_data(&mut h, path, &[][..]).unwrap();
            self
        }
        fn symlink(mut self, path: &str, target: &str) -> T {
            let mut h = T::header(tar::EntryType::Symlink, 0o777, 0, 0);
            self.b.append_link(&mut h, path, target).unwrap();
            self
        }
        fn hardlink(mut self, path: &str, target: &str) -> T {
            let mut h = T::header(tar::EntryType::Link, 0o644, 0, 0);
            self.b.append_link(&mut h, path, target).unwrap();
            self
        }
        fn xattr(mut self, path: &str, name: &str, value: &[u8]) -> T {
            let key = format!("SCHILY.xattr.{name}");
            self.b
                .append_pax_extensions([(key.as_str(), value)])
                .unwrap();
            self.file(path, b"x", 0o755, 0)
        }
        fn bytes(self) -> Vec<u8> {
            self.b.into_inner().unwrap()
        }
    }

    fn d(n: u8) -> Digest {
        Digest::sha256(&[n])
    }

    fn tree_of(layers: &[Vec<u8>]) -> Tree {
        let mut t = Tree::new();
        for (i, l) in layers.iter().enumerate() {
            apply_layer(&mut t, &l[..], i, &d(i as u8)).unwrap();
        }
        t
    }

    fn paths(t: &Tree) -> Vec<String> {
        t.keys().map(|k| show(k)).collect()
    }

    #[test]
    fn whiteouts_and_opaque_directories_remove_lower_paths_only() {
        let base = T::new()
            .dir("etc", 0o755)
            .file("etc/a", b"a", 0o644, 0)
            .file("etc/b", b"b", 0o644, 0)
            .dir("var/log", 0o755)
            .file("var/log/x", b"x", 0o644, 0)
            .file("var/log/y", b"y", 0o644, 0)
            .bytes();
        let top = T::new()
            .file("etc/.wh.a", b"", 0o644, 0)
            // Opaque: what lower layers had under var/log goes; this layer's own z stays.
            .file("var/log/z", b"z", 0o644, 0)
            .file("var/log/.wh..wh..opq", b"", 0o644, 0)
            .bytes();
        let t = tree_of(&[base, top]);
        assert_eq!(paths(&t), ["etc", "etc/b", "var", "var/log", "var/log/z"]);
        assert_eq!(t[&b"var/log/z".to_vec()].layer, 1);
        assert_eq!(t[&b"etc/b".to_vec()].layer, 0);
    }

    #[test]
    fn a_file_replacing_a_directory_drops_its_children() {
        let base = T::new().dir("d", 0o755).file("d/f", b"f", 0o644, 0).bytes();
        let top = T::new().file("d", b"now a file", 0o644, 0).bytes();
        let t = tree_of(&[base, top]);
        assert_eq!(paths(&t), ["d"]);
        assert_eq!(t[&b"d".to_vec()].kind, FileType::File);
    }

    #[test]
    fn a_hard_link_has_its_targets_content() {
        let l = T::new()
            .file("a", b"shared", 0o600, 7)
            .hardlink("b", "a")
            .bytes();
        let t = tree_of(&[l]);
        let (a, b) = (&t[&b"a".to_vec()], &t[&b"b".to_vec()]);
        assert_eq!(a.digest, b.digest);
        assert_eq!((b.mode.as_str(), b.mtime, b.size), ("0600", 7, 6));
    }

    #[test]
    fn a_hard_link_to_nothing_is_an_error_naming_the_member() {
        let l = T::new().hardlink("b", "missing").bytes();
        let mut t = Tree::new();
        let (member, reason) = apply_layer(&mut t, &l[..], 0, &d(0)).unwrap_err();
        assert_eq!(member, "b");
        assert!(reason.contains("missing"), "{reason}");
    }

    #[test]
    fn every_kind_of_difference_is_named() {
        let a = T::new()
            .file("content", b"one", 0o644, 0)
            .file("mode", b"m", 0o644, 0)
            .owned("owner", b"o", 0)
            .file("mtime", b"t", 0o644, 100)
            .symlink("link", "one")
            .file("kind", b"k", 0o644, 0)
            .xattr("cap", "security.capability", b"\x01")
            .file("same", b"s", 0o644, 0)
            .file("gone", b"g", 0o644, 0)
            .bytes();
        let b = T::new()
            .file("content", b"two", 0o644, 0)
            .file("mode", b"m", 0o755, 0)
            .owned("owner", b"o", 1000)
            .file("mtime", b"t", 0o644, 200)
            .symlink("link", "two")
            .dir("kind", 0o644)
            .xattr("cap", "security.capability", b"\x02")
            .file("same", b"s", 0o644, 0)
            .file("new", b"n", 0o644, 0)
            .bytes();
        let changes = compare(&tree_of(&[a]), &tree_of(&[b]));
        let got: Vec<(String, ChangeKind, Vec<&str>)> = changes
            .iter()
            .map(|c| (c.path.clone(), c.change, c.fields.clone()))
            .collect();
        use ChangeKind::*;
        let want: Vec<(String, ChangeKind, Vec<&str>)> = vec![
            ("/cap".into(), Modified, vec!["xattrs"]),
            ("/content".into(), Modified, vec!["content"]),
            ("/gone".into(), Removed, vec![]),
            ("/kind".into(), Modified, vec!["type"]),
            ("/link".into(), Modified, vec!["link"]),
            ("/mode".into(), Modified, vec!["mode"]),
            ("/mtime".into(), Modified, vec!["mtime"]),
            ("/new".into(), Added, vec![]),
            ("/owner".into(), Modified, vec!["uid"]),
        ];
        assert_eq!(got, want);
        let text = DiffResult {
            a: DiffSide {
                image: "a".into(),
                digest: d(1),
                layers: vec![d(0)],
            },
            b: DiffSide {
                image: "b".into(),
                digest: d(2),
                layers: vec![d(0)],
            },
            identical: false,
            config: vec!["config.Labels".into()],
            paths: changes,
        }
        .to_text();
        assert!(
            text.contains("M /mode: mode 0644 -> 0755 [a: layer 0 "),
            "{text}"
        );
        assert!(text.contains("+ /new (file) [b: layer 0 "), "{text}");
        assert!(text.contains("M /link: link one -> two"), "{text}");
        assert!(text.contains("C config config.Labels\n"), "{text}");
        assert!(
            text.ends_with("9 path(s) differ (1 added, 1 removed, 7 modified), 1 config key(s)\n"),
            "{text}"
        );
    }

    #[test]
    fn the_same_files_from_different_layers_do_not_differ() {
        let one = T::new().file("a", b"a", 0o644, 0).file("b", b"b", 0o644, 0);
        let two_base = T::new().file("a", b"a", 0o644, 0).bytes();
        let two_top = T::new().file("b", b"b", 0o644, 0).bytes();
        let changes = compare(&tree_of(&[one.bytes()]), &tree_of(&[two_base, two_top]));
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn config_changes_name_top_level_and_runtime_keys() {
        let a = br#"{"architecture":"amd64","config":{"Env":["A=1"],"User":"0"},"history":[]}"#;
        let b = br#"{"architecture":"amd64","config":{"Env":["A=2"],"User":"0","Labels":{}},"history":[{}]}"#;
        assert_eq!(
            config_changes(a, b),
            ["config.Env", "config.Labels", "history"]
        );
        assert!(config_changes(a, a).is_empty());
    }

    #[test]
    fn non_utf8_paths_are_escaped() {
        assert_eq!(show(b"a\xffb\\c"), "a\\xffb\\\\c");
    }
}
