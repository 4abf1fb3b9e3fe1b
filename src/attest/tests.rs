//! Unit tests of the scanners on crafted layers, the merge across layers, the cache and the
//! documents.
use super::sbom::{self, layer, Ecosystem};
use super::*;
use crate::oci;

/// A tar of `(path, mode, content)` regular files.
pub(crate) fn tar_of(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, mode, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mtime(0);
        // Raw name bytes: a hostile layer's `..` members too.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn scan(files: &[(&str, u32, &[u8])]) -> layer::LayerFindings {
    let t = tar_of(files);
    let (f, d) = layer::scan(&mut t.as_slice()).unwrap();
    assert_eq!(d, Digest::sha256(&t));
    f
}

const STATUS: &[u8] = b"Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\n\nPackage: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2\n";
const OS: &[u8] = b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n";

#[test]
fn every_scanner_finds_its_packages_in_one_layer() {
    let go = super::sbom::binary::tests::go_blob("mod\texample.com/app\tv1.0.0\t\n");
    let rust = super::sbom::binary::tests::elf_with_section(
        ".dep-v0",
        &super::sbom::binary::tests::zlib(
            br#"{"packages":[{"name":"ripgrep","version":"14.1.0","source":"crates.io"}]}"#,
        ),
    );
    let f = scan(&[
        ("usr/lib/os-release", 0o644, OS),
        ("var/lib/dpkg/status", 0o644, STATUS),
        ("var/lib/dpkg/status.d/tzdata", 0o644, b"Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n"),
        ("var/lib/dpkg/status.d/tzdata.md5sums", 0o644, b"junk"),
        ("lib/apk/db/installed", 0o644, b"P:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\n"),
        ("usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA", 0o644, b"Name: six\nVersion: 1.16.0\nLicense: MIT\n"),
        ("app/node_modules/@babel/core/package.json", 0o644, br#"{"name":"@babel/core","version":"7.24.0","license":"MIT"}"#),
        ("app/node_modules/@babel/core/lib/package.json", 0o644, br#"{"name":"not-a-package","version":"1"}"#),
        ("usr/bin/app", 0o755, &go),
        ("usr/bin/rg", 0o755, &rust),
        ("usr/bin/script", 0o755, b"#!/bin/sh\necho hi, this is long enough to be looked at as a binary......................\n"),
    ]);
    let s = sbom::merge(&[(Digest::sha256(b"l1"), f)]);
    let got: Vec<String> = s.packages.iter().map(|p| p.purl.clone()).collect();
    assert_eq!(
        got,
        [
            "pkg:deb/debian/bash@5.2.15-2?arch=amd64&distro=debian-12",
            "pkg:deb/debian/libc6@2.36-9?arch=amd64&distro=debian-12",
            "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-12",
            "pkg:apk/debian/musl@1.2.4-r2?arch=x86_64&distro=debian-12",
            "pkg:pypi/six@1.16.0",
            "pkg:npm/%40babel/core@7.24.0",
            "pkg:golang/example.com/app@v1.0.0",
            "pkg:golang/stdlib@go1.22.1",
            "pkg:cargo/ripgrep@14.1.0",
        ]
    );
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(
        s.packages[4].path,
        "/usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA"
    );
    assert_eq!(s.packages[4].found.ecosystem, Ecosystem::Python);
}

#[test]
fn later_layers_rewrite_and_whiteouts_remove() {
    let l1 = Digest::sha256(b"l1");
    let l2 = Digest::sha256(b"l2");
    let l3 = Digest::sha256(b"l3");
    let base = scan(&[
        ("etc/os-release", 0o644, OS),
        ("var/lib/dpkg/status", 0o644, STATUS),
        (
            "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA",
            0o644,
            b"Name: six\nVersion: 1.16.0\n",
        ),
        (
            "usr/lib/python3/dist-packages/idna-3.3.dist-info/METADATA",
            0o644,
            b"Name: idna\nVersion: 3.3\n",
        ),
        (
            "app/node_modules/x/package.json",
            0o644,
            br#"{"name":"x","version":"1.0.0"}"#,
        ),
    ]);
    // Layer 2 installs curl (the database rewritten), removes six
    let mut status2 = STATUS.to_vec();
    status2.extend_from_slice(
        b"\nPackage: curl\nStatus: install ok installed\nArchitecture: amd64\nVersion: 7.88.1-10\n",
    );
    // and removes the npm package x (whiteouts as the layer's tar carries them).
    let second = scan(&[
        ("var/lib/dpkg/status", 0o644, &status2),
        (
            "usr/lib/python3/dist-packages/.wh.six-1.16.0.dist-info",
            0o644,
            b"",
        ),
        ("app/node_modules/.wh.x", 0o644, b""),
    ]);
    // Layer 3 makes the site directory opaque and puts one distribution back.
    let third = scan(&[
        ("usr/lib/python3/dist-packages/.wh..wh..opq", 0o644, b""),
        (
            "usr/lib/python3/dist-packages/idna-3.7.dist-info/METADATA",
            0o644,
            b"Name: idna\nVersion: 3.7\n",
        ),
    ]);
    let s = sbom::merge(&[
        (l1.clone(), base),
        (l2.clone(), second),
        (l3.clone(), third),
    ]);
    let got: Vec<(&str, &str, &Digest)> = s
        .packages
        .iter()
        .map(|p| (p.found.name.as_str(), p.found.version.as_str(), &p.layer))
        .collect();
    assert_eq!(
        got,
        [
            ("bash", "5.2.15-2", &l1),
            ("curl", "7.88.1-10", &l2),
            ("libc6", "2.36-9", &l1),
            ("idna", "3.7", &l3),
        ]
    );
}

#[test]
fn hostile_members_are_warnings_never_panics() {
    let huge = vec![b'a'; (layer::MAX_METADATA + 1) as usize];
    let f = scan(&[
        ("../../etc/passwd", 0o644, b"x"),
        ("var/lib/dpkg/status", 0o644, b"Package: x\nStatus: install ok installed\n"),
        ("usr/lib/python3/dist-packages/a-1.dist-info/METADATA", 0o644, &huge),
        ("app/node_modules/x/package.json", 0o644, b"\xff\xfe{"),
        ("usr/bin/bad", 0o755, b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\xff Go buildinf:\x08\x02 truncated..........................................."),
    ]);
    assert_eq!(f.warnings.len(), 4, "{:?}", f.warnings);
    assert!(f
        .warnings
        .iter()
        .any(|w| w.starts_with("/usr/bin/bad: Go build info")));
    assert!(f
        .warnings
        .iter()
        .any(|w| w.starts_with("/var/lib/dpkg/status: paragraph 1")));
    assert!(f.warnings.iter().any(|w| w.contains("over the")));
    assert!(f
        .warnings
        .iter()
        .any(|w| w.starts_with("/app/node_modules/x/package.json: invalid JSON")));
    assert!(f.files.keys().all(|k| !k.contains("..")));
    let s = sbom::merge(&[(Digest::sha256(b"l"), f)]);
    assert!(s.packages.is_empty());
    assert!(
        s.warnings[0].starts_with("layer sha256:"),
        "{:?}",
        s.warnings
    );
    // A stream that is not a tar is an error of the layer, not a panic.
    let _ = layer::scan(&mut &[0xffu8; 1024][..]);
}

#[test]
fn the_cache_answers_a_second_scan_and_a_lying_config_is_not_cached() {
    use crate::image::{ImageBuilder, NewLayer};
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path()).unwrap();
    let t = tar_of(&[("var/lib/dpkg/status", 0o644, STATUS)]);
    let diff_id = Digest::sha256(&t);
    let digest = store.put_bytes(&t).unwrap();
    let mk = |diff_id: Digest| {
        let mut b = ImageBuilder::scratch(&crate::oci::Platform::host());
        b.append(
            NewLayer {
                descriptor: crate::oci::Descriptor::new(
                    crate::oci::MediaType::OciLayer,
                    digest.clone(),
                    t.len() as u64,
                ),
                diff_id,
            },
            "x",
        );
        b.build()
    };
    let src = crate::transport::LayerSource::new(&store, None);
    let img = mk(diff_id.clone());
    let first = sbom::scan_image(src, &img).unwrap();
    assert_eq!((first.layers_scanned, first.layers_cached), (1, 0));
    let second = sbom::scan_image(src, &img).unwrap();
    assert_eq!((second.layers_scanned, second.layers_cached), (0, 1));
    assert_eq!(first.packages, second.packages);
    // A config naming another diff_id for the same blob: scanned, warned, never cached.
    let liar = mk(Digest::sha256(b"other"));
    for _ in 0..2 {
        let s = sbom::scan_image(src, &liar).unwrap();
        assert_eq!(s.layers_scanned, 1);
        assert!(
            s.warnings.iter().any(|w| w.contains("not cached")),
            "{:?}",
            s.warnings
        );
    }
}

fn subject() -> Subject {
    Subject {
        name: Some("localhost:5000/app:1".into()),
        digest: Digest::sha256(b"manifest"),
        platform: "linux/amd64".parse().unwrap(),
    }
}

#[test]
fn documents_are_deterministic_and_licences_valid() {
    let f = scan(&[
        ("etc/os-release", 0o644, OS),
        ("var/lib/dpkg/status", 0o644, STATUS),
        (
            "usr/lib/python3/dist-packages/r-1.dist-info/METADATA",
            0o644,
            b"Name: r\nVersion: 1\nLicense: Apache 2.0\n",
        ),
        (
            "usr/lib/python3/dist-packages/m-1.dist-info/METADATA",
            0o644,
            b"Name: m\nVersion: 1\nLicense: MIT\n",
        ),
    ]);
    let s = sbom::merge(&[(Digest::sha256(b"l"), f)]);
    let a = oci::to_canonical_json(&spdx::document(&s, &subject(), 0));
    let b = oci::to_canonical_json(&spdx::document(&s, &subject(), 0));
    assert_eq!(a, b);
    let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
    assert_eq!(v["creationInfo"]["created"], "1970-01-01T00:00:00Z");
    let decl: Vec<&str> = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["licenseDeclared"].as_str())
        .collect();
    assert!(decl.contains(&"MIT"));
    assert!(decl.iter().any(|d| d.starts_with("LicenseRef-")));
    assert_eq!(
        v["hasExtractedLicensingInfos"][0]["extractedText"],
        "Apache 2.0"
    );
    let c = cyclonedx::document(&s, &subject(), 86400);
    assert_eq!(c["metadata"]["timestamp"], "1970-01-02T00:00:00Z");
    assert_eq!(c["components"].as_array().unwrap().len(), 4);
    assert_eq!(c, cyclonedx::document(&s, &subject(), 86400));
}

#[test]
fn provenance_redacts_secret_named_args_and_names_dependencies() {
    let mut f = provenance::Facts {
        dockerfile_path: "Dockerfile".into(),
        dockerfile_digest: Some(Digest::sha256(b"FROM x")),
        build_args: [
            ("API_TOKEN".to_string(), "hunter2".to_string()),
            ("GITHUB_PUBLIC_KEY".to_string(), "ok".to_string()),
            ("VERSION".to_string(), "1.0".to_string()),
        ]
        .into(),
        images: vec![(
            "debian:bookworm-slim".into(),
            Some("linux/amd64".parse().unwrap()),
            Digest::sha256(b"base"),
        )],
        urls: vec![("https://u:p@example.com/f.tgz".into(), Digest::sha256(b"f"))],
        git: Some(provenance::GitSource {
            uri: Some("https://tok@github.com/o/r.git".into()),
            commit: "a".repeat(40),
            tree: "b".repeat(40),
        }),
        ..Default::default()
    };
    let p = provenance::predicate(&f);
    let args = &p["buildDefinition"]["externalParameters"]["request"]["args"];
    assert_eq!(args["build-arg:API_TOKEN"], provenance::REDACTED);
    assert_eq!(args["build-arg:GITHUB_PUBLIC_KEY"], "ok");
    assert_eq!(args["build-arg:VERSION"], "1.0");
    let text = String::from_utf8(oci::to_canonical_json(&p)).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("u:p@") && !text.contains("tok@"),
        "{text}"
    );
    assert!(
        text.contains("pkg:docker/debian@bookworm-slim?platform=linux%2Famd64"),
        "{text}"
    );
    assert!(text.contains(r#""gitCommit":"aaaa"#));
    assert!(p["runDetails"]["metadata"].get("startedOn").is_none());
    assert!(p["buildDefinition"]["internalParameters"]
        .get("buildConfig")
        .is_none());
    f.mode = provenance::Mode::Max;
    f.times = Some((10, 10));
    let q = provenance::predicate(&f);
    assert!(q["buildDefinition"]["internalParameters"]["buildConfig"]["steps"].is_array());
    assert_eq!(
        q["runDetails"]["metadata"]["startedOn"],
        "1970-01-01T00:00:10Z"
    );
    assert_ne!(
        p["runDetails"]["metadata"]["invocationId"],
        q["runDetails"]["metadata"]["invocationId"]
    );
}

#[test]
fn docker_purls_are_buildkits() {
    let amd: oci::Platform = "linux/amd64".parse().unwrap();
    assert_eq!(
        docker_purl("alpine", Some(&amd)),
        "pkg:docker/alpine@latest?platform=linux%2Famd64"
    );
    assert_eq!(
        docker_purl("ghcr.io/o/r:v1", None),
        "pkg:docker/ghcr.io/o/r@v1"
    );
    let d = Digest::sha256(b"x");
    assert_eq!(
        docker_purl(&format!("debian@{d}"), None),
        format!("pkg:docker/debian?digest=sha256%3A{}", d.hex())
    );
}
