//! Supply-chain attestations (#19): `kiln build --sbom --provenance` puts an SPDX SBOM and SLSA
//! v1 provenance in the image index as buildx lays them out (an attestation manifest per image,
//! platform `unknown/unknown`, `vnd.docker.reference.*` annotations, in-toto layers), in `oci:`
//! layouts, archives and registries, reproducibly; skopeo and kiln read the layout back; the
//! documents validate with the SPDX tools, the CycloneDX library and the in-toto/SLSA v1
//! protobuf types; `kiln sbom` reads any image; a one-layer change rescans one layer; and for
//! `variants/Dockerfile.python` the SBOM's Debian and Python packages are exactly what
//! `dpkg-query -W` and `pip list` say inside the image (podman).
//!
//! The validators live in a venv made by scripts/install-peers.sh (`$KILN_VALIDATORS`, default
//! /var/tmp/kiln-validators): missing, the tests that need them skip, or fail under `CI=true`.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bake::{copy_variants, git_commit, pip_ca};
use crate::support::registry::{Mode, Registry};
use crate::support::runas::debootstrap;
use crate::support::{busybox, need, run, Kiln};

const EPOCH: &str = "1700000000";
const SPDX: &str = "https://spdx.dev/Document";
const SLSA: &str = "https://slsa.dev/provenance/v1";

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

/// The validators' Python, or `None` (skip; a failure under `CI=true`).
fn validators() -> Option<PathBuf> {
    let dir = std::env::var_os("KILN_VALIDATORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/kiln-validators"));
    let py = dir.join("bin/python");
    let ok = py.is_file()
        && Command::new(&py)
            .args([
                "-c",
                "import spdx_tools, cyclonedx.validation.json, in_toto_attestation",
            ])
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true and the SBOM validators are not installed in {} (scripts/install-peers.sh)", dir.display());
        }
        eprintln!(
            "skipping the validators: not installed in {}",
            dir.display()
        );
        return None;
    }
    Some(py)
}

/// Validates an SPDX file (pyspdxtools), a CycloneDX file and an in-toto provenance
/// statement (in_toto_attestation's Statement v1 and SLSA Provenance v1 protobuf types,
/// unknown fields refused); panics with the validator's words.
fn validate(py: &Path, spdx: Option<&Path>, cdx: Option<&Path>, provenance: Option<&Path>) {
    if let Some(f) = spdx {
        let tool = py.parent().unwrap().join("pyspdxtools");
        run(Command::new(tool).arg("-i").arg(f));
    }
    if let Some(f) = cdx {
        let script = "import sys\nfrom cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\nerr = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())\nif err: sys.exit(f'invalid CycloneDX: {err!r}')\n";
        run(Command::new(py).args(["-c", script]).arg(f));
    }
    if let Some(f) = provenance {
        let script = "import sys, json\nfrom google.protobuf import json_format\nfrom in_toto_attestation.v1 import statement_pb2\nfrom in_toto_attestation.predicates.provenance.v1 import provenance_pb2\nd = json.load(open(sys.argv[1]))\ns = json_format.ParseDict(d, statement_pb2.Statement())\nassert s.type == 'https://in-toto.io/Statement/v1', s.type\nassert s.predicate_type == 'https://slsa.dev/provenance/v1'\nassert len(s.subject) == 1 and s.subject[0].digest['sha256']\np = json_format.ParseDict(d['predicate'], provenance_pb2.Provenance())\nassert p.build_definition.build_type and p.run_details.builder.id\nfor dep in p.build_definition.resolved_dependencies:\n    assert dep.uri or dep.digest, dep\n";
        run(Command::new(py).args(["-c", script]).arg(f));
    }
}

/// A context on busybox with package metadata of three kinds copied in, a git checkout.
fn project(k: &Kiln) -> Option<(PathBuf, String)> {
    busybox::import(k, "busybox")?;
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let files: &[(&str, &str)] = &[
        ("status", "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u4\n\nPackage: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2+b2\n"),
        ("os-release", "ID=debian\nVERSION_ID=\"12\"\n"),
        ("METADATA", "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\nLicense: MIT\n"),
        ("package.json", "{\"name\":\"left-pad\",\"version\":\"1.3.0\",\"license\":\"WTFPL\"}"),
        ("data.txt", "one\n"),
        (
            "Dockerfile",
            "FROM busybox\nARG API_TOKEN\nARG VERSION\nCOPY status /var/lib/dpkg/status\nCOPY os-release /etc/os-release\nCOPY METADATA /usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA\nCOPY package.json /app/node_modules/left-pad/package.json\nCOPY data.txt /data.txt\n",
        ),
    ];
    for (p, t) in files {
        std::fs::write(ctx.join(p), t).unwrap();
    }
    let commit = git_commit(&ctx)?;
    Some((ctx, commit))
}

