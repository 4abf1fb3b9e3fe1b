//! `docker://REF`: pulling into the store and pushing from it, through [`crate::registry`].
//!
//! A pull stores every blob through a temp file that is named only after its digest is verified,
//! and records where each layer came from (`origins/<hex>`), so that a later push to another
//! repository of the same registry can mount it instead of uploading it.
//!
//! A *lazy* pull (a build's `FROM`) stores the manifest and config only and records the layers'
//! origins: [`RegistryFetcher`] downloads a layer the first time something opens it through a
//! [`super::LayerSource`] given the registry (unpacking for RUN, `COPY --from`, an export), and
//! a push reads a lazy layer that
//! must be uploaded straight from its origin. A push to the origin's registry needs no bytes at
//! all: the HEAD finds the layer in the same repository, or a mount brings it from another.
use std::io::Write;
use std::sync::Arc;

use crate::image::Image;
use crate::oci::{Descriptor, Digest, MediaType, Platform};
use crate::progress::{Direction, NoopReporter, Reporter};
use crate::registry::{
    self, pull_blobs, push_blobs, BlobSink, BlobUpload, Client, Reference, RemoteManifest,
    ReportTransfers,
};
use crate::store::{BlobWriter, Store};

use super::{Error, Result};

/// A registry client, how many blobs it moves at once, and where their progress goes.
#[derive(Clone)]
pub struct Remote {
    /// The client (credentials, TLS, mirrors, retries).
    pub client: Client,
    /// Concurrent blob transfers (`--jobs`).
    pub jobs: usize,
    /// Receives the `on_transfer_*` events of every blob pulled or pushed, lazy layers
    /// fetched later included (so it is shared, not borrowed).
    pub reporter: Arc<dyn Reporter>,
}

impl Remote {
    /// A remote whose transfers are not reported.
    pub fn new(client: Client, jobs: usize) -> Remote {
        Remote {
            client,
            jobs,
            reporter: Arc::new(NoopReporter),
        }
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("client", &self.client)
            .field("jobs", &self.jobs)
            .finish_non_exhaustive()
    }
}

fn reg(e: registry::Error) -> Error {
    Error::Registry(Box::new(e))
}

struct StoreSink {
    w: BlobWriter,
    digest: Digest,
    size: Option<u64>,
}

impl Write for StoreSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.w.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

impl BlobSink for StoreSink {
    fn commit(self: Box<Self>) -> std::io::Result<()> {
        let s = *self;
        s.w.finish_expecting(&s.digest, s.size)
            .map_err(std::io::Error::other)
    }
}

fn location(r: &Reference) -> String {
    format!("{}/{}", r.registry(), r.repository())
}

/// The repositories of `registry` among a blob's origin record lines.
fn repositories_in<'a>(origins: &'a [String], registry: &'a str) -> impl Iterator<Item = &'a str> {
    origins
        .iter()
        .filter_map(move |l| l.strip_prefix(registry).and_then(|r| r.strip_prefix('/')))
}

/// The reference of an origin record line (`registry/repository`).
fn origin_reference(line: &str) -> Option<Reference> {
    let (registry, repository) = line.split_once('/')?;
    Reference::new(registry, repository).ok()
}

/// Downloads lazy blobs from the registries their origin records name.
///
/// Whatever opens one layer of an image (unpacking, indexing, an export) opens all of them, so
/// a fetch also downloads, `jobs` at a time, the other lazy layers of every named image that
/// holds the layer asked for (only that layer's failure is an error; a sibling that fails is
/// fetched again when it is opened).
pub(crate) struct RegistryFetcher {
    client: Client,
    jobs: usize,
    reporter: Arc<dyn Reporter>,
}

impl std::fmt::Debug for RegistryFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryFetcher")
            .field("jobs", &self.jobs)
            .finish_non_exhaustive()
    }
}

impl RegistryFetcher {
    /// Downloads `digest` from the first of `origins` that has it.
    fn fetch_one(
        &self,
        store: &Store,
        digest: &Digest,
        size: Option<u64>,
        origins: &[String],
    ) -> std::result::Result<(), String> {
        if store.contains(digest) {
            return Ok(());
        }
        let mut tried = Vec::new();
        let size = size.or_else(|| declared_size(store, digest));
        for line in origins {
            let Some(r) = origin_reference(line) else {
                continue;
            };
            let mut sink = StoreSink {
                w: BlobWriter::new_in(store.root()).map_err(|e| e.to_string())?,
                digest: digest.clone(),
                size,
            };
            let progress = ReportTransfers::new(&*self.reporter, Direction::Download);
            match self.client.get_blob(&r, digest, size, &mut sink, &progress) {
                Ok(_) => return Box::new(sink).commit().map_err(|e| e.to_string()),
                Err(e) => tried.push(format!("from `{line}`: {e}")),
            }
        }
        if tried.is_empty() {
            return Err("no usable origin is recorded".into());
        }
        Err(tried.join("; "))
    }
}

