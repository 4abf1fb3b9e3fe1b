//! `kiln bake` fanned out over runners: `--matrix` prints one entry per target and platform,
//! each entry's command runs in its own kiln (its own empty store and working directory), in
//! parallel, against one registry with one cache ref each (`cache_to` / `cache_from` of
//! `kiln.toml`, templated by `{variant}` and `{platform}`), then `--merge` joins their digests
//! files into the tagged images and indexes. The result equals one machine's `kiln bake --push`,
//! digest for digest; a second round of fresh runners answers every layer step from the cache.
use std::path::{Path, PathBuf};

use crate::support::registry::{Mode, Registry};
use crate::support::{need, run, Kiln};

const EPOCH: &str = "1700000000";

fn variant(file: &str) -> String {
    format!(
        "FROM scratch\nARG TARGETARCH\nCOPY common.txt /common.txt\nCOPY {file} /{file}\nLABEL org.example.arch=$TARGETARCH\n"
    )
}

/// The family (two variants, two platforms) under `dir`, its images in `REG/NS/sandbox`, its
/// caches in `REG/NS/cache:VARIANT-PLATFORM`.
fn family(dir: &Path, reg: &str, ns: &str) -> PathBuf {
    let files = [
        ("variants/Dockerfile", variant("full.txt")),
        ("variants/Dockerfile.python", variant("py.txt")),
        ("variants/common.txt", "shared by every variant\n".into()),
        ("variants/full.txt", "full\n".into()),
        ("variants/py.txt", "python\n".into()),
    ];
    for (p, text) in &files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let f = dir.join("kiln.toml");
    std::fs::write(
        &f,
        format!(
            "[family]\nname = \"sandbox\"\nregistry = \"{reg}/{ns}\"\nversion = \"0.1.0\"\n\
             platforms = [\"linux/amd64\", \"linux/arm64\"]\n\
             cache_to = \"type=registry,ref={reg}/{ns}/cache:{{variant}}-{{platform}},mode=max\"\n\
             cache_from = \"{reg}/{ns}/cache:{{variant}}-{{platform}}\"\n\
             [tags]\ndefault = [\"{{version}}\", \"latest\"]\nvariant = [\"{{version}}-{{variant}}\"]\n"
        ),
    )
    .unwrap();
    f
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Runs every matrix entry in its own fresh kiln, in parallel; returns the digests files.
fn run_runners(entries: &[serde_json::Value], work: &Path) -> Vec<PathBuf> {
    std::thread::scope(|s| {
        let handles: Vec<_> = entries
            .iter()
            .map(|e| {
                s.spawn(move || {
                    let runner = Kiln::new();
                    let cwd = runner.path("work");
                    std::fs::create_dir_all(&cwd).unwrap();
                    let command = e["command"].as_str().unwrap();
                    assert!(!command.contains('\''), "{command}");
                    let words: Vec<&str> = command.split(' ').collect();
                    assert_eq!(&words[..2], ["kiln", "bake"], "{command}");
                    let out = runner
                        .cmd()
                        .current_dir(&cwd)
                        .arg("--tls-verify=false")
                        .args(&words[1..])
                        .output()
                        .unwrap();
                    crate::support::assert_success(&out, &command);
                    let produced = cwd.join(e["metadata_file"].as_str().unwrap());
                    let kept = work.join(e["metadata_file"].as_str().unwrap());
                    std::fs::copy(produced, &kept).unwrap();
                    kept
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// (step, cache) of every layer-making step of every image of every target of a digests file.
fn answers(meta: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, t) in meta["targets"].as_object().unwrap() {
        for img in t["images"].as_array().unwrap() {
            for s in img["steps"].as_array().unwrap() {
                if s["cache"] != "none" {
                    out.push((
                        format!("{name} {} {}", img["platform"], s["step"]),
                        s["cache"].as_str().unwrap().to_string(),
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn bake_fanned_out_over_runners_then_merged_equals_one_machines_bake_digest_for_digest() {
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let one_dir = work.path().join("one");
    let fan_dir = work.path().join("fan");
    let one = family(&one_dir, &reg.addr, "one");
    let fan = family(&fan_dir, &reg.addr, "fan");

    // One machine.
    let single = Kiln::new();
    let single_meta = single.path("digests.json");
    single.ok(&[
        "--tls-verify=false",
        "--config",
        one.to_str().unwrap(),
        "bake",
        "--push",
        "--source-date-epoch",
        EPOCH,
        "--metadata-file",
        single_meta.to_str().unwrap(),
    ]);
    let single_meta = json(&single_meta);

    // The matrix: targets × platforms, each with its command and its own cache ref.
    let planner = Kiln::new();
    let cfg = fan.to_str().unwrap();
    let github = planner.ok(&[
        "--config",
        cfg,
        "bake",
        "--matrix",
        "--format",
        "github",
        "--source-date-epoch",
        EPOCH,
    ]);
    assert_eq!(github.trim().lines().count(), 1, "{github}");
    let github: serde_json::Value = serde_json::from_str(&github).unwrap();
    let entries = github["include"].as_array().unwrap().clone();
    let ids: Vec<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "full-linux-amd64",
            "full-linux-arm64",
            "python-linux-amd64",
            "python-linux-arm64"
        ]
    );
    for e in &entries {
        let id = e["id"].as_str().unwrap();
        let cache = format!("{}/fan/cache:{id}", reg.addr);
        assert_eq!(
            e["cache_to"],
            serde_json::json!([format!("type=registry,ref={cache},mode=max")])
        );
        assert_eq!(e["cache_from"], serde_json::json!([cache]));
        let command = e["command"].as_str().unwrap();
        for want in [
            format!(
                "kiln bake {} --platform {}",
                e["target"].as_str().unwrap(),
                e["platform"].as_str().unwrap()
            ),
            "--push-by-digest".into(),
            format!("--metadata-file digests-{id}.json"),
            format!("--source-date-epoch {EPOCH}"),
        ] {
            assert!(command.contains(&want), "{command} lacks {want}");
        }
    }
    let json_form: serde_json::Value = serde_json::from_str(&planner.ok(&[
        "--config",
        cfg,
        "bake",
        "--matrix",
        "--source-date-epoch",
        EPOCH,
    ]))
    .unwrap();
    assert_eq!(json_form, github["include"]);

    // The runners, in parallel, each with an empty store; nothing is tagged before the merge.
    let files = run_runners(&entries, work.path());
    for f in &files {
        let m = json(f);
        let (_, t) = m["targets"].as_object().unwrap().iter().next().unwrap();
        assert_eq!(t["images"].as_array().unwrap().len(), 1);
        assert!(t["pushed"][0].as_str().unwrap().contains("@sha256:"), "{t}");
        assert!(answers(&m).iter().all(|(_, c)| c == "ran"), "{m}");
    }
    let tag = format!("docker://{}/fan/sandbox:0.1.0", reg.addr);
    let probe = planner
        .cmd()
        .args(["--tls-verify=false", "inspect", &tag])
        .output()
        .unwrap();
    assert!(!probe.status.success(), "tagged before the merge");

    // The merge, on yet another machine.
    let merger = Kiln::new();
    let merged_path = merger.path("digests.json");
    let mut args = vec![
        "--tls-verify=false",
        "--config",
        cfg,
        "bake",
        "--merge",
        "--source-date-epoch",
        EPOCH,
        "--metadata-file",
        merged_path.to_str().unwrap(),
    ];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    merger.ok(&args);
    let merged = json(&merged_path);

    // Digest for digest: every target's index, every platform's image, the sizes and platforms.
    for target in ["full", "python"] {
        let (a, b) = (&single_meta["targets"][target], &merged["targets"][target]);
        for k in ["digest", "mediaType", "platforms", "size"] {
            assert_eq!(a[k], b[k], "{target} {k}");
        }
        assert_eq!(b["mediaType"], "application/vnd.oci.image.index.v1+json");
        let digests = |t: &serde_json::Value| -> Vec<(String, String)> {
            t["images"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| (i["platform"].to_string(), i["digest"].to_string()))
                .collect()
        };
        assert_eq!(digests(a), digests(b), "{target}");
        let tags = |t: &serde_json::Value, ns: &str| -> Vec<String> {
            t["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().replace(&format!("/{ns}/"), "/"))
                .collect()
        };
        assert_eq!(tags(a, "one"), tags(b, "fan"), "{target}");
        assert_eq!(b["pushed"], b["tags"], "{target}");
    }
    for k in ["version", "revision", "created"] {
        assert_eq!(single_meta[k], merged[k], "{k}");
    }
    // The registry has the tags at those digests (skopeo as the oracle).
    if need("skopeo") {
        for (tag, target) in [
            ("0.1.0", "full"),
            ("latest", "full"),
            ("0.1.0-python", "python"),
        ] {
            let raw = run(std::process::Command::new("skopeo").args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{}/fan/sandbox:{tag}", reg.addr),
            ]));
            assert_eq!(
                format!("sha256:{}", crate::support::sha256_hex(raw.as_bytes())),
                single_meta["targets"][target]["digest"].as_str().unwrap(),
                "{tag}"
            );
        }
    } else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "skopeo is missing"
        );
    }

    // A second round of fresh runners: every layer step answered by its own cache ref, the
    // same digests.
    let again_dir = work.path().join("again");
    std::fs::create_dir_all(&again_dir).unwrap();
    let again = run_runners(&entries, &again_dir);
    for (f, g) in files.iter().zip(&again) {
        let (m1, m2) = (json(f), json(g));
        let a = answers(&m2);
        assert!(!a.is_empty());
        assert!(a.iter().all(|(_, c)| c == "remote"), "{a:?}");
        let first = m1["targets"].as_object().unwrap().values().next().unwrap()["digest"].clone();
        let second = m2["targets"].as_object().unwrap().values().next().unwrap()["digest"].clone();
        assert_eq!(first, second);
    }

    // A merge missing a runner's file says which target and platform.
    let (code, err) = merger.fails(&[
        "--tls-verify=false",
        "--config",
        cfg,
        "bake",
        "--merge",
        "--source-date-epoch",
        EPOCH,
        files[0].to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("target `full` (linux/arm64)"), "{err}");
}
