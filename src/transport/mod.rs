//! Reading and writing images through transports, named as containers-transports(5) names them.
//!
//! | transport | form | read | write |
//! |---|---|---|---|
//! | local store | a bare name (`app:1.0`) | yes | yes |
//! | OCI layout | `oci:DIR[:REF]` | yes | yes |
//! | OCI archive | `oci-archive:FILE[:REF]` | yes | yes |
//! | docker-archive | `docker-archive:FILE[:NAME:TAG]` or `:@INDEX` | yes | yes (loadable by `docker load` and `podman load`) |
//! | registry | `docker://REF` | with the registry module | with the registry module |
//!
//! What it owns: [`Target`] parsing, and moving images between the local store and those places.
//! An OCI layout or archive names the image it holds as containerd and BuildKit do
//! ([`named_entry`]): `io.containerd.image.name` (the full name) and `ref.name` (its tag).
//! Every read goes *into* the store first (blobs verified as they land), so the rest of kiln only
//! ever reads images from the store; every write reads from the store. Writes of files are atomic:
//! archives are written to a temp file beside the destination and renamed; OCI layouts get their
//! blobs through temp files and `index.json` replaced whole.
//!
//! Lazy layers: [`read_base_into_store`] (a build's `FROM` and `COPY --from` images) pulls a
//! registry image without its layers; they are downloaded, verified, the first time something
//! opens them through a [`LayerSource`] that was given the registry client: the builder's, the
//! writers' here (from [`write_from_store`]'s `remote`), `kiln diff`'s. The store itself never
//! reaches a registry: opened there, a lazy layer is an error that says so. Everything else
//! (`kiln pull`, `kiln copy`) pulls every layer.
//!
//! Whole indexes (`kiln copy --all`): [`read_all_into_store`] brings an index, every manifest it
//! lists and their blobs into the store, and [`write_all_from_store`] writes them all and then
//! the index's own bytes (so its digest is kept) to the store, `oci:`, `oci-archive:` or a
//! registry; a docker-archive holds single images only.

mod archive_tar;
mod docker;
mod docker_archive;
mod oci_archive;
mod oci_dir;
mod select;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::image::Image;
use crate::oci::{Descriptor, Platform};
use crate::store::{self, Store};

pub use docker::{push_artifact, Remote};
pub use select::load_image;

/// Where the bytes of layers come from: the store and, for a layer a build's `FROM` pulled
/// lazily (its origin recorded, its bytes not downloaded), the registry it came from. Whatever
/// reads layers (the builder, exports, `kiln diff`) is given one, so a read that may reach the
/// network says so where it is called; the store itself never does.
#[derive(Clone, Copy)]
pub struct LayerSource<'a> {
    store: &'a Store,
    remote: Option<&'a Remote>,
}

impl<'a> LayerSource<'a> {
    /// Layers from `store`, lazy ones downloaded through `remote` when it is given.
    pub fn new(store: &'a Store, remote: Option<&'a Remote>) -> LayerSource<'a> {
        LayerSource { store, remote }
    }

    /// The store.
    pub fn store(&self) -> &'a Store {
        self.store
    }

    /// Opens a blob of the store, downloading it first (verified) when it is lazy and a
    /// registry was given.
    pub fn open_blob(&self, digest: &crate::oci::Digest) -> Result<std::fs::File> {
        self.open_blob_sized(digest, None)
    }

    /// As [`LayerSource::open_blob`], a lazy download bounded by `size` when the caller knows
    /// it (a layer descriptor's; else the size a named image's manifest declares).
    pub fn open_blob_sized(
        &self,
        digest: &crate::oci::Digest,
        size: Option<u64>,
    ) -> Result<std::fs::File> {
        if let (false, Some(remote)) = (self.store.contains(digest), self.remote) {
            let origins = store::origins(self.store, digest);
            if !origins.is_empty() {
                docker::RegistryFetcher::new(remote)
                    .fetch(self.store, digest, size, &origins)
                    .map_err(|message| store::Error::LazyFetch {
                        digest: digest.clone(),
                        message,
                    })?;
            }
        }
        Ok(self.store.open_blob(digest)?)
    }

    /// A reader of the uncompressed tar of `layer`.
    pub fn open_layer(&self, layer: &Descriptor) -> Result<Box<dyn std::io::Read>> {
        let blob = self.open_blob_sized(&layer.digest, Some(layer.size))?;
        let path = self.store.blob_path(&layer.digest);
        let r = docker_archive::decompress(blob, &layer.media_type, &path)?;
        // Whoever reads the tar (index, unpack, whiteout scan) reads it with bounded memory.
        Ok(Box::new(crate::layer::TarGuard::new(r)))
    }
}

