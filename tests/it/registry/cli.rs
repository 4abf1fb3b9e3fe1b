//! The registry through kiln's commands: `build --push`, `push`, `pull`, `copy docker://`,
//! `tags`, mirrors in `kiln.toml`, checked with skopeo and podman against the real registry.
use std::process::Command;

use crate::support::registry::{Mode, Registry};
use crate::support::{busybox, need, run, Kiln};

const DOCKERFILE: &str =
    "ARG BASE=busybox\nFROM ${BASE}\nCOPY hello.txt /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n";

fn context(k: &Kiln) -> std::path::PathBuf {
    let c = k.path("ctx");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(c.join("hello.txt"), b"hello from the registry\n").unwrap();
    c
}

fn podman(k: &Kiln, args: &[&str]) -> String {
    crate::support::podman(&k.path("podman"), args)
}

#[test]
fn a_pushed_build_is_read_by_skopeo_and_run_by_podman() {
    let k = Kiln::new();
    if busybox::import(&k, "busybox").is_none() {
        return;
    }
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let c = context(&k);
    let name = format!("{}/it/app:1", reg.addr);
    let digest = k
        .ok(&["build", c.to_str().unwrap(), "-t", &name, "--push"])
        .trim()
        .to_string();
    if need("skopeo") {
        let v: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{name}"),
        ])))
        .unwrap();
        assert_eq!(v["Digest"], digest.as_str());
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{name}"),
            &format!("oci:{}:back", k.path("back").display()),
        ]));
    }
    if need("podman") {
        podman(&k, &["pull", "--quiet", "--tls-verify=false", &name]);
        let out = podman(
            &k,
            &[&crate::support::PODMAN_RUN[..], &[name.as_str()]].concat(),
        );
        assert_eq!(out, "hello from the registry\n");
    }
    // `kiln tags` lists it; `kiln inspect docker://` reads it; `kiln pull` into a new store.
    let tags: serde_json::Value =
        serde_json::from_str(&k.ok(&["tags", &format!("{}/it/app", reg.addr)])).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["1"]));
    let v: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", &format!("docker://{name}")])).unwrap();
    assert_eq!(v["digest"], digest.as_str());
    let k2 = Kiln::new();
    let pulled = k2.ok(&["pull", &name]);
    assert!(pulled.trim().ends_with(&digest), "{pulled}");
    k2.ok(&["store", "fsck"]);
}

#[test]
fn a_second_push_sends_no_blob_and_other_repositories_get_mounts() {
    let k = Kiln::new();
    if busybox::import(&k, "busybox").is_none() {
        return;
    }
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let c = context(&k);
    let name = format!("{}/it/app:1", reg.addr);
    k.ok(&["build", c.to_str().unwrap(), "-t", &name, "--push"]);
    let before = reg.accesses().len();
    k.ok(&["push", &name]);
    let second: Vec<_> = reg.accesses().into_iter().skip(before).collect();
    let uploads: Vec<_> = second
        .iter()
        .filter(|a| a.method == "POST" || a.method == "PATCH")
        .collect();
    assert!(uploads.is_empty(), "a second push uploaded: {uploads:?}");
    let puts: Vec<_> = second.iter().filter(|a| a.method == "PUT").collect();
    assert_eq!(puts.len(), 1, "{second:?}");
    assert!(puts[0].path.contains("/manifests/"), "{second:?}");

    // A base pulled from one repository, built on and pushed to another: the base layer is
    // mounted, not uploaded.
    let base = format!("{}/base/busybox:1", reg.addr);
    k.ok(&["push", "busybox", &base]);
    let k2 = Kiln::new();
    k2.ok(&["pull", &base]);
    let c2 = context(&k2);
    let before = reg.accesses().len();
    k2.ok(&[
        "build",
        c2.to_str().unwrap(),
        "--build-arg",
        &format!("BASE={base}"),
        "-t",
        &format!("{}/other/app:1", reg.addr),
        "--push",
    ]);
    let third: Vec<_> = reg.accesses().into_iter().skip(before).collect();
    assert!(
        third
            .iter()
            .any(|a| a.method == "POST" && a.path.contains("mount=") && a.status == 201),
        "no cross-repository mount: {third:?}"
    );
}

