//! `kiln build --platform linux/amd64,linux/arm64`: RUN steps of the arm64 image under the QEMU
//! user emulator registered in `binfmt_misc` (Debian's `qemu-user-static` + `binfmt-support`,
//! installed by scripts/install-peers.sh), on bases made from Debian's `busybox-static` for
//! each architecture; one index; run by podman for each platform. As root and as the
//! unprivileged test user. Under `CI=true` a missing emulator or `.deb` fails the test.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::runas::{
    blob_views, contains, layer_entries, layout_layers, skip, KilnAs, Who,
};
use crate::support::{assert_success, is_root, need};

/// Where the `busybox-static` packages are kept between runs.
const DEBS: &str = "/var/tmp/kiln-it-debs";
const BINFMT: &str = "/proc/sys/fs/binfmt_misc";

/// The tests of this module one at a time: while one registers a handler without `F`, every
/// arm64 program on the machine goes through it (podman's containers would lack its interpreter).
pub(crate) static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The `busybox-static` `.deb` of `arch`, downloaded once with `apt-get download` (after
/// `dpkg --add-architecture arm64` for the foreign one).
fn busybox_deb(arch: &str) -> Option<PathBuf> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let find = || {
        std::fs::read_dir(DEBS)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                n.starts_with("busybox-static_") && n.ends_with(&format!("_{arch}.deb"))
            })
    };
    if let Some(p) = find() {
        return Some(p);
    }
    if !is_root() || !need("apt-get") {
        skip("no busybox-static .deb cached and not root to download it");
        return None;
    }
    std::fs::create_dir_all(DEBS).unwrap();
    let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    let foreign = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .unwrap();
    if arch != "amd64" && !String::from_utf8_lossy(&foreign.stdout).contains(arch) {
        ok(Command::new("dpkg").args(["--add-architecture", arch]));
        ok(Command::new("apt-get").args(["update", "-qq"]));
    }
    ok(Command::new("apt-get")
        .current_dir(DEBS)
        .args(["download", &format!("busybox-static:{arch}")]));
    let p = find();
    if p.is_none() {
        skip(&format!(
            "cannot download busybox-static:{arch} into {DEBS}"
        ));
    }
    p
}

/// Whether `qemu-aarch64` is registered and enabled (skip, or fail under CI, when not).
pub(crate) fn emulator_registered() -> bool {
    let ok = std::fs::read_to_string(format!("{BINFMT}/qemu-aarch64"))
        .is_ok_and(|t| t.starts_with("enabled"));
    if !ok {
        skip("qemu-aarch64 is not registered in binfmt_misc (scripts/install-peers.sh installs qemu-user-static binfmt-support)");
    }
    ok
}

