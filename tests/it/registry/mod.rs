//! Registry client tests against the real CNCF distribution registry (`docker-registry`).
//!
//! Each test starts its own registry (see `support::registry`), so they run in parallel. A test
//! whose tool is missing prints why and returns, except under `CI=true`.
//!
//! This file tests the client library; beside it: `auth`, `credentials`, `faults` and `hostile`
//! (the library against challenges, credential stores, injected faults and hostile servers),
//! and the `kiln` command against a registry: `cli` (`build --push`, push, pull, copy, tags,
//! mirrors), `cli_faults` (the same through a fault proxy), `copy_all` (`kiln copy --all`),
//! `lazy` (lazy layers), `cache` (`--cache-to` / `--cache-from` between two runners), `cache_mounts` (cache-mount contents between them), `bake_fanout` (`kiln bake --matrix`, runners, `--merge`) and `progress` (blob transfers reported through the `Reporter`, and
//! how the CLI shows them).
mod auth;
mod bake_fanout;
mod cache;
mod cache_mounts;
mod cli;
mod cli_faults;
mod copy_all;
mod credentials;
mod faults;
mod hostile;
mod lazy;
mod progress;
mod sign;
mod sign_resolve;

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use kiln::oci::{to_canonical_json, Descriptor, Digest, Index, Manifest, MediaType, Platform};
use kiln::registry::{
    pull_blobs, push_blobs, BlobOutcome, BlobSink, BlobUpload, Client, ClientOptions, Error,
    NoProgress, Reference, RegistriesConfig, RetryPolicy, UploadMode,
};

use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::registry::{Mode, Registry};
use crate::support::{random_bytes, require_tool};

/// Retries fast enough for tests.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(100),
    }
}

/// A client for plain-HTTP loopback registries.
pub fn client() -> Client {
    client_with(|_| {})
}

/// A client with tweaked options.
pub fn client_with(f: impl FnOnce(&mut ClientOptions)) -> Client {
    let mut o = ClientOptions {
        retry: fast_retry(),
        ..ClientOptions::default()
    };
    f(&mut o);
    Client::new(o).unwrap()
}

/// A random image: config, layers and the manifest bytes.
pub struct TestImage {
    pub config: Arc<Vec<u8>>,
    pub layers: Vec<Arc<Vec<u8>>>,
    pub manifest: Vec<u8>,
}

impl TestImage {
    pub fn new(seed: u64, sizes: &[usize]) -> TestImage {
        let layers: Vec<Arc<Vec<u8>>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Arc::new(random_bytes(seed * 100 + i as u64, n)))
            .collect();
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| Digest::sha256(l).to_string())
            .collect();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {"Env": [format!("SEED={seed}")]},
        });
        let config = Arc::new(to_canonical_json(&config));
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MediaType::OciManifest),
            artifact_type: None,
            config: Descriptor::new(
                MediaType::OciConfig,
                Digest::sha256(&config),
                config.len() as u64,
            ),
            layers: layers
                .iter()
                .map(|l| {
                    Descriptor::new(MediaType::OciLayerGzip, Digest::sha256(l), l.len() as u64)
                })
                .collect(),
            subject: None,
            annotations: Default::default(),
            extra: Default::default(),
        };
        TestImage {
            config,
            layers,
            manifest: to_canonical_json(&manifest),
        }
    }

    pub fn manifest_digest(&self) -> Digest {
        Digest::sha256(&self.manifest)
    }

    /// Config first, then layers.
    pub fn uploads(&self, mount_from: &[&str]) -> Vec<BlobUpload> {
        std::iter::once(&self.config)
            .chain(self.layers.iter())
            .map(|b| upload(b.clone(), mount_from))
            .collect()
    }

    pub fn blobs(&self) -> Vec<Arc<Vec<u8>>> {
        std::iter::once(self.config.clone())
            .chain(self.layers.iter().cloned())
            .collect()
    }
}

