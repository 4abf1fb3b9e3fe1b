//! The build cache outside the store (`--cache-to` / `--cache-from`): in a registry or an OCI
//! layout directory, so that a build on a fresh machine (an ephemeral CI runner) reuses the
//! layers another machine made. The format is documented in `docs/CACHE.md`.
//!
//! # The format
//! One OCI image manifest (an artifact) at the cache reference: its config, of media type
//! [`CONFIG_MEDIA_TYPE`], is a [`CacheConfig`] mapping layer keys
//! (`builder::BuildOptions::layer_key`: a step's plan key with the compression and timestamp
//! rules, independent of the machine and the store's path) to layer descriptors and diff_ids;
//! its `layers` list every layer the config names, so the registry keeps them and the manifest
//! is only accepted once they are all there. The layers are the image's own blobs (a push to the
//! same registry mounts or skips them). BuildKit's registry cache
//! (moby/buildkit `cache/remotecache/export.go`) is an index of the layer blobs plus a config of
//! media type `application/vnd.buildkit.cacheconfig.v0` that records the LLB cache graph; kiln's
//! keys are already the whole chain of a step's inputs, so a flat map is enough.
//!
//! # Reading ([`RemoteCache`])
//! Every `--cache-from` is read once before the first step: the manifest and the config only,
//! each capped (`oci::limits`) and verified (the config against the manifest's digest for it,
//! every entry against the manifest's layers). A cache that cannot be read or does not verify
//! is ignored with a warning; one that does not exist yet is a status line. A hit in a
//! registry cache downloads nothing: it records the registry as the layer's origin
//! (`store::record_origin`), and the layer is fetched, verified against its digest, only when
//! something opens it through `transport::LayerSource`. A hit in a local cache copies the blob
//! into the store, verified against its digest and diff_id.
//!
//! # Writing ([`export`])
//! After a successful build: the blobs, then the config, then the manifest last, so a
//! reference never names a cache whose blobs are missing, and of two concurrent writers the
//! last complete manifest wins.
mod local;

pub use local::diff_id;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::oci::limits::{check_size, MAX_CONFIG_SIZE};
use crate::oci::{Descriptor, Digest, Manifest, MediaType};
use crate::progress::Reporter;
use crate::registry::Reference;
use crate::store::Store;
use crate::transport::Remote;

use super::CachedLayer;

/// The media type of a cache's config blob.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";

/// The `artifactType` of a cache manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.kiln.cache.v1";

/// The version a [`CacheConfig`] says it is written in.
pub const FORMAT_VERSION: u32 = 1;

/// Errors of reading or writing a cache outside the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cache at `location` is not a kiln cache, or does not verify.
    #[error("cache `{location}`: {reason}")]
    Invalid {
        /// The cache reference or directory.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// The cache at `location` could not be read or written.
    #[error("cache `{location}`: cannot {action}")]
    Access {
        /// The cache reference or directory.
        location: String,
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Where a cache is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// `type=registry,ref=REF`.
    Registry(Reference),
    /// `type=local,src=DIR` / `dest=DIR`: an OCI image layout directory.
    Local(PathBuf),
}

impl fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheLocation::Registry(r) => write!(f, "{r}"),
            CacheLocation::Local(d) => write!(f, "{}", d.display()),
        }
    }
}

/// Which steps a cache export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// The steps of the final image's stages.
    #[default]
    Min,
    /// The steps of every stage built.
    Max,
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExport {
    /// Where.
    pub location: CacheLocation,
    /// Which steps.
    pub mode: CacheMode,
    /// `ignore-error=true`: a failed export is a warning, not a failed build.
    pub ignore_error: bool,
}

/// A cache's config: layer key → layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// Layer key (64 lowercase hex digits) → the layer.
    pub layers: BTreeMap<String, CachedLayer>,
    /// `mode=max`: mount key ([`mount_key`] of a `RUN --mount=type=cache` id) → the mount's
    /// contents. Absent when empty, so a cache without mounts has the bytes it always had.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mounts: BTreeMap<String, MountContents>,
}

