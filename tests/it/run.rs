//! RUN end to end through `kiln build`: busybox bases built as root and as the unprivileged test
//! user (subordinate ids), with both snapshotters, checked with `umoci unpack`, the layers' tar
//! entries and `podman run`; RUN mounts (cache, secret, bind); a failing RUN; bad input refused
//! before any step runs; and `variants/Dockerfile.minimal` on a debootstrapped Debian base.
//!
//! Without user namespaces, podman, umoci or debootstrap the tests say why and pass, except with
//! `CI=true`, where they fail.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::runas::{
    blob_views, contains, debootstrap, layer_entries, layout_layers, podman_output, podman_run,
    umoci_unpack, KilnAs, TarEntry, Who,
};
use crate::support::{need, snapshot, Meta};

const KINDS: [&str; 2] = ["overlay", "walk"];

fn tools() -> bool {
    need("umoci") && need("podman")
}

/// Builds `ctx` as `name` with `--snapshotter kind`, writing an OCI layout `out/<name>` (tag
/// `t`) and an archive `out/<name>.tar`; returns the metadata.
fn build(k: &KilnAs, ctx: &Path, name: &str, kind: &str, extra: &[&str]) -> serde_json::Value {
    let meta = k.path(&format!("out/{name}.json"));
    let layout = k.path(&format!("out/{name}"));
    let archive = k.path(&format!("out/{name}.tar"));
    let mut args = vec![
        "build".to_string(),
        ctx.display().to_string(),
        "-t".into(),
        name.into(),
        "--snapshotter".into(),
        kind.into(),
        "--metadata-file".into(),
        meta.display().to_string(),
        "-o".into(),
        format!("oci:{}:t", layout.display()),
        "-o".into(),
        format!("oci-archive:{}", archive.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    k.ok(&args);
    serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap()
}

fn digest(meta: &serde_json::Value) -> String {
    meta["containerimage.digest"].as_str().unwrap().to_string()
}

fn entries_of(layer: &[u8]) -> BTreeMap<String, TarEntry> {
    layer_entries(layer)
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect()
}

// ---- files, owners, links, modes, --network=none, a bind mount from the context ----

const FILES: &str = r#"FROM busybox
RUN mkdir -p /olddir/sub /gonedir \
 && echo a > /olddir/a && echo b > /olddir/sub/b && echo old > /etc/motd \
 && echo bye > /gone && touch /gonedir/x
RUN echo new > /new \
 && echo changed > /etc/motd \
 && rm /gone && rm -rf /gonedir \
 && rm -rf /olddir && mkdir /olddir && echo fresh > /olddir/fresh \
 && touch /owned && chown 1000:1000 /owned \
 && mkdir /home/app/priv && echo s > /home/app/priv/s && chmod 600 /home/app/priv/s \
 && chown -R 1000:1000 /home/app/priv && chmod 700 /home/app/priv \
 && chown 1001:1002 /var \
 && ln -s /etc/motd /link && echo h > /h1 && ln /h1 /h2 && ln /bin/busybox /bin/hardbb \
 && cp /bin/busybox /su && chmod 4755 /su && mkdir /sg && chmod 2775 /sg
RUN --network=none test "$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')" = lo \
 && echo none > /net
RUN --mount=type=bind,source=files,target=/mnt/ctx \
    cat /mnt/ctx/hello > /from-bind && ! touch /mnt/ctx/x 2>/dev/null
CMD ["sh", "-c", "cat /new /etc/motd /net /from-bind; ls /olddir; stat -c '%n %u:%g %a %F' /owned /home/app/priv /home/app/priv/s /var /su /sg; readlink /link; test ! -e /gone && test ! -e /gonedir && test ! -e /mnt && echo absent; [ $(stat -c %i /h1) = $(stat -c %i /h2) ] && [ $(stat -c %i /bin/hardbb) = $(stat -c %i /bin/busybox) ] && echo hard"]
"#;

const FILES_PODMAN: &str = "new\nchanged\nnone\nhello\nfresh\n/owned 1000:1000 644 regular empty file\n/home/app/priv 1000:1000 700 directory\n/home/app/priv/s 1000:1000 600 regular file\n/var 1001:1002 755 directory\n/su 0:0 4755 regular file\n/sg 0:0 2775 directory\n/etc/motd\nabsent\nhard\n";

fn meta(kind: &'static str, mode: u32, uid: u32, gid: u32) -> (&'static str, u32, u32, u32) {
    (kind, mode, uid, gid)
}

/// The unpacked tree has what the RUN steps made, with their owners, modes and types.
fn check_unpacked(rootfs: &Path, who: Who, kind: &str) {
    let tree = snapshot(rootfs);
    let at = |p: &str| -> &Meta {
        tree.get(p)
            .unwrap_or_else(|| panic!("{who:?} {kind}: `{p}` missing after umoci unpack"))
    };
    let expect = [
        ("new", meta("file", 0o644, 0, 0)),
        ("owned", meta("file", 0o644, 1000, 1000)),
        ("home/app/priv", meta("dir", 0o700, 1000, 1000)),
        ("home/app/priv/s", meta("file", 0o600, 1000, 1000)),
        ("var", meta("dir", 0o755, 1001, 1002)),
        ("su", meta("file", 0o4755, 0, 0)),
        ("sg", meta("dir", 0o2775, 0, 0)),
        ("link", meta("symlink", 0o777, 0, 0)),
        ("olddir", meta("dir", 0o755, 0, 0)),
        ("olddir/fresh", meta("file", 0o644, 0, 0)),
    ];
    for (p, (k, mode, uid, gid)) in expect {
        let m = at(p);
        assert_eq!(
            (m.kind, m.mode, m.uid, m.gid),
            (k, mode, uid, gid),
            "{who:?} {kind}: `{p}`"
        );
    }
    let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).unwrap();
    assert_eq!(read("new"), "new\n");
    assert_eq!(read("etc/motd"), "changed\n");
    assert_eq!(read("home/app/priv/s"), "s\n");
    assert_eq!(read("net"), "none\n");
    assert_eq!(read("from-bind"), "hello\n");
    assert_eq!(at("link").link, "/etc/motd");
    assert_eq!(
        at("h2").hardlink_group,
        "h1",
        "{who:?} {kind}: h2 is not h1's hard link"
    );
    assert_eq!(
        at("bin/hardbb").hardlink_group,
        at("bin/busybox").hardlink_group
    );
    assert_eq!(at("bin/hardbb").content, at("bin/busybox").content);
    for gone in ["gone", "gonedir", "olddir/a", "olddir/sub", "mnt"] {
        assert!(
            !tree.contains_key(gone),
            "{who:?} {kind}: `{gone}` is still there"
        );
    }
    // Nothing kiln bound or mounted leaks into the image.
    for p in [
        "proc",
        "dev",
        "sys",
        "etc/hosts",
        "etc/resolv.conf",
        "etc/hostname",
        "run",
    ] {
        assert!(
            !tree.contains_key(p),
            "{who:?} {kind}: `{p}` leaked into the image"
        );
    }
}

/// The layer of the second RUN carries its deletions as whiteouts and its owners as given.
fn check_layers(layout: &Path, who: Who, kind: &str) {
    let layers = layout_layers(layout, "t");
    assert_eq!(layers.len(), 5, "{who:?} {kind}: base + 4 RUN layers");
    let l = entries_of(&layers[2]);
    let names: Vec<&String> = l.keys().collect();
    for wh in [".wh.gone", ".wh.gonedir"] {
        assert!(l.contains_key(wh), "{who:?} {kind}: no `{wh}` in {names:?}");
    }
    let opaque = l.contains_key("olddir/.wh..wh..opq");
    let explicit = l.contains_key("olddir/.wh.a") && l.contains_key("olddir/.wh.sub");
    assert!(
        opaque || explicit,
        "{who:?} {kind}: the replaced directory is neither opaque nor whited out: {names:?}"
    );
    let owned = &l["owned"];
    assert_eq!((owned.uid, owned.gid), (1000, 1000), "{who:?} {kind}");
    assert_eq!(l["h2"].kind, 'h');
    assert_eq!(l["h2"].link, "h1");
    assert_eq!(l["su"].mode, 0o4755);
    // The bind mount's target is not in its step's layer.
    let bind = entries_of(&layers[4]);
    assert!(
        bind.keys().all(|p| !p.starts_with("mnt")),
        "{who:?} {kind}: {:?}",
        bind.keys().collect::<Vec<_>>()
    );
}

fn files_owners_links_and_modes(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    if !tools() || !k.busybox() {
        return;
    }
    let ctx = k.context("ctx", FILES, &[("files/hello", b"hello\n")]);
    let mut digests = Vec::new();
    for kind in KINDS {
        let name = format!("files-{kind}");
        let m = build(&k, &ctx, &name, kind, &["--no-cache"]);
        let layout = k.path(&format!("out/{name}"));
        check_layers(&layout, who, kind);
        let rootfs = umoci_unpack(&layout, "t", &k.path(&format!("bundle-{kind}")));
        check_unpacked(&rootfs, who, kind);
        let printed = podman_run(
            &k.path(&format!("podman-{kind}")),
            &k.path(&format!("out/{name}.tar")),
            &[],
        );
        assert_eq!(printed, FILES_PODMAN, "{who:?} {kind}");
        digests.push(digest(&m));
    }
    assert_eq!(
        digests[0], digests[1],
        "{who:?}: overlay and walk built different images from the same Dockerfile"
    );
    if who == Who::User {
        // Root builds the same image: same base, same steps, the same ids in the layers.
        let Some(r) = KilnAs::new(Who::Root) else {
            return;
        };
        assert!(r.busybox());
        let ctx = r.context("ctx", FILES, &[("files/hello", b"hello\n")]);
        let m = build(&r, &ctx, "files-root", "overlay", &[]);
        assert_eq!(
            digest(&m),
            digests[0],
            "root and the test user built different images"
        );
    }
}

#[test]
fn files_owners_links_and_modes_as_root() {
    files_owners_links_and_modes(Who::Root);
}

#[test]
fn files_owners_links_and_modes_as_unprivileged_user() {
    files_owners_links_and_modes(Who::User);
}

// ---- a failing RUN ----

fn a_failing_run_stops_the_build(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    if !k.busybox() {
        return;
    }
    let ctx = k.context(
        "ctx",
        "FROM busybox\nRUN echo first > /first\nRUN echo out-1; echo err-2 >&2; echo last-line; exit 7\nRUN echo never-ran\n",
        &[],
    );
    for kind in KINDS {
        let (code, _, err) = k.fails(&[
            "build",
            ctx.to_str().unwrap(),
            "-t",
            "broken:1",
            "--snapshotter",
            kind,
            "--no-cache",
        ]);
        assert_eq!(code, 1, "{who:?} {kind}: {err}");
        for needle in [
            "Dockerfile:3:1: RUN echo out-1; echo err-2 >&2; echo last-line; exit 7",
            "exit code 7",
            "out-1",
            "err-2",
            "last-line",
        ] {
            assert!(
                err.contains(needle),
                "{who:?} {kind}: no `{needle}` in:\n{err}"
            );
        }
        assert!(!err.contains("never-ran"), "{err}");
        let (_, _, inspect) = k.fails(&["inspect", "broken:1"]);
        assert!(inspect.contains("broken"), "{inspect}");
        k.ok(&["store", "fsck"]);
    }
    // The store still works: the fixed Dockerfile builds, its first RUN from the cache.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo first > /first\nRUN echo fixed > /fixed\n",
    )
    .unwrap();
    let m = build(&k, &ctx, "fixed", "walk", &[]);
    let steps = m["steps"].as_array().unwrap();
    assert_eq!(steps[0]["cached"], true, "{m:#}");
    assert_eq!(steps[1]["cached"], false, "{m:#}");
    k.ok(&["store", "fsck"]);
}

