//! `kiln resolve`, `kiln status` and `kiln ensure`: each of the five rules, the semver rule
//! against the real registry's tag list, the no-image case, and bad `[image]` sections.
use std::path::{Path, PathBuf};

use crate::support::registry::{Mode, Registry};
use crate::support::{busybox, Kiln};

fn write(dir: &Path, toml: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let f = dir.join("kiln.toml");
    std::fs::write(&f, toml).unwrap();
    f
}

fn resolve(k: &Kiln, f: &Path) -> serde_json::Value {
    serde_json::from_str(&k.ok(&[
        "--tls-verify=false",
        "--config",
        f.to_str().unwrap(),
        "resolve",
        "--json",
    ]))
    .unwrap()
}

/// A registry with `it/app` tagged `1.2.0`, `1.10.0`, `2.0.0-rc1` and `latest`.
fn tagged_registry(k: &Kiln) -> Option<Registry> {
    busybox::import(k, "busybox")?;
    let reg = Registry::start(Mode::Plain)?;
    for t in ["1.2.0", "1.10.0", "2.0.0-rc1", "latest"] {
        k.ok(&[
            "--tls-verify=false",
            "push",
            "busybox",
            &format!("{}/it/app:{t}", reg.addr),
        ]);
    }
    Some(reg)
}

#[test]
fn the_version_rule_picks_the_highest_matching_tag_from_the_registry() {
    let k = Kiln::new();
    let Some(reg) = tagged_registry(&k) else {
        return;
    };
    let name = format!("{}/it/app", reg.addr);
    for (constraint, want) in [
        ("^1", "1.10.0"),
        (">=1.2", "1.10.0"),
        ("~1.2", "1.2.0"),
        ("=1.2.0", "1.2.0"),
        (">=2.0.0-rc1", "2.0.0-rc1"),
    ] {
        let f = write(
            &k.path("semver"),
            &format!("[image]\nname = \"{name}\"\nversion = \"{constraint}\"\n"),
        );
        let r = resolve(&k, &f);
        assert_eq!(
            r["reference"],
            format!("{name}:{want}"),
            "{constraint}: {r}"
        );
        assert_eq!(r["rule"], "version");
        assert_eq!(r["rule_number"], 3);
        assert!(r["reason"].as_str().unwrap().contains(want), "{r}");
    }
    // `>=1` without a pre-release never picks 2.0.0-rc1.
    let f = write(
        &k.path("semver"),
        &format!("[image]\nname = \"{name}\"\nversion = \">=1\"\n"),
    );
    assert_eq!(resolve(&k, &f)["reference"], format!("{name}:1.10.0"));
    // No match and nothing below: an error naming the constraint and the tags.
    let f = write(
        &k.path("semver"),
        &format!("[image]\nname = \"{name}\"\nversion = \"^3\"\n"),
    );
    let (_, err) = k.fails(&[
        "--tls-verify=false",
        "--config",
        f.to_str().unwrap(),
        "resolve",
    ]);
    assert!(err.contains("^3") && err.contains("1.10.0"), "{err}");
    // No match, and `image` below: rule 4, saying why 3 did not answer.
    let f = write(
        &k.path("semver"),
        &format!("[image]\nname = \"{name}\"\nversion = \"^3\"\nimage = \"{name}:latest\"\n"),
    );
    let r = resolve(&k, &f);
    assert_eq!(r["rule_number"], 4);
    assert!(r["reason"].as_str().unwrap().contains("^3"), "{r}");
    // `ensure` pulls what rule 3 chose into the store.
    let f = write(
        &k.path("semver"),
        &format!("[image]\nname = \"{name}\"\nversion = \"^1\"\n"),
    );
    let k2 = Kiln::new();
    let out: serde_json::Value = serde_json::from_str(&k2.ok(&[
        "--tls-verify=false",
        "--config",
        f.to_str().unwrap(),
        "ensure",
        "--json",
    ]))
    .unwrap();
    assert_eq!(out["action"], "pulled");
    assert_eq!(out["reference"], format!("{name}:1.10.0"));
    // Rule 1 pins that digest: `ensure` pulls exactly it.
    let digest = out["digest"].as_str().unwrap().to_string();
    let pinned = write(
        &k.path("pinned"),
        &format!("[image]\nname = \"{name}\"\ndigest = \"{digest}\"\nversion = \"^1\"\n"),
    );
    let k3 = Kiln::new();
    let out3: serde_json::Value = serde_json::from_str(&k3.ok(&[
        "--tls-verify=false",
        "--config",
        pinned.to_str().unwrap(),
        "ensure",
        "--json",
    ]))
    .unwrap();
    assert_eq!(out3["rule"], "digest");
    assert_eq!(out3["digest"], digest.as_str());
    assert_eq!(out3["reference"], format!("{name}@{digest}"));
    let status = k2.ok(&[
        "--tls-verify=false",
        "--config",
        f.to_str().unwrap(),
        "status",
    ]);
    assert!(
        status.contains(&format!("Image: {name}:1.10.0")),
        "{status}"
    );
    assert!(status.contains("sha256:"), "{status}");
}

