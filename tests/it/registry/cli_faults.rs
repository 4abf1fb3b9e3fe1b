//! Faults between kiln's commands and the real registry (`kiln pull`, `kiln push`,
//! `kiln build --push` through the fault proxy): each either succeeds with nothing corrupt or
//! fails with exit 2 and an error naming the digest, and `kiln store fsck` is clean afterwards
//! with no partial blob left in the store.
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::registry::{Mode, Registry};
use crate::support::{busybox, Kiln};

struct Setup {
    reg: Registry,
    proxy: FaultProxy,
    /// A store holding the busybox base as `busybox`.
    k: Kiln,
    /// The base's single layer.
    layer: String,
    /// The base's manifest digest.
    manifest: String,
}

fn setup() -> Option<Setup> {
    let k = Kiln::new();
    busybox::import(&k, "busybox")?;
    let reg = Registry::start(Mode::Plain)?;
    let proxy = FaultProxy::start(&reg.addr);
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "busybox"])).unwrap();
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{v}");
    Some(Setup {
        layer: layers[0]["digest"].as_str().unwrap().to_string(),
        manifest: v["digest"].as_str().unwrap().to_string(),
        reg,
        proxy,
        k,
    })
}

/// `kiln store fsck` exits 0, and no temp file (a partial download or upload) is left.
fn clean(k: &Kiln) {
    k.ok(&["store", "fsck"]);
    let tmp = k.root().join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "partial files in {}: {left:?}",
        tmp.display()
    );
}

fn has_blob(k: &Kiln, digest: &str) -> bool {
    k.root()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .is_file()
}

/// The manifest digest the registry itself (not the proxy) serves for `repo_tag`.
fn registry_digest(s: &Setup, repo_tag: &str) -> String {
    let k = Kiln::new();
    let out = k.ok(&["pull", &format!("{}/{repo_tag}", s.reg.addr)]);
    k.ok(&["store", "fsck"]);
    out.trim().rsplit('@').next().unwrap().to_string()
}

fn url_digest(d: &str) -> String {
    d.replace(':', "%3A")
}

#[test]
fn push_survives_a_reset_mid_upload() {
    let Some(s) = setup() else { return };
    s.proxy.add(
        "PUT",
        &format!("digest={}", url_digest(&s.layer)),
        Fault::ResetMidBody,
        1,
    );
    s.k.ok(&["push", "busybox", &format!("{}/reset/app:1", s.proxy.addr)]);
    assert_eq!(s.proxy.faults_fired(), 1);
    assert_eq!(registry_digest(&s, "reset/app:1"), s.manifest);
    clean(&s.k);
}

#[test]
fn pull_survives_503_then_success() {
    let Some(s) = setup() else { return };
    s.k.ok(&["push", "busybox", &format!("{}/flaky/app:1", s.reg.addr)]);
    let status = Fault::Status {
        status: 503,
        retry_after: None,
    };
    s.proxy.add("GET", "/manifests/", status.clone(), 2);
    s.proxy.add("GET", &s.layer, status, 2);
    let k = Kiln::new();
    let out = k.ok(&["pull", &format!("{}/flaky/app:1", s.proxy.addr)]);
    assert!(out.trim().ends_with(&s.manifest), "{out}");
    assert_eq!(s.proxy.faults_fired(), 4);
    assert!(has_blob(&k, &s.layer));
    clean(&k);
}

#[test]
fn build_push_honours_429_retry_after() {
    let Some(s) = setup() else { return };
    let c = s.k.path("ctx");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("Dockerfile"), "FROM busybox\nCOPY hi.txt /hi.txt\n").unwrap();
    std::fs::write(c.join("hi.txt"), b"hi\n").unwrap();
    s.proxy.add(
        "POST",
        "/blobs/uploads/",
        Fault::Status {
            status: 429,
            retry_after: Some("2".into()),
        },
        1,
    );
    let started = Instant::now();
    let name = format!("{}/limited/app:1", s.proxy.addr);
    let digest =
        s.k.ok(&["build", c.to_str().unwrap(), "-t", &name, "--push"])
            .trim()
            .to_string();
    assert_eq!(s.proxy.faults_fired(), 1);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After: 2 was not honoured ({:?})",
        started.elapsed()
    );
    assert_eq!(registry_digest(&s, "limited/app:1"), digest);
    clean(&s.k);
}