#[test]
fn a_failing_run_stops_the_build_as_root() {
    a_failing_run_stops_the_build(Who::Root);
}

#[test]
fn a_failing_run_stops_the_build_as_unprivileged_user() {
    a_failing_run_stops_the_build(Who::User);
}

// ---- RUN --mount=type=cache ----

fn file_in_layers(layers: &[Vec<u8>], path: &str) -> Option<Vec<u8>> {
    let mut found = None;
    for l in layers {
        let raw = blob_views(l).pop().unwrap();
        let mut a = tar::Archive::new(&raw[..]);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path_bytes().as_ref() == path.as_bytes() {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut v).unwrap();
                found = Some(v);
            }
        }
    }
    found
}

fn a_cache_mount_is_kept_across_builds(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    if !k.busybox() {
        return;
    }
    for kind in KINDS {
        let first = k.context(
            &format!("ctx1-{kind}"),
            &format!("FROM busybox\nRUN --mount=type=cache,target=/var/cache/t,id=tc-{kind} echo from-first > /var/cache/t/stamp && echo one > /one\nRUN --mount=type=cache,target=/c,id=owned-{kind},uid=1000,gid=1000,mode=0700 stat -c '%u:%g %a' /c > /c-stat && touch /c/x\n"),
            &[],
        );
        let second = k.context(
            &format!("ctx2-{kind}"),
            &format!("FROM busybox\nRUN --mount=type=cache,target=/var/cache/t,id=tc-{kind} cat /var/cache/t/stamp > /seen\n"),
            &[],
        );
        build(&k, &first, "cache1", kind, &[]);
        let layers = layout_layers(&k.path("out/cache1"), "t");
        for l in &layers[1..] {
            for e in layer_entries(l) {
                assert!(
                    !e.path.starts_with("var/cache") && e.path != "c" && !e.path.starts_with("c/"),
                    "{who:?} {kind}: the cache mount leaked `{}` into a layer",
                    e.path
                );
            }
        }
        assert_eq!(
            file_in_layers(&layers, "c-stat").as_deref(),
            Some(&b"1000:1000 700\n"[..]),
            "{who:?} {kind}"
        );
        build(&k, &second, "cache2", kind, &[]);
        let layers = layout_layers(&k.path("out/cache2"), "t");
        assert_eq!(
            file_in_layers(&layers, "seen").as_deref(),
            Some(&b"from-first\n"[..]),
            "{who:?} {kind}: the second build did not see the first one's cache"
        );
        let printed = podman_run(
            &k.path(&format!("podman-cache-{kind}")),
            &k.path("out/cache2.tar"),
            &["cat", "/seen"],
        );
        assert_eq!(printed, "from-first\n");
    }
}

