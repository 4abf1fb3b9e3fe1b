//! What kiln builds must be right: the overlay and walk snapshotters give the same bytes for
//! generated Dockerfiles (COPY/ADD/RUN mixes over existing directories, modes, owners, hard
//! links, deletions, replaced directories and directories with xattrs), as root and as the
//! unprivileged test user; a COPY into `/tmp` or `/var/mail` keeps their modes and owners for the
//! next RUN; layers list the parents of their entries; RUN sees `SOURCE_DATE_EPOCH`; `kiln import` of a rootless tree
//! records the ids a rootless container sees, and a directory and its tarball give one digest;
//! single-id mode warns once per build.
//!
//! Without user namespaces or the test user the tests say why and pass, except with `CI=true`,
//! where they fail.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::support::runas::{layer_entries, layout_layers, KilnAs, TarEntry, Who};

const KINDS: [&str; 2] = ["overlay", "walk"];

/// Builds `ctx` with `--snapshotter kind` (no cache: the cache does not know which snapshotter
/// made a layer) into the OCI layout `out/<name>`; returns the manifest digest.
fn build(k: &KilnAs, ctx: &Path, name: &str, kind: &str, extra: &[&str]) -> String {
    let meta = k.path(&format!("out/{name}.json"));
    let layout = k.path(&format!("out/{name}"));
    let mut args = vec![
        "build".to_string(),
        ctx.display().to_string(),
        "-t".into(),
        name.into(),
        "--snapshotter".into(),
        kind.into(),
        "--no-cache".into(),
        "--metadata-file".into(),
        meta.display().to_string(),
        "-o".into(),
        format!("oci:{}:t", layout.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    k.ok(&args);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    m["containerimage.digest"].as_str().unwrap().to_string()
}

/// The content of the regular file `path` in the image at `out/<name>` (topmost layer wins).
fn file_in_image(k: &KilnAs, name: &str, path: &str) -> Option<String> {
    let layers = layout_layers(&k.path(&format!("out/{name}")), "t");
    for blob in layers.iter().rev() {
        let raw = crate::support::runas::blob_views(blob).pop().unwrap();
        let mut a = tar::Archive::new(&raw[..]);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            if p.trim_start_matches("./") == path {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                return Some(s);
            }
        }
    }
    None
}

/// Every layer's entries of the image at `out/<name>`, for messages.
fn layers_of(k: &KilnAs, name: &str) -> Vec<Vec<TarEntry>> {
    layout_layers(&k.path(&format!("out/{name}")), "t")
        .iter()
        .map(|b| layer_entries(b))
        .collect()
}

/// The first difference between two images' layers, for a failure message.
fn first_difference(a: &[Vec<TarEntry>], b: &[Vec<TarEntry>]) -> String {
    for (i, (la, lb)) in a.iter().zip(b).enumerate() {
        let ma: BTreeMap<&str, &TarEntry> = la.iter().map(|e| (e.path.as_str(), e)).collect();
        let mb: BTreeMap<&str, &TarEntry> = lb.iter().map(|e| (e.path.as_str(), e)).collect();
        for p in ma.keys().chain(mb.keys()) {
            if ma.get(p) != mb.get(p) {
                return format!(
                    "layer {i}, `{p}`:\n  overlay {:?}\n  walk    {:?}",
                    ma.get(p),
                    mb.get(p)
                );
            }
        }
    }
    format!(
        "same entries in {} / {} layers (content or mtimes differ)",
        a.len(),
        b.len()
    )
}

// ---- /tmp and /var/mail keep their modes after a COPY into them ----

const MODES: &str = r#"FROM busybox
RUN chmod 1777 /tmp && mkdir -p /var/mail && chown 0:8 /var/mail && chmod 2775 /var/mail
COPY f /tmp/f
COPY f /var/mail/f
RUN stat -c '%a %u:%g' /tmp /var/mail > /modes
"#;

fn copy_into_tmp_keeps_its_mode(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    if !k.busybox() {
        return;
    }
    let ctx = k.context("ctx", MODES, &[("f", b"f\n")]);
    let mut digests = Vec::new();
    for kind in KINDS {
        let name = format!("modes-{kind}");
        digests.push(build(&k, &ctx, &name, kind, &[]));
        assert_eq!(
            file_in_image(&k, &name, "modes").as_deref(),
            Some("1777 0:0\n2775 0:8\n"),
            "{who:?} {kind}: what the RUN after the COPY saw"
        );
        // The COPY layers list the parents with the metadata below them.
        let layers = layers_of(&k, &name);
        let copy = &layers[2];
        let tmp = copy.iter().find(|e| e.path == "tmp").unwrap_or_else(|| {
            panic!("{who:?} {kind}: the COPY layer does not list /tmp: {copy:?}")
        });
        assert_eq!(
            (tmp.mode, tmp.uid, tmp.gid),
            (0o1777, 0, 0),
            "{who:?} {kind}"
        );
        let mail = layers[3].iter().find(|e| e.path == "var/mail").unwrap();
        assert_eq!(
            (mail.mode, mail.uid, mail.gid),
            (0o2775, 0, 8),
            "{who:?} {kind}"
        );
        assert!(layers[3].iter().any(|e| e.path == "var"), "{who:?} {kind}");
    }
    assert_eq!(digests[0], digests[1], "{who:?}: overlay and walk differ");
}

#[test]
fn copy_into_tmp_keeps_its_mode_as_root() {
    copy_into_tmp_keeps_its_mode(Who::Root);
}

#[test]
fn copy_into_tmp_keeps_its_mode_as_unprivileged_user() {
    copy_into_tmp_keeps_its_mode(Who::User);
}

// ---- RUN layers list the parents of what changed ----

#[test]
fn run_layers_list_the_parents_of_what_changed() {
    let Some(k) = KilnAs::new(Who::Root) else {
        return;
    };
    if !k.busybox() {
        return;
    }
    let ctx = k.context(
        "ctx",
        "FROM busybox\nRUN mkdir -p /home/app/.cache/deep && echo x > /home/app/.cache/deep/f\n",
        &[],
    );
    for kind in KINDS {
        let name = format!("parents-{kind}");
        build(&k, &ctx, &name, kind, &[]);
        let layers = layers_of(&k, &name);
        let paths: Vec<&str> = layers[1].iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "home",
                "home/app",
                "home/app/.cache",
                "home/app/.cache/deep",
                "home/app/.cache/deep/f"
            ],
            "{kind}"
        );
    }
}

