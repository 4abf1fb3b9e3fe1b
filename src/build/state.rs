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
    pub(super) cmd_set: bool,
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
            cmd_set: false,
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
            cmd_set: false,
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
            // Layers kiln wrote after the base (COPY, WORKDIR) hold no whiteouts and become a
            // directory of their own; one with whiteouts (a cached RUN) needs the layers below
            // it, so the stack is merged into one directory again.
            if layer_has_whiteouts(store, l)? {
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

fn layer_has_whiteouts(store: &Store, layer: &Descriptor) -> Result<bool, String> {
    let r = transport::open_layer(store, layer).map_err(|e| e.to_string())?;
    let mut a = tar::Archive::new(r);
    for e in a.entries().map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        let p = e.path_bytes();
        let name = p.rsplit(|&b| b == b'/').next().unwrap_or(&[]);
        if name.starts_with(b".wh.") {
            return Ok(true);
        }
    }
    Ok(false)
}
