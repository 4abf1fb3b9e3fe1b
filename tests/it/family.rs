//! The image family of `variants/` built for real, and `kiln diff` on built images:
//! - `kiln diff` names each differing path of two built images, what differs and the layer it
//!   came from, across transports, with diff(1)'s exit codes;
//! - every variant baked rootless (`kiln bake --push` by the unprivileged test user with
//!   subordinate ids) to a real registry through Debian's archive and PyPI, then each checked
//!   with podman: uid 1000, /tmp 1777 and writable, python/node versions, no stale `.pyc`
//!   (`scripts/check-pyc.py`, the checks `scripts/build-family.sh` makes);
//! - the same bake on a fresh store through the registry cache (`cache_to` / `cache_from` by
//!   `--set`, one ref per variant): every step a remote hit, the same digests, nothing uploaded;
//! - `Dockerfile.minimal` and `Dockerfile.python` give the same digests built as root and as the
//!   unprivileged user, on bases both imported from the same debootstrap tarball.
//!
//! The family tests need Debian's archive and PyPI: without them they skip, or fail under
//! `CI=true`, saying which host could not be reached.
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bake::{copy_variants, git_commit, pip_ca, serve_debian_base};
use crate::support::registry::{Mode, Registry};
use crate::support::runas::{debootstrap, skip, KilnAs, Who};
use crate::support::{busybox, need, Kiln, PODMAN_RUN};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `kiln diff` as `k`'s store sees it: (exit code, stdout).
fn diff(k: &Kiln, args: &[&str]) -> (i32, String) {
    let out = k.cmd().arg("diff").args(args).output().unwrap();
    assert!(
        out.status.code() != Some(2),
        "kiln diff {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
    )
}