#[test]
fn a_mirror_in_kiln_toml_serves_a_base_whose_registry_is_unreachable() {
    let k = Kiln::new();
    if busybox::import(&k, "busybox").is_none() {
        return;
    }
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    k.ok(&[
        "push",
        "busybox",
        &format!("{}/mirror/library/busybox:mirrored", reg.addr),
    ]);
    let config = k.path("kiln.toml");
    std::fs::write(
        &config,
        format!("[[registry]]\nprefix = \"docker.io\"\nmirrors = [{{ location = \"{}/mirror\", insecure = true }}]\n", reg.addr),
    )
    .unwrap();
    // A fresh store: the base must come through the mirror (docker.io is not reachable here).
    let k2 = Kiln::new();
    let c = context(&k2);
    let out = k2.ok(&[
        "--config",
        config.to_str().unwrap(),
        "build",
        c.to_str().unwrap(),
        "--build-arg",
        "BASE=busybox:mirrored",
        "-t",
        "through-mirror:1",
    ]);
    assert!(out.starts_with("sha256:"));
    let images = k2.ok(&["images"]);
    assert!(
        images.contains("docker.io/library/busybox:mirrored"),
        "{images}"
    );
}

#[test]
fn registry_errors_name_the_reference_and_exit_2() {
    let k = Kiln::new();
    let (code, err) = k.fails(&["pull", "localhost:1/nothing/here:1"]);
    assert_eq!(code, 2);
    assert!(err.contains("localhost:1"), "{err}");
    let (code, err) = k.fails(&["pull", "UPPER/Case::bad"]);
    assert_eq!(code, 2);
    assert!(err.contains("UPPER/Case::bad"), "{err}");
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let (code, err) = k.fails(&["pull", &format!("{}/missing/image:1", reg.addr)]);
    assert_eq!(code, 2);
    assert!(
        err.contains("missing/image") && err.contains("MANIFEST_UNKNOWN"),
        "{err}"
    );
    k.ok(&["store", "fsck"]);
}

#[test]
fn login_stores_a_credential_other_tools_read_and_never_prints_it() {
    let Some(reg) = Registry::start(Mode::BasicTls {
        user: "kilnuser".into(),
        password: "s3cr3t-pw".into(),
    }) else {
        return;
    };
    let k = Kiln::new();
    let docker_config = k.path("docker-config");
    let certs = k.path("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(reg.ca_file.as_ref().unwrap(), certs.join("ca.crt")).unwrap();
    let login = |password: &str| {
        let mut c = k.cmd();
        c.env("DOCKER_CONFIG", &docker_config)
            .args([
                "--cert-dir",
                certs.to_str().unwrap(),
                "login",
                "-u",
                "kilnuser",
                "--password-stdin",
                &reg.addr,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let bad = login("wrong-password\n");
    assert_eq!(bad.status.code(), Some(2));
    let text = String::from_utf8_lossy(&bad.stderr);
    assert!(
        text.contains(&reg.addr) && !text.contains("wrong-password"),
        "{text}"
    );
    let good = login("s3cr3t-pw\n");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&good.stdout),
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(!all.contains("s3cr3t-pw"));
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(docker_config.join("config.json")).unwrap()).unwrap();
    assert!(
        stored["auths"][reg.addr.as_str()]["auth"].is_string(),
        "{stored}"
    );
    // The stored credential lets a push through.
    if busybox::import(&k, "busybox").is_some() {
        let mut c = k.cmd();
        let out = c
            .env("DOCKER_CONFIG", &docker_config)
            .args([
                "--cert-dir",
                certs.to_str().unwrap(),
                "push",
                "busybox",
                &format!("{}/auth/busybox:1", reg.addr),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut c = k.cmd();
    let out = c
        .env("DOCKER_CONFIG", &docker_config)
        .args(["logout", &reg.addr])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(docker_config.join("config.json")).unwrap()).unwrap();
    assert!(stored["auths"].get(reg.addr.as_str()).is_none(), "{stored}");
}
