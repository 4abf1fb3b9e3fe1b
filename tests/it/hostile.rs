//! Hostile layers: generated malicious tar streams applied with `kiln::layer::apply_layer` and,
//! for a few, through `kiln build` (a base image in an `oci:` layout, unpacked for
//! `COPY --from`). Each test keeps a sentinel directory next to the root and checks that nothing
//! in it (nor its own mode and mtime) changed, and that every layer is either applied as the OCI
//! image spec says or refused with an error naming the member.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln::layer::{apply_layer, UnpackOptions, MAX_SPECIAL_MEMBER};

use crate::support::{is_root, sha256_hex, snapshot, Kiln, Meta};

// ---------------------------------------------------------------------------------------------
// Raw tar streams, bypassing every writer's validation.

#[derive(Default)]
struct Tar(Vec<u8>);

fn header(name: &[u8], kind: u8, link: &[u8], size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    {
        let u = h.as_ustar_mut().unwrap();
        u.name[..name.len()].copy_from_slice(name);
        u.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    h.set_mtime(1_000_000);
    h.set_cksum();
    h
}

impl Tar {
    fn raw(&mut self, h: &tar::Header, data: &[u8]) -> &mut Self {
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        self.0
            .extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
        self
    }
    fn member(&mut self, name: &str, kind: u8, link: &str, data: &[u8]) -> &mut Self {
        let h = header(
            name.as_bytes(),
            kind,
            link.as_bytes(),
            data.len() as u64,
            0o644,
        );
        self.raw(&h, data)
    }
    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.member(name, b'0', "", data)
    }
    fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let h = header(name.as_bytes(), b'5', b"", 0, mode);
        self.raw(&h, b"")
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.member(name, b'2', target, b"")
    }
    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.member(name, b'1', target, b"")
    }
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let base = k.len() + v.len() + 3;
            let mut len = base + 1;
            while len != base + len.to_string().len() {
                len = base + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let h = header(b"PaxHeaders/x", b'x', b"", body.len() as u64, 0o644);
        self.raw(&h, &body)
    }
    fn end(&mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        std::mem::take(&mut self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// A root to unpack into, and a sentinel directory next to it.

struct Scene {
    k: Kiln,
    n: usize,
}

struct Outside {
    dir: PathBuf,
    tree: BTreeMap<String, Meta>,
    mode: u32,
    mtime: i64,
}

impl Outside {
    fn new(dir: PathBuf) -> Outside {
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("precious"), b"keep").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/deep"), b"deep").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o751)).unwrap();
        let md = std::fs::metadata(&dir).unwrap();
        Outside {
            tree: snapshot(&dir),
            mode: md.mode() & 0o7777,
            mtime: md.mtime(),
            dir,
        }
    }

    fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    fn untouched(&self, what: &str) {
        assert_eq!(
            snapshot(&self.dir),
            self.tree,
            "{what}: something outside the root changed"
        );
        let md = std::fs::metadata(&self.dir).unwrap();
        assert_eq!(
            (md.mode() & 0o7777, md.mtime()),
            (self.mode, self.mtime),
            "{what}: the mode or mtime of the directory next to the root changed"
        );
    }
}

impl Scene {
    fn new() -> (Scene, Outside) {
        let k = Kiln::new();
        let outside = Outside::new(k.path("outside"));
        (Scene { k, n: 0 }, outside)
    }

    /// A fresh, empty root.
    fn root(&mut self) -> PathBuf {
        self.n += 1;
        let r = self.k.path(&format!("root{}", self.n));
        std::fs::create_dir(&r).unwrap();
        r
    }
}

fn opts() -> UnpackOptions {
    UnpackOptions {
        ownership: is_root(),
    }
}

fn apply(tar: &[u8], root: &Path) -> Result<kiln::layer::UnpackReport, String> {
    apply_layer(tar, root, &opts()).map_err(|e| format!("{:#}", anyhow::Error::from(e)))
}

/// Applying `tar` fails with a message naming `member`.
fn refused(tar: &[u8], root: &Path, member: &str) -> String {
    let e = apply(tar, root).expect_err("the layer should have been refused");
    assert!(
        e.contains(member),
        "the error does not name `{member}`: {e}"
    );
    e
}

fn lstat(p: &Path) -> Option<std::fs::Metadata> {
    std::fs::symlink_metadata(p).ok()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn dotdot_and_absolute_member_paths_stay_in_the_root_or_are_refused() {
    let (mut s, out) = Scene::new();
    for name in [
        "../outside/evil",
        "a/../../outside/evil",
        "../../../../../../tmp/evil",
    ] {
        let root = s.root();
        let t = Tar::default().file(name, b"x").end();
        let e = refused(&t, &root, name);
        assert!(e.contains("climbs out of the root"), "{e}");
        out.untouched(name);
    }
    // Absolute paths are relative to the root (what every tar-based unpacker does).
    let root = s.root();
    let abs = format!("{}/precious", out.path());
    let t = Tar::default()
        .file(&abs, b"not outside")
        .file("/etc/passwd", b"root:x:0:0::/:/bin/sh\n")
        .file("./a/./b/../c", b"c")
        .end();
    apply(&t, &root).unwrap();
    out.untouched("absolute member paths");
    assert_eq!(
        std::fs::read(root.join(abs.trim_start_matches('/'))).unwrap(),
        b"not outside"
    );
    assert_eq!(
        std::fs::read(root.join("etc/passwd")).unwrap(),
        b"root:x:0:0::/:/bin/sh\n"
    );
    assert_eq!(std::fs::read(root.join("a/c")).unwrap(), b"c");
}

/// Adds the members that try to write through the link `esc`.
type WriteThrough = Box<dyn Fn(&mut Tar)>;

#[test]
fn symlinks_pointing_out_are_never_followed_out_when_written_through() {
    let (mut s, out) = Scene::new();
    let abs = out.path().to_string();
    // Every way to point out: absolute, relative, a chain of links, `..` past the root.
    let links: Vec<Vec<(&str, String)>> = vec![
        vec![("esc", abs.clone())],
        vec![("esc", "../outside".into())],
        vec![("esc", "../../../../../../..".to_string() + &abs)],
        vec![("l2", "../outside".into()), ("esc", "l2".into())],
        vec![
            ("l3", abs.clone()),
            ("l2", "./l3/.".into()),
            ("esc", "l2".into()),
        ],
        vec![("d/l", "../../outside".into()), ("esc", "d/l".into())],
    ];
    for chain in &links {
        let what = format!("{chain:?}");
        let through: [(&str, WriteThrough); 6] = [
            (
                "a file under the link",
                Box::new(|t| {
                    t.file("esc/precious", b"overwritten");
                }),
            ),
            (
                "a new file under the link",
                Box::new(|t| {
                    t.file("esc/evil", b"x");
                }),
            ),
            (
                "a directory under the link",
                Box::new(|t| {
                    t.dir("esc/sub/", 0o777).dir("esc/newdir/", 0o777);
                }),
            ),
            (
                "a hard link under the link",
                Box::new(|t| {
                    t.file("inside", b"in").hardlink("esc/hl", "inside");
                }),
            ),
            (
                "a symlink under the link",
                Box::new(|t| {
                    t.symlink("esc/sl", "/etc/shadow");
                }),
            ),
            (
                "a whiteout under the link",
                Box::new(|t| {
                    t.file("esc/.wh.precious", b"")
                        .file("esc/sub/.wh..wh..opq", b"");
                }),
            ),
        ];
        for (how, add) in through.iter() {
            let root = s.root();
            let mut t = Tar::default();
            if chain.iter().any(|(n, _)| n.starts_with("d/")) {
                t.dir("d/", 0o755);
            }
            for (name, target) in chain {
                t.symlink(name, target);
            }
            add(&mut t);
            let t = t.end();
            // Applied inside the root (the link resolved as in a chroot) or refused, naming
            // the member; never outside.
            if let Err(e) = apply(&t, &root) {
                assert!(e.contains("esc/"), "{what} {how}: {e}");
            }
            out.untouched(&format!("{what}: {how}"));
            // The links themselves are kept as written.
            let target = std::fs::read_link(root.join("esc")).unwrap();
            assert_eq!(target.to_str().unwrap(), chain.last().unwrap().1, "{what}");
        }
    }
}

#[test]
fn a_link_to_the_root_itself_is_written_through_inside_the_root() {
    let (mut s, out) = Scene::new();
    for target in ["/", "..", "../../..", "."] {
        let root = s.root();
        let t = Tar::default()
            .symlink("top", target)
            .file("top/etc/hosts", b"127.0.0.1 evil\n")
            .dir("top/sub/", 0o700)
            .end();
        apply(&t, &root).unwrap();
        out.untouched(target);
        assert_eq!(
            std::fs::read(root.join("etc/hosts")).unwrap(),
            b"127.0.0.1 evil\n",
            "{target}"
        );
        assert!(root.join("sub").is_dir());
        assert_eq!(
            std::fs::symlink_metadata(root.join("sub")).unwrap().mode() & 0o7777,
            0o700
        );
    }
}

/// Regression: directory modes and times were applied at the end with `chmodat` on the path,
/// which follows a symlink that a later member put in the directory's place: a layer could chmod
/// any directory on the host (`/` included) to any mode.
#[test]
fn a_directory_replaced_by_a_symlink_later_in_the_layer_does_not_chmod_its_target() {
    let (mut s, out) = Scene::new();
    for target in [out.path().to_string(), "../outside".into()] {
        let root = s.root();
        let t = Tar::default()
            .dir("d/", 0o777)
            .file("d/f", b"f")
            .symlink("d", &target)
            .dir("e/", 0o700)
            .file("e", b"now a file")
            .end();
        apply(&t, &root).unwrap();
        out.untouched(&target);
        assert_eq!(
            std::fs::read_link(root.join("d")).unwrap().to_str(),
            Some(target.as_str())
        );
        let e = std::fs::symlink_metadata(root.join("e")).unwrap();
        assert!(e.is_file());
        assert_eq!(
            e.mode() & 0o7777,
            0o644,
            "the directory's mode went to the file"
        );
    }
    // A directory removed later in the same layer is not recreated for its metadata.
    let root = s.root();
    let t = Tar::default()
        .dir("gone/", 0o700)
        .file("gone/x", b"x")
        .file(".wh.gone", b"")
        .end();
    apply(&t, &root).unwrap();
    assert!(lstat(&root.join("gone")).is_none());
}

#[test]
fn hard_links_to_files_outside_the_root_are_refused() {
    let (mut s, out) = Scene::new();
    let abs = format!("{}/precious", out.path());
    for (target, why) in [
        (abs.as_str(), "hard link target"),
        ("../outside/precious", "climbs out of the root"),
        ("a/../../outside/precious", "climbs out of the root"),
    ] {
        let root = s.root();
        let t = Tar::default().hardlink("hl", target).end();
        let e = refused(&t, &root, "hl");
        assert!(e.contains(why), "{target}: {e}");
        out.untouched(target);
    }
    // Through a symlink in the root: the target resolves inside the root, so it is missing.
    for link in [out.path().to_string(), "../outside".into()] {
        let root = s.root();
        let t = Tar::default()
            .symlink("esc", &link)
            .hardlink("hl", "esc/precious")
            .end();
        refused(&t, &root, "hl");
        out.untouched(&link);
    }
    // A hard link to a symlink that points out links the symlink itself, not what it names.
    let root = s.root();
    let t = Tar::default()
        .symlink("sl", &abs)
        .hardlink("hl", "sl")
        .end();
    apply(&t, &root).unwrap();
    let hl = std::fs::symlink_metadata(root.join("hl")).unwrap();
    assert!(hl.file_type().is_symlink());
    assert_ne!(hl.ino(), std::fs::metadata(&abs).unwrap().ino());
    // …and a file written over that link replaces it.
    let t = Tar::default().file("hl", b"replaced").end();
    apply(&t, &root).unwrap();
    out.untouched("hard link to a symlink");
    // A hard link to a directory, or to the root, is refused.
    let root = s.root();
    let t = Tar::default().dir("d/", 0o755).hardlink("hl", "d").end();
    assert!(refused(&t, &root, "hl").contains("directory"));
    let t = Tar::default().hardlink("hl2", "/").end();
    refused(&t, &root, "hl2");
}

#[test]
fn whiteouts_naming_dot_dotdot_or_the_root_are_refused() {
    let (mut s, out) = Scene::new();
    for name in [
        ".wh..", ".wh...", "a/.wh..", "a/.wh...", ".wh.", "a/b/.wh.", "/.wh..",
    ] {
        let root = s.root();
        std::fs::write(root.join("keep"), b"k").unwrap();
        let t = Tar::default().file(name, b"").end();
        let e = refused(&t, &root, name);
        assert!(e.contains("whiteout of an invalid name"), "{name}: {e}");
        assert_eq!(std::fs::read(root.join("keep")).unwrap(), b"k", "{name}");
        out.untouched(name);
    }
    for name in ["../.wh.outside", "../outside/.wh.precious", "a/../../.wh.x"] {
        let root = s.root();
        let t = Tar::default().file(name, b"").end();
        refused(&t, &root, name);
        out.untouched(name);
    }
    // An opaque marker at the root empties what the layers below put there, nothing else.
    let root = s.root();
    std::fs::write(root.join("lower"), b"l").unwrap();
    std::os::unix::fs::symlink(out.path(), root.join("esc")).unwrap();
    let t = Tar::default()
        .file("new", b"n")
        .file(".wh..wh..opq", b"")
        .file("esc/.wh.precious", b"")
        .end();
    let _ = apply(&t, &root);
    out.untouched("opaque root");
    assert!(lstat(&root.join("lower")).is_none());
    assert!(lstat(&root.join("new")).is_some());
}

#[test]
fn device_nodes_are_created_by_root_and_skipped_without_the_privilege() {
    let t = Tar::default()
        .member("dev/null2", b'3', "", b"")
        .member("dev/loop9", b'4', "", b"")
        .member("dev/fifo", b'6', "", b"")
        .end();
    // Major/minor numbers: 1:3 (null) and 7:9, patched into the headers.
    let mut t = t;
    for (i, (major, minor)) in [(0usize, (1u32, 3u32)), (1, (7, 9))] {
        let h = tar::Header::from_byte_slice(&t[i * 512..(i + 1) * 512]).clone();
        let mut h = h;
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        t[i * 512..(i + 1) * 512].copy_from_slice(h.as_bytes());
    }
    let (mut s, out) = Scene::new();
    // kiln's policy: device nodes are created when the caller may create them (root, or the
    // capability CAP_MKNOD), as Docker and containerd do; otherwise they are skipped and listed.
    if is_root() {
        let root = s.root();
        let r = apply(&t, &root).unwrap();
        assert!(r.skipped_devices.is_empty(), "{:?}", r.skipped_devices);
        let md = std::fs::symlink_metadata(root.join("dev/null2")).unwrap();
        assert!(md.file_type().is_char_device());
        assert_eq!(md.rdev(), rustix::fs::makedev(1, 3));
        let md = std::fs::symlink_metadata(root.join("dev/loop9")).unwrap();
        assert!(md.file_type().is_block_device());
        assert_eq!(md.rdev(), rustix::fs::makedev(7, 9));
    }
    // Without CAP_MKNOD (the capability sets are per thread): skipped, the fifo still made.
    let root = s.root();
    let t2 = t.clone();
    let r = std::thread::spawn(move || {
        use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
        let mut caps = capabilities(None).unwrap();
        caps.effective.remove(CapabilitySet::MKNOD);
        caps.permitted.remove(CapabilitySet::MKNOD);
        set_capabilities(None, caps).unwrap();
        apply(&t2, &root).map(|r| (r, root))
    })
    .join()
    .unwrap();
    let (r, root) = r.unwrap();
    assert_eq!(r.skipped_devices, ["dev/null2", "dev/loop9"]);
    assert!(lstat(&root.join("dev/null2")).is_none());
    assert!(lstat(&root.join("dev/loop9")).is_none());
    assert!(std::fs::symlink_metadata(root.join("dev/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    out.untouched("devices");
}

#[test]
fn duplicate_members_later_wins_and_types_replace_each_other() {
    let (mut s, out) = Scene::new();
    let root = s.root();
    let t = Tar::default()
        .file("f", b"one")
        .file("f", b"two")
        .dir("d/", 0o700)
        .dir("d/", 0o750)
        .symlink("l", "f")
        .file("l", b"a file now")
        // a file replaced by a directory and back, in one layer
        .file("x", b"file")
        .dir("x/", 0o755)
        .file("x/y", b"child")
        .file("x", b"file again")
        // a directory replaced by a file and back
        .dir("z/", 0o755)
        .file("z/old", b"old")
        .file("z", b"z")
        .dir("z/", 0o711)
        .end();
    apply(&t, &root).unwrap();
    let snap = snapshot(&root);
    let names: Vec<&str> = snap.keys().map(String::as_str).collect();
    assert_eq!(names, ["d", "f", "l", "x", "z"]);
    assert_eq!(std::fs::read(root.join("f")).unwrap(), b"two");
    assert_eq!(snap["d"].mode, 0o750);
    assert_eq!((snap["l"].kind, snap["x"].kind), ("file", "file"));
    assert_eq!(std::fs::read(root.join("x")).unwrap(), b"file again");
    assert_eq!((snap["z"].kind, snap["z"].mode), ("dir", 0o711));
    out.untouched("duplicates");
}

#[test]
fn repeated_members_are_recorded_once() {
    let (mut s, _out) = Scene::new();
    let root = s.root();
    let mut t = Tar::default();
    for i in 0..2000u32 {
        let mut h = header(b"d/", b'5', b"", 0, 0o755);
        h.set_uid(1000 + u64::from(i % 3));
        h.set_gid(1000);
        h.set_cksum();
        t.raw(&h, b"");
    }
    let t = t.end();
    let r = apply_layer(&t[..], &root, &UnpackOptions { ownership: false }).unwrap();
    assert_eq!(r.entries, 2000);
    // One owner record for the path, the last member's.
    assert_eq!(r.owners, [(b"d".to_vec(), 1000 + 1999 % 3, 1000)]);
}

#[test]
fn huge_pax_headers_and_long_names_are_refused_before_they_are_read() {
    let (mut s, out) = Scene::new();
    // 10 MiB of path in a PAX record, and 10 MiB of GNU long name: refused, naming the member.
    let root = s.root();
    let long = vec![b'a'; 10 << 20];
    let t = Tar::default().pax(&[("path", &long)]).file("x", b"x").end();
    let e = refused(&t, &root, "PaxHeaders/x");
    assert!(e.contains("PAX extended header"), "{e}");
    assert!(e.contains(&MAX_SPECIAL_MEMBER.to_string()), "{e}");
    let root = s.root();
    let mut t = Tar::default();
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_size(long.len() as u64);
    h.set_cksum();
    t.raw(&h, &long).file("x", b"x");
    let e = refused(&t.end(), &root, "@LongLink");
    assert!(e.contains("GNU long name"), "{e}");

    // A PAX header claiming 64 GiB in a gzip stream: refused after its header block, without
    // reading (let alone holding) its data.
    let mut h = header(b"PaxHeaders/bomb", b'x', b"", 64 << 30, 0o644);
    h.set_cksum();
    let gz = gzip_with_zeros(h.as_bytes(), 1 << 30, 4);
    let counted = Counting::new(flate2::read::MultiGzDecoder::new(&gz[..]));
    let read = counted.read.clone();
    let root = s.root();
    let e = apply_layer(counted, &root, &opts())
        .unwrap_err()
        .to_string();
    assert!(e.contains("PaxHeaders/bomb"), "{e}");
    assert!(
        read.load(std::sync::atomic::Ordering::Relaxed) < 1 << 20,
        "the guard read on"
    );

    // Under the limit, a long PAX path is fine (and applied).
    let root = s.root();
    let name = format!("{}/{}", "d".repeat(200), "f".repeat(200));
    let t = Tar::default()
        .pax(&[("path", name.as_bytes())])
        .file("placeholder", b"long")
        .end();
    apply(&t, &root).unwrap();
    assert_eq!(std::fs::read(root.join(&name)).unwrap(), b"long");
    out.untouched("pax");
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R> Counting<R> {
    fn new(inner: R) -> Self {
        Counting {
            inner,
            read: Default::default(),
        }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// A gzip stream of `head` then `members × chunk` zero bytes (one compressed member repeated,
/// so a stream of gigabytes costs a few kilobytes to make).
fn gzip_with_zeros(head: &[u8], chunk: usize, members: usize) -> Vec<u8> {
    let gz = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let mut out = gz(head);
    let zeros = gz(&vec![0u8; chunk]);
    for _ in 0..members {
        out.extend_from_slice(&zeros);
    }
    out
}

#[test]
fn a_decompression_bomb_of_zeros_unpacks_to_holes() {
    let (mut s, out) = Scene::new();
    let root = s.root();
    // 4 GiB of zeros in 4 MiB of gzip: one file of 4 GiB - 1 MiB, then the zero end blocks.
    let size: u64 = (4 << 30) - (1 << 20);
    let h = header(b"zeros", b'0', b"", size, 0o644);
    let gz = gzip_with_zeros(h.as_bytes(), 64 << 20, 64);
    assert!(gz.len() < 8 << 20, "{}", gz.len());
    let r = apply_layer(flate2::read::MultiGzDecoder::new(&gz[..]), &root, &opts()).unwrap();
    assert_eq!(r.entries, 1);
    let md = std::fs::metadata(root.join("zeros")).unwrap();
    assert_eq!(md.len(), size);
    assert!(
        md.blocks() * 512 < 16 << 20,
        "the zeros took {} bytes of disk",
        md.blocks() * 512
    );
    out.untouched("bomb");
}

#[test]
fn a_tar_that_ends_early_is_an_error_naming_where_and_leaves_no_partial_file() {
    let (mut s, out) = Scene::new();
    let full = Tar::default()
        .file("a", b"alpha")
        .file("b", &vec![b'b'; 3000])
        .file("c", b"gamma")
        .end();
    // In a header: after `b` (whose data ends at 512 + 512 + 512 + 3072).
    let cut = 512 + 512 + 512 + 3072 + 100;
    let root = s.root();
    let e = refused(&full[..cut], &root, "after member `b`");
    assert!(e.contains("invalid layer tar stream"), "{e}");
    // In the data of `b`: an error naming it, and no short `b` left behind.
    let root = s.root();
    let e = refused(&full[..512 + 512 + 512 + 1000], &root, "`b`");
    assert!(e.contains("ends inside this file"), "{e}");
    assert!(lstat(&root.join("b")).is_none());
    assert_eq!(std::fs::read(root.join("a")).unwrap(), b"alpha");
    // A gzip stream cut short.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&full).unwrap();
    let gz = gz.finish().unwrap();
    let root = s.root();
    assert!(apply_layer(
        flate2::read::MultiGzDecoder::new(&gz[..gz.len() / 2]),
        &root,
        &opts()
    )
    .is_err());
    // A header with a bad checksum.
    let mut bad = full.clone();
    bad[512 + 512] ^= 0x01;
    let root = s.root();
    refused(&bad, &root, "after member `a`");
    out.untouched("truncated");
}

#[test]
fn unknown_member_types_are_refused_and_global_pax_headers_skipped() {
    let (mut s, _out) = Scene::new();
    for kind in [b'V', b'M', b'D', b'Z'] {
        let root = s.root();
        let t = Tar::default().member("odd", kind, "", b"data").end();
        let e = refused(&t, &root, "odd");
        assert!(e.contains("unsupported member type"), "{e}");
    }
    let root = s.root();
    let t = Tar::default()
        .member("pax_global_header", b'g', "", b"52 comment=0123456789\n")
        .file("f", b"f")
        .end();
    apply(&t, &root).unwrap();
    let names: Vec<String> = snapshot(&root).into_keys().collect();
    assert_eq!(names, ["f"]);
}

/// Regression: GNU sparse members (`tar --sparse`) were silently dropped.
#[test]
fn gnu_sparse_members_are_applied_with_their_holes() {
    let (mut s, _out) = Scene::new();
    let root = s.root();
    let real: u64 = 1 << 20;
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..6].copy_from_slice(b"sparse");
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(1024); // stored data: two 512-byte chunks
    {
        let g = h.as_gnu_mut().unwrap();
        let oct = |f: &mut [u8], v: u64| {
            let s = format!("{v:0w$o}", w = f.len() - 1);
            f[..s.len()].copy_from_slice(s.as_bytes());
        };
        oct(&mut g.realsize, real);
        oct(&mut g.sparse[0].offset, 4096);
        oct(&mut g.sparse[0].numbytes, 512);
        oct(&mut g.sparse[1].offset, real - 512);
        oct(&mut g.sparse[1].numbytes, 512);
    }
    h.set_cksum();
    let mut data = vec![b'x'; 512];
    data.extend(vec![b'y'; 512]);
    let t = Tar::default().raw(&h, &data).end();
    apply(&t, &root).unwrap();
    let got = std::fs::read(root.join("sparse")).unwrap();
    assert_eq!(got.len() as u64, real);
    let mut want = vec![0u8; real as usize];
    want[4096..4608].fill(b'x');
    want[real as usize - 512..].fill(b'y');
    assert!(got == want, "sparse content differs");
}

// ---------------------------------------------------------------------------------------------
// Through `kiln build`: a base image in an `oci:` layout whose layer is hostile, unpacked for
// `COPY --from`.

/// Writes an `oci:` layout holding one image of `layers` (gzip blobs) and returns its path.
fn layout_with(k: &Kiln, name: &str, layers: &[Vec<u8>], diff_ids: &[String]) -> PathBuf {
    let dir = k.path(name);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = sha256_hex(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let config = serde_json::json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (cd, cs) = put(config.to_string().as_bytes());
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            let (d, s) = put(l);
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layer_descs,
    });
    let (md, ms) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                        "annotations": {"org.opencontainers.image.ref.name": "hostile"}}],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    dir
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn diff_id(tar: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(tar))
}

fn ctx(k: &Kiln, dockerfile: &str) -> PathBuf {
    let c = k.path("ctx");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("Dockerfile"), dockerfile).unwrap();
    c
}

#[test]
fn kiln_build_applies_a_hostile_base_layer_inside_its_scratch_root() {
    let k = Kiln::new();
    let out = Outside::new(k.path("outside"));
    let tar = Tar::default()
        .dir("app/", 0o755)
        .file("app/data", b"payload\n")
        .symlink("app/esc", out.path())
        .symlink("rel", "../../../../../../../../../..")
        .file("rel/etc/evil", b"x")
        .dir("d/", 0o777)
        .symlink("d", out.path())
        .end();
    let layout = layout_with(&k, "layout", &[gzip(&tar)], &[diff_id(&tar)]);
    let c = ctx(
        &k,
        &format!(
            "FROM oci:{}:hostile AS base\nFROM scratch\nCOPY --from=base /app /app\nCOPY --from=base /etc/evil /evil\n",
            layout.display()
        ),
    );
    let dest = k.path("img");
    k.ok(&[
        "build",
        c.to_str().unwrap(),
        "-t",
        "it/hostile:1",
        "-o",
        &format!("oci:{}:out", dest.display()),
    ]);
    out.untouched("kiln build");
    let files = layout_files(&dest);
    assert_eq!(
        files.get("app/data").map(Vec::as_slice),
        Some(&b"payload\n"[..])
    );
    // The member written through `rel` landed in the base's root.
    assert_eq!(files.get("evil").map(Vec::as_slice), Some(&b"x"[..]));
    // The symlink is copied as a symlink, not as what it points at.
    let link = format!("app/esc -> {}", out.path());
    assert!(files.contains_key(&link), "{:?}", files.keys());
}

/// Every member of every layer of the image `out` in layout `dir`: path (or `path -> target`)
/// → content.
pub(crate) fn layout_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| std::fs::read(dir.join("blobs/sha256").join(&d[7..])).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&blob(m)).unwrap();
    let mut out = BTreeMap::new();
    for l in manifest["layers"].as_array().unwrap() {
        let bytes = blob(l["digest"].as_str().unwrap());
        let mut a = tar::Archive::new(flate2::read::MultiGzDecoder::new(&bytes[..]));
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let key = match e.link_name_bytes() {
                Some(t) if e.header().entry_type() == tar::EntryType::Symlink => {
                    format!("{p} -> {}", String::from_utf8_lossy(&t))
                }
                _ => p,
            };
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(key, data);
        }
    }
    out
}

