//! A metadata view of a stage's filesystem, built from layer tars without extracting them.
//!
//! It answers what COPY, ADD and WORKDIR need to know about the image below them (does the
//! destination exist, is it a directory, where do its symlinks lead, who is `app` in
//! `/etc/passwd`) at the cost of reading layer headers, so a base image's files are written to
//! disk only when a step needs their content.
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::sync::Arc;

use crate::layer::{clean_path, Entry, EntryKind};

/// Files whose content the index keeps, for user and group lookups.
const KEEP_CONTENT: [&[u8]; 2] = [b"etc/passwd", b"etc/group"];

/// The first bytes of [`FsIndex::encode`]'s output; bump the version when the format changes.
// v2: directories' xattrs.
const ENCODING_MAGIC: &[u8] = b"kiln-fsindex-v2\n";

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file (or a hard link to one).
    File,
    /// A directory.
    Dir,
    /// A symlink and its target.
    Symlink(Vec<u8>),
    /// A fifo or device.
    Special,
}

/// One path of the index.
///
/// Small (72 bytes), as an index holds one per path of the image: what few paths have (kept
/// content, a hard link's first path, a directory's xattrs) is boxed apart, behind
/// [`Node::content`], [`Node::link_of`] and [`Node::xattrs`].
#[derive(Debug, Clone)]
pub struct Node {
    /// The type.
    pub kind: NodeKind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size (files).
    pub size: u64,
    /// mtime.
    pub mtime: i64,
    /// Whether other paths are hard links to this file.
    pub linked: bool,
    /// What few nodes have; `None` when it would be empty.
    extra: Option<Box<Extra>>,
}

