//! `kiln key generate`, `kiln sign`, `kiln attest`, `kiln verify` and verification on resolve,
//! against the real `docker-registry` (no referrers API: the tag-schema fallback is used), with
//! skopeo reading the layout and an independent verifier (Python `cryptography`, Debian's
//! python3-cryptography) checking kiln's ECDSA signatures and DSSE envelopes.
//!
//! Debian 12's skopeo 1.9.3, podman 4.3 and buildah 1.28 are built with sigstore disabled (a
//! Debian-local patch: "Debian-local change: sigstore disabled" for both `sigstoreSigned`
//! policies and `--sign-by-sigstore-private-key`), so they cannot be the cosign-side peer here;
//! see docs/SUPPLY-CHAIN.md for the policy.json / registries.d an upstream build uses.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::registry::{Mode, Registry};
use crate::support::{busybox, need, run, Kiln};

const PY: &str = "/usr/bin/python3";

/// An independent check: counts the `.sig` layers whose signature verifies over the payload with
/// the PEM public key (each must name the digest) and the `.att` envelopes whose signature
/// verifies over the DSSE PAE (each must be about the digest). Prints `sig=N att=M`.
const PY_VERIFY: &str = r#"
import base64, json, sys, urllib.request
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
def ok(sig, data):
    try:
        key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False
reg, repo, digest, pub = sys.argv[1:5]
key = serialization.load_pem_public_key(open(pub, 'rb').read())
def get(path, accept=None):
    req = urllib.request.Request(f"http://{reg}/v2/{repo}/{path}")
    if accept: req.add_header("Accept", accept)
    return urllib.request.urlopen(req).read()
def manifest(tag):
    try: return json.loads(get("manifests/" + tag, "application/vnd.oci.image.manifest.v1+json"))
    except urllib.error.HTTPError: return {"layers": []}
tag = digest.replace(":", "-")
n = 0
for l in manifest(tag + ".sig")["layers"]:
    payload = get("blobs/" + l["digest"])
    if ok(base64.b64decode(l["annotations"]["dev.cosignproject.cosign/signature"]), payload):
        assert json.loads(payload)["critical"]["image"]["docker-manifest-digest"] == digest
        n += 1
m = 0
for l in manifest(tag + ".att")["layers"]:
    env = json.loads(get("blobs/" + l["digest"]))
    body = base64.b64decode(env["payload"])
    t = env["payloadType"].encode()
    pae = b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)
    if ok(base64.b64decode(env["signatures"][0]["sig"]), pae):
        st = json.loads(body)
        assert st["subject"][0]["digest"]["sha256"] == digest.split(":")[1]
        m += 1
print(f"sig={n} att={m}")
"#;

fn py_verify(reg: &Registry, repo: &str, digest: &str, public: &Path) -> String {
    assert!(
        need("python3")
            && Command::new(PY)
                .args(["-c", "import cryptography"])
                .status()
                .is_ok_and(|s| s.success())
            || std::env::var("CI").as_deref() != Ok("true"),
        "python3-cryptography is required under CI=true"
    );
    run(Command::new(PY).args([
        "-c",
        PY_VERIFY,
        &reg.addr,
        repo,
        digest,
        public.to_str().unwrap(),
    ]))
    .trim()
    .to_string()
}

/// kiln with `--tls-verify=false` (the plain registry) and `COSIGN_PASSWORD`.
pub(super) fn k_ok(k: &Kiln, args: &[&str]) -> String {
    let out = k
        .cmd()
        .arg("--tls-verify=false")
        .args(args)
        .env("COSIGN_PASSWORD", "correct horse")
        .output()
        .unwrap();
    crate::support::assert_success(&out, &args);
    String::from_utf8(out.stdout).unwrap()
}

