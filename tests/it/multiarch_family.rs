//! The family's `variants/Dockerfile.minimal` for `linux/amd64` and `linux/arm64` from one
//! `kiln build --platform linux/amd64,linux/arm64`, as the unprivileged test user, on Debian
//! bookworm minbase bases made with debootstrap: amd64 natively, arm64 with
//! `debootstrap --arch=arm64` (its second stage under the QEMU user emulator), both cached per
//! machine under /var/tmp (support/runas/debootstrap.rs) and imported per platform
//! (`kiln import --platform`), joined with `kiln index create`. Each image is run by podman
//! with `--arch` and makes the family's checks of the minimal variant (family.rs's
//! `check_variant`: uid 1000, /tmp 1777 and writable), plus `uname -m`. Needs Debian's archive,
//! the emulator, debootstrap and podman: without them it skips, or fails under `CI=true`.
use std::io::Read;

use crate::bake::copy_variants;
use crate::family::package_registries_reachable;
use crate::multiarch::{emulator_registered, podman_run_arch, SERIAL};
use crate::support::runas::{blob_views, debootstrap, layer_entries, layout_layers, KilnAs, Who};
use crate::support::{assert_success, need};

/// The smoke check of the minimal variant in one container: the machine, then the checks
/// scripts/build-family.sh makes of every variant (uid 1000, /tmp 1777 and writable by it),
/// and the working directory the Dockerfile sets.
const CHECK: &str = "uname -m; echo \"uid $(id -u)\"; echo \"tmp $(stat -c %a /tmp)\"; \
                     touch /tmp/kiln-check && echo 'tmp writable'; pwd";

/// `e_machine` of the ELF file at `path` in the last of `layers` that holds it (0x3e x86-64,
/// 0xb7 AArch64).
fn elf_machine(layers: &[Vec<u8>], path: &str) -> Option<u16> {
    let mut found = None;
    for blob in layers {
        let raw = blob_views(blob).pop().unwrap();
        for e in tar::Archive::new(&raw[..]).entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_string_lossy().trim_start_matches("./") == path {
                let mut head = [0u8; 20];
                e.read_exact(&mut head).unwrap();
                assert_eq!(&head[..4], b"\x7fELF", "{path} is not an ELF file");
                found = Some(u16::from_le_bytes([head[18], head[19]]));
            }
        }
    }
    found
}

#[test]
fn minimal_builds_for_amd64_and_arm64_on_debootstrap_bases_as_an_unprivileged_user() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(k) = KilnAs::new(Who::User) else {
        return;
    };
    if !emulator_registered() || !need("podman") || !package_registries_reachable() {
        return;
    }
    let Some(amd64) = debootstrap::rootfs_tarball() else {
        return;
    };
    let Some(arm64) = debootstrap::foreign_rootfs_tarball("arm64") else {
        return;
    };
    for (arch, tar) in [("amd64", &amd64), ("arm64", &arm64)] {
        k.ok(&[
            "import",
            tar.to_str().unwrap(),
            "-t",
            &format!("debian-{arch}"),
            "--platform",
            &format!("linux/{arch}"),
        ]);
    }
    k.ok(&[
        "index",
        "create",
        "-t",
        "debian-base:bookworm",
        "debian-amd64",
        "debian-arm64",
    ]);
    let ctx = k.path("ctx");
    copy_variants(&ctx);
    k.give(&ctx);
    let dockerfile = ctx.join("Dockerfile.minimal");
    let common = |platform: &str| -> Vec<String> {
        vec![
            "build".into(),
            ctx.display().to_string(),
            "-f".into(),
            dockerfile.display().to_string(),
            "--platform".into(),
            platform.into(),
            "--build-arg".into(),
            "BASE=debian-base:bookworm".into(),
            "--build-arg".into(),
            "VERSION=0.1.0".into(),
        ]
    };
    let out = k
        .cmd_progress("plain")
        .args(common("linux/amd64,linux/arm64"))
        .args(["-t", "minimal"])
        .output()
        .unwrap();
    assert_success(
        &out,
        &"kiln build --platform linux/amd64,linux/arm64 of Dockerfile.minimal",
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("linux/arm64 runs under emulation: qemu-aarch64"),
        "{log}"
    );
    // One index listing both platforms, in order.
    let index_digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let hex = index_digest.strip_prefix("sha256:").unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(k.path("store/blobs/sha256").join(hex)).unwrap())
            .unwrap();
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
    for (arch, machine) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        // The platform's image again (every step a cache hit), as an archive for podman and a
        // layout to read its layers.
        let archive = k.path(&format!("out/minimal-{arch}.oci.tar"));
        let layout = k.path("out/layout");
        let mut args = common(&format!("linux/{arch}"));
        args.extend([
            "-o".into(),
            format!("oci-archive:{}", archive.display()),
            "-o".into(),
            format!("oci:{}:{arch}", layout.display()),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let digest = k.ok(&args);
        assert!(
            listed.contains(&(arch.to_string(), digest.trim().to_string())),
            "{digest} is not the index's {arch} image: {listed:?}"
        );
        // What the RUN steps made (the user's home, /workspace), and no trace of the emulator.
        let built: Vec<String> = layout_layers(&layout, arch)
            .iter()
            .skip(1)
            .flat_map(|l| layer_entries(l).into_iter().map(|e| e.path))
            .collect();
        for want in ["home/sandbox/.bashrc", "workspace"] {
            assert!(
                built.iter().any(|p| p == want),
                "{arch}: no {want} in {built:?}"
            );
        }
        assert!(
            !built.iter().any(|p| p.contains("qemu")),
            "{arch}: an emulator path in the layers"
        );
        assert_eq!(
            elf_machine(&layout_layers(&layout, arch), "usr/bin/bash"),
            Some(if arch == "amd64" { 0x3e } else { 0xb7 }),
            "{arch}: the ELF machine of the image's bash"
        );
        let said = podman_run_arch(
            &k.path(&format!("podman-{arch}")),
            &archive,
            arch,
            &["bash", "-c", CHECK],
        );
        assert_eq!(
            said,
            format!("{machine}\nuid 1000\ntmp 1777\ntmp writable\n/workspace\n"),
            "{arch}"
        );
    }
}