/// A busybox base for `arch`, imported with `--platform linux/ARCH` as `bb-ARCH`.
fn import_base(k: &KilnAs, arch: &str, deb: &Path) {
    let x = k.path(&format!("deb-{arch}"));
    assert_success(
        &Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(&x)
            .output()
            .unwrap(),
        &"dpkg-deb -x",
    );
    let root = k.path(&format!("rootfs-{arch}"));
    for d in ["bin", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(x.join("bin/busybox"), root.join("bin/busybox")).unwrap();
    for a in ["sh", "uname", "cat", "echo", "ls", "mkdir"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    k.give(&root);
    let r = root.to_str().unwrap();
    let (platform, tag) = (format!("linux/{arch}"), format!("bb-{arch}"));
    k.ok(&[
        "import",
        r,
        "-t",
        &tag,
        "--platform",
        &platform,
        "--cmd",
        "/bin/sh",
        "--env",
        "PATH=/bin",
    ]);
}

/// The Dockerfile: a `$BUILDPLATFORM` stage that says when it runs, and a target stage whose
/// RUN steps record the platform and the machine they ran on.
const DOCKERFILE: &str = "FROM --platform=$BUILDPLATFORM bb AS tools
ARG BUILDPLATFORM
RUN echo TOOLS-STAGE-RAN && echo \"$BUILDPLATFORM $(uname -m)\" > /tools.txt
FROM bb
ARG TARGETPLATFORM
ARG TARGETARCH
COPY --from=tools /tools.txt /tools.txt
RUN mkdir -p /out && uname -m > /out/machine
RUN echo \"$TARGETPLATFORM $TARGETARCH $(cat /out/machine)\" > /out/platform
CMD [\"/bin/cat\", \"/out/platform\"]
";

/// The layers above the base of `layout:tag`: every member path, and every decompressed byte.
fn built_layers(layout: &Path, tag: &str) -> (Vec<String>, Vec<u8>) {
    let mut paths = Vec::new();
    let mut bytes = Vec::new();
    for blob in layout_layers(layout, tag).iter().skip(1) {
        paths.extend(layer_entries(blob).into_iter().map(|e| e.path));
        bytes.extend(blob_views(blob).pop().unwrap());
    }
    (paths, bytes)
}

/// No member path or byte of the built layers names the emulator.
fn assert_no_emulator(layout: &Path, tag: &str, what: &dyn std::fmt::Debug) {
    let (paths, bytes) = built_layers(layout, tag);
    assert!(!paths.is_empty(), "{what:?}: no built layer");
    for p in &paths {
        assert!(
            !p.contains("qemu") && !p.starts_with("usr"),
            "{what:?}: {p} in {paths:?}"
        );
    }
    for needle in [&b"qemu"[..], b"binfmt"] {
        assert!(
            !contains(&bytes, needle),
            "{what:?}: a layer holds {}",
            String::from_utf8_lossy(needle)
        );
    }
}

/// `podman run --arch ARCH` of an OCI archive.
pub(crate) fn podman_run_arch(dir: &Path, archive: &Path, arch: &str, cmd: &[&str]) -> String {
    let out = Command::new("podman")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args([
            "--storage-driver",
            "vfs",
            "run",
            "--rm",
            "--runtime",
            "runc",
        ])
        .args([
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=32768:32768",
        ])
        .args(["--network", "none", "--arch", arch])
        .arg(format!("oci-archive:{}", archive.display()))
        .args(cmd)
        .output()
        .unwrap();
    assert_success(&out, &("podman run --arch", arch));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn two_platform_build(who: Who) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !emulator_registered() || !need("podman") || !need("dpkg-deb") {
        return;
    }
    let (Some(amd), Some(arm)) = (busybox_deb("amd64"), busybox_deb("arm64")) else {
        return;
    };
    let Some(k) = KilnAs::new(who) else { return };
    import_base(&k, "amd64", &amd);
    import_base(&k, "arm64", &arm);
    k.ok(&["index", "create", "-t", "bb", "bb-amd64", "bb-arm64"]);
    let ctx = k.context("ctx", DOCKERFILE, &[]);
    k.give(&ctx);
    let out = k
        .cmd_progress("plain")
        .args([
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "multi",
        ])
        .arg(&ctx)
        .output()
        .unwrap();
    assert_success(&out, &(who, "two-platform build"));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    // The `$BUILDPLATFORM` stage ran once: the arm64 build found its step in the cache.
    assert_eq!(
        log.lines()
            .filter(|l| l.ends_with(" TOOLS-STAGE-RAN") && !l.contains("RUN"))
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("linux/arm64 runs under emulation: qemu-aarch64"),
        "{log}"
    );
    // One index (its digest on stdout), listing both.
    let index_digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let hex = index_digest.strip_prefix("sha256:").unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(k.path("store/blobs/sha256").join(hex)).unwrap())
            .unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let listed: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        listed.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>(),
        ["amd64", "arm64"],
        "{index}"
    );
    // The same bases from an `oci:` layout and an `oci-archive:` holding the index: each
    // platform's base is chosen from it, and the index comes out the same.
    let layout = k.path("out/bases");
    let archive = k.path("out/bases.tar");
    k.ok(&[
        "copy",
        "--all",
        "bb",
        &format!("oci:{}:bb", layout.display()),
    ]);
    k.ok(&[
        "copy",
        "--all",
        "bb",
        &format!("oci-archive:{}:bb", archive.display()),
    ]);
    let from_files = DOCKERFILE
        .replace(
            "FROM --platform=$BUILDPLATFORM bb AS",
            &format!(
                "FROM --platform=$BUILDPLATFORM oci-archive:{}:bb AS",
                archive.display()
            ),
        )
        .replace(
            "\nFROM bb\n",
            &format!("\nFROM oci:{}:bb\n", layout.display()),
        );
    assert_ne!(from_files, DOCKERFILE);
    let ctx2 = k.context("ctx2", &from_files, &[]);
    k.give(&ctx2);
    let again = k.ok(&[
        "build",
        "--platform",
        "linux/amd64,linux/arm64",
        ctx2.to_str().unwrap(),
    ]);
    assert_eq!(
        again.trim(),
        index_digest,
        "bases from oci: and oci-archive: indexes"
    );
    for (arch, machine) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        // The same image again (every step a cache hit), written as an archive for podman.
        let archive = k.path(&format!("out/{arch}.oci.tar"));
        let layout = k.path("out/layout");
        let platform = format!("linux/{arch}");
        let digest = k.ok(&[
            "build",
            "--platform",
            &platform,
            "-o",
            &format!("oci-archive:{}", archive.display()),
            "-o",
            &format!("oci:{}:{arch}", layout.display()),
            ctx.to_str().unwrap(),
        ]);
        assert!(
            listed.contains(&(arch.to_string(), digest.trim().to_string())),
            "{digest} is not the index's {arch} image: {listed:?}"
        );
        let said = podman_run_arch(&k.path(&format!("podman-{arch}")), &archive, arch, &[]);
        assert_eq!(said.trim(), format!("linux/{arch} {arch} {machine}"));
        let live = podman_run_arch(
            &k.path(&format!("podman-{arch}")),
            &archive,
            arch,
            &["uname", "-m"],
        );
        assert_eq!(live.trim(), machine);
        assert_no_emulator(&layout, arch, &(who, arch));
    }
}