#[test]
fn kiln_build_refuses_a_pax_bomb_and_a_truncated_base_layer_naming_them() {
    let k = Kiln::new();
    let out = Outside::new(k.path("outside"));
    // A layer whose PAX header claims 64 GiB (its gzip blob is a few KiB), and one cut short.
    let mut h = header(b"PaxHeaders/bomb", b'x', b"", 64 << 30, 0o644);
    h.set_cksum();
    let bomb_gz = gzip_with_zeros(h.as_bytes(), 1 << 30, 2);
    let bomb_tar_digest = {
        // The diff_id is never reached: the layer is refused first.
        "sha256:".to_string() + &"0".repeat(64)
    };
    let full = Tar::default()
        .file("a", b"alpha")
        .file("big", &vec![b'b'; 4000])
        .end();
    let cut = &full[..512 + 512 + 512 + 2000];
    for (name, layer, diff, member) in [
        ("bomb", bomb_gz, bomb_tar_digest, "PaxHeaders/bomb"),
        ("cut", gzip(cut), diff_id(cut), "big"),
    ] {
        let layout = layout_with(&k, name, &[layer], &[diff]);
        let c = k.path(&format!("ctx-{name}"));
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(
            c.join("Dockerfile"),
            format!(
                "FROM oci:{}:hostile AS base\nFROM scratch\nCOPY --from=base /a /a\n",
                layout.display()
            ),
        )
        .unwrap();
        let (code, err) = k.fails(&["build", c.to_str().unwrap(), "-t", "it/bad:1"]);
        assert!(code == 1 || code == 2, "{code}: {err}");
        assert!(
            err.contains(member),
            "{name}: the error does not name `{member}`:\n{err}"
        );
        let images = k.ok(&["images"]);
        assert!(!images.contains("it/bad"), "{images}");
        out.untouched(name);
    }
    k.ok(&["store", "fsck"]);
}

