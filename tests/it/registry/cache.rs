//! `--cache-to` / `--cache-from` between two "runners" (two kilns with empty stores and their
//! own working directories), through the real registry or an OCI layout directory: a
//! nothing-changed build on runner B is all remote hits, runs no RUN, downloads no layer and
//! gives runner A's digest; a changed file runs only the steps after it; a cache whose layer
//! bytes do not match their digest is detected and the steps rebuilt, giving the right image.
//! The main scenario runs against a registry with TLS and basic auth.
use std::path::{Path, PathBuf};

use crate::support::registry::{Access, Mode, Registry};
use crate::support::{busybox, Kiln};

/// Two stages, RUN in both, `COPY --from`: what `mode=max` is for.
fn dockerfile(base: &str) -> String {
    format!(
        "FROM {base} AS build\nCOPY a.txt /a.txt\nRUN cp /a.txt /built.txt && echo built >> /built.txt && touch /other\n\
         FROM {base}\nCOPY --from=build /built.txt /built.txt\nCOPY c.txt /c.txt\n\
         RUN cat /c.txt /built.txt > /d.txt\nCMD [\"cat\", \"/d.txt\"]\n"
    )
}

/// A context in `k`'s own directory (each runner has its own working directory).
fn context(k: &Kiln, base: &str) -> PathBuf {
    let c = k.path("work/ctx");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("Dockerfile"), dockerfile(base)).unwrap();
    std::fs::write(c.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(c.join("c.txt"), b"gamma\n").unwrap();
    c
}

/// How a runner reaches the registry: with `--cert-dir` and a `DOCKER_CONFIG` holding the
/// credentials of a registry with TLS and basic auth, or plainly.
#[derive(Clone, Default)]
struct Auth {
    certs: Option<PathBuf>,
    docker_config: Option<PathBuf>,
}

impl Auth {
    /// Credentials and the CA of `reg` (TLS, `user`:`password`), written under `dir`.
    fn for_registry(reg: &Registry, dir: &Path, user: &str, password: &str) -> Auth {
        use base64::Engine as _;
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::copy(reg.ca_file.as_ref().unwrap(), certs.join("ca.crt")).unwrap();
        let config = dir.join("docker-config");
        std::fs::create_dir_all(&config).unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        std::fs::write(
            config.join("config.json"),
            serde_json::json!({"auths": {reg.addr.as_str(): {"auth": auth}}}).to_string(),
        )
        .unwrap();
        Auth {
            certs: Some(certs),
            docker_config: Some(config),
        }
    }

    /// Runs `k` with `args`; panics unless it succeeds; returns stdout.
    fn ok(&self, k: &Kiln, args: &[&str]) -> String {
        let mut c = k.cmd();
        if let Some(d) = &self.docker_config {
            c.env("DOCKER_CONFIG", d);
        }
        if let Some(d) = &self.certs {
            c.arg("--cert-dir").arg(d);
        }
        let out = c.args(args).output().unwrap();
        crate::support::assert_success(&out, &args);
        String::from_utf8(out.stdout).unwrap()
    }
}

fn build(k: &Kiln, ctx: &Path, extra: &[&str]) -> (String, serde_json::Value) {
    build_as(&Auth::default(), k, ctx, extra)
}