/// The image manifests present in the store under its names (through indexes).
fn named_manifests(store: &Store) -> Vec<crate::oci::Manifest> {
    let mut manifests = Vec::new();
    let mut todo: Vec<Descriptor> = store.index().map(|i| i.manifests).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    while let Some(d) = todo.pop() {
        // Only what is present: reading a missing manifest must not fetch anything.
        if !seen.insert(d.digest.clone()) || !store.contains(&d.digest) {
            continue;
        }
        let Ok(bytes) = store.read_blob(&d.digest) else {
            continue;
        };
        if d.media_type.is_index() {
            if let Ok(i) = crate::oci::from_json::<crate::oci::Index>("index", &bytes) {
                todo.extend(i.manifests);
            }
        } else if d.media_type.is_manifest() {
            if let Ok(m) = crate::oci::from_json::<crate::oci::Manifest>("manifest", &bytes) {
                manifests.push(m);
            }
        }
    }
    manifests
}

/// The size a named image's manifest declares for the layer `digest`: a lazy download is read
/// through it (see [`Client::get_blob`]), so an endless body cannot fill the disk.
fn declared_size(store: &Store, digest: &Digest) -> Option<u64> {
    named_manifests(store)
        .into_iter()
        .flat_map(|m| m.layers)
        .find(|l| &l.digest == digest)
        .map(|l| l.size)
}

/// The other lazy layers (missing, with an origin) of the images named in the store whose
/// manifests list `digest`, each with its origins.
fn lazy_siblings(store: &Store, digest: &Digest) -> Vec<(Digest, Vec<String>)> {
    let manifests = named_manifests(store);
    let mut out: Vec<(Digest, Vec<String>)> = Vec::new();
    for m in manifests {
        if !m.layers.iter().any(|l| &l.digest == digest) {
            continue;
        }
        for l in m.layers {
            if &l.digest == digest
                || out.iter().any(|(d, _)| d == &l.digest)
                || store.contains(&l.digest)
            {
                continue;
            }
            let origins = crate::store::origins(store, &l.digest);
            if !origins.is_empty() {
                out.push((l.digest, origins));
            }
        }
    }
    out
}

impl RegistryFetcher {
    /// A fetcher of lazy layers through `remote` (its client, jobs and reporter).
    pub(crate) fn new(remote: &Remote) -> RegistryFetcher {
        RegistryFetcher {
            client: remote.client.clone(),
            jobs: remote.jobs.max(1),
            reporter: remote.reporter.clone(),
        }
    }

    /// Downloads the lazy blob `digest` from the first of `origins` (`registry/repository`, in
    /// the order recorded) that has it, verified, into the store; the error text names the
    /// registries tried. `size`, when known (a layer descriptor's), bounds the download.
    pub(crate) fn fetch(
        &self,
        store: &Store,
        digest: &Digest,
        size: Option<u64>,
        origins: &[String],
    ) -> std::result::Result<(), String> {
        // One job at a time fetches only what was asked for: no need to look for siblings.
        let siblings = match self.jobs {
            0 | 1 => Vec::new(),
            _ => lazy_siblings(store, digest),
        };
        if siblings.is_empty() {
            return self.fetch_one(store, digest, size, origins);
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut result = Ok(());
        std::thread::scope(|s| {
            let workers: Vec<_> = (1..self.jobs.min(siblings.len() + 1))
                .map(|_| {
                    s.spawn(|| loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some((d, from)) = siblings.get(i) else {
                            return;
                        };
                        let _ = self.fetch_one(store, d, None, from);
                    })
                })
                .collect();
            result = self.fetch_one(store, digest, size, origins);
            for w in workers {
                let _ = w.join();
            }
        });
        result
    }
}

fn store_manifest(store: &Store, m: &RemoteManifest) -> Result<()> {
    store.put_verified(&m.digest, Some(m.bytes.len() as u64), &mut &m.bytes[..])?;
    Ok(())
}