// ---- RUN sees SOURCE_DATE_EPOCH ----

#[test]
fn run_sees_the_build_epoch_as_source_date_epoch() {
    let Some(k) = KilnAs::new(Who::Root) else {
        return;
    };
    if !k.busybox() {
        return;
    }
    let ctx = k.context(
        "ctx",
        "FROM busybox\nRUN echo \"${SOURCE_DATE_EPOCH-unset}\" > /sde\nENV SOURCE_DATE_EPOCH=5\nRUN echo \"$SOURCE_DATE_EPOCH\" > /sde2\n",
        &[],
    );
    build(
        &k,
        &ctx,
        "sde",
        "walk",
        &["--source-date-epoch", "1700000000"],
    );
    assert_eq!(
        file_in_image(&k, "sde", "sde").as_deref(),
        Some("1700000000\n")
    );
    // The Dockerfile's own value wins.
    assert_eq!(file_in_image(&k, "sde", "sde2").as_deref(), Some("5\n"));
    // The default epoch outside a git work tree is 0, and RUN sees it too.
    build(&k, &ctx, "sde0", "walk", &[]);
    assert_eq!(file_in_image(&k, "sde0", "sde").as_deref(), Some("0\n"));
}

/// The mtime of `path` in the image at `out/<name>` (its topmost layer's entry).
fn mtime_in_image(k: &KilnAs, name: &str, path: &str) -> Option<u64> {
    let layers = layout_layers(&k.path(&format!("out/{name}")), "t");
    for blob in layers.iter().rev() {
        let raw = crate::support::runas::blob_views(blob).pop().unwrap();
        let mut a = tar::Archive::new(&raw[..]);
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            if String::from_utf8_lossy(&e.path_bytes()).trim_start_matches("./") == path {
                return Some(e.header().mtime().unwrap());
            }
        }
    }
    None
}

