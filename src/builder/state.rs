//! The state of a stage being built: its image so far and, only when a step needs them, views
//! of its files: the metadata index, a merged directory (for `COPY --from` and the walk
//! snapshotter), and a stack of overlay lower directories (for RUN with the overlay snapshotter).
use std::path::{Path, PathBuf};

use crate::cache::CachedLayer;
use crate::image::{Image, ImageBuilder, NewLayer};
use crate::layer::{apply_layer, Entry, UnpackOptions};
use crate::oci::{Descriptor, Platform};
use crate::sandbox::Sandbox;
use crate::transport::LayerSource;

use super::error::StepError;
use super::fsindex::FsIndex;
use super::snapshots;
use super::LayerRecord;

/// History comment BuildKit writes on every step; tools that show history group by it.
const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// Where a stage's files are made: the layers (the store, and the registry lazy ones come
/// from), the build's scratch directory, and the sandbox that owns what rootless steps wrote
/// (absent when the build has no RUN step). The store also keeps persistent snapshots.
#[derive(Clone, Copy)]
pub(super) struct Disk<'a> {
    pub(super) layers: LayerSource<'a>,
    pub(super) scratch: &'a Path,
    pub(super) sandbox: Option<&'a dyn Sandbox>,
}

/// A stage being built: its image so far, and lazily, a view of its files.
#[derive(Clone)]
pub(super) struct StageState {
    pub(super) builder: ImageBuilder,
    pub(super) layers: Vec<Descriptor>,
    index: FsIndex,
    indexed: usize,
    /// How many of `layers` came from the base image: they are indexed from the index cache
    /// and unpacked as one persistent snapshot (see [`super::snapshots`]).
    base_len: usize,
    /// A directory with every layer applied, and how many layers it has.
    pub(super) rootfs: Option<(PathBuf, usize)>,
    /// Overlay lower directories (bottom first), and how many layers they hold.
    pub(super) stack: Option<(Vec<PathBuf>, usize)>,
    pub(super) records: Vec<LayerRecord>,
}

/// The name of the scratch directories holding an image's files (`COPY --from=IMAGE`,
/// `RUN --mount=from=IMAGE`): the reference with every other character than ASCII letters and
/// digits replaced.
pub(super) fn image_dir_name(reference: &str) -> String {
    let tag: String = reference
        .chars()
        .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
        .collect();
    format!("image-{tag}")
}

impl StageState {
    pub(super) fn from_image(img: &Image) -> StageState {
        let mut builder = ImageBuilder::from_base(img);
        // The base's ONBUILD triggers run in this stage (the planner inserted them); like
        // BuildKit, they are not passed on to images built from this one.
        builder.config_mut().config.on_build = None;
        StageState {
            builder,
            layers: img.layers().to_vec(),
            index: FsIndex::default(),
            indexed: 0,
            base_len: img.layers().len(),
            rootfs: None,
            stack: None,
            records: img
                .layers()
                .iter()
                .zip(img.diff_ids())
                .map(|(l, d)| LayerRecord {
                    digest: l.digest.clone(),
                    diff_id: d.clone(),
                    size: l.size,
                    step: "base".into(),
                    cached: true,
                    seconds: 0.0,
                    stats: None,
                })
                .collect(),
        }
    }

    pub(super) fn scratch(platform: &Platform) -> StageState {
        StageState {
            builder: ImageBuilder::scratch(platform),
            layers: Vec::new(),
            index: FsIndex::default(),
            indexed: 0,
            base_len: 0,
            rootfs: None,
            stack: None,
            records: Vec::new(),
        }
    }

    /// The metadata index, brought up to date with every layer.
    pub(super) fn index(&mut self, layers: LayerSource<'_>) -> Result<&FsIndex, StepError> {
        if self.indexed == 0 && self.base_len > 0 {
            self.index = chain_index(layers, &self.layers[..self.base_len])?;
            self.indexed = self.base_len;
        }
        while self.indexed < self.layers.len() {
            index_layer(layers, &mut self.index, &self.layers[self.indexed])?;
            self.indexed += 1;
        }
        Ok(&self.index)
    }