fn build_as(auth: &Auth, k: &Kiln, ctx: &Path, extra: &[&str]) -> (String, serde_json::Value) {
    let meta = k.path("meta.json");
    let mut args = vec![
        "build",
        ctx.to_str().unwrap(),
        "--metadata-file",
        meta.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let digest = auth.ok(k, &args).trim().to_string();
    let m = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    (digest, m)
}

/// (step, how it was answered) for each layer-making step (config steps say `none`).
fn answers(meta: &serde_json::Value) -> Vec<(String, String)> {
    meta["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["cache"] != "none")
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["cache"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn layer_digests(meta: &serde_json::Value) -> Vec<String> {
    meta["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn blob_gets<'a>(log: &'a [Access], blobs: &[String]) -> Vec<&'a Access> {
    log.iter()
        .filter(|a| {
            a.method == "GET"
                && blobs
                    .iter()
                    .any(|b| a.path.ends_with(&format!("/blobs/{b}")))
        })
        .collect()
}

/// A registry with busybox at `REG/base:1`, and runner A's kiln (which imported it).
fn setup() -> Option<(Registry, Kiln, String)> {
    let a = Kiln::new();
    busybox::import(&a, "busybox")?;
    let reg = Registry::start(Mode::Plain)?;
    let base = format!("{}/base:1", reg.addr);
    a.ok(&["push", "busybox", &base]);
    Some((reg, a, base))
}

/// As [`setup`], the registry with TLS and basic auth; each runner gets the credentials.
fn setup_with_auth() -> Option<(Registry, Kiln, String, Auth, Auth)> {
    let a = Kiln::new();
    busybox::import(&a, "busybox")?;
    let reg = Registry::start(Mode::BasicTls {
        user: "ci".into(),
        password: "cache-pw".into(),
    })?;
    let auth_a = Auth::for_registry(&reg, &a.path("auth"), "ci", "cache-pw");
    let base = format!("{}/base:1", reg.addr);
    auth_a.ok(&a, &["push", "busybox", &base]);
    let auth_b = Auth::for_registry(&reg, &a.path("auth-b"), "ci", "cache-pw");
    Some((reg, a, base, auth_a, auth_b))
}

#[test]
fn a_fresh_runner_with_the_registry_cache_downloads_no_layer_and_rebuilds_only_what_changed() {
    let Some((reg, a, base, auth_a, auth_b)) = setup_with_auth() else {
        return;
    };
    let cache = format!("{}/cache:main", reg.addr);
    let app = format!("{}/app:1", reg.addr);
    let cache_to = format!("type=registry,ref={cache},mode=max");
    let ctx_a = context(&a, &base);
    let (digest_a, meta_a) = build_as(
        &auth_a,
        &a,
        &ctx_a,
        &["-t", &app, "--push", "--cache-to", &cache_to],
    );
    assert!(
        answers(&meta_a).iter().all(|(_, h)| h == "ran"),
        "{meta_a:#}"
    );

    // Runner B: another empty store, another working directory, nothing changed.
    let b = Kiln::new();
    let ctx_b = context(&b, &base);
    assert_ne!(ctx_a, ctx_b);
    let before = reg.accesses().len();
    let app2 = format!("{}/app:2", reg.addr);
    let (digest_b, meta_b) = build_as(
        &auth_b,
        &b,
        &ctx_b,
        &["-t", &app2, "--push", "--cache-from", &cache],
    );
    assert_eq!(digest_b, digest_a);
    let hits = answers(&meta_b);
    assert_eq!(hits.len(), 5, "{meta_b:#}");
    assert!(hits.iter().all(|(_, h)| h == "remote"), "{hits:#?}");
    assert!(meta_b["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["cache"] == "remote")
        .all(|s| s["cache_from"] == cache.as_str()));
    // No layer bytes: every layer of both stages (the image's, and the build stage's RUN) is
    // only HEADed or mounted.
    let log: Vec<Access> = reg.accesses().into_iter().skip(before).collect();
    let layers = layer_digests(&meta_a);
    assert_eq!(blob_gets(&log, &layers), Vec::<&Access>::new(), "{log:#?}");
    assert!(
        !log.iter().any(|a| a.method == "GET"
            && a.path.contains("/blobs/")
            && !a.path.contains("/cache/blobs/")
            && !a.path.contains("/base/blobs/")),
        "a blob other than the cache's and the base's config was fetched: {log:#?}"
    );
    let fetched: Vec<&Access> = log
        .iter()
        .filter(|a| a.method == "GET" && a.path.contains("/blobs/"))
        .collect();
    assert_eq!(
        fetched.len(),
        2,
        "the base's config and the cache's: {fetched:#?}"
    );

    // One changed context file: only the steps after it run.
    std::fs::write(ctx_b.join("c.txt"), b"changed\n").unwrap();
    let (digest_c, meta_c) = build_as(&auth_b, &b, &ctx_b, &["-t", &app2, "--cache-from", &cache]);
    assert_ne!(digest_c, digest_a);
    let hits: Vec<String> = answers(&meta_c).into_iter().map(|(_, h)| h).collect();
    assert_eq!(
        hits,
        ["remote", "remote", "remote", "ran", "ran"],
        "{meta_c:#}"
    );
    // The same change on runner A, without any cache, gives the same image.
    let (digest_a2, _) = build_as(&auth_a, &a, &ctx_b, &["--no-cache"]);
    assert_eq!(digest_c, digest_a2);
}

#[test]
fn a_cache_ref_that_does_not_exist_yet_is_not_an_error_and_mode_min_holds_the_final_stage_only() {
    let Some((reg, a, base)) = setup() else {
        return;
    };
    let cache = format!("{}/cache:min", reg.addr);
    let ctx = context(&a, &base);
    let (digest_a, _) = build(
        &a,
        &ctx,
        &[
            "--cache-from",
            &cache,
            "--cache-to",
            &format!("type=registry,ref={cache}"),
        ],
    );
    let b = Kiln::new();
    let ctx_b = context(&b, &base);
    let (digest_b, meta_b) = build(
        &b,
        &ctx_b,
        &["--cache-from", &format!("type=registry,ref={cache}")],
    );
    assert_eq!(digest_a, digest_b);
    let hits: Vec<String> = answers(&meta_b).into_iter().map(|(_, h)| h).collect();
    // The build stage was not exported (mode=min): it runs; the final stage's steps hit.
    assert_eq!(
        hits,
        ["ran", "ran", "remote", "remote", "remote"],
        "{meta_b:#}"
    );
}

#[test]
fn a_poisoned_registry_cache_layer_is_detected_and_its_steps_rebuilt() {
    let Some((reg, a, base)) = setup() else {
        return;
    };
    let cache = format!("{}/cache:p", reg.addr);
    let ctx_a = context(&a, &base);
    let (_, meta_a) = build(
        &a,
        &ctx_a,
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    // The `COPY --from` layer (history `COPY /built.txt …`), which the final RUN needs, gets other bytes of the same size in
    // the registry's storage.
    let idx = meta_a["layers"]
        .as_array()
        .unwrap()
        .iter()
        .position(|l| l["step"].as_str().unwrap().starts_with("COPY /built.txt"))
        .unwrap();
    let poisoned = layer_digests(&meta_a)[idx].clone();
    let hex = &poisoned[7..];
    let data = reg
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    bytes[n - 9] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let b = Kiln::new();
    let ctx_b = context(&b, &base);
    std::fs::write(ctx_b.join("c.txt"), b"changed\n").unwrap();
    let meta = b.path("meta.json");
    let out = b
        .cmd()
        .args([
            "build",
            ctx_b.to_str().unwrap(),
            "--cache-from",
            &cache,
            "--metadata-file",
            meta.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "layer `{poisoned}` from the cache does not verify"
        )),
        "{stderr}"
    );
    let digest_b = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let meta_b: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let hits: Vec<String> = answers(&meta_b).into_iter().map(|(_, h)| h).collect();
    assert_eq!(
        hits,
        ["remote", "remote", "ran", "ran", "ran"],
        "{meta_b:#}\n{stderr}"
    );
    // The right image: what a build without any cache gives.
    let c = Kiln::new();
    let (digest_c, _) = build(&c, &ctx_b, &["--no-cache"]);
    assert_eq!(digest_b, digest_c);
}

#[test]
fn a_fresh_runner_with_a_local_cache_directory_runs_nothing_and_a_poisoned_layer_is_rebuilt() {
    let a = Kiln::new();
    let b = Kiln::new();
    if busybox::import(&a, "busybox").is_none() || busybox::import(&b, "busybox").is_none() {
        return;
    }
    let dir = a.path("ci-cache");
    let ctx_a = context(&a, "busybox");
    let to = format!("type=local,dest={},mode=max", dir.display());
    let (digest_a, meta_a) = build(&a, &ctx_a, &["--cache-to", &to]);
    assert!(dir.join("index.json").is_file());

    let from = format!("type=local,src={}", dir.display());
    let ctx_b = context(&b, "busybox");
    let (digest_b, meta_b) = build(&b, &ctx_b, &["--cache-from", &from]);
    assert_eq!(digest_a, digest_b);
    assert!(
        answers(&meta_b).iter().all(|(_, h)| h == "remote"),
        "{meta_b:#}"
    );

    // One changed file.
    std::fs::write(ctx_b.join("c.txt"), b"changed\n").unwrap();
    let (_, meta_c) = build(&b, &ctx_b, &["--cache-from", &from]);
    let hits: Vec<String> = answers(&meta_c).into_iter().map(|(_, h)| h).collect();
    assert_eq!(
        hits,
        ["local", "local", "local", "ran", "ran"],
        "{meta_c:#}"
    );

    // Poisoned layers (the build stage's, which the image does not hold: its COPY and RUN)
    // on a third runner: a warning each, the steps run, and the image is runner A's.
    let cfg_layers: Vec<String> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let c = Kiln::new();
    busybox::import(&c, "busybox").unwrap();
    // The blobs that are no layer of the image and not a document.
    let image_layers = layer_digests(&meta_a);
    let mut poisoned = Vec::new();
    for hex in &cfg_layers {
        let p = dir.join("blobs/sha256").join(hex);
        let bytes = std::fs::read(&p).unwrap();
        let is_doc = bytes.first() == Some(&b'{');
        if !is_doc && !image_layers.contains(&format!("sha256:{hex}")) {
            let mut bad = bytes.clone();
            let n = bad.len();
            bad[n / 2] ^= 0xff;
            std::fs::write(&p, bad).unwrap();
            poisoned.push(hex.clone());
        }
    }
    assert_eq!(poisoned.len(), 2, "the build stage's two layers");
    let ctx_c = context(&c, "busybox");
    let meta = c.path("meta.json");
    let out = c
        .cmd()
        .args([
            "build",
            ctx_c.to_str().unwrap(),
            "--cache-from",
            &from,
            "--metadata-file",
            meta.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for p in &poisoned {
        assert!(
            stderr.contains(&format!(
                "layer `sha256:{p}` from the cache does not verify"
            )),
            "{stderr}"
        );
    }
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest_a);
    let meta_c: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let hits: Vec<String> = answers(&meta_c).into_iter().map(|(_, h)| h).collect();
    assert_eq!(
        hits,
        ["ran", "ran", "remote", "remote", "remote"],
        "{meta_c:#}\n{stderr}"
    );
}

#[test]
fn a_cache_that_is_not_kilns_is_ignored_with_a_warning_and_export_failures_follow_ignore_error() {
    let Some((_reg, a, base)) = setup() else {
        return;
    };
    let ctx = context(&a, &base);
    // An image is not a cache: a warning, and the build runs every step.
    let out = a
        .cmd()
        .args(["build", ctx.to_str().unwrap(), "--cache-from", &base])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: cache `") && stderr.contains("not a kiln cache"),
        "{stderr}"
    );
    // A cache that cannot be written: exit 2 naming it, or a warning with ignore-error=true.
    let nowhere = format!("127.0.0.1:{}/cache:x", crate::support::free_port());
    let (code, stderr) = a.fails(&[
        "build",
        ctx.to_str().unwrap(),
        "--cache-to",
        &format!("type=registry,ref={nowhere}"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("its cache could not be written") && stderr.contains(&nowhere),
        "{stderr}"
    );
    let out = a
        .cmd()
        .args([
            "build",
            ctx.to_str().unwrap(),
            "--cache-to",
            &format!("type=registry,ref={nowhere},ignore-error=true"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("ignore-error=true"), "{stderr}");
}

#[test]
fn concurrent_writers_of_one_cache_ref_leave_one_complete_cache() {
    let Some((reg, a, base)) = setup() else {
        return;
    };
    let cache = format!("{}/cache:shared", reg.addr);
    let to = format!("type=registry,ref={cache},mode=max");
    let b = Kiln::new();
    let ctx_a = context(&a, &base);
    let ctx_b = context(&b, &base);
    std::fs::write(ctx_b.join("c.txt"), b"other\n").unwrap();
    let spawn = |k: &Kiln, ctx: &Path| {
        k.cmd()
            .args(["build", ctx.to_str().unwrap(), "--cache-to", &to])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (pa, pb) = (spawn(&a, &ctx_a), spawn(&b, &ctx_b));
    for p in [pa, pb] {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A third runner: the cache verifies, and it is one writer's whole cache.
    let all_remote = |ctx: &Path| {
        let c = Kiln::new();
        let meta = c.path("meta.json");
        let out = c
            .cmd()
            .args(["build", ctx.to_str().unwrap(), "--cache-from", &cache])
            .args(["--metadata-file", meta.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("warning: cache"), "{stderr}");
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        answers(&m).iter().all(|(_, h)| h == "remote")
    };
    let (one, two) = (all_remote(&ctx_a), all_remote(&ctx_b));
    assert!(
        one != two,
        "exactly one writer's cache is there: {one} {two}"
    );
}

#[test]
fn a_cache_entry_whose_diff_id_is_wrong_is_found_once_fetched_and_its_steps_rebuilt() {
    use kiln::oci::{Digest, MediaType};
    use kiln::registry::{NoProgress, Reference};
    let Some((reg, a, base)) = setup() else {
        return;
    };
    let cache = format!("{}/cache:d", reg.addr);
    let ctx_a = context(&a, &base);
    let (_, meta_a) = build(
        &a,
        &ctx_a,
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    let idx = meta_a["layers"]
        .as_array()
        .unwrap()
        .iter()
        .position(|l| l["step"].as_str().unwrap().starts_with("COPY /built.txt"))
        .unwrap();
    let target = layer_digests(&meta_a)[idx].clone();
    // Rewrite the cache: the `COPY --from` entry claims another diff_id (its bytes are intact).
    let client = super::client();
    let r = Reference::parse(&cache).unwrap();
    let m = client.get_manifest(&r).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
    let cfg_digest: Digest = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut cfg = Vec::new();
    client
        .get_blob(&r, &cfg_digest, None, &mut cfg, &NoProgress)
        .unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
    let mut changed = 0;
    for (_, e) in config["layers"].as_object_mut().unwrap() {
        if e["descriptor"]["digest"] == target.as_str() {
            e["diff_id"] = Digest::sha256(b"not this layer").to_string().into();
            changed += 1;
        }
    }
    assert_eq!(changed, 1);
    let bytes = std::sync::Arc::new(serde_json::to_vec(&config).unwrap());
    client
        .push_blob(&r, &super::upload(bytes.clone(), &[]), &NoProgress)
        .unwrap();
    manifest["config"]["digest"] = Digest::sha256(&bytes).to_string().into();
    manifest["config"]["size"] = bytes.len().into();
    client
        .put_manifest(
            &r,
            &serde_json::to_vec(&manifest).unwrap(),
            &MediaType::OciManifest,
        )
        .unwrap();

    // Runner B changes a file after it: the final RUN needs the layer, so it is fetched, its
    // diff_id checked, and the steps it answered built again.
    let b = Kiln::new();
    let ctx_b = context(&b, &base);
    std::fs::write(ctx_b.join("c.txt"), b"changed\n").unwrap();
    let meta = b.path("meta.json");
    let out = b
        .cmd()
        .args(["build", ctx_b.to_str().unwrap(), "--cache-from", &cache])
        .args(["--metadata-file", meta.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "layer `{target}` from the cache does not verify (its diff_id is"
        )),
        "{stderr}"
    );
    let meta_b: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let hits: Vec<String> = answers(&meta_b).into_iter().map(|(_, h)| h).collect();
    assert_eq!(
        hits,
        ["remote", "remote", "ran", "ran", "ran"],
        "{meta_b:#}\n{stderr}"
    );
    let c = Kiln::new();
    let (digest_c, _) = build(&c, &ctx_b, &["--no-cache"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest_c);
}
