//! `kiln bake`: the `kiln.toml` model and its errors, the tag scheme, shared stages built once,
//! every tag pushed and pointing at the digest in the digests file, a second bake that is all
//! cache hits and uploads nothing, lints, multi-platform indexes read by skopeo, and the image
//! family end to end on a debootstrap base through a mirror.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::registry::{Mode, Registry};
use crate::support::{busybox, need, run, Kiln};

/// A git work tree at `dir` with one commit; returns the commit hash.
pub fn git_commit(dir: &Path) -> Option<String> {
    if !need("git") {
        return None;
    }
    let g = |args: &[&str]| {
        run(Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "kiln")
            .env("GIT_AUTHOR_EMAIL", "kiln@example.invalid")
            .env("GIT_COMMITTER_NAME", "kiln")
            .env("GIT_COMMITTER_EMAIL", "kiln@example.invalid"))
    };
    g(&["init", "-q", "-b", "main"]);
    g(&["add", "-A"]);
    g(&["commit", "-q", "-m", "family"]);
    Some(g(&["rev-parse", "HEAD"]).trim().to_string())
}

/// Writes `kiln.toml` and `files` (path → content) under `dir`.
fn project(dir: &Path, toml: &str, files: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for (p, text) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let f = dir.join("kiln.toml");
    std::fs::write(&f, toml).unwrap();
    f
}

const SHARED: &str = "FROM busybox\nCOPY common.txt /etc/common.txt\nWORKDIR /workspace\n";

fn variant(extra: &str) -> String {
    format!("{SHARED}{extra}\nARG VERSION=dev\nLABEL org.opencontainers.image.version=$VERSION\n")
}

fn busybox_family(k: &Kiln, registry: &str, extra_toml: &str) -> PathBuf {
    let dir = k.path("proj");
    project(
        &dir,
        &format!(
            "[family]\nname = \"sandbox\"\nregistry = \"{registry}\"\nversion = \"0.1.0\"\ntitle = \"test sandbox\"\nsource = \"https://example.invalid/kiln\"\nrequired_labels = [\"org.opencontainers.image.version\"]\n{extra_toml}"
        ),
        &[
            ("variants/Dockerfile", &variant("COPY full.txt /full.txt\nUSER 1000")),
            ("variants/Dockerfile.python", &variant("COPY py.txt /py.txt\nUSER 1000")),
            ("variants/Dockerfile.minimal", &variant("USER 1000")),
            ("variants/common.txt", "shared by every variant\n"),
            ("variants/full.txt", "full\n"),
            ("variants/py.txt", "python\n"),
        ],
    );
    dir
}

fn config(dir: &Path) -> String {
    dir.join("kiln.toml").to_str().unwrap().to_string()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn bad_kiln_toml_errors_name_the_file_the_key_and_the_value() {
    let k = Kiln::new();
    let ok_variants: &[(&str, &str)] = &[("variants/Dockerfile", "FROM scratch\n")];
    let base = "[family]\nname = \"sandbox\"\nversion = \"0.1.0\"\n";
    let cases: &[(&str, String, &[&str])] = &[
        (
            "unknown",
            format!("{base}colour = \"blue\"\n"),
            &["family.colour", "blue"],
        ),
        ("top", format!("{base}[extras]\nx = 1\n"), &["extras"]),
        (
            "template",
            format!("{base}[tags]\nvariant = [\"{{version}}-{{flavour}}\"]\n"),
            &["tags.variant", "{version}-{flavour}", "{flavour}"],
        ),
        (
            "missing",
            format!("{base}variants = [\"full\", \"gpu\"]\n"),
            &["family.variants", "gpu", "Dockerfile.gpu"],
        ),
        (
            "semver",
            "[family]\nname = \"sandbox\"\nversion = \"1.0\"\n".into(),
            &["family.version", "1.0", "semantic version"],
        ),
        (
            "platform",
            format!("{base}platforms = [\"linux/sparc\"]\n"),
            &["family.platforms", "linux/sparc"],
        ),
        (
            "target-key",
            format!("{base}[target.full]\ndockerfil = \"x\"\n"),
            &["target.full.dockerfil", "x"],
        ),
    ];
    for (name, toml, wanted) in cases {
        let dir = k.path(&format!("bad-{name}"));
        let f = project(&dir, toml, ok_variants);
        let (code, err) = k.fails(&["--config", f.to_str().unwrap(), "bake", "--print"]);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains(f.to_str().unwrap()), "{name}: {err}");
        for w in *wanted {
            assert!(err.contains(w), "{name}: `{w}` not in: {err}");
        }
    }
    // `[[registry]]` mirror tables and the deployers' `[image]` are accepted.
    let dir = k.path("good");
    let f = project(
        &dir,
        &format!("{base}[[registry]]\nprefix = \"docker.io\"\nmirrors = [{{ location = \"127.0.0.1:1/m\", insecure = true }}]\n[image]\nimage = \"x/y:1\"\n"),
        ok_variants,
    );
    let (_, err) = k.fails(&["--config", f.to_str().unwrap(), "bake", "--print"]);
    assert!(err.contains("sha-{gitsha}") && err.contains("git"), "{err}");
    if git_commit(&dir).is_some() {
        k.ok(&["--config", f.to_str().unwrap(), "bake", "--print"]);
    }
}

