//! `kiln build -o type=local,dest=DIR` and `-o type=tar,dest=FILE`: an image's final root
//! filesystem (its layers applied in order, whiteouts and opaque directories honoured), as
//! BuildKit's `local` and `tar` exporters write the build result's files.
//!
//! Both go through the one layer unpacker ([`crate::layer::apply_layer`]), so a member that
//! tries to leave the root is refused as it is everywhere else. `type=local` writes into DIR
//! (created when missing); as root the owners from the layers are set, otherwise the files
//! belong to the caller, as BuildKit's local exporter leaves them to its client. `type=tar`
//! unpacks into a temporary directory beside FILE, then writes one tar of it with kiln's
//! deterministic writer: owners and modes come from the layers (the merged index of their
//! headers, so a rootless export keeps them too), mtimes as the layers carry them; FILE is
//! replaced whole.
use std::path::{Path, PathBuf};

use crate::builder::fsindex::FsIndex;
use crate::image::Image;
use crate::layer::{
    apply_layer, Compression, LayerOptions, LayerWriter, UnpackOptions, WalkOptions,
};
use crate::transport::LayerSource;

/// Where a root filesystem goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsDest {
    /// A directory (`type=local`).
    Dir(PathBuf),
    /// A tar file (`type=tar`).
    Tar(PathBuf),
}

/// An export that failed: where it was going, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot export the root filesystem to `{}`", dest.display())]
pub struct RootfsError {
    /// The directory or file.
    pub dest: PathBuf,
    /// The cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Writes `image`'s root filesystem to `dest`, reading its layers through `layers`.
pub fn export_rootfs(
    layers: LayerSource<'_>,
    image: &Image,
    dest: &RootfsDest,
) -> Result<(), RootfsError> {
    let (path, r) = match dest {
        RootfsDest::Dir(d) => (d, to_dir(layers, image, d)),
        RootfsDest::Tar(f) => (f, to_tar(layers, image, f)),
    };
    r.map_err(|source| RootfsError {
        dest: path.clone(),
        source,
    })
}

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn with_layer<E: std::error::Error + Send + Sync + 'static>(
    digest: &crate::oci::Digest,
) -> impl FnOnce(E) -> Box<dyn std::error::Error + Send + Sync> + '_ {
    move |e| format!("layer {digest}: {}", chain(&e)).into()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn unpack(layers: LayerSource<'_>, image: &Image, dir: &Path, ownership: bool) -> BoxResult<()> {
    for l in image.layers() {
        let tar = layers.open_layer(l).map_err(with_layer(&l.digest))?;
        apply_layer(tar, dir, &UnpackOptions { ownership }).map_err(with_layer(&l.digest))?;
    }
    Ok(())
}

fn to_dir(layers: LayerSource<'_>, image: &Image, dir: &Path) -> BoxResult<()> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the directory: {e}"))?;
    unpack(layers, image, dir, rustix::process::geteuid().is_root())
}

fn to_tar(layers: LayerSource<'_>, image: &Image, file: &Path) -> BoxResult<()> {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let root = rustix::process::geteuid().is_root();
    let guard = OpenedOnDrop(
        tempfile::Builder::new()
            .prefix(".kiln-rootfs-")
            .tempdir_in(&parent)
            .map_err(|e| {
                format!(
                    "cannot create a temporary directory in `{}`: {e}",
                    parent.display()
                )
            })?,
    );
    let tmp_dir = &guard.0;
    unpack(layers, image, tmp_dir.path(), root)?;
    if !root {
        // The caller owns every file: let it read each one and, when the temp dir goes, remove
        // them (the modes written below come from the layers, not from the disk).
        open_up(tmp_dir.path())?;
    }
    // The owners the layers give, merged as the unpacker applied them (later layers win,
    // whiteouts remove): what a rootless unpack could not set on disk.
    let mut index = FsIndex::default();
    for l in image.layers() {
        index
            .apply_tar(layers.open_layer(l).map_err(with_layer(&l.digest))?)
            .map_err(with_layer(&l.digest))?;
    }
    let (mut entries, _) = crate::layer::walk(tmp_dir.path(), &WalkOptions::default())?;
    for e in &mut entries {
        let (uid, gid) = index.get(&e.path).map_or((0, 0), |n| (n.uid, n.gid));
        e.uid = uid;
        e.gid = gid;
        if let Some(n) = index.get(&e.path) {
            e.mode = n.mode;
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-rootfs-")
        .suffix(".tar")
        .tempfile_in(&parent)
        .map_err(|e| {
            format!(
                "cannot create a temporary file in `{}`: {e}",
                parent.display()
            )
        })?;
    let sink = std::io::BufWriter::new(tmp.as_file().try_clone()?);
    let mut w = LayerWriter::new(
        sink,
        LayerOptions {
            compression: Compression::None,
            threads: 1,
            // i64::MAX keeps every mtime the layers carry.
            epoch: i64::MAX,
        },
    )?;
    for e in &entries {
        w.append(e)?;
    }
    let (sink, _) = w.finish()?;
    sink.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

/// A temporary tree opened up (see [`open_up`]) before it is removed, so a failed export does
/// not leave behind what a directory of mode 0555 would keep.
struct OpenedOnDrop(tempfile::TempDir);

impl Drop for OpenedOnDrop {
    fn drop(&mut self) {
        if !rustix::process::geteuid().is_root() {
            let _ = open_up(self.0.path());
        }
    }
}

/// Gives the caller read access to every file and full access to every directory under `dir`
/// (its own temporary tree; symlinks are not followed).
fn open_up(dir: &Path) -> BoxResult<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir)?;
    std::fs::set_permissions(
        dir,
        std::fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
    )?;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            open_up(&e.path())?;
        } else if t.is_file() {
            let m = e.metadata()?.permissions().mode();
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(m | 0o400))?;
        }
    }
    Ok(())
}