#[test]
fn two_platform_build_runs_arm64_steps_under_emulation_as_root() {
    two_platform_build(Who::Root);
}

#[test]
fn two_platform_build_runs_arm64_steps_under_emulation_as_unprivileged_user() {
    two_platform_build(Who::User);
}

/// Registers a handler for aarch64 ELF files without the `F` flag (newer entries are tried
/// first by the kernel, so it takes over from `qemu-aarch64` while registered); unregistered
/// on drop.
struct NoFixBinaryHandler(PathBuf);

impl NoFixBinaryHandler {
    fn register(name: &str, interpreter: &str) -> NoFixBinaryHandler {
        let magic = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00";
        let mask =
            r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff";
        let entry = PathBuf::from(format!("{BINFMT}/{name}"));
        if entry.exists() {
            std::fs::write(&entry, "-1").unwrap();
        }
        std::fs::write(
            format!("{BINFMT}/register"),
            format!(":{name}:M::{magic}:{mask}:{interpreter}:P"),
        )
        .unwrap();
        NoFixBinaryHandler(entry)
    }
}

impl Drop for NoFixBinaryHandler {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "-1");
    }
}

/// A handler without `F`: the kernel opens its interpreter by path inside the step's root, so
/// kiln binds it there read-only, and the mount point leaves no trace in the layer. Root and the
/// unprivileged user, one after the other under the one registration.
#[test]
fn a_handler_without_fix_binary_gets_its_interpreter_bound_into_the_step() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        skip("registering a binfmt_misc handler needs root");
        return;
    }
    let interp = "/usr/bin/qemu-aarch64-static";
    if !emulator_registered() || !Path::new(interp).exists() && !need("qemu-aarch64-static") {
        return;
    }
    let Some(arm) = busybox_deb("arm64") else {
        return;
    };
    let _h = NoFixBinaryHandler::register("kiln-it-aarch64-nof", interp);
    for who in [Who::Root, Who::User] {
        let Some(k) = KilnAs::new(who) else { return };
        import_base(&k, "arm64", &arm);
        let ctx = k.context("ctx", "FROM bb-arm64\nRUN uname -m > /machine\n", &[]);
        k.give(&ctx);
        let layout = k.path("out/layout");
        let out = k
            .cmd_progress("plain")
            .args(["build", "--platform", "linux/arm64", "-o"])
            .arg(format!("oci:{}:arm64", layout.display()))
            .arg(&ctx)
            .output()
            .unwrap();
        assert_success(&out, &(who, "arm64 build through a handler without F"));
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains("kiln-it-aarch64-nof (/usr/bin/qemu-aarch64-static)"),
            "{log}"
        );
        assert_no_emulator(&layout, "arm64", &who);
        let (_, bytes) = built_layers(&layout, "arm64");
        assert!(
            contains(&bytes, b"aarch64\n"),
            "{who:?}: the step ran as aarch64"
        );
    }
}

