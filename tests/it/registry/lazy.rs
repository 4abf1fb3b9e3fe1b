//! Lazy base layers against the real registry: a build's `FROM 127.0.0.1:PORT/base` downloads
//! the manifest and config only; the layers are fetched when something opens them (RUN, an
//! export), and a push to the same registry mounts or HEAD-skips them without ever GETting
//! them. Counted in the registry's access log.
use std::process::Command;

use crate::support::registry::{Access, Mode, Registry};
use crate::support::{busybox, check_layout_blobs, need, run, Kiln};

/// The base's layer digests (from `kiln inspect`).
fn layers(k: &Kiln, name: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", name])).unwrap();
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn context(k: &Kiln, dockerfile: &str) -> std::path::PathBuf {
    let c = k.path("ctx");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(c.join("hello.txt"), b"hello, lazily\n").unwrap();
    c
}

/// GETs of any of `blobs` among `log`.
/// A build on the registry's base that needs nothing of it: `COPY --link` (a plain COPY reads
/// the base's file metadata).
fn link_only_context(k: &Kiln, reg: &Registry) -> std::path::PathBuf {
    context(
        k,
        &format!(
            "FROM {}/base:1\nCOPY --link hello.txt /hello.txt\n",
            reg.addr
        ),
    )
}

fn blob_gets<'a>(log: &'a [Access], blobs: &[String]) -> Vec<&'a Access> {
    log.iter()
        .filter(|a| {
            a.method == "GET"
                && blobs
                    .iter()
                    .any(|b| a.path.ends_with(&format!("/blobs/{b}")))
        })
        .collect()
}

fn since(reg: &Registry, before: usize) -> Vec<Access> {
    reg.accesses().into_iter().skip(before).collect()
}

/// Pushes a busybox base to `REG/base:1`; returns the registry, the base's layer digests.
fn base() -> Option<(Registry, Vec<String>)> {
    let k = Kiln::new();
    busybox::import(&k, "busybox")?;
    let reg = Registry::start(Mode::Plain)?;
    k.ok(&["push", "busybox", &format!("{}/base:1", reg.addr)]);
    let l = layers(&k, "busybox");
    assert!(!l.is_empty());
    Some((reg, l))
}

