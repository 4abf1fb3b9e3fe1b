//! Fuzz target: arbitrary bytes (a tar, or a gzip stream of one when the first byte is odd) →
//! `layer::apply_layer` twice into a root that already holds symlinks pointing out of it, and
//! `FsIndex::apply_tar` (the metadata reader COPY and WORKDIR use). No input may panic, hang,
//! allocate without bound, or write anything outside the root: a sentinel directory next to it
//! must stay exactly as it was.
#![no_main]

use std::io::Read;
use std::path::Path;
use std::sync::Once;

use kiln::builder::fsindex::FsIndex;
use kiln::layer::{apply_layer, UnpackOptions};
use libfuzzer_sys::fuzz_target;

static INIT: Once = Once::new();

/// As root the unpacker would create real device nodes; drop CAP_MKNOD so the fuzzer exercises
/// the unprivileged path (devices skipped) and never leaves a node for the host's disk around.
fn drop_mknod() {
    use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
    if let Ok(mut caps) = capabilities(None) {
        caps.effective.remove(CapabilitySet::MKNOD);
        caps.permitted.remove(CapabilitySet::MKNOD);
        let _ = set_capabilities(None, caps);
    }
}

fn reader(data: &[u8]) -> Box<dyn Read + '_> {
    match data.split_first() {
        Some((m, rest)) if m & 1 == 1 => Box::new(flate2::read::MultiGzDecoder::new(rest)),
        Some((_, rest)) => Box::new(rest),
        None => Box::new(data),
    }
}

/// Makes every directory below `dir` writable again so the temp dir can be removed.
fn unlock(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            let p = e.path();
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700));
            unlock(&p);
        }
    }
}

fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let data = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), data)
        })
        .collect();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    INIT.call_once(drop_mknod);
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    let root = tmp.path().join("root");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("sentinel"), b"keep").unwrap();
    std::fs::create_dir(&root).unwrap();
    // Ready-made escape hatches a layer may try to write through.
    std::os::unix::fs::symlink("../outside", root.join("up")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
    std::os::unix::fs::symlink("../outside/sentinel", root.join("file")).unwrap();
    let before = listing(&outside);

    let opts = UnpackOptions { ownership: false };
    if apply_layer(reader(data), &root, &opts).is_ok() {
        // The same layer again, over what it made: replacements, whiteouts of existing paths.
        let _ = apply_layer(reader(data), &root, &opts);
    }
    let _ = FsIndex::default().apply_tar(reader(data));

    unlock(&root);
    assert_eq!(
        listing(&outside),
        before,
        "the layer wrote outside the root"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        2,
        "the layer created something next to the root"
    );
});