/// Errors from transports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The transport string could not be parsed.
    #[error("invalid image reference `{value}`: {reason}")]
    InvalidTarget {
        /// The text.
        value: String,
        /// Why.
        reason: String,
    },
    /// A transport kiln does not support (yet).
    #[error("`{value}`: the {transport} transport is not supported")]
    Unsupported {
        /// The text.
        value: String,
        /// The transport name.
        transport: String,
    },
    /// A file or directory operation failed.
    #[error("{action} `{}`", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The source does not hold the image asked for.
    #[error("{location}: no image {wanted}{available}")]
    NotFound {
        /// The archive or layout.
        location: String,
        /// What was asked for.
        wanted: String,
        /// What is there, as text for the message.
        available: String,
    },
    /// The source is malformed.
    #[error("{location}: {reason}")]
    Malformed {
        /// The archive or layout.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// An index has no manifest for the platform.
    #[error("{location}: no manifest for platform {platform} (available: {available})")]
    NoPlatform {
        /// Where.
        location: String,
        /// What was asked for.
        platform: Box<Platform>,
        /// What there is.
        available: String,
    },
    /// A registry operation failed.
    #[error(transparent)]
    Registry(Box<crate::registry::Error>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// An image document is invalid.
    #[error(transparent)]
    Image(#[from] crate::image::Error),
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Opens a file of an `oci:` layout for reading: with `O_NOFOLLOW`, so a symlink (to
/// `/dev/zero`, to a host file) is refused, and `O_NONBLOCK`, so a FIFO cannot hang the open;
/// anything but a regular file is refused. Errors name the file.
pub(crate) fn open_regular(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "it is a symbolic link, not a regular file",
            ),
            _ => e,
        })
        .map_err(io_err("cannot read", path))?;
    let meta = f.metadata().map_err(io_err("cannot read", path))?;
    if !meta.is_file() {
        return Err(io_err("cannot read", path)(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it is not a regular file",
        )));
    }
    Ok(f)
}

/// Refuses a manifest, index or config descriptor that declares more bytes than
/// [`crate::oci::limits`] allows for its kind, before anything is read.
pub(crate) fn check_document(d: &Descriptor, config: bool, location: &str) -> Result<()> {
    use crate::oci::limits::{check_size, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE};
    let (what, cap) = if config {
        ("image config", MAX_CONFIG_SIZE)
    } else if d.media_type.is_index() {
        ("index", MAX_MANIFEST_SIZE)
    } else {
        ("manifest", MAX_MANIFEST_SIZE)
    };
    check_size(&format!("{what} `{}`", d.digest), d.size, cap).map_err(|reason| Error::Malformed {
        location: location.to_string(),
        reason,
    })
}

pub(crate) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Where an image comes from or goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The local store, by name.
    Store(String),
    /// An OCI layout directory, and the `ref.name` inside it.
    OciDir(PathBuf, Option<String>),
    /// An OCI layout in a tar file.
    OciArchive(PathBuf, Option<String>),
    /// A `docker save` style tar file, and the name (`name:tag`) or `@index` inside it.
    DockerArchive(PathBuf, Option<String>),
    /// A registry reference (handled by the registry module).
    Registry(String),
}

impl FromStr for Target {
    type Err = Error;

