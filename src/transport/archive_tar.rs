//! The tar files of OCI and docker archives: written with deterministic headers and streamed
//! members; read through [`TarGuard`](crate::layer::TarGuard) with bounded metadata members.
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::layer::tar::{header_bytes, pad, END_OF_ARCHIVE};
use crate::layer::{Entry, EntryKind, FileSource};

use super::{io_err, Error, Result};

/// The most a metadata member (`index.json`, `manifest.json`) of an archive may hold
/// ([`crate::oci::limits::MAX_LAYOUT_INDEX_SIZE`], as for an `oci:` layout's `index.json`).
pub(crate) const MAX_METADATA_MEMBER: u64 = crate::oci::limits::MAX_LAYOUT_INDEX_SIZE;

/// An archive opened for reading: buffered, and guarded like a layer, so hostile PAX or GNU
/// long-name members cannot make the reader buffer without bound.
pub(crate) fn open_archive(
    file: &Path,
) -> Result<tar::Archive<crate::layer::TarGuard<io::BufReader<File>>>> {
    let f = File::open(file).map_err(io_err("cannot read", file))?;
    Ok(tar::Archive::new(crate::layer::TarGuard::new(
        io::BufReader::with_capacity(1 << 20, f),
    )))
}

/// Reads a metadata member whole, refusing one larger than [`MAX_METADATA_MEMBER`].
pub(crate) fn read_metadata_member(member: &mut dyn Read, name: &str) -> io::Result<Vec<u8>> {
    let mut b = Vec::new();
    member.take(MAX_METADATA_MEMBER + 1).read_to_end(&mut b)?;
    if b.len() as u64 > MAX_METADATA_MEMBER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("`{name}` is larger than {MAX_METADATA_MEMBER} bytes"),
        ));
    }
    Ok(b)
}

/// A tar file being written to a temp file beside its destination; `finish` renames it.
pub(crate) struct ArchiveWriter {
    out: BufWriter<NamedTempFile>,
    dest: PathBuf,
}

impl ArchiveWriter {
    /// Refuses a destination that exists and is not a regular file.
    pub(crate) fn create(dest: &Path) -> Result<ArchiveWriter> {
        if let Ok(m) = std::fs::symlink_metadata(dest) {
            if !m.is_file() {
                return Err(io_err("cannot write archive", dest)(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "it exists and is not a regular file",
                )));
            }
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".kiln-archive-")
            .tempfile_in(&dir)
            .map_err(io_err("cannot create a temp file in", &dir))?;
        Ok(ArchiveWriter {
            out: BufWriter::with_capacity(1 << 20, tmp),
            dest: dest.to_path_buf(),
        })
    }

    fn err(&self) -> impl FnOnce(io::Error) -> Error + '_ {
        io_err("cannot write archive", &self.dest)
    }

    pub(crate) fn dir(&mut self, path: &str) -> Result<()> {
        let mut h = Vec::new();
        header_bytes(&Entry::dir(path.trim_end_matches('/'), 0o755), 0, &mut h);
        self.out
            .write_all(&h)
            .map_err(io_err("cannot write archive", &self.dest))
    }

    pub(crate) fn bytes(&mut self, path: &str, data: &[u8]) -> Result<()> {
        let mut h = Vec::new();
        header_bytes(&sized(path, data.len() as u64), 0, &mut h);
        h.extend_from_slice(data);
        pad(&mut h, data.len() as u64);
        self.out
            .write_all(&h)
            .map_err(io_err("cannot write archive", &self.dest))
    }

    /// Streams a member whose size is known only at the end: a placeholder header is written and
    /// patched afterwards (members here have short names, so the header is one block).
    pub(crate) fn stream(&mut self, path: &str, from: &mut dyn Read) -> Result<u64> {
        let dest = self.dest.clone();
        let e = io_err("cannot write archive", &dest);
        self.out.flush().map_err(self.err())?;
        let start = self
            .out
            .get_mut()
            .as_file_mut()
            .stream_position()
            .map_err(self.err())?;
        self.out.write_all(&[0u8; 512]).map_err(self.err())?;
        let n = io::copy(from, &mut self.out).map_err(|source| Error::Io {
            action: "cannot copy into archive",
            path: dest.clone(),
            source,
        })?;
        let mut tail = Vec::new();
        pad(&mut tail, n);
        self.out.write_all(&tail).map_err(self.err())?;
        self.out.flush().map_err(self.err())?;
        let mut h = Vec::new();
        header_bytes(&sized(path, n), 0, &mut h);
        if h.len() != 512 {
            return Err(e(io::Error::other(format!(
                "member `{path}` is too large for this archive writer"
            ))));
        }
        let f = self.out.get_mut().as_file_mut();
        let end = f
            .stream_position()
            .map_err(io_err("cannot write archive", &dest))?;
        f.seek(SeekFrom::Start(start))
            .map_err(io_err("cannot write archive", &dest))?;
        f.write_all(&h)
            .map_err(io_err("cannot write archive", &dest))?;
        f.seek(SeekFrom::Start(end))
            .map_err(io_err("cannot write archive", &dest))?;
        Ok(n)
    }

    pub(crate) fn file(&mut self, path: &str, src: &Path) -> Result<u64> {
        let mut f = File::open(src).map_err(io_err("cannot read", src))?;
        self.stream(path, &mut f)
    }

    pub(crate) fn finish(mut self) -> Result<()> {
        self.out.write_all(&END_OF_ARCHIVE).map_err(self.err())?;
        let dest = self.dest.clone();
        let tmp = self.out.into_inner().map_err(|e| Error::Io {
            action: "cannot write archive",
            path: dest.clone(),
            source: e.into_error(),
        })?;
        tmp.as_file()
            .sync_all()
            .map_err(io_err("cannot sync", &dest))?;
        // Temp files are created 0600; an archive is an output meant to be shared.
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io_err("cannot set permissions of", &dest))?;
        tmp.persist(&dest).map_err(|e| Error::Io {
            action: "cannot write archive",
            path: dest,
            source: e.error,
        })?;
        Ok(())
    }
}

fn sized(path: &str, size: u64) -> Entry {
    let mut e = Entry::file(path, 0o644, Vec::new());
    e.kind = EntryKind::File {
        size,
        source: FileSource::Bytes(Vec::new().into()),
    };
    e
}

/// Normalises a member path read from an archive: strips `./` and leading `/`.
pub(crate) fn clean_member(path: &[u8]) -> String {
    let s = String::from_utf8_lossy(path);
    let mut s: &str = &s;
    loop {
        if let Some(r) = s.strip_prefix("./") {
            s = r;
        } else if let Some(r) = s.strip_prefix('/') {
            s = r;
        } else {
            break;
        }
    }
    s.to_string()
}