#[test]
fn pull_resumes_a_truncated_download() {
    let Some(s) = setup() else { return };
    s.k.ok(&["push", "busybox", &format!("{}/cut/app:1", s.reg.addr)]);
    s.proxy.add("GET", &s.layer, Fault::TruncateBody, 2);
    let k = Kiln::new();
    k.ok(&["pull", &format!("{}/cut/app:1", s.proxy.addr)]);
    assert_eq!(s.proxy.faults_fired(), 2);
    assert!(has_blob(&k, &s.layer));
    clean(&k);
    // What landed is the layer itself (fsck rehashed it; compare with the original too).
    assert_eq!(
        std::fs::read(blob(&k, &s.layer)).unwrap(),
        std::fs::read(blob(&s.k, &s.layer)).unwrap()
    );
}

fn blob(k: &Kiln, d: &str) -> std::path::PathBuf {
    k.root()
        .join("blobs/sha256")
        .join(d.trim_start_matches("sha256:"))
}

#[test]
fn pull_of_corrupt_bytes_fails_naming_the_digest_and_stores_nothing() {
    let Some(s) = setup() else { return };
    s.k.ok(&["push", "busybox", &format!("{}/bad/app:1", s.reg.addr)]);
    s.proxy.add("GET", &s.layer, Fault::CorruptBody, 100);
    let k = Kiln::new();
    let reference = format!("{}/bad/app:1", s.proxy.addr);
    let (code, err) = k.fails(&["pull", &reference]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&s.layer),
        "the error does not name the layer: {err}"
    );
    assert!(!has_blob(&k, &s.layer));
    assert!(!k.ok(&["images"]).contains("bad/app"));
    clean(&k);

    // A lazy base whose bytes turn out corrupt when a build needs them: the same.
    let c = k.path("ctx");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        c.join("Dockerfile"),
        format!("FROM {reference}\nCOPY --link Dockerfile /x\n"),
    )
    .unwrap();
    let out = k.path("out.tar");
    let (code, err) = k.fails(&[
        "build",
        c.to_str().unwrap(),
        "-t",
        "lazy:1",
        "-o",
        &format!("oci-archive:{}", out.display()),
    ]);
    // The image was built (COPY --link never opened the base); writing the archive needed the
    // layer's bytes, and that failed: an export error, exit 2, as with `kiln copy`.
    assert_eq!(code, 2, "a failed export exits 2: {err}");
    assert!(
        err.contains(&s.layer) && err.contains(&s.proxy.addr),
        "the error names neither the layer nor the registry: {err}"
    );
    assert!(!has_blob(&k, &s.layer));
    assert!(!Path::new(&out).exists());
    clean(&k);
}

#[test]
fn lazy_layer_fetch_resumes_a_truncated_download() {
    let Some(s) = setup() else { return };
    s.k.ok(&["push", "busybox", &format!("{}/lazycut/base:1", s.reg.addr)]);
    let k = Kiln::new();
    let c = k.path("ctx");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        c.join("Dockerfile"),
        format!(
            "FROM {}/lazycut/base:1\nCOPY --link Dockerfile /x\n",
            s.proxy.addr
        ),
    )
    .unwrap();
    k.ok(&["build", c.to_str().unwrap(), "-t", "lazy:1"]);
    assert!(!has_blob(&k, &s.layer), "the build never opened the base");
    s.proxy.add("GET", &s.layer, Fault::TruncateBody, 2);
    let out = k.path("out.tar");
    k.ok(&["copy", "lazy:1", &format!("oci-archive:{}", out.display())]);
    assert_eq!(s.proxy.faults_fired(), 2);
    assert!(has_blob(&k, &s.layer));
    assert_eq!(
        std::fs::read(blob(&k, &s.layer)).unwrap(),
        std::fs::read(blob(&s.k, &s.layer)).unwrap()
    );
    clean(&k);
}

#[test]
fn push_that_keeps_failing_exits_2_naming_the_blob() {
    let Some(s) = setup() else { return };
    s.proxy.add(
        "PUT",
        &format!("digest={}", url_digest(&s.layer)),
        Fault::ResetMidBody,
        1000,
    );
    let (code, err) =
        s.k.fails(&["push", "busybox", &format!("{}/broken/app:1", s.proxy.addr)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&s.layer),
        "the error does not name the layer: {err}"
    );
    assert!(s.proxy.faults_fired() > 1, "the upload was retried");
    // No manifest was put: the registry has no broken image under that name.
    let (_, err) = Kiln::new().fails(&["pull", &format!("{}/broken/app:1", s.reg.addr)]);
    assert!(err.contains("MANIFEST_UNKNOWN"), "{err}");
    clean(&s.k);
}