    /// The stage's files on disk, in one directory under the scratch directory. Owners are
    /// kept when kiln is root, or set through the sandbox (a user namespace) when there is one.
    pub(super) fn rootfs(&mut self, disk: Disk<'_>, name: &str) -> Result<PathBuf, StepError> {
        let (dir, applied) = match self.rootfs.take() {
            Some(r) => r,
            None => {
                let d = disk.scratch.join(format!("rootfs-{name}"));
                std::fs::create_dir_all(&d).map_err(StepError::io("create", &d))?;
                (d, 0)
            }
        };
        if applied == 0 {
            unpack_stack(disk, &self.layers, &dir)?;
        } else {
            for l in &self.layers[applied..] {
                apply_into(disk, l, &dir)?;
            }
        }
        self.rootfs = Some((dir.clone(), self.layers.len()));
        Ok(dir)
    }

    /// Overlay lower directories holding every layer, topmost first: the base image's layers as
    /// one persistent snapshot shared with other builds, then one directory per later layer (a
    /// RUN's upper directory is pushed as it is).
    pub(super) fn lowers(&mut self, disk: Disk<'_>, name: &str) -> Result<Vec<PathBuf>, StepError> {
        let (mut dirs, applied) = match self.stack.take() {
            Some(s) => s,
            None if self.base_len > 0 => {
                let base = &self.layers[..self.base_len];
                let d = snapshots::merged(disk.layers.store(), base, disk.sandbox, &mut |dir| {
                    unpack_stack(disk, base, dir)
                })?;
                (vec![d], self.base_len)
            }
            None => {
                // Nothing below: overlay still needs one lower directory.
                let d = disk.scratch.join(format!("lower-{name}-0"));
                std::fs::create_dir_all(&d).map_err(StepError::io("create", &d))?;
                (vec![d], 0)
            }
        };
        for (i, l) in self.layers.iter().enumerate().skip(applied) {
            // Layers kiln wrote after the base (COPY, WORKDIR) hold no whiteouts, list every
            // parent of their members and become a directory of their own; one with whiteouts
            // (a cached RUN) or implied parents (`COPY --link`) needs the layers below it, so
            // the stack is merged into one directory again.
            if layer_needs_merge(disk.layers, l)? {
                // Whiteouts need the lower layers: merge everything into one directory instead
                // (kept as a snapshot: the layers are all in the store, so the next build with
                // this stack reuses it).
                let below = &self.layers[..=i];
                let merged =
                    snapshots::merged(disk.layers.store(), below, disk.sandbox, &mut |dir| {
                        unpack_stack(disk, below, dir)
                    })?;
                dirs = vec![merged];
            } else {
                let d = disk.scratch.join(format!("lower-{name}-{i}"));
                std::fs::create_dir_all(&d).map_err(StepError::io("create", &d))?;
                apply_into(disk, l, &d)?;
                dirs.push(d);
            }
        }
        self.stack = Some((dirs.clone(), self.layers.len()));
        Ok(dirs.into_iter().rev().collect())
    }

    /// After a RUN on the overlay stack: its upper directory is the newest lower.
    pub(super) fn push_upper(&mut self, upper: PathBuf) {
        if let Some((dirs, applied)) = &mut self.stack {
            if *applied + 1 == self.layers.len() {
                dirs.push(upper);
                *applied += 1;
            }
        }
    }

    /// After a RUN with the walk snapshotter: the merged directory already has the change.
    pub(super) fn mark_rootfs_current(&mut self) {
        if let Some((_, applied)) = &mut self.rootfs {
            if *applied + 1 == self.layers.len() {
                *applied += 1;
            }
        }
    }