#[test]
fn a_cache_mount_is_kept_across_builds_as_root() {
    if need("podman") {
        a_cache_mount_is_kept_across_builds(Who::Root);
    }
}

#[test]
fn a_cache_mount_is_kept_across_builds_as_unprivileged_user() {
    if need("podman") {
        a_cache_mount_is_kept_across_builds(Who::User);
    }
}

// ---- RUN --mount=type=secret ----

fn a_secret_never_reaches_the_store(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    if !k.busybox() {
        return;
    }
    // Unique bytes, in no Dockerfile, layer or log unless kiln leaks them.
    let secret = format!(
        "kiln-secret-{:x}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let secret_file = k.path("secret.txt");
    std::fs::write(&secret_file, &secret).unwrap();
    k.give(&secret_file);
    let sha = crate::support::sha256_hex(secret.as_bytes());
    let ctx = k.context(
        "ctx",
        "FROM busybox\n\
         RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d' ' -f1 > /file.sha\n\
         RUN --mount=type=secret,id=tok,env=TOK printf %s \"$TOK\" | sha256sum | cut -d' ' -f1 > /env.sha\n\
         RUN --mount=type=secret,id=tok,target=/etc/tok.conf cp /etc/tok.conf /tmp/copy && sha256sum /tmp/copy | cut -d' ' -f1 > /target.sha && rm /tmp/copy\n",
        &[],
    );
    for kind in KINDS {
        let name = format!("secret-{kind}");
        let meta = k.path(&format!("out/{name}.json"));
        let layout = k.path(&format!("out/{name}"));
        let out = k
            .cmd_progress("plain")
            .args([
                "build",
                ctx.to_str().unwrap(),
                "-t",
                &name,
                "--no-cache",
                "--snapshotter",
                kind,
                "--secret",
                &format!("id=tok,src={}", secret_file.display()),
                "--metadata-file",
                meta.to_str().unwrap(),
                "-o",
                &format!("oci:{}:t", layout.display()),
            ])
            .output()
            .unwrap();
        crate::support::assert_success(&out, &(who, kind));
        let layers = layout_layers(&layout, "t");
        for f in ["file.sha", "env.sha", "target.sha"] {
            assert_eq!(
                file_in_layers(&layers, f),
                Some(format!("{sha}\n").into_bytes()),
                "{who:?} {kind}: the step did not see the secret through {f}"
            );
        }
        for l in &layers {
            for e in layer_entries(l) {
                assert!(
                    !e.path.starts_with("run") && e.path != "etc/tok.conf",
                    "{who:?} {kind}: secret mount point `{}` in a layer",
                    e.path
                );
            }
        }
        let needle = secret.as_bytes();
        for text in [&out.stdout, &out.stderr] {
            assert!(
                !contains(text, needle),
                "{who:?} {kind}: the secret is in the progress output"
            );
        }
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("sha256sum /run/secrets/tok"),
            "plain progress shows the steps: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut searched = 0;
        let mut files = k.store_files();
        let mut layout_files = Vec::new();
        collect_files(&layout, &mut layout_files);
        files.extend(layout_files);
        files.push(meta.clone());
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            for view in blob_views(&bytes) {
                assert!(
                    !contains(&view, needle),
                    "{who:?} {kind}: the secret's bytes are in `{}`",
                    f.display()
                );
                searched += 1;
            }
        }
        assert!(searched > 10, "searched only {searched} files");
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            collect_files(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

#[test]
fn a_secret_never_reaches_the_store_as_root() {
    a_secret_never_reaches_the_store(Who::Root);
}

#[test]
fn a_secret_never_reaches_the_store_as_unprivileged_user() {
    a_secret_never_reaches_the_store(Who::User);
}

// ---- bad input ----

fn bad_input_is_refused_before_any_step_runs(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    if !k.busybox() {
        return;
    }
    // A base without /bin/sh.
    let nosh = k.path("nosh-rootfs");
    std::fs::create_dir_all(nosh.join("etc")).unwrap();
    std::fs::write(nosh.join("etc/hello"), "hi\n").unwrap();
    k.ok(&["import", nosh.to_str().unwrap(), "-t", "nosh"]);
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "FROM nosh\nRUN echo step-output\n",
            "Dockerfile:2:1: RUN echo step-output",
            &["`/bin/sh` does not exist in the image", "exec form", "a base image with a shell"],
        ),
        (
            // The shell is missing in a later stage: known before the first stage's RUN runs.
            "FROM busybox AS a\nRUN echo step-output && echo step-output > /o\nFROM nosh\nRUN --mount=type=bind,from=a,source=/o,target=/o cat /o\n",
            "Dockerfile:4:1: RUN --mount=type=bind,from=a,source=/o,target=/o cat /o",
            &["`/bin/sh` does not exist in the image", "exec form"],
        ),
        (
            "FROM busybox\nRUN echo step-output\nRUN --mount=type=nfs,target=/x true\n",
            "Dockerfile:3:5: invalid mount \"type=nfs,target=/x\"",
            // The parser names the bad type but not the valid ones (reported: it should list
            // bind, cache, tmpfs, secret and ssh).
            &["unsupported mount type \"nfs\""],
        ),
        (
            "FROM busybox\nRUN echo step-output\nRUN --mount=type=secret,id=apikey cat /run/secrets/apikey\n",
            "Dockerfile:3:1: RUN --mount=type=secret,id=apikey cat /run/secrets/apikey",
            &["secret `apikey` was not provided", "--secret id=apikey,src=FILE", "required=false"],
        ),
    ];
    for (i, (dockerfile, location, needles)) in cases.iter().enumerate() {
        let ctx = k.context(&format!("bad-{i}"), dockerfile, &[]);
        for kind in KINDS {
            let out = k
                .cmd_progress("plain")
                .args([
                    "build",
                    ctx.to_str().unwrap(),
                    "-t",
                    "bad:1",
                    "--snapshotter",
                    kind,
                ])
                .output()
                .unwrap();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                out.status.code(),
                Some(1),
                "{who:?} {kind}: {dockerfile}\n{all}"
            );
            assert!(
                all.contains(location),
                "{who:?} {kind}: no `{location}` in:\n{all}"
            );
            for n in *needles {
                assert!(all.contains(n), "{who:?} {kind}: no `{n}` in:\n{all}");
            }
            // The RUN before the bad one never ran (its output would follow its header).
            assert!(
                !all.lines()
                    .any(|l| l.trim_end().ends_with("step-output") && !l.contains("RUN")),
                "{who:?} {kind}: a step ran before the error:\n{all}"
            );
        }
    }
    k.ok(&["store", "fsck"]);
}