    fn from_str(value: &str) -> Result<Target> {
        let bad = |reason: &str| Error::InvalidTarget {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let path_ref = |rest: &str| -> Result<(PathBuf, Option<String>)> {
            let (path, r) = match rest.split_once(':') {
                Some((p, r)) => (p, Some(r.to_string())),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(bad("the path is empty"));
            }
            if r.as_deref() == Some("") {
                return Err(bad("the reference after the path is empty"));
            }
            Ok((PathBuf::from(path), r))
        };
        if let Some(rest) = value.strip_prefix("oci:") {
            let (p, r) = path_ref(rest)?;
            return Ok(Target::OciDir(p, r));
        }
        if let Some(rest) = value.strip_prefix("oci-archive:") {
            let (p, r) = path_ref(rest)?;
            return Ok(Target::OciArchive(p, r));
        }
        if let Some(rest) = value.strip_prefix("docker-archive:") {
            let (p, r) = path_ref(rest)?;
            if let Some(name) = r.as_deref() {
                if !name.starts_with('@') {
                    store::normalize_name(name).map_err(|e| bad(&e.to_string()))?;
                }
            }
            return Ok(Target::DockerArchive(p, r));
        }
        if let Some(rest) = value.strip_prefix("docker://") {
            if rest.is_empty() {
                return Err(bad("the registry reference is empty"));
            }
            return Ok(Target::Registry(rest.to_string()));
        }
        for t in [
            "containers-storage",
            "dir",
            "docker-daemon",
            "ostree",
            "sif",
        ] {
            if value.starts_with(&format!("{t}:")) {
                return Err(Error::Unsupported {
                    value: value.to_string(),
                    transport: t.to_string(),
                });
            }
        }
        // `foo:/tmp/x` or `foo:./x`: a transport kiln does not know, not a store name.
        if let Some((t, rest)) = value.split_once(':') {
            let word = !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if word && (rest.starts_with('/') || rest.starts_with('.')) {
                return Err(bad(&format!(
                    "`{t}:` is not a transport kiln knows (oci:DIR, oci-archive:FILE, \
                     docker-archive:FILE, docker://REF, or a name in the store)"
                )));
            }
        }
        let name = store::normalize_name(value).map_err(|e| bad(&e.to_string()))?;
        Ok(Target::Store(name))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with = |f: &mut fmt::Formatter<'_>, t: &str, p: &Path, r: &Option<String>| {
            write!(f, "{t}:{}", p.display())?;
            if let Some(r) = r {
                write!(f, ":{r}")?;
            }
            Ok(())
        };
        match self {
            Target::Store(n) => f.write_str(n),
            Target::OciDir(p, r) => with(f, "oci", p, r),
            Target::OciArchive(p, r) => with(f, "oci-archive", p, r),
            Target::DockerArchive(p, r) => with(f, "docker-archive", p, r),
            Target::Registry(r) => write!(f, "docker://{r}"),
        }
    }
}

/// Brings the image at `source` into the store (verifying every blob) and returns it.
/// `platform` picks a manifest from an index; `None` means the host's platform.
pub fn read_into_store(
    store: &Store,
    source: &Target,
    platform: Option<&Platform>,
    remote: Option<&Remote>,
) -> Result<Image> {
    read(store, source, platform, remote, false)
}

/// As [`read_into_store`], for an image a build starts from: from a registry, only the manifest
/// and config are downloaded now, each layer the first time something opens it (so a layer a
/// build never unpacks is never downloaded, and a push to the same registry mounts or skips it).
pub fn read_base_into_store(
    store: &Store,
    source: &Target,
    platform: Option<&Platform>,
    remote: Option<&Remote>,
) -> Result<Image> {
    read(store, source, platform, remote, true)
}

fn read(
    store: &Store,
    source: &Target,
    platform: Option<&Platform>,
    remote: Option<&Remote>,
    lazy: bool,
) -> Result<Image> {
    match source {
        Target::Store(name) => {
            let d = store.resolve(name)?;
            load_image(store, &d, platform, name)
        }
        Target::OciDir(dir, r) => oci_dir::read(store, dir, r.as_deref(), platform),
        Target::OciArchive(file, r) => oci_archive::read(store, file, r.as_deref(), platform),
        Target::DockerArchive(file, r) => docker_archive::read(store, file, r.as_deref()),
        Target::Registry(r) => match remote {
            Some(remote) => docker::pull(
                store,
                remote,
                r,
                &platform.cloned().unwrap_or_else(Platform::host),
                lazy,
            ),
            None => Err(no_registry(source)),
        },
    }
}

/// A registry reference where no registry client was configured.
fn no_registry(what: &dyn std::fmt::Display) -> Error {
    Error::Unsupported {
        value: what.to_string(),
        transport: "docker (registry, not configured here)".into(),
    }
}

/// What `index.json` names when a layout or archive holds one image: its manifest's media type,
/// digest and size (not the platform or names the store's own index records).
fn index_entry(image: &Image) -> Descriptor {
    Descriptor::new(
        image.descriptor.media_type.clone(),
        image.digest().clone(),
        image.descriptor.size,
    )
}

