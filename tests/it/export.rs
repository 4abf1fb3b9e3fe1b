//! Images kiln writes are accepted by real tools: skopeo, umoci, podman.
use std::io::Read;
use std::process::Command;

use crate::support::{check_layout_blobs, need, rich_tree, run, sha256_hex, snapshot, Kiln};

fn inspect(k: &Kiln, image: &str) -> serde_json::Value {
    serde_json::from_str(&k.ok(&["inspect", image])).unwrap()
}

/// Every layer blob hashes to its digest and decompresses to its diff_id.
fn check_layers(k: &Kiln, image: &str) {
    let v = inspect(k, image);
    for l in v["layers"].as_array().unwrap() {
        let digest = l["digest"].as_str().unwrap();
        let diff_id = l["diff_id"].as_str().unwrap();
        let blob = std::fs::read(k.root().join("blobs/sha256").join(&digest[7..])).unwrap();
        assert_eq!(format!("sha256:{}", sha256_hex(&blob)), digest);
        let mut tar = Vec::new();
        match l["media_type"].as_str().unwrap() {
            m if m.ends_with("+gzip") => {
                flate2::read::MultiGzDecoder::new(&blob[..])
                    .read_to_end(&mut tar)
                    .unwrap();
            }
            m if m.ends_with("+zstd") => {
                zstd::stream::read::Decoder::new(&blob[..])
                    .unwrap()
                    .read_to_end(&mut tar)
                    .unwrap();
            }
            _ => tar = blob,
        }
        assert_eq!(format!("sha256:{}", sha256_hex(&tar)), diff_id);
    }
}

#[test]
fn imported_images_are_accepted_by_skopeo_umoci_and_podman() {
    let k = Kiln::new();
    let src = k.path("src");
    std::fs::create_dir(&src).unwrap();
    rich_tree(&src);
    let layout = k.path("layout");
    let oci_archive = k.path("image.oci.tar");
    let docker_archive = k.path("image.docker.tar");
    let digest = k
        .ok(&[
            "import",
            src.to_str().unwrap(),
            "-t",
            "it/rich:1",
            "-o",
            &format!("oci:{}:v1", layout.display()),
            "-o",
            &format!("oci-archive:{}", oci_archive.display()),
            "-o",
            &format!("docker-archive:{}:it/rich:1", docker_archive.display()),
            "--cmd",
            "/bin/sh",
        ])
        .trim()
        .to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert!(check_layout_blobs(&layout) >= 3);
    assert!(check_layout_blobs(&k.root()) >= 3);
    check_layers(&k, "it/rich:1");

    if need("skopeo") {
        let oci_ref = format!("oci:{}:v1", layout.display());
        let v: serde_json::Value =
            serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &oci_ref]))).unwrap();
        assert_eq!(v["Digest"], digest.as_str());
        assert_eq!(v["Architecture"], "amd64");
        let v: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo")
            .args(["inspect", &format!("oci-archive:{}", oci_archive.display())])))
        .unwrap();
        assert_eq!(v["Digest"], digest.as_str());
        let v: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo").args([
            "inspect",
            &format!("docker-archive:{}", docker_archive.display()),
        ])))
        .unwrap();
        assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
        for (i, src) in [
            oci_ref.clone(),
            format!("oci-archive:{}", oci_archive.display()),
            format!("docker-archive:{}", docker_archive.display()),
        ]
        .iter()
        .enumerate()
        {
            let dest = format!("oci:{}:copy", k.path(&format!("skopeo-copy-{i}")).display());
            run(Command::new("skopeo").args(["copy", "--quiet", src, &dest]));
        }
    }

    if need("umoci") {
        let bundle = k.path("bundle");
        let mut c = Command::new("umoci");
        c.args(["unpack", "--image", &format!("{}:v1", layout.display())]);
        if !crate::support::is_root() {
            c.arg("--rootless");
        }
        run(c.arg(&bundle));
        let want = snapshot(&src);
        let got = snapshot(&bundle.join("rootfs"));
        let mut diffs = Vec::new();
        for (path, m) in &want {
            match got.get(path) {
                None => diffs.push(format!("missing {path}")),
                Some(g) if g != m => diffs.push(format!("{path}: want {m:?}\n   got {g:?}")),
                _ => {}
            }
        }
        for path in got.keys().filter(|p| !want.contains_key(*p)) {
            diffs.push(format!("extra {path}"));
        }
        assert!(
            diffs.is_empty(),
            "umoci unpack differs from the source tree:\n{}",
            diffs.join("\n")
        );
    }

    if need("podman") {
        let p = k.path("podman");
        let out = run(Command::new("podman").args([
            "--root",
            p.join("root").to_str().unwrap(),
            "--runroot",
            p.join("run").to_str().unwrap(),
            "--storage-driver",
            "vfs",
            "load",
            "-i",
            docker_archive.to_str().unwrap(),
        ]));
        assert!(out.contains("it/rich:1"), "{out}");
    }
}