/// Pulls `reference` for `platform` into the store (through mirrors when configured). A lazy
/// pull stores the manifest and config only, and records where each layer can be fetched from.
pub(crate) fn pull(
    store: &Store,
    remote: &Remote,
    reference: &str,
    platform: &Platform,
    lazy: bool,
) -> Result<Image> {
    let r = Reference::parse(reference).map_err(reg)?;
    let client = &remote.client;
    let (source, top) = client.get_manifest_via_mirrors(&r).map_err(reg)?;
    let manifest = if top.is_index() {
        store_manifest(store, &top)?;
        let index = top.index().map_err(reg)?;
        let d = registry::select_platform(&index, platform).ok_or_else(|| Error::NoPlatform {
            location: format!("docker://{reference}"),
            platform: Box::new(platform.clone()),
            available: registry::platforms(&index)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        client
            .get_manifest(&source.with_digest(d.digest.clone()))
            .map_err(reg)?
    } else {
        top
    };
    if !manifest.media_type.is_manifest() {
        return Err(Error::Malformed {
            location: format!("docker://{reference}"),
            reason: format!("`{}` is not an image manifest", manifest.media_type),
        });
    }
    store_manifest(store, &manifest)?;
    let m = manifest.manifest().map_err(reg)?;
    // Origins first: a layer that is not downloaded now must be findable later.
    let here = location(&source);
    crate::store::record_origin(store, &m.config.digest, &here);
    let mut wanted = Vec::new();
    plan_pull(store, &m, &here, lazy, &mut wanted)?;
    pull_missing(store, remote, &source, wanted)?;
    let raw_config = store.read_blob(&m.config.digest)?;
    let mut image = Image::from_raw(manifest.bytes.clone(), raw_config)?;
    image.descriptor.media_type = manifest.media_type.clone();
    Ok(image)
}

/// Records where `m`'s layers come from (`here`, so a layer not downloaded now can be found
/// later) and adds what a pull downloads to `wanted`: the config and, unless `lazy`, the layers
/// that are not foreign. A config declared over [`crate::oci::limits::MAX_CONFIG_SIZE`] is
/// refused before anything is fetched: configs are read whole into memory.
fn plan_pull(
    store: &Store,
    m: &crate::oci::Manifest,
    here: &str,
    lazy: bool,
    wanted: &mut Vec<Descriptor>,
) -> Result<()> {
    super::check_document(&m.config, true, &format!("docker://{here}"))?;
    for l in &m.layers {
        crate::store::record_origin(store, &l.digest, here);
    }
    wanted.push(m.config.clone());
    if !lazy {
        wanted.extend(
            m.layers
                .iter()
                .filter(|l| !l.media_type.is_foreign_layer())
                .cloned(),
        );
    }
    Ok(())
}

/// Pulls what `reference` names with everything below it (`kiln copy --all`): an index, every
/// manifest it lists, their configs and (unless `lazy`) layers. Returns the top descriptor;
/// the index keeps the registry's bytes, so it keeps its digest.
pub(crate) fn pull_all(
    store: &Store,
    remote: &Remote,
    reference: &str,
    lazy: bool,
) -> Result<Descriptor> {
    let r = Reference::parse(reference).map_err(reg)?;
    let client = &remote.client;
    let (source, top) = client.get_manifest_via_mirrors(&r).map_err(reg)?;
    let here = location(&source);
    let mut manifests = Vec::new();
    if top.is_index() {
        for d in &top.index().map_err(reg)?.manifests {
            let m = client
                .get_manifest(&source.with_digest(d.digest.clone()))
                .map_err(reg)?;
            if !m.media_type.is_manifest() {
                return Err(Error::Malformed {
                    location: format!("docker://{reference}"),
                    reason: format!(
                        "`{}` is `{}`: --all copies indexes of image manifests only",
                        d.digest, m.media_type
                    ),
                });
            }
            manifests.push(m);
        }
    } else if top.media_type.is_manifest() {
        manifests.push(top.clone());
    } else {
        return Err(Error::Malformed {
            location: format!("docker://{reference}"),
            reason: format!("`{}` is not an image manifest or index", top.media_type),
        });
    }
    let mut wanted: Vec<Descriptor> = Vec::new();
    for m in &manifests {
        plan_pull(store, &m.manifest().map_err(reg)?, &here, lazy, &mut wanted)?;
    }
    pull_missing(store, remote, &source, wanted)?;
    // Manifests after their blobs, the index last: what is named is complete.
    for m in &manifests {
        store_manifest(store, m)?;
    }
    store_manifest(store, &top)?;
    Ok(top.descriptor())
}

/// Pushes every image by digest, then the index's own bytes (`index`, whose blob is in the
/// store) under `reference` (`kiln copy --all`).
pub(crate) fn push_all(
    store: &Store,
    remote: &Remote,
    images: &[Image],
    index: &Descriptor,
    reference: &str,
) -> Result<Descriptor> {
    let r = Reference::parse(reference).map_err(reg)?;
    for img in images {
        push(
            store,
            remote,
            img,
            &r.with_digest(img.digest().clone()).to_string(),
        )?;
    }
    let bytes = store.read_blob(&index.digest)?;
    let digest = remote
        .client
        .put_manifest(&r, &bytes, &index.media_type)
        .map_err(reg)?;
    Ok(Descriptor::new(
        index.media_type.clone(),
        digest,
        bytes.len() as u64,
    ))
}

/// Pushes `image` (blobs in the store) to `reference`: blobs the registry has are skipped,
/// blobs known in another repository of the same registry are mounted, the rest uploaded.
pub(crate) fn push(
    store: &Store,
    remote: &Remote,
    image: &Image,
    reference: &str,
) -> Result<Descriptor> {
    let r = Reference::parse(reference).map_err(reg)?;
    let config = &image.manifest.config;
    let blobs: Vec<&Descriptor> = image
        .layers()
        .iter()
        .filter(|l| !l.media_type.is_foreign_layer())
        .chain(std::iter::once(config))
        .collect();
    upload_blobs(store, remote, &r, &blobs)?;
    let digest =
        match remote
            .client
            .put_manifest(&r, &image.raw_manifest, &image.descriptor.media_type)
        {
            Ok(d) => d,
            // Some registries still refuse OCI media types: send the same image as Docker schema 2.
            Err(e) if e.is_manifest_rejected() => match docker_manifest(image) {
                Some(bytes) => remote
                    .client
                    .put_manifest(&r, &bytes, &MediaType::DockerManifest)
                    .map_err(reg)?,
                None => return Err(reg(e)),
            },
            Err(e) => return Err(reg(e)),
        };
    let there = location(&r);
    for d in image.layers().iter().chain(std::iter::once(config)) {
        crate::store::record_origin(store, &d.digest, &there);
    }
    Ok(Descriptor::new(
        image.descriptor.media_type.clone(),
        digest,
        image.raw_manifest.len() as u64,
    ))
}

/// Pushes a manifest that is not an image's (kiln's build cache, `crate::cache::remote`):
/// `blobs` first (its config and layers, in the store or lazy, each skipped, mounted or uploaded
/// as `push` does), then `manifest` (bytes of `media_type`) under `reference`, last, so the
/// reference never names a manifest whose blobs are not all there. Returns its digest.
pub fn push_artifact(
    store: &Store,
    remote: &Remote,
    reference: &Reference,
    blobs: &[&Descriptor],
    manifest: &[u8],
    media_type: &MediaType,
) -> Result<Digest> {
    upload_blobs(store, remote, reference, blobs)?;
    let digest = remote
        .client
        .put_manifest(reference, manifest, media_type)
        .map_err(reg)?;
    let there = location(reference);
    for d in blobs {
        crate::store::record_origin(store, &d.digest, &there);
    }
    Ok(digest)
}

/// Makes every blob of `blobs` present in `r`'s repository: skipped when the registry has it,
/// mounted from another repository of the same registry it is known in, else uploaded (from
/// the store, or streamed from its origin when it is lazy).
fn upload_blobs(
    store: &Store,
    remote: &Remote,
    r: &Reference,
    blobs: &[&Descriptor],
) -> Result<()> {
    let mut uploads = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for d in blobs.iter().copied() {
        if !seen.insert(d.digest.clone()) {
            continue;
        }
        let path = store.blob_path(&d.digest);
        let origins = crate::store::origins(store, &d.digest);
        let mount_from = repositories_in(&origins, r.registry())
            .filter(|repo| *repo != r.repository())
            .map(str::to_string)
            .collect();
        // A lazy layer that must be uploaded after all is read from its origin, verified as it
        // streams (the registry checks the digest of what we PUT, too).
        let lazy_from: Vec<Reference> = if store.contains(&d.digest) {
            Vec::new()
        } else {
            origins.iter().filter_map(|l| origin_reference(l)).collect()
        };
        let client = remote.client.clone();
        let (digest, size) = (d.digest.clone(), d.size);
        uploads.push(BlobUpload {
            digest: d.digest.clone(),
            size: d.size,
            open: Box::new(move || {
                if lazy_from.is_empty() || path.is_file() {
                    return Ok(
                        Box::new(std::fs::File::open(&path)?) as Box<dyn std::io::Read + Send>
                    );
                }
                let mut errors = Vec::new();
                for o in &lazy_from {
                    match client.open_blob(o, &digest, Some(size)) {
                        Ok(b) => return Ok(Box::new(b) as Box<dyn std::io::Read + Send>),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                Err(std::io::Error::other(format!(
                    "lazy layer `{digest}` cannot be read from its origin: {}",
                    errors.join("; ")
                )))
            }),
            mount_from,
        });
    }
    let progress = ReportTransfers::new(&*remote.reporter, Direction::Upload);
    push_blobs(&remote.client, r, &uploads, remote.jobs.max(1), &progress).map_err(reg)?;
    Ok(())
}

/// The image's manifest with Docker schema 2 media types (same config and layer blobs), or
/// `None` when a layer has no Docker equivalent (zstd, uncompressed).
pub(crate) fn docker_manifest(image: &Image) -> Option<Vec<u8>> {
    let mut m = image.manifest.clone();
    m.media_type = Some(MediaType::DockerManifest);
    m.config.media_type = MediaType::DockerConfig;
    for l in &mut m.layers {
        l.media_type = match l.media_type {
            MediaType::OciLayerGzip | MediaType::DockerLayerGzip => MediaType::DockerLayerGzip,
            MediaType::OciForeignLayerGzip | MediaType::DockerForeignLayerGzip => {
                MediaType::DockerForeignLayerGzip
            }
            _ => return None,
        };
    }
    m.annotations.clear();
    Some(crate::oci::to_canonical_json(&m))
}

/// Downloads into the store those of `wanted` it lacks (each once, `jobs` at a time), each
/// verified against its digest before it is renamed into place.
fn pull_missing(
    store: &Store,
    remote: &Remote,
    source: &Reference,
    mut wanted: Vec<Descriptor>,
) -> Result<()> {
    wanted.retain(|d| !store.contains(&d.digest));
    wanted.sort_by(|a, b| a.digest.cmp(&b.digest));
    wanted.dedup_by(|a, b| a.digest == b.digest);
    let root = store.root().to_path_buf();
    let open = move |d: &Descriptor| -> std::io::Result<Box<dyn BlobSink>> {
        Ok(Box::new(StoreSink {
            w: BlobWriter::new_in(&root).map_err(std::io::Error::other)?,
            digest: d.digest.clone(),
            size: Some(d.size),
        }))
    };
    let progress = ReportTransfers::new(&*remote.reporter, Direction::Download);
    let jobs = remote.jobs.max(1);
    pull_blobs(&remote.client, source, &wanted, jobs, &progress, &open).map_err(reg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageBuilder, NewLayer};

    #[test]
    fn docker_schema2_keeps_the_blobs_and_changes_only_media_types() {
        let mut b = ImageBuilder::scratch(&Platform::linux("amd64"));
        b.append(
            NewLayer {
                descriptor: Descriptor::new(MediaType::OciLayerGzip, Digest::sha256(b"l"), 1),
                diff_id: Digest::sha256(b"t"),
            },
            "COPY",
        );
        let img = b.build();
        let bytes = docker_manifest(&img).unwrap();
        let m: crate::oci::Manifest = crate::oci::from_json("manifest", &bytes).unwrap();
        assert_eq!(m.media_type, Some(MediaType::DockerManifest));
        assert_eq!(m.config.digest, img.manifest.config.digest);
        assert_eq!(m.layers[0].digest, img.manifest.layers[0].digest);
        assert_eq!(m.layers[0].media_type, MediaType::DockerLayerGzip);
        b.append(
            NewLayer {
                descriptor: Descriptor::new(MediaType::OciLayerZstd, Digest::sha256(b"z"), 1),
                diff_id: Digest::sha256(b"u"),
            },
            "COPY",
        );
        assert!(docker_manifest(&b.build()).is_none());
    }
}
