//! The store stays consistent: fsck finds damage, a killed writer leaves nothing half-named, gc
//! keeps what is referenced, and bad input fails cleanly.
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{is_root, need, noise, rich_tree, Kiln};

fn blob_names(k: &Kiln) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(k.root().join("blobs/sha256"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn tmp_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn fsck_reports_a_flipped_byte_and_a_missing_blob_by_digest() {
    let k = Kiln::new();
    let src = k.path("src");
    std::fs::create_dir(&src).unwrap();
    rich_tree(&src);
    k.ok(&["import", src.to_str().unwrap(), "-t", "f:1"]);
    assert!(k.ok(&["store", "fsck"]).starts_with("ok:"));
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "f:1"])).unwrap();
    let layer = v["layers"][0]["digest"].as_str().unwrap().to_string();
    let config = v["config_digest"].as_str().unwrap().to_string();

    let path = k.root().join("blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let (code, err) = k.fails(&["store", "fsck"]);
    assert_eq!(code, 2);
    assert!(err.contains(&layer) && err.contains("corrupt"), "{err}");

    bytes[100] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    std::fs::remove_file(k.root().join("blobs/sha256").join(&config[7..])).unwrap();
    let (code, err) = k.fails(&["store", "fsck"]);
    assert_eq!(code, 2);
    assert!(err.contains(&config) && err.contains("missing"), "{err}");
}

#[test]
fn a_kiln_killed_while_writing_leaves_no_blob_that_fails_fsck() {
    let k = Kiln::new();
    let src = k.path("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..4 {
        std::fs::write(src.join(format!("noise{i}")), noise(i, 40 << 20)).unwrap();
    }
    k.ok(&["store", "fsck"]);
    // Kill at spread-out moments: before, during and after the layer is written.
    for (i, ms) in [5u64, 60, 250, 700, 1500, 3000].into_iter().enumerate() {
        let args: Vec<String> = if i % 2 == 0 {
            vec![
                "layer".into(),
                src.display().to_string(),
                "--compression".into(),
                "gzip:9".into(),
            ]
        } else {
            vec![
                "import".into(),
                src.display().to_string(),
                "-t".into(),
                format!("k:{i}"),
            ]
        };
        let mut child = k
            .cmd()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let out = k.cmd().args(["store", "fsck"]).output().unwrap();
        assert!(
            out.status.success(),
            "fsck after a kill at {ms} ms: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // gc removes what the killed processes left in tmp/.
    k.ok(&["store", "gc"]);
    assert!(tmp_files(&k.root().join("tmp")).is_empty());
    k.ok(&["store", "fsck"]);
}

#[test]
fn gc_keeps_named_images_and_removes_the_rest() {
    let k = Kiln::new();
    let src = k.path("src");
    std::fs::create_dir(&src).unwrap();
    rich_tree(&src);
    k.ok(&["import", src.to_str().unwrap(), "-t", "keep:1"]);
    let kept = blob_names(&k);
    let stray = serde_json::from_str::<serde_json::Value>(&k.ok(&[
        "layer",
        src.to_str().unwrap(),
        "--compression",
        "zstd",
        "--json",
    ]))
    .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(blob_names(&k).contains(&stray[7..].to_string()));
    let report: serde_json::Value =
        serde_json::from_str(&k.ok(&["store", "gc", "--format", "json"])).unwrap();
    assert_eq!(report["blobs_removed"], 1);
    assert_eq!(blob_names(&k), kept);
    k.ok(&["store", "fsck"]);
    k.ok(&["inspect", "keep:1"]);
}

#[test]
fn bad_input_names_the_path_exits_2_and_leaves_nothing_behind() {
    let k = Kiln::new();
    let good = k.path("good");
    std::fs::create_dir(&good).unwrap();
    std::fs::write(good.join("f"), b"x").unwrap();
    k.ok(&["store", "fsck"]);
    let before = blob_names(&k);
    let check = |args: &[&str], needle: &str| {
        let (code, err) = k.fails(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: error does not name `{needle}`:\n{err}"
        );
        assert_eq!(blob_names(&k), before, "{args:?} left blobs");
        assert!(
            tmp_files(&k.root().join("tmp")).is_empty(),
            "{args:?} left temp files"
        );
    };
    let missing = k.path("does-not-exist");
    check(
        &["import", missing.to_str().unwrap(), "-t", "x"],
        missing.to_str().unwrap(),
    );
    check(
        &["layer", missing.to_str().unwrap()],
        missing.to_str().unwrap(),
    );

    let with_socket = k.path("sock");
    std::fs::create_dir(&with_socket).unwrap();
    let sock = with_socket.join("s.sock");
    let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    check(
        &["import", with_socket.to_str().unwrap(), "-t", "x"],
        sock.to_str().unwrap(),
    );

    let not_tar = k.path("not-a.tar");
    std::fs::write(&not_tar, b"this is not a tar archive at all").unwrap();
    check(
        &["import", not_tar.to_str().unwrap(), "-t", "x"],
        not_tar.to_str().unwrap(),
    );

    let escaping = k.path("escape.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&escaping).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../evil.x");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        b.finish().unwrap();
    }
    check(
        &["import", escaping.to_str().unwrap(), "-t", "x"],
        "../evil.x",
    );

    // Output paths that exist and are not what they should be.
    k.ok(&["import", good.to_str().unwrap(), "-t", "good:1"]);
    let before_outputs = blob_names(&k);
    let dir_in_the_way = k.path("in-the-way");
    std::fs::create_dir(&dir_in_the_way).unwrap();
    let (code, err) = k.fails(&[
        "copy",
        "good:1",
        &format!("oci-archive:{}", dir_in_the_way.display()),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains(dir_in_the_way.to_str().unwrap()), "{err}");
    let not_layout = k.path("not-layout");
    std::fs::create_dir(&not_layout).unwrap();
    std::fs::write(not_layout.join("precious.txt"), b"keep me").unwrap();
    let (code, err) = k.fails(&["copy", "good:1", &format!("oci:{}", not_layout.display())]);
    assert_eq!(code, 2);
    assert!(err.contains(not_layout.to_str().unwrap()), "{err}");
    assert_eq!(tmp_files(&not_layout), vec!["precious.txt".to_string()]);
    let file_in_the_way = k.path("file-in-the-way");
    std::fs::write(&file_in_the_way, b"x").unwrap();
    let (code, err) = k.fails(&[
        "copy",
        "good:1",
        &format!("oci:{}", file_in_the_way.display()),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains(file_in_the_way.to_str().unwrap()), "{err}");
    assert_eq!(blob_names(&k), before_outputs);
    // No half-written archive next to the destination either.
    let leftovers: Vec<String> = tmp_files(k.dir.path())
        .into_iter()
        .filter(|n| n.starts_with(".kiln-archive-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // An unreadable file, as an unprivileged user (root reads everything).
    if is_root() && need("setpriv") {
        let shared = tempfile::Builder::new()
            .prefix("kiln-unreadable-")
            .tempdir_in("/tmp")
            .unwrap();
        let tree = shared.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        let secret = tree.join("secret");
        std::fs::write(&secret, b"no").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = shared.path().join("store");
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .args([
                "--root",
                root.to_str().unwrap(),
                "import",
                tree.to_str().unwrap(),
                "-t",
                "x",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(secret.to_str().unwrap()), "{err}");
        assert!(tmp_files(&root.join("tmp")).is_empty());
    }
}
