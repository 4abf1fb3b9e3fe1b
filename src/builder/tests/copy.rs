//! COPY and ADD: where sources land, their owners, modes and mtimes, the parent directories a
//! layer lists, the context's ignore rules, archives and heredocs.
use super::{err_text, node, paths, Fixture, BASE_MTIME};

#[test]
fn copy_a_file_to_a_dest_with_a_trailing_slash_puts_it_inside() {
    let f = Fixture::new();
    f.file("a.txt", b"A");
    let out = f.build("FROM base\nCOPY a.txt /dst/\n").unwrap();
    let top = f.top(&out.image);
    assert_eq!(paths(&top), ["dst", "dst/a.txt"]);
    assert_eq!(node(&top, "dst/a.txt").content, b"A");
    assert_eq!(node(&top, "dst").kind, 'd');
}

#[test]
fn copy_a_file_to_a_dest_without_a_trailing_slash_names_the_file() {
    let f = Fixture::new();
    f.file("a.txt", b"A");
    let out = f.build("FROM base\nCOPY a.txt /dst\n").unwrap();
    let top = f.top(&out.image);
    assert_eq!(paths(&top), ["dst"]);
    assert_eq!(node(&top, "dst").kind, 'f');
    assert_eq!(node(&top, "dst").content, b"A");
}

#[test]
fn copy_to_an_existing_directory_without_a_slash_copies_into_it() {
    let f = Fixture::new();
    f.file("a.txt", b"A");
    let out = f.build("FROM base\nCOPY a.txt /tmp\n").unwrap();
    let top = f.top(&out.image);
    assert_eq!(paths(&top), ["tmp", "tmp/a.txt"]);
}

#[test]
fn copy_of_a_directory_copies_its_contents_not_itself() {
    let f = Fixture::new();
    f.file("dir/x", b"X");
    f.file("dir/sub/y", b"Y");
    let out = f.build("FROM base\nCOPY dir /d\n").unwrap();
    let top = f.top(&out.image);
    assert_eq!(paths(&top), ["d", "d/sub", "d/sub/y", "d/x"]);
    assert_eq!(node(&top, "d/sub/y").content, b"Y");
}

#[test]
fn copy_with_a_wildcard_copies_only_the_matches() {
    let f = Fixture::new();
    f.file("a.txt", b"A");
    f.file("b.txt", b"B");
    f.file("c.md", b"C");
    let out = f.build("FROM base\nCOPY *.txt /w/\n").unwrap();
    assert_eq!(paths(&f.top(&out.image)), ["w", "w/a.txt", "w/b.txt"]);
}

#[test]
fn copy_chown_resolves_names_through_the_base_passwd_and_group() {
    let f = Fixture::new();
    f.file("a", b"A");
    let out = f
        .build(
            "FROM base\nCOPY --chown=app a /o/app\nCOPY --chown=svc a /o/svc\n\
             COPY --chown=app:staff a /o/appstaff\nCOPY --chown=7:8 a /o/ids\n",
        )
        .unwrap();
    let owner = |i: usize, p: &str| {
        let l = f.layer(&out.image, i);
        let n = node(&l, p);
        (n.uid, n.gid)
    };
    assert_eq!(owner(1, "o/app"), (1000, 1000));
    assert_eq!(
        owner(2, "o/svc"),
        (2000, 50),
        "svc's primary group from passwd"
    );
    assert_eq!(owner(3, "o/appstaff"), (1000, 50));
    assert_eq!(owner(4, "o/ids"), (7, 8));
}

#[test]
fn copy_chown_owns_the_directories_it_creates_too() {
    let f = Fixture::new();
    f.file("dir/x", b"X");
    let out = f
        .build("FROM base\nCOPY --chown=app dir /new/d/\n")
        .unwrap();
    let top = f.top(&out.image);
    for p in ["new", "new/d", "new/d/x"] {
        assert_eq!((node(&top, p).uid, node(&top, p).gid), (1000, 1000), "{p}");
    }
}

#[test]
fn copy_chmod_sets_the_mode_of_copied_files_and_directories() {
    let f = Fixture::new();
    let p = f.file("dir/x", b"X");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = f.build("FROM base\nCOPY --chmod=0751 dir /d/\n").unwrap();
    let top = f.top(&out.image);
    assert_eq!(node(&top, "d/x").mode, 0o751);
    let out = f.build("FROM base\nCOPY dir /d/\n").unwrap();
    assert_eq!(node(&f.top(&out.image), "d/x").mode, 0o600, "mode kept");
}