    pub(super) fn push(
        &mut self,
        layer: CachedLayer,
        created_by: &str,
        entries: Option<Vec<Entry>>,
        cached: bool,
        seconds: f64,
    ) {
        // The index applies kiln's own entries directly, except whiteouts (a RUN's deletions):
        // such a layer is read back from its tar, which removes the paths it deletes.
        if let Some(e) = entries.filter(|e| !e.iter().any(is_whiteout)) {
            if self.indexed == self.layers.len() {
                self.index.apply_owned(e);
                self.indexed += 1;
            }
        }
        self.records.push(LayerRecord {
            digest: layer.descriptor.digest.clone(),
            diff_id: layer.diff_id.clone(),
            size: layer.descriptor.size,
            step: created_by.to_string(),
            cached,
            seconds,
            stats: None,
        });
        self.layers.push(layer.descriptor.clone());
        self.builder.append(
            NewLayer {
                descriptor: layer.descriptor,
                diff_id: layer.diff_id,
            },
            created_by,
        );
        comment(&mut self.builder);
    }
}

pub(super) fn comment(b: &mut ImageBuilder) {
    if let Some(h) = b.config_mut().history.last_mut() {
        h.comment = Some(HISTORY_COMMENT.into());
    }
}

fn apply_into(disk: Disk<'_>, layer: &Descriptor, dir: &Path) -> Result<(), StepError> {
    let layers = disk.layers;
    let ownership = rustix::process::geteuid().is_root();
    if let Some(sb) = disk.sandbox.filter(|_| !ownership) {
        // Unpacked as the caller (the namespace's root), a directory the layer lists that is
        // already there with another owner could not be written into (mode 700 of uid 1000),
        // would lose its setgid bit to a chmod by a non-member of its group, and would keep
        // that owner when the layer gives it to root (only other owners are set afterwards).
        // Give such directories to root first; the layer's owners are set after it.
        let existing = existing_dirs(layers, layer, dir)?;
        if !existing.is_empty() {
            sb.chown_in_namespace(dir, &existing)
                .map_err(|source| StepError::Owners {
                    what: format!("the directories below layer `{}`", layer.digest),
                    source: Box::new(source),
                })?;
        }
    }
    let report = apply_layer(
        open_layer(layers, layer)?,
        dir,
        &UnpackOptions { ownership },
    )
    .map_err(|e| StepError::layer(&layer.digest)(e.into()))?;
    if let Some(sb) = disk.sandbox {
        sb.chown_in_namespace(dir, &report.owners)
            .map_err(|source| StepError::Owners {
                what: format!("layer `{}`", layer.digest),
                source: Box::new(source),
            })?;
    }
    Ok(())
}

/// The uncompressed tar of `layer`.
fn open_layer(
    layers: LayerSource<'_>,
    layer: &Descriptor,
) -> Result<Box<dyn std::io::Read>, StepError> {
    layers
        .open_layer(layer)
        .map_err(|e| StepError::layer(&layer.digest)(e.into()))
}

/// The directory members of `layer` that are directories in `dir` already, each with owner
/// 0:0 (namespace ids), for [`Sandbox::chown_in_namespace`].
fn existing_dirs(
    layers: LayerSource<'_>,
    layer: &Descriptor,
    dir: &Path,
) -> Result<Vec<(Vec<u8>, u32, u32)>, StepError> {
    use std::os::unix::ffi::OsStrExt;
    let bad = |e: std::io::Error| StepError::layer(&layer.digest)(e.into());
    let mut a = tar::Archive::new(open_layer(layers, layer)?);
    let mut out = Vec::new();
    for e in a.entries().map_err(bad)? {
        let e = e.map_err(bad)?;
        if e.header().entry_type() != tar::EntryType::Directory {
            continue;
        }
        let Some(p) = crate::layer::clean_path(&e.path_bytes()).filter(|p| !p.is_empty()) else {
            continue;
        };
        let on_disk = dir.join(std::ffi::OsStr::from_bytes(&p));
        if std::fs::symlink_metadata(&on_disk).is_ok_and(|m| m.is_dir()) {
            out.push((p, 0, 0));
        }
    }
    Ok(out)
}