/// The containerd annotation that carries an image's full name on an `index.json` entry
/// (containerd `core/images/annotations.go`).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// `entry` named as BuildKit's OCI exporter names it through containerd's archive writer
/// (containerd `core/images/archive/exporter.go`, `addNameAnnotation`): with a `name`,
/// `io.containerd.image.name` is the full normalised name (`docker.io/library/app:1`) and
/// `org.opencontainers.image.ref.name` its tag, so `ctr images import` and k3s's air-gap import
/// find the name; an explicit `:REF` of the transport syntax (`oci-archive:F:REF`) is kept as
/// the `ref.name`, as skopeo writes and reads it.
pub fn named_entry(entry: &Descriptor, reference: Option<&str>, name: Option<&str>) -> Descriptor {
    let mut d = entry.clone();
    d.annotations.remove(crate::oci::ANNOTATION_REF_NAME);
    d.annotations.remove(ANNOTATION_IMAGE_NAME);
    let mut tag = None;
    if let Some(n) = name {
        let full = crate::registry::Reference::parse(n)
            .map(|r| r.to_string())
            .unwrap_or_else(|_| n.to_string());
        tag = crate::registry::Reference::parse(n).ok().and_then(|r| {
            r.tag()
                .map(String::from)
                .or_else(|| r.digest().map(|d| d.to_string()))
        });
        d.annotations.insert(ANNOTATION_IMAGE_NAME.into(), full);
    }
    if let Some(r) = reference.map(String::from).or(tag) {
        d.annotations
            .insert(crate::oci::ANNOTATION_REF_NAME.into(), r);
    }
    d
}

/// Writes `image` (whose blobs are in the store) to `dest`. `name` is the image's name: for
/// docker-archive `RepoTags` when `dest` does not give one, and for the names an OCI layout or
/// archive's index entry carries ([`named_entry`]). Returns the manifest descriptor.
pub fn write_from_store(
    store: &Store,
    image: &Image,
    dest: &Target,
    name: Option<&str>,
    remote: Option<&Remote>,
) -> Result<Descriptor> {
    let layers = LayerSource::new(store, remote);
    let one = std::slice::from_ref(image);
    match dest {
        Target::Store(n) => {
            store.put_bytes(&image.raw_config)?;
            store.put_bytes(&image.raw_manifest)?;
            store.tag(n, &image.descriptor)?;
        }
        Target::OciDir(dir, r) => {
            let entry = named_entry(&index_entry(image), r.as_deref(), name);
            oci_dir::write_tree(layers, one, None, &entry, dir)?
        }
        Target::OciArchive(file, r) => {
            let entry = named_entry(&index_entry(image), r.as_deref(), name);
            oci_archive::write_tree(layers, one, None, &entry, file)?
        }
        Target::DockerArchive(file, r) => {
            let tag = match r.as_deref() {
                Some(r) if r.starts_with('@') => {
                    return Err(Error::InvalidTarget {
                        value: dest.to_string(),
                        reason: "an `@index` can only be read, not written".into(),
                    })
                }
                Some(r) => Some(r),
                None => name,
            };
            docker_archive::write(layers, image, file, tag)?
        }
        Target::Registry(r) => {
            return match remote {
                Some(remote) => docker::push(store, remote, image, r),
                None => Err(no_registry(dest)),
            }
        }
    }
    Ok(image.descriptor.clone())
}

/// An image or a whole index, every blob in the store (what `kiln copy --all` moves).
#[derive(Debug, Clone)]
pub struct Tree {
    /// The manifest or index the source names.
    pub top: Descriptor,
    /// The images: the one `top` names, or every manifest of the index in its order.
    pub images: Vec<Image>,
}

impl Tree {
    /// Whether `top` is an index.
    pub fn is_index(&self) -> bool {
        self.top.media_type.is_index()
    }
}