#[test]
fn a_build_that_never_opens_the_base_pushes_it_by_mount_and_head_without_downloading_it() {
    let Some((reg, base_layers)) = base() else {
        return;
    };
    let k = Kiln::new();
    let c = link_only_context(&k, &reg);
    let before = reg.accesses().len();
    let app = format!("{}/app:1", reg.addr);
    k.ok(&["build", c.to_str().unwrap(), "-t", &app, "--push"]);
    let log = since(&reg, before);
    assert_eq!(
        blob_gets(&log, &base_layers),
        Vec::<&Access>::new(),
        "{log:#?}"
    );
    for l in &base_layers {
        assert!(
            log.iter().any(|a| a.method == "POST"
                && a.path.contains(&format!("mount={}", l.replace(':', "%3A")))
                && a.path.contains("from=base")
                && a.status == 201),
            "layer {l} was not mounted from base: {log:#?}"
        );
    }
    // The store knows the layers are lazy, and that is not corruption.
    let fsck = k.ok(&["store", "fsck"]);
    assert!(
        fsck.contains(&format!("{} lazy layers", base_layers.len())),
        "{fsck}"
    );
    for l in &base_layers {
        assert!(!k.root().join("blobs/sha256").join(&l[7..]).exists());
    }

    // Pushed back into the base's own repository: a HEAD finds each layer, nothing is fetched.
    let before = reg.accesses().len();
    k.ok(&["push", &app, &format!("{}/base:app", reg.addr)]);
    let log = since(&reg, before);
    assert_eq!(
        blob_gets(&log, &base_layers),
        Vec::<&Access>::new(),
        "{log:#?}"
    );
    for l in &base_layers {
        assert!(
            log.iter().any(|a| a.method == "HEAD"
                && a.path == format!("/v2/base/blobs/{l}")
                && a.status == 200),
            "layer {l} was not found by HEAD: {log:#?}"
        );
    }
    assert!(
        !log.iter()
            .any(|a| a.method == "PATCH" || (a.method == "PUT" && a.path.contains("/blobs/"))),
        "{log:#?}"
    );

    // Exporting needs the bytes: they are fetched once, verified, and the layout is complete.
    let layout = k.path("layout");
    let before = reg.accesses().len();
    k.ok(&["copy", &app, &format!("oci:{}:app", layout.display())]);
    let log = since(&reg, before);
    assert_eq!(
        blob_gets(&log, &base_layers).len(),
        base_layers.len(),
        "{log:#?}"
    );
    assert!(check_layout_blobs(&layout) >= base_layers.len() + 3);
    let fsck = k.ok(&["store", "fsck"]);
    assert!(fsck.contains(" 0 lazy layers"), "{fsck}");
    if need("skopeo") {
        let v: serde_json::Value = serde_json::from_str(&run(
            Command::new("skopeo").args(["inspect", &format!("oci:{}:app", layout.display())])
        ))
        .unwrap();
        let got: Vec<String> = v["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect();
        assert_eq!(&got[..base_layers.len()], &base_layers[..]);
    }
}

#[test]
fn a_lazy_base_is_fetched_when_run_or_an_export_opens_it() {
    let Some((reg, base_layers)) = base() else {
        return;
    };
    // `-o oci:DIR` of a build on a lazy base: the layers are fetched for the export.
    let k = Kiln::new();
    let c = link_only_context(&k, &reg);
    let layout = k.path("out");
    let before = reg.accesses().len();
    k.ok(&[
        "build",
        c.to_str().unwrap(),
        "-t",
        "exported:1",
        "-o",
        &format!("oci:{}:x", layout.display()),
    ]);
    let log = since(&reg, before);
    assert_eq!(
        blob_gets(&log, &base_layers).len(),
        base_layers.len(),
        "{log:#?}"
    );
    assert!(check_layout_blobs(&layout) >= base_layers.len() + 3);
    if need("skopeo") {
        let v: serde_json::Value = serde_json::from_str(&run(
            Command::new("skopeo").args(["inspect", &format!("oci:{}:x", layout.display())])
        ))
        .unwrap();
        assert_eq!(
            v["Layers"].as_array().unwrap().len(),
            base_layers.len() + 1,
            "{v}"
        );
    }
    k.ok(&["store", "fsck"]);

    // RUN unpacks the base: its layers are fetched (once) in a fresh store.
    if crate::support::sandbox::sandbox().is_none() {
        return;
    }
    let k = Kiln::new();
    let c = context(
        &k,
        &format!("FROM {}/base:1\nRUN cat /etc/passwd > /copy\n", reg.addr),
    );
    let before = reg.accesses().len();
    k.ok(&["build", c.to_str().unwrap(), "-t", "ran:1"]);
    let log = since(&reg, before);
    assert_eq!(
        blob_gets(&log, &base_layers).len(),
        base_layers.len(),
        "{log:#?}"
    );
    let fsck = k.ok(&["store", "fsck"]);
    assert!(fsck.contains(" 0 lazy layers"), "{fsck}");
}

#[test]
fn a_lazy_layer_whose_registry_is_gone_is_a_clear_error_naming_digest_and_registry() {
    let Some((reg, base_layers)) = base() else {
        return;
    };
    let k = Kiln::new();
    let c = link_only_context(&k, &reg);
    k.ok(&["build", c.to_str().unwrap(), "-t", "offline:1"]);
    let addr = reg.addr.clone();
    drop(reg);
    let layout = k.path("layout");
    let (code, err) = k.fails(&["copy", "offline:1", &format!("oci:{}", layout.display())]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&base_layers[0]) && err.contains(&addr),
        "the error names neither the blob nor the registry: {err}"
    );
    // Nothing partial: no layer blob in the store, and the store is still consistent.
    assert!(!k
        .root()
        .join("blobs/sha256")
        .join(&base_layers[0][7..])
        .exists());
    let fsck = k.ok(&["store", "fsck"]);
    assert!(
        fsck.contains(&format!(" {} lazy layers", base_layers.len())),
        "{fsck}"
    );
    // gc keeps the origin records of what is still named (else the layers would be lost).
    k.ok(&["store", "gc"]);
    assert!(k.root().join("origins").join(&base_layers[0][7..]).exists());
    k.ok(&["store", "fsck"]);
    // Once nothing names them, gc drops the records with the images.
    k.ok(&["rmi", "offline:1", &format!("{addr}/base:1")]);
    k.ok(&["store", "gc"]);
    assert!(!k.root().join("origins").join(&base_layers[0][7..]).exists());
    k.ok(&["store", "fsck"]);
}

#[test]
fn a_lazy_layer_pushed_to_another_registry_streams_from_its_origin_and_stays_lazy() {
    let Some((reg, base_layers)) = base() else {
        return;
    };
    let Some(other) = Registry::start(Mode::Plain) else {
        return;
    };
    let k = Kiln::new();
    let c = link_only_context(&k, &reg);
    let before = reg.accesses().len();
    let app = format!("{}/elsewhere/app:1", other.addr);
    let digest = k
        .ok(&["build", c.to_str().unwrap(), "-t", &app, "--push"])
        .trim()
        .to_string();
    // Read once from the origin, straight into the upload; never stored here.
    let log = since(&reg, before);
    assert_eq!(
        blob_gets(&log, &base_layers).len(),
        base_layers.len(),
        "{log:#?}"
    );
    let fsck = k.ok(&["store", "fsck"]);
    assert!(
        fsck.contains(&format!(" {} lazy layers", base_layers.len())),
        "{fsck}"
    );
    let uploaded = other.accesses();
    for l in &base_layers {
        assert!(
            uploaded.iter().any(|a| a.method == "PUT"
                && a.path
                    .contains(&format!("digest={}", l.replace(':', "%3A")))
                && a.status == 201),
            "layer {l} was not uploaded: {uploaded:#?}"
        );
    }
    // What arrived is complete and correct: a fresh store pulls and verifies it.
    let k2 = Kiln::new();
    let out = k2.ok(&["pull", &app]);
    assert!(out.trim().ends_with(&digest), "{out}");
    let fsck = k2.ok(&["store", "fsck"]);
    assert!(fsck.contains(" 0 lazy layers"), "{fsck}");
}

