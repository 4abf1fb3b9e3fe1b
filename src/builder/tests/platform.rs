//! Foreign-platform RUN steps: the emulator the sandbox reports for a stage's platform (a
//! `binfmt_misc` directory the fake reads, as the real sandbox reads the kernel's), refused
//! before any step when there is none, its interpreter bound when the handler lacks `F`; and a
//! `FROM --platform=$BUILDPLATFORM` stage shared by every target platform through the cache.
use crate::oci::Platform;
use crate::sandbox::{FakeSandbox, MountKind};

use super::{err_text, Fixture};

/// Debian's `qemu-aarch64` entry (`flags: PF`), with `flags` and interpreter `interp`.
fn aarch64_entry(flags: &str, interp: &str) -> String {
    format!("enabled\ninterpreter {interp}\nflags: {flags}\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n")
}

/// A fixture whose fake reads `entries` as its `binfmt_misc` directory; `None` when the host
/// is not amd64 (the tests use linux/arm64 as the foreign platform).
fn fixture(entries: &[(&str, String)]) -> Option<(Fixture, tempfile::TempDir)> {
    if Platform::host().architecture != "amd64" {
        return None;
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("register"), "").unwrap();
    std::fs::write(d.path().join("status"), "enabled\n").unwrap();
    for (n, t) in entries {
        std::fs::write(d.path().join(n), t).unwrap();
    }
    let mut f = Fixture::new();
    f.fake = FakeSandbox::with_binfmt(d.path());
    Some((f, d))
}

#[test]
fn a_foreign_run_without_an_emulator_fails_before_any_step() {
    let Some((f, _d)) = fixture(&[]) else { return };
    let e =
        err_text(f.build("FROM base\nRUN native\nFROM --platform=linux/arm64 base\nRUN foreign\n"));
    for want in [
        "Dockerfile:4:1",
        "RUN steps for linux/arm64 cannot run on this linux/amd64 host",
        "no enabled handler",
        "qemu-user-static binfmt-support",
        "kiln index create",
    ] {
        assert!(e.contains(want), "{want:?} not in {e}");
    }
    assert!(f.specs().is_empty(), "no step ran");
}

#[test]
fn a_handler_without_f_has_its_interpreter_bound_read_only_into_foreign_steps_only() {
    let interp = "/usr/bin/env"; // any host file: the fake only records the bind
    let Some((f, _d)) = fixture(&[("kiln-aarch64", aarch64_entry("P", interp))]) else {
        return;
    };
    f.build("FROM base AS a\nRUN native\nFROM --platform=linux/arm64 base\nCOPY --from=a /etc/passwd /p\nRUN foreign\n")
        .unwrap();
    let specs = f.specs();
    assert_eq!(specs.len(), 2);
    assert!(specs[0].mounts.is_empty(), "{:?}", specs[0].mounts);
    assert_eq!(specs[1].mounts.len(), 1);
    assert_eq!(specs[1].mounts[0].target, interp);
    assert!(matches!(&specs[1].mounts[0].kind,
        MountKind::Bind { root, source, readonly: true } if root.as_os_str() == "/" && source == "usr/bin/env"));
}

#[test]
fn a_handler_with_f_needs_no_bind() {
    let Some((f, _d)) = fixture(&[("qemu-aarch64", aarch64_entry("PF", "/usr/bin/env"))]) else {
        return;
    };
    f.build("FROM --platform=linux/arm64 base\nRUN foreign\n")
        .unwrap();
    assert!(f.specs()[0].mounts.is_empty());
}

#[test]
fn a_build_platform_stage_is_built_once_for_every_target_platform() {
    let Some((f, _d)) = fixture(&[("qemu-aarch64", aarch64_entry("PF", "/usr/bin/env"))]) else {
        return;
    };
    f.dockerfile("FROM --platform=$BUILDPLATFORM base AS tools\nRUN make-tools\nFROM base\nARG TARGETARCH\nCOPY --from=tools /etc/passwd /p\nRUN use-tools $TARGETARCH\n");
    let mut opts = f.opts();
    let amd = f.build_opts(&opts).unwrap();
    opts.platform = "linux/arm64".parse().unwrap();
    let arm = f.build_opts(&opts).unwrap();
    let run = |o: &crate::builder::BuildOutcome, what: &str| {
        o.steps
            .iter()
            .find(|s| s.step.contains(what))
            .cloned()
            .unwrap()
    };
    let (t1, t2) = (run(&amd, "make-tools"), run(&arm, "make-tools"));
    assert!(!t1.cached && t2.cached, "the $BUILDPLATFORM stage ran once");
    assert_eq!(t1.cache_key, t2.cache_key);
    let (u1, u2) = (run(&amd, "use-tools"), run(&arm, "use-tools"));
    assert!(!u2.cached, "the target stage runs per platform");
    assert_ne!(
        u1.cache_key, u2.cache_key,
        "keys include the target platform"
    );
    let argv: Vec<String> = f.specs().iter().map(|s| s.argv.join(" ")).collect();
    assert_eq!(
        argv.iter().filter(|a| a.contains("make-tools")).count(),
        1,
        "{argv:?}"
    );
}
