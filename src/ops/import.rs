//! `kiln import SRC -t NAME`: a root filesystem (directory or tarball) becomes a one-layer image.
//!
//! A directory and its tarball give the same layer: a tarball's members are written sorted by
//! path bytes, with each hard link group's first path carrying the data, as the directory walk
//! does. A directory's owners go through [`ImportOptions::ids`] (a rootless caller's view: the
//! CLI maps the caller to 0 and its subordinate ranges to 1.., or re-runs the import as root in
//! a user namespace so that files of subordinate owners can be read); tarballs hold container
//! ids already.
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::image::{Image, ImageBuilder, NewLayer};
use crate::layer::{
    clean_path, Entry, EntryKind, FileSource, IdMap, LayerOptions, LayerSummary, LayerWriter,
    WalkOptions,
};
use crate::oci::{Descriptor, Platform};
use crate::progress::Reporter;
use crate::store::{BlobWriter, Store};
use crate::transport::{write_from_store, Target};

use super::{Error, Result};

/// Options of `kiln import`.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// A directory, or a tar file (plain, gzip, zstd).
    pub source: PathBuf,
    /// Names in the local store.
    pub names: Vec<String>,
    /// Extra destinations.
    pub outputs: Vec<Target>,
    /// The platform written into the config.
    pub platform: Platform,
    /// Layer compression, threads and the epoch mtimes are clamped to (`i64::MAX` keeps them).
    pub layer: LayerOptions,
    /// The image's `created` and history time, seconds since 1970.
    pub created: i64,
    /// `Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `Env`, as `KEY=value`.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub workdir: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// The registry client, for `docker://` outputs.
    pub remote: Option<crate::transport::Remote>,
    /// How the owners of a directory's files become the layer's (a rootless caller's view:
    /// [`crate::sandbox::caller_view`]); `None` records them as they are on disk. Tarballs
    /// already hold container ids and are never mapped.
    pub ids: Option<IdMap>,
}

/// The image made, and its layer.
#[derive(Debug, Clone)]
pub struct ImportResult {
    /// The image.
    pub image: Image,
    /// The layer's summary.
    pub layer: LayerSummary,
}

/// Imports `opts.source` as a one-layer image, names it and writes it to every output.
pub fn import(
    store: &Store,
    opts: &ImportOptions,
    reporter: &dyn Reporter,
) -> Result<ImportResult> {
    let meta = std::fs::metadata(&opts.source).map_err(|e| Error::BadSource {
        path: opts.source.clone(),
        reason: e.to_string(),
    })?;
    reporter.on_status(&format!("importing {}", opts.source.display()));
    let mut w = LayerWriter::new(store.blob_writer()?, opts.layer)?;
    if meta.is_dir() {
        let walk = WalkOptions {
            ids: opts.ids.clone(),
            ..WalkOptions::default()
        };
        w.append_dir(&opts.source, &walk)?;
    } else if meta.is_file() {
        append_tarball(&mut w, &opts.source, &store.tmp_dir())?;
    } else {
        return Err(Error::BadSource {
            path: opts.source.clone(),
            reason: "not a directory or a regular file".into(),
        });
    }
    let (blob, summary) = w.finish()?;
    let (digest, size) = blob.finish()?;
    let mut b = ImageBuilder::scratch(&opts.platform);
    b.append(
        NewLayer {
            descriptor: Descriptor::new(summary.media_type.clone(), digest, size),
            diff_id: summary.diff_id.clone(),
        },
        "kiln import",
    )
    .created(opts.created);
    let c = &mut b.config_mut().config;
    c.cmd = opts.cmd.clone();
    c.entrypoint = opts.entrypoint.clone();
    if !opts.env.is_empty() {
        c.env = Some(opts.env.clone());
    }
    c.working_dir = opts.workdir.clone();
    c.user = opts.user.clone();
    let image = b.build();
    store.put_bytes(&image.raw_config)?;
    store.put_bytes(&image.raw_manifest)?;
    for n in &opts.names {
        store.tag(n, &image.descriptor)?;
    }
    let first_name = opts.names.first().map(String::as_str);
    for o in &opts.outputs {
        reporter.on_status(&format!("writing {o}"));
        write_from_store(store, &image, o, first_name, opts.remote.as_ref())?;
    }
    Ok(ImportResult {
        image,
        layer: summary,
    })
}

