//! Faults injected by the proxy between the client and the real registry.
use std::time::{Duration, Instant};

use kiln::oci::MediaType;
use kiln::registry::{push_blobs, Error, NoProgress, Reference, RetryPolicy};

use super::{
    client, client_with, fast_retry, pull_and_check, push_image, reference, upload, TestImage,
};
use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::registry::{Mode, Registry};

fn setup() -> Option<(Registry, FaultProxy)> {
    let reg = Registry::start(Mode::Plain)?;
    let proxy = FaultProxy::start(&reg.addr);
    Some((reg, proxy))
}

fn via(proxy: &FaultProxy, repo_tag: &str) -> Reference {
    Reference::parse(&format!("{}/{repo_tag}", proxy.addr)).unwrap()
}

#[test]
fn reset_mid_upload_restarts_only_that_blob() {
    let Some((reg, proxy)) = setup() else { return };
    let img = TestImage::new(20, &[200_000, 150_000]);
    let big = img.layers[0].clone();
    let digest = kiln::oci::Digest::sha256(&big);
    proxy.add(
        "PUT",
        &format!("digest={}", digest.to_string().replace(':', "%3A")),
        Fault::ResetMidBody,
        1,
    );
    let c = client();
    let r = via(&proxy, "app/reset:v1");
    push_image(&c, &r, &img);
    assert_eq!(proxy.faults_fired(), 1, "the reset fired");
    // Only the broken blob was uploaded twice.
    let log = proxy.log.lock().unwrap().clone();
    let puts_of = |d: &kiln::oci::Digest| {
        let needle = d.to_string().replace(':', "%3A");
        log.iter()
            .filter(|(m, p, _)| m == "PUT" && p.contains(&needle))
            .count()
    };
    assert_eq!(puts_of(&digest), 2);
    assert_eq!(puts_of(&kiln::oci::Digest::sha256(&img.layers[1])), 1);
    pull_and_check(&client(), &reference(&reg, "app/reset:v1"), &img);
}

#[test]
fn status_503_then_success() {
    let Some((_reg, proxy)) = setup() else { return };
    proxy.add(
        "GET",
        "/manifests/",
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        2,
    );
    proxy.add(
        "HEAD",
        "/blobs/",
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        2,
    );
    let c = client();
    let img = TestImage::new(21, &[10_000]);
    let r = via(&proxy, "app/flaky:v1");
    push_image(&c, &r, &img);
    pull_and_check(&c, &r, &img);
    assert_eq!(proxy.faults_fired(), 4);
    // With no retries left the 503 is a clear, temporary error.
    proxy.add(
        "GET",
        "/manifests/",
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        10,
    );
    let strict = client_with(|o| o.retry = RetryPolicy::none());
    let e = strict.get_manifest(&r).unwrap_err();
    assert!(e.is_temporary(), "{e:?}");
    assert!(
        e.to_string().contains("503") && e.to_string().contains("UNAVAILABLE"),
        "{e}"
    );
}

#[test]
fn status_429_honours_retry_after() {
    let Some((_reg, proxy)) = setup() else { return };
    let c = client_with(|o| {
        o.retry = RetryPolicy {
            max_delay: Duration::from_secs(3),
            ..fast_retry()
        }
    });
    let img = TestImage::new(22, &[1000]);
    let r = via(&proxy, "app/limited:v1");
    push_image(&c, &r, &img);
    proxy.add(
        "GET",
        "/manifests/",
        Fault::Status {
            status: 429,
            retry_after: Some("1".into()),
        },
        1,
    );
    let start = Instant::now();
    c.get_manifest(&r).unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        start.elapsed()
    );
    assert_eq!(proxy.faults_fired(), 1);
}

#[test]
fn truncated_download_resumes_and_verifies() {
    let Some((_reg, proxy)) = setup() else { return };
    let c = client();
    let img = TestImage::new(23, &[300_000]);
    let r = via(&proxy, "app/trunc:v1");
    push_image(&c, &r, &img);
    proxy.add("GET", "/blobs/sha256:", Fault::TruncateBody, 2);
    pull_and_check(&c, &r, &img);
    assert_eq!(proxy.faults_fired(), 2);
}

#[test]
fn corrupted_download_is_rejected() {
    let Some((_reg, proxy)) = setup() else { return };
    let c = client();
    let img = TestImage::new(24, &[50_000]);
    let r = via(&proxy, "app/corrupt:v1");
    push_image(&c, &r, &img);
    let layer = kiln::oci::Digest::sha256(&img.layers[0]);
    proxy.add("GET", &layer.to_string(), Fault::CorruptBody, 100);
    let mut out = Vec::new();
    let e = c
        .get_blob(&r, &layer, Some(50_000), &mut out, &NoProgress)
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains(&layer.to_string()), "{e}");
}

#[test]
fn redirect_loop_is_an_error() {
    let Some((_reg, proxy)) = setup() else { return };
    let c = client();
    let img = TestImage::new(25, &[100]);
    let r = via(&proxy, "app/loop:v1");
    push_image(&c, &r, &img);
    proxy.add("GET", "/blobs/", Fault::RedirectLoop, 1000);
    let mut out = Vec::new();
    let e = c
        .get_blob(
            &r,
            &kiln::oci::Digest::sha256(&img.layers[0]),
            None,
            &mut out,
            &NoProgress,
        )
        .unwrap_err();
    assert!(matches!(e, Error::TooManyRedirects { .. }), "{e:?}");
}