/// The contents of one cache mount (`RUN --mount=type=cache`), exported with `mode=max`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountContents {
    /// The directory as a layer (its members relative to the mount's root).
    pub layer: CachedLayer,
    /// The layer key of the step that ran last with the mount in the build that wrote it.
    pub step: String,
}

/// The key a cache mount's contents are found by: sha256 of `kiln.cache-mount.v1`, a NUL and
/// the mount's id (`id=`, or its absolute target), as 64 hex digits. A step that runs is a step
/// whose layer key missed, so the step cannot be part of the lookup (it is recorded, as
/// [`MountContents::step`]); BuildKit shares a cache mount by its id the same way.
pub fn mount_key(id: &str) -> String {
    let mut b = b"kiln.cache-mount.v1\0".to_vec();
    b.extend_from_slice(id.as_bytes());
    Digest::sha256(&b).hex().to_string()
}

fn check_layer(k: &str, l: &CachedLayer) -> Result<(), String> {
    if l.descriptor.digest.algorithm() != crate::oci::Algorithm::Sha256 {
        return Err(format!("entry `{k}`: kiln caches name layers by sha256"));
    }
    if l.descriptor.media_type.layer_compression().is_none() {
        return Err(format!(
            "entry `{k}`: `{}` is not a layer media type",
            l.descriptor.media_type
        ));
    }
    Ok(())
}

fn is_layer_key(k: &str) -> bool {
    k.len() == 64 && k.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl CacheConfig {
    /// The canonical JSON of the config.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::oci::to_canonical_json(self)
    }

    /// Parses and checks a config: its version, every key's form, every layer's media type.
    pub fn parse(bytes: &[u8]) -> Result<CacheConfig, String> {
        let c: CacheConfig =
            serde_json::from_slice(bytes).map_err(|e| format!("config is not valid: {e}"))?;
        if c.version != FORMAT_VERSION {
            return Err(format!(
                "config version {} (this kiln reads version {FORMAT_VERSION})",
                c.version
            ));
        }
        for (k, l) in &c.layers {
            if !is_layer_key(k) {
                return Err(format!("`{k}` is not a layer key"));
            }
            check_layer(k, l)?;
        }
        for (k, m) in &c.mounts {
            if !is_layer_key(k) || !is_layer_key(&m.step) {
                return Err(format!(
                    "mount `{k}` (step `{}`) is not a mount key",
                    m.step
                ));
            }
            check_layer(k, &m.layer)?;
        }
        Ok(c)
    }

    /// Every layer the config names, the mounts' included.
    pub(super) fn all_layers(&self) -> impl Iterator<Item = (&String, &CachedLayer)> {
        self.layers
            .iter()
            .chain(self.mounts.iter().map(|(k, m)| (k, &m.layer)))
    }

    /// The manifest of this config (whose bytes are `config`): every layer once, by digest.
    pub fn manifest(&self, config: &[u8]) -> Vec<u8> {
        let mut layers: Vec<Descriptor> = Vec::new();
        let mut seen = BTreeSet::new();
        for (_, l) in self.all_layers() {
            if seen.insert(l.descriptor.digest.clone()) {
                layers.push(Descriptor::new(
                    l.descriptor.media_type.clone(),
                    l.descriptor.digest.clone(),
                    l.descriptor.size,
                ));
            }
        }
        layers.sort_by(|a, b| a.digest.cmp(&b.digest));
        let m = Manifest {
            schema_version: 2,
            media_type: Some(MediaType::OciManifest),
            artifact_type: Some(ARTIFACT_TYPE.into()),
            config: Descriptor::new(
                MediaType::Other(CONFIG_MEDIA_TYPE.into()),
                Digest::sha256(config),
                config.len() as u64,
            ),
            layers,
            subject: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        };
        crate::oci::to_canonical_json(&m)
    }
}

