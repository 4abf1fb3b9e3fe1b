//! Unit tests of build logic: whole builds ([`crate::builder::build_with`]) of small
//! Dockerfiles on a base image made in-process, with RUN steps going through a
//! [`FakeSandbox`] (no user namespaces, no chown, no network), checked by what they produce:
//! the layers' entries, the image config, the step records and the specs the fake was given.
//!
//! Fixtures: [`Fixture`] (a temp store with the base image `base` tagged in it, a context
//! directory, the Dockerfile beside it), [`files`] (a layer's entries as [`Node`]s).
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use crate::image::{Image, ImageBuilder, NewLayer};
use crate::layer::{Compression, Entry, LayerOptions, LayerWriter};
use crate::oci::{Descriptor, ImageConfig, Platform};
use crate::progress::NoopReporter;
use crate::sandbox::{FakeSandbox, Network, RunSpec, SnapshotterKind};
use crate::store::Store;

use super::{build_with, BuildOptions, BuildOutcome, Error, RunHost};

mod cache;
mod config;
mod copy;
mod errors;
mod flags;
mod named;
mod platform;
mod progress;
mod remote;
mod run;
mod stages;

/// The mtime of the base image's files: not the epoch, so a test sees which one a file got.
pub(super) const BASE_MTIME: i64 = 1_000_000;

/// The base image's `/etc/passwd`: `app` is 1000:1000, `svc` 2000 with primary group 50.
const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nsvc:x:2000:50::/srv:/bin/sh\n";
/// The base image's `/etc/group`.
const GROUP: &[u8] = b"root:x:0:\nstaff:x:50:\napp:x:1000:\nwheel:x:10:\n";

/// The files of the base image `base`: `/bin/sh`, `/etc/passwd`, `/etc/group`, `/tmp` (1777),
/// `/home/app` (owned by app, 0750), `/srv` (0700).
pub(super) fn base_entries() -> Vec<Entry> {
    let mut v = vec![
        Entry::dir("bin", 0o755),
        Entry::file("bin/sh", 0o755, b"#!fake shell\n".to_vec()),
        Entry::dir("etc", 0o755),
        Entry::file("etc/group", 0o644, GROUP.to_vec()),
        Entry::file("etc/passwd", 0o644, PASSWD.to_vec()),
        Entry::dir("home", 0o755),
        Entry::dir("home/app", 0o750),
        Entry::dir("srv", 0o700),
        Entry::dir("tmp", 0o1777),
    ];
    for e in &mut v {
        e.mtime = BASE_MTIME;
        if e.path == b"home/app" {
            (e.uid, e.gid) = (1000, 1000);
        }
    }
    v
}

/// A temp directory in memory (`/dev/shm`) where there is one: a build's store writes are
/// fsynced, and on a shared, busy disk the waits, not the build logic, would take the time.
fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kiln-builder-test-")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

/// One member of a layer, as the tests compare them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Node {
    /// The path, without `./` or a trailing `/`.
    pub(super) path: String,
    /// `f`ile, `d`irectory, `l`ink (symbolic), `h`ard link, or `?`.
    pub(super) kind: char,
    /// Permission bits.
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: u64,
    /// A file's content, or a link's target.
    pub(super) content: Vec<u8>,
}

/// The members of `layer`, in tar order.
pub(super) fn files(store: &Store, layer: &Descriptor) -> Vec<Node> {
    let r = crate::transport::LayerSource::new(store, None)
        .open_layer(layer)
        .unwrap();
    let mut a = tar::Archive::new(r);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let path = String::from_utf8_lossy(&e.path_bytes())
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let kind = match h.entry_type() {
            tar::EntryType::Regular => 'f',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            _ => '?',
        };
        let mut content = Vec::new();
        if kind == 'l' || kind == 'h' {
            content = e.link_name_bytes().unwrap_or_default().into_owned();
        } else {
            e.read_to_end(&mut content).unwrap();
        }
        out.push(Node {
            path,
            kind,
            mode: h.mode().unwrap() & 0o7777,
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            content,
        });
    }
    out
}

/// The paths of `nodes`.
pub(super) fn paths(nodes: &[Node]) -> Vec<&str> {
    nodes.iter().map(|n| n.path.as_str()).collect()
}

/// The member of `nodes` at `path`.
pub(super) fn node<'a>(nodes: &'a [Node], path: &str) -> &'a Node {
    nodes
        .iter()
        .find(|n| n.path == path)
        .unwrap_or_else(|| panic!("no `{path}` in {:?}", paths(nodes)))
}

/// A temp store with the base image `base`, a context directory, the Dockerfile beside it (not
/// in the context), and the fake sandbox RUN steps go through.
pub(super) struct Fixture {
    dir: tempfile::TempDir,
    pub(super) store: Store,
    pub(super) fake: FakeSandbox,
}

