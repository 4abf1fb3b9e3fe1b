//! `kiln build` without RUN: reproducible, cached, precise about what it rebuilds, and clean
//! when it fails.
use std::path::Path;
use std::process::Command;

use crate::support::{busybox, need, run, Kiln};

const MULTI_STAGE: &str = r#"ARG BASE=busybox:latest
FROM ${BASE} AS base
ENV APP=/app
WORKDIR $APP
COPY a.txt ./
COPY --chown=app:staff dir/ sub/
FROM base AS final
COPY --from=base /app/a.txt /copied.txt
COPY b.txt /app/
LABEL org.example.step=final
CMD ["cat", "/app/a.txt", "/app/b.txt"]
"#;

fn context(k: &Kiln, dockerfile: &str) -> std::path::PathBuf {
    let c = k.path("ctx");
    std::fs::create_dir_all(c.join("dir/deep")).unwrap();
    std::fs::write(c.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(c.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(c.join("b.txt"), b"beta\n").unwrap();
    std::fs::write(c.join("dir/x"), b"x").unwrap();
    std::fs::write(c.join("dir/deep/y"), b"y").unwrap();
    c
}

fn metadata(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn build(k: &Kiln, ctx: &Path, extra: &[&str]) -> serde_json::Value {
    let meta = k.path("meta.json");
    let mut args = vec![
        "build",
        ctx.to_str().unwrap(),
        "-t",
        "it/app:1",
        "--metadata-file",
        meta.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    k.ok(&args);
    metadata(&meta)
}

fn cached(meta: &serde_json::Value) -> Vec<(String, bool)> {
    meta["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["cached"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn two_builds_in_two_empty_stores_give_the_same_digest() {
    let (k1, k2) = (Kiln::new(), Kiln::new());
    if busybox::import(&k1, "busybox").is_none() || busybox::import(&k2, "busybox").is_none() {
        return;
    }
    let c1 = context(&k1, MULTI_STAGE);
    let c2 = context(&k2, MULTI_STAGE);
    let m1 = build(&k1, &c1, &[]);
    let m2 = build(&k2, &c2, &["--threads", "1"]);
    assert_eq!(m1["containerimage.digest"], m2["containerimage.digest"]);
    assert_eq!(m1["layers"].as_array().unwrap().len(), 6, "{m1:#}");
    // Another epoch is another image.
    let m3 = build(&k1, &c1, &["--source-date-epoch", "1700000000"]);
    assert_ne!(m1["containerimage.digest"], m3["containerimage.digest"]);
}

#[test]
fn a_rebuild_is_all_cache_hits_and_a_change_rebuilds_only_what_depends_on_it() {
    let k = Kiln::new();
    if busybox::import(&k, "busybox").is_none() {
        return;
    }
    let c = context(&k, MULTI_STAGE);
    let first = build(&k, &c, &[]);
    assert!(cached(&first).iter().any(|(_, hit)| !hit));
    let again = build(&k, &c, &[]);
    assert!(
        cached(&again).iter().all(|(_, hit)| *hit),
        "{:?}",
        cached(&again)
    );
    assert_eq!(
        first["containerimage.digest"],
        again["containerimage.digest"]
    );
    assert_eq!(
        again["context"]["files_hashed"], 0,
        "unchanged files were read again"
    );

    // Touching a file without changing it: still all hits (mtimes clamp to the epoch).
    let now = std::time::SystemTime::now();
    std::fs::File::options()
        .write(true)
        .open(c.join("b.txt"))
        .unwrap()
        .set_modified(now)
        .unwrap();
    let touched = build(&k, &c, &[]);
    assert!(cached(&touched).iter().all(|(_, hit)| *hit));

    // Changing b.txt rebuilds `COPY b.txt` only.
    std::fs::write(c.join("b.txt"), b"beta, changed\n").unwrap();
    let changed = build(&k, &c, &[]);
    let misses: Vec<String> = cached(&changed)
        .into_iter()
        .filter(|(_, hit)| !hit)
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        misses,
        ["COPY b.txt /app/ # buildkit"],
        "{:?}",
        cached(&changed)
    );
    assert_ne!(
        changed["containerimage.digest"],
        first["containerimage.digest"]
    );

    // --no-cache runs everything and gives the same image.
    let fresh = build(&k, &c, &["--no-cache"]);
    assert!(cached(&fresh)
        .iter()
        .filter(|(s, _)| s.starts_with("COPY"))
        .all(|(_, hit)| !hit));
    assert_eq!(
        fresh["containerimage.digest"],
        changed["containerimage.digest"]
    );
    k.ok(&["store", "fsck"]);
    // gc keeps what the cache refers to.
    k.ok(&["store", "gc"]);
    let after_gc = build(&k, &c, &[]);
    assert!(cached(&after_gc).iter().all(|(_, hit)| *hit));
}

#[test]
fn bases_come_from_the_store_and_every_local_transport() {
    let k = Kiln::new();
    let Some(archive) = busybox::import(&k, "busybox") else {
        return;
    };
    let c = context(&k, MULTI_STAGE);
    let layout = k.path("layout");
    let docker = k.path("busybox.docker.tar");
    k.ok(&["copy", "busybox", &format!("oci:{}:bb", layout.display())]);
    k.ok(&[
        "copy",
        "busybox",
        &format!("docker-archive:{}:busybox:latest", docker.display()),
    ]);
    let from_store = build(&k, &c, &[]);
    for base in [
        format!("oci-archive:{}", archive.display()),
        format!("oci:{}:bb", layout.display()),
    ] {
        let m = build(&k, &c, &["--build-arg", &format!("BASE={base}")]);
        assert_eq!(
            m["containerimage.digest"], from_store["containerimage.digest"],
            "{base}"
        );
    }
    // docker-archive keeps layers uncompressed: same files, other layer digests.
    let m = build(
        &k,
        &c,
        &[
            "--build-arg",
            &format!("BASE=docker-archive:{}", docker.display()),
        ],
    );
    assert_eq!(m["layers"].as_array().unwrap().len(), 6);
}

#[test]
fn podman_runs_what_kiln_built() {
    let k = Kiln::new();
    if busybox::import(&k, "busybox").is_none() || !need("podman") {
        return;
    }
    let c = context(&k, MULTI_STAGE);
    let out = k.path("app.oci.tar");
    build(&k, &c, &["-o", &format!("oci-archive:{}", out.display())]);
    let image = format!("oci-archive:{}", out.display());
    let printed = crate::support::podman(
        &k.path("podman"),
        &[&crate::support::PODMAN_RUN[..], &[image.as_str()]].concat(),
    );
    assert_eq!(printed, "alpha\nbeta\n");
}

#[test]
fn the_main_jobs_example_builds_from_its_committed_fixture_and_serves_its_page() {
    // scripts/main-job.sh builds fixtures/example as committed. Its `site/` once existed only in
    // a working tree (git keeps no empty directory), so the main job failed on a fresh clone.
    let k = Kiln::new();
    if busybox::import(&k, "kiln.local/busybox:latest").is_none() || !need("podman") {
        return;
    }
    let ctx = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/example");
    let out = k.path("example.oci.tar");
    k.ok(&[
        "build",
        ctx.to_str().unwrap(),
        "-t",
        "kiln.local/example:latest",
        "-o",
        &format!("oci-archive:{}", out.display()),
    ]);
    let image = format!("oci-archive:{}", out.display());
    let page = crate::support::podman(
        &k.path("podman"),
        &[
            &crate::support::PODMAN_RUN[..],
            &["--entrypoint", "cat", image.as_str(), "/srv/www/index.html"],
        ]
        .concat(),
    );
    assert!(page.contains("Built by kiln"), "{page}");
}

#[test]
fn failed_builds_name_the_location_exit_1_and_leave_no_image() {
    let k = Kiln::new();
    if busybox::import(&k, "busybox").is_none() {
        return;
    }
    let c = context(&k, "FROM busybox\nCOPY a.txt /a\n");
    k.ok(&["build", c.to_str().unwrap(), "-t", "keep:1"]);
    let kept = k.ok(&["inspect", "keep:1"]);
    // A step error is the location and instruction, then its causes, one `caused by:` line each.
    let cases: &[(&str, &str)] = &[
        ("FROM busybox\nCOPY ../outside /x\n", "Dockerfile:2:1: COPY ../outside /x\ncaused by: `../outside` is outside the build context"),
        ("FROM busybox\nCOPY missing.txt /x\n", "Dockerfile:2:1: COPY missing.txt /x\ncaused by: `missing.txt` not found in the build context"),
        ("FROM busybox\nCOPY --chown=ghost a.txt /x\n", "unable to find user `ghost`"),
        ("FROM busybox\nCOPY --from=nowhere /a /b\n", "nowhere"),
        ("FROM busybox\nCOPPY a.txt /x\n", "Dockerfile:2:1: unknown instruction"),
        ("FROM not-in-store:1\n", "Dockerfile:1:1: cannot use image `not-in-store:1`"),
        // The FROM's own line, not one above the first step (regression: the builder guessed).
        ("# the base\n\nFROM not-in-store:2\n\n\nCOPY a.txt /a\n", "Dockerfile:3:1: cannot use image `not-in-store:2`"),
    ];
    for (dockerfile, needle) in cases {
        std::fs::write(c.join("Dockerfile"), dockerfile).unwrap();
        let (code, err) = k.fails(&["build", c.to_str().unwrap(), "-t", "keep:1"]);
        assert_eq!(code, 1, "{dockerfile}: {err}");
        assert!(
            err.contains(needle),
            "{dockerfile}: expected `{needle}` in:\n{err}"
        );
        assert_eq!(
            k.ok(&["inspect", "keep:1"]),
            kept,
            "a failed build moved the tag"
        );
    }
    let (code, err) = k.fails(&[
        "build",
        k.path("no-such-dir").to_str().unwrap(),
        "-t",
        "keep:1",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no-such-dir"), "{err}");
    k.ok(&["store", "fsck"]);
}

/// Serves `body` at any path over plain HTTP on 127.0.0.1, `hits` times at most.
fn serve(body: &'static [u8], hits: usize) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in l.incoming().take(hits) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body);
        }
    });
    format!("http://{addr}")
}

#[test]
fn add_downloads_urls_checks_their_checksum_and_caches_by_content() {
    let k = Kiln::new();
    if busybox::import(&k, "busybox").is_none() {
        return;
    }
    let body: &[u8] = b"downloaded content\n";
    let sum = format!("sha256:{}", crate::support::sha256_hex(body));
    let base = serve(body, 6);
    let c = k.path("ctx");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        c.join("Dockerfile"),
        format!("FROM busybox\nADD --checksum={sum} {base}/files/tool.txt /opt/\n"),
    )
    .unwrap();
    let meta = build(&k, &c, &[]);
    let layers = meta["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    let out = k.path("u");
    k.ok(&["copy", "it/app:1", &format!("oci:{}:t", out.display())]);
    if need("umoci") {
        let b = k.path("ub");
        run(Command::new("umoci").args([
            "unpack",
            "--image",
            &format!("{}:t", out.display()),
            b.to_str().unwrap(),
        ]));
        let f = b.join("rootfs/opt/tool.txt");
        assert_eq!(std::fs::read(&f).unwrap(), body);
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(&f).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o600);
        // Last-Modified (2023-11-14) is not in the cache key (the content is), so it is limited
        // to the epoch (0) like a context file's mtime.
        assert_eq!(md.mtime(), 0);
    }
    // Same content, same key: a rebuild is a cache hit even though it downloads again.
    let again = build(&k, &c, &[]);
    assert!(
        cached(&again).iter().all(|(_, hit)| *hit),
        "{:?}",
        cached(&again)
    );
    // A wrong checksum fails the step, naming the URL and both digests.
    std::fs::write(
        c.join("Dockerfile"),
        format!(
            "FROM busybox\nADD --checksum=sha256:{} {base}/files/tool.txt /opt/\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let (code, err) = k.fails(&["build", c.to_str().unwrap(), "-t", "bad:1"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Dockerfile:2:1") && err.contains("tool.txt") && err.contains(&sum),
        "{err}"
    );
}

/// `--metadata-file` carries, for each layer the build wrote, the layer pipeline's per-stage
/// counters (so users can benchmark their own builds with kiln alone); cached and base layers
/// have none.
#[test]
fn the_metadata_file_has_per_stage_counters_for_written_layers() {
    let k = Kiln::new();
    if busybox::import(&k, "busybox").is_none() {
        return;
    }
    let c = context(&k, "FROM busybox\nCOPY a.txt dir /srv/\n");
    let meta = build(&k, &c, &[]);
    let layers = meta["layers"].as_array().unwrap();
    assert!(
        layers[0].get("stats").is_none(),
        "the base layer has no counters"
    );
    let s = &layers[1]["stats"];
    let n = |f: &str| s[f].as_u64().unwrap_or_else(|| panic!("no {f} in {s}"));
    // The tar holds 512-byte headers and padded contents, ends with 1024 zero bytes.
    assert_eq!(n("bytes_tarred") % 512, 0, "{s}");
    assert_eq!(n("bytes_hashed"), n("bytes_tarred"));
    assert_eq!(n("bytes_compressed_in"), n("bytes_tarred"));
    assert_eq!(n("bytes_written"), layers[1]["size"].as_u64().unwrap());
    assert_eq!(n("bytes_read"), b"alpha\nxy".len() as u64, "{s}");
    assert!(s["hash_cpu_seconds"].as_f64().unwrap() >= 0.0);
    let again = build(&k, &c, &[]);
    assert!(
        again["layers"][1].get("stats").is_none(),
        "a cache hit wrote nothing"
    );
}

/// COPY and ADD read only the context: a source is resolved through symlinks inside it (an
/// absolute or climbing target stays inside, as in a chroot), `..` and absolute sources are
/// context-relative, `.dockerignore`d files stay out even through a link, and symlinks inside the
/// context are copied as symlinks, never as what they point at outside.
/// A context named by a symbolic link to a directory is that directory, as `docker build`
/// resolves it: `COPY .` copies its files (it copied only the link's nothing before), and the
/// image equals the one built from the real path.
#[test]
fn a_context_given_as_a_symlink_is_the_directory_it_points_to() {
    let k = Kiln::new();
    let real = k.path("real-ctx");
    std::fs::create_dir_all(real.join("sub")).unwrap();
    std::fs::write(real.join("Dockerfile"), "FROM scratch\nCOPY . /data/\n").unwrap();
    std::fs::write(real.join("sub/a.txt"), b"alpha\n").unwrap();
    let link = k.path("link-ctx");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = k.path("out");
    let via_link = k.ok(&[
        "build",
        link.to_str().unwrap(),
        "-o",
        &format!("type=local,dest={}", out.display()),
    ]);
    assert_eq!(
        std::fs::read(out.join("data/sub/a.txt")).unwrap(),
        b"alpha\n"
    );
    let direct = k.ok(&["build", real.to_str().unwrap()]);
    assert_eq!(via_link.trim(), direct.trim());
}

#[test]
fn copy_and_add_never_read_outside_the_context_even_through_symlinks() {
    use std::os::unix::fs::symlink;
    let k = Kiln::new();
    let outside = k.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep-outside\n").unwrap();
    {
        // A real archive outside, for ADD through a link.
        let mut b = tar::Builder::new(std::fs::File::create(outside.join("a.tar")).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(13);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "fromtar", &b"keep-outside\n"[..])
            .unwrap();
        b.finish().unwrap();
    }
    let c = k.path("ctx-links");
    std::fs::create_dir_all(c.join("etc")).unwrap();
    std::fs::write(c.join("etc/passwd"), b"ctx passwd\n").unwrap();
    std::fs::write(c.join("secret.txt"), b"ignored-secret\n").unwrap();
    std::fs::write(c.join(".dockerignore"), b"secret.txt\n").unwrap();
    let out = outside.to_str().unwrap();
    symlink("/etc/passwd", c.join("passwd-link")).unwrap();
    symlink(format!("{out}/precious"), c.join("host-link")).unwrap();
    symlink(out, c.join("outdir")).unwrap();
    symlink("../outside", c.join("reldir")).unwrap();
    symlink(format!("{out}/a.tar"), c.join("evil.tar")).unwrap();
    symlink("secret.txt", c.join("secret-link")).unwrap();

    for (copy, why) in [
        ("COPY host-link /x", "not found in the build context"),
        ("COPY outdir/precious /x", "not found in the build context"),
        ("COPY reldir/precious /x", "not found in the build context"),
        ("COPY outdir /x", "not found in the build context"),
        ("COPY ../outside/precious /x", "outside the build context"),
        ("ADD evil.tar /x/", "not found in the build context"),
        ("ADD outdir/a.tar /x/", "not found in the build context"),
        ("COPY secret.txt /x", "not found in the build context"),
        ("COPY secret-link /x", "not found in the build context"),
    ] {
        std::fs::write(c.join("Dockerfile"), format!("FROM scratch\n{copy}\n")).unwrap();
        let (code, err) = k.fails(&["build", c.to_str().unwrap(), "-t", "it/ctx:bad"]);
        assert_eq!(code, 1, "{copy}: {err}");
        assert!(err.contains(why), "{copy}: {err}");
    }

    std::fs::write(
        c.join("Dockerfile"),
        "FROM scratch\nCOPY passwd-link /p1\nCOPY /etc/passwd /p2\nCOPY . /all/\n",
    )
    .unwrap();
    let dest = k.path("img-links");
    k.ok(&[
        "build",
        c.to_str().unwrap(),
        "-t",
        "it/ctx:ok",
        "-o",
        &format!("oci:{}:out", dest.display()),
    ]);
    let files = crate::hostile::layout_files(&dest);
    // A link's target is resolved inside the context: the context's own etc/passwd.
    assert_eq!(files["p1"], b"ctx passwd\n");
    assert_eq!(files["p2"], b"ctx passwd\n");
    // Links inside the context are copied as links, as written.
    for (link, target) in [
        ("all/passwd-link", "/etc/passwd".to_string()),
        ("all/host-link", format!("{out}/precious")),
        ("all/outdir", out.to_string()),
        ("all/reldir", "../outside".into()),
        ("all/evil.tar", format!("{out}/a.tar")),
        ("all/secret-link", "secret.txt".into()),
    ] {
        let key = format!("{link} -> {target}");
        assert!(
            files.contains_key(&key),
            "{key} missing: {:?}",
            files.keys()
        );
    }
    assert!(!files.contains_key("all/secret.txt"), "{:?}", files.keys());
    for (p, data) in &files {
        for needle in [&b"keep-outside"[..], b"ignored-secret"] {
            assert!(
                !data.windows(needle.len()).any(|w| w == needle),
                "`{p}` holds bytes from outside the context or an ignored file"
            );
        }
    }
}

/// ADD extracts a local archive inside its destination: members that climb out are refused,
/// naming the archive and the member; a member written under a symlink the archive made stays a
/// path inside the image (it is applied in the image's root, never on the host).
#[test]
fn add_refuses_archive_members_that_climb_out_of_the_destination() {
    let k = Kiln::new();
    let c = k.path("ctx-add");
    std::fs::create_dir_all(&c).unwrap();
    let tar_of = |members: &[(&str, u8, &str, &[u8])]| {
        let mut out = Vec::new();
        for (name, kind, link, data) in members {
            let mut h = tar::Header::new_ustar();
            h.as_ustar_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            h.as_ustar_mut().unwrap().linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_entry_type(tar::EntryType::new(*kind));
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(data.len() as u64);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    };
    std::fs::write(
        c.join("climb.tar"),
        tar_of(&[
            ("ok", b'0', "", b"ok"),
            ("../../../etc/evil", b'0', "", b"x"),
        ]),
    )
    .unwrap();
    std::fs::write(
        c.join("hardlink.tar"),
        tar_of(&[("hl", b'1', "../../../etc/shadow", b"")]),
    )
    .unwrap();
    for (archive, member) in [
        ("climb.tar", "../../../etc/evil"),
        ("hardlink.tar", "hard link climbs out"),
    ] {
        std::fs::write(
            c.join("Dockerfile"),
            format!("FROM scratch\nADD {archive} /d/\n"),
        )
        .unwrap();
        let (code, err) = k.fails(&["build", c.to_str().unwrap(), "-t", "it/add:bad"]);
        assert_eq!(code, 1, "{archive}: {err}");
        assert!(
            err.contains(archive) && err.contains(member),
            "{archive}: {err}"
        );
    }
    std::fs::write(
        c.join("through.tar"),
        tar_of(&[("l", b'2', "/etc", b""), ("l/passwd", b'0', "", b"mine\n")]),
    )
    .unwrap();
    std::fs::write(c.join("Dockerfile"), "FROM scratch\nADD through.tar /d/\n").unwrap();
    let dest = k.path("img-add");
    k.ok(&[
        "build",
        c.to_str().unwrap(),
        "-t",
        "it/add:ok",
        "-o",
        &format!("oci:{}:out", dest.display()),
    ]);
    let files = crate::hostile::layout_files(&dest);
    assert_eq!(files["d/l/passwd"], b"mine\n", "{:?}", files.keys());
    assert!(files.contains_key("d/l -> /etc"));
}