/// Applies one layer's tar to `index`.
fn index_layer(
    layers: LayerSource<'_>,
    index: &mut FsIndex,
    layer: &Descriptor,
) -> Result<(), StepError> {
    index
        .apply_tar(open_layer(layers, layer)?)
        .map_err(|e| StepError::layer(&layer.digest)(e.into()))
}

/// The index of `layers` (bottom first): from the index cache, else read from their tars and
/// cached for the next build.
fn chain_index(source: LayerSource<'_>, layers: &[Descriptor]) -> Result<FsIndex, StepError> {
    if let Some(index) = snapshots::load_index(source.store(), layers) {
        return Ok(index);
    }
    let mut index = FsIndex::default();
    for l in layers {
        index_layer(source, &mut index, l)?;
    }
    snapshots::save_index(source.store(), layers, &index);
    Ok(index)
}

/// Unpacks `layers` (bottom first) into the empty directory `dir`. Without real root, with a
/// user namespace, every layer is unpacked as the caller and the owners are set once at the end,
/// from the layers' index (so a later layer's replacements and whiteouts count): set layer by
/// layer, a directory given to a subordinate id by one layer could not be written by the next.
fn unpack_stack(disk: Disk<'_>, layers: &[Descriptor], dir: &Path) -> Result<(), StepError> {
    let ownership = rustix::process::geteuid().is_root();
    let Some(sb) = disk.sandbox.filter(|_| !ownership) else {
        return layers.iter().try_for_each(|l| apply_into(disk, l, dir));
    };
    for l in layers {
        apply_layer(
            open_layer(disk.layers, l)?,
            dir,
            &UnpackOptions { ownership },
        )
        .map_err(|e| StepError::layer(&l.digest)(e.into()))?;
    }
    let index = chain_index(disk.layers, layers)?;
    let owners: Vec<(Vec<u8>, u32, u32)> = index
        .iter()
        .filter(|(_, n)| (n.uid, n.gid) != (0, 0))
        .map(|(p, n)| (p.clone(), n.uid, n.gid))
        .collect();
    sb.chown_in_namespace(dir, &owners)
        .map_err(|source| StepError::Owners {
            what: format!("`{}`", dir.display()),
            source: Box::new(source),
        })
}

fn is_whiteout(e: &Entry) -> bool {
    let name = e.path.rsplit(|&b| b == b'/').next().unwrap_or(&[]);
    name.starts_with(b".wh.")
}

/// Whether `layer` cannot be an overlay lower directory of its own: it has whiteouts (which
/// need the layers below), or a member whose parent directory it does not list (applied into an
/// empty directory, that parent would get the unpacker's default mode, owner and mtime, and as
/// the upper of the lowers it would hide the parent's real metadata: `/tmp` would turn 0755).
/// Layers kiln writes list every parent ([`FsIndex::parent_entries`]) except `COPY --link`
/// ones.
fn layer_needs_merge(layers: LayerSource<'_>, layer: &Descriptor) -> Result<bool, StepError> {
    let bad = |e: std::io::Error| StepError::layer(&layer.digest)(e.into());
    let mut a = tar::Archive::new(open_layer(layers, layer)?);
    let mut dirs: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    for e in a.entries().map_err(bad)? {
        let e = e.map_err(bad)?;
        let Some(p) = crate::layer::clean_path(&e.path_bytes()) else {
            return Ok(true);
        };
        let (parent, name) = match p.iter().rposition(|&b| b == b'/') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (&p[..0], &p[..]),
        };
        if name.starts_with(b".wh.") || !(parent.is_empty() || dirs.contains(parent)) {
            return Ok(true);
        }
        if e.header().entry_type() == tar::EntryType::Directory {
            dirs.insert(p);
        }
    }
    Ok(false)
}