#[test]
fn print_shows_the_default_tag_scheme_and_oci_metadata() {
    let k = Kiln::new();
    let dir = busybox_family(&k, "reg.example/org", "");
    let Some(sha) = git_commit(&dir) else {
        return;
    };
    let plan: serde_json::Value = serde_json::from_str(&k.ok(&[
        "--config",
        &config(&dir),
        "bake",
        "--print",
        "--set",
        "python.args.EXTRA=1",
    ]))
    .unwrap();
    let targets = plan["targets"].as_array().unwrap();
    let names: Vec<&str> = targets
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["full", "minimal", "python"]);
    let tags = |i: usize| -> Vec<String> {
        targets[i]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        tags(0),
        [
            "reg.example/org/sandbox:0.1.0".to_string(),
            "reg.example/org/sandbox:latest".into(),
            format!("reg.example/org/sandbox:sha-{}", &sha[..12]),
        ]
    );
    assert_eq!(tags(1), ["reg.example/org/sandbox:0.1.0-minimal"]);
    assert_eq!(tags(2), ["reg.example/org/sandbox:0.1.0-python"]);
    let ann = &targets[2]["annotations"];
    assert_eq!(ann["org.opencontainers.image.revision"], sha.as_str());
    assert_eq!(ann["org.opencontainers.image.version"], "0.1.0");
    assert_eq!(
        ann["org.opencontainers.image.source"],
        "https://example.invalid/kiln"
    );
    assert_eq!(
        ann["org.opencontainers.image.title"],
        "test sandbox (python)"
    );
    // The default epoch does not follow the family's git commits (it is in every cache key).
    assert_eq!(
        ann["org.opencontainers.image.created"],
        "1970-01-01T00:00:00Z"
    );
    assert_eq!(targets[2]["build_args"]["EXTRA"], "1");
    // A named target only; an unknown one is an error naming it.
    let one: serde_json::Value =
        serde_json::from_str(&k.ok(&["--config", &config(&dir), "bake", "--print", "python"]))
            .unwrap();
    assert_eq!(one["targets"].as_array().unwrap().len(), 1);
    // Other targets by glob, named {category}-{purpose}, each in its own repository.
    let ops = k.path("ops-proj");
    let f = project(
        &ops,
        "[family]\nname = \"sandbox\"\nregistry = \"reg.example/org\"\nversion = \"0.2.0\"\ntargets = [\"ops/docker/*/*/Dockerfile\"]\ntarget_name = \"{1}-{2}\"\n[tags]\ndefault = [\"{version}\"]\n",
        &[
            ("variants/Dockerfile", "FROM scratch\n"),
            ("ops/docker/ci/runner/Dockerfile", "FROM scratch\n"),
            ("ops/docker/lint/tools/Dockerfile", "FROM scratch\n"),
        ],
    );
    let plan: serde_json::Value =
        serde_json::from_str(&k.ok(&["--config", f.to_str().unwrap(), "bake", "--print"])).unwrap();
    let got: Vec<(String, String)> = plan["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().into(), t["tags"].to_string()))
        .collect();
    assert_eq!(
        got,
        [
            ("full".into(), r#"["reg.example/org/sandbox:0.2.0"]"#.into()),
            (
                "ci-runner".into(),
                r#"["reg.example/org/ci-runner:0.2.0","reg.example/org/ci-runner:latest"]"#.into()
            ),
            (
                "lint-tools".into(),
                r#"["reg.example/org/lint-tools:0.2.0","reg.example/org/lint-tools:latest"]"#
                    .into()
            ),
        ]
    );
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace("{1}-{2}", "{2}");
    std::fs::write(&f, text).unwrap();
    let (_, err) = k.fails(&["--config", f.to_str().unwrap(), "bake", "--print"]);
    assert!(
        err.contains("family.target_name") && err.contains("{category}-{purpose}"),
        "{err}"
    );
    let (_, err) = k.fails(&["--config", &config(&dir), "bake", "--print", "gpu"]);
    assert!(err.contains("gpu") && err.contains("python"), "{err}");
    let (_, err) = k.fails(&[
        "--config",
        &config(&dir),
        "bake",
        "--print",
        "--set",
        "python.colour=red",
    ]);
    assert!(
        err.contains("python.colour=red") && err.contains("colour"),
        "{err}"
    );
}

#[test]
fn bake_shares_stages_pushes_every_tag_and_a_second_bake_uploads_nothing() {
    let k = Kiln::new();
    if busybox::import(&k, "busybox").is_none() {
        return;
    }
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let dir = busybox_family(&k, &format!("{}/it", reg.addr), "");
    let Some(sha) = git_commit(&dir) else {
        return;
    };
    let digests = k.path("digests.json");
    let cfg = config(&dir);
    let bake = |extra: &[&str]| {
        let mut a = vec![
            "--tls-verify=false",
            "--config",
            cfg.as_str(),
            "bake",
            "--push",
            "--metadata-file",
            digests.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        k.ok(&a)
    };
    bake(&[]);
    let meta = json(&digests);
    let t = &meta["targets"];
    // The shared steps (FROM busybox, COPY common.txt, WORKDIR) of the second and third
    // variants came from the cache: built once, by the first.
    for v in ["minimal", "python"] {
        let steps = t[v]["images"][0]["steps"].as_array().unwrap();
        let shared: Vec<_> = steps
            .iter()
            .filter(|s| {
                let text = s["step"].as_str().unwrap();
                text.contains("common.txt") || text.contains("WORKDIR")
            })
            .collect();
        assert_eq!(shared.len(), 2, "{v}: {steps:?}");
        assert!(shared.iter().all(|s| s["cached"] == true), "{v}: {steps:?}");
    }
    let full_steps = t["full"]["images"][0]["steps"].as_array().unwrap();
    assert!(
        full_steps.iter().any(|s| s["cached"] == false),
        "the first variant built something: {full_steps:?}"
    );
    // Every tag of the scheme exists and points at the digest in the digests file.
    let expect = [
        (
            "full",
            vec![
                "0.1.0".to_string(),
                "latest".into(),
                format!("sha-{}", &sha[..12]),
            ],
        ),
        ("minimal", vec!["0.1.0-minimal".to_string()]),
        ("python", vec!["0.1.0-python".to_string()]),
    ];
    for (target, tags) in &expect {
        let digest = t[*target]["digest"].as_str().unwrap();
        // The first bake uploaded every tag: all pushed, none already up to date.
        assert_eq!(t[*target]["pushed"], t[*target]["tags"], "{target}");
        assert_eq!(t[*target]["up_to_date"], serde_json::json!([]), "{target}");
        assert_eq!(t[*target]["platforms"].as_array().unwrap().len(), 1);
        assert!(t[*target]["size"].as_u64().unwrap() > 0);
        for tag in tags {
            let r = format!("{}/it/sandbox:{tag}", reg.addr);
            assert!(
                t[*target]["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == r.as_str()),
                "{target}: {r} not in {}",
                t[*target]["tags"]
            );
            if need("skopeo") {
                let raw = run(Command::new("skopeo").args([
                    "inspect",
                    "--raw",
                    "--tls-verify=false",
                    &format!("docker://{r}"),
                ]));
                assert_eq!(
                    format!("sha256:{}", crate::support::sha256_hex(raw.as_bytes())),
                    digest,
                    "{r}"
                );
            }
        }
    }
    let tags: serde_json::Value = serde_json::from_str(&k.ok(&[
        "--tls-verify=false",
        "tags",
        &format!("{}/it/sandbox", reg.addr),
    ]))
    .unwrap();
    assert_eq!(tags["Tags"].as_array().unwrap().len(), 5, "{tags}");
    // The labels came from the config, git and the build args.
    let v: serde_json::Value = serde_json::from_str(&k.ok(&[
        "--tls-verify=false",
        "inspect",
        &format!("docker://{}/it/sandbox:0.1.0-python", reg.addr),
    ]))
    .unwrap();
    let text = v.to_string();
    assert!(
        text.contains(&sha) && text.contains("https://example.invalid/kiln"),
        "{text}"
    );

    // Second bake: all cache hits, nothing uploaded, no manifest re-put either.
    let before = reg.accesses().len();
    bake(&[]);
    let meta2 = json(&digests);
    for (target, _) in &expect {
        assert_eq!(
            meta2["targets"][*target]["cached"], true,
            "{target}: {}",
            meta2["targets"][*target]
        );
        assert_eq!(meta2["targets"][*target]["digest"], t[*target]["digest"]);
        // Nothing uploaded, yet every tag is in the registry at the digest: pushed, and each
        // one up to date (an empty `pushed` would read as "not pushed").
        let t2 = &meta2["targets"][*target];
        assert_eq!(t2["pushed"], t[*target]["tags"], "{target}: {t2}");
        assert_eq!(t2["up_to_date"], t[*target]["tags"], "{target}: {t2}");
    }
    let second: Vec<_> = reg.accesses().into_iter().skip(before).collect();
    let writes: Vec<_> = second
        .iter()
        .filter(|a| matches!(a.method.as_str(), "POST" | "PATCH" | "PUT"))
        .collect();
    assert!(writes.is_empty(), "a second bake wrote: {writes:?}");
}

/// The family's `description` is a default: a variant's own `LABEL` keeps its description (in
/// the config and the manifest annotation), a target's `description` in kiln.toml sets it, and a
/// variant without either gets the family's.
#[test]
fn a_variants_own_description_wins_over_the_familys() {
    let k = Kiln::new();
    if busybox::import(&k, "busybox").is_none() {
        return;
    }
    let dir = k.path("proj");
    let own = "LABEL org.opencontainers.image.description=\"python's own\"";
    project(
        &dir,
        "[family]\nname = \"sandbox\"\nregistry = \"reg.example/org\"\nversion = \"0.1.0\"\ndescription = \"the family\"\n[target.minimal]\ndescription = \"from kiln.toml\"\n",
        &[
            ("variants/Dockerfile", &variant("USER 1000")),
            ("variants/Dockerfile.python", &variant(own)),
            ("variants/Dockerfile.minimal", &variant("USER 1000")),
            ("variants/common.txt", "shared\n"),
        ],
    );
    let Some(_) = git_commit(&dir) else {
        return;
    };
    let digests = k.path("digests.json");
    k.ok(&[
        "--config",
        &config(&dir),
        "bake",
        "--metadata-file",
        digests.to_str().unwrap(),
    ]);
    let meta = json(&digests);
    for (target, want) in [
        ("python", "python's own"),
        ("minimal", "from kiln.toml"),
        ("full", "the family"),
    ] {
        let tag = meta["targets"][target]["tags"][0].as_str().unwrap();
        let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", tag])).unwrap();
        assert_eq!(
            v["config"]["config"]["Labels"]["org.opencontainers.image.description"], want,
            "{target}: {v}"
        );
        let layout = k.path(&format!("layout-{target}"));
        k.ok(&["copy", tag, &format!("oci:{}:t", layout.display())]);
        let index = json(&layout.join("index.json"));
        let m = index["manifests"][0]["digest"].as_str().unwrap();
        let manifest = json(&layout.join("blobs/sha256").join(&m["sha256:".len()..]));
        assert_eq!(
            manifest["annotations"]["org.opencontainers.image.description"], want,
            "{target}: {manifest}"
        );
    }
}

#[test]
fn lints_warn_and_strict_makes_them_errors() {
    let k = Kiln::new();
    if busybox::import(&k, "busybox").is_none() {
        return;
    }
    let dir = k.path("lint");
    let f = project(
        &dir,
        "[family]\nname = \"lint\"\nversion = \"1.0.0\"\nrequired_labels = [\"org.example.owner\"]\nsize_budget = \"1KB\"\n[tags]\ndefault = [\"{version}\"]\n",
        &[("variants/Dockerfile", "FROM busybox\nCOPY Dockerfile /x\n")],
    );
    let out = k
        .cmd()
        .args(["--config", f.to_str().unwrap(), "bake"])
        .output()
        .unwrap();
    crate::support::assert_success(&out, &"bake");
    let err = String::from_utf8_lossy(&out.stderr);
    for w in ["runs as root", "org.example.owner", "size budget"] {
        assert!(err.contains(w), "`{w}` not in: {err}");
    }
    let (code, err) = k.fails(&["--config", f.to_str().unwrap(), "bake", "--strict"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--strict") && err.contains("runs as root"),
        "{err}"
    );
    // `kiln build` runs the root-user lint too.
    let ctx = dir.join("variants");
    let out = k
        .cmd()
        .args(["build", ctx.to_str().unwrap(), "-t", "lint:1"])
        .output()
        .unwrap();
    crate::support::assert_success(&out, &"build");
    assert!(String::from_utf8_lossy(&out.stderr).contains("runs as root"));
    let (code, err) = k.fails(&["build", ctx.to_str().unwrap(), "--strict"]);
    assert_eq!(code, 1);
    assert!(err.contains("--strict"), "{err}");
}

const RUNLESS: &str =
    "FROM scratch\nARG TARGETARCH\nCOPY hello.txt /hello.txt\nLABEL org.example.arch=$TARGETARCH\n";

#[test]
fn two_platforms_make_an_index_skopeo_reads_and_copies() {
    let k = Kiln::new();
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let dir = k.path("multi");
    let f = project(
        &dir,
        &format!("[family]\nname = \"multi\"\nregistry = \"{}/it\"\nversion = \"2.0.0\"\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n[tags]\ndefault = [\"{{version}}\"]\n", reg.addr),
        &[("variants/Dockerfile", RUNLESS), ("variants/hello.txt", "hello\n")],
    );
    let digests = k.path("digests.json");
    k.ok(&[
        "--tls-verify=false",
        "--config",
        f.to_str().unwrap(),
        "bake",
        "--push",
        "--metadata-file",
        digests.to_str().unwrap(),
    ]);
    let meta = json(&digests);
    let full = &meta["targets"]["full"];
    assert_eq!(full["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(full["images"].as_array().unwrap().len(), 2);
    let r = format!("docker://{}/it/multi:2.0.0", reg.addr);
    if !need("skopeo") {
        return;
    }
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &r]));
    assert_eq!(
        format!("sha256:{}", crate::support::sha256_hex(raw.as_bytes())),
        full["digest"].as_str().unwrap()
    );
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    let out = k.path("copied");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--quiet",
        "--src-tls-verify=false",
        &r,
        &format!("oci:{}:all", out.display()),
    ]));
    assert!(crate::support::check_layout_blobs(&out) >= 5);

    // `kiln index create` merges two single-platform builds (as two CI runners would make).
    let ctx = dir.join("variants");
    for arch in ["amd64", "arm64"] {
        k.ok(&[
            "build",
            ctx.to_str().unwrap(),
            "--platform",
            &format!("linux/{arch}"),
            "-t",
            &format!("it/one:{arch}"),
        ]);
    }
    k.ok(&[
        "--tls-verify=false",
        "push",
        "it/one:arm64",
        &format!("{}/it/one:arm64", reg.addr),
    ]);
    let merged = format!("docker://{}/it/merged:1", reg.addr);
    let res: serde_json::Value = serde_json::from_str(&k.ok(&[
        "--tls-verify=false",
        "index",
        "create",
        "-t",
        &merged,
        "it/one:amd64",
        &format!("docker://{}/it/one:arm64", reg.addr),
    ]))
    .unwrap();
    assert_eq!(res["pushed"], true);
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &merged]));
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{raw}");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--quiet",
        "--src-tls-verify=false",
        &merged,
        &format!("oci:{}:merged", k.path("merged").display()),
    ]));
    // `kiln build --platform A,B --push` makes the same kind of index.
    let both = format!("{}/it/both:1", reg.addr);
    let digest = k.ok(&[
        "--tls-verify=false",
        "build",
        ctx.to_str().unwrap(),
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        &both,
        "--push",
    ]);
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{both}"),
    ]));
    assert_eq!(
        format!("sha256:{}", crate::support::sha256_hex(raw.as_bytes())),
        digest.trim()
    );
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{raw}");
    // Two images of one platform are refused.
    let (_, err) = k.fails(&[
        "index",
        "create",
        "-t",
        "it/bad:1",
        "it/one:amd64",
        "it/one:amd64",
    ]);
    assert!(err.contains("one image per platform"), "{err}");
}

