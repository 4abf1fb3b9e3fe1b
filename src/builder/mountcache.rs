//! The contents of `RUN --mount=type=cache` directories through the caches outside the store
//! (`--cache-to …,mode=max` / `--cache-from`; docs/CACHE.md "Cache mounts").
//!
//! Before a RUN step runs, each of its cache mounts whose directory in the store
//! (`cache-v1/mounts/…`) is absent or empty is filled from the first `--cache-from` that has
//! contents for the mount's id: the layer is fetched into the store, verified against its digest
//! and diff_id, then unpacked (as a base layer is: owners set inside the user namespace when
//! rootless). After the build, `mode=max` writes each cache mount a step ran with as one layer
//! (the deterministic layer writer, owners as the steps saw them), and carries over the
//! `--cache-from` contents of mounts no step ran with. Only `type=cache` mounts have contents
//! here; secret, tmpfs and bind mounts never do. Cache-mount contents are an optimisation: one
//! that cannot be restored or read is a warning, never a failed build.
//!
//! BuildKit exports no cache-mount contents (moby/buildkit#1474, #2370: "mounted caches aren't
//! pushed to a registry"); it shares a cache mount by its id, and so does the key here
//! (`cache::remote::mount_key`).
use std::collections::BTreeMap;
use std::path::Path;

use crate::cache::remote::{mount_key, MountContents};
use crate::cache::CachedLayer;
use crate::layer::{apply_layer, IdMap, LayerWriter, UnpackOptions, WalkOptions};
use crate::oci::Descriptor;
use crate::plan::RunStep;
use crate::sandbox::{Mount, MountKind};

use super::engine::Builder;
use super::step::mounts::cache_id;

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

impl Builder<'_> {
    /// Fills the step's empty cache mounts from a `--cache-from`, and remembers them (with the
    /// step's layer key) for `--cache-to`. `mounts` are the sandbox mounts of `r`.
    pub(super) fn cache_mounts(&mut self, r: &RunStep, mounts: &[Mount], layer_key: &str) {
        let ids = r
            .mounts
            .iter()
            .filter_map(|pm| cache_id(&pm.mount, &r.workdir));
        let dirs = mounts.iter().filter_map(|m| match &m.kind {
            MountKind::Cache {
                source, uid, gid, ..
            } => Some((source, (*uid, *gid))),
            _ => None,
        });
        for (id, (dir, owner)) in ids.zip(dirs) {
            let key = mount_key(&id);
            if is_empty_dir(dir) {
                if let Err(e) = self.restore_mount(&key, dir, owner) {
                    self.reporter.on_warning(&format!(
                        "cache mount `{id}`: its contents from the cache are not used: {e}"
                    ));
                    if let Some(h) = self.host {
                        let _ = h.sandbox.remove_tree(dir);
                    }
                }
            }
            self.mounts_run
                .insert(key, (dir.clone(), layer_key.to_string()));
        }
    }

    /// Unpacks the cached contents of mount `key` into the absent or empty `dir`, if a cache
    /// has them.
    fn restore_mount(
        &mut self,
        key: &str,
        dir: &Path,
        (uid, gid): (u32, u32),
    ) -> Result<(), Box<dyn std::error::Error>> {
        let Some((m, from)) = self.remote_cache.mount(self.layers(), key, true)? else {
            return Ok(());
        };
        let ownership = rustix::process::geteuid().is_root();
        std::fs::create_dir_all(dir)?;
        let report = apply_layer(
            self.layers().open_layer(&m.layer.descriptor)?,
            dir,
            &UnpackOptions { ownership },
        )?;
        if ownership {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        } else if let Some(h) = self.host {
            h.sandbox.chown_in_namespace(dir, &report.owners)?;
            if (uid, gid) != (0, 0) {
                if let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) {
                    let name = name.as_encoded_bytes().to_vec();
                    h.sandbox.chown_in_namespace(parent, &[(name, uid, gid)])?;
                }
            }
        }
        self.reporter.on_status(&format!(
            "cache mount: {} entries restored from `{from}`",
            report.entries
        ));
        Ok(())
    }

    /// The cache mounts' contents `--cache-to` `mode=max` writes: each mount a step ran with,
    /// as a layer of its directory now; then the `--cache-from` contents of the others.
    pub(super) fn mount_contents(&self) -> BTreeMap<String, MountContents> {
        let mut out = BTreeMap::new();
        for (key, (dir, step)) in &self.mounts_run {
            match self.write_dir_layer(dir) {
                Ok(layer) => {
                    out.insert(
                        key.clone(),
                        MountContents {
                            layer,
                            step: step.clone(),
                        },
                    );
                }
                Err(e) => self.reporter.on_warning(&format!(
                    "the cache mount in `{}` is not exported: {e}",
                    dir.display()
                )),
            }
        }
        for key in self.remote_cache.mount_keys() {
            if out.contains_key(&key) {
                continue;
            }
            match self.remote_cache.mount(self.layers(), &key, false) {
                Ok(Some((m, _))) => {
                    out.insert(key, m);
                }
                Ok(None) => {}
                Err(e) => self.reporter.on_warning(&format!(
                    "cache mount contents `{key}` are not carried over: {e}"
                )),
            }
        }
        out
    }

    /// `dir` as a layer in the store, owned as the steps saw it.
    fn write_dir_layer(&self, dir: &Path) -> Result<CachedLayer, Box<dyn std::error::Error>> {
        let opts = self.opts;
        let mut w = LayerWriter::new(self.store.blob_writer()?, opts.layer_options())?;
        // Rootless, files are owned by the caller and its subordinate ids on disk: record the
        // ids inside the namespace, as `kiln import` does.
        let ids = crate::sandbox::caller_view(Path::new("/etc")).map(|(uid, gid)| {
            let ranges = |m: Vec<crate::sandbox::IdRange>| {
                m.iter().map(|r| (r.inside, r.outside, r.count)).collect()
            };
            IdMap {
                uid: ranges(uid),
                gid: ranges(gid),
            }
        });
        w.append_dir(
            dir,
            &WalkOptions {
                ids,
                ..WalkOptions::default()
            },
        )?;
        let (blob, summary) = w.finish()?;
        let (digest, size) = blob.finish()?;
        Ok(CachedLayer {
            descriptor: Descriptor::new(summary.media_type, digest, size),
            diff_id: summary.diff_id,
        })
    }
}