/// A tarball member, read and held until the members are written in sorted order.
struct Member {
    entry: Entry,
    /// A regular file's data: offset and size in the spool file.
    data: Option<(u64, u64)>,
    /// For a hard link: the member it links to, as written in the tarball.
    link: Option<Vec<u8>>,
}

/// Re-writes a tarball's members into the layer, normalised like a directory's walk (owner
/// names dropped, mtimes clamped, entries sorted by path bytes, each hard link group's first
/// path in that order carrying the data and the others linking to it), so a directory and its
/// tarball give the same layer. The input is a stream and may be larger than memory: member
/// data is spooled to an unnamed file in `tmp` while the headers are read, then written out in
/// order.
fn append_tarball(w: &mut LayerWriter<BlobWriter>, path: &Path, tmp: &Path) -> Result<()> {
    use std::collections::BTreeMap;
    use std::io::{Seek, SeekFrom, Write};
    let bad = |reason: String| Error::BadSource {
        path: path.to_path_buf(),
        reason,
    };
    let f = File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let magic = r.fill_buf().map_err(|e| bad(e.to_string()))?.to_vec();
    use crate::layer::Compressed as C;
    let reader: Box<dyn Read> = match crate::layer::sniff_compression(&magic) {
        format @ (C::Gzip | C::Zstd) if format != C::Zstd || cfg!(feature = "zstd") => {
            crate::layer::decompressor(r, format, path).map_err(|e| bad(e.to_string()))?
        }
        C::None if magic.len() >= 262 && &magic[257..262] == b"ustar" => Box::new(r),
        _ => return Err(bad("not a tar archive (plain, gzip or zstd)".into())),
    };
    std::fs::create_dir_all(tmp)
        .map_err(|e| bad(format!("cannot create `{}`: {e}", tmp.display())))?;
    let spool = tempfile::tempfile_in(tmp)
        .map_err(|e| bad(format!("cannot create a file in `{}`: {e}", tmp.display())))?;
    let mut spool_w = std::io::BufWriter::with_capacity(1 << 20, &spool);
    let mut spooled = 0u64;
    // Later members of the same path replace earlier ones, as when the tarball is extracted.
    let mut members: BTreeMap<Vec<u8>, Member> = BTreeMap::new();
    let mut archive = tar::Archive::new(crate::layer::TarGuard::new(reader));
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("corrupt tar archive: {e}")))?;
        let raw_path = entry.path_bytes().into_owned();
        let member = String::from_utf8_lossy(&raw_path).into_owned();
        let member_err = |reason: String| Error::BadMember {
            archive: path.to_path_buf(),
            member: member.clone(),
            reason,
        };
        let Some(clean) = clean_path(&raw_path) else {
            return Err(member_err("path escapes the root (`..`)".into()));
        };
        if clean.is_empty() {
            continue; // the root itself
        }
        let h = entry.header();
        let mode = h.mode().map_err(|e| member_err(e.to_string()))? & 0o7777;
        let uid = h.uid().map_err(|e| member_err(e.to_string()))? as u32;
        let gid = h.gid().map_err(|e| member_err(e.to_string()))? as u32;
        let mtime = h.mtime().map_err(|e| member_err(e.to_string()))? as i64;
        let size = entry.size();
        let et = h.entry_type();
        let link = || -> Result<Vec<u8>> {
            entry
                .link_name_bytes()
                .map(|l| l.into_owned())
                .ok_or_else(|| member_err("link without a target".into()))
        };
        let mut hardlink = None;
        let kind = match et {
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File {
                size,
                source: FileSource::Bytes(Vec::new().into()),
            },
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink(link()?),
            tar::EntryType::Link => {
                let target = link()?;
                match clean_path(&target) {
                    Some(t) if !t.is_empty() => {
                        hardlink = Some(t.clone());
                        EntryKind::Hardlink(t)
                    }
                    _ => return Err(member_err("hard link target escapes the root".into())),
                }
            }
            tar::EntryType::Fifo => EntryKind::Fifo,
            tar::EntryType::Char | tar::EntryType::Block => {
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                if et == tar::EntryType::Char {
                    EntryKind::CharDevice { major, minor }
                } else {
                    EntryKind::BlockDevice { major, minor }
                }
            }
            _ => continue, // PAX/GNU metadata members are consumed by the reader
        };
        let mut xattrs = Vec::new();
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if let Ok(k) = ext.key() {
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        if crate::layer::keep_xattr(name.as_bytes()) {
                            xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                        }
                    }
                }
            }
        }
        xattrs.sort();
        let data = if matches!(kind, EntryKind::File { .. }) {
            let n = std::io::copy(&mut (&mut entry).take(size), &mut spool_w)
                .map_err(|e| member_err(format!("cannot read or spool it: {e}")))?;
            if n != size {
                return Err(member_err(format!("{n} of {size} bytes before the end")));
            }
            spooled += size;
            Some((spooled - size, size))
        } else {
            None
        };
        members.insert(
            clean.clone(),
            Member {
                entry: Entry {
                    path: clean,
                    kind,
                    mode,
                    uid,
                    gid,
                    mtime,
                    xattrs,
                },
                data,
                link: hardlink,
            },
        );
    }
    spool_w
        .flush()
        .map_err(|e| bad(format!("cannot spool the members: {e}")))?;
    drop(spool_w);
    // Hard link groups: each link's file (following links to links), then every group's first
    // path in sorted order carries the data and the file's metadata; the others link to it.
    let mut file_of: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (p, m) in &members {
        let Some(mut t) = m.link.clone() else {
            continue;
        };
        let mut hops = 0;
        loop {
            match members.get(&t) {
                Some(tm) if tm.link.is_some() && hops < members.len() => {
                    t = tm.link.clone().unwrap_or_default();
                    hops += 1;
                }
                Some(tm) if tm.data.is_some() => break,
                _ => {
                    return Err(Error::BadMember {
                        archive: path.to_path_buf(),
                        member: String::from_utf8_lossy(p).into_owned(),
                        reason: format!(
                            "hard link to `{}`, which is not a regular file of the archive",
                            String::from_utf8_lossy(&t)
                        ),
                    })
                }
            }
        }
        file_of.insert(p.clone(), t);
    }
    // file path -> the group's first path (the BTreeMap iterates in sorted order).
    let mut first_of: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (p, m) in &members {
        let file = match &m.link {
            Some(_) => file_of[p].clone(),
            None if m.data.is_some() => p.clone(),
            None => continue,
        };
        first_of.entry(file).or_insert_with(|| p.clone());
    }
    let mut spool = spool;
    for (p, m) in &members {
        let file = match &m.link {
            Some(_) => file_of[p].as_slice(),
            None => p.as_slice(),
        };
        let first = first_of.get(file);
        let mut e = match (&m.link, first) {
            (Some(_), Some(_)) | (None, Some(_)) => Entry {
                path: p.clone(),
                ..members[file].entry.clone()
            },
            _ => m.entry.clone(),
        };
        match first {
            Some(first) if first != p => {
                e.kind = EntryKind::Hardlink(first.clone());
                w.append(&e)?;
            }
            Some(_) => {
                let (offset, size) = members[file].data.unwrap_or_default();
                spool
                    .seek(SeekFrom::Start(offset))
                    .map_err(|e| bad(format!("cannot read the spooled members: {e}")))?;
                let what =
                    PathBuf::from(format!("{}:{}", path.display(), String::from_utf8_lossy(p)));
                w.append_from(&e, &mut (&mut spool).take(size), &what)?;
            }
            None => w.append(&e)?,
        }
    }
    Ok(())
}