/// A platform no `binfmt_misc` handler runs here (Debian's `qemu-user-static` registers no
/// `qemu-i386` on amd64): the bake fails before any platform is built, naming the packages and
/// `kiln index create`. (Until issue #20 every foreign RUN was refused with a pointer to
/// `FROM --platform=$BUILDPLATFORM`; foreign platforms with an emulator are in `multiarch`.)
#[test]
fn a_run_step_for_a_platform_without_an_emulator_fails_before_any_step() {
    if !cfg!(target_arch = "x86_64") {
        return; // linux/386 is the platform without a handler on amd64 hosts
    }
    let k = Kiln::new();
    if busybox::import(&k, "busybox").is_none() {
        return;
    }
    let dir = k.path("foreign");
    let f = project(
        &dir,
        "[family]\nname = \"foreign\"\nversion = \"1.0.0\"\nplatforms = [\"linux/amd64\", \"linux/386\"]\n[tags]\ndefault = [\"{version}\"]\n",
        &[("variants/Dockerfile", "FROM busybox\nRUN echo hi > /hi\n")],
    );
    let (code, err) = k.fails(&["--config", f.to_str().unwrap(), "bake"]);
    assert_eq!(code, 1);
    for want in [
        "Dockerfile:2:1",
        "RUN steps for linux/386 cannot run on this linux/amd64 host",
        "qemu-user-static binfmt-support",
        "kiln index create",
    ] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
    // Refused before the amd64 image was built: its RUN step is not in the cache.
    let keys = k.root().join("cache-v1/keys");
    let cached = std::fs::read_dir(&keys).map_or(0, |d| d.count());
    assert_eq!(cached, 0, "a step ran before the refusal");
}