#[test]
fn copy_into_an_existing_directory_lists_its_parents_with_their_metadata() {
    let f = Fixture::new();
    f.file("a", b"A");
    let out = f
        .build("FROM base\nCOPY a /tmp/x/a\nCOPY a /home/app/a\n")
        .unwrap();
    let l1 = f.layer(&out.image, 1);
    assert_eq!(paths(&l1), ["tmp", "tmp/x", "tmp/x/a"]);
    let tmp = node(&l1, "tmp");
    assert_eq!((tmp.kind, tmp.mode, tmp.uid), ('d', 0o1777, 0));
    assert_eq!(
        tmp.mtime, BASE_MTIME as u64,
        "the base's mtime, not the epoch"
    );
    assert_eq!(node(&l1, "tmp/x").mode, 0o755);
    let l2 = f.layer(&out.image, 2);
    assert_eq!(paths(&l2), ["home", "home/app", "home/app/a"]);
    let app = node(&l2, "home/app");
    assert_eq!((app.mode, app.uid, app.gid), (0o750, 1000, 1000));
}

#[test]
fn copy_link_lists_no_parent_directories_from_below() {
    let f = Fixture::new();
    f.file("a", b"A");
    let out = f.build("FROM base\nCOPY --link a /tmp/a\n").unwrap();
    let top = f.top(&out.image);
    // The parent is made as COPY makes a missing one (0755, root, the epoch), as on an empty
    // filesystem, not listed with the stage's /tmp (1777, its mtime). BuildKit does the same
    // and documents it (moby/buildkit#3602, docs PR #6778): applied, the layer makes /tmp 0755.
    assert_eq!(paths(&top), ["tmp", "tmp/a"]);
    let tmp = node(&top, "tmp");
    assert_eq!((tmp.mode, tmp.mtime), (0o755, 0), "{tmp:?}");
    assert_eq!(node(&top, "tmp/a").content, b"A");
}

#[test]
fn dockerignore_keeps_files_out_of_copy() {
    let f = Fixture::new();
    f.file("keep.txt", b"K");
    f.file("secret.env", b"S");
    f.file("logs/a.log", b"L");
    f.file(".dockerignore", b"*.env\nlogs\n");
    let out = f.build("FROM base\nCOPY . /c/\n").unwrap();
    let top = f.top(&out.image);
    let p = paths(&top);
    assert!(p.contains(&"c/keep.txt"), "{p:?}");
    assert!(
        !p.iter().any(|p| p.contains("secret") || p.contains("logs")),
        "{p:?}"
    );
}

#[test]
fn copy_exclude_leaves_out_matching_paths() {
    let f = Fixture::new();
    f.file("src/main.rs", b"fn main(){}");
    f.file("src/debug.log", b"L");
    let out = f
        .build("FROM base\nCOPY --exclude=*.log src /s/\n")
        .unwrap();
    assert_eq!(paths(&f.top(&out.image)), ["s", "s/main.rs"]);
}

/// A tar archive in the context holding `inner/f` and `g`.
fn archive(f: &Fixture) {
    let mut b = tar::Builder::new(Vec::new());
    for (p, c) in [("inner/f", &b"F"[..]), ("g", b"G")] {
        let mut h = tar::Header::new_gnu();
        h.set_size(c.len() as u64);
        h.set_mode(0o640);
        h.set_uid(33);
        h.set_gid(33);
        h.set_mtime(77);
        h.set_cksum();
        b.append_data(&mut h, p, c).unwrap();
    }
    f.file("a.tar", &b.into_inner().unwrap());
}

#[test]
fn add_extracts_a_local_tar_keeping_its_owners_and_modes() {
    let f = Fixture::new();
    archive(&f);
    let out = f.build("FROM base\nADD a.tar /x/\n").unwrap();
    let top = f.top(&out.image);
    let p = paths(&top);
    assert!(p.contains(&"x/inner/f") && p.contains(&"x/g"), "{p:?}");
    assert!(!p.contains(&"x/a.tar"), "{p:?}");
    let g = node(&top, "x/g");
    assert_eq!(
        (g.content.as_slice(), g.mode, g.uid),
        (&b"G"[..], 0o640, 33)
    );
}

