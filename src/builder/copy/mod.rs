//! COPY and ADD: sources (context, another stage, an image, heredocs, local archives) → the
//! entries of a layer, with BuildKit's rules for where each lands.
//!
//! The rules, in the order they are applied:
//! - a source that is a directory has its *contents* copied; anything else is copied itself;
//! - the destination is a directory if it ends with `/`, if there are several sources (or a
//!   wildcard matched several paths), or if it already is a directory in the image (followed
//!   through symlinks inside the image, unless `--link`); otherwise it names the file;
//! - missing parent directories are created (0755, owned by the `--chown` owner or root);
//! - files from the context are owned by 0:0 and files from a stage or image keep their owner,
//!   unless `--chown`; `--chmod` sets the mode of every copied file and directory;
//! - with `--parents`, each source keeps its path (below a `/./` pivot, if any) under the
//!   destination; `--exclude` patterns are matched against paths below each source;
//! - ADD extracts local tar archives (plain, gzip, bzip2, xz, zstd) into the destination,
//!   keeping their owners and modes (unless `--chown`/`--chmod`), unless `--unpack=false`.
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::dockerfile::ignore::Ignore;
use crate::layer::{Entry, EntryKind, FileSource};
use crate::plan::{CopyStep, InlineFile};

use super::context::{clean_rel, glob_match, has_wildcard, Context, FileKind, SourceError, Stat};
use super::fsindex::{FsIndex, NodeKind};
use super::user::Owner;

/// Where a COPY reads from.
pub enum SourceFs<'a> {
    /// The build context.
    Context(&'a Context),
    /// A stage or image: its index, and the directory its layers were applied to.
    Tree {
        /// Metadata of the source filesystem.
        index: &'a FsIndex,
        /// Where its files are on disk.
        rootfs: &'a Path,
    },
}

/// Everything a COPY/ADD needs besides the step.
pub struct CopyInput<'a> {
    /// Where sources are read.
    pub source: SourceFs<'a>,
    /// The destination stage's filesystem (empty for `--link`).
    pub dest: &'a FsIndex,
    /// `--chown`, resolved.
    pub owner: Option<Owner>,
    /// `--chmod`, parsed.
    pub chmod: Option<u32>,
    /// A scratch directory for extracted archives.
    pub scratch: &'a Path,
    /// URLs of ADD, already downloaded into the store: url → (blob path, digest, size, mtime).
    pub urls: &'a BTreeMap<String, (PathBuf, super::fetch::Fetched)>,
    /// `ADD` git URLs, already fetched: url → (the directory it names, with its `.git`; the
    /// commit).
    pub gits: &'a BTreeMap<String, (PathBuf, String)>,
    /// The build epoch, the newest mtime a context file is given: git keeps no mtimes, so a
    /// checkout's are the time of the checkout, noise that would make COPY irreproducible.
    pub epoch: i64,
}

/// Why a COPY failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyError {
    /// A context source problem.
    Source(SourceError),
    /// A source missing from a stage or image.
    NotInStage(String),
    /// Anything else, with its message.
    Other(String),
}

impl std::fmt::Display for CopyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyError::Source(e) => e.fmt(f),
            CopyError::NotInStage(p) => write!(f, "`{p}` not found in the source stage or image"),
            CopyError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CopyError {}

impl From<SourceError> for CopyError {
    fn from(e: SourceError) -> Self {
        CopyError::Source(e)
    }
}

/// Parses `--chmod` (octal).
pub fn parse_chmod(s: &str) -> Result<u32, CopyError> {
    match u32::from_str_radix(s, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(CopyError::Other(format!(
            "invalid --chmod `{s}`: expected an octal mode such as 0755"
        ))),
    }
}

fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_vec(),
        (_, true) => a.to_vec(),
        _ => {
            let mut v = a.to_vec();
            v.push(b'/');
            v.extend_from_slice(b);
            v
        }
    }
}

/// Collects entries by path; later writes to a path win; parents are added on demand.
///
/// Entries added in increasing path order (a directory source's files come sorted, each after
/// its parents) stay in a flat list, searched by binary search; the first one out of order
/// moves them all into a map, which then behaves as before. A large COPY thus costs one
/// entry per file, not a map node too.
struct Out<'a> {
    /// Strictly increasing by path while `map` is `None`.
    sorted: Vec<Entry>,
    map: Option<BTreeMap<Vec<u8>, Entry>>,
    dest: &'a FsIndex,
    parent_owner: Owner,
}