#[test]
fn the_same_tree_gives_the_same_digests_whatever_the_path_mtimes_or_threads() {
    let k1 = Kiln::new();
    let k2 = Kiln::new();
    let (a, b) = (k1.path("a"), k2.path("elsewhere/b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    rich_tree(&a);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    rich_tree(&b); // a second later: different mtimes, clamped to the epoch
                   // Without an epoch, import and layer keep mtimes: they are part of the tree.
    let kept = k1.ok(&["import", a.to_str().unwrap(), "-t", "kept"]);
    let kept_b = k2.ok(&["import", b.to_str().unwrap(), "-t", "kept"]);
    assert_ne!(kept, kept_b, "mtimes were not kept without an epoch");
    let epoch = ["--source-date-epoch", "0"];
    let one = k1.ok(&[
        &["import", a.to_str().unwrap(), "-t", "x", "--threads", "1"][..],
        &epoch,
    ]
    .concat());
    let two = k2.ok(&[
        &["import", b.to_str().unwrap(), "-t", "x", "--threads", "2"][..],
        &epoch,
    ]
    .concat());
    assert_eq!(one, two, "manifest digests differ");
    let blobs = |k: &Kiln| {
        let mut v: Vec<String> = std::fs::read_dir(k.root().join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    k1.ok(&["rmi", "kept"]);
    k2.ok(&["rmi", "kept"]);
    k1.ok(&["store", "gc"]);
    k2.ok(&["store", "gc"]);
    assert_eq!(blobs(&k1), blobs(&k2));
    for c in ["gzip:6", "gzip:1", "zstd:3", "none"] {
        let d = |k: &Kiln, dir: &std::path::Path, t: &str| -> serde_json::Value {
            serde_json::from_str(&k.ok(&[
                "layer",
                dir.to_str().unwrap(),
                "--compression",
                c,
                "--threads",
                t,
                "--json",
                "--source-date-epoch",
                "0",
            ]))
            .unwrap()
        };
        let (x, y) = (d(&k1, &a, "1"), d(&k2, &b, "2"));
        assert_eq!(x["digest"], y["digest"], "{c}");
        assert_eq!(x["diff_id"], y["diff_id"], "{c}");
    }
    // The epoch is part of the input: another epoch, another digest.
    let later = k1.ok(&[
        "import",
        a.to_str().unwrap(),
        "-t",
        "y",
        "--source-date-epoch",
        "1700000000",
    ]);
    assert_ne!(one, later);
}

#[test]
fn copies_between_every_local_transport_keep_the_image() {
    let k = Kiln::new();
    let src = k.path("src");
    std::fs::create_dir(&src).unwrap();
    rich_tree(&src);
    let digest = k.ok(&[
        "import",
        src.to_str().unwrap(),
        "-t",
        "it/c:1",
        "--compression",
        "zstd",
    ]);
    let digest = digest.trim();
    let oci = format!("oci:{}:t", k.path("l").display());
    let arch = format!("oci-archive:{}", k.path("a.tar").display());
    let dock = format!("docker-archive:{}:it/c:1", k.path("d.tar").display());
    assert_eq!(k.ok(&["copy", "it/c:1", &oci]).trim(), digest);
    assert_eq!(k.ok(&["copy", &oci, &arch]).trim(), digest);
    assert_eq!(k.ok(&["copy", &arch, "it/c:2"]).trim(), digest);
    k.ok(&["copy", "it/c:2", &dock]);
    // docker-archive stores layers uncompressed: same diff_ids, new manifest.
    let back = k.ok(&["copy", &dock, "it/c:3"]);
    let a = inspect(&k, "it/c:1");
    let b = inspect(&k, "it/c:3");
    assert_ne!(back.trim(), digest);
    assert_eq!(a["layers"][0]["diff_id"], b["layers"][0]["diff_id"]);
    assert_eq!(a["config"]["rootfs"], b["config"]["rootfs"]);
    check_layers(&k, "it/c:3");
    let images = k.ok(&["images"]);
    for n in ["it/c:1", "it/c:2", "it/c:3"] {
        assert!(images.contains(n), "{images}");
    }
    k.ok(&["store", "fsck"]);
}