/// Time without breakage. By default (no epoch given) mtimes that come with the inputs survive
/// (a file a RUN step unpacks or dates itself, a `COPY --from` source), so a `.py` file keeps the
/// mtime its `.pyc` header names; what a step writes with the clock and the context's files
/// (whose mtimes git does not keep) get the epoch, 0. The default epoch does not move with the
/// context's git commits, so neither do the cache keys. With an epoch given, every newer mtime
/// is clamped to it (the reproducible-builds convention). Regression: every mtime was flattened
/// to the epoch, so Debian's `.pyc` files were all stale.
#[test]
fn input_mtimes_survive_and_what_steps_write_gets_the_epoch() {
    let Some(k) = KilnAs::new(Who::Root) else {
        return;
    };
    if !k.busybox() {
        return;
    }
    let ctx = k.context(
        "ctx",
        "FROM busybox AS src\nRUN echo k > /k && touch -d @1500000000 /k\n\
         FROM busybox\nCOPY old /old\nCOPY --from=src /k /k\n\
         RUN echo kept > /kept && touch -d @1500000000 /kept && echo fresh > /fresh\n",
        &[("old", b"old\n")],
    );
    crate::support::busybox::set_mtimes(&ctx.join("old"), 1_500_000_000);
    for kind in ["overlay", "walk"] {
        let name = format!("default-{kind}");
        build(&k, &ctx, &name, kind, &[]);
        let m = |p: &str| mtime_in_image(&k, &name, p).unwrap_or_else(|| panic!("{p} in {name}"));
        assert_eq!(
            m("kept"),
            1_500_000_000,
            "{kind}: a date the step set is kept"
        );
        assert_eq!(
            m("k"),
            1_500_000_000,
            "{kind}: COPY --from keeps its source's mtime"
        );
        assert_eq!(m("fresh"), 0, "{kind}: what the step wrote gets the epoch");
        assert_eq!(m("old"), 0, "{kind}: a context file gets the epoch");
        let name = format!("given-{kind}");
        build(
            &k,
            &ctx,
            &name,
            kind,
            &["--source-date-epoch", "1400000000"],
        );
        let m = |p: &str| mtime_in_image(&k, &name, p).unwrap();
        for p in ["kept", "k", "fresh", "old"] {
            assert_eq!(
                m(p),
                1_400_000_000,
                "{kind}: {p} is clamped to the given epoch"
            );
        }
    }
    // Both snapshotters agree, and a build is reproducible with the default.
    let a = build(&k, &ctx, "again-1", "overlay", &[]);
    let b = build(&k, &ctx, "again-2", "walk", &[]);
    assert_eq!(a, b, "overlay and walk differ");
}

// ---- overlay and walk agree on generated Dockerfiles ----

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// Directories the steps touch: the base's, and ones the steps make.
const DIRS: [&str; 7] = [
    "/tmp",
    "/var",
    "/home/app",
    "/etc",
    "/d1",
    "/d2/sub",
    "/root",
];
const MODES_: [&str; 5] = ["700", "755", "1777", "2775", "750"];
const OWNERS: [&str; 4] = ["0:0", "1000:1000", "1001:1002", "0:50"];

/// One generated Dockerfile: a mix of COPY/ADD/RUN over existing directories.
fn generate(seed: u64) -> String {
    let mut r = Rng(seed);
    let mut out = String::from(
        "FROM busybox\nRUN mkdir -p /d1 /d2/sub && echo a > /d1/a && echo b > /d2/sub/b\n",
    );
    let steps = 4 + r.next() % 5;
    for _ in 0..steps {
        let dir = *r.pick(&DIRS);
        let step = match r.next() % 11 {
            0 => format!("RUN chmod {} {dir}", r.pick(&MODES_)),
            1 => format!("RUN chown {} {dir}", r.pick(&OWNERS)),
            2 => format!("COPY f {dir}/f{}", r.next() % 3),
            3 => format!("COPY tree {dir}/tree"),
            4 => format!("ADD links.tar {dir}/"),
            5 => format!("RUN rm -rf {dir}/[!hr]* 2>/dev/null; true"),
            6 => {
                // Not /etc: the sandbox binds files in it.
                let dir = if dir == "/etc" { "/d1" } else { dir };
                format!("RUN rm -rf {dir} && mkdir -p {dir} && echo y > {dir}/y")
            }
            7 => format!("RUN echo h > {dir}/h && ln -f {dir}/h {dir}/h2"),
            8 => format!("COPY --chown={} f {dir}/owned", r.pick(&OWNERS)),
            9 => format!("WORKDIR {dir}/w{}", r.next() % 2),
            _ => format!("RUN touch {dir}/t && mkdir -p {dir}/n/m && echo n > {dir}/n/m/f"),
        };
        out.push_str(&step);
        out.push('\n');
    }
    // What a RUN sees of every directory, in the image.
    out.push_str(
        "RUN for d in / /tmp /var /home/app /etc /d1 /d2 /d2/sub /root; do \
         [ -e $d ] && stat -c '%n %a %u:%g' $d; done > /seen; true\n",
    );
    out
}

