//! The build context: which files COPY and ADD may read, after `.dockerignore`, and how a source
//! path is found in it (wildcards, symlinks resolved inside the context, never outside).
use std::fs::Metadata;
use std::path::{Path, PathBuf};

use crate::dockerfile::ignore::Ignore;

/// A file of the context selected by a COPY source.
///
/// Small on purpose (a context of a million files holds one per file while its cache key is
/// computed and again while COPY lists it): the relative path and the few stat values the
/// cache key and the layer entry need, not a whole `Metadata` nor the absolute path (which
/// [`Context::path_of`] gives back).
#[derive(Debug, Clone)]
pub struct CtxFile {
    /// Path relative to the copied source root (`""` for the source itself).
    pub rel: String,
    /// Its stat values (not following a symlink).
    pub st: Stat,
}

/// A file's type, as COPY distinguishes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symlink.
    Symlink,
    /// A fifo.
    Fifo,
    /// A socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
}

/// The stat values of a context file that COPY and the cache key read.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    /// What the file index needs to trust a recorded hash (device, inode, size, times).
    pub file: crate::cache::FileStat,
    /// The device number of a device node.
    pub rdev: u64,
    /// The type.
    pub kind: FileKind,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    /// Number of hard links (saturated).
    pub nlink: u32,
}

impl From<&Metadata> for Stat {
    fn from(md: &Metadata) -> Stat {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            FileKind::Dir
        } else if ft.is_file() {
            FileKind::File
        } else if ft.is_symlink() {
            FileKind::Symlink
        } else if ft.is_fifo() {
            FileKind::Fifo
        } else if ft.is_socket() {
            FileKind::Socket
        } else if ft.is_char_device() {
            FileKind::CharDevice
        } else {
            FileKind::BlockDevice
        };
        Stat {
            file: md.into(),
            rdev: md.rdev(),
            kind,
            mode: md.mode() & 0o7777,
            nlink: u32::try_from(md.nlink()).unwrap_or(u32::MAX),
        }
    }
}

/// Why a source cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// The source climbs out of the context.
    Escapes(String),
    /// Nothing in the context has that name.
    NotFound(String),
    /// Reading the context failed.
    Io(String, String),
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceError::Escapes(p) => write!(f, "`{p}` is outside the build context"),
            SourceError::NotFound(p) => write!(
                f,
                "`{p}` not found in the build context (or excluded by .dockerignore)"
            ),
            SourceError::Io(p, e) => write!(f, "cannot read `{p}` in the build context: {e}"),
        }
    }
}

impl std::error::Error for SourceError {}

/// The build context directory and its ignore rules.
#[derive(Debug, Clone)]
pub struct Context {
    root: PathBuf,
    ignore: Ignore,
}