#[test]
fn kiln_build_unpacks_a_decompression_bomb_with_bounded_memory() {
    let k = Kiln::new();
    // 3 GiB of zeros in one file, a few KiB of gzip.
    let size: u64 = (3 << 30) - (1 << 20);
    let h = header(b"zeros", b'0', b"", size, 0o644);
    let small = Tar::default().file("small", b"small\n").end();
    let layers = [gzip_with_zeros(h.as_bytes(), 64 << 20, 48), gzip(&small)];
    // The bomb's diff_id: the sha256 of its tar, computed by streaming the decoder.
    let mut hasher = kiln::oci::Sha256Writer::new(std::io::sink());
    std::io::copy(
        &mut flate2::read::MultiGzDecoder::new(&layers[0][..]),
        &mut hasher,
    )
    .unwrap();
    let bomb_diff = hasher.finish().1.to_string();
    let layout = layout_with(&k, "layout", &layers, &[bomb_diff, diff_id(&small)]);
    let c = ctx(
        &k,
        &format!(
            "FROM oci:{}:hostile AS base\nFROM scratch\nCOPY --from=base /small /small\n",
            layout.display()
        ),
    );
    let mut cmd = k.cmd();
    cmd.args(["build", c.to_str().unwrap(), "-t", "it/bomb:1"]);
    let (status, maxrss_kib) = run_measured(&mut cmd);
    assert!(status.success(), "kiln build failed");
    assert!(
        maxrss_kib < 400 * 1024,
        "kiln held {maxrss_kib} KiB unpacking a 3 GiB bomb"
    );
    // The scratch root is gone or sparse: the store holds no 3 GiB file.
    let du = dir_blocks(&k.root());
    assert!(du < 256 << 20, "the store uses {du} bytes after the build");
}