#[test]
fn manifest_over_4_mib_is_refused() {
    let Some((_reg, proxy)) = setup() else { return };
    let c = client();
    proxy.add("GET", "/manifests/", Fault::HugeManifest(5 << 20), 1);
    let e = c.get_manifest(&via(&proxy, "app/huge:v1")).unwrap_err();
    assert!(matches!(e, Error::ManifestTooLarge { .. }), "{e:?}");
    assert!(e.to_string().contains("app/huge"), "{e}");
}

#[test]
fn upload_that_keeps_failing_gives_a_clear_error() {
    let Some((_reg, proxy)) = setup() else { return };
    let c = client();
    let blob = std::sync::Arc::new(crate::support::random_bytes(26, 20_000));
    proxy.add(
        "PUT",
        "digest=",
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        100,
    );
    let r = via(&proxy, "app/doomed:v1");
    let e = push_blobs(&c, &r, &[upload(blob, &[])], 1, &NoProgress).unwrap_err();
    assert!(
        e.to_string().contains("500") && e.to_string().contains("PUT"),
        "{e}"
    );
    // It retried, then gave up.
    assert_eq!(proxy.faults_fired(), 5);
    let _ = MediaType::OciManifest;
}

#[test]
fn local_reader_failures_are_not_network_errors() {
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let c = client();
    let r = reference(&reg, "app/local:v1");
    // A reader that fails: the error names the blob and is not retried as a network error.
    let failing = kiln::registry::BlobUpload {
        digest: kiln::oci::Digest::sha256(b"whatever"),
        size: 8,
        open: Box::new(|| Err(std::io::Error::other("disk gone"))),
        mount_from: vec![],
    };
    let e = c.push_blob(&r, &failing, &NoProgress).unwrap_err();
    assert!(matches!(e, Error::ReadBlob { .. }), "{e:?}");
    assert!(!e.is_temporary());
    // A reader shorter than the announced size.
    let short = kiln::registry::BlobUpload {
        digest: kiln::oci::Digest::sha256(b"0123456789"),
        size: 10,
        open: Box::new(|| Ok(Box::new(std::io::Cursor::new(b"01234".to_vec())))),
        mount_from: vec![],
    };
    let e = c.push_blob(&r, &short, &NoProgress).unwrap_err();
    assert!(
        matches!(
            e,
            Error::UploadSize {
                expected: 10,
                actual: 5,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn reset_mid_chunk_restarts_the_chunked_upload() {
    let Some((reg, proxy)) = setup() else { return };
    let img = TestImage::new(27, &[250_000]);
    proxy.add("PATCH", "/blobs/uploads/", Fault::ResetMidBody, 1);
    proxy.add(
        "PATCH",
        "/blobs/uploads/",
        Fault::Status {
            status: 502,
            retry_after: None,
        },
        1,
    );
    let c = client_with(|o| {
        o.upload = kiln::registry::UploadMode::Chunked {
            chunk_size: 64 * 1024,
        }
    });
    let r = via(&proxy, "app/chunk-reset:v1");
    push_image(&c, &r, &img);
    assert_eq!(proxy.faults_fired(), 2);
    pull_and_check(&client(), &reference(&reg, "app/chunk-reset:v1"), &img);
}

#[test]
fn a_stalled_registry_times_out_and_is_retried() {
    let Some((_reg, proxy)) = setup() else { return };
    let img = TestImage::new(28, &[1000]);
    let r = via(&proxy, "app/stall:v1");
    push_image(&client(), &r, &img);
    let c = client_with(|o| o.io_timeout = Some(Duration::from_millis(300)));
    proxy.add(
        "GET",
        "/manifests/",
        Fault::Stall(Duration::from_secs(3)),
        1,
    );
    let start = Instant::now();
    assert_eq!(c.get_manifest(&r).unwrap().bytes, img.manifest);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(proxy.faults_fired(), 1);
}

#[test]
fn blob_reader_resumes_truncation_and_rejects_corruption() {
    use std::io::Read;
    let Some((_reg, proxy)) = setup() else { return };
    let c = client();
    let img = TestImage::new(29, &[200_000]);
    let r = via(&proxy, "app/reader:v1");
    push_image(&c, &r, &img);
    let layer = kiln::oci::Digest::sha256(&img.layers[0]);
    proxy.add("GET", &layer.to_string(), Fault::TruncateBody, 2);
    let mut out = Vec::new();
    c.open_blob(&r, &layer, Some(200_000))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(&out, img.layers[0].as_ref());
    assert_eq!(proxy.faults_fired(), 2);
    proxy.add("GET", &layer.to_string(), Fault::CorruptBody, 100);
    let e = c
        .open_blob(&r, &layer, Some(200_000))
        .unwrap()
        .read_to_end(&mut Vec::new())
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    let inner = e.into_inner().unwrap().downcast::<Error>().unwrap();
    assert!(matches!(*inner, Error::DigestMismatch { .. }), "{inner:?}");
    // A missing blob is a registry error at open time.
    let e = c
        .open_blob(&r, &kiln::oci::Digest::sha256(b"absent"), None)
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
}
