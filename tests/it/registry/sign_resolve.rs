//! Verification on resolve (`[image]` `verify_signature`, `verify_provenance`, `builder_id`,
//! `source_repository`, `allow_unverified_local_build`): `kiln resolve`, `ensure` and `status`
//! against the real `docker-registry`, each failure failing closed with its message.
use std::path::{Path, PathBuf};
use std::process::Command;

use super::sign::{k_fails, k_ok, keypair, pushed, raw, setup, PROVENANCE};
use crate::support::registry::Registry;
use crate::support::{need, run, Kiln};

fn write_config(k: &Kiln, body: &str) -> PathBuf {
    let dir = k.path("deploy");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("kiln.toml");
    std::fs::write(&f, format!("[image]\n{body}")).unwrap();
    f
}

/// Puts `from`'s manifest with one annotation more under the tag `to`; returns its digest.
fn variant(k: &Kiln, reg: &Registry, from: &str, to: &str) -> String {
    let mut m = raw(reg, &format!("it/app:{from}"));
    m["annotations"] = serde_json::json!({ "variant": to });
    let file = k.path(&format!("{to}.json"));
    std::fs::write(&file, serde_json::to_vec(&m).unwrap()).unwrap();
    run(Command::new("curl").args([
        "-sf",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://{}/v2/it/app/manifests/{to}", reg.addr),
    ]));
    format!("sha256:{}", crate::support::sha256_file(&file))
}

/// Copies the manifest under `from` to the tag `to` (both in it/app), as an attacker with push
/// access would.
fn copy_manifest(reg: &Registry, from: &str, to: &str) {
    let m = raw(reg, &format!("it/app:{from}"));
    let body = serde_json::to_vec(&m).unwrap();
    let url = format!("http://{}/v2/it/app/manifests/{to}", reg.addr);
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), body).unwrap();
    run(Command::new("curl").args([
        "-sf",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &format!("@{}", f.path().display()),
        &url,
    ]));
}