pub fn upload(bytes: Arc<Vec<u8>>, mount_from: &[&str]) -> BlobUpload {
    BlobUpload {
        digest: Digest::sha256(&bytes),
        size: bytes.len() as u64,
        open: Box::new(move || Ok(Box::new(Cursor::new(bytes.as_ref().clone())))),
        mount_from: mount_from.iter().map(|s| s.to_string()).collect(),
    }
}

/// Pushes blobs and the manifest under `r`'s tag.
pub fn push_image(c: &Client, r: &Reference, img: &TestImage) -> Vec<BlobOutcome> {
    let outcomes = push_blobs(c, r, &img.uploads(&[]), 3, &NoProgress).unwrap();
    c.put_manifest(r, &img.manifest, &MediaType::OciManifest)
        .unwrap();
    outcomes
}

/// Pulls `r` and checks every byte against `img`.
pub fn pull_and_check(c: &Client, r: &Reference, img: &TestImage) {
    let m = c.get_manifest(r).unwrap();
    assert_eq!(m.bytes, img.manifest);
    assert_eq!(m.media_type, MediaType::OciManifest);
    assert_eq!(m.digest, img.manifest_digest());
    let parsed = m.manifest().unwrap();
    for (desc, want) in std::iter::once(&parsed.config)
        .chain(parsed.layers.iter())
        .zip(img.blobs())
    {
        let mut out = Vec::new();
        c.get_blob(r, &desc.digest, Some(desc.size), &mut out, &NoProgress)
            .unwrap();
        assert_eq!(&out, want.as_ref());
    }
}

pub fn reference(reg: &Registry, repo_tag: &str) -> Reference {
    Reference::parse(&format!("{}/{repo_tag}", reg.addr)).unwrap()
}

#[test]
fn malformed_reference_is_a_clear_error() {
    let e = Reference::parse("127.0.0.1:5000/Bad/Name:tag").unwrap_err();
    assert!(matches!(e, Error::InvalidReference { .. }));
    assert!(
        e.to_string().contains("`127.0.0.1:5000/Bad/Name:tag`"),
        "{e}"
    );
    assert!(e.to_string().contains("lowercase"), "{e}");
}

#[test]
fn ping_plain_registry_over_http() {
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let c = client();
    c.ping(&reg.addr).unwrap();
    // Loopback defaults to plain HTTP after HTTPS fails; a non-loopback name would not.
    let strict = client_with(|o| o.plain_http_loopback = false);
    let e = strict.ping(&reg.addr).unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
}