#[test]
fn bad_input_is_refused_before_any_step_runs_as_root() {
    bad_input_is_refused_before_any_step_runs(Who::Root);
}

#[test]
fn bad_input_is_refused_before_any_step_runs_as_unprivileged_user() {
    bad_input_is_refused_before_any_step_runs(Who::User);
}

/// A RUN on a base unpacks the base once, into a snapshot the next build reuses (the same
/// digest, no second snapshot, the base's index cached); `kiln rmi` + `kiln store gc` remove
/// the snapshot with the base's layers, even when a user namespace owns its files.
fn a_base_snapshot_is_reused_then_pruned(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    if !k.busybox() {
        return;
    }
    let ctx = k.context(
        "snap",
        "FROM busybox\nRUN mkdir -p /srv && chown 1000:1000 /srv && echo hi > /srv/x\n",
        &[],
    );
    let snapshots = |k: &KilnAs| -> Vec<String> {
        std::fs::read_dir(k.k.root().join("snapshots-v1"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = build(&k, &ctx, "snap1", "overlay", &["--no-cache"]);
    let made = snapshots(&k);
    assert_eq!(made.len(), 1, "{who:?}: one snapshot of the base: {made:?}");
    let second = build(&k, &ctx, "snap2", "overlay", &["--no-cache"]);
    assert_eq!(digest(&first), digest(&second), "{who:?}");
    assert_eq!(
        snapshots(&k),
        made,
        "{who:?}: the second build reused the snapshot"
    );
    let indexes = std::fs::read_dir(k.k.root().join("cache-v1/fsindex"))
        .unwrap()
        .count();
    assert_eq!(indexes, 1, "{who:?}: the base's index is cached");
    // While an image uses the base, gc keeps the snapshot.
    k.ok(&["store", "gc"]);
    assert_eq!(
        snapshots(&k),
        made,
        "{who:?}: gc removed a snapshot still in use"
    );
    // A base with a directory of another owner (a subordinate id on the host, rootless): the
    // caller alone cannot delete what is inside it.
    let on_top = k.context("snap-top", "FROM snap1\nRUN test -f /srv/x\n", &[]);
    build(&k, &on_top, "snap3", "overlay", &[]);
    assert_eq!(snapshots(&k).len(), 2, "{who:?}");
    k.ok(&["rmi", "snap1", "snap2", "snap3", "busybox"]);
    let (code, err) = {
        let (c, _, e) = k.fails(&["rmi", "snap1"]);
        (c, e)
    };
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no image named snap1"), "{err}");
    k.ok(&["store", "gc"]);
    assert!(
        snapshots(&k).is_empty(),
        "{who:?}: gc kept {:?}",
        snapshots(&k)
    );
    assert_eq!(
        std::fs::read_dir(k.k.root().join("cache-v1/fsindex"))
            .unwrap()
            .count(),
        0,
        "{who:?}: gc kept the index of a removed base"
    );
    k.ok(&["store", "fsck"]);
}

#[test]
fn a_base_snapshot_is_reused_then_pruned_as_root() {
    a_base_snapshot_is_reused_then_pruned(Who::Root);
}

#[test]
fn a_base_snapshot_is_reused_then_pruned_as_unprivileged_user() {
    a_base_snapshot_is_reused_then_pruned(Who::User);
}

/// A base of several layers where one layer makes a 0700 directory of uid 1000 and a later
/// layer writes into it: rootless, uid 1000 is a subordinate id the caller cannot write as, so
/// the base must be unpacked before owners are set (both snapshotters).
fn a_private_directory_filled_by_a_later_base_layer(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    if !k.busybox() {
        return;
    }
    let base = k.context(
        "private-base",
        "FROM busybox\nRUN mkdir -p /home/app && chown 1000:1000 /home/app && chmod 700 /home/app\nRUN echo inside > /home/app/f && chown 1000:1000 /home/app/f\n",
        &[],
    );
    build(&k, &base, "private", "overlay", &[]);
    for kind in KINDS {
        let ctx = k.context(
            &format!("private-top-{kind}"),
            "FROM private\nRUN cat /home/app/f > /seen && stat -c '%u:%g %a' /home/app /home/app/f >> /seen\n",
            &[],
        );
        build(
            &k,
            &ctx,
            &format!("private-top-{kind}"),
            kind,
            &["--no-cache"],
        );
        let layers = layout_layers(&k.path(&format!("out/private-top-{kind}")), "t");
        assert_eq!(
            file_in_layers(&layers, "seen").as_deref(),
            Some(&b"inside\n1000:1000 700\n1000:1000 644\n"[..]),
            "{who:?} {kind}"
        );
    }
}

#[test]
fn a_private_directory_filled_by_a_later_base_layer_as_root() {
    a_private_directory_filled_by_a_later_base_layer(Who::Root);
}

#[test]
fn a_private_directory_filled_by_a_later_base_layer_as_unprivileged_user() {
    a_private_directory_filled_by_a_later_base_layer(Who::User);
}

/// A store on a file system overlayfs cannot use as its upper directory (another overlay):
/// `--snapshotter overlay` is refused before any step, naming the fix.
#[test]
fn a_forced_overlay_snapshotter_that_cannot_work_says_to_use_walk() {
    let Some(k) = KilnAs::new(Who::Root) else {
        return;
    };
    if !crate::support::is_root() || !k.busybox() {
        return;
    }
    let base = k.path("ovl");
    for d in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    let mounted = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            base.join("lower").display(),
            base.join("upper").display(),
            base.join("work").display()
        ))
        .arg(base.join("merged"))
        .status()
        .unwrap();
    assert!(mounted.success(), "cannot mount an overlay as root");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(base.join("merged"));
    let store = base.join("merged/store");
    let ctx = k.context("ctx", "FROM busybox\nRUN echo step-output\n", &[]);
    let copy = |to: &Path| {
        let layout = k.path("bb-layout");
        if !layout.exists() {
            k.ok(&["copy", "busybox", &format!("oci:{}:bb", layout.display())]);
        }
        crate::support::run(
            Command::new(env!("CARGO_BIN_EXE_kiln"))
                .arg("--root")
                .arg(to)
                .args(["copy", &format!("oci:{}:bb", layout.display()), "busybox"]),
        );
    };
    copy(&store);
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&store)
        .args([
            "--progress",
            "plain",
            "build",
            ctx.to_str().unwrap(),
            "-t",
            "x",
            "--snapshotter",
            "overlay",
        ])
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        eprintln!("overlay works with its upper directory on overlayfs here; nothing to refuse");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("--snapshotter walk"), "{all}");
    assert!(!all.lines().any(|l| l.trim_end() == "step-output"), "{all}");
    // walk works on the same store.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&store)
        .args([
            "--progress",
            "quiet",
            "build",
            ctx.to_str().unwrap(),
            "-t",
            "x",
            "--snapshotter",
            "walk",
        ])
        .output()
        .unwrap();
    crate::support::assert_success(&out, &"walk on an overlay store");
}