/// (exit code, stderr) of a kiln run expected to fail.
pub(super) fn k_fails(k: &Kiln, args: &[&str]) -> (i32, String) {
    let out = k
        .cmd()
        .arg("--tls-verify=false")
        .args(args)
        .env("COSIGN_PASSWORD", "correct horse")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "kiln {args:?} should have failed; stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(super) fn keypair(k: &Kiln, name: &str) -> (PathBuf, PathBuf) {
    let prefix = k.path(name);
    k_ok(
        k,
        &[
            "key",
            "generate",
            "--output-key-prefix",
            prefix.to_str().unwrap(),
        ],
    );
    (
        k.path(&format!("{name}.key")),
        k.path(&format!("{name}.pub")),
    )
}

/// busybox pushed as `{reg}/it/app:{tag}` for each tag; returns the manifest digests.
pub(super) fn pushed(k: &Kiln, reg: &Registry, tags: &[&str]) -> Vec<String> {
    tags.iter()
        .map(|t| {
            let out = k_ok(k, &["push", "busybox", &format!("{}/it/app:{t}", reg.addr)]);
            out.trim().rsplit('@').next().unwrap().to_string()
        })
        .collect()
}

pub(super) fn setup(k: &Kiln) -> Option<Registry> {
    busybox::import(k, "busybox")?;
    Registry::start(Mode::Plain)
}

pub(super) fn raw(reg: &Registry, reference: &str) -> serde_json::Value {
    serde_json::from_str(&run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/{reference}", reg.addr),
    ])))
    .unwrap()
}