/// Cleans a source path relative to the context root; `None` if it climbs out.
pub fn clean_rel(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

/// Whether a source uses wildcards.
pub fn has_wildcard(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// Go's `filepath.Match` for one path component: `*`, `?`, `[...]`/`[^...]`, `\` escapes.
pub fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    fn class(p: &[u8], c: u8) -> Option<(bool, usize)> {
        // p starts after '['; returns (matched, length consumed including ']')
        let mut i = 0;
        let negate = p.first() == Some(&b'^');
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() {
            if p[i] == b']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            let mut lo = p[i];
            if lo == b'\\' {
                i += 1;
                lo = *p.get(i)?;
            }
            let mut hi = lo;
            if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&b| b != b']') {
                hi = p[i + 2];
                if hi == b'\\' {
                    hi = *p.get(i + 3)?;
                    i += 1;
                }
                i += 2;
            }
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 1;
        }
        None
    }
    let (mut p, mut n) = (0, 0);
    let (mut star_p, mut star_n) = (None::<usize>, 0);
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star_p = Some(p);
                    star_n = n;
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                b'[' => {
                    if let Some((true, len)) = class(&pattern[p + 1..], name[n]) {
                        p += 1 + len;
                        n += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == name[n] => {
                    p += 2;
                    n += 1;
                    continue;
                }
                c if c == name[n] => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star_p {
            Some(sp) => {
                p = sp + 1;
                star_n += 1;
                n = star_n;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

impl Context {
    /// A context rooted at `root`, with the ignore rules in `ignore`.
    pub fn new(root: PathBuf, ignore: Ignore) -> Context {
        Context { root, ignore }
    }

    /// The context directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the file `rel` of what [`Context::collect`] gave for the source `base` is on disk.
    pub fn path_of(&self, base: &str, rel: &str) -> PathBuf {
        let mut p = self.root.clone();
        for part in [base, rel] {
            if !part.is_empty() {
                p.push(part);
            }
        }
        p
    }

    fn ignored(&self, rel: &str) -> bool {
        !rel.is_empty() && self.ignore.matches(rel)
    }

    /// Resolves `rel` through symlinks inside the context (an absolute or climbing target stays
    /// inside, as in a chroot) with [`crate::inroot::resolve`], the resolver the sandbox uses
    /// for bind sources too. Returns the resolved relative path.
    fn resolve(&self, rel: &str) -> Result<String, SourceError> {
        let io = |e: String| SourceError::Io(rel.to_string(), e);
        let root = crate::inroot::open_root(&self.root).map_err(|e| io(e.to_string()))?;
        match crate::inroot::resolve(&root, rel.as_bytes(), rustix::fs::OFlags::PATH) {
            Ok((_, path)) => Ok(String::from_utf8_lossy(&path).into_owned()),
            Err(rustix::io::Errno::NOENT) => Err(SourceError::NotFound(rel.to_string())),
            Err(e) => Err(io(std::io::Error::from(e).to_string())),
        }
    }

    /// Expands one source as written in COPY/ADD into context paths (relative, resolved through
    /// symlinks). A wildcard may match nothing (as in BuildKit); a plain path must exist.
    /// Each result pairs the name to copy as (the base name as written) with the resolved path.
    pub fn expand(&self, src: &str) -> Result<Vec<(String, String)>, SourceError> {
        let rel = clean_rel(src.trim_start_matches('/'))
            .ok_or_else(|| SourceError::Escapes(src.to_string()))?;
        if !has_wildcard(&rel) {
            let resolved = self.resolve(&rel)?;
            if self.ignored(&resolved) || self.ignored(&rel) {
                return Err(SourceError::NotFound(src.to_string()));
            }
            let name = rel.rsplit('/').next().unwrap_or("").to_string();
            return Ok(vec![(name, resolved)]);
        }
        let mut found: Vec<String> = vec![String::new()];
        for comp in rel.split('/') {
            let mut next = Vec::new();
            for base in &found {
                // The directory is looked at where it resolves inside the context: a symlinked
                // directory pointing out must not have the host's directory listed.
                let Ok(rbase) = self.resolve(base) else {
                    continue;
                };
                let dir = if rbase.is_empty() {
                    self.root.clone()
                } else {
                    self.root.join(&rbase)
                };
                if !has_wildcard(comp) {
                    let p = if base.is_empty() {
                        comp.to_string()
                    } else {
                        format!("{base}/{comp}")
                    };
                    if std::fs::symlink_metadata(dir.join(comp)).is_ok() {
                        next.push(p);
                    }
                    continue;
                }
                let Ok(rd) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut names: Vec<String> = rd
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| glob_match(comp.as_bytes(), n.as_bytes()))
                    .collect();
                names.sort();
                for n in names {
                    next.push(if base.is_empty() {
                        n
                    } else {
                        format!("{base}/{n}")
                    });
                }
            }
            found = next;
        }
        let mut out = Vec::new();
        for p in found {
            if self.ignored(&p) {
                continue;
            }
            let resolved = self.resolve(&p)?;
            // A match reached through a symlink is ignored when what it resolves to is.
            if self.ignored(&resolved) {
                continue;
            }
            let name = p.rsplit('/').next().unwrap_or("").to_string();
            out.push((name, resolved));
        }
        Ok(out)
    }

    /// The resolved source `rel` and, if it is a directory, everything below it that
    /// `.dockerignore` and `excludes` let through, sorted by path. Directories whose contents are
    /// all ignored are still listed when they are not ignored themselves.
    pub fn collect(&self, rel: &str, excludes: &Ignore) -> Result<Vec<CtxFile>, SourceError> {
        let abs = if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        };
        let md = std::fs::symlink_metadata(&abs)
            .map_err(|e| SourceError::Io(rel.to_string(), e.to_string()))?;
        let mut out = vec![CtxFile {
            rel: String::new(),
            st: Stat::from(&md),
        }];
        if md.is_dir() {
            self.walk(rel, "", &abs, excludes, &mut out)?;
        }
        out.sort_unstable_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
        out.shrink_to_fit();
        Ok(out)
    }

    fn walk(
        &self,
        base: &str,
        sub: &str,
        dir: &Path,
        excludes: &Ignore,
        out: &mut Vec<CtxFile>,
    ) -> Result<(), SourceError> {
        let rd = std::fs::read_dir(dir)
            .map_err(|e| SourceError::Io(dir.display().to_string(), e.to_string()))?;
        for e in rd {
            let e = e.map_err(|e| SourceError::Io(dir.display().to_string(), e.to_string()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let rel_sub = if sub.is_empty() {
                name.clone()
            } else {
                format!("{sub}/{name}")
            };
            let ctx_rel = if base.is_empty() {
                rel_sub.clone()
            } else {
                format!("{base}/{rel_sub}")
            };
            let abs = e.path();
            let md = std::fs::symlink_metadata(&abs)
                .map_err(|e| SourceError::Io(ctx_rel.clone(), e.to_string()))?;
            let ignored = self.ignored(&ctx_rel)
                || (!excludes.patterns().is_empty() && excludes.matches(&rel_sub));
            if md.is_dir() {
                let descend = !ignored || self.ignore.has_exclusions() || excludes.has_exclusions();
                if descend {
                    let before = out.len();
                    self.walk(base, &rel_sub, &abs, excludes, out)?;
                    // A re-included file keeps its (ignored) parent directory.
                    if !ignored || out.len() > before {
                        out.push(CtxFile {
                            rel: rel_sub,
                            st: Stat::from(&md),
                        });
                    }
                }
            } else if !ignored {
                out.push(CtxFile {
                    rel: rel_sub,
                    st: Stat::from(&md),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_go_filepath_match() {
        for (p, n, want) in [
            ("*.txt", "a.txt", true),
            ("*.txt", "a.md", false),
            ("a?c", "abc", true),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("[!a-c]x", "dx", false), // `!` is literal in Go
            ("\\*", "*", true),
            ("*", "", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
        ] {
            assert_eq!(glob_match(p.as_bytes(), n.as_bytes()), want, "{p} vs {n}");
        }
    }

    #[test]
    fn sources_resolve_inside_the_context() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("dir/sub")).unwrap();
        std::fs::write(r.join("dir/a.txt"), b"a").unwrap();
        std::fs::write(r.join("dir/b.md"), b"b").unwrap();
        std::fs::write(r.join("dir/sub/c.txt"), b"c").unwrap();
        std::os::unix::fs::symlink("/dir/a.txt", r.join("abs-link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("outside")).unwrap();
        let ctx = Context::new(r.to_path_buf(), Ignore::parse("dir/b.md\n").unwrap());
        assert_eq!(
            ctx.expand("abs-link").unwrap(),
            vec![("abs-link".to_string(), "dir/a.txt".to_string())]
        );
        assert!(matches!(
            ctx.expand("outside"),
            Err(SourceError::NotFound(_))
        ));
        assert!(matches!(ctx.expand("../x"), Err(SourceError::Escapes(_))));
        assert!(matches!(
            ctx.expand("dir/b.md"),
            Err(SourceError::NotFound(_))
        ));
        let globbed: Vec<String> = ctx
            .expand("dir/*")
            .unwrap()
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(globbed, ["dir/a.txt", "dir/sub"]);
        assert!(ctx.expand("nothing*").unwrap().is_empty());
        let files: Vec<String> = ctx
            .collect("dir", &Ignore::default())
            .unwrap()
            .into_iter()
            .map(|f| f.rel)
            .collect();
        assert_eq!(files, ["", "a.txt", "sub", "sub/c.txt"]);
    }

    /// #21: a context file costs its path and a few stat values, not a `Metadata` (176 bytes)
    /// and an absolute path: a context of a million files is listed twice (cache key, COPY).
    #[test]
    fn a_context_file_is_its_path_and_a_small_stat() {
        assert!(std::mem::size_of::<CtxFile>() <= 104);
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/f"), b"x").unwrap();
        let ctx = Context::new(d.path().to_path_buf(), Ignore::default());
        let files = ctx.collect("sub", &Ignore::default()).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(ctx.path_of("sub", &files[1].rel), d.path().join("sub/f"));
        assert_eq!(ctx.path_of("sub", &files[0].rel), d.path().join("sub"));
        assert_eq!(
            (files[1].st.kind, files[1].st.file.size),
            (FileKind::File, 1)
        );
    }

    /// Regression: wildcard expansion listed a symlinked directory where the host resolved it
    /// (outside the context), and let a match through a symlink reach an ignored file.
    #[test]
    fn wildcards_never_list_outside_or_reach_ignored_files_through_links() {
        let d = tempfile::tempdir().unwrap();
        let (r, out) = (d.path().join("ctx"), d.path().join("outside"));
        std::fs::create_dir_all(r.join("private")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("host-secret"), b"s").unwrap();
        std::fs::write(r.join("private/key"), b"k").unwrap();
        std::os::unix::fs::symlink(&out, r.join("outdir")).unwrap();
        std::os::unix::fs::symlink("../outside", r.join("reldir")).unwrap();
        std::os::unix::fs::symlink("private", r.join("alias")).unwrap();
        let ctx = Context::new(r.clone(), Ignore::parse("private\n").unwrap());
        for src in ["outdir/*", "reldir/*", "outdir/host-*", "*/host-secret"] {
            assert_eq!(ctx.expand(src).unwrap(), vec![], "{src}");
        }
        assert_eq!(ctx.expand("alias/*").unwrap(), vec![]);
        assert!(matches!(
            ctx.expand("alias/key"),
            Err(SourceError::NotFound(_))
        ));
        assert!(matches!(
            ctx.expand("outdir/host-secret"),
            Err(SourceError::NotFound(_))
        ));
    }
}