/// Brings what `source` names into the store with everything below it: an index and every
/// manifest it lists (not one platform), their configs and layers. A single image is a tree of
/// one. The index keeps its bytes, so it keeps its digest. With `lazy`, a registry's layers are
/// not downloaded now (as [`read_base_into_store`]): for a copy to a registry, which mounts or
/// skips them there, or streams them from their origin.
pub fn read_all_into_store(
    store: &Store,
    source: &Target,
    remote: Option<&Remote>,
    lazy: bool,
) -> Result<Tree> {
    let location = source.to_string();
    let top = match source {
        Target::Store(name) => store.resolve(name)?,
        Target::OciDir(dir, r) => oci_dir::read_entry_all(store, dir, r.as_deref())?,
        Target::OciArchive(file, r) => oci_archive::read_entry(store, file, r.as_deref())?,
        Target::DockerArchive(..) => {
            let image = read(store, source, None, remote, lazy)?;
            return Ok(Tree {
                top: image.descriptor.clone(),
                images: vec![image],
            });
        }
        Target::Registry(r) => match remote {
            Some(remote) => docker::pull_all(store, remote, r, lazy)?,
            None => return Err(no_registry(&location)),
        },
    };
    let entries = if top.media_type.is_index() {
        let bytes = store.read_blob(&top.digest)?;
        let index: crate::oci::Index =
            crate::oci::from_json("index", &bytes).map_err(|e| Error::Malformed {
                location: location.clone(),
                reason: format!("index `{}`: {e}", top.digest),
            })?;
        index.manifests
    } else {
        vec![top.clone()]
    };
    let mut images = Vec::new();
    for d in &entries {
        if !d.media_type.is_manifest() {
            return Err(Error::Malformed {
                location,
                reason: format!(
                    "`{}` is `{}`: --all copies indexes of image manifests only",
                    d.digest, d.media_type
                ),
            });
        }
        images.push(load_image(store, d, None, &location)?);
    }
    Ok(Tree { top, images })
}

/// Writes `tree` (every blob in the store) to `dest`: the images, then the index itself, named
/// as `dest` says. docker-archive cannot hold an index. Returns the top descriptor written.
pub fn write_all_from_store(
    store: &Store,
    tree: &Tree,
    dest: &Target,
    name: Option<&str>,
    remote: Option<&Remote>,
) -> Result<Descriptor> {
    if !tree.is_index() {
        let image = tree.images.first().ok_or_else(|| Error::Malformed {
            location: dest.to_string(),
            reason: "nothing to write".into(),
        })?;
        return write_from_store(store, image, dest, name, remote);
    }
    let top = tree.top.clone();
    let layers = LayerSource::new(store, remote);
    match dest {
        Target::Store(n) => store.tag(n, &top)?,
        Target::OciDir(dir, r) => {
            let entry = named_entry(&top, r.as_deref(), name);
            oci_dir::write_tree(layers, &tree.images, Some(&top.digest), &entry, dir)?
        }
        Target::OciArchive(file, r) => {
            let entry = named_entry(&top, r.as_deref(), name);
            oci_archive::write_tree(layers, &tree.images, Some(&top.digest), &entry, file)?
        }
        Target::DockerArchive(..) => {
            return Err(Error::InvalidTarget {
                value: dest.to_string(),
                reason: format!(
                    "a docker-archive holds single images, not an index ({} manifests in `{}`); copy without --all to take one platform",
                    tree.images.len(),
                    top.digest
                ),
            })
        }
        Target::Registry(r) => {
            return match remote {
                Some(remote) => docker::push_all(store, remote, &tree.images, &top, r),
                None => Err(no_registry(dest)),
            }
        }
    }
    Ok(top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_containers_transports_name_them() {
        let t = |s: &str| s.parse::<Target>().unwrap();
        assert_eq!(
            t("oci:/x/y:v1"),
            Target::OciDir("/x/y".into(), Some("v1".into()))
        );
        assert_eq!(t("oci:/x/y"), Target::OciDir("/x/y".into(), None));
        assert_eq!(
            t("oci-archive:a.tar"),
            Target::OciArchive("a.tar".into(), None)
        );
        assert_eq!(
            t("docker-archive:a.tar:app:1"),
            Target::DockerArchive("a.tar".into(), Some("app:1".into()))
        );
        assert_eq!(t("app"), Target::Store("app:latest".into()));
        assert_eq!(
            t("localhost:5000/app"),
            Target::Store("localhost:5000/app:latest".into())
        );
        assert_eq!(t("docker://debian"), Target::Registry("debian".into()));
        for bad in [
            "oci:",
            "oci:/x:",
            "containers-storage:x",
            "Bad Name",
            "docker://",
            "foo:/tmp/x",
            "foo:./x",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }
}
