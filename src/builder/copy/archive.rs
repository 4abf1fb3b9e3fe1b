//! `ADD` of a local archive: recognised by its bytes (tar, possibly compressed), extracted
//! into the destination keeping its members' owners and modes.
use super::*;

/// Opens `p` as a tar archive (decompressing gzip, bzip2, xz, zstd) if it is one.
pub(super) fn open_archive(p: &Path) -> Result<Option<Box<dyn Read>>, CopyError> {
    let err = |e: std::io::Error| CopyError::Other(format!("cannot read `{}`: {e}", p.display()));
    let f = std::fs::File::open(p).map_err(err)?;
    let mut r = BufReader::with_capacity(1 << 16, f);
    let head = r.fill_buf().map_err(err)?.to_vec();
    let format = crate::layer::sniff_compression(&head);
    let reader: Box<dyn Read> = match format {
        crate::layer::Compressed::None if head.len() >= 262 && &head[257..262] == b"ustar" => {
            Box::new(r)
        }
        crate::layer::Compressed::None => return Ok(None),
        // Without the `zstd` feature a zstd file is copied as it is.
        crate::layer::Compressed::Zstd if !cfg!(feature = "zstd") => return Ok(None),
        _ => crate::layer::decompressor(r, format, p).map_err(err)?,
    };
    // A compressed file that is not a tar is copied as it is (BuildKit does the same).
    let mut peek = BufReader::with_capacity(1024, reader);
    let h = peek.fill_buf().map_err(err)?;
    if h.len() < 262 || &h[257..262] != b"ustar" {
        return Ok(None);
    }
    Ok(Some(Box::new(peek)))
}

pub(super) fn extract(
    reader: Box<dyn Read>,
    base: &[u8],
    input: &CopyInput<'_>,
    out: &mut Out<'_>,
    archive: &Path,
) -> Result<(), CopyError> {
    let bad = |e: String| CopyError::Other(format!("cannot extract `{}`: {e}", archive.display()));
    let dir = tempfile::Builder::new()
        .prefix("add-")
        .tempdir_in(input.scratch)
        .map_err(|e| bad(e.to_string()))?;
    let dir = dir.keep();
    // The destination is created like any COPY destination (owned by `--chown`); directories
    // the archive implies without listing them are root's, as BuildKit's unpack makes them.
    if !base.is_empty() && !matches!(input.dest.get(base), Some(n) if n.kind == NodeKind::Dir) {
        out.add_dir(base.to_vec());
    }
    let dest_owner = std::mem::replace(&mut out.parent_owner, Owner { uid: 0, gid: 0 });
    let result = extract_members(reader, base, input, out, &dir, &bad);
    out.parent_owner = dest_owner;
    result
}

pub(super) fn extract_members(
    reader: Box<dyn Read>,
    base: &[u8],
    input: &CopyInput<'_>,
    out: &mut Out<'_>,
    dir: &Path,
    bad: &dyn Fn(String) -> CopyError,
) -> Result<(), CopyError> {
    let mut a = tar::Archive::new(crate::layer::TarGuard::new(reader));
    let mut n = 0u64;
    for entry in a.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let raw = entry.path_bytes().into_owned();
        let Some(rel) = clean_rel(&String::from_utf8_lossy(&raw)) else {
            return Err(bad(format!(
                "member `{}` climbs out of the destination",
                String::from_utf8_lossy(&raw)
            )));
        };
        if rel.is_empty() {
            continue;
        }
        let h = entry.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink(
                entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default(),
            ),
            tar::EntryType::Link => {
                let t = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                let t = clean_rel(&String::from_utf8_lossy(&t))
                    .ok_or_else(|| bad("hard link climbs out".into()))?;
                EntryKind::Hardlink(join(base, t.as_bytes()))
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                n += 1;
                let p: PathBuf = dir.join(format!("{n}"));
                let mut f = std::fs::File::create(&p).map_err(|e| bad(e.to_string()))?;
                let size = std::io::copy(&mut entry, &mut f).map_err(|e| bad(e.to_string()))?;
                EntryKind::File {
                    size,
                    source: FileSource::Path(p),
                }
            }
            tar::EntryType::Fifo => EntryKind::Fifo,
            _ => continue,
        };
        let mut e = Entry {
            path: join(base, rel.as_bytes()),
            kind,
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            mtime: h.mtime().unwrap_or(0) as i64,
            xattrs: Vec::new(),
        };
        if let Some(o) = input.owner {
            e.uid = o.uid;
            e.gid = o.gid;
        }
        if let Some(m) = input.chmod {
            if !matches!(e.kind, EntryKind::Symlink(_)) {
                e.mode = m;
            }
        }
        out.add(e);
    }
    Ok(())
}