// ---- variants/Dockerfile.minimal on Debian bookworm ----

fn variants_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("variants")
}

fn dockerfile_minimal(k: &KilnAs, extra: &[&str], single: bool) {
    if !tools() {
        return;
    }
    let Some(tar) = debootstrap::rootfs_tarball() else {
        return;
    };
    let start = std::time::Instant::now();
    k.ok(&[
        "import",
        tar.to_str().unwrap(),
        "-t",
        "local/debian:bookworm-minbase",
    ]);
    // A context the user can read, with the Dockerfile as it is in the repository.
    let ctx = k.context(
        "ctx",
        &std::fs::read_to_string(variants_dir().join("Dockerfile.minimal")).unwrap(),
        &[],
    );
    let archive = k.path("out/minimal.tar");
    let mut args = vec![
        "build".to_string(),
        ctx.display().to_string(),
        "-t".into(),
        "sandbox-minimal:1.4.0".into(),
        "--build-arg".into(),
        "BASE=local/debian:bookworm-minbase".into(),
        "--build-arg".into(),
        "VERSION=1.4.0".into(),
        "-o".into(),
        format!("oci-archive:{}", archive.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    k.ok(&args);
    eprintln!(
        "{:?} {extra:?}: import + build took {:?}",
        k.who,
        start.elapsed()
    );
    let info = k.ok(&["inspect", "sandbox-minimal:1.4.0"]);
    for needle in [
        "\"1000:1000\"",
        "\"/workspace\"",
        "LANG=C.UTF-8",
        "SANDBOX_VERSION=1.4.0",
        "\"org.opencontainers.image.version\": \"1.4.0\"",
    ] {
        assert!(info.contains(needle), "no {needle} in {info}");
    }
    let p = k.path("podman");
    let id = podman_run(&p, &archive, &["id"]);
    assert!(
        id.starts_with("uid=1000(sandbox) gid=1000(sandbox)"),
        "{id}"
    );
    let out = podman_output(
        &p,
        &archive,
        &["bash", "-c", "pwd; stat -c '%U:%G %a' /workspace ~; echo $LANG $SANDBOX_VERSION; touch /workspace/w && echo writable"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // Single-id mode cannot give files other owners: /workspace stays root's (documented).
    let want = if single {
        "/workspace\nroot:root 755\nroot:root 755\nC.UTF-8 1.4.0\n"
    } else {
        "/workspace\nsandbox:sandbox 755\nsandbox:sandbox 755\nC.UTF-8 1.4.0\nwritable\n"
    };
    assert_eq!(text, want, "{}", String::from_utf8_lossy(&out.stderr));
}

/// Slow (about 50 s, and a few minutes more the first time on a machine, for debootstrap) and
/// needs the Debian mirror for apt-get; it still runs with every `cargo test`, because it is the
/// one test of a real distribution through RUN.
#[test]
fn dockerfile_minimal_on_debian_as_unprivileged_user() {
    let Some(k) = KilnAs::new(Who::User) else {
        return;
    };
    dockerfile_minimal(&k, &[], false);
}

/// Slow (about 50 s, and a few minutes more the first time on a machine, for debootstrap) and
/// needs the Debian mirror for apt-get; it still runs with every `cargo test`, because it is the
/// one test of a real distribution through RUN.
#[test]
fn dockerfile_minimal_on_debian_as_unprivileged_user_in_single_id_mode() {
    // No newuidmap/newgidmap on PATH (only pasta, for the steps' network), and --single-id as
    // well.
    let pasta_only =
        std::env::temp_dir().join(format!("kiln-it-pasta-only-{}", std::process::id()));
    std::fs::create_dir_all(&pasta_only).unwrap();
    if let Some(pasta) = crate::support::sandbox::pasta() {
        let _ = std::os::unix::fs::symlink(pasta, pasta_only.join("pasta"));
    }
    let Some(k) = KilnAs::with_path(Who::User, pasta_only.to_str().unwrap()) else {
        return;
    };
    dockerfile_minimal(&k, &["--single-id"], true);
    let _ = std::fs::remove_dir_all(&pasta_only);
}

// ---- what later steps see of a RUN's deletions ----

/// A WORKDIR after a RUN that deleted it creates it again, whether the RUN ran or came from the
/// cache (the stage's file index once kept what a fresh RUN had deleted).
#[test]
fn a_workdir_deleted_by_a_run_is_created_again() {
    let Some(k) = KilnAs::new(Who::Root) else {
        return;
    };
    if !k.busybox() {
        return;
    }
    let ctx = k.context(
        "ctx",
        "FROM busybox\nRUN rm -rf /home/app\nUSER 1000:1000\nWORKDIR /home/app\n",
        &[],
    );
    for kind in KINDS {
        let cold = build(&k, &ctx, "wd", kind, &["--no-cache"]);
        let layers = layout_layers(&k.path("out/wd"), "t");
        assert_eq!(layers.len(), 3, "{kind}: base, RUN, WORKDIR: {cold:#}");
        let wd = entries_of(&layers[2]);
        let e = wd.get("home/app").expect("WORKDIR made no /home/app");
        assert_eq!((e.kind, e.uid, e.gid), ('d', 1000, 1000), "{kind}");
        let warm = build(&k, &ctx, "wd", kind, &[]);
        assert!(warm["steps"][0]["cached"].as_bool().unwrap(), "{warm:#}");
        assert_eq!(
            digest(&cold),
            digest(&warm),
            "{kind}: cached and fresh RUN differ"
        );
    }
}

/// Runs kiln with plain progress (which shows steps' output), expecting failure; returns the
/// exit code and stdout + stderr.
fn fails_plain(k: &KilnAs, args: &[&str]) -> (i32, String) {
    let out = k.cmd_progress("plain").args(args).output().unwrap();
    assert!(!out.status.success(), "kiln {args:?} should have failed");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), all)
}

/// A TCP port on the host's 127.0.0.1 that accepts and closes every connection (so a client
/// that gets through exits at once), until the value is dropped.
struct HostLoopbackPort {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostLoopbackPort {
    fn new() -> HostLoopbackPort {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in tcp.incoming() {
                drop(conn);
                if s.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
            }
        });
        HostLoopbackPort {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HostLoopbackPort {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `kiln build`'s network flags end to end: a RUN cannot reach a port on the host's 127.0.0.1
/// by default but has an interface besides `lo`; `--network none` leaves only `lo` (and keys
/// the RUN apart from the default, as BuildKit does, while a default rebuild is cached);
/// `--network host` and `RUN --network=host` need `--allow network.host` (an error naming the
/// flag, before any step runs) and with it do reach the host's loopback.
fn network_flags_and_the_host_entitlement(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    if !k.busybox() {
        return;
    }
    let host = HostLoopbackPort::new();
    let port = host.port;
    let ctx = k.context(
        "net",
        &format!(
            "FROM busybox\nRUN ! nc -w 3 127.0.0.1 {port} </dev/null && test \"$(tail -n +3 /proc/net/dev | wc -l)\" -ge 2 && echo isolated > /net\n"
        ),
        &[],
    );
    let m = build(&k, &ctx, "net", "overlay", &[]);
    assert_eq!(m["steps"][0]["cached"], false, "{m:#}");
    let m = build(&k, &ctx, "net", "overlay", &["--network", "default"]);
    assert_eq!(m["steps"][0]["cached"], true, "{m:#}");
    // `--network none`: only lo, and not the default's cache entry.
    let none = k.context(
        "none",
        "FROM busybox\nRUN test \"$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')\" = lo\n",
        &[],
    );
    let (_, _, err) = k.fails(&["build", none.to_str().unwrap(), "-t", "none:1"]);
    assert!(err.contains("exit code 1"), "{err}");
    build(&k, &none, "none", "overlay", &["--network", "none"]);
    // `--network none` keys its RUN steps apart from the default's (as BuildKit's ExecOp
    // network field does); the default keeps the keys it had.
    let keyed = k.context("keyed", "FROM busybox\nRUN echo keyed > /k\n", &[]);
    for (flags, cached) in [
        (&["--network", "default"], false),
        (&["--network", "default"], true),
        (&["--network", "none"], false),
        (&["--network", "none"], true),
    ] {
        let m = build(&k, &keyed, "keyed", "overlay", flags);
        assert_eq!(m["steps"][0]["cached"], cached, "{flags:?}: {m:#}");
    }
    // The host's network is an entitlement.
    let hostnet = k.context(
        "hostnet",
        &format!("FROM busybox\nRUN echo step-output\nRUN --network=host nc -w 3 127.0.0.1 {port} </dev/null\n"),
        &[],
    );
    let (code, err) = fails_plain(&k, &["build", hostnet.to_str().unwrap(), "-t", "h:1"]);
    assert_eq!(code, 1, "{err}");
    for needle in [
        "Dockerfile:3:1: RUN --network=host nc -w 3 127.0.0.1",
        "`RUN --network=host` needs the `network.host` entitlement",
        "--allow network.host",
    ] {
        assert!(err.contains(needle), "no `{needle}` in:\n{err}");
    }
    assert!(
        !err.lines()
            .any(|l| l.trim_end().ends_with("step-output") && !l.contains("RUN")),
        "a step ran first:\n{err}"
    );
    let (code, _, err) = k.fails(&["build", ctx.to_str().unwrap(), "--network", "host"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--network host needs the `network.host` entitlement")
            && err.contains("--allow network.host"),
        "{err}"
    );
    let (_, _, err) = k.fails(&["build", ctx.to_str().unwrap(), "--allow", "network.hots"]);
    assert!(err.contains("unknown entitlement"), "{err}");
    build(&k, &hostnet, "h", "overlay", &["--allow", "network.host"]);
    let reach = k.context(
        "reach",
        &format!("FROM busybox\nRUN nc -w 3 127.0.0.1 {port} </dev/null\n"),
        &[],
    );
    build(
        &k,
        &reach,
        "reach",
        "overlay",
        &["--network", "host", "--allow", "network.host"],
    );
    k.ok(&["store", "fsck"]);
}

#[test]
fn network_flags_and_the_host_entitlement_as_root() {
    network_flags_and_the_host_entitlement(Who::Root);
}

#[test]
fn network_flags_and_the_host_entitlement_as_unprivileged_user() {
    network_flags_and_the_host_entitlement(Who::User);
}

/// Without pasta on PATH, a build whose RUN needs the default network fails before its first
/// step, naming what to install and the alternatives; `--network none` still builds.
#[test]
fn a_missing_pasta_is_an_error_before_the_first_step() {
    // As root: the identity mapping needs no newuidmap, so PATH may lack everything.
    let Some(k) = KilnAs::with_path(Who::Root, "/nonexistent-kiln-path") else {
        return;
    };
    if !k.busybox() {
        return;
    }
    let ctx = k.context("nopasta", "FROM busybox\nRUN echo step-output\n", &[]);
    let (code, err) = fails_plain(&k, &["build", ctx.to_str().unwrap(), "-t", "p:1"]);
    assert_eq!(code, 1, "{err}");
    for needle in [
        "RUN steps cannot get their own network on this machine",
        "`pasta` was not found on PATH",
        "apt-get install passt",
        "--network none",
        "--network host --allow network.host",
    ] {
        assert!(err.contains(needle), "no `{needle}` in:\n{err}");
    }
    // The step's output would be a line of its own.
    assert!(
        !err.lines()
            .any(|l| l.trim_end().ends_with("step-output") && !l.contains("RUN")),
        "the step ran:\n{err}"
    );
    build(&k, &ctx, "p", "overlay", &["--network", "none"]);
}

// ---- hostile bind mounts: symlinked sources and `rw` binds (the "Trust boundaries" issue) ----

/// A sentinel directory outside every tree kiln reads, with a secret the user running kiln may
/// read and write (so only kiln stands between a Dockerfile and it).
fn sentinel(k: &KilnAs) -> PathBuf {
    let s = k.path("sentinel");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(s.join("secret"), "host-secret\n").unwrap();
    k.give(&s);
    s
}

/// Builds `ctx` expecting failure and returns everything kiln printed.
fn build_fails(k: &KilnAs, ctx: &Path) -> String {
    let out = k
        .cmd_progress("plain")
        .args(["build", ctx.to_str().unwrap(), "-t", "attack:1"])
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{:?}: the build should fail:\n{all}",
        k.who
    );
    assert!(
        all.contains("Dockerfile:"),
        "{:?}: no location in:\n{all}",
        k.who
    );
    all
}

/// The files of the image `name` built by [`build`], from its layers.
fn built_file(k: &KilnAs, name: &str, path: &str) -> Option<String> {
    let layers = layout_layers(&k.path(&format!("out/{name}")), "t");
    file_in_layers(&layers, path).map(|b| String::from_utf8(b).unwrap())
}

/// Asserts that `trees` are what they were (content, modes, owners, links).
fn unchanged(who: Who, trees: &[(&Path, &BTreeMap<String, Meta>)]) {
    for (p, before) in trees {
        assert_eq!(&snapshot(p), *before, "{who:?}: `{}` changed", p.display());
    }
}

/// `RUN --mount=type=bind,source=LINK` where LINK, in the context, points out of it: the source
/// resolves inside the context (as BuildKit's chroot-like resolution does), so an absolute link
/// finds the context's own file of that name, a climbing one stays at the context's root, and a
/// link to a host file the context does not have is "does not exist", naming the source.
fn a_bind_source_symlinked_out_of_the_context_stays_in_it(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    if !k.busybox() {
        return;
    }
    let s = sentinel(&k);
    let inside = s.strip_prefix("/").unwrap().join("secret");
    let ctx = k.context(
        "ctx-link",
        "FROM busybox\nRUN --mount=type=bind,source=abs,target=/a --mount=type=bind,source=rel,target=/r --mount=type=bind,source=absdir,target=/d cat /a /r /d/secret > /leak\n",
        &[
            (inside.to_str().unwrap(), b"decoy-abs\n"),
            ("sentinel/secret", b"decoy-rel\n"),
        ],
    );
    std::os::unix::fs::symlink(s.join("secret"), ctx.join("abs")).unwrap();
    std::os::unix::fs::symlink("../sentinel/secret", ctx.join("rel")).unwrap();
    std::os::unix::fs::symlink(&s, ctx.join("absdir")).unwrap();
    k.give(&ctx);
    let bad = k.context(
        "ctx-link-missing",
        "FROM busybox\nRUN --mount=type=bind,source=host/secret,target=/x cat /x > /leak\n",
        &[],
    );
    std::os::unix::fs::symlink(&s, bad.join("host")).unwrap();
    k.give(&bad);
    let before = [snapshot(&s), snapshot(&ctx), snapshot(&bad)];
    build(&k, &ctx, "link", "walk", &[]);
    assert_eq!(
        built_file(&k, "link", "leak").as_deref(),
        Some("decoy-abs\ndecoy-rel\ndecoy-abs\n"),
        "{who:?}: a bind source left the context"
    );
    let all = build_fails(&k, &bad);
    assert!(
        all.contains("`host/secret` not found in the build context"),
        "{who:?}: {all}"
    );
    assert!(!all.contains("host-secret"), "{who:?}: {all}");
    unchanged(
        who,
        &[(&s, &before[0]), (&ctx, &before[1]), (&bad, &before[2])],
    );
}

#[test]
fn a_bind_source_symlinked_out_of_the_context_stays_in_it_as_root() {
    a_bind_source_symlinked_out_of_the_context_stays_in_it(Who::Root);
}

#[test]
fn a_bind_source_symlinked_out_of_the_context_stays_in_it_as_unprivileged_user() {
    a_bind_source_symlinked_out_of_the_context_stays_in_it(Who::User);
}

/// The same through `from=`: a stage whose RUN made absolute and climbing links to the host's
/// sentinel, and an image (imported) holding such links. Each resolves inside the stage's or
/// image's own root filesystem.
fn a_bind_source_symlinked_out_of_a_from_stage_or_image_stays_in_it(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    if !k.busybox() {
        return;
    }
    let s = sentinel(&k);
    let sd = s.display();
    let evil = k.path("evil-rootfs");
    let inside = evil.join(s.strip_prefix("/").unwrap());
    std::fs::create_dir_all(&inside).unwrap();
    std::fs::write(inside.join("secret"), "image-decoy\n").unwrap();
    std::os::unix::fs::symlink(s.join("secret"), evil.join("abs")).unwrap();
    std::os::unix::fs::symlink(
        "../../../../../../../../../..".to_owned() + &sd.to_string() + "/secret",
        evil.join("rel"),
    )
    .unwrap();
    k.ok(&["import", evil.to_str().unwrap(), "-t", "evil"]);
    let ctx = k.context(
        "ctx-from",
        &format!(
            "FROM busybox AS a\nRUN mkdir -p {sd} && echo stage-decoy > {sd}/secret && ln -s {sd}/secret /abs && ln -s ../../../../../../../../../..{sd}/secret /rel\n\
             FROM busybox\nRUN --mount=type=bind,from=a,source=/abs,target=/sa --mount=type=bind,from=a,source=rel,target=/sr --mount=type=bind,from=evil,source=abs,target=/ia --mount=type=bind,from=evil,source=/rel,target=/ir cat /sa /sr /ia /ir > /leak\n"
        ),
        &[],
    );
    k.give(&ctx);
    let before = [snapshot(&s), snapshot(&ctx)];
    build(&k, &ctx, "from", "walk", &[]);
    assert_eq!(
        built_file(&k, "from", "leak").as_deref(),
        Some("stage-decoy\nstage-decoy\nimage-decoy\nimage-decoy\n"),
        "{who:?}: a bind source left its stage or image"
    );
    let bad = k.context(
        "ctx-from-missing",
        &format!("FROM busybox AS a\nRUN ln -s {sd}/secret /abs\nFROM busybox\nRUN --mount=type=bind,from=a,source=abs,target=/x cat /x > /leak\n"),
        &[],
    );
    let all = build_fails(&k, &bad);
    assert!(
        all.contains("bind source `abs` does not exist in the stage"),
        "{who:?}: {all}"
    );
    assert!(!all.contains("host-secret"), "{who:?}: {all}");
    unchanged(who, &[(&s, &before[0]), (&ctx, &before[1])]);
}

#[test]
fn a_bind_source_symlinked_out_of_a_from_stage_or_image_stays_in_it_as_root() {
    a_bind_source_symlinked_out_of_a_from_stage_or_image_stays_in_it(Who::Root);
}

#[test]
fn a_bind_source_symlinked_out_of_a_from_stage_or_image_stays_in_it_as_unprivileged_user() {
    a_bind_source_symlinked_out_of_a_from_stage_or_image_stays_in_it(Who::User);
}

/// `RUN --mount=type=bind,rw` of the context (a directory) and of one file in it: the step sees
/// its own writes, the next step and the context do not (BuildKit: the writes are thrown away).
fn a_rw_bind_mount_never_writes_the_context(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    if !k.busybox() {
        return;
    }
    let ctx = k.context(
        "ctx-rw",
        "FROM busybox\n\
         RUN --mount=type=bind,rw,target=/ctx echo pwned > /ctx/newfile && echo more >> /ctx/existing && rm /ctx/todelete && mkdir /ctx/d && chmod 700 /ctx/sub && cat /ctx/newfile /ctx/existing > /seen\n\
         RUN --mount=type=bind,rw,source=sub/file,target=/f echo more >> /f && cat /f > /seen-file\n\
         RUN --mount=type=bind,target=/ctx ls /ctx > /after && cat /ctx/existing /ctx/sub/file >> /after && stat -c %a /ctx/sub >> /after\n",
        &[("existing", b"orig\n"), ("todelete", b"x\n"), ("sub/file", b"f\n")],
    );
    k.give(&ctx);
    let before = snapshot(&ctx);
    for kind in KINDS {
        build(&k, &ctx, "rw", kind, &[]);
        assert_eq!(
            built_file(&k, "rw", "seen").as_deref(),
            Some("pwned\norig\nmore\n"),
            "{who:?} {kind}"
        );
        assert_eq!(
            built_file(&k, "rw", "seen-file").as_deref(),
            Some("f\nmore\n"),
            "{who:?} {kind}"
        );
        assert_eq!(
            built_file(&k, "rw", "after").as_deref(),
            Some("Dockerfile\nexisting\nsub\ntodelete\norig\nf\n755\n"),
            "{who:?} {kind}: a rw bind's writes outlived its step"
        );
        unchanged(who, &[(&ctx, &before)]);
    }
}

#[test]
fn a_rw_bind_mount_never_writes_the_context_as_root() {
    a_rw_bind_mount_never_writes_the_context(Who::Root);
}

#[test]
fn a_rw_bind_mount_never_writes_the_context_as_unprivileged_user() {
    a_rw_bind_mount_never_writes_the_context(Who::User);
}

/// `rw` binds aimed at a host directory through a symlink in the context. As the source: the
/// context also holds the names the links point to (so the planner, which always resolved
/// inside the context, accepted them while the old sandbox bound the host's directory
/// writable); now the step writes into a throw-away copy of the context's own directory. A
/// link to a name the context lacks is a clear error. Inside a bound context, a link resolves
/// in the step's own root.
fn a_rw_bind_mount_never_writes_outside_through_a_symlink(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    if !k.busybox() {
        return;
    }
    let s = sentinel(&k);
    let inside = s.strip_prefix("/").unwrap().join("secret");
    let make = |name: &str, dockerfile: &str| {
        let c = k.context(
            name,
            dockerfile,
            &[
                (inside.to_str().unwrap(), b"decoy\n"),
                ("sentinel/secret", b"decoy\n"),
            ],
        );
        std::os::unix::fs::symlink(&s, c.join("out")).unwrap();
        std::os::unix::fs::symlink("../sentinel", c.join("outrel")).unwrap();
        std::os::unix::fs::symlink(s.join("secret"), c.join("file")).unwrap();
        std::os::unix::fs::symlink(s.join("other"), c.join("gone")).unwrap();
        k.give(&c);
        c
    };
    let before = snapshot(&s);
    let ctx = make(
        "ctx-rw-out",
        "FROM busybox\n\
         RUN --mount=type=bind,rw,source=out,target=/o --mount=type=bind,rw,source=outrel,target=/r --mount=type=bind,rw,source=file,target=/f \
         echo pwned > /o/secret && echo pwned > /r/secret && echo pwned > /f && echo pwned > /o/new && cat /o/secret /r/secret /f > /seen\n\
         RUN --mount=type=bind,rw,target=/ctx (echo pwned > /ctx/out/secret; echo pwned > /ctx/outrel/secret; echo pwned > /ctx/file; true) 2>/dev/null\n",
    );
    let ctx_before = snapshot(&ctx);
    build(&k, &ctx, "rwout", "walk", &[]);
    assert_eq!(
        built_file(&k, "rwout", "seen").as_deref(),
        Some("pwned\npwned\npwned\n"),
        "{who:?}"
    );
    unchanged(who, &[(&s, &before), (&ctx, &ctx_before)]);
    let bad = make(
        "ctx-rw-gone",
        "FROM busybox\nRUN --mount=type=bind,rw,source=gone,target=/o echo pwned > /o\n",
    );
    let all = build_fails(&k, &bad);
    assert!(
        all.contains("`gone` not found in the build context"),
        "{who:?}: {all}"
    );
    unchanged(who, &[(&s, &before)]);
}

#[test]
fn a_rw_bind_mount_never_writes_outside_through_a_symlink_as_root() {
    a_rw_bind_mount_never_writes_outside_through_a_symlink(Who::Root);
}

#[test]
fn a_rw_bind_mount_never_writes_outside_through_a_symlink_as_unprivileged_user() {
    a_rw_bind_mount_never_writes_outside_through_a_symlink(Who::User);
}