/// Parses a cache manifest and checks it names a kiln cache config of an acceptable size;
/// returns it.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    let m: Manifest = crate::oci::from_json("cache manifest", bytes).map_err(|e| e.to_string())?;
    if m.config.media_type.as_str() != CONFIG_MEDIA_TYPE {
        return Err(format!(
            "not a kiln cache: its config is `{}`, not `{CONFIG_MEDIA_TYPE}`",
            m.config.media_type
        ));
    }
    check_size("cache config", m.config.size, MAX_CONFIG_SIZE)?;
    Ok(m)
}

/// Checks a config (`bytes`, as fetched) against the manifest that names it: its digest and
/// size, and that every layer it names is one of the manifest's (so the cache's holder has it).
pub fn verify_config(m: &Manifest, bytes: &[u8]) -> Result<CacheConfig, String> {
    if bytes.len() as u64 != m.config.size || !m.config.digest.matches(bytes) {
        return Err(format!(
            "the config does not match its digest `{}`",
            m.config.digest
        ));
    }
    let c = CacheConfig::parse(bytes)?;
    let listed: BTreeMap<&Digest, &Descriptor> = m.layers.iter().map(|l| (&l.digest, l)).collect();
    for (k, l) in c.all_layers() {
        match listed.get(&l.descriptor.digest) {
            Some(d) if d.size == l.descriptor.size && d.media_type == l.descriptor.media_type => {}
            _ => {
                return Err(format!(
                    "entry `{k}`: layer `{}` is not among the manifest's layers",
                    l.descriptor.digest
                ))
            }
        }
    }
    Ok(c)
}

/// Where a hit came from.
#[derive(Debug, Clone)]
enum Origin {
    /// A registry cache: the `registry/repository` its layers are fetched from.
    Registry { location: String },
    /// A local cache directory.
    Local { dir: PathBuf },
}

#[derive(Debug, Clone)]
struct Entry {
    layer: CachedLayer,
    origin: Origin,
    /// The cache as the user named it (for the metadata file and warnings).
    name: String,
}

/// A layer found in a cache outside the store.
#[derive(Debug, Clone)]
pub struct RemoteHit {
    /// The layer (lazy when it came from a registry).
    pub layer: CachedLayer,
    /// The cache it came from, as `--cache-from` named it.
    pub from: String,
}

/// The caches a build reads (`--cache-from`, in order: the first that has a key answers it).
#[derive(Debug, Default)]
pub struct RemoteCache {
    entries: BTreeMap<String, Entry>,
    /// Layers found not to verify: never a hit again in this build.
    denied: BTreeSet<Digest>,
    /// Layers answered from a registry cache without their bytes.
    lazy: BTreeSet<Digest>,
    /// Cache mounts' contents: mount key → the contents, where from, the cache's name.
    mounts: BTreeMap<String, (MountContents, Origin, String)>,
}

impl RemoteCache {
    /// Reads every cache of `from`. One that cannot be read, or does not verify, is reported
    /// as a warning and skipped; one that does not exist yet is reported as a status.
    pub fn load(
        from: &[CacheLocation],
        remote: Option<&Remote>,
        reporter: &dyn Reporter,
    ) -> RemoteCache {
        let mut cache = RemoteCache::default();
        for loc in from {
            let name = loc.to_string();
            let read = match loc {
                CacheLocation::Registry(r) => match remote {
                    Some(remote) => read_registry(remote, r).map(|c| {
                        c.map(|c| {
                            let location = format!("{}/{}", r.registry(), r.repository());
                            (c, Origin::Registry { location })
                        })
                    }),
                    None => Err(Error::Invalid {
                        location: name.clone(),
                        reason: "no registry client is configured".into(),
                    }),
                },
                CacheLocation::Local(dir) => {
                    local::read(dir).map(|c| c.map(|c| (c, Origin::Local { dir: dir.clone() })))
                }
            };
            match read {
                Ok(Some((config, origin))) => {
                    reporter.on_status(&format!("cache `{name}`: {} layers", config.layers.len()));
                    for (k, m) in config.mounts {
                        cache
                            .mounts
                            .entry(k)
                            .or_insert_with(|| (m, origin.clone(), name.clone()));
                    }
                    for (k, layer) in config.layers {
                        cache.entries.entry(k).or_insert_with(|| Entry {
                            layer,
                            origin: origin.clone(),
                            name: name.clone(),
                        });
                    }
                }
                Ok(None) => reporter.on_status(&format!("cache `{name}` does not exist yet")),
                Err(e) => reporter.on_warning(&format!("{}; it is ignored", chain(&e))),
            }
        }
        cache
    }