#[test]
fn keys_are_cosign_format_private_0600_and_never_overwritten() {
    let k = Kiln::new();
    let (key, public) = keypair(&k, "cosign");
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(
        text.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"),
        "{text}"
    );
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    let doc = run(Command::new("base64").arg("-d").stdin(
        std::fs::File::open({
            let p = k.path("b64");
            std::fs::write(&p, &b64).unwrap();
            p
        })
        .unwrap(),
    ));
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["kdf"]["name"], "scrypt");
    assert_eq!(
        doc["kdf"]["params"],
        serde_json::json!({"N": 32768, "r": 8, "p": 1})
    );
    assert_eq!(doc["cipher"]["name"], "nacl/secretbox");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&public)
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    // Not again without --force; with it, a new key.
    let prefix = k.path("cosign");
    let (code, err) = k_fails(
        &k,
        &[
            "key",
            "generate",
            "--output-key-prefix",
            prefix.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("exists; pass --force"), "{err}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text);
    k_ok(
        &k,
        &[
            "key",
            "generate",
            "--force",
            "--output-key-prefix",
            prefix.to_str().unwrap(),
        ],
    );
    assert_ne!(std::fs::read_to_string(&key).unwrap(), text);
    // No COSIGN_PASSWORD and no terminal: a clear error, nothing written.
    let out = k
        .cmd()
        .args(["key", "generate", "--output-key-prefix"])
        .arg(k.path("other"))
        .env_remove("COSIGN_PASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("set COSIGN_PASSWORD"));
    assert!(!k.path("other.key").exists());
}

#[test]
fn a_kiln_signature_is_cosigns_layout_and_verifies_with_kiln_and_an_independent_verifier() {
    let k = Kiln::new();
    let Some(reg) = setup(&k) else { return };
    if !need("skopeo") {
        return;
    }
    let (key, public) = keypair(&k, "k1");
    let (key2, public2) = keypair(&k, "k2");
    let d = pushed(&k, &reg, &["v1"]).remove(0);
    let image = format!("{}/it/app:v1", reg.addr);
    // Unsigned: verify fails (exit 1) and says so.
    let (code, err) = k_fails(&k, &["verify", "--key", public.to_str().unwrap(), &image]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no signatures found"), "{err}");
    k_ok(&k, &["sign", "--key", key.to_str().unwrap(), &image]);
    let sig = raw(&reg, &format!("it/app:sha256-{}.sig", &d[7..]));
    let layer = &sig["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    assert!(layer["annotations"]["dev.cosignproject.cosign/signature"].is_string());
    let out = k_ok(&k, &["verify", "--key", public.to_str().unwrap(), &image]);
    let payloads: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        payloads[0]["critical"]["image"]["docker-manifest-digest"],
        d.as_str()
    );
    assert_eq!(
        payloads[0]["critical"]["identity"]["docker-reference"],
        format!("{}/it/app", reg.addr)
    );
    // The wrong key: exit 1, naming the key.
    let (code, err) = k_fails(&k, &["verify", "--key", public2.to_str().unwrap(), &image]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not verify with key SHA256:"), "{err}");
    // A second signer is appended, not replacing the first.
    k_ok(
        &k,
        &[
            "sign",
            "--key",
            key2.to_str().unwrap(),
            &format!("{}/it/app@{d}", reg.addr),
        ],
    );
    let sig = raw(&reg, &format!("it/app:sha256-{}.sig", &d[7..]));
    assert_eq!(sig["layers"].as_array().unwrap().len(), 2, "{sig}");
    for p in [&public, &public2] {
        k_ok(&k, &["verify", "--key", p.to_str().unwrap(), &image]);
    }
    assert_eq!(py_verify(&reg, "it/app", &d, &public), "sig=1 att=0");
    assert_eq!(py_verify(&reg, "it/app", &d, &public2), "sig=1 att=0");
    // Keyless is refused plainly.
    let (code, err) = k_fails(
        &k,
        &["verify", "--certificate-identity", "me@example.com", &image],
    );
    assert_eq!(code, 2);
    assert!(err.contains("needs Fulcio and Rekor"), "{err}");
}

#[test]
fn an_attestation_is_a_dsse_envelope_under_att_and_a_referrer_in_the_fallback_tag() {
    let k = Kiln::new();
    let Some(reg) = setup(&k) else { return };
    if !need("skopeo") {
        return;
    }
    let (key, public) = keypair(&k, "k1");
    let (_, public2) = keypair(&k, "k2");
    let d = pushed(&k, &reg, &["v1"]).remove(0);
    let image = format!("{}/it/app@{d}", reg.addr);
    let predicate = k.path("prov.json");
    std::fs::write(&predicate, PROVENANCE).unwrap();
    // Nothing attested yet: verify --attestation fails.
    let (code, err) = k_fails(
        &k,
        &[
            "verify",
            "--key",
            public.to_str().unwrap(),
            "--attestation",
            "provenance",
            &image,
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("there are none"), "{err}");
    let out = k_ok(
        &k,
        &[
            "attest",
            "--key",
            key.to_str().unwrap(),
            "--predicate",
            predicate.to_str().unwrap(),
            "--type",
            "slsaprovenance1",
            &image,
        ],
    );
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    let referrer = out["referrer"].as_str().unwrap().to_string();
    // cosign's layout.
    let att = raw(&reg, &format!("it/app:sha256-{}.att", &d[7..]));
    let layer = &att["layers"][0];
    assert_eq!(layer["mediaType"], "application/vnd.dsse.envelope.v1+json");
    assert_eq!(
        layer["annotations"]["predicateType"],
        "https://slsa.dev/provenance/v1"
    );
    // The referrers tag schema: an index naming the referrer, whose subject is the image.
    let index = raw(&reg, &format!("it/app:sha256-{}", &d[7..]));
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["manifests"][0]["digest"], referrer.as_str());
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.dsse.envelope.v1+json"
    );
    let m = raw(&reg, &format!("it/app@{referrer}"));
    assert_eq!(m["subject"]["digest"], d.as_str());
    // kiln verifies it and prints the statement; an independent verifier agrees.
    let out = k_ok(
        &k,
        &[
            "verify",
            "--key",
            public.to_str().unwrap(),
            "--attestation",
            "provenance",
            &image,
        ],
    );
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st[0]["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        st[0]["predicate"]["runDetails"]["builder"]["id"],
        "https://kiln.example/builder@v1"
    );
    assert_eq!(st[0]["subject"][0]["digest"]["sha256"], &d[7..]);
    assert_eq!(py_verify(&reg, "it/app", &d, &public), "sig=0 att=1");
    // Another key, or another type: exit 1.
    let (code, err) = k_fails(
        &k,
        &[
            "verify",
            "--key",
            public2.to_str().unwrap(),
            "--attestation",
            "provenance",
            &image,
        ],
    );
    assert_eq!(code, 1, "{err}");
    let (code, err) = k_fails(
        &k,
        &[
            "verify",
            "--key",
            public.to_str().unwrap(),
            "--attestation",
            "sbom",
            &image,
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not the one asked for"), "{err}");
}

pub(super) const PROVENANCE: &str = r#"{"buildDefinition":{"buildType":"https://kiln.example/build/v1",
 "externalParameters":{"configSource":{"uri":"git+https://git.example/org/app.git@refs/heads/main"}},
 "resolvedDependencies":[{"uri":"pkg:docker/busybox","digest":{"sha256":"00"}}]},
 "runDetails":{"builder":{"id":"https://kiln.example/builder@v1"}}}"#;

#[test]
fn build_push_sign_signs_the_digest_it_pushed() {
    let k = Kiln::new();
    let Some(reg) = setup(&k) else { return };
    let (key, public) = keypair(&k, "k1");
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nLABEL signed=yes\n").unwrap();
    let image = format!("{}/it/built:v1", reg.addr);
    let digest = k_ok(
        &k,
        &[
            "build",
            "-t",
            &image,
            "--push",
            "--sign",
            "--key",
            key.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
    );
    let digest = digest.trim();
    let out = k_ok(&k, &["verify", "--key", public.to_str().unwrap(), &image]);
    let payloads: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        payloads[0]["critical"]["image"]["docker-manifest-digest"],
        digest
    );
    // --sign without a push is refused before building.
    let (code, err) = k_fails(
        &k,
        &[
            "build",
            "-t",
            "local:v1",
            "--sign",
            "--key",
            key.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--sign signs what the build pushes"), "{err}");
}

#[test]
fn bake_push_sign_signs_every_target_it_pushed() {
    let k = Kiln::new();
    let Some(reg) = setup(&k) else { return };
    let (key, public) = keypair(&k, "k1");
    let dir = k.path("family");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile.a"), "FROM busybox\nLABEL v=a\n").unwrap();
    std::fs::write(dir.join("Dockerfile.b"), "FROM busybox\nLABEL v=b\n").unwrap();
    let cfg = dir.join("kiln.toml");
    std::fs::write(
        &cfg,
        format!(
            "[family]\nname = \"fam\"\nregistry = \"{}/fam\"\nversion = \"1.0.0\"\n\
             [tags]\ndefault = [\"{{version}}\"]\n\
             [target.a]\ndockerfile = \"Dockerfile.a\"\n[target.b]\ndockerfile = \"Dockerfile.b\"\n",
            reg.addr
        ),
    )
    .unwrap();
    let meta = k.path("digests.json");
    let cfg = cfg.to_str().unwrap();
    k_ok(
        &k,
        &[
            "--config",
            cfg,
            "bake",
            "--push",
            "--sign",
            "--key",
            key.to_str().unwrap(),
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
    );
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let targets = meta["targets"].as_object().unwrap();
    assert_eq!(targets.len(), 2, "{meta}");
    for t in targets.values() {
        let tag = t["tags"][0].as_str().unwrap();
        let out = k_ok(&k, &["verify", "--key", public.to_str().unwrap(), tag]);
        let payloads: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            payloads[0]["critical"]["image"]["docker-manifest-digest"], t["digest"],
            "{tag}"
        );
    }
    // --sign needs --push.
    let (code, _) = k_fails(
        &k,
        &[
            "--config",
            cfg,
            "bake",
            "--sign",
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2);
}