#[test]
fn push_then_pull_is_byte_identical_and_skopeo_reads_it() {
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let c = client();
    let img = TestImage::new(1, &[300_000, 1, 70_000, 0]);
    let r = reference(&reg, "app/round-trip:v1");
    let outcomes = push_image(&c, &r, &img);
    // The empty layer and config are distinct blobs; all were uploaded.
    assert!(
        outcomes.iter().all(|o| *o == BlobOutcome::Uploaded),
        "{outcomes:?}"
    );
    pull_and_check(&c, &r, &img);
    // By digest too, and HEAD agrees.
    let by_digest = r.with_digest(img.manifest_digest());
    assert_eq!(c.get_manifest(&by_digest).unwrap().bytes, img.manifest);
    let head = c.head_manifest(&r).unwrap().unwrap();
    assert_eq!(head.digest, img.manifest_digest());
    assert_eq!(head.size, img.manifest.len() as u64);
    assert!(c
        .head_manifest(&reference(&reg, "app/round-trip:nope"))
        .unwrap()
        .is_none());
    // Parallel pull into sinks that commit only when verified.
    let parsed: Manifest = kiln::oci::from_json("manifest", &img.manifest).unwrap();
    let committed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink_log = committed.clone();
    let open = move |d: &Descriptor| -> std::io::Result<Box<dyn BlobSink>> {
        Ok(Box::new(VecSink {
            digest: d.digest.clone(),
            bytes: Vec::new(),
            log: sink_log.clone(),
        }))
    };
    pull_blobs(&c, &r, &parsed.layers, 2, &NoProgress, &open).unwrap();
    assert_eq!(committed.lock().unwrap().len(), parsed.layers.len());

    if require_tool("skopeo", &["--version"]) {
        let out = std::process::Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{r}"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, img.manifest);
        // skopeo copies it back out, byte for byte (it keeps the manifest as pushed).
        let dir = tempfile::tempdir().unwrap();
        let dest = format!("oci:{}:copy", dir.path().join("layout").display());
        let out = std::process::Command::new("skopeo")
            .args([
                "copy",
                "--src-tls-verify=false",
                "--preserve-digests",
                &format!("docker://{r}"),
                &dest,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for blob in img.blobs().iter().chain([&Arc::new(img.manifest.clone())]) {
            let d = Digest::sha256(blob);
            let path = dir.path().join("layout/blobs/sha256").join(d.hex());
            assert_eq!(&std::fs::read(&path).unwrap(), blob.as_ref(), "{d}");
        }
    }
}

struct VecSink {
    digest: Digest,
    bytes: Vec<u8>,
    log: Arc<std::sync::Mutex<Vec<Digest>>>,
}

impl std::io::Write for VecSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl BlobSink for VecSink {
    fn commit(self: Box<Self>) -> std::io::Result<()> {
        assert_eq!(Digest::sha256(&self.bytes), self.digest);
        self.log.lock().unwrap().push(self.digest);
        Ok(())
    }
}

#[test]
fn second_push_makes_only_heads_and_the_manifest_put() {
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let c = client();
    let img = TestImage::new(2, &[50_000, 60_000]);
    let r = reference(&reg, "app/twice:v1");
    push_image(&c, &r, &img);
    let before = reg.accesses().len();
    // A new client: nothing cached but the registry's state.
    let c2 = client();
    let outcomes = push_image(&c2, &r, &img);
    assert!(
        outcomes.iter().all(|o| *o == BlobOutcome::Existed),
        "{outcomes:?}"
    );
    let second: Vec<_> = reg
        .accesses()
        .into_iter()
        .skip(before)
        .filter(|a| a.path != "/v2/")
        .collect();
    let heads = second.iter().filter(|a| a.method == "HEAD").count();
    let puts: Vec<_> = second.iter().filter(|a| a.method == "PUT").collect();
    assert_eq!(heads, 3, "{second:?}");
    assert_eq!(puts.len(), 1, "{second:?}");
    assert!(puts[0].path.ends_with("/manifests/v1"));
    assert_eq!(
        second.len(),
        4,
        "only HEADs and the manifest PUT: {second:?}"
    );
}

#[test]
fn cross_repository_mount_and_fallback_when_refused() {
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let c = client();
    let base = TestImage::new(3, &[40_000, 50_000]);
    let base_ref = reference(&reg, "base/os:1");
    push_image(&c, &base_ref, &base);
    let before = reg.accesses().len();
    let app = reference(&reg, "team/app:1");
    let outcomes = push_blobs(&c, &app, &base.uploads(&["base/os"]), 2, &NoProgress).unwrap();
    assert!(
        outcomes.iter().all(|o| *o == BlobOutcome::Mounted),
        "{outcomes:?}"
    );
    let log: Vec<_> = reg.accesses().into_iter().skip(before).collect();
    assert!(
        log.iter()
            .filter(|a| a.method == "POST")
            .all(|a| a.path.contains("mount=") && a.status == 201),
        "{log:?}"
    );
    assert!(
        !log.iter().any(|a| a.method == "PUT" || a.method == "PATCH"),
        "{log:?}"
    );

    // A registry that declines mounts answers 202 with an upload session: we upload into it.
    let proxy = FaultProxy::start(&reg.addr);
    proxy.add("POST", "mount=", Fault::RefuseMount, 10);
    let other = Reference::parse(&format!("{}/team/other:1", proxy.addr)).unwrap();
    let outcomes = push_blobs(&c, &other, &base.uploads(&["base/os"]), 1, &NoProgress).unwrap();
    assert!(
        outcomes.iter().all(|o| *o == BlobOutcome::Uploaded),
        "{outcomes:?}"
    );
    c.put_manifest(&other, &base.manifest, &MediaType::OciManifest)
        .unwrap();
    pull_and_check(&c, &reference(&reg, "team/other:1"), &base);
    assert_eq!(proxy.faults_fired(), 3);
}

#[test]
fn chunked_upload_round_trips() {
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let c = client_with(|o| {
        o.upload = UploadMode::Chunked {
            chunk_size: 100_000,
        }
    });
    let img = TestImage::new(4, &[350_000, 99_999, 0]);
    let r = reference(&reg, "app/chunked:v1");
    let before = reg.accesses().len();
    push_image(&c, &r, &img);
    let patches = reg
        .accesses()
        .into_iter()
        .skip(before)
        .filter(|a| a.method == "PATCH")
        .count();
    // 4 + 1 PATCHes for the layers, 1 for the config, none for the empty blob.
    assert_eq!(patches, 6);
    pull_and_check(&client(), &r, &img);
}

#[test]
fn tags_are_listed_across_pages() {
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let c = client();
    let img = TestImage::new(5, &[1000]);
    let r = reference(&reg, "app/tags:a");
    push_image(&c, &r, &img);
    let mut want = vec!["a".to_string()];
    for t in ["b", "c", "d", "e"] {
        c.put_manifest(
            &r.with_tag(t).unwrap(),
            &img.manifest,
            &MediaType::OciManifest,
        )
        .unwrap();
        want.push(t.to_string());
    }
    // distribution 2.8 ignores `n` for tags (pagination came in v3) and does not sort.
    let mut all = c.list_tags(&r, Some(2)).unwrap();
    all.sort();
    assert_eq!(all, want);
    // So the pages come from the proxy, scripted as a v3 registry sends them: `Link` headers,
    // relative URLs, the last page without one.
    let proxy = FaultProxy::start(&reg.addr);
    let page = |tags: &[&str], next: Option<&str>| Fault::Respond {
        status: 200,
        headers: next
            .map(|n| vec![("Link".to_string(), format!("<{n}>; rel=\"next\""))])
            .unwrap_or_default(),
        body: serde_json::json!({"name": "app/tags", "tags": tags}).to_string(),
    };
    proxy.add(
        "GET",
        "/tags/list?n=2",
        page(&["a", "b"], Some("/v2/app/tags/tags/list?last=b&n=2")),
        1,
    );
    proxy.add(
        "GET",
        "last=b",
        page(&["c", "d"], Some("/v2/app/tags/tags/list?last=d&n=2")),
        1,
    );
    proxy.add("GET", "last=d", page(&["e"], None), 1);
    let via = Reference::parse(&format!("{}/app/tags", proxy.addr)).unwrap();
    assert_eq!(c.list_tags(&via, Some(2)).unwrap(), want);
    assert_eq!(proxy.faults_fired(), 3);
}

#[test]
fn referrers_fall_back_to_the_tag_schema() {
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let c = client();
    let img = TestImage::new(6, &[1000]);
    let r = reference(&reg, "app/refs:v1");
    push_image(&c, &r, &img);
    let subject = img.manifest_digest();
    // distribution 2.8 has no referrers API and no such tag yet: empty.
    assert!(c
        .referrers(&r, &subject, None)
        .unwrap()
        .manifests
        .is_empty());
    // A signature-like artifact pointing at the image, listed in the fallback tag's index.
    let sig = TestImage::new(7, &[10]);
    let sig_ref = r.with_tag("sig").unwrap();
    push_image(&c, &sig_ref, &sig);
    let mut desc = Descriptor::new(
        MediaType::OciManifest,
        sig.manifest_digest(),
        sig.manifest.len() as u64,
    );
    desc.artifact_type = Some("application/vnd.example.sig".into());
    let mut other = desc.clone();
    other.artifact_type = Some("application/vnd.example.sbom".into());
    let mut index = Index::new();
    index.manifests = vec![desc.clone(), other];
    let tag = kiln::registry::referrers_tag(&subject);
    c.put_manifest(
        &r.with_tag(&tag).unwrap(),
        &to_canonical_json(&index),
        &MediaType::OciIndex,
    )
    .unwrap();
    assert_eq!(c.referrers(&r, &subject, None).unwrap().manifests.len(), 2);
    let only = c
        .referrers(&r, &subject, Some("application/vnd.example.sig"))
        .unwrap();
    assert_eq!(only.manifests, vec![desc]);
}

#[test]
fn platform_is_selected_from_an_index() {
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let c = client();
    let amd = TestImage::new(8, &[100]);
    let arm = TestImage::new(9, &[200]);
    let r = reference(&reg, "app/multi:v1");
    for img in [&amd, &arm] {
        push_blobs(&c, &r, &img.uploads(&[]), 2, &NoProgress).unwrap();
        c.put_manifest(
            &r.with_digest(img.manifest_digest()),
            &img.manifest,
            &MediaType::OciManifest,
        )
        .unwrap();
    }
    let mut index = Index::new();
    for (img, p) in [(&amd, "linux/amd64"), (&arm, "linux/arm64")] {
        let mut d = Descriptor::new(
            MediaType::OciManifest,
            img.manifest_digest(),
            img.manifest.len() as u64,
        );
        d.platform = Some(p.parse().unwrap());
        index.manifests.push(d);
    }
    c.put_manifest(&r, &to_canonical_json(&index), &MediaType::OciIndex)
        .unwrap();
    let (m, idx) = c
        .get_image_manifest(&r, &"linux/arm64/v8".parse().unwrap())
        .unwrap();
    assert_eq!(m.bytes, arm.manifest);
    assert!(idx.unwrap().is_index());
    let e = c
        .get_image_manifest(&r, &Platform::linux("s390x"))
        .unwrap_err();
    assert!(matches!(e, Error::NoMatchingPlatform { .. }), "{e:?}");
    assert!(
        e.to_string().contains("linux/amd64") && e.to_string().contains("linux/s390x"),
        "{e}"
    );
}

#[test]
fn unknown_host_and_refused_connection_are_clear_errors() {
    let c = client_with(|o| {
        o.retry = RetryPolicy {
            max_retries: 1,
            ..fast_retry()
        }
    });
    let r = Reference::parse("no-such-host.invalid/app:1").unwrap();
    let e = c.get_manifest(&r).unwrap_err();
    assert!(matches!(e, Error::HostNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("no-such-host.invalid"), "{e}");
    let port = crate::support::free_port();
    let r = Reference::parse(&format!("127.0.0.1:{port}/app:1")).unwrap();
    let e = c.get_manifest(&r).unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[test]
fn missing_manifest_names_registry_and_code() {
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let e = client()
        .get_manifest(&reference(&reg, "app/none:v1"))
        .unwrap_err();
    assert!(e.is_not_found());
    let text = e.to_string();
    assert!(text.contains(&reg.addr) && text.contains("404"), "{text}");
    assert!(
        text.contains("MANIFEST_UNKNOWN") || text.contains("NAME_UNKNOWN"),
        "{text}"
    );
}

#[test]
fn mirror_serves_when_upstream_is_unreachable() {
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let img = TestImage::new(10, &[5000]);
    // The mirror holds the image under a path prefix, as a pull-through mirror would.
    let mirror_ref = reference(&reg, "mirror/library/base:1");
    push_image(&client(), &mirror_ref, &img);
    let config: RegistriesConfig = serde_json::from_value(serde_json::json!({
        "registry": [{
            "prefix": "unreachable.invalid",
            "mirrors": [
                {"location": format!("127.0.0.1:{}/broken", crate::support::free_port()), "insecure": true},
                {"location": format!("{}/mirror", reg.addr), "insecure": true},
            ],
        }]
    }))
    .unwrap();
    let c = client_with(|o| o.registries = config);
    let wanted = Reference::parse("unreachable.invalid/library/base:1").unwrap();
    let (source, m) = c.get_manifest_via_mirrors(&wanted).unwrap();
    assert_eq!(source, mirror_ref);
    assert_eq!(m.bytes, img.manifest);
    pull_and_check(&c, &source, &img);
    // Pushes never go to mirrors.
    assert_eq!(c.options().registries.push_target(&wanted).unwrap(), wanted);
}

#[derive(Default)]
struct Recorder {
    events: std::sync::Mutex<Vec<String>>,
    bytes: std::sync::atomic::AtomicU64,
}

impl kiln::registry::TransferProgress for Recorder {
    fn on_start(&self, d: &Digest, size: u64) {
        self.events
            .lock()
            .unwrap()
            .push(format!("start {} {size}", d.short()));
    }
    fn on_bytes(&self, _d: &Digest, n: u64) {
        self.bytes
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    fn on_done(&self, d: &Digest, o: BlobOutcome) {
        self.events
            .lock()
            .unwrap()
            .push(format!("done {} {o:?}", d.short()));
    }
}

#[test]
fn progress_is_reported_per_blob() {
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let c = client();
    let img = TestImage::new(11, &[40_000, 30_000]);
    let r = reference(&reg, "app/progress:v1");
    let rec = Recorder::default();
    push_blobs(&c, &r, &img.uploads(&[]), 2, &rec).unwrap();
    let total: u64 = img.blobs().iter().map(|b| b.len() as u64).sum();
    assert_eq!(rec.bytes.load(std::sync::atomic::Ordering::Relaxed), total);
    let events = rec.events.lock().unwrap().clone();
    assert_eq!(events.iter().filter(|e| e.starts_with("start")).count(), 3);
    assert_eq!(
        events.iter().filter(|e| e.ends_with("Uploaded")).count(),
        3,
        "{events:?}"
    );
    let again = Recorder::default();
    push_blobs(&c, &r, &img.uploads(&[]), 2, &again).unwrap();
    assert!(again
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.starts_with("done"))
        .all(|e| e.ends_with("Existed")));
    assert_eq!(again.bytes.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn foreign_layers_are_fetched_from_their_urls_and_verified() {
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let c = client();
    let img = TestImage::new(12, &[12_345]);
    let r = reference(&reg, "app/foreign:v1");
    push_image(&c, &r, &img);
    let layer = &img.layers[0];
    let digest = Digest::sha256(layer);
    let mut desc = Descriptor::new(
        MediaType::DockerForeignLayerGzip,
        digest.clone(),
        layer.len() as u64,
    );
    desc.urls = vec![
        "ftp://example.invalid/ignored".into(),
        format!("http://127.0.0.1:{}/gone", crate::support::free_port()),
        format!("http://{}/v2/app/foreign/blobs/{digest}", reg.addr),
    ];
    let mut out = Vec::new();
    c.get_foreign_blob(&desc, &mut out, &NoProgress).unwrap();
    assert_eq!(&out, layer.as_ref());
    // A URL serving other bytes is refused.
    desc.urls = vec![format!(
        "http://{}/v2/app/foreign/blobs/{}",
        reg.addr,
        Digest::sha256(&img.config)
    )];
    desc.size = img.config.len() as u64;
    let e = c
        .get_foreign_blob(&desc, &mut Vec::new(), &NoProgress)
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e:?}");
    desc.urls.clear();
    let e = c
        .get_foreign_blob(&desc, &mut Vec::new(), &NoProgress)
        .unwrap_err();
    assert!(matches!(e, Error::NoBlobUrls { .. }), "{e:?}");
}

/// Cold and warm push of a 64 MiB image, kiln against `skopeo copy`, each into a fresh
/// registry. Prints the times; run with `cargo test --test it push_speed -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn push_speed_against_skopeo() {
    let (Some(a), Some(b)) = (Registry::start(Mode::Plain), Registry::start(Mode::Plain)) else {
        return;
    };
    if !require_tool("skopeo", &["--version"]) {
        return;
    }
    let img = TestImage::new(99, &[64 << 20, 4 << 20]);
    let r = reference(&a, "speed/app:v1");
    let time = |f: &mut dyn FnMut()| {
        let t = std::time::Instant::now();
        f();
        t.elapsed()
    };
    let c = client();
    let uploads = img.uploads(&[]);
    let kiln_cold = time(&mut || {
        push_blobs(&c, &r, &uploads, 3, &NoProgress).unwrap();
        c.put_manifest(&r, &img.manifest, &MediaType::OciManifest)
            .unwrap();
    });
    let mut kiln_warm = Duration::MAX;
    for _ in 0..3 {
        // Digests are known to a real caller (the store); compute them outside the clock.
        let uploads = img.uploads(&[]);
        let t = std::time::Instant::now();
        let c = client();
        let outcomes = push_blobs(&c, &r, &uploads, 3, &NoProgress).unwrap();
        let blobs = t.elapsed();
        c.put_manifest(&r, &img.manifest, &MediaType::OciManifest)
            .unwrap();
        eprintln!(
            "kiln warm: blobs {blobs:?}, total {:?} {outcomes:?}",
            t.elapsed()
        );
        kiln_warm = kiln_warm.min(t.elapsed());
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = format!("oci:{}:v1", dir.path().join("layout").display());
    let run = |args: &[&str]| {
        let out = std::process::Command::new("skopeo")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{r}"),
        &layout,
    ]);
    let dest = format!("docker://{}/speed/app:v1", b.addr);
    let skopeo = |label: &str| {
        let t = std::time::Instant::now();
        run(&[
            "copy",
            "--dest-tls-verify=false",
            "--preserve-digests",
            &layout,
            &dest,
        ]);
        eprintln!("{label}: {:?}", t.elapsed());
        t.elapsed()
    };
    let skopeo_cold = skopeo("skopeo cold");
    let skopeo_warm = skopeo("skopeo warm");
    eprintln!("kiln cold {kiln_cold:?} warm {kiln_warm:?}; skopeo cold {skopeo_cold:?} warm {skopeo_warm:?}");
}

#[test]
#[ignore = "a measurement, not a check"]
fn warm_push_phases() {
    let Some(a) = Registry::start(Mode::Plain) else {
        return;
    };
    let img = TestImage::new(98, &[1 << 20]);
    let r = reference(&a, "speed/app:v1");
    push_image(&client(), &r, &img);
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let c = client();
        let t_new = t.elapsed();
        c.ping(r.registry()).unwrap();
        let t_ping = t.elapsed();
        let o = push_blobs(&c, &r, &img.uploads(&[]), 3, &NoProgress).unwrap();
        let t_blobs = t.elapsed();
        c.put_manifest(&r, &img.manifest, &MediaType::OciManifest)
            .unwrap();
        eprintln!(
            "new {t_new:?} ping {t_ping:?} blobs {t_blobs:?} total {:?} {o:?}",
            t.elapsed()
        );
    }
}

#[test]
fn registry_to_registry_copy_streams_without_temporary_files() {
    let (Some(a), Some(b)) = (Registry::start(Mode::Plain), Registry::start(Mode::Plain)) else {
        return;
    };
    let c = client();
    let img = TestImage::new(13, &[150_000, 20_000]);
    let src = reference(&a, "src/app:v1");
    push_image(&c, &src, &img);
    let m = c.get_manifest(&src).unwrap();
    let parsed = m.manifest().unwrap();
    let dst = reference(&b, "dst/app:v1");
    let uploads: Vec<BlobUpload> = std::iter::once(&parsed.config)
        .chain(parsed.layers.iter())
        .map(|d| {
            let (c, src, digest, size) = (c.clone(), src.clone(), d.digest.clone(), d.size);
            BlobUpload {
                digest: d.digest.clone(),
                size: d.size,
                open: Box::new(move || {
                    let reader = c
                        .open_blob(&src, &digest, Some(size))
                        .map_err(std::io::Error::other)?;
                    Ok(Box::new(reader) as Box<dyn std::io::Read + Send>)
                }),
                mount_from: vec![],
            }
        })
        .collect();
    push_blobs(&c, &dst, &uploads, 2, &NoProgress).unwrap();
    c.put_manifest(&dst, &m.bytes, &m.media_type).unwrap();
    pull_and_check(&c, &dst, &img);
}
