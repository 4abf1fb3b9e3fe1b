//! `kiln copy --all`: a two-platform index made here (`kiln import --platform` twice, then
//! `kiln index create`) pushed to the real registry, copied whole between the registry, `oci:`,
//! `oci-archive:`, the local store and another repository, keeping every digest; checked with
//! `skopeo inspect --raw`. Without `--all` one platform is taken; docker-archive refuses an index.
use std::process::Command;

use crate::support::registry::{Mode, Registry};
use crate::support::{check_layout_blobs, need, run, Kiln};

/// Imports a tiny rootfs for each platform and merges them into `docker://REG/multi:1`.
/// Returns the index digest and the two manifest digests (amd64, arm64).
fn multi(k: &Kiln, reg: &Registry) -> (String, Vec<String>) {
    let mut images = Vec::new();
    for arch in ["amd64", "arm64"] {
        let root = k.path(&format!("rootfs-{arch}"));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/arch"), format!("{arch}\n")).unwrap();
        k.ok(&[
            "import",
            root.to_str().unwrap(),
            "-t",
            &format!("multi:{arch}"),
            "--platform",
            &format!("linux/{arch}"),
        ]);
        images.push(format!("multi:{arch}"));
    }
    let res: serde_json::Value = serde_json::from_str(&k.ok(&[
        "index",
        "create",
        "-t",
        &format!("docker://{}/multi:1", reg.addr),
        &images[0],
        &images[1],
    ]))
    .unwrap();
    assert_eq!(res["pushed"], true, "{res}");
    let manifests = res["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[1].as_str().unwrap().to_string())
        .collect();
    (res["digest"].as_str().unwrap().to_string(), manifests)
}

/// `skopeo inspect --raw` of `reference`: the index's manifest digests and its own digest.
fn raw(reference: &str) -> (String, Vec<String>) {
    let bytes =
        run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", reference]));
    let v: serde_json::Value = serde_json::from_str(&bytes).unwrap();
    let digests = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("{reference} is not an index: {v}"))
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    (crate::support::sha256_hex(bytes.as_bytes()), digests)
}

#[test]
fn moves_a_whole_index_between_every_transport_keeping_its_digest() {
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let k = Kiln::new();
    let (index, manifests) = multi(&k, &reg);
    let src = format!("docker://{}/multi:1", reg.addr);

    // Registry → oci: in a fresh store.
    let k2 = Kiln::new();
    let layout = k2.path("layout");
    let out = k2.ok(&[
        "copy",
        "--all",
        &src,
        &format!("oci:{}:multi", layout.display()),
    ]);
    assert_eq!(out.trim(), index);
    assert!(
        check_layout_blobs(&layout) >= 7,
        "index + 2 × (manifest, config, layer)"
    );
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"][0]["digest"], index.as_str(), "{idx}");
    let archive = k2.path("multi.tar");
    let oci_ref = format!("oci:{}:multi", layout.display());
    if need("skopeo") {
        let (hex, listed) = raw(&oci_ref);
        assert_eq!(format!("sha256:{hex}"), index);
        assert_eq!(listed, manifests);
        let (_, listed) = raw(&src);
        assert_eq!(listed, manifests);
    }

    // oci: → oci-archive: → the local store → another repository of the registry.
    let out = k2.ok(&[
        "copy",
        "--all",
        &oci_ref,
        &format!("oci-archive:{}", archive.display()),
    ]);
    assert_eq!(out.trim(), index);
    let k3 = Kiln::new();
    let out = k3.ok(&[
        "copy",
        "--all",
        &format!("oci-archive:{}", archive.display()),
        "copied:1",
    ]);
    assert_eq!(out.trim(), index);
    k3.ok(&["store", "fsck"]);
    let back = format!("docker://{}/copied/multi:2", reg.addr);
    let out = k3.ok(&["copy", "--all", "copied:1", &back]);
    assert_eq!(out.trim(), index);
    if need("skopeo") {
        let (hex, listed) = raw(&back);
        assert_eq!(format!("sha256:{hex}"), index);
        assert_eq!(listed, manifests);
        // Each platform's manifest is there by digest.
        for m in &manifests {
            run(Command::new("skopeo").args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{}/copied/multi@{m}", reg.addr),
            ]));
        }
    }
    // Registry → registry directly, in a fresh store: the layers are mounted from the source
    // repository, never downloaded (only manifests and configs are read).
    let layers: Vec<String> = ["amd64", "arm64"]
        .iter()
        .flat_map(|a| {
            let v: serde_json::Value =
                serde_json::from_str(&k.ok(&["inspect", &format!("multi:{a}")])).unwrap();
            v["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(layers.len(), 2);
    let k4 = Kiln::new();
    let before = reg.accesses().len();
    let out = k4.ok(&[
        "copy",
        "--all",
        &src,
        &format!("docker://{}/third/multi:3", reg.addr),
    ]);
    assert_eq!(out.trim(), index);
    let log: Vec<_> = reg.accesses().into_iter().skip(before).collect();
    for l in &layers {
        assert!(
            !log.iter()
                .any(|a| a.method == "GET" && a.path.ends_with(l.as_str())),
            "layer {l} was downloaded: {log:#?}"
        );
        assert!(
            log.iter().any(|a| a.method == "POST"
                && a.path.contains(&format!("mount={}", l.replace(':', "%3A")))
                && a.status == 201),
            "layer {l} was not mounted: {log:#?}"
        );
        assert!(!k4.root().join("blobs/sha256").join(&l[7..]).exists());
    }
    k4.ok(&["store", "fsck"]);
    // The same copy, one platform, without --all: mounted as well.
    let k5 = Kiln::new();
    let before = reg.accesses().len();
    let out = k5.ok(&[
        "copy",
        "--platform",
        "linux/arm64",
        &src,
        &format!("docker://{}/fourth/one:1", reg.addr),
    ]);
    assert_eq!(out.trim(), manifests[1]);
    let log: Vec<_> = reg.accesses().into_iter().skip(before).collect();
    assert!(
        !log.iter()
            .any(|a| a.method == "GET" && a.path.ends_with(layers[1].as_str())),
        "{log:#?}"
    );

    // Without --all: one platform, chosen by --platform.
    let single = k2.ok(&["copy", "--platform", "linux/arm64", &src, "one:arm64"]);
    assert_eq!(single.trim(), manifests[1]);

    // docker-archive cannot hold an index.
    let (code, err) = k2.fails(&[
        "copy",
        "--all",
        &src,
        &format!("docker-archive:{}", k2.path("x.tar").display()),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("docker-archive") && err.contains(&index),
        "{err}"
    );
    assert!(!k2.path("x.tar").exists());
    k2.ok(&["store", "fsck"]);
}