    /// Whether a cache has `key` (nothing is recorded or copied).
    pub fn contains(&self, key: &str) -> bool {
        self.entries
            .get(key)
            .is_some_and(|e| !self.denied.contains(&e.layer.descriptor.digest))
    }

    /// The layer cached under `key` in a cache, if any. From a registry: its origin is
    /// recorded and its bytes are not downloaded. From a directory: copied into the store,
    /// verified against its digest and diff_id; one that does not verify is a miss, reported
    /// as a warning.
    pub fn get(&mut self, store: &Store, key: &str, reporter: &dyn Reporter) -> Option<RemoteHit> {
        let e = self.entries.get(key)?;
        if self.denied.contains(&e.layer.descriptor.digest) {
            return None;
        }
        match &e.origin {
            Origin::Registry { location } => {
                if !store.contains(&e.layer.descriptor.digest) {
                    crate::store::record_origin(store, &e.layer.descriptor.digest, location);
                    self.lazy.insert(e.layer.descriptor.digest.clone());
                }
            }
            Origin::Local { dir } => {
                if let Err(err) = local::import_layer(store, dir, &e.layer) {
                    reporter.on_warning(&format!(
                        "layer `{}` from the cache does not verify ({}); the step is built instead",
                        e.layer.descriptor.digest,
                        chain(&err)
                    ));
                    let d = e.layer.descriptor.digest.clone();
                    self.denied.insert(d);
                    return None;
                }
            }
        }
        Some(RemoteHit {
            layer: e.layer.clone(),
            from: e.name.clone(),
        })
    }

    /// The layers answered from a registry cache without their bytes whose diff_id is not
    /// checked yet, each once.
    pub fn unchecked(&self) -> Vec<CachedLayer> {
        let mut out: Vec<CachedLayer> = Vec::new();
        for e in self.entries.values() {
            let d = &e.layer.descriptor.digest;
            if self.lazy.contains(d) && !out.iter().any(|l| &l.descriptor.digest == d) {
                out.push(e.layer.clone());
            }
        }
        out
    }

    /// `digest`'s bytes were fetched and their diff_id checked.
    pub fn checked(&mut self, digest: &Digest) {
        self.lazy.remove(digest);
    }

    /// The mount keys the caches have contents for.
    pub fn mount_keys(&self) -> Vec<String> {
        self.mounts.keys().cloned().collect()
    }