fn build(k: &Kiln, ctx: &Path, extra: &[&str]) -> String {
    let mut c = k.cmd();
    c.env("SOURCE_DATE_EPOCH", EPOCH)
        .arg("build")
        .arg(ctx)
        .args([
            "-t",
            "app:1",
            "--build-arg",
            "API_TOKEN=hunter2",
            "--build-arg",
            "VERSION=1",
        ]);
    let out = c.args(extra).output().unwrap();
    crate::support::assert_success(&out, &extra);
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Reads a blob of an OCI layout.
fn blob(dir: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(
        dir.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

/// The index a layout names, its image and attestation entries, and the statements by
/// predicate type.
struct Layout {
    index_bytes: Vec<u8>,
    image: serde_json::Value,
    attestation: serde_json::Value,
    statements: Vec<(String, serde_json::Value)>,
}

fn read_layout(dir: &Path) -> Layout {
    let top = json(&std::fs::read(dir.join("index.json")).unwrap());
    let entry = &top["manifests"][0];
    assert_eq!(
        entry["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{top}"
    );
    let index_bytes = blob(dir, entry["digest"].as_str().unwrap());
    let index = json(&index_bytes);
    let m = index["manifests"].as_array().unwrap();
    assert_eq!(m.len(), 2, "{index}");
    let att_manifest = json(&blob(dir, m[1]["digest"].as_str().unwrap()));
    let statements = att_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l["mediaType"], "application/vnd.in-toto+json");
            (
                l["annotations"]["in-toto.io/predicate-type"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                json(&blob(dir, l["digest"].as_str().unwrap())),
            )
        })
        .collect();
    Layout {
        index_bytes,
        image: m[0].clone(),
        attestation: m[1].clone(),
        statements,
    }
}

fn statement<'a>(l: &'a Layout, t: &str) -> &'a serde_json::Value {
    &l.statements
        .iter()
        .find(|(p, _)| p == t)
        .unwrap_or_else(|| panic!("no {t}"))
        .1
}