/// Imports the Debian tree or tarball `base` with `kiln` (run through `ok`) and pushes it to the
/// registry at `addr` as a mirror of `docker.io/library/debian:bookworm-slim`, the family's base.
pub(crate) fn serve_debian_base(ok: &dyn Fn(&[&str]) -> String, base: &Path, addr: &str) {
    ok(&[
        "import",
        base.to_str().unwrap(),
        "-t",
        "debian-base:bookworm",
        "--cmd",
        "bash",
        "--env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]);
    ok(&[
        "--tls-verify=false",
        "push",
        "debian-base:bookworm",
        &format!("{addr}/mirror/library/debian:bookworm-slim"),
    ]);
}

/// The `--secret` that gives pip the CA of a TLS-intercepting proxy (`PIP_CERT`, else
/// `SSL_CERT_FILE`), when one is set: never in a layer.
pub(crate) fn pip_ca() -> Option<String> {
    ["PIP_CERT", "SSL_CERT_FILE"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|p| Path::new(p).is_file())
        .map(|p| format!("id=pip-ca,src={p}"))
}

/// Copies the repository's `variants/` into `dir`.
pub(crate) fn copy_variants(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("variants");
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
}

fn podman(k: &Kiln, args: &[&str]) -> String {
    crate::support::podman(&k.path("podman"), args)
}

/// The family end to end: a debootstrap bookworm base served as `debian:bookworm-slim` by a
/// mirror entry, `kiln bake --push` of the repository's own python variant (the default variant
/// here, so it carries `{version}`, `latest` and `sha-{gitsha}`) and of minimal (a stand-in
/// sharing python's first steps until `variants/Dockerfile.minimal` lands), shared steps built
/// once, every tag checked against the digests file, each image run by podman as uid 1000, and
/// a second bake that is all cache hits and writes nothing to the registry. (`full` and `node` are
/// built by scripts/build-family.sh: their apt and npm downloads are too slow for the suite.)
#[test]
fn the_family_bakes_on_a_debootstrap_base_through_a_mirror() {
    let Some(rootfs) = crate::support::runas::debootstrap::ensure_rootfs() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "CI=true and there is no debootstrap tree at {}",
                crate::support::debian::DEBIAN_ROOTFS
            );
        }
        eprintln!(
            "skipping: no debootstrap tree at {}",
            crate::support::debian::DEBIAN_ROOTFS
        );
        return;
    };
    let k = Kiln::new();
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    serve_debian_base(&|a| k.ok(a), &rootfs, &reg.addr);
    let dir = k.path("family");
    copy_variants(&dir.join("variants"));
    // Until variants/Dockerfile.minimal lands, a stand-in: the python variant's shared first
    // steps (base, user), then bash only.
    let stand_in = !dir.join("variants/Dockerfile.minimal").is_file();
    if stand_in {
        let python = std::fs::read_to_string(dir.join("variants/Dockerfile.python")).unwrap();
        let prelude: Vec<&str> = python
            .lines()
            .take_while(|l| !l.starts_with("ENV DEBIAN_FRONTEND"))
            .collect();
        std::fs::write(
            dir.join("variants/Dockerfile.minimal"),
            format!("{}\nUSER 1000:1000\nWORKDIR /workspace\nARG VERSION=0.0.0-dev\nLABEL org.opencontainers.image.version=\"${{VERSION}}\"\nCMD [\"bash\"]\n", prelude.join("\n")),
        )
        .unwrap();
    }
    let variants = "[\"python\", \"minimal\"]";
    let f = project(
        &dir,
        &format!(
            "[family]\nname = \"sandbox\"\nregistry = \"{addr}/kiln\"\nversion = \"0.1.0\"\ndefault_variant = \"python\"\nvariants = {variants}\n[family.build_args]\nBASE = \"debian:bookworm-slim\"\n[target.python]\ndockerfile = \"variants/Dockerfile.python\"\n[[registry]]\nprefix = \"docker.io\"\nmirrors = [{{ location = \"{addr}/mirror\", insecure = true }}]\n",
            addr = reg.addr
        ),
        &[],
    );
    let Some(sha) = git_commit(&dir) else {
        return;
    };
    let digests = k.path("digests.json");
    let ca = pip_ca();
    let bake = || {
        let mut args = vec![
            "--tls-verify=false",
            "--config",
            f.to_str().unwrap(),
            "bake",
            "--push",
            "--metadata-file",
            digests.to_str().unwrap(),
        ];
        if let Some(ca) = &ca {
            args.extend(["--secret", ca.as_str()]);
        }
        k.ok(&args)
    };
    bake();
    let meta = json(&digests);
    let mut expect = vec![(
        "python",
        vec![
            "0.1.0".to_string(),
            "latest".into(),
            format!("sha-{}", &sha[..12]),
        ],
        vec!["python3", "--version"],
        "Python 3.11",
    )];
    expect.push((
        "minimal",
        vec!["0.1.0-minimal".to_string()],
        vec!["bash", "--version"],
        "GNU bash",
    ));
    // Shared work is shared: every step of the second variant whose cache key a step of the
    // first had (the user-creating RUN among them) came from the cache.
    let steps = |t: &str| {
        meta["targets"][t]["images"][0]["steps"]
            .as_array()
            .unwrap()
            .clone()
    };
    let first: Vec<String> = steps("python")
        .iter()
        .map(|s| s["cache_key"].as_str().unwrap().to_string())
        .collect();
    let shared: Vec<_> = steps("minimal")
        .into_iter()
        .filter(|s| first.iter().any(|k| s["cache_key"] == k.as_str()))
        .collect();
    assert!(shared.iter().all(|s| s["cached"] == true), "{shared:?}");
    if stand_in {
        assert!(
            shared
                .iter()
                .any(|s| s["step"].as_str().unwrap().contains("useradd")),
            "{shared:?}"
        );
    }
    // The base came through the mirror once: no blob of it was fetched twice.
    let base_gets: Vec<_> = reg
        .accesses()
        .into_iter()
        .filter(|a| a.method == "GET" && a.path.contains("/mirror/library/debian/blobs/"))
        .collect();
    assert!(base_gets.len() <= 2, "{base_gets:?}");
    for (target, tags, cmd, answer) in &expect {
        let digest = meta["targets"][*target]["digest"].as_str().unwrap();
        for tag in tags {
            let r = format!("{}/kiln/sandbox:{tag}", reg.addr);
            let v: serde_json::Value = serde_json::from_str(&k.ok(&[
                "--tls-verify=false",
                "inspect",
                &format!("docker://{r}"),
            ]))
            .unwrap();
            assert_eq!(v["digest"], digest, "{r}");
        }
        if need("podman") {
            let r = format!("{}/kiln/sandbox:{}", reg.addr, tags[0]);
            podman(&k, &["pull", "--quiet", "--tls-verify=false", &r]);
            let base = [&crate::support::PODMAN_RUN[..], &[r.as_str()]].concat();
            let uid = podman(&k, &[&base[..], &["id", "-u"]].concat());
            assert_eq!(uid.trim(), "1000", "{target}");
            let out = podman(&k, &[&base[..], &cmd[..]].concat());
            assert!(out.contains(answer), "{target}: {out}");
        }
    }
    let before = reg.accesses().len();
    bake();
    let again = json(&digests);
    for (target, ..) in &expect {
        assert_eq!(
            again["targets"][*target]["cached"], true,
            "{}",
            again["targets"][*target]
        );
        assert_eq!(
            again["targets"][*target]["digest"],
            meta["targets"][*target]["digest"]
        );
    }
    let writes: Vec<_> = reg
        .accesses()
        .into_iter()
        .skip(before)
        .filter(|a| matches!(a.method.as_str(), "POST" | "PATCH" | "PUT"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

/// `kiln bake` has `kiln build`'s network flags: `RUN --network=host` needs
/// `--allow network.host` (an error naming the flag and the RUN, before any step), with it
/// the step shares the host's network; `--network none` leaves the steps only `lo`.
#[test]
fn bake_takes_the_network_flags_and_the_host_entitlement() {
    let k = Kiln::new();
    if busybox::import(&k, "busybox").is_none() {
        return;
    }
    let dir = k.path("net");
    let f = project(
        &dir,
        "[family]\nname = \"net\"\nversion = \"1.0.0\"\n[tags]\ndefault = [\"{version}\"]\n",
        &[(
            "variants/Dockerfile",
            "FROM busybox\nRUN --network=host test \"$(tail -n +3 /proc/net/dev | wc -l)\" -ge 1\nRUN test \"$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')\" = lo\n",
        )],
    );
    let cfg = f.to_str().unwrap();
    let (code, err) = k.fails(&["--config", cfg, "bake"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Dockerfile:2:1")
            && err.contains("`RUN --network=host` needs the `network.host` entitlement")
            && err.contains("--allow network.host"),
        "{err}"
    );
    let (code, err) = k.fails(&["--config", cfg, "bake", "--network", "host"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--allow network.host"), "{err}");
    k.ok(&[
        "--config",
        cfg,
        "bake",
        "--network",
        "none",
        "--allow",
        "network.host",
    ]);
}
