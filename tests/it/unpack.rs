//! Applying layers: a round trip reproduces the tree; whiteouts and opaque directories follow the
//! OCI image spec; members that try to leave the root are refused and nothing outside is touched.
use std::io::Write;
use std::path::Path;

use kiln::layer::{
    apply_layer, Compression, Entry, LayerOptions, LayerWriter, UnpackOptions, WalkOptions,
};

use crate::support::{is_root, rich_tree, snapshot, Kiln};

fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut w = LayerWriter::new(
        Vec::new(),
        LayerOptions {
            compression: Compression::None,
            threads: 1,
            epoch: 0,
        },
    )
    .unwrap();
    for e in entries {
        w.append(e).unwrap();
    }
    w.finish().unwrap().0
}

fn opts() -> UnpackOptions {
    UnpackOptions {
        ownership: is_root(),
    }
}

#[test]
fn a_written_layer_applies_back_to_the_same_tree() {
    let k = Kiln::new();
    let (src, dst) = (k.path("src"), k.path("dst"));
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&dst).unwrap();
    rich_tree(&src);
    let mut w = LayerWriter::new(
        Vec::new(),
        LayerOptions {
            compression: Compression::None,
            threads: 1,
            epoch: 0,
        },
    )
    .unwrap();
    w.append_dir(&src, &WalkOptions::default()).unwrap();
    let (tar, _) = w.finish().unwrap();
    let r = apply_layer(&tar[..], &dst, &opts()).unwrap();
    assert!(r.skipped_devices.is_empty() || !is_root());
    let (a, b) = (snapshot(&src), snapshot(&dst));
    for (p, m) in &a {
        assert_eq!(b.get(p), Some(m), "{p}");
    }
    assert_eq!(a.len(), b.len());
}

#[test]
fn whiteouts_and_opaque_directories_follow_the_spec() {
    let k = Kiln::new();
    let root = k.path("root");
    std::fs::create_dir(&root).unwrap();
    let lower = tar_of(&[
        Entry::dir("a", 0o755),
        Entry::file("a/keep", 0o644, b"k".to_vec()),
        Entry::file("a/gone", 0o644, b"g".to_vec()),
        Entry::dir("o", 0o755),
        Entry::file("o/old1", 0o644, b"1".to_vec()),
        Entry::dir("o/olddir", 0o755),
        Entry::file("o/olddir/x", 0o644, b"x".to_vec()),
        Entry::dir("d", 0o755),
        Entry::file("d/inner", 0o644, b"i".to_vec()),
        Entry::file("f", 0o644, b"file".to_vec()),
    ]);
    apply_layer(&lower[..], &root, &opts()).unwrap();
    let upper = tar_of(&[
        Entry::whiteout(b"a/gone"),
        Entry::dir("o", 0o750),
        Entry::file("o/new", 0o644, b"n".to_vec()),
        Entry::opaque_whiteout(b"o"),
        Entry::whiteout(b"d"),
        Entry::dir("f", 0o755), // a file replaced by a directory
        Entry::file("f/child", 0o644, b"c".to_vec()),
    ]);
    apply_layer(&upper[..], &root, &opts()).unwrap();
    let s = snapshot(&root);
    let names: Vec<&str> = s.keys().map(String::as_str).collect();
    assert_eq!(names, ["a", "a/keep", "f", "f/child", "o", "o/new"]);
    assert_eq!(s["o"].mode, 0o750);
    // …and back: a directory replaced by a file.
    let again = tar_of(&[Entry::file("f", 0o600, b"file again".to_vec())]);
    apply_layer(&again[..], &root, &opts()).unwrap();
    assert_eq!(std::fs::read(root.join("f")).unwrap(), b"file again");
}

/// A raw tar member, bypassing every writer's validation.
fn raw_member(out: &mut Vec<u8>, name: &[u8], kind: u8, link: &[u8], data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.as_ustar_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.as_ustar_mut().unwrap().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
}

fn outside_untouched(outside: &Path) {
    let names: Vec<String> = std::fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["precious"],
        "something was written outside the root"
    );
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep");
}

#[test]
fn members_that_try_to_leave_the_root_cannot() {
    let k = Kiln::new();
    let outside = k.path("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep").unwrap();
    let out_abs = outside.to_str().unwrap().as_bytes().to_vec();

    // `..` in a path is refused.
    let root = k.path("r1");
    std::fs::create_dir(&root).unwrap();
    let mut t = Vec::new();
    raw_member(&mut t, b"../outside/evil", b'0', b"", b"x");
    t.extend_from_slice(&[0u8; 1024]);
    let e = apply_layer(&t[..], &root, &opts()).unwrap_err();
    assert!(e.to_string().contains("../outside/evil"), "{e}");
    outside_untouched(&outside);

    // A symlink pointing outside, then a write through it: lands inside the root.
    for (i, link) in [out_abs.clone(), b"../../outside".to_vec()]
        .into_iter()
        .enumerate()
    {
        let root = k.path(&format!("r2-{i}"));
        std::fs::create_dir(&root).unwrap();
        let mut t = Vec::new();
        raw_member(&mut t, b"esc", b'2', &link, b"");
        raw_member(&mut t, b"esc/evil", b'0', b"", b"x");
        raw_member(&mut t, b"esc/precious", b'0', b"", b"overwritten");
        t.extend_from_slice(&[0u8; 1024]);
        let _ = apply_layer(&t[..], &root, &opts());
        outside_untouched(&outside);
    }

    // A hard link to a file outside the root is refused (its target resolves inside).
    let root = k.path("r3");
    std::fs::create_dir(&root).unwrap();
    let mut t = Vec::new();
    let mut target = out_abs.clone();
    target.extend_from_slice(b"/precious");
    raw_member(&mut t, b"hl", b'1', &target, b"");
    t.extend_from_slice(&[0u8; 1024]);
    let e = apply_layer(&t[..], &root, &opts()).unwrap_err();
    assert!(e.to_string().contains("hl"), "{e}");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(outside.join("precious"))
        .unwrap();
    f.flush().unwrap();
    outside_untouched(&outside);

    // Whiteouts naming `..` or the root are refused.
    for name in [&b"a/.wh..."[..], b".wh.."] {
        let root = k.path(&format!("r4-{}", name.len()));
        std::fs::create_dir(&root).unwrap();
        let mut t = Vec::new();
        raw_member(&mut t, name, b'0', b"", b"");
        t.extend_from_slice(&[0u8; 1024]);
        assert!(
            apply_layer(&t[..], &root, &opts()).is_err(),
            "{}",
            String::from_utf8_lossy(name)
        );
        outside_untouched(&outside);
    }
}
