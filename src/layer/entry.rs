//! One entry of a layer: a path, its type and its metadata.
use std::path::PathBuf;
use std::sync::Arc;

/// The file-name prefix that marks a deleted path in a layer (OCI image spec, "Whiteouts").
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The file name that marks a directory whose lower contents are hidden ("opaque").
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// Where a regular file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// A file on disk, read while the tar is written.
    Path(PathBuf),
    /// Bytes in memory (heredocs, generated files, whiteouts).
    Bytes(Arc<[u8]>),
}

/// The type of an entry, with what that type needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file of `size` bytes.
    File {
        /// The size in bytes.
        size: u64,
        /// Where the bytes come from.
        source: FileSource,
    },
    /// A directory.
    Dir,
    /// A symbolic link to the given target (bytes, verbatim).
    Symlink(Vec<u8>),
    /// A hard link to another entry's path in the same layer.
    Hardlink(Vec<u8>),
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

/// One layer entry. `path` is relative, `/`-separated, without `./`, a leading or a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path inside the layer.
    pub path: Vec<u8>,
    /// The type.
    pub kind: EntryKind,
    /// Permission bits, with setuid, setgid and sticky (`0o7777` at most).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Modification time, seconds since the epoch (clamped by the writer).
    pub mtime: i64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// A regular file with in-memory content.
    pub fn file(path: impl Into<Vec<u8>>, mode: u32, content: impl Into<Arc<[u8]>>) -> Entry {
        let content: Arc<[u8]> = content.into();
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                size: content.len() as u64,
                source: FileSource::Bytes(content),
            },
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        }
    }

    /// A directory.
    pub fn dir(path: impl Into<Vec<u8>>, mode: u32) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Dir,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        }
    }

    /// A symbolic link.
    pub fn symlink(path: impl Into<Vec<u8>>, target: impl Into<Vec<u8>>) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Symlink(target.into()),
            mode: 0o777,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        }
    }

    /// The whiteout that deletes `path` in the layers below.
    pub fn whiteout(path: &[u8]) -> Entry {
        let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..=i], &path[i + 1..]),
            None => (&b""[..], path),
        };
        let mut p = dir.to_vec();
        p.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
        p.extend_from_slice(name);
        Entry::file(p, 0, Vec::new())
    }

    /// The opaque marker that hides everything below directory `dir` in the layers below.
    pub fn opaque_whiteout(dir: &[u8]) -> Entry {
        let mut p = dir.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(OPAQUE_WHITEOUT.as_bytes());
        Entry::file(p, 0, Vec::new())
    }

    /// The size of the entry's data in the tar (0 for everything but regular files).
    pub fn data_size(&self) -> u64 {
        match &self.kind {
            EntryKind::File { size, .. } => *size,
            _ => 0,
        }
    }
}

/// Splits a path read from a tar or an image into its components, dropping empty ones and `.`
/// and resolving `..`; `None` if it climbs out of the root.
pub fn path_components(path: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// `./a//b/` → `a/b`, `a/../b` → `b`; `None` if the path climbs out of the root.
pub fn clean_path(path: &[u8]) -> Option<Vec<u8>> {
    path_components(path).map(|c| c.join(&b'/'))
}

/// Checks that `path` is clean: relative, no empty, `.` or `..` components, no NUL.
pub(crate) fn validate_path(path: &[u8]) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.contains(&0) {
        return Err("contains a NUL byte");
    }
    if path[0] == b'/' {
        return Err("absolute path");
    }
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" => return Err("empty component or trailing `/`"),
            b"." | b".." => return Err("`.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_names_follow_the_oci_spec() {
        assert_eq!(Entry::whiteout(b"a/b/c").path, b"a/b/.wh.c");
        assert_eq!(Entry::whiteout(b"top").path, b".wh.top");
        assert_eq!(Entry::opaque_whiteout(b"a/b").path, b"a/b/.wh..wh..opq");
    }

    #[test]
    fn member_paths_are_cleaned_and_escapes_refused() {
        assert_eq!(clean_path(b"./a//b/").unwrap(), b"a/b");
        assert_eq!(clean_path(b"./").unwrap(), b"");
        assert_eq!(clean_path(b"a/../b").unwrap(), b"b");
        assert!(clean_path(b"../x").is_none());
        assert!(clean_path(b"a/../../x").is_none());
    }

    #[test]
    fn unclean_paths_are_rejected() {
        for p in [
            &b""[..],
            b"/abs",
            b"a//b",
            b"a/../b",
            b"./a",
            b"a/",
            b"a\0b",
        ] {
            assert!(
                validate_path(p).is_err(),
                "{:?}",
                String::from_utf8_lossy(p)
            );
        }
        assert!(validate_path(b"a/b.c/d").is_ok());
    }
}