/// The rare parts of a [`Node`].
#[derive(Debug, Clone, Default)]
struct Extra {
    /// Content, for the few files in `KEEP_CONTENT`.
    content: Option<Arc<[u8]>>,
    /// For a hard link: the path of the file it links to (its group's first path).
    link_of: Option<Vec<u8>>,
    /// Extended attributes of a directory, sorted by name (a layer that lists the directory as
    /// a parent of its entries carries them; files' xattrs are not kept).
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Node {
    fn new(kind: NodeKind, mode: u32, owner: (u32, u32), size: u64, mtime: i64) -> Node {
        Node {
            kind,
            mode,
            uid: owner.0,
            gid: owner.1,
            size,
            mtime,
            linked: false,
            extra: None,
        }
    }

    /// Content, for the few files whose content the index keeps (`/etc/passwd`, `/etc/group`).
    pub fn content(&self) -> Option<&[u8]> {
        self.extra.as_ref()?.content.as_deref()
    }

    /// For a hard link: the path of the file it links to (its group's first path).
    pub fn link_of(&self) -> Option<&[u8]> {
        self.extra.as_ref()?.link_of.as_deref()
    }

    /// Extended attributes of a directory, sorted by name (files' xattrs are not kept).
    pub fn xattrs(&self) -> &[(String, Vec<u8>)] {
        self.extra.as_ref().map_or(&[], |e| &e.xattrs)
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    fn with_content(mut self, content: Option<Arc<[u8]>>) -> Node {
        if content.is_some() {
            self.extra_mut().content = content;
        }
        self
    }

    fn with_xattrs(mut self, xattrs: Vec<(String, Vec<u8>)>) -> Node {
        if !xattrs.is_empty() {
            self.extra_mut().xattrs = xattrs;
        }
        self
    }

    fn set_link_of(&mut self, target: Vec<u8>) {
        self.extra_mut().link_of = Some(target);
    }
}

/// A directory member's `SCHILY.xattr.*` PAX records, sorted by name.
fn dir_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let Ok(k) = ext.key() {
                if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    out.sort();
    out
}

/// The merged view of a stack of layers: relative path → node.
#[derive(Debug, Clone, Default)]
pub struct FsIndex {
    nodes: BTreeMap<Vec<u8>, Node>,
}

impl FsIndex {
    /// The node at `path` (relative or absolute, not resolved through symlinks).
    pub fn get(&self, path: &[u8]) -> Option<&Node> {
        self.nodes.get(&clean_path(path)?)
    }

    /// Every path, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Node)> {
        self.nodes.iter()
    }

    /// Number of paths.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every path under `dir` (not `dir` itself), in order.
    pub fn children(&self, dir: &[u8]) -> impl Iterator<Item = (&Vec<u8>, &Node)> {
        let mut prefix = dir.to_vec();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        let start = prefix.clone();
        self.nodes
            .range(start..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
    }

    fn remove_tree(&mut self, path: &[u8], keep: &HashSet<Vec<u8>>) {
        if !keep.contains(path) {
            self.nodes.remove(path);
        }
        let victims: Vec<Vec<u8>> = self
            .children(path)
            .map(|(k, _)| k.clone())
            .filter(|k| !keep.contains(k))
            .collect();
        for v in victims {
            self.nodes.remove(&v);
        }
    }

    fn put(&mut self, path: Vec<u8>, node: Node) {
        // Replacing a directory by anything else drops what was below it.
        if node.kind != NodeKind::Dir {
            if let Some(old) = self.nodes.get(&path) {
                if old.kind == NodeKind::Dir {
                    self.remove_tree(&path, &HashSet::new());
                }
            }
        }
        // Missing parents exist implicitly, as a directory unpacker would create them.
        let mut p = path.as_slice();
        while let Some(i) = p.iter().rposition(|&b| b == b'/') {
            p = &p[..i];
            if self.nodes.contains_key(p) {
                break;
            }
            self.nodes
                .insert(p.to_vec(), Node::new(NodeKind::Dir, 0o755, (0, 0), 0, 0));
        }
        self.nodes.insert(path, node);
    }

    /// Applies a layer's uncompressed tar: whiteouts, opaque directories and entries.
    pub fn apply_tar(&mut self, layer: impl Read) -> std::io::Result<()> {
        let mut archive = tar::Archive::new(crate::layer::TarGuard::new(layer));
        let mut added: HashSet<Vec<u8>> = HashSet::new();
        let mut last: Option<Vec<u8>> = None;
        for entry in archive.entries()? {
            // A stream that breaks off is reported after the last member read.
            let mut entry = entry.map_err(|e| match &last {
                Some(m) => std::io::Error::new(
                    e.kind(),
                    format!("after member `{}`: {e}", String::from_utf8_lossy(m)),
                ),
                None => e,
            })?;
            last = Some(entry.path_bytes().into_owned());
            let Some(path) = clean_path(&entry.path_bytes()) else {
                continue;
            };
            if path.is_empty() {
                continue;
            }
            // Where the unpacker puts it: parents resolved through symlinks inside the root.
            let path = self.resolve_parent(&path);
            let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
                Some(i) => (path[..i].to_vec(), path[i + 1..].to_vec()),
                None => (Vec::new(), path.clone()),
            };
            if name == b".wh..wh..opq" {
                let victims: Vec<Vec<u8>> = self
                    .children(&dir)
                    .map(|(k, _)| k.clone())
                    .filter(|k| !added.contains(k))
                    .collect();
                for v in victims {
                    self.nodes.remove(&v);
                }
                continue;
            }
            if let Some(target) = name.strip_prefix(b".wh.") {
                let mut p = dir.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(target);
                self.remove_tree(&p, &added);
                continue;
            }
            let h = entry.header();
            let mode = h.mode().unwrap_or(0o644) & 0o7777;
            let uid = h.uid().unwrap_or(0) as u32;
            let gid = h.gid().unwrap_or(0) as u32;
            let mtime = h.mtime().unwrap_or(0) as i64;
            let size = entry.size();
            let kind = match h.entry_type() {
                tar::EntryType::Directory => NodeKind::Dir,
                tar::EntryType::Symlink => NodeKind::Symlink(
                    entry
                        .link_name_bytes()
                        .map(|l| l.into_owned())
                        .unwrap_or_default(),
                ),
                tar::EntryType::Link => {
                    if let Some(target) = entry.link_name_bytes() {
                        if self.put_hardlink(path.clone(), &target) {
                            added.insert(path);
                        }
                    }
                    continue;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => NodeKind::File,
                tar::EntryType::Fifo | tar::EntryType::Char | tar::EntryType::Block => {
                    NodeKind::Special
                }
                _ => continue,
            };
            let content = if kind == NodeKind::File
                && KEEP_CONTENT.contains(&path.as_slice())
                && size <= 1 << 20
            {
                let mut b = Vec::new();
                entry.read_to_end(&mut b)?;
                Some(Arc::from(b))
            } else {
                None
            };
            let xattrs = if kind == NodeKind::Dir {
                dir_xattrs(&mut entry)
            } else {
                Vec::new()
            };
            added.insert(path.clone());
            self.put(
                path,
                Node::new(kind, mode, (uid, gid), size, mtime)
                    .with_content(content)
                    .with_xattrs(xattrs),
            );
        }
        Ok(())
    }

    /// The directory entries a layer holding `entries` must also hold: every parent directory
    /// of an entry that `entries` does not list, with its metadata in this index (the files
    /// before the step), or as a new `0755` directory owned by root when the index does not have
    /// it. Parents that are not directories here (the entries' paths are resolved) are skipped.
    ///
    /// So every layer kiln writes lists each parent of its entries: applied into an empty
    /// directory (an overlay lower of its own) it gives the parents the metadata of the layers
    /// below, not an unpacker's defaults; and an unpacker that creates a file in a directory
    /// then restores the directory's mtime, instead of leaving the time of the extraction.
    pub fn parent_entries(&self, entries: &[Entry], epoch: i64) -> Vec<Entry> {
        let listed: HashSet<&[u8]> = entries.iter().map(|e| e.path.as_slice()).collect();
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut out = Vec::new();
        for e in entries {
            let mut p = e.path.as_slice();
            while let Some(i) = p.iter().rposition(|&b| b == b'/') {
                p = &p[..i];
                if listed.contains(p) || !seen.insert(p.to_vec()) {
                    continue;
                }
                let (mode, uid, gid, mtime, xattrs) = match self.nodes.get(p) {
                    Some(n) if n.kind == NodeKind::Dir => {
                        (n.mode, n.uid, n.gid, n.mtime, n.xattrs().to_vec())
                    }
                    Some(_) => continue,
                    None => (0o755, 0, 0, epoch, Vec::new()),
                };
                out.push(Entry {
                    path: p.to_vec(),
                    kind: EntryKind::Dir,
                    mode,
                    uid,
                    gid,
                    mtime,
                    xattrs,
                });
            }
        }
        out
    }

    /// Applies the entries of a layer kiln wrote (no whiteouts among them).
    pub fn apply_entries(&mut self, entries: &[Entry]) {
        for e in entries {
            self.apply_entry(e);
        }
    }

    /// As [`FsIndex::apply_entries`], dropping each entry once applied: a large COPY's
    /// entries (their paths, their source files' paths) are freed as the index takes them.
    pub fn apply_owned(&mut self, entries: Vec<Entry>) {
        for e in entries {
            self.apply_entry(&e);
        }
    }

    fn apply_entry(&mut self, e: &Entry) {
        // A hard link shares its target's metadata and size (the target comes first).
        let path = self.resolve_parent(&e.path);
        if let EntryKind::Hardlink(t) = &e.kind {
            if self.put_hardlink(path.clone(), t) {
                return;
            }
        }
        let kind = match &e.kind {
            EntryKind::Dir => NodeKind::Dir,
            EntryKind::Symlink(t) => NodeKind::Symlink(t.clone()),
            EntryKind::File { .. } | EntryKind::Hardlink(_) => NodeKind::File,
            _ => NodeKind::Special,
        };
        let content = match &e.kind {
            EntryKind::File {
                source: crate::layer::FileSource::Bytes(b),
                ..
            } if KEEP_CONTENT.contains(&path.as_slice()) => Some(b.clone()),
            EntryKind::File {
                source: crate::layer::FileSource::Path(p),
                size,
            } if KEEP_CONTENT.contains(&path.as_slice()) && *size <= 1 << 20 => {
                std::fs::read(p).ok().map(Arc::from)
            }
            _ => None,
        };
        let mut xattrs = if kind == NodeKind::Dir {
            e.xattrs.clone()
        } else {
            Vec::new()
        };
        xattrs.sort();
        self.put(
            path,
            Node::new(kind, e.mode, (e.uid, e.gid), e.data_size(), e.mtime)
                .with_content(content)
                .with_xattrs(xattrs),
        );
    }

    /// Puts `path` as a hard link to `target` (as the layer names it): the node shares the
    /// target's metadata and size and records its group's first path, and the target is marked
    /// linked. False, and nothing put, when the target is not in the index.
    fn put_hardlink(&mut self, path: Vec<u8>, target: &[u8]) -> bool {
        let Some(t) = clean_path(target).map(|t| self.resolve_parent(&t)) else {
            return false;
        };
        let Some(mut n) = self.nodes.get(&t).cloned() else {
            return false;
        };
        if let Some(target) = self.nodes.get_mut(&t) {
            target.linked = true;
        }
        let first = n.link_of().map_or(t, <[u8]>::to_vec);
        n.set_link_of(first);
        self.put(path, n);
        true
    }

    /// `path` with its parent directory resolved through symlinks (not its last component): where
    /// a layer member named `path` lands, as the unpacker (`openat2` with `RESOLVE_IN_ROOT`) puts
    /// it. Recording the member under its literal path would let a later read of
    /// `rootfs/<literal path>` follow that symlink on the host, out of the stage's root.
    pub fn resolve_parent(&self, path: &[u8]) -> Vec<u8> {
        let Some(i) = path.iter().rposition(|&b| b == b'/') else {
            return path.to_vec();
        };
        let mut dir = self.resolve(&path[..i], true);
        if !dir.is_empty() {
            dir.push(b'/');
        }
        dir.extend_from_slice(&path[i + 1..]);
        dir
    }

    /// Resolves `path` (absolute, inside the image) through symlinks, as the kernel would inside
    /// a chroot: `..` and absolute targets stay inside the root. `follow_last` also resolves
    /// the last component. Returns the resolved relative path (which may not exist).
    pub fn resolve(&self, path: &[u8], follow_last: bool) -> Vec<u8> {
        let mut todo: Vec<Vec<u8>> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(<[u8]>::to_vec)
            .collect();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            match c.as_slice() {
                b"." => continue,
                b".." => {
                    out.pop();
                    continue;
                }
                _ => {}
            }
            out.push(c);
            let is_last = todo.is_empty();
            if is_last && !follow_last {
                break;
            }
            let joined = out.join(&b'/');
            if let Some(Node {
                kind: NodeKind::Symlink(target),
                ..
            }) = self.nodes.get(&joined)
            {
                hops += 1;
                if hops > 40 {
                    // A loop: leave the rest unresolved, as ELOOP would.
                    out.extend(todo.drain(..).rev());
                    break;
                }
                out.pop();
                if target.first() == Some(&b'/') {
                    out.clear();
                }
                for t in target.split(|&b| b == b'/').filter(|c| !c.is_empty()).rev() {
                    todo.push(t.to_vec());
                }
            }
        }
        out.join(&b'/')
    }
}

mod codec;
#[cfg(test)]
mod tests;
