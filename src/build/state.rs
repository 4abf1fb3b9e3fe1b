//! The state of a stage being built: its image so far and, only when a step needs them, views
//! of its files: the metadata index, a merged directory (for `COPY --from` and the walk
//! snapshotter), and a stack of overlay lower directories (for RUN with the overlay snapshotter).
use std::path::{Path, PathBuf};

use crate::cache::CachedLayer;
use crate::image::{Image, ImageBuilder, NewLayer};
use crate::layer::{apply_layer, Entry, UnpackOptions};
use crate::oci::{Descriptor, Platform};
use crate::sandbox::UserNsSandbox;
use crate::store::Store;
use crate::transport;

use super::fsindex::FsIndex;
use super::snapshots;
use super::LayerRecord;

/// History comment BuildKit writes on every step; tools that show history group by it.
const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

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
    pub(super) fn index(&mut self, store: &Store) -> std::result::Result<&FsIndex, String> {
        if self.indexed == 0 && self.base_len > 0 {
            self.index = chain_index(store, &self.layers[..self.base_len])?;
            self.indexed = self.base_len;
        }
        while self.indexed < self.layers.len() {
            index_layer(store, &mut self.index, &self.layers[self.indexed])?;
            self.indexed += 1;
        }
        Ok(&self.index)
    }

    /// The stage's files on disk, in one directory under `scratch`. Owners are kept when kiln is
    /// root, or set through `sandbox` (a user namespace) when one is given.
    pub(super) fn rootfs(
        &mut self,
        store: &Store,
        scratch: &Path,
        name: &str,
        sandbox: Option<&UserNsSandbox>,
    ) -> Result<PathBuf, String> {
        let (dir, applied) = match self.rootfs.take() {
            Some(r) => r,
            None => {
                let d = scratch.join(format!("rootfs-{name}"));
                std::fs::create_dir_all(&d)
                    .map_err(|e| format!("cannot create `{}`: {e}", d.display()))?;
                (d, 0)
            }
        };
        if applied == 0 {
            unpack_stack(store, &self.layers, &dir, sandbox)?;
        } else {
            for l in &self.layers[applied..] {
                apply_into(store, l, &dir, sandbox)?;
            }
        }
        self.rootfs = Some((dir.clone(), self.layers.len()));
        Ok(dir)
    }

    /// Overlay lower directories holding every layer, topmost first: the base image's layers as
    /// one persistent snapshot shared with other builds, then one directory per later layer (a
    /// RUN's upper directory is pushed as it is).
    pub(super) fn lowers(
        &mut self,
        store: &Store,
        scratch: &Path,
        name: &str,
        sandbox: Option<&UserNsSandbox>,
    ) -> Result<Vec<PathBuf>, String> {
        let (mut dirs, applied) = match self.stack.take() {
            Some(s) => s,
            None if self.base_len > 0 => {
                let base = &self.layers[..self.base_len];
                let d = snapshots::merged(store, base, sandbox, &mut |dir| {
                    unpack_stack(store, base, dir, sandbox)
                })?;
                (vec![d], self.base_len)
            }
            None => {
                // Nothing below: overlay still needs one lower directory.
                let d = scratch.join(format!("lower-{name}-0"));
                std::fs::create_dir_all(&d)
                    .map_err(|e| format!("cannot create `{}`: {e}", d.display()))?;
                (vec![d], 0)
            }
        };
        for (i, l) in self.layers.iter().enumerate().skip(applied) {
            // Layers kiln wrote after the base (COPY, WORKDIR) hold no whiteouts, list every
            // parent of their members and become a directory of their own; one with whiteouts
            // (a cached RUN) or implied parents (`COPY --link`) needs the layers below it, so
            // the stack is merged into one directory again.
            if layer_needs_merge(store, l)? {
                // Whiteouts need the lower layers: merge everything into one directory instead
                // (kept as a snapshot: the layers are all in the store, so the next build with
                // this stack reuses it).
                let below = &self.layers[..=i];
                let merged = snapshots::merged(store, below, sandbox, &mut |dir| {
                    unpack_stack(store, below, dir, sandbox)
                })?;
                dirs = vec![merged];
            } else {
                let d = scratch.join(format!("lower-{name}-{i}"));
                std::fs::create_dir_all(&d)
                    .map_err(|e| format!("cannot create `{}`: {e}", d.display()))?;
                apply_into(store, l, &d, sandbox)?;
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
        entries: Option<&[Entry]>,
        cached: bool,
        seconds: f64,
    ) {
        // The index applies kiln's own entries directly, except whiteouts (a RUN's deletions):
        // such a layer is read back from its tar, which removes the paths it deletes.
        if let Some(e) = entries.filter(|e| !e.iter().any(is_whiteout)) {
            if self.indexed == self.layers.len() {
                self.index.apply_entries(e);
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

fn apply_into(
    store: &Store,
    layer: &Descriptor,
    dir: &Path,
    sandbox: Option<&UserNsSandbox>,
) -> Result<(), String> {
    let ownership = rustix::process::geteuid().is_root();
    if let Some(sb) = sandbox.filter(|_| !ownership) {
        // Unpacked as the caller (the namespace's root), a directory the layer lists that is
        // already there with another owner could not be written into (mode 700 of uid 1000),
        // would lose its setgid bit to a chmod by a non-member of its group, and would keep
        // that owner when the layer gives it to root (only other owners are set afterwards).
        // Give such directories to root first; the layer's owners are set after it.
        let existing = existing_dirs(store, layer, dir)?;
        if !existing.is_empty() {
            sb.chown_in_namespace(dir, &existing).map_err(|e| {
                format!(
                    "cannot prepare the directories of layer `{}`: {e}",
                    layer.digest
                )
            })?;
        }
    }
    let r = transport::open_layer(store, layer).map_err(|e| e.to_string())?;
    let report = apply_layer(r, dir, &UnpackOptions { ownership })
        .map_err(|e| format!("layer `{}`: {e}", layer.digest))?;
    if let Some(sb) = sandbox {
        sb.chown_in_namespace(dir, &report.owners).map_err(|e| {
            format!(
                "cannot give the files of layer `{}` their owners: {e}",
                layer.digest
            )
        })?;
    }
    Ok(())
}

/// The directory members of `layer` that are directories in `dir` already, each with owner
/// 0:0 (namespace ids), for [`UserNsSandbox::chown_in_namespace`].
fn existing_dirs(
    store: &Store,
    layer: &Descriptor,
    dir: &Path,
) -> Result<Vec<(Vec<u8>, u32, u32)>, String> {
    use std::os::unix::ffi::OsStrExt;
    let r = transport::open_layer(store, layer).map_err(|e| e.to_string())?;
    let mut a = tar::Archive::new(r);
    let mut out = Vec::new();
    for e in a.entries().map_err(|e| e.to_string())? {
        let e = e.map_err(|e| format!("layer `{}`: {e}", layer.digest))?;
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
fn index_layer(store: &Store, index: &mut FsIndex, layer: &Descriptor) -> Result<(), String> {
    let r = transport::open_layer(store, layer).map_err(|e| e.to_string())?;
    index
        .apply_tar(r)
        .map_err(|e| format!("cannot read layer `{}`: {e}", layer.digest))
}

/// The index of `layers` (bottom first): from the index cache, else read from their tars and
/// cached for the next build.
fn chain_index(store: &Store, layers: &[Descriptor]) -> Result<FsIndex, String> {
    if let Some(index) = snapshots::load_index(store, layers) {
        return Ok(index);
    }
    let mut index = FsIndex::default();
    for l in layers {
        index_layer(store, &mut index, l)?;
    }
    snapshots::save_index(store, layers, &index);
    Ok(index)
}

/// Unpacks `layers` (bottom first) into the empty directory `dir`. Without real root, with a
/// user namespace, every layer is unpacked as the caller and the owners are set once at the end,
/// from the layers' index (so a later layer's replacements and whiteouts count): set layer by
/// layer, a directory given to a subordinate id by one layer could not be written by the next.
fn unpack_stack(
    store: &Store,
    layers: &[Descriptor],
    dir: &Path,
    sandbox: Option<&UserNsSandbox>,
) -> Result<(), String> {
    let ownership = rustix::process::geteuid().is_root();
    let Some(sb) = sandbox.filter(|_| !ownership) else {
        return layers
            .iter()
            .try_for_each(|l| apply_into(store, l, dir, sandbox));
    };
    for l in layers {
        let r = transport::open_layer(store, l).map_err(|e| e.to_string())?;
        apply_layer(r, dir, &UnpackOptions { ownership })
            .map_err(|e| format!("layer `{}`: {e}", l.digest))?;
    }
    let index = chain_index(store, layers)?;
    let owners: Vec<(Vec<u8>, u32, u32)> = index
        .iter()
        .filter(|(_, n)| (n.uid, n.gid) != (0, 0))
        .map(|(p, n)| (p.clone(), n.uid, n.gid))
        .collect();
    sb.chown_in_namespace(dir, &owners).map_err(|e| {
        format!(
            "cannot give the files of `{}` their owners: {e}",
            dir.display()
        )
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
fn layer_needs_merge(store: &Store, layer: &Descriptor) -> Result<bool, String> {
    let r = transport::open_layer(store, layer).map_err(|e| e.to_string())?;
    let mut a = tar::Archive::new(r);
    let mut dirs: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    for e in a.entries().map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
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