impl Fixture {
    /// A fixture with the base image `base` ([`base_entries`], no config but the platform).
    pub(super) fn new() -> Fixture {
        let dir = temp_dir();
        let store = Store::open(&dir.path().join("store")).unwrap();
        std::fs::create_dir(dir.path().join("ctx")).unwrap();
        let f = Fixture {
            dir,
            store,
            fake: FakeSandbox::new(),
        };
        f.image("base", &base_entries(), |_| {});
        f
    }

    /// Stores an image of one layer of `entries` (mtimes kept) on the host platform, its config
    /// edited by `edit`, tagged `name`.
    pub(super) fn image(&self, name: &str, entries: &[Entry], edit: impl FnOnce(&mut ImageConfig)) {
        let mut w = LayerWriter::new(
            self.store.blob_writer().unwrap(),
            LayerOptions {
                compression: Compression::None,
                threads: 1,
                epoch: i64::MAX,
            },
        )
        .unwrap();
        for e in entries {
            w.append(e).unwrap();
        }
        let (blob, summary) = w.finish().unwrap();
        let (digest, size) = blob.finish().unwrap();
        let mut b = ImageBuilder::scratch(&Platform::host());
        b.append(
            NewLayer {
                descriptor: Descriptor::new(summary.media_type, digest, size),
                diff_id: summary.diff_id,
            },
            "base layer",
        );
        edit(b.config_mut());
        b.created(BASE_MTIME);
        let image = b.build();
        self.store.put_bytes(&image.raw_config).unwrap();
        self.store.put_bytes(&image.raw_manifest).unwrap();
        self.store.tag(name, &image.descriptor).unwrap();
    }

    /// The context directory.
    pub(super) fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    /// Writes a context file (parents created).
    pub(super) fn file(&self, rel: &str, content: &[u8]) -> PathBuf {
        let p = self.ctx().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    /// Build options for the Dockerfile beside the context: epoch 0 and not clamped (kiln's
    /// default without `SOURCE_DATE_EPOCH`), uncompressed layers, no registry.
    pub(super) fn opts(&self) -> BuildOptions {
        BuildOptions {
            context: self.ctx(),
            dockerfile: self.dir.path().join("Dockerfile"),
            tags: vec!["out".into()],
            build_args: BTreeMap::new(),
            target: None,
            platform: Platform::host(),
            outputs: Vec::new(),
            compression: Compression::None,
            threads: 1,
            epoch: 0,
            clamp_mtimes: false,
            no_cache: false,
            labels: BTreeMap::new(),
            default_labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            secrets: BTreeMap::new(),
            snapshotter: Some(SnapshotterKind::Walk),
            helper_exe: PathBuf::from("/nonexistent/kiln"),
            single_id: false,
            remote: None,
            network: Network::Default,
            allow_network_host: false,
            cache_from: Vec::new(),
            cache_to: Vec::new(),
            named_contexts: BTreeMap::new(),
            ssh: Default::default(),
            add_hosts: Vec::new(),
            pull: false,
            no_cache_filter: Vec::new(),
        }
    }

    /// Writes the Dockerfile.
    pub(super) fn dockerfile(&self, text: &str) {
        std::fs::write(self.dir.path().join("Dockerfile"), text).unwrap();
    }

    /// Builds `dockerfile` with [`Fixture::opts`].
    pub(super) fn build(&self, dockerfile: &str) -> Result<BuildOutcome, Error> {
        self.dockerfile(dockerfile);
        self.build_opts(&self.opts())
    }

    /// Builds the Dockerfile last written with `opts`, RUN steps through the fake.
    pub(super) fn build_opts(&self, opts: &BuildOptions) -> Result<BuildOutcome, Error> {
        let host = RunHost {
            sandbox: &self.fake,
            kind: SnapshotterKind::Walk,
        };
        build_with(&self.store, opts, &NoopReporter, Some(host))
    }

    /// The members of the image's last layer.
    pub(super) fn top(&self, image: &Image) -> Vec<Node> {
        files(&self.store, image.layers().last().expect("a layer"))
    }

    /// The members of the image's layer `i` (0: the base's).
    pub(super) fn layer(&self, image: &Image, i: usize) -> Vec<Node> {
        files(&self.store, &image.layers()[i])
    }

    /// Every spec the fake was given.
    pub(super) fn specs(&self) -> Vec<RunSpec> {
        self.fake.specs()
    }
}

/// The value of `key` in a spec's environment.
pub(super) fn env_of<'a>(spec: &'a RunSpec, key: &str) -> Option<&'a str> {
    spec.env
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The error's whole chain as text; panics on success.
pub(super) fn err_text(r: Result<BuildOutcome, Error>) -> String {
    match r {
        Ok(_) => panic!("the build succeeded"),
        Err(e) => e.chain_text(),
    }
}