impl Out<'_> {
    fn contains(&self, p: &[u8]) -> bool {
        match &self.map {
            Some(m) => m.contains_key(p),
            None => self
                .sorted
                .binary_search_by(|e| e.path.as_slice().cmp(p))
                .is_ok(),
        }
    }

    fn insert(&mut self, e: Entry) {
        if self.map.is_none() {
            if self.sorted.last().is_none_or(|l| l.path < e.path) {
                self.sorted.push(e);
                return;
            }
            let sorted = std::mem::take(&mut self.sorted);
            self.map = Some(sorted.into_iter().map(|e| (e.path.clone(), e)).collect());
        }
        if let Some(m) = &mut self.map {
            m.insert(e.path.clone(), e);
        }
    }

    /// Room for `n` more entries, while they are kept in order.
    fn reserve(&mut self, n: usize) {
        if self.map.is_none() {
            self.sorted.reserve(n);
        }
    }

    /// The entries, in path order.
    fn into_entries(self) -> Vec<Entry> {
        match self.map {
            Some(m) => m.into_values().collect(),
            None => self.sorted,
        }
    }

    fn ensure_parents(&mut self, path: &[u8]) {
        let mut ends: Vec<usize> = path
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'/')
            .map(|(i, _)| i)
            .collect();
        ends.reverse();
        while let Some(i) = ends.pop() {
            let p = &path[..i];
            if self.contains(p) {
                continue;
            }
            match self.dest.get(p) {
                Some(n) if n.kind == NodeKind::Dir => continue,
                _ => {}
            }
            let mut e = Entry::dir(p.to_vec(), 0o755);
            e.uid = self.parent_owner.uid;
            e.gid = self.parent_owner.gid;
            self.insert(e);
        }
    }

    fn add_dir(&mut self, path: Vec<u8>) {
        let mut e = Entry::dir(path, 0o755);
        e.uid = self.parent_owner.uid;
        e.gid = self.parent_owner.gid;
        self.add(e);
    }

    fn add(&mut self, e: Entry) {
        self.ensure_parents(&e.path.clone());
        self.insert(e);
    }
}

/// What the entry for a source item should be, before owner/mode overrides.
struct Item {
    kind: EntryKind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    key: Option<(u64, u64)>,
}

fn device_numbers(rdev: u64) -> (u32, u32) {
    let dev = rdev as rustix::fs::Dev;
    (rustix::fs::major(dev), rustix::fs::minor(dev))
}

fn ctx_item(abs: PathBuf, st: &Stat) -> Result<Item, CopyError> {
    let kind = match st.kind {
        FileKind::Dir => EntryKind::Dir,
        FileKind::File => EntryKind::File {
            size: st.file.size,
            source: FileSource::Path(abs),
        },
        FileKind::Symlink => {
            let t = std::fs::read_link(&abs).map_err(|e| {
                CopyError::Other(format!("cannot read link `{}`: {e}", abs.display()))
            })?;
            EntryKind::Symlink(std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str()).to_vec())
        }
        FileKind::Fifo => EntryKind::Fifo,
        FileKind::Socket => {
            return Err(CopyError::Other(format!(
                "`{}` is a socket; sockets cannot be copied into an image",
                abs.display()
            )))
        }
        FileKind::CharDevice => {
            let (major, minor) = device_numbers(st.rdev);
            EntryKind::CharDevice { major, minor }
        }
        FileKind::BlockDevice => {
            let (major, minor) = device_numbers(st.rdev);
            EntryKind::BlockDevice { major, minor }
        }
    };
    let key = (st.kind == FileKind::File && st.nlink > 1).then_some((st.file.dev, st.file.ino));
    Ok(Item {
        kind,
        mode: st.mode,
        uid: 0,
        gid: 0,
        mtime: st.file.mtime.0,
        key,
    })
}