/// Runs `cmd` and returns its exit status and peak resident set (KiB), from `wait4`.
fn run_measured(cmd: &mut std::process::Command) -> (std::process::ExitStatus, i64) {
    use std::os::unix::process::ExitStatusExt;
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    // Reaped by `wait4` below, which also gives the peak RSS `Child::wait` cannot.
    std::mem::forget(child);
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pid of our own child and valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid);
    (std::process::ExitStatus::from_raw(status), ru.ru_maxrss)
}

fn dir_blocks(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in rd.flatten() {
        let md = e.path().symlink_metadata().unwrap();
        total += md.blocks() * 512;
        if md.is_dir() {
            total += dir_blocks(&e.path());
        }
    }
    total
}

/// Regression: the build's metadata index recorded a member written through a symlinked parent
/// (`app/x/shadow` with `app/x -> /etc`) under that literal path, while the unpacker put it in
/// `etc/shadow` inside the root; `COPY --from` then read `rootfs/app/x/shadow`, which the host
/// resolved through the absolute link to the host's own `/etc/shadow`. A hostile base image
/// could so put any host file into an image built with an innocent `COPY --from=base /app /app`.
#[test]
fn copy_from_a_hostile_base_never_reads_host_files_through_its_symlinks() {
    let k = Kiln::new();
    let out = Outside::new(k.path("outside"));
    // The link's target exists inside the base's root too, so the unpacker writes through it.
    let mut t = Tar::default();
    let mut prefix = String::new();
    for c in out.path().trim_start_matches('/').split('/') {
        prefix.push_str(c);
        prefix.push('/');
        t.dir(&prefix, 0o755);
    }
    let tar = t
        .dir("app/", 0o755)
        .symlink("app/x", out.path())
        .file("app/x/precious", b"fake") // same size as the host's "keep"
        .symlink("app/y", "../../../../../../../..")
        .file("app/y/etc-evil", b"evil")
        .end();
    let layout = layout_with(&k, "layout", &[gzip(&tar)], &[diff_id(&tar)]);
    let c = ctx(
        &k,
        &format!(
            "FROM oci:{}:hostile AS base\nFROM scratch\nCOPY --from=base /app /app\nCOPY --from=base /app/x/precious /via-link\n",
            layout.display()
        ),
    );
    let dest = k.path("img");
    k.ok(&[
        "build",
        c.to_str().unwrap(),
        "-t",
        "it/hostile:2",
        "-o",
        &format!("oci:{}:out", dest.display()),
    ]);
    out.untouched("copy --from");
    let files = layout_files(&dest);
    for (p, data) in &files {
        assert_ne!(
            data.as_slice(),
            b"keep",
            "`{p}` holds the host file's bytes"
        );
    }
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "app/".to_string(),
            format!("app/x -> {}", out.path()),
            "app/y -> ../../../../../../../..".to_string(),
            "via-link".to_string()
        ]
    );
    // The source path is resolved through the link inside the base: the base's own file.
    assert_eq!(files["via-link"], b"fake");
}