/// Two images built from the same base: one file's content and mode, one symlink's target, a
/// base file deleted (a whiteout), a file added. `kiln diff` names exactly those (and, at most,
/// directories the RUN step rewrote whose only difference is their mtime), each with the layer
/// it came from; the same image read through another transport is identical (exit 0).
#[test]
fn kiln_diff_names_each_changed_path_with_its_layer() {
    let k = Kiln::new();
    let Some(busybox_archive) = busybox::import(&k, "busybox") else {
        return;
    };
    let build = |name: &str, text: &str, run: &str| {
        let ctx = k.path(name);
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("f.txt"), text).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM busybox\nCOPY f.txt /data/f.txt\nRUN {run}\n"),
        )
        .unwrap();
        let archive = k.path(&format!("{name}.tar"));
        k.ok(&[
            "build",
            ctx.to_str().unwrap(),
            "-t",
            name,
            "-o",
            &format!("oci-archive:{}", archive.display()),
        ]);
        archive
    };
    build(
        "a",
        "one\n",
        "ln -s f.txt /data/link && chmod 0644 /data/f.txt",
    );
    let b_archive = build(
        "b",
        "two, longer\n",
        "ln -s other /data/link && chmod 0600 /data/f.txt && rm /etc/group && touch /data/new",
    );
    let (code, text) = diff(&k, &["a", &format!("oci-archive:{}", b_archive.display())]);
    assert_eq!(code, 1, "{text}");
    let (code, out) = diff(
        &k,
        &[
            "a",
            &format!("oci-archive:{}", b_archive.display()),
            "--json",
        ],
    );
    assert_eq!(code, 1);
    let v = json(&out);
    assert_eq!(v["identical"], false);
    let layers_b = v["b"]["layers"].as_array().unwrap().clone();
    let layers_a = v["a"]["layers"].as_array().unwrap().clone();
    assert_eq!((layers_a.len(), layers_b.len()), (3, 3), "{v}");
    // The base layer is the same, so /etc/group came from layer 0 of both.
    assert_eq!(layers_a[0], layers_b[0]);
    let mut rest = Vec::new();
    let mut seen = Vec::new();
    for c in v["paths"].as_array().unwrap() {
        let path = c["path"].as_str().unwrap();
        let fields: Vec<&str> = c["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        let (a, b) = (&c["a"], &c["b"]);
        match path {
            "/data/f.txt" => {
                assert_eq!(fields, ["content", "mode"], "{c}");
                assert_eq!(
                    (a["mode"].as_str(), b["mode"].as_str()),
                    (Some("0644"), Some("0600"))
                );
                assert_eq!(
                    (a["size"].as_u64(), b["size"].as_u64()),
                    (Some(4), Some(12))
                );
                // chmod in the RUN step wrote it again: layer 2 on both sides.
                assert_eq!(
                    (a["layer"].as_u64(), b["layer"].as_u64()),
                    (Some(2), Some(2))
                );
                assert_eq!(b["layer_digest"], layers_b[2]);
                assert_eq!(
                    a["digest"].as_str().unwrap(),
                    format!("sha256:{}", crate::support::sha256_hex(b"one\n"))
                );
            }
            "/data/link" => {
                assert_eq!(fields, ["link"], "{c}");
                assert_eq!(
                    (a["link"].as_str(), b["link"].as_str()),
                    (Some("f.txt"), Some("other"))
                );
            }
            "/etc/group" => {
                assert_eq!(c["change"], "removed", "{c}");
                assert!(b.is_null());
                assert_eq!(a["layer"], 0);
                assert_eq!(a["layer_digest"], layers_a[0]);
            }
            "/data/new" => {
                assert_eq!(c["change"], "added", "{c}");
                assert!(a.is_null());
                assert_eq!(
                    (b["type"].as_str(), b["layer"].as_u64()),
                    (Some("file"), Some(2))
                );
            }
            _ => {
                rest.push(c.clone());
                continue;
            }
        }
        seen.push(path);
    }
    assert_eq!(
        seen,
        ["/data/f.txt", "/data/link", "/data/new", "/etc/group"],
        "{v}"
    );
    for c in &rest {
        assert!(
            c["change"] == "modified"
                && c["fields"] == serde_json::json!(["mtime"])
                && c["a"]["type"] == "dir",
            "an unexpected difference: {c}"
        );
    }
    // The text form says the same, sorted by path, with a summary.
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("M /data/f.txt: content ")
                && l.contains(", mode 0644 -> 0600 [a: layer 2 ")),
        "{text}"
    );
    assert!(
        lines.contains(
            &format!(
                "- /etc/group (file) [a: layer 0 {}]",
                layers_a[0]
                    .as_str()
                    .unwrap()
                    .chars()
                    .take(19)
                    .collect::<String>()
            )
            .as_str()
        ),
        "{text}"
    );
    assert!(
        lines.last().unwrap().starts_with(&format!(
            "{} path(s) differ (1 added, 1 removed, ",
            4 + rest.len()
        )),
        "{text}"
    );
    let mut sorted = lines[..lines.len() - 1].to_vec();
    sorted.sort_by_key(|l| {
        l.split(' ')
            .nth(1)
            .unwrap()
            .trim_end_matches(':')
            .to_string()
    });
    assert_eq!(
        sorted,
        lines[..lines.len() - 1],
        "not sorted by path: {text}"
    );

    // The same image through two transports, and a base against itself: identical, exit 0,
    // nothing printed.
    assert_eq!(
        diff(&k, &["b", &format!("oci-archive:{}", b_archive.display())]),
        (0, String::new())
    );
    assert_eq!(
        diff(
            &k,
            &[
                "busybox",
                &format!("oci-archive:{}", busybox_archive.display())
            ]
        ),
        (0, String::new())
    );
    // An image that does not exist: exit 2, named.
    let (code, err) = k.fails(&["diff", "a", "no-such-image"]);
    assert_eq!(code, 2);
    assert!(err.contains("no-such-image"), "{err}");
}