/// Computes the entries of a COPY or ADD step.
pub fn copy_entries(step: &CopyStep, input: &CopyInput<'_>) -> Result<Vec<Entry>, CopyError> {
    let dest_raw = step.dest.as_str();
    let trailing = dest_raw.ends_with('/');
    let dest_rel: Vec<u8> = if step.link {
        clean_rel(dest_raw).unwrap_or_default().into_bytes()
    } else {
        input.dest.resolve(dest_raw.as_bytes(), true)
    };
    let excludes = Ignore::parse(&step.excludes.join("\n"))
        .map_err(|e| CopyError::Other(format!("invalid --exclude: {e}")))?;
    let parent_owner = input.owner.unwrap_or(Owner { uid: 0, gid: 0 });
    let mut out = Out {
        sorted: Vec::new(),
        map: None,
        dest: input.dest,
        parent_owner,
    };
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();

    // Expand every source first: the destination rule depends on how many there are.
    struct Src {
        name: String,
        path: String,
        parents_prefix: String,
        /// An `ADD` git source: the checkout, read as a context of its own.
        git: Option<Context>,
    }
    let mut srcs: Vec<Src> = Vec::new();
    let mut urls = Vec::new();
    for s in &step.sources {
        if step.add && crate::plan::is_git_source(s) {
            let (dir, commit) = input
                .gits
                .get(s)
                .ok_or_else(|| CopyError::Other(format!("`{s}` was not fetched")))?;
            // As BuildKit: `--checksum` of a git source is the commit it must be at.
            if let Some(want) = &step.checksum {
                if !commit.starts_with(want.as_str()) || want.len() < 7 {
                    return Err(CopyError::Other(format!(
                        "checksum of `{s}` does not match: expected commit `{want}`, got `{commit}`"
                    )));
                }
            }
            // BuildKit drops `.git` unless `--keep-git-dir`.
            let ignore = if step.keep_git_dir {
                Ignore::default()
            } else {
                Ignore::parse(".git\n**/.git").map_err(|e| CopyError::Other(e.to_string()))?
            };
            srcs.push(Src {
                name: String::new(),
                path: String::new(),
                parents_prefix: String::new(),
                git: Some(Context::new(dir.clone(), ignore)),
            });
            continue;
        }
        if step.add && (s.starts_with("http://") || s.starts_with("https://")) {
            urls.push(s.clone());
            continue;
        }
        let matched: Vec<(String, String)> = match &input.source {
            SourceFs::Context(ctx) => ctx.expand(s)?,
            SourceFs::Tree { index, .. } => expand_tree(index, s)?,
        };
        for (name, path) in matched {
            let written = clean_rel(s.trim_start_matches('/')).unwrap_or_default();
            let parents_prefix = if step.parents {
                let pivot = s
                    .find("/./")
                    .map(|i| clean_rel(&s[i + 3..]).unwrap_or_default());
                let rel = if has_wildcard(&written) {
                    path.clone()
                } else {
                    written.clone()
                };
                match pivot {
                    Some(p) if !has_wildcard(&p) => p,
                    _ => rel,
                }
            } else {
                String::new()
            };
            srcs.push(Src {
                name,
                path,
                parents_prefix,
                git: None,
            });
        }
    }
    let count = srcs.len() + step.inline.len() + urls.len();
    let dest_is_dir = trailing
        || step.sources.len() + step.inline.len() > 1
        || count > 1
        || matches!(input.dest.get(&dest_rel), Some(n) if n.kind == NodeKind::Dir)
        || step.parents;

    for url in &urls {
        let Some((blob, fetched)) = input.urls.get(url) else {
            return Err(CopyError::Other(format!("`{url}` was not downloaded")));
        };
        if let Some(want) = &step.checksum {
            if want != &fetched.digest.to_string() {
                return Err(CopyError::Other(format!(
                    "checksum of `{url}` does not match: expected `{want}`, got `{}`",
                    fetched.digest
                )));
            }
        }
        let name = super::fetch::url_file_name(url);
        let path = if dest_is_dir {
            join(&dest_rel, name.as_bytes())
        } else {
            dest_rel.clone()
        };
        let owner = input.owner.unwrap_or(Owner { uid: 0, gid: 0 });
        // BuildKit gives downloaded files mode 0600 and the server's Last-Modified time. The
        // step is cached by the content's digest, not that time, so kiln limits it to the epoch
        // as it does a context file's mtime: the same content gives the same layer.
        out.add(Entry {
            path,
            kind: EntryKind::File {
                size: fetched.size,
                source: FileSource::Path(blob.clone()),
            },
            mode: input.chmod.unwrap_or(0o600),
            uid: owner.uid,
            gid: owner.gid,
            mtime: fetched.mtime.unwrap_or(0).min(input.epoch),
            xattrs: Vec::new(),
        });
    }
    for f in &step.inline {
        let path = if dest_is_dir {
            join(&dest_rel, f.name.as_bytes())
        } else {
            dest_rel.clone()
        };
        out.add(inline_entry(f, path, input));
    }

    for src in &srcs {
        let source = match &src.git {
            Some(ctx) => &SourceFs::Context(ctx),
            None => &input.source,
        };
        // A context's files become items one at a time, as they are added (a context of a
        // million files is listed once, not again as items).
        let items: Box<dyn Iterator<Item = Result<(String, Item), CopyError>> + '_> = match source {
            SourceFs::Context(ctx) => {
                let files = ctx.collect(&src.path, &excludes)?;
                let base = src.path.clone();
                Box::new(files.into_iter().map(move |f| {
                    ctx_item(ctx.path_of(&base, &f.rel), &f.st).map(|mut i| {
                        i.mtime = i.mtime.min(input.epoch);
                        (f.rel, i)
                    })
                }))
            }
            SourceFs::Tree { index, rootfs } => Box::new(
                tree_items(index, rootfs, &src.path, &excludes)?
                    .into_iter()
                    .map(Ok),
            ),
        };
        let mut items = items.peekable();
        out.reserve(items.size_hint().0);
        let top = match items.peek() {
            None => continue,
            Some(Err(_)) => return Err(items.next().and_then(Result::err).expect("peeked")),
            Some(Ok((_, top))) => top,
        };
        let is_dir = matches!(top.kind, EntryKind::Dir);
        // ADD of a local archive: extract it.
        if step.add && !is_dir && step.unpack != Some(false) {
            if let EntryKind::File {
                source: FileSource::Path(p),
                ..
            } = &top.kind
            {
                if let Some(reader) = open_archive(p)? {
                    let base = if src.parents_prefix.is_empty() {
                        dest_rel.clone()
                    } else {
                        join(&dest_rel, src.parents_prefix.as_bytes())
                    };
                    extract(reader, &base, input, &mut out, p)?;
                    continue;
                }
            }
        }
        let base: Vec<u8> = if is_dir {
            if step.parents {
                join(&dest_rel, src.parents_prefix.as_bytes())
            } else {
                dest_rel.clone()
            }
        } else if step.parents {
            join(&dest_rel, src.parents_prefix.as_bytes())
        } else if dest_is_dir {
            join(&dest_rel, src.name.as_bytes())
        } else {
            dest_rel.clone()
        };
        for item in items {
            let (rel, item) = item?;
            let path = join(&base, rel.as_bytes());
            if path.is_empty() {
                continue; // the root of the image itself
            }
            if rel.is_empty() && is_dir {
                // The directory that receives a directory's contents: left as it is when it
                // exists; otherwise created 0755, owned by the `--chown` owner or root, like
                // the parents (BuildKit's fsutil `prepareTargetDir`), not with the source's mode.
                if !matches!(input.dest.get(&path), Some(n) if n.kind == NodeKind::Dir) {
                    out.add_dir(path);
                }
                continue;
            }
            let mut kind = item.kind;
            if let Some(k) = item.key {
                match links.get(&k) {
                    Some(first) => kind = EntryKind::Hardlink(first.clone()),
                    None => {
                        links.insert(k, path.clone());
                    }
                }
            }
            let is_link = matches!(kind, EntryKind::Symlink(_));
            let mut e = Entry {
                path,
                kind,
                mode: item.mode,
                uid: item.uid,
                gid: item.gid,
                mtime: item.mtime,
                xattrs: Vec::new(),
            };
            if let Some(o) = input.owner {
                e.uid = o.uid;
                e.gid = o.gid;
            }
            if let Some(m) = input.chmod {
                if !is_link {
                    e.mode = m;
                }
            }
            out.add(e);
        }
    }
    Ok(link_order(out.into_entries()))
}