#[test]
fn outer_archives_with_huge_metadata_are_refused_naming_them() {
    // The archives themselves (not their layers) are read through the same guard, and their
    // metadata members are bounded: an archive cannot make kiln buffer more than a registry's
    // manifest limit.
    let k = Kiln::new();
    let huge_path = vec![b'a'; 10 << 20];
    let big_json = vec![b' '; 5 << 20];
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    let cases: [(&str, &str, Vec<u8>, &str); 3] = [
        (
            "pax.tar",
            "oci-archive",
            Tar::default()
                .pax(&[("path", &huge_path)])
                .file("oci-layout", layout)
                .end(),
            "PAX extended header",
        ),
        (
            "index.tar",
            "oci-archive",
            Tar::default()
                .file("oci-layout", layout)
                .file("index.json", &big_json)
                .end(),
            "`index.json` is larger than 4194304 bytes",
        ),
        (
            "manifest.tar",
            "docker-archive",
            Tar::default().file("manifest.json", &big_json).end(),
            "`manifest.json` is larger than 4194304 bytes",
        ),
    ];
    for (file, transport, bytes, expect) in cases {
        let p = k.path(file);
        std::fs::write(&p, bytes).unwrap();
        let src = format!("{transport}:{}", p.display());
        let (code, err) = k.fails(&["copy", &src, "it/outer:1"]);
        assert_eq!(code, 2, "{file}: {err}");
        assert!(err.contains(expect), "{file}: no `{expect}` in:\n{err}");
        assert!(
            err.contains(file),
            "{file}: the error does not name the archive:\n{err}"
        );
    }
    k.ok(&["store", "fsck"]);
    let tmp: Vec<_> = std::fs::read_dir(k.root().join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "left in tmp/: {tmp:?}");
}

