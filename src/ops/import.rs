//! `kiln import SRC -t NAME`: a root filesystem (directory or tarball) becomes a one-layer image.
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::image::{Image, ImageBuilder, NewLayer};
use crate::layer::{
    clean_path, Entry, EntryKind, FileSource, LayerOptions, LayerSummary, LayerWriter, WalkOptions,
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
    /// Layer compression, threads and the build epoch (also the image's `created`).
    pub layer: LayerOptions,
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
        w.append_dir(&opts.source, &WalkOptions::default())?;
    } else if meta.is_file() {
        append_tarball(&mut w, &opts.source)?;
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
    .created(opts.layer.epoch);
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

/// Re-writes a tarball's members into the layer, normalised (owner names dropped, mtimes clamped)
/// but in the tarball's own order: the input is a stream and may be larger than memory.
fn append_tarball(w: &mut LayerWriter<BlobWriter>, path: &Path) -> Result<()> {
    let bad = |reason: String| Error::BadSource {
        path: path.to_path_buf(),
        reason,
    };
    let f = File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let magic = r.fill_buf().map_err(|e| bad(e.to_string()))?.to_vec();
    let reader: Box<dyn Read> = match magic.as_slice() {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(r)),
        #[cfg(feature = "zstd")]
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(|e| bad(e.to_string()))?)
        }
        m if m.len() >= 262 && &m[257..262] == b"ustar" => Box::new(r),
        _ => return Err(bad("not a tar archive (plain, gzip or zstd)".into())),
    };
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
                    Some(t) if !t.is_empty() => EntryKind::Hardlink(t),
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
                        xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
        xattrs.sort();
        let e = Entry {
            path: clean,
            kind,
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        };
        w.append_from(
            &e,
            &mut entry,
            &PathBuf::from(format!("{}:{member}", path.display())),
        )?;
    }
    Ok(())
}