/// The entries in path order, with every hard link after the file it links to: a tar is read in
/// order, so within each group of links the first path carries the content and the others link
/// to it (an archive may list a link before its target by path).
fn link_order(mut entries: Vec<Entry>) -> Vec<Entry> {
    let find =
        |entries: &[Entry], p: &[u8]| entries.binary_search_by(|e| e.path.as_slice().cmp(p)).ok();
    let mut groups: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for e in &entries {
        if let EntryKind::Hardlink(t) = &e.kind {
            groups.entry(t.clone()).or_default().push(e.path.clone());
        }
    }
    for (target, links) in groups {
        let first = links.iter().min().cloned().unwrap_or_default();
        if first >= target {
            continue;
        }
        let Some(t) = find(&entries, &target) else {
            continue;
        };
        // `first` becomes the file; the old target and the other links point at it.
        let file = entries[t].clone();
        if let Some(i) = find(&entries, &first) {
            let path = std::mem::take(&mut entries[i].path);
            entries[i] = Entry { path, ..file };
        }
        for p in links
            .iter()
            .filter(|p| **p != first)
            .chain(std::iter::once(&target))
        {
            if let Some(i) = find(&entries, p) {
                entries[i].kind = EntryKind::Hardlink(first.clone());
            }
        }
    }
    entries
}

fn inline_entry(f: &InlineFile, path: Vec<u8>, input: &CopyInput<'_>) -> Entry {
    let mut e = Entry::file(
        path,
        input.chmod.unwrap_or(0o644),
        f.data.clone().into_bytes(),
    );
    if let Some(o) = input.owner {
        e.uid = o.uid;
        e.gid = o.gid;
    }
    e
}

mod archive;
mod tree;

use archive::{extract, open_archive};
use tree::{expand_tree, tree_items};