fn blobs(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Two builds on two stores give the same index, attestation and statement digests; the index
/// is buildx's layout; skopeo reads the same bytes; the SBOM names the packages with their
/// layers; the provenance names the base digest, the git commit, the redacted secret-named arg
/// and (mode=max) the steps; the documents validate.
#[test]
fn attestations_sit_in_the_index_as_buildx_lays_them_out_reproducibly() {
    let (k1, k2) = (Kiln::new(), Kiln::new());
    let Some((ctx, commit)) = project(&k1) else {
        return;
    };
    let mut outs = Vec::new();
    for k in [&k1, &k2] {
        if k.root() != k1.root() {
            busybox::import(k, "busybox").unwrap();
        }
        let dir = k.path("layout");
        let digest = build(
            k,
            &ctx,
            &[
                "--sbom",
                "--provenance=mode=max",
                "-o",
                &format!("oci:{}", dir.display()),
            ],
        );
        outs.push((digest, dir));
    }
    assert_eq!(outs[0].0, outs[1].0, "the index digests differ");
    assert_eq!(blobs(&outs[0].1), blobs(&outs[1].1), "the blobs differ");
    let dir = &outs[0].1;
    let l = read_layout(dir);
    assert_eq!(
        format!("sha256:{}", crate::support::sha256_hex(&l.index_bytes)),
        outs[0].0
    );
    assert_eq!(l.image["platform"]["os"], "linux");
    assert_eq!(l.attestation["platform"]["os"], "unknown");
    assert_eq!(l.attestation["platform"]["architecture"], "unknown");
    assert_eq!(
        l.attestation["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        l.attestation["annotations"]["vnd.docker.reference.digest"],
        l.image["digest"]
    );
    let image_hex = l.image["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    // The SBOM: subject, packages with purl and layer.
    let sbom = statement(&l, SPDX);
    assert_eq!(sbom["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(sbom["subject"][0]["digest"]["sha256"], image_hex.as_str());
    assert_eq!(
        sbom["subject"][0]["name"],
        "pkg:docker/app@1?platform=linux%2Famd64"
    );
    let doc = &sbom["predicate"];
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    let purls: BTreeSet<&str> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["externalRefs"][0]["referenceLocator"].as_str())
        .collect();
    for want in [
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12",
        "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12",
        "pkg:pypi/six@1.16.0",
        "pkg:npm/left-pad@1.3.0",
    ] {
        assert!(purls.contains(want), "{want} not in {purls:?}");
    }
    // Provenance.
    let prov = statement(&l, SLSA);
    let p = &prov["predicate"];
    let text = prov.to_string();
    assert!(
        !text.contains("hunter2"),
        "a secret-named build arg leaked: {text}"
    );
    assert_eq!(
        p["buildDefinition"]["externalParameters"]["request"]["args"]["build-arg:API_TOKEN"],
        "<redacted>"
    );
    assert_eq!(
        p["buildDefinition"]["externalParameters"]["request"]["args"]["build-arg:VERSION"],
        "1"
    );
    let df = crate::support::sha256_file(&ctx.join("Dockerfile"));
    assert_eq!(
        p["buildDefinition"]["externalParameters"]["configSource"]["digest"]["sha256"],
        df.as_str()
    );
    let deps = p["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let base = json(k1.ok(&["inspect", "busybox"]).as_bytes());
    let base_hex = base["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    assert!(
        deps.iter().any(|d| d["uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("pkg:docker/busybox@latest?platform="))
            && d["digest"]["sha256"] == base_hex.as_str()),
        "{deps:?}"
    );
    assert!(
        deps.iter()
            .any(|d| d["digest"]["gitCommit"] == commit.as_str()),
        "{deps:?}"
    );
    let steps = p["buildDefinition"]["internalParameters"]["buildConfig"]["steps"]
        .as_array()
        .unwrap();
    assert!(
        steps
            .iter()
            .any(|s| s["instruction"].as_str().unwrap().contains("COPY data.txt")),
        "{steps:?}"
    );
    assert_eq!(
        p["runDetails"]["metadata"]["startedOn"],
        "2023-11-14T22:13:20Z"
    );
    // skopeo reads the same index; kiln reads the layout back (the image, its SBOM).
    if need("skopeo") {
        let raw = run(Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}", dir.display())));
        assert_eq!(raw.as_bytes(), &l.index_bytes[..]);
    }
    let again = json(
        k1.ok(&["sbom", &format!("oci:{}", dir.display())])
            .as_bytes(),
    );
    let n = again["packages"].as_array().unwrap().len();
    assert_eq!(n, doc["packages"].as_array().unwrap().len());
    let Some(py) = validators() else {
        return;
    };
    let spdx_file = k1.path("sbom.spdx.json");
    std::fs::write(&spdx_file, doc.to_string()).unwrap();
    let cdx = k1.path("sbom.cdx.json");
    k1.ok(&[
        "sbom",
        "app:1",
        "--format",
        "cyclonedx-json",
        "-o",
        cdx.to_str().unwrap(),
    ]);
    let prov_file = k1.path("provenance.json");
    std::fs::write(&prov_file, prov.to_string()).unwrap();
    validate(&py, Some(&spdx_file), Some(&cdx), Some(&prov_file));
}

/// `--push` with attestations sends the index (even for one platform, as buildx does);
/// skopeo sees it; `kiln sbom docker://…` reads the image back through the registry; a
/// docker-archive output gets the image alone and says why.
#[test]
fn attestations_are_pushed_in_an_index_and_docker_archive_says_it_cannot_hold_them() {
    let k = Kiln::new();
    let Some((ctx, _)) = project(&k) else {
        return;
    };
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let r = format!("{}/app:1", reg.addr);
    let mut c = k.cmd();
    c.env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["--tls-verify=false", "build"])
        .arg(&ctx)
        .args(["--sbom", "--provenance", "-t", &r, "--push"]);
    let out = c.output().unwrap();
    crate::support::assert_success(&out, &"build --push");
    let digest = String::from_utf8(out.stdout).unwrap().trim().to_string();
    if need("skopeo") {
        let raw = run(Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{r}")));
        assert_eq!(
            format!("sha256:{}", crate::support::sha256_hex(raw.as_bytes())),
            digest
        );
        let index = json(raw.as_bytes());
        assert_eq!(
            index["manifests"][1]["annotations"]["vnd.docker.reference.type"],
            "attestation-manifest"
        );
    }
    let fresh = Kiln::new();
    let doc = json(
        fresh
            .ok(&[
                "--tls-verify=false",
                "sbom",
                &format!("docker://{r}"),
                "--format",
                "cyclonedx-json",
            ])
            .as_bytes(),
    );
    assert!(
        doc["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["purl"] == "pkg:pypi/six@1.16.0"),
        "{doc}"
    );
    let archive = k.path("app.tar");
    let out = k
        .cmd()
        .arg("build")
        .arg(&ctx)
        .args([
            "--sbom",
            "-o",
            &format!("docker-archive:{}", archive.display()),
        ])
        .output()
        .unwrap();
    crate::support::assert_success(&out, &"build -o docker-archive");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot hold attestations"), "{err}");
    assert!(archive.is_file());
}

/// A rebuild after a one-file change scans only the new layer: the others' findings come
/// from the store's cache, and the SBOM is the same as a scan from nothing.
#[test]
fn a_one_layer_change_rescans_only_that_layer() {
    let k = Kiln::new();
    let Some((ctx, _)) = project(&k) else {
        return;
    };
    let meta = k.path("meta.json");
    let m = meta.to_str().unwrap();
    build(&k, &ctx, &["--sbom", "--metadata-file", m]);
    let first = json(&std::fs::read(&meta).unwrap());
    let layers = first["layers"].as_array().unwrap().len() as u64;
    assert_eq!(
        first["attestations"]["sbom_layers_scanned"], layers,
        "{first}"
    );
    std::fs::write(ctx.join("data.txt"), "two\n").unwrap();
    build(&k, &ctx, &["--sbom", "--metadata-file", m]);
    let second = json(&std::fs::read(&meta).unwrap());
    assert_eq!(second["attestations"]["sbom_layers_scanned"], 1, "{second}");
    assert_eq!(
        second["attestations"]["sbom_layers_cached"],
        layers - 1,
        "{second}"
    );
}

/// The python variant, built on the debootstrap base: the SBOM's Debian packages are
/// `dpkg-query -W`'s and its Python packages `pip list`'s, run in the image by podman, name
/// and version, none missing and none extra.
#[test]
fn the_python_variants_sbom_equals_dpkg_query_and_pip_list() {
    if !need("podman") || !crate::family::package_registries_reachable() {
        return;
    }
    let Some(tar) = debootstrap::rootfs_tarball() else {
        return;
    };
    let k = Kiln::new();
    k.ok(&[
        "import",
        tar.to_str().unwrap(),
        "-t",
        "debian-base:bookworm",
        "--cmd",
        "bash",
        "--env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]);
    let ctx = k.path("ctx");
    copy_variants(&ctx);
    let archive = k.path("python.tar");
    let mut args: Vec<String> = vec![
        "build".into(),
        ctx.display().to_string(),
        "-f".into(),
        ctx.join("Dockerfile.python").display().to_string(),
        "--build-arg".into(),
        "BASE=debian-base:bookworm".into(),
        "-t".into(),
        "python".into(),
        "--sbom".into(),
        "--provenance".into(),
        "-o".into(),
        format!("oci-archive:{}", archive.display()),
    ];
    if let Some(ca) = pip_ca() {
        args.extend(["--secret".into(), ca]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    k.ok(&args);
    let doc = json(
        k.ok(&["sbom", &format!("oci-archive:{}", archive.display())])
            .as_bytes(),
    );
    let mut deb = BTreeSet::new();
    let mut pypi = BTreeSet::new();
    for p in doc["packages"].as_array().unwrap() {
        let purl = p["externalRefs"][0]["referenceLocator"]
            .as_str()
            .unwrap_or("");
        let nv = (
            p["name"].as_str().unwrap().to_string(),
            p["versionInfo"].as_str().unwrap().to_string(),
        );
        if purl.starts_with("pkg:deb/") {
            deb.insert(nv);
        } else if purl.starts_with("pkg:pypi/") {
            pypi.insert((nv.0.to_lowercase().replace('_', "-"), nv.1));
        }
    }
    let pod = k.path("podman");
    let image = format!("oci-archive:{}", archive.display());
    let run_in = |cmd: &[&str]| {
        let mut a = crate::support::PODMAN_RUN.to_vec();
        a.push(&image);
        a.extend_from_slice(cmd);
        crate::support::podman(&pod, &a)
    };
    let dpkg: BTreeSet<(String, String)> =
        run_in(&["dpkg-query", "-W", "-f", "${Package}\\t${Version}\\n"])
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
    let pip = json(run_in(&["python3", "-m", "pip", "list", "--format", "json"]).as_bytes());
    let pip: BTreeSet<(String, String)> = pip
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_lowercase().replace('_', "-"),
                p["version"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(dpkg.len() > 50 && pip.len() > 3, "{dpkg:?} {pip:?}");
    assert_eq!(deb, dpkg, "Debian packages: SBOM vs dpkg-query -W");
    assert_eq!(pypi, pip, "Python packages: SBOM vs pip list");
    if let Some(py) = validators() {
        let f = k.path("python.spdx.json");
        std::fs::write(&f, doc.to_string()).unwrap();
        validate(&py, Some(&f), None, None);
    }
}

/// `sbom = true` in `[family]` and `provenance = "max"` in `[target.full]` of `kiln.toml`: a
/// two-platform bake pushes one index with each platform's image and, after them, each one's
/// attestation manifest pointing at it; `kiln sbom --platform` reads either image back.
#[test]
fn kiln_toml_attestations_bake_into_a_two_platform_index() {
    let k = Kiln::new();
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let dir = k.path("att");
    std::fs::create_dir_all(dir.join("variants")).unwrap();
    std::fs::write(
        dir.join("variants/Dockerfile"),
        "FROM scratch\nCOPY package.json /app/node_modules/left-pad/package.json\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("variants/package.json"),
        r#"{"name":"left-pad","version":"1.3.0"}"#,
    )
    .unwrap();
    let toml = format!("[family]\nname = \"att\"\nregistry = \"{}/it\"\nversion = \"1.0.0\"\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\nsbom = true\n[target.full]\nprovenance = \"max\"\n[tags]\ndefault = [\"{{version}}\"]\n", reg.addr);
    std::fs::write(dir.join("kiln.toml"), toml).unwrap();
    let meta = k.path("bake.json");
    k.ok(&[
        "--tls-verify=false",
        "--config",
        dir.join("kiln.toml").to_str().unwrap(),
        "bake",
        "--push",
        "--metadata-file",
        meta.to_str().unwrap(),
    ]);
    let r = format!("{}/it/att:1.0.0", reg.addr);
    let digest = json(&std::fs::read(&meta).unwrap())["targets"]["full"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    if need("skopeo") {
        let raw = run(Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{r}")));
        assert_eq!(
            format!("sha256:{}", crate::support::sha256_hex(raw.as_bytes())),
            digest
        );
        let index = json(raw.as_bytes());
        let m = index["manifests"].as_array().unwrap();
        let platforms: Vec<String> = m
            .iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d["platform"]["os"].as_str().unwrap(),
                    d["platform"]["architecture"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            platforms,
            [
                "linux/amd64",
                "linux/arm64",
                "unknown/unknown",
                "unknown/unknown"
            ]
        );
        assert_eq!(
            m[2]["annotations"]["vnd.docker.reference.digest"],
            m[0]["digest"]
        );
        assert_eq!(
            m[3]["annotations"]["vnd.docker.reference.digest"],
            m[1]["digest"]
        );
    }
    let doc = json(
        k.ok(&[
            "--tls-verify=false",
            "sbom",
            &format!("docker://{r}"),
            "--platform",
            "linux/arm64",
        ])
        .as_bytes(),
    );
    assert!(
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "left-pad"),
        "{doc}"
    );
    // `kiln build --platform A,B --sbom --provenance --push`, as buildx: one index holding both
    // images and an attestation manifest for each, pushed and named.
    let r = format!("{}/it/multi:1", reg.addr);
    let printed = k.ok(&[
        "--tls-verify=false",
        "build",
        dir.join("variants").to_str().unwrap(),
        "--platform",
        "linux/amd64,linux/arm64",
        "--sbom",
        "--provenance=mode=max",
        "-t",
        &r,
        "--push",
    ]);
    assert!(need("skopeo"), "skopeo reads the pushed index");
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{r}")));
    assert_eq!(
        format!("sha256:{}", crate::support::sha256_hex(raw.as_bytes())),
        printed.trim(),
        "the printed digest is the pushed index's"
    );
    let index = json(raw.as_bytes());
    let m = index["manifests"].as_array().unwrap();
    let kinds: Vec<(String, String)> = m
        .iter()
        .map(|d| {
            (
                d["platform"]["architecture"].as_str().unwrap().to_string(),
                d["annotations"]["vnd.docker.reference.digest"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    let amd = m[0]["digest"].as_str().unwrap().to_string();
    let arm = m[1]["digest"].as_str().unwrap().to_string();
    assert_eq!(
        kinds,
        [
            ("amd64".to_string(), String::new()),
            ("arm64".to_string(), String::new()),
            ("unknown".to_string(), amd),
            ("unknown".to_string(), arm),
        ],
        "{index}"
    );
    let doc = json(
        k.ok(&[
            "--tls-verify=false",
            "sbom",
            &format!("docker://{r}"),
            "--platform",
            "linux/arm64",
        ])
        .as_bytes(),
    );
    assert!(
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "left-pad"),
        "{doc}"
    );
}