#[test]
fn copy_of_a_tar_does_not_extract_it() {
    let f = Fixture::new();
    archive(&f);
    let out = f.build("FROM base\nCOPY a.tar /x/\n").unwrap();
    assert_eq!(paths(&f.top(&out.image)), ["x", "x/a.tar"]);
}

#[test]
fn copy_heredoc_writes_the_inline_file() {
    let f = Fixture::new();
    let out = f
        .build("FROM base\nCOPY <<EOF /etc/motd\nhello\nworld\nEOF\n")
        .unwrap();
    let top = f.top(&out.image);
    assert_eq!(paths(&top), ["etc", "etc/motd"]);
    assert_eq!(node(&top, "etc/motd").content, b"hello\nworld\n");
}

#[test]
fn context_files_get_the_build_epoch_as_mtime() {
    let f = Fixture::new();
    f.file("a", b"A");
    f.file("d/b", b"B");
    let mut o = f.opts();
    o.epoch = 1_234_567;
    f.dockerfile("FROM base\nCOPY a /a\nCOPY d /d\n");
    let out = f.build_opts(&o).unwrap();
    assert_eq!(node(&f.layer(&out.image, 1), "a").mtime, 1_234_567);
    let l2 = f.layer(&out.image, 2);
    assert_eq!(node(&l2, "d/b").mtime, 1_234_567);
}

#[test]
fn copy_of_a_missing_source_names_the_dockerfile_line_and_the_source() {
    let f = Fixture::new();
    f.file("a", b"A");
    let text = err_text(f.build("FROM base\nCOPY a /a\nCOPY nothere.txt /b\n"));
    assert!(text.contains("Dockerfile:3:"), "{text}");
    assert!(text.contains("nothere.txt"), "{text}");
}

/// The base's files and `usr/lib`, with `lib` a symlink to it (as in merged-/usr systems).
fn merged_usr(f: &Fixture) {
    let mut entries = super::base_entries();
    entries.push(crate::layer::Entry::dir("usr", 0o755));
    entries.push(crate::layer::Entry::dir("usr/lib", 0o755));
    entries.push(crate::layer::Entry::symlink("lib", "usr/lib"));
    f.image("merged", &entries, |_| {});
}

#[test]
fn copy_into_a_symlinked_directory_writes_through_the_link() {
    let f = Fixture::new();
    merged_usr(&f);
    f.file("a.so", b"SO");
    let out = f.build("FROM merged\nCOPY a.so /lib/\n").unwrap();
    let top = f.top(&out.image);
    assert_eq!(paths(&top), ["usr", "usr/lib", "usr/lib/a.so"]);
}

#[test]
fn workdir_below_a_symlinked_directory_is_made_through_the_link() {
    let f = Fixture::new();
    merged_usr(&f);
    let out = f.build("FROM merged\nWORKDIR /lib/app\n").unwrap();
    let top = f.top(&out.image);
    assert_eq!(paths(&top), ["usr", "usr/lib", "usr/lib/app"]);
    assert_eq!(
        out.image.config.config.working_dir.as_deref(),
        Some("/lib/app")
    );
}

#[test]
fn copy_dest_expands_env_and_is_relative_to_the_workdir() {
    let f = Fixture::new();
    f.file("a", b"A");
    let out = f
        .build("FROM base\nENV D=/opt/app\nCOPY a $D/\nWORKDIR /srv\nCOPY a rel/b\n")
        .unwrap();
    assert_eq!(
        paths(&f.layer(&out.image, 1)),
        ["opt", "opt/app", "opt/app/a"]
    );
    assert_eq!(paths(&f.top(&out.image)), ["srv", "srv/rel", "srv/rel/b"]);
}

#[test]
fn dockerignore_exceptions_bring_files_back() {
    let f = Fixture::new();
    f.file("docs/a.md", b"A");
    f.file("docs/keep.md", b"K");
    f.file(".dockerignore", b"docs\n!docs/keep.md\n");
    let out = f.build("FROM base\nCOPY . /c/\n").unwrap();
    let top = f.top(&out.image);
    let p = paths(&top);
    assert!(p.contains(&"c/docs/keep.md"), "{p:?}");
    assert!(!p.contains(&"c/docs/a.md"), "{p:?}");
}