    /// The contents of the cache mount `key` in a cache, if any, with the cache's name. With
    /// `fetch`, the layer is in the store afterwards, verified against its digest and
    /// diff_id; without, a registry layer is only recorded at its origin (to be mounted or
    /// streamed by an export).
    pub fn mount(
        &self,
        layers: crate::transport::LayerSource<'_>,
        key: &str,
        fetch: bool,
    ) -> Result<Option<(MountContents, String)>, Error> {
        let Some((m, origin, name)) = self.mounts.get(key) else {
            return Ok(None);
        };
        let (d, store) = (&m.layer.descriptor, layers.store());
        match origin {
            Origin::Local { dir } => local::import_layer(store, dir, &m.layer)?,
            Origin::Registry { location } => {
                if !store.contains(&d.digest) {
                    crate::store::record_origin(store, &d.digest, location);
                }
                if fetch {
                    layers
                        .open_blob_sized(&d.digest, Some(d.size))
                        .map_err(access(name, "read a cache mount's layer"))?;
                    let id = diff_id(store, d).map_err(access(name, "read a layer"))?;
                    if id != m.layer.diff_id {
                        return Err(Error::Invalid {
                            location: name.clone(),
                            reason: format!(
                                "layer `{}` has diff_id `{id}`, not `{}` as the cache says",
                                d.digest, m.layer.diff_id
                            ),
                        });
                    }
                }
            }
        }
        Ok(Some((m.clone(), name.clone())))
    }

    /// Never answers with `digest` again (its bytes did not verify).
    pub fn deny(&mut self, digest: &Digest) {
        self.denied.insert(digest.clone());
        self.lazy.remove(digest);
    }
}

/// The error with its causes, on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn access<'a, E: std::error::Error + Send + Sync + 'static>(
    location: &'a str,
    action: &'static str,
) -> impl FnOnce(E) -> Error + 'a {
    move |e| Error::Access {
        location: location.to_string(),
        action,
        source: Box::new(e),
    }
}

/// Reads the registry cache at `r`: `None` when there is none yet.
fn read_registry(remote: &Remote, r: &Reference) -> Result<Option<CacheConfig>, Error> {
    let location = r.to_string();
    let invalid = |reason: String| Error::Invalid {
        location: location.clone(),
        reason,
    };
    let top = match remote.client.get_manifest(r) {
        Ok(m) => m,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(access(&location, "read its manifest")(e)),
    };
    if !top.media_type.is_manifest() {
        return Err(invalid(format!(
            "`{}` is not an image manifest",
            top.media_type
        )));
    }
    let m = parse_manifest(&top.bytes).map_err(invalid)?;
    let mut bytes = Vec::new();
    remote
        .client
        .get_blob(
            r,
            &m.config.digest,
            Some(m.config.size),
            &mut bytes,
            &crate::registry::NoProgress,
        )
        .map_err(access(&location, "read its config"))?;
    verify_config(&m, &bytes).map(Some).map_err(invalid)
}

/// Writes a cache of `layers` (layer key → layer) and `mounts` (mount key → contents) to `to`: blobs, config, then the manifest.
/// Returns the manifest's digest.
pub fn export(
    store: &Store,
    remote: Option<&Remote>,
    to: &CacheLocation,
    layers: BTreeMap<String, CachedLayer>,
    mounts: BTreeMap<String, MountContents>,
) -> Result<Digest, Error> {
    let location = to.to_string();
    let config = CacheConfig {
        version: FORMAT_VERSION,
        layers,
        mounts,
    };
    let config_bytes = config.to_bytes();
    let manifest = config.manifest(&config_bytes);
    match to {
        CacheLocation::Registry(r) => {
            let remote = remote.ok_or_else(|| Error::Invalid {
                location: location.clone(),
                reason: "no registry client is configured".into(),
            })?;
            store
                .put_bytes(&config_bytes)
                .map_err(access(&location, "store its config"))?;
            let m = parse_manifest(&manifest).expect("kiln writes valid cache manifests");
            let mut blobs: Vec<&Descriptor> = m.layers.iter().collect();
            blobs.push(&m.config);
            crate::transport::push_artifact(
                store,
                remote,
                r,
                &blobs,
                &manifest,
                &MediaType::OciManifest,
            )
            .map_err(access(&location, "push it"))
        }
        CacheLocation::Local(dir) => {
            let layers = crate::transport::LayerSource::new(store, remote);
            local::write(layers, dir, &config, &config_bytes, &manifest)
        }
    }
}

#[cfg(test)]
mod tests;