// ---------------------------------------------------------------------------------------------
// Hostile `oci:` layouts and archives for ADD: files that never end, bombs.

/// The blob paths of the layout's `hostile` image: (config, first layer).
fn layout_blobs(layout: &Path) -> (PathBuf, PathBuf) {
    let json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let blob = |d: &serde_json::Value| {
        layout
            .join("blobs/sha256")
            .join(d.as_str().unwrap().trim_start_matches("sha256:"))
    };
    let index = json(layout.join("index.json"));
    let manifest = json(blob(&index["manifests"][0]["digest"]));
    (
        blob(&manifest["config"]["digest"]),
        blob(&manifest["layers"][0]["digest"]),
    )
}

/// The attack: an `oci:` layout whose layer blob, config blob or `index.json` is a symlink to
/// `/dev/zero`, an endless file (kiln used to copy it into the store until the disk was full, or
/// read `index.json` into memory without end). Layout files are opened with `O_NOFOLLOW` and must
/// be regular files: each is refused at once, naming the file; the store is left empty and
/// kiln's memory stays small. (kiln runs under a 64 MiB file-size and a 1.5 GiB address-space
/// limit, so a regression fails the test instead of the machine.)
#[test]
fn an_oci_layout_with_a_blob_or_index_json_symlinked_to_dev_zero_is_refused() {
    let small = Tar::default().file("small", b"small\n").end();
    for what in ["layer", "config", "index.json"] {
        // A store of its own each time: a blob already in the store is never read again.
        let k = Kiln::new();
        let layout = layout_with(
            &k,
            &format!("layout-{what}"),
            &[gzip(&small)],
            &[diff_id(&small)],
        );
        let (config, layer) = layout_blobs(&layout);
        let victim = match what {
            "layer" => layer,
            "config" => config,
            _ => layout.join("index.json"),
        };
        std::fs::remove_file(&victim).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &victim).unwrap();
        let source = format!("oci:{}:hostile", layout.display());
        let (ok, err, rss_kib, elapsed) = crate::support::measured::kiln_measured(
            &k,
            &["copy", &source, "it/zero:1"],
            std::time::Duration::from_secs(120),
            &["--as=1610612736"],
        );
        assert!(!ok, "{what}: a layout file linked to /dev/zero was read");
        assert!(
            err.contains(&victim.display().to_string()) && err.contains("symbolic link"),
            "{what}: the error does not name the file and say why:\n{err}"
        );
        assert!(
            elapsed < std::time::Duration::from_secs(60),
            "{what}: {elapsed:?}"
        );
        assert!(rss_kib < 100 * 1024, "{what}: kiln held {rss_kib} KiB");
        let du = crate::support::measured::disk_usage(&k.root());
        assert!(du < 8 << 20, "{what}: the store holds {du} bytes");
        assert!(!k.ok(&["images"]).contains("it/zero"));
    }
}