/// A tarball with a hard link and a directory, for ADD.
fn links_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o750);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_mtime(1_600_000_000);
    h.set_size(0);
    b.append_data(&mut h, "ld/", &[][..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_mtime(1_600_000_000);
    h.set_size(2);
    b.append_data(&mut h, "ld/z", &b"z\n"[..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Link);
    h.set_mode(0o644);
    h.set_mtime(1_600_000_000);
    h.set_size(0);
    b.append_link(&mut h, "ld/a", "ld/z").unwrap();
    b.into_inner().unwrap()
}

fn snapshotters_agree(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    // The busybox base, with user xattrs on two directories the steps touch below (overlay
    // copies them up with the directory; walk sees the directory unchanged).
    let bb = k.path("busybox-x");
    std::fs::create_dir(&bb).unwrap();
    if !crate::support::busybox::rootfs(&bb) {
        return;
    }
    for (dir, name, value) in [("home/app", "user.k", "v"), ("var", "user.note", "n")] {
        rustix::fs::setxattr(
            bb.join(dir),
            name,
            value.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }
    k.give(&bb);
    k.ok(&[
        "import",
        bb.to_str().unwrap(),
        "-t",
        "busybox",
        "--env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]);
    let tar = links_tar();
    let files: [(&str, &[u8]); 4] = [
        ("f", b"f\n"),
        ("tree/a", b"a\n"),
        ("tree/sub/b", b"b\n"),
        ("links.tar", &tar),
    ];
    let cases = if who == Who::Root { 14 } else { 10 };
    let mut failures = Vec::new();
    for seed in 0..cases {
        let seed = seed + if who == Who::Root { 0 } else { 1000 };
        let dockerfile = generate(seed);
        let ctx = k.context(&format!("ctx-{seed}"), &dockerfile, &files);
        let a = build(&k, &ctx, &format!("g{seed}-overlay"), "overlay", &[]);
        let b = build(&k, &ctx, &format!("g{seed}-walk"), "walk", &[]);
        if a != b {
            let diff = first_difference(
                &layers_of(&k, &format!("g{seed}-overlay")),
                &layers_of(&k, &format!("g{seed}-walk")),
            );
            let seen = |kind: &str| file_in_image(&k, &format!("g{seed}-{kind}"), "seen");
            failures.push(format!(
                "seed {seed}:\n{dockerfile}{diff}\noverlay saw:\n{}walk saw:\n{}",
                seen("overlay").unwrap_or_default(),
                seen("walk").unwrap_or_default()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{who:?}: overlay and walk built different images:\n{}",
        failures.join("\n\n")
    );
}

#[test]
fn overlay_and_walk_agree_on_generated_dockerfiles_as_root() {
    snapshotters_agree(Who::Root);
}

#[test]
fn overlay_and_walk_agree_on_generated_dockerfiles_as_unprivileged_user() {
    snapshotters_agree(Who::User);
}

// ---- kiln import: rootless trees, tarballs ----

/// A tree with varied owners, modes, a hard link, a symlink and fixed mtimes; owners are the
/// container ids, given to the files through `owner` (which maps them to host ids).
fn owned_tree(root: &Path, owner: &dyn Fn(u32) -> u32) {
    use std::os::unix::fs::PermissionsExt;
    let mk = |p: &str, mode: u32, uid: u32, gid: u32, file: Option<&[u8]>| {
        let path = root.join(p);
        match file {
            Some(data) => std::fs::write(&path, data).unwrap(),
            None => std::fs::create_dir_all(&path).unwrap(),
        }
        std::os::unix::fs::lchown(&path, Some(owner(uid)), Some(owner(gid))).unwrap();
        // After the chown, which clears setuid and setgid bits.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    mk("bin", 0o755, 0, 0, None);
    mk("bin/su", 0o4755, 0, 0, Some(b"su\n"));
    mk("bin/z", 0o755, 0, 0, Some(b"z\n"));
    std::fs::hard_link(root.join("bin/z"), root.join("bin/a")).unwrap();
    mk("home", 0o755, 0, 0, None);
    mk("home/app", 0o750, 1000, 1000, None);
    mk("home/app/f", 0o644, 1000, 1000, Some(b"app\n"));
    mk("var", 0o755, 0, 0, None);
    mk("var/mail", 0o2775, 0, 8, None);
    mk("var/www", 0o755, 1001, 1002, None);
    std::os::unix::fs::symlink("/bin/z", root.join("bin/link")).unwrap();
    std::os::unix::fs::lchown(root.join("bin/link"), Some(owner(0)), Some(owner(0))).unwrap();
    crate::support::busybox::set_mtimes(root, 1_600_000_000);
}

/// The test user's first subordinate uid and gid, from /etc/subuid and /etc/subgid.
fn subordinate_start(user: &str) -> (u32, u32) {
    let first = |file: &str| -> u32 {
        std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .find_map(|l| {
                let mut p = l.split(':');
                (p.next()? == user).then(|| p.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {user} in {file}"))
    };
    (first("/etc/subuid"), first("/etc/subgid"))
}

fn uid_of(user: &str) -> u32 {
    let out = crate::support::run(Command::new("id").args(["-u", user]));
    out.trim().parse().unwrap()
}

#[test]
fn root_and_rootless_imports_of_the_same_tree_give_the_same_digest() {
    let Some(root) = KilnAs::new(Who::Root) else {
        return;
    };
    let Some(user) = KilnAs::new(Who::User) else {
        return;
    };
    use crate::support::users::TEST_USER;
    let tree = root.path("tree");
    std::fs::create_dir(&tree).unwrap();
    owned_tree(&tree, &|id| id);
    let d_root = root.ok(&["import", tree.to_str().unwrap(), "-t", "t"]);

    // The same tree as the test user keeps it: its own ids are root's, 1.. its subordinate ids
    // (the /etc/subuid and /etc/subgid starts are the same for the test user).
    let (sub, _) = subordinate_start(TEST_USER);
    let me = uid_of(TEST_USER);
    let shifted = user.path("tree");
    std::fs::create_dir(&shifted).unwrap();
    owned_tree(&shifted, &|id| if id == 0 { me } else { sub + id - 1 });
    std::os::unix::fs::chown(&shifted, Some(me), Some(me)).unwrap();
    let d_user = user.ok(&["import", shifted.to_str().unwrap(), "-t", "t"]);
    assert_eq!(
        d_root, d_user,
        "root and rootless imports of one tree differ"
    );
    // `--userns host` records the ids on disk.
    let mine = user.path("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("f"), "f\n").unwrap();
    user.give(&mine);
    user.ok(&[
        "import",
        mine.to_str().unwrap(),
        "-t",
        "h",
        "--userns",
        "host",
    ]);
    let host_layout = user.path("out/h");
    user.ok(&["copy", "h", &format!("oci:{}:t", host_layout.display())]);
    let f = layer_entries(&layout_layers(&host_layout, "t")[0])
        .into_iter()
        .find(|e| e.path == "f")
        .unwrap();
    assert_eq!(
        (f.uid, f.gid),
        (u64::from(me), u64::from(me)),
        "--userns host"
    );
    let layout = user.path("out/t");
    user.ok(&["copy", "t", &format!("oci:{}:t", layout.display())]);
    let layers = layout_layers(&layout, "t");
    let l: BTreeMap<String, TarEntry> = layer_entries(&layers[0])
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect();
    let own = |p: &str| (l[p].mode, l[p].uid, l[p].gid);
    assert_eq!(own("bin/su"), (0o4755, 0, 0));
    assert_eq!(own("home/app"), (0o750, 1000, 1000));
    assert_eq!(own("var/mail"), (0o2775, 0, 8));
    assert_eq!(own("var/www"), (0o755, 1001, 1002));
}

#[test]
fn a_directory_and_its_tarball_give_the_same_digest() {
    let Some(k) = KilnAs::new(Who::Root) else {
        return;
    };
    if !crate::support::need("tar") {
        return;
    }
    let tree = k.path("tree");
    std::fs::create_dir(&tree).unwrap();
    owned_tree(&tree, &|id| id);
    // Members in reverse order: `bin/z` comes before `bin/a`, so the tarball's hard link points
    // the other way from the directory walk's (first path in sorted order carries the data).
    let mut paths: Vec<String> = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(tree.join(&rel)).unwrap() {
            let e = e.unwrap();
            let p = if rel.is_empty() {
                e.file_name().to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", e.file_name().to_string_lossy())
            };
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            paths.push(p);
        }
    }
    paths.sort();
    paths.reverse();
    let list = k.path("list");
    std::fs::write(&list, paths.join("\n") + "\n").unwrap();
    let tarball = k.path("tree.tar");
    crate::support::run(
        Command::new("tar")
            .arg("-C")
            .arg(&tree)
            .args(["--numeric-owner", "--no-recursion", "-cf"])
            .arg(&tarball)
            .arg("-T")
            .arg(&list),
    );
    let from_dir = k.ok(&["import", tree.to_str().unwrap(), "-t", "d"]);
    let from_tar = k.ok(&["import", tarball.to_str().unwrap(), "-t", "t"]);
    assert_eq!(from_dir, from_tar, "a directory and its tarball differ");
}

// ---- single-id mode warns once ----

#[test]
fn single_id_mode_warns_once_with_a_free_range() {
    let Some(k) = KilnAs::with_path(Who::User, "/nonexistent-kiln-path") else {
        return;
    };
    if !k.busybox() {
        return;
    }
    let ctx = k.context(
        "ctx",
        "FROM busybox\nRUN echo 1 > /one\nRUN echo 2 > /two\nRUN echo 3 > /three\n",
        &[],
    );
    let out = k
        .cmd_progress("plain")
        .args([
            "build",
            ctx.to_str().unwrap(),
            "-t",
            "single",
            "--snapshotter",
            "walk",
            // No newuidmap on PATH, and so no pasta either: the steps need no network.
            "--network",
            "none",
        ])
        .output()
        .unwrap();
    crate::support::assert_success(&out, &"single-id build");
    let err = String::from_utf8_lossy(&out.stderr);
    let n = err.matches("single-id user namespace").count();
    assert_eq!(n, 1, "the single-id warning {n} times:\n{err}");
    // The suggested range overlaps no subordinate range and not the user's own id.
    let at = err.find("--add-subuids ").unwrap() + "--add-subuids ".len();
    let range: &str = err[at..].split_whitespace().next().unwrap();
    let (lo, hi) = range.split_once('-').unwrap();
    let (lo, hi): (u64, u64) = (lo.parse().unwrap(), hi.parse().unwrap());
    assert_eq!(hi - lo, 65535);
    let me = u64::from(uid_of(crate::support::users::TEST_USER));
    assert!(
        !(lo..=hi).contains(&me),
        "{range} holds the user's uid {me}"
    );
    for file in ["/etc/subuid", "/etc/subgid"] {
        for l in std::fs::read_to_string(file).unwrap().lines() {
            let p: Vec<&str> = l.split(':').collect();
            if p.len() < 3 {
                continue;
            }
            let (s, c): (u64, u64) = (p[1].parse().unwrap(), p[2].parse().unwrap());
            assert!(s + c <= lo || s > hi, "{range} overlaps `{l}` of {file}");
        }
    }
}

// ---- a relative --root ----

#[test]
fn a_relative_root_works_with_the_overlay_snapshotter() {
    let Some(k) = KilnAs::new(Who::Root) else {
        return;
    };
    let bb = k.path("bb");
    std::fs::create_dir(&bb).unwrap();
    if !crate::support::busybox::rootfs(&bb) {
        return;
    }
    let ctx = k.context("ctx", "FROM busybox\nRUN echo hi > /hi\n", &[]);
    let kiln = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.current_dir(k.path(""))
            .args(["--root", "relstore", "--progress", "quiet"])
            .args(args)
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("KILN_ROOT");
        crate::support::run(&mut c)
    };
    kiln(&["import", bb.to_str().unwrap(), "-t", "busybox"]);
    kiln(&[
        "build",
        ctx.to_str().unwrap(),
        "-t",
        "rel",
        "--snapshotter",
        "overlay",
    ]);
    assert!(k.path("relstore").is_dir());
}