#[test]
fn the_first_opened_layer_of_a_lazy_base_brings_its_sibling_layers_each_fetched_once() {
    let Some((reg, _)) = base() else {
        return;
    };
    // A three-layer base: busybox plus two COPY --link layers.
    let k = Kiln::new();
    let c = k.path("base-ctx");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        c.join("Dockerfile"),
        format!(
            "FROM {}/base:1\nCOPY --link a.bin /a.bin\nCOPY --link b.bin /b.bin\n",
            reg.addr
        ),
    )
    .unwrap();
    std::fs::write(c.join("a.bin"), crate::support::noise(1, 300_000)).unwrap();
    std::fs::write(c.join("b.bin"), crate::support::noise(2, 300_000)).unwrap();
    let three = format!("{}/three:1", reg.addr);
    k.ok(&["build", c.to_str().unwrap(), "-t", &three, "--push"]);
    let three_layers = layers(&k, &three);
    assert_eq!(three_layers.len(), 3);

    let k2 = Kiln::new();
    let c2 = context(
        &k2,
        &format!("FROM {three}\nCOPY --link hello.txt /hello.txt\n"),
    );
    let before = reg.accesses().len();
    k2.ok(&["build", c2.to_str().unwrap(), "-t", "on-three:1"]);
    assert_eq!(blob_gets(&since(&reg, before), &three_layers).len(), 0);
    let layout = k2.path("layout");
    k2.ok(&[
        "--jobs",
        "3",
        "copy",
        "on-three:1",
        &format!("oci:{}", layout.display()),
    ]);
    let log = since(&reg, before);
    let gets = blob_gets(&log, &three_layers);
    for l in &three_layers {
        assert_eq!(
            gets.iter().filter(|a| a.path.ends_with(l.as_str())).count(),
            1,
            "{l}: {log:#?}"
        );
    }
    assert!(check_layout_blobs(&layout) >= 6);
    let fsck = k2.ok(&["store", "fsck"]);
    assert!(fsck.contains(" 0 lazy layers"), "{fsck}");

    // Through the library: opening the top layer alone brings the two below it.
    let dir = tempfile::tempdir().unwrap();
    let store = kiln::store::Store::open(dir.path()).unwrap();
    let remote = kiln::transport::Remote::new(crate::registry::client(), 3);
    let image = kiln::transport::read_base_into_store(
        &store,
        &kiln::transport::Target::Registry(three.clone()),
        None,
        Some(&remote),
    )
    .unwrap();
    store.tag("three:1", &image.descriptor).unwrap();
    let digests: Vec<kiln::oci::Digest> = three_layers.iter().map(|l| l.parse().unwrap()).collect();
    assert!(digests.iter().all(|d| !store.contains(d)));
    // The store itself never reaches the registry: opened there, a lazy layer says so.
    assert!(
        matches!(
            store.open_blob(&digests[2]),
            Err(kiln::store::Error::Lazy { .. })
        ),
        "the store fetched a lazy layer on its own"
    );
    assert!(digests.iter().all(|d| !store.contains(d)));
    let layers = kiln::transport::LayerSource::new(&store, Some(&remote));
    drop(layers.open_blob(&digests[2]).unwrap());
    assert!(
        digests.iter().all(|d| store.contains(d)),
        "the siblings were not fetched"
    );
}

/// `kiln inspect docker://…` needs the manifest and config only: no layer is downloaded, and
/// the layers it lists are the pushed ones.
#[test]
fn inspecting_a_registry_image_downloads_no_layer() {
    let Some((reg, base_layers)) = base() else {
        return;
    };
    let k = Kiln::new();
    let before = reg.accesses().len();
    let listed = layers(&k, &format!("docker://{}/base:1", reg.addr));
    assert_eq!(listed, base_layers);
    let log = since(&reg, before);
    assert!(
        blob_gets(&log, &base_layers).is_empty(),
        "inspect downloaded layers: {:?}",
        blob_gets(&log, &base_layers)
    );
    k.ok(&["store", "fsck"]);
}