/// The attack: `ADD bomb.tar.xz /` where the archive is 512 MiB of zeros in a few dozen KiB of
/// xz. lzma-rs decompressed the whole archive into memory (150 KiB of xz took 2 GiB of RSS);
/// now xz streams like gzip and zstd, so the build's peak RSS stays under 100 MiB.
#[test]
fn add_of_an_xz_bomb_streams_with_bounded_memory() {
    if !crate::support::require_tool("xz", &["--version"]) {
        return;
    }
    let k = Kiln::new();
    let c = ctx(&k, "FROM scratch\nADD bomb.tar.xz /\n");
    let bomb = c.join("bomb.tar.xz");
    let size: u64 = 512 << 20;
    let mut xz = std::process::Command::new("xz")
        .args(["-1", "-T1", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&bomb).unwrap())
        .spawn()
        .unwrap();
    {
        let mut w = xz.stdin.take().unwrap();
        w.write_all(header(b"zeros", b'0', b"", size, 0o644).as_bytes())
            .unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..size >> 20 {
            w.write_all(&chunk).unwrap();
        }
        // The end-of-archive blocks.
        w.write_all(&[0u8; 1024]).unwrap();
    }
    assert!(xz.wait().unwrap().success());
    let packed = std::fs::metadata(&bomb).unwrap().len();
    assert!(packed < 256 << 10, "the bomb is {packed} bytes");
    let (ok, err, rss_kib, _) = crate::support::measured::kiln_measured(
        &k,
        &["build", c.to_str().unwrap(), "-t", "it/xz:1"],
        std::time::Duration::from_secs(600),
        &["--fsize=unlimited"],
    );
    assert!(ok, "the build failed:\n{err}");
    eprintln!("peak RSS of kiln build with a {packed}-byte xz bomb: {rss_kib} KiB");
    assert!(
        rss_kib < 100 * 1024,
        "kiln held {rss_kib} KiB for a {packed}-byte xz bomb"
    );
    let out = k.ok(&["inspect", "it/xz:1"]);
    assert!(out.contains("sha256:"), "{out}");
}