/// Whether Debian's archive and PyPI answer on their ports (skips, or fails under `CI=true`,
/// naming the host that does not).
pub(crate) fn package_registries_reachable() -> bool {
    for (host, port) in [
        ("deb.debian.org", 80),
        ("pypi.org", 443),
        ("files.pythonhosted.org", 443),
    ] {
        let reached = (host, port)
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .and_then(|mut addrs| {
                let addr = addrs.next().ok_or("no address")?;
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = reached {
            return skip(&format!(
                "the family build needs the package registries, and {host}:{port} cannot be reached ({e})"
            ));
        }
    }
    true
}

/// `--secret id=pip-ca,…` when a TLS-intercepting proxy's CA is configured (pip needs it).
fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// podman with a private vfs store under `dir`: (success, stdout + stderr), stdin from `input`.
fn podman(dir: &Path, args: &[&str], input: Option<&Path>) -> (bool, String) {
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(["--storage-driver", "vfs"])
        .args(args);
    c.stdin(match input {
        Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
        None => Stdio::null(),
    });
    let out = c.output().expect("podman");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The checks scripts/build-family.sh makes of one variant, in one container (each costs a copy
/// of the image with vfs): uid 1000, /tmp 1777 and writable by it, `python3 --version` and no
/// stale `.pyc` (scripts/check-pyc.py on stdin) for python and full, `node --version` for node
/// and full. Returns what failed.
fn check_variant(dir: &Path, target: &str, reference: &str) -> Vec<String> {
    let (ok, out) = podman(
        dir,
        &["pull", "--quiet", "--tls-verify=false", reference],
        None,
    );
    if !ok {
        return vec![format!("{target}: podman pull {reference}: {out}")];
    }
    let python = matches!(target, "python" | "full");
    let node = matches!(target, "node" | "full");
    let mut script = String::from(
        "echo \"uid $(id -u)\"; echo \"tmp $(stat -c %a /tmp)\"; touch /tmp/kiln-check && echo 'tmp writable'",
    );
    if python {
        script += "; python3 --version; python3 -B -";
    }
    if node {
        script += "; echo \"node $(node --version)\"";
    }
    let (_, out) = podman(
        dir,
        &[&PODMAN_RUN[..], &["-i", reference, "bash", "-c", &script]].concat(),
        Some(&repo_file("scripts/check-pyc.py")),
    );
    eprintln!("== {target} ({reference}):\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    let has = |f: &dyn Fn(&str) -> bool| lines.iter().any(|l| f(l));
    let mut failed = Vec::new();
    let mut want = |what: &str, found: bool| {
        if !found {
            failed.push(format!("{target}: {what}"));
        }
    };
    want("id -u is not 1000", has(&|l| l == "uid 1000"));
    want("/tmp is not mode 1777", has(&|l| l == "tmp 1777"));
    want(
        "/tmp is not writable by uid 1000",
        has(&|l| l == "tmp writable"),
    );
    if python {
        want("no python3 --version", has(&|l| l.starts_with("Python 3.")));
        want(
            "stale .pyc files (scripts/check-pyc.py)",
            has(&|l| {
                l.starts_with("checked ")
                    && !l.starts_with("checked 0 ")
                    && l.ends_with(": 0 stale")
            }),
        );
    }
    if node {
        want("no node --version", has(&|l| l.starts_with("node v")));
    }
    failed
}

/// The whole family, as the unprivileged test user: the repository's `kiln.toml` and
/// `variants/`, `kiln bake --push` to a real registry (the base served as
/// `docker.io/library/debian:bookworm-slim` by a mirror entry), every tag at the digest the
/// digests file names and listed as pushed, and every variant checked with podman.
#[test]
fn the_family_bakes_pushes_and_runs_as_an_unprivileged_user() {
    let start = Instant::now();
    let Some(k) = KilnAs::new(Who::User) else {
        return;
    };
    if !need("podman") || !package_registries_reachable() {
        return;
    }
    let Some(tar) = debootstrap::rootfs_tarball() else {
        return;
    };
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    serve_debian_base(&|a| k.ok(a), &tar, &reg.addr);
    // The project's kiln.toml, pointed at the local registry and the mirror.
    let dir = k.path("family");
    copy_variants(&dir.join("variants"));
    let toml = std::fs::read_to_string(repo_file("kiln.toml")).unwrap();
    let toml: String = toml
        .lines()
        .map(|l| {
            if l.starts_with("registry = ") {
                format!("registry = \"{}/kiln\"", reg.addr)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = dir.join("kiln.toml");
    std::fs::write(
        &config,
        format!(
            "{toml}\n\n[[registry]]\nprefix = \"docker.io\"\nmirrors = [{{ location = \"{}/mirror\", insecure = true }}]\n",
            reg.addr
        ),
    )
    .unwrap();
    let Some(_sha) = git_commit(&dir) else {
        return;
    };
    // The user's git must own the work tree to read its commit.
    k.give(&dir);
    let digests = k.path("out/digests.json");
    let ca = pip_ca();
    // One registry cache ref per variant (and platform), written by this bake.
    let cache_to = format!(
        "*.cache-to=type=registry,ref={}/kiln/cache:{{variant}}-{{platform}},mode=max",
        reg.addr
    );
    let cache_from = format!(
        "*.cache-from={}/kiln/cache:{{variant}}-{{platform}}",
        reg.addr
    );
    let bake_args = |digests: &Path| {
        let mut args: Vec<String> = [
            "--tls-verify=false",
            "--config",
            config.to_str().unwrap(),
            "bake",
            "--push",
            "--set",
            &cache_to,
            "--set",
            &cache_from,
            "--metadata-file",
            digests.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        if let Some(ca) = &ca {
            args.extend(["--secret".to_string(), ca.clone()]);
        }
        args
    };
    let args = bake_args(&digests);
    k.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let baked = start.elapsed();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&digests).unwrap()).unwrap();
    let targets = meta["targets"].as_object().unwrap();
    assert_eq!(
        targets.keys().collect::<Vec<_>>(),
        ["full", "minimal", "node", "python"],
        "{meta}"
    );
    let pod = k.path("podman");
    let mut failed = Vec::new();
    for (target, t) in targets {
        assert_eq!(t["pushed"], t["tags"], "{target}: {t}");
        let digest = t["digest"].as_str().unwrap();
        for tag in t["tags"].as_array().unwrap() {
            let v = json(&k.ok(&[
                "--tls-verify=false",
                "inspect",
                &format!("docker://{}", tag.as_str().unwrap()),
            ]));
            assert_eq!(v["digest"], digest, "{tag}");
        }
        failed.extend(check_variant(&pod, target, t["tags"][0].as_str().unwrap()));
    }
    eprintln!(
        "the family: baked in {baked:?}, checked in {:?}",
        start.elapsed() - baked
    );
    assert!(failed.is_empty(), "{failed:#?}");

    // A fresh runner (an empty store) with nothing changed: every layer step is answered by
    // the registry cache, nothing runs, every tag is already current, the digests are the same.
    let Some(fresh) = KilnAs::new(Who::User) else {
        return;
    };
    let again = fresh.path("out/digests.json");
    let args = bake_args(&again);
    let t0 = Instant::now();
    fresh.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    eprintln!(
        "the family from the registry cache on a fresh store: {:?}",
        t0.elapsed()
    );
    let meta2: serde_json::Value = serde_json::from_slice(&std::fs::read(&again).unwrap()).unwrap();
    for (target, t) in targets {
        let t2 = &meta2["targets"][target];
        assert_eq!(t2["digest"], t["digest"], "{target}");
        assert_eq!(t2["up_to_date"], t["tags"], "{target}: {t2}");
        // A step shared with a variant baked before is a local hit (the remote hit is in the
        // store's cache by then); none ran.
        let steps: Vec<&serde_json::Value> = t2["images"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|i| i["steps"].as_array().unwrap())
            .collect();
        assert!(
            steps.iter().all(|s| s["cache"] != "ran"),
            "{target}: {steps:#?}"
        );
        assert!(
            steps.iter().any(|s| s["cache"] == "remote"),
            "{target}: {steps:#?}"
        );
    }
    let remote = meta2["targets"]["full"]["images"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["cache"] == "remote")
        .count();
    assert!(remote > 0);
}

/// `Dockerfile.minimal` and `Dockerfile.python` built `--no-cache` as root and as the
/// unprivileged user (each with a fresh store, on the base each imported from the same
/// debootstrap tarball) give the same digests. When they do not, `kiln diff` says which paths.
#[test]
fn minimal_and_python_give_the_same_digests_as_root_and_as_an_unprivileged_user() {
    let Some(user) = KilnAs::new(Who::User) else {
        return;
    };
    let Some(root) = KilnAs::new(Who::Root) else {
        return;
    };
    if !package_registries_reachable() {
        return;
    }
    let Some(tar) = debootstrap::rootfs_tarball() else {
        return;
    };
    let ca = pip_ca();
    let mut digests = Vec::new();
    for k in [&root, &user] {
        let base = k.ok(&[
            "import",
            tar.to_str().unwrap(),
            "-t",
            "debian-base:bookworm",
        ]);
        let ctx = k.path("ctx");
        copy_variants(&ctx);
        k.give(&ctx);
        let mut built = vec![base.trim().to_string()];
        for variant in ["minimal", "python"] {
            let archive = k.path(&format!("out/{variant}.tar"));
            let dockerfile = ctx.join(format!("Dockerfile.{variant}"));
            let mut args = vec![
                "build".to_string(),
                ctx.display().to_string(),
                "-f".into(),
                dockerfile.display().to_string(),
                "--build-arg".into(),
                "BASE=debian-base:bookworm".into(),
                "--build-arg".into(),
                "VERSION=0.1.0".into(),
                "--no-cache".into(),
                "-t".into(),
                variant.into(),
                "-o".into(),
                format!("oci-archive:{}", archive.display()),
            ];
            if let Some(ca) = &ca {
                args.extend(["--secret".into(), ca.clone()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            k.ok(&args);
            let v = json(&k.ok(&["inspect", variant]));
            built.push(v["digest"].as_str().unwrap().to_string());
        }
        digests.push(built);
    }
    assert_eq!(
        digests[0][0], digests[1][0],
        "root and the user imported the same tarball to different bases (kiln import's id mapping)"
    );
    let names = ["the imported base", "minimal", "python"];
    let mut differ = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if digests[0][i] != digests[1][i] {
            // What differs, by path: root's store reads the user's archive.
            let theirs = match i {
                0 => continue,
                _ => user.path(&format!("out/{name}.tar")),
            };
            let out = root
                .cmd_progress("quiet")
                .args(["diff", name, &format!("oci-archive:{}", theirs.display())])
                .output()
                .unwrap();
            differ.push(format!(
                "{name}: root {} != user {}:\n{}{}",
                digests[0][i],
                digests[1][i],
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