#[test]
fn each_rule_in_priority_order() {
    let k = Kiln::new();
    let Some(reg) = tagged_registry(&k) else {
        return;
    };
    let name = format!("{}/it/app", reg.addr);
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let all = format!(
        "[image]\nname = \"{name}\"\ndigest = \"{digest}\"\ntag_override = \"1.2.0\"\nversion = \"^1\"\nimage = \"{name}:latest\"\n"
    );
    let dir = k.path("rules");
    std::fs::create_dir_all(dir.join("deploy")).unwrap();
    std::fs::write(
        dir.join("deploy/Dockerfile"),
        "FROM busybox\nCOPY kiln.toml /kiln.toml\n",
    )
    .unwrap();
    let expect = [
        (1, format!("{name}@{digest}")),
        (2, format!("{name}:1.2.0")),
        (3, format!("{name}:1.10.0")),
        (4, format!("{name}:latest")),
        (5, format!("{name}:0.0.0-local")),
    ];
    // Drop one rule's key at a time, highest first: the next rule answers.
    let mut text = all.clone();
    for (rule, reference) in &expect {
        let f = write(&dir, &text);
        let r = resolve(&k, &f);
        assert_eq!(r["rule_number"], *rule, "{text}: {r}");
        assert_eq!(r["reference"], reference.as_str(), "{text}: {r}");
        assert!(
            r["reason"]
                .as_str()
                .unwrap()
                .starts_with(&format!("rule {rule}:")),
            "{r}"
        );
        let key = ["digest", "tag_override", "version", "image", ""][*rule as usize - 1];
        if !key.is_empty() {
            text = text
                .lines()
                .filter(|l| !l.starts_with(&format!("{key} ")))
                .collect::<Vec<_>>()
                .join("\n");
            text.push('\n');
        }
    }
    // Rule 5 searches ./Dockerfile, ./v3/Dockerfile, ./deploy/Dockerfile in order (configurable),
    // and `ensure` builds it, tagged {name}:{version}-{gitsha}.
    let f = write(
        &dir,
        &format!("[image]\nname = \"{name}\"\nbuild_version = \"0.3.0\"\n"),
    );
    let r = resolve(&k, &f);
    assert_eq!(
        r["dockerfile"],
        dir.join("./deploy/Dockerfile").to_str().unwrap()
    );
    std::fs::create_dir_all(dir.join("v3")).unwrap();
    std::fs::write(dir.join("v3/Dockerfile"), "FROM busybox\n").unwrap();
    let r = resolve(&k, &f);
    assert_eq!(
        r["dockerfile"],
        dir.join("./v3/Dockerfile").to_str().unwrap()
    );
    let f = write(
        &dir,
        &format!("[image]\nname = \"{name}\"\nbuild_version = \"0.3.0\"\ndockerfiles = [\"deploy/Dockerfile\", \"v3/Dockerfile\"]\n"),
    );
    let r = resolve(&k, &f);
    assert_eq!(
        r["dockerfile"],
        dir.join("deploy/Dockerfile").to_str().unwrap()
    );
    let out: serde_json::Value =
        serde_json::from_str(&k.ok(&["--config", f.to_str().unwrap(), "ensure", "--json"]))
            .unwrap();
    assert_eq!(out["action"], "built");
    assert_eq!(out["reference"], format!("{name}:0.3.0-local"));
    // A pull that fails builds only with --build-fallback.
    let f = write(
        &dir,
        &format!(
            "[image]\nname = \"{name}\"\ntag_override = \"9.9.9\"\nbuild_version = \"0.3.0\"\n"
        ),
    );
    let (_, err) = k.fails(&[
        "--tls-verify=false",
        "--config",
        f.to_str().unwrap(),
        "ensure",
    ]);
    assert!(
        err.contains("9.9.9") && err.contains("--build-fallback"),
        "{err}"
    );
    let out: serde_json::Value = serde_json::from_str(&k.ok(&[
        "--tls-verify=false",
        "--config",
        f.to_str().unwrap(),
        "ensure",
        "--build-fallback",
        "--json",
    ]))
    .unwrap();
    assert_eq!(out["action"], "built-fallback");
}

#[test]
fn nothing_configured_means_no_image() {
    let k = Kiln::new();
    for toml in [
        "",
        "[image]\n",
        "[family]\nname = \"x\"\nversion = \"1.0.0\"\n",
    ] {
        let f = write(&k.path("none"), toml);
        let (code, err) = k.fails(&["--config", f.to_str().unwrap(), "resolve"]);
        assert_eq!(code, 2);
        assert!(err.contains("no image configured"), "{toml}: {err}");
        let status = k.ok(&["--config", f.to_str().unwrap(), "status"]);
        assert!(status.starts_with("Image: none"), "{toml}: {status}");
    }
    // Bad sections name the file, key and value.
    for (toml, wanted) in [
        ("[image]\nversion = \"^1\"\n", "image.name"),
        ("[image]\nname = \"a/b\"\nversion = \"one\"\n", "one"),
        (
            "[image]\nname = \"a/b\"\ncolour = \"red\"\n",
            "image.colour",
        ),
        (
            "[image]\nname = \"a/b\"\ndigest = \"sha256:12\"\n",
            "sha256:12",
        ),
    ] {
        let f = write(&k.path("bad"), toml);
        let (_, err) = k.fails(&["--config", f.to_str().unwrap(), "resolve"]);
        assert!(
            err.contains(wanted) && err.contains(f.to_str().unwrap()),
            "{toml}: {err}"
        );
    }
}