#[test]
fn resolve_and_ensure_fail_closed_unless_the_signature_and_provenance_verify() {
    let k = Kiln::new();
    let Some(reg) = setup(&k) else { return };
    if !need("skopeo") || !need("curl") {
        return;
    }
    let (key, public) = keypair(&k, "k1");
    let (_, public2) = keypair(&k, "k2");
    // Two different manifests (busybox pushed twice would be one digest).
    let mut digests = pushed(&k, &reg, &["signed"]);
    digests.push(variant(&k, &reg, "signed", "unsigned"));
    let name = format!("{}/it/app", reg.addr);
    k_ok(
        &k,
        &[
            "sign",
            "--key",
            key.to_str().unwrap(),
            &format!("{name}:signed"),
        ],
    );
    let pubkey = public.to_str().unwrap().to_string();
    let cfg = |tag: &str, key: &str, extra: &str| {
        write_config(&k, &format!("name = \"{name}\"\ntag_override = \"{tag}\"\nverify_signature = true\npublic_key = \"{key}\"\n{extra}"))
    };
    let resolve = |f: &Path| k_ok(&k, &["--config", f.to_str().unwrap(), "resolve"]);
    let refused = |f: &Path, cmd: &str| {
        let (code, err) = k_fails(&k, &["--config", f.to_str().unwrap(), cmd]);
        assert_eq!(code, 1, "{cmd}: {err}");
        assert!(err.contains(&format!("image `{name}:")), "{err}");
        err
    };
    // Signed with the key: resolves, pinned to the verified digest.
    let f = cfg("signed", &pubkey, "");
    let out = resolve(&f);
    assert!(out.starts_with(&format!("{name}@{}", digests[0])), "{out}");
    let status = k_ok(&k, &["--config", f.to_str().unwrap(), "status"]);
    assert!(
        status.contains("Signature: verified (key SHA256:"),
        "{status}"
    );
    // Unsigned.
    let f = cfg("unsigned", &pubkey, "");
    for cmd in ["resolve", "ensure"] {
        let err = refused(&f, cmd);
        assert!(
            err.contains("(rule 2): verify_signature:") && err.contains("the image is not signed"),
            "{err}"
        );
    }
    assert!(
        !k_ok(&k, &["images"]).contains("unsigned"),
        "ensure must not pull a refused image"
    );
    let status = k_ok(&k, &["--config", f.to_str().unwrap(), "status"]);
    assert!(status.contains("Signature: FAILED:"), "{status}");
    // The wrong key.
    let f = cfg("signed", public2.to_str().unwrap(), "");
    assert!(refused(&f, "resolve").contains("does not verify with key"));
    // A signature for another digest: `signed`'s signature copied to `unsigned`'s tag.
    copy_manifest(
        &reg,
        &format!("sha256-{}.sig", &digests[0][7..]),
        &format!("sha256-{}.sig", &digests[1][7..]),
    );
    let f = cfg("unsigned", &pubkey, "");
    let err = refused(&f, "resolve");
    assert!(err.contains("signed for another digest"), "{err}");
    // A tampered manifest: `signed` re-pushed with one byte of annotation more, and the old
    // signature copied along; the digest it resolves to is not the one signed.
    let td = variant(&k, &reg, "signed", "tampered");
    copy_manifest(
        &reg,
        &format!("sha256-{}.sig", &digests[0][7..]),
        &format!("sha256-{}.sig", &td[7..]),
    );
    let f = cfg("tampered", &pubkey, "");
    let err = refused(&f, "ensure");
    assert!(
        err.contains("signed for another digest") && err.contains(&td),
        "{err}"
    );
    // Provenance: missing, then a wrong builder id, a wrong source, then the right ones.
    let f = cfg("signed", &pubkey, "verify_provenance = true\n");
    let err = refused(&f, "resolve");
    assert!(
        err.contains("verify_provenance:") && err.contains("there are none"),
        "{err}"
    );
    let predicate = k.path("prov.json");
    std::fs::write(&predicate, PROVENANCE).unwrap();
    k_ok(
        &k,
        &[
            "attest",
            "--key",
            key.to_str().unwrap(),
            "--predicate",
            predicate.to_str().unwrap(),
            "--type",
            "slsaprovenance1",
            &format!("{name}:signed"),
        ],
    );
    let f = cfg(
        "signed",
        &pubkey,
        "builder_id = \"https://evil.example/builder\"\n",
    );
    let err = refused(&f, "resolve");
    assert!(
        err.contains(
            "builder_id: the provenance's builder id is `https://kiln.example/builder@v1`"
        ),
        "{err}"
    );
    let f = cfg(
        "signed",
        &pubkey,
        "source_repository = \"https://git.example/org/other\"\n",
    );
    assert!(refused(&f, "resolve").contains("source_repository:"));
    let f = cfg("signed", &pubkey, "builder_id = \"https://kiln.example/builder@v1\"\nsource_repository = \"https://git.example/org/app\"\n");
    resolve(&f);
    let status = k_ok(&k, &["--config", f.to_str().unwrap(), "status"]);
    assert!(
        status.contains("Provenance: verified (builder https://kiln.example/builder@v1)"),
        "{status}"
    );
    let out = k_ok(&k, &["--config", f.to_str().unwrap(), "ensure"]);
    assert!(out.contains(&digests[0]), "{out}");
    // A local build (rule 5) has nothing to verify: refused unless allowed.
    let dir = k.path("deploy");
    std::fs::write(dir.join("Dockerfile"), "FROM busybox\n").unwrap();
    let f = write_config(
        &k,
        &format!("name = \"{name}\"\nverify_signature = true\npublic_key = \"{pubkey}\"\n"),
    );
    let err = refused(&f, "resolve");
    assert!(
        err.contains("(rule 5)") && err.contains("allow_unverified_local_build"),
        "{err}"
    );
    let f = write_config(&k, &format!("name = \"{name}\"\nverify_signature = true\npublic_key = \"{pubkey}\"\nallow_unverified_local_build = true\n"));
    resolve(&f);
    // Asking for verification without a key is a config error naming the key.
    let f = write_config(
        &k,
        &format!("name = \"{name}\"\ntag_override = \"signed\"\nverify_signature = true\n"),
    );
    let (code, err) = k_fails(&k, &["--config", f.to_str().unwrap(), "resolve"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("image.verify_signature") && err.contains("needs `image.public_key`"),
        "{err}"
    );
}