/// `kiln bake` of a family with `platforms = ["linux/amd64", "linux/arm64"]`, its base an index
/// in a registry (each platform's image pulled by platform), RUN steps of the arm64 image under
/// emulation, the index pushed; skopeo reads the arm64 image back and its layer says `aarch64`.
#[test]
fn bake_pushes_a_two_platform_index_built_on_a_registry_base() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !emulator_registered() || !need("skopeo") || !need("dpkg-deb") {
        return;
    }
    let (Some(amd), Some(arm)) = (busybox_deb("amd64"), busybox_deb("arm64")) else {
        return;
    };
    let Some(reg) =
        crate::support::registry::Registry::start(crate::support::registry::Mode::Plain)
    else {
        return;
    };
    let Some(k) = KilnAs::new(Who::Root) else {
        return;
    };
    import_base(&k, "amd64", &amd);
    import_base(&k, "arm64", &arm);
    let base = format!("{}/it/bb:1", reg.addr);
    k.ok(&[
        "--tls-verify=false",
        "index",
        "create",
        "-t",
        &format!("docker://{base}"),
        "bb-amd64",
        "bb-arm64",
    ]);
    // A fresh store: the bases come from the registry only.
    let Some(k) = KilnAs::new(Who::Root) else {
        return;
    };
    let dir = k.path("family");
    std::fs::create_dir_all(dir.join("variants")).unwrap();
    std::fs::write(
        dir.join("variants/Dockerfile"),
        format!("FROM {base}\nRUN uname -m > /machine\n"),
    )
    .unwrap();
    let toml = dir.join("kiln.toml");
    std::fs::write(
        &toml,
        format!("[family]\nname = \"fam\"\nregistry = \"{}/it\"\nversion = \"1.0.0\"\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n[tags]\ndefault = [\"{{version}}\"]\n", reg.addr),
    )
    .unwrap();
    let meta = k.path("out/digests.json");
    k.ok(&[
        "--tls-verify=false",
        "--config",
        toml.to_str().unwrap(),
        "bake",
        "--push",
        "--metadata-file",
        meta.to_str().unwrap(),
    ]);
    let r = format!("docker://{}/it/fam:1.0.0", reg.addr);
    let raw = crate::support::run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &r,
    ]));
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"], "{raw}");
    for (arch, machine) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let layout = k.path(&format!("out/{arch}"));
        crate::support::run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--override-arch",
            arch,
            &r,
            &format!("oci:{}:{arch}", layout.display()),
        ]));
        let (_, bytes) = built_layers(&layout, arch);
        assert!(
            contains(&bytes, format!("{machine}\n").as_bytes()),
            "{arch}"
        );
        assert_no_emulator(&layout, arch, &arch);
    }
}
