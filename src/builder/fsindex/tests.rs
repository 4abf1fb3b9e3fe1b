use super::*;

fn idx(entries: &[Entry]) -> FsIndex {
    let mut i = FsIndex::default();
    i.apply_entries(entries);
    i
}

#[test]
fn encoding_round_trips_and_rejects_damage() {
    let mut passwd = Entry::file("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n".to_vec());
    passwd.uid = 0;
    let mut f = Entry::file("srv/data", 0o4755, b"x".to_vec());
    f.uid = 1000;
    f.gid = 1001;
    f.mtime = -5;
    let mut etc = Entry::dir("etc", 0o755);
    etc.xattrs = vec![("user.k".into(), b"v".to_vec())];
    let i = idx(&[
        etc,
        passwd,
        f,
        Entry {
            kind: EntryKind::Hardlink(b"srv/data".to_vec()),
            ..Entry::file("srv/link", 0o644, Vec::new())
        },
        Entry::symlink("bin", "usr/bin"),
    ]);
    let bytes = i.encode();
    let back = FsIndex::decode(&bytes).expect("decodes");
    assert_eq!(format!("{:?}", back.nodes), format!("{:?}", i.nodes));
    assert!(
        FsIndex::decode(&bytes[..bytes.len() - 1]).is_none(),
        "truncated"
    );
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(FsIndex::decode(&extra).is_none(), "trailing bytes");
    assert!(
        FsIndex::decode(b"kiln-fsindex-v0\n").is_none(),
        "other version"
    );
}

#[test]
fn parent_entries_carry_the_metadata_below_and_skip_listed_paths() {
    let mut tmp = Entry::dir("tmp", 0o1777);
    tmp.mtime = 7;
    tmp.xattrs = vec![("user.k".into(), b"v".to_vec())];
    let mut mail = Entry::dir("var/mail", 0o2775);
    mail.gid = 8;
    let i = idx(&[
        tmp,
        Entry::dir("var", 0o755),
        mail,
        Entry::symlink("lnk", "tmp"),
    ]);
    let new = [
        Entry::file("tmp/f", 0o644, b"f".to_vec()),
        Entry::file("var/mail/f", 0o644, b"f".to_vec()),
        Entry::dir("new", 0o700),
        Entry::file("new/sub/f", 0o644, Vec::new()),
        Entry::file("lnk/f", 0o644, Vec::new()),
    ];
    let parents = i.parent_entries(&new, 100);
    let got: Vec<(String, u32, u32, i64, usize)> = parents
        .iter()
        .map(|e| {
            let p = String::from_utf8_lossy(&e.path).into_owned();
            (p, e.mode, e.gid, e.mtime, e.xattrs.len())
        })
        .collect();
    assert_eq!(
        got,
        [
            ("tmp".to_string(), 0o1777, 0, 7, 1),
            ("var/mail".to_string(), 0o2775, 8, 0, 0),
            ("var".to_string(), 0o755, 0, 0, 0),
            // Not in the index: a new root-owned 0755 directory at the epoch; `new` is
            // listed, and `lnk` is a symlink below, so neither is added.
            ("new/sub".to_string(), 0o755, 0, 100, 0),
        ]
    );
}

#[test]
fn symlinks_resolve_inside_the_root() {
    let i = idx(&[
        Entry::dir("usr/bin", 0o755),
        Entry::symlink("bin", "usr/bin"),
        Entry::symlink("abs", "/usr"),
        Entry::symlink("up", "../../../usr"),
        Entry::symlink("loop", "loop"),
    ]);
    assert_eq!(i.resolve(b"/bin/sh", true), b"usr/bin/sh");
    assert_eq!(i.resolve(b"/abs/bin", true), b"usr/bin");
    assert_eq!(i.resolve(b"/up/bin", true), b"usr/bin");
    assert_eq!(i.resolve(b"/bin", false), b"bin");
    assert_eq!(i.resolve(b"/loop/x", true), b"loop/x");
}

#[test]
fn whiteouts_and_opaque_markers_apply() {
    let mut w = crate::layer::LayerWriter::new(Vec::new(), Default::default()).unwrap();
    for e in [
        Entry::whiteout(b"a/x"),
        Entry::dir("o", 0o700),
        Entry::file("o/new", 0o644, b"n".to_vec()),
        Entry::opaque_whiteout(b"o"),
    ] {
        w.append(&e).unwrap();
    }
    let (gz, _) = w.finish().unwrap();
    let mut i = idx(&[
        Entry::file("a/x", 0o644, b"x".to_vec()),
        Entry::file("a/y", 0o644, b"y".to_vec()),
        Entry::file("o/old", 0o644, b"o".to_vec()),
    ]);
    i.apply_tar(flate2::read::MultiGzDecoder::new(&gz[..]))
        .unwrap();
    assert!(i.get(b"a/x").is_none());
    assert!(i.get(b"a/y").is_some());
    assert!(i.get(b"o/old").is_none());
    assert!(i.get(b"o/new").is_some());
    assert_eq!(i.get(b"/o").unwrap().mode, 0o700);
}

/// #21: an index holds one node per path of the image; the rare parts (kept content, a hard
/// link's first path, xattrs) are boxed apart, so a node of a plain file is 72 bytes.
#[test]
fn a_node_is_small_and_keeps_its_rare_parts() {
    assert!(
        std::mem::size_of::<Node>() <= 72,
        "{}",
        std::mem::size_of::<Node>()
    );
    let mut etc = Entry::dir("etc", 0o755);
    etc.xattrs = vec![("user.k".into(), b"v".to_vec())];
    let i = idx(&[
        etc,
        Entry::file("etc/passwd", 0o644, b"root:x:0:0::/:/bin/sh\n".to_vec()),
        Entry::file("a", 0o644, b"a".to_vec()),
        Entry {
            kind: EntryKind::Hardlink(b"a".to_vec()),
            ..Entry::file("b", 0o644, Vec::new())
        },
    ]);
    let get = |p: &str| i.get(p.as_bytes()).unwrap();
    assert_eq!(get("etc").xattrs().len(), 1);
    assert!(get("etc/passwd").content().is_some());
    assert_eq!(get("b").link_of(), Some(&b"a"[..]));
    assert!(get("a").linked && get("a").link_of().is_none() && get("a").content().is_none());
}
