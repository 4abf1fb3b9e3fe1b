//! Foreign-platform RUN steps: which `binfmt_misc` handler (a QEMU user emulator, registered by
//! Debian's `qemu-user-static` + `binfmt-support`) the kernel will use to execute a program of
//! another architecture, read from `/proc/sys/fs/binfmt_misc`.
//!
//! The kernel picks a handler by matching the first bytes of the file it executes against each
//! enabled entry's `magic` under its `mask`, at `offset` (Documentation/admin-guide/binfmt-misc.rst).
//! A target platform's ELF header ([`elf_header`]: `e_ident`, `e_type`, `e_machine`) is matched
//! the same way here, for an executable and a position-independent one.
//!
//! A handler with the `F` (fix-binary) flag had its interpreter opened by the kernel at
//! registration, so it runs in any mount namespace (a rootless step's root included) and needs
//! nothing. Without `F`, the kernel opens the interpreter by its path *in the step's root*, so
//! [`Emulator::binds`] gives the read-only bind mounts that put it there; the sandbox creates
//! their mount points as stubs and removes them afterwards, so they never reach the layer.
//! BuildKit relies on the same kernel mechanism (its executor runs foreign binaries through the
//! handlers `tonistiigi/binfmt` installs with `F`, and checks for them by running a test binary
//! per architecture in `util/archutil`); kiln reads the registration instead, which also tells
//! what a handler without `F` needs.
use std::path::{Path, PathBuf};

use crate::oci::Platform;

use super::{Mount, MountKind};

/// Where the kernel's `binfmt_misc` file system is mounted.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// One registered `binfmt_misc` entry (a magic-matching one; extension entries are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// The entry's name (its file under the `binfmt_misc` directory), e.g. `qemu-aarch64`.
    pub name: String,
    /// Whether it is enabled.
    pub enabled: bool,
    /// The interpreter the kernel runs, a path on the host (or in the step's root without `F`).
    pub interpreter: PathBuf,
    /// Its flags (`P`, `O`, `C`, `F`).
    pub flags: String,
    /// Where in the file the magic starts.
    pub offset: usize,
    /// The magic bytes.
    pub magic: Vec<u8>,
    /// The mask applied to the file's bytes before comparing (all ones when none was given).
    pub mask: Vec<u8>,
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Handler {
    /// Parses the text of `/proc/sys/fs/binfmt_misc/NAME`; `None` for an extension entry or
    /// text this parser does not understand (the kernel's format: `enabled|disabled`,
    /// `interpreter PATH`, `flags: FLAGS`, `offset N`, `magic HEX`, optionally `mask HEX`).
    pub fn parse(name: &str, text: &str) -> Option<Handler> {
        let mut h = Handler {
            name: name.to_string(),
            enabled: false,
            interpreter: PathBuf::new(),
            flags: String::new(),
            offset: 0,
            magic: Vec::new(),
            mask: Vec::new(),
        };
        for line in text.lines() {
            let line = line.trim_end();
            if line == "enabled" {
                h.enabled = true;
            } else if let Some(p) = line.strip_prefix("interpreter ") {
                h.interpreter = PathBuf::from(p);
            } else if let Some(f) = line.strip_prefix("flags:") {
                h.flags = f.trim().to_string();
            } else if let Some(o) = line.strip_prefix("offset ") {
                h.offset = o.trim().parse().ok()?;
            } else if let Some(m) = line.strip_prefix("magic ") {
                h.magic = unhex(m.trim())?;
            } else if let Some(m) = line.strip_prefix("mask ") {
                h.mask = unhex(m.trim())?;
            }
        }
        if h.magic.is_empty() || !h.interpreter.is_absolute() {
            return None;
        }
        if h.mask.is_empty() {
            h.mask = vec![0xff; h.magic.len()];
        }
        (h.mask.len() == h.magic.len()).then_some(h)
    }

    /// Whether the kernel opened the interpreter at registration (`F`): it then runs in any
    /// mount namespace.
    pub fn fix_binary(&self) -> bool {
        self.flags.contains('F')
    }

    /// Whether a file starting with `header` is run by this handler (ignoring `enabled`).
    pub fn matches(&self, header: &[u8]) -> bool {
        let Some(bytes) = header.get(self.offset..self.offset + self.magic.len()) else {
            return false;
        };
        bytes
            .iter()
            .zip(&self.mask)
            .zip(&self.magic)
            .all(|((b, m), want)| b & m == *want)
    }
}

/// Reads every magic entry under `dir` (a `binfmt_misc` mount), sorted by name. An absent or
/// unmounted directory (no `register` file) has none; a globally disabled one (`status` says
/// `disabled`) has them all disabled.
pub fn read_handlers(dir: &Path) -> std::io::Result<Vec<Handler>> {
    if !dir.join("register").exists() {
        return Ok(Vec::new());
    }
    let all_disabled = std::fs::read_to_string(dir.join("status"))
        .map(|s| s.trim() == "disabled")
        .unwrap_or(false);
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "register" || name == "status" {
            continue;
        }
        // An entry can be removed between the listing and the read.
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        if let Some(mut h) = Handler::parse(&name, &text) {
            h.enabled &= !all_disabled;
            out.push(h);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `(EI_CLASS, EI_DATA, e_machine)` of a Linux architecture (OCI name), from the ELF
/// specification and the kernel's `include/uapi/linux/elf-em.h`.
fn elf_machine(arch: &str) -> Option<(u8, u8, u16)> {
    const C32: u8 = 1;
    const C64: u8 = 2;
    const LE: u8 = 1;
    const BE: u8 = 2;
    Some(match arch {
        "amd64" => (C64, LE, 62),
        "386" => (C32, LE, 3),
        "arm64" => (C64, LE, 183),
        "arm" => (C32, LE, 40),
        "ppc64le" => (C64, LE, 21),
        "ppc64" => (C64, BE, 21),
        "s390x" => (C64, BE, 22),
        "riscv64" => (C64, LE, 243),
        "mips64le" => (C64, LE, 8),
        "mips64" => (C64, BE, 8),
        "mipsle" => (C32, LE, 8),
        "mips" => (C32, BE, 8),
        "loong64" => (C64, LE, 258),
        _ => return None,
    })
}

/// The first 20 bytes of a Linux ELF program for `platform` (`e_ident`, `e_type`, `e_machine`),
/// of type `ET_EXEC` (2) or `ET_DYN` (3); `None` for an architecture kiln does not know.
pub fn elf_header(platform: &Platform, e_type: u16) -> Option<[u8; 20]> {
    let (class, data, machine) = elf_machine(&platform.architecture)?;
    let mut h = [0u8; 20];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = data;
    h[6] = 1; // EV_CURRENT
    let (t, m) = if data == 1 {
        (e_type.to_le_bytes(), machine.to_le_bytes())
    } else {
        (e_type.to_be_bytes(), machine.to_be_bytes())
    };
    h[16..18].copy_from_slice(&t);
    h[18..20].copy_from_slice(&m);
    Some(h)
}

/// How a foreign platform's programs run here: the enabled handlers that match its ELF
/// header (the kernel uses one of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emulator {
    /// The platform, as `os/arch[/variant]`.
    pub platform: String,
    /// The matching enabled handlers, sorted by name; never empty.
    pub handlers: Vec<Handler>,
}

impl Emulator {
    /// Read-only binds of the interpreters of the handlers without `F`, at their registered
    /// paths, for the step's root (empty when every handler has `F`). Every matching handler's
    /// is bound: which one the kernel tries first is its registration order, which the
    /// directory listing does not tell.
    pub fn binds(&self) -> Vec<Mount> {
        let mut out: Vec<Mount> = Vec::new();
        for h in self.handlers.iter().filter(|h| !h.fix_binary()) {
            let target = h.interpreter.to_string_lossy().into_owned();
            if out.iter().any(|m| m.target == target) {
                continue;
            }
            out.push(Mount {
                target: target.clone(),
                kind: MountKind::Bind {
                    root: PathBuf::from("/"),
                    source: target.trim_start_matches('/').to_string(),
                    readonly: true,
                },
            });
        }
        out
    }

    /// `NAME (INTERPRETER)` of each handler, for progress output.
    pub fn describe(&self) -> String {
        self.handlers
            .iter()
            .map(|h| format!("{} ({})", h.name, h.interpreter.display()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether this host runs `platform`'s programs without an emulator: the same OS and
/// architecture (the variant is not checked: an arm/v7 host runs arm/v6 programs).
pub fn is_native(platform: &Platform) -> bool {
    let host = Platform::host();
    host.os == platform.os && host.architecture == platform.architecture
}

/// The emulator for `platform` from the handlers registered in `dir`: `Ok(None)` when the host
/// runs its programs natively, `Err(why)` when nothing would run them.
pub fn emulator(dir: &Path, platform: &Platform) -> Result<Option<Emulator>, String> {
    if is_native(platform) {
        return Ok(None);
    }
    if platform.os != "linux" {
        return Err(format!(
            "kiln runs only linux programs, not {}",
            platform.os
        ));
    }
    let headers = match (elf_header(platform, 2), elf_header(platform, 3)) {
        (Some(a), Some(b)) => [a, b],
        _ => {
            return Err(format!(
                "kiln does not know the ELF machine of `{}`",
                platform.architecture
            ))
        }
    };
    if !dir.join("register").exists() {
        return Err(format!("binfmt_misc is not mounted at {}", dir.display()));
    }
    let handlers = read_handlers(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let matching: Vec<Handler> = handlers
        .into_iter()
        .filter(|h| h.enabled && headers.iter().any(|x| h.matches(x)))
        .collect();
    if matching.is_empty() {
        return Err(format!(
            "no enabled handler in {} matches a {platform} ELF header",
            dir.display()
        ));
    }
    Ok(Some(Emulator {
        platform: platform.to_string(),
        handlers: matching,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cat /proc/sys/fs/binfmt_misc/qemu-aarch64` after Debian's `qemu-user-static` 10.0.
    const QEMU_AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";
    /// Debian's `qemu-s390x` (big-endian e_machine).
    const QEMU_S390X: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/s390x-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c4602020100000000000000000000020016\nmask ffffffffffffff00fffffffffffffffffffeffff\n";
    /// Real first 20 bytes: Debian bookworm's `busybox-static` 1.35.0 for arm64 (`ET_EXEC`,
    /// OSABI 3) and amd64, and `/bin/ls` of amd64 coreutils (`ET_DYN`).
    const BUSYBOX_ARM64: &str = "7f454c460201010300000000000000000200b700";
    const BUSYBOX_AMD64: &str = "7f454c4602010103000000000000000002003e00";
    const LS_AMD64: &str = "7f454c4602010100000000000000000003003e00";

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_kernel_format() {
        let h = Handler::parse("qemu-aarch64", QEMU_AARCH64).unwrap();
        assert!(h.enabled && h.fix_binary());
        assert_eq!(
            h.interpreter,
            Path::new("/usr/libexec/qemu-binfmt/aarch64-binfmt-P")
        );
        assert_eq!((h.offset, h.magic.len(), h.mask.len()), (0, 20, 20));
        // An extension entry and a mask of another length are not magic handlers.
        assert!(Handler::parse(
            "jar",
            "enabled\ninterpreter /usr/bin/jexec\nflags: \nextension .jar\n"
        )
        .is_none());
        assert!(Handler::parse(
            "x",
            "enabled\ninterpreter /x\nflags: \noffset 0\nmagic 7f45\nmask ff\n"
        )
        .is_none());
        // No mask: every bit counts.
        let h = Handler::parse(
            "x",
            "disabled\ninterpreter /x\nflags: \noffset 0\nmagic 7f45\n",
        )
        .unwrap();
        assert!(!h.enabled && !h.fix_binary());
        assert_eq!(h.mask, vec![0xff, 0xff]);
    }

    #[test]
    fn real_elf_headers_match_their_handler_only() {
        let aarch64 = Handler::parse("qemu-aarch64", QEMU_AARCH64).unwrap();
        let s390x = Handler::parse("qemu-s390x", QEMU_S390X).unwrap();
        assert!(aarch64.matches(&unhex(BUSYBOX_ARM64).unwrap()));
        assert!(!aarch64.matches(&unhex(BUSYBOX_AMD64).unwrap()));
        assert!(!aarch64.matches(&unhex(LS_AMD64).unwrap()));
        assert!(!s390x.matches(&unhex(BUSYBOX_ARM64).unwrap()));
        // Too short a file never matches.
        assert!(!aarch64.matches(&unhex(BUSYBOX_ARM64).unwrap()[..19]));
        // The synthesized headers agree with the real ones under the handlers' masks.
        for e_type in [2, 3] {
            assert!(aarch64.matches(&elf_header(&p("linux/arm64"), e_type).unwrap()));
            assert!(s390x.matches(&elf_header(&p("linux/s390x"), e_type).unwrap()));
            assert!(!aarch64.matches(&elf_header(&p("linux/amd64"), e_type).unwrap()));
        }
        let exec = elf_header(&p("linux/amd64"), 2).unwrap();
        let real = unhex(BUSYBOX_AMD64).unwrap();
        // Equal but for EI_OSABI (byte 7), which the handlers mask out.
        assert_eq!(exec[..7], real[..7]);
        assert_eq!(exec[8..], real[8..]);
        assert_eq!(
            elf_header(&p("linux/amd64"), 3).unwrap()[..],
            unhex(LS_AMD64).unwrap()[..]
        );
        assert!(elf_header(&Platform::linux("sparc64"), 2).is_none());
    }

    fn registry(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("register"), "").unwrap();
        std::fs::write(d.path().join("status"), "enabled\n").unwrap();
        for (n, t) in entries {
            std::fs::write(d.path().join(n), t).unwrap();
        }
        d
    }

    #[test]
    fn finds_the_emulator_and_binds_only_interpreters_without_f() {
        if Platform::host().architecture != "amd64" {
            return; // the platforms below are foreign on an amd64 host
        }
        let no_f = QEMU_AARCH64
            .replace("flags: PF", "flags: P")
            .replace("aarch64-binfmt-P", "other");
        let d = registry(&[("qemu-aarch64", QEMU_AARCH64), ("qemu-s390x", QEMU_S390X)]);
        assert_eq!(emulator(d.path(), &p("linux/amd64")).unwrap(), None);
        let e = emulator(d.path(), &p("linux/arm64")).unwrap().unwrap();
        assert_eq!(e.handlers.len(), 1);
        assert!(e.binds().is_empty(), "F: nothing to bind");
        let d = registry(&[("qemu-aarch64", QEMU_AARCH64), ("z-aarch64", &no_f)]);
        let e = emulator(d.path(), &p("linux/arm64")).unwrap().unwrap();
        assert_eq!(e.handlers.len(), 2);
        let binds = e.binds();
        assert_eq!(binds.len(), 1);
        assert_eq!(binds[0].target, "/usr/libexec/qemu-binfmt/other");
        assert!(
            matches!(&binds[0].kind, MountKind::Bind { root, source, readonly: true }
            if root == Path::new("/") && source == "usr/libexec/qemu-binfmt/other")
        );
        // Disabled: entry by entry, or all at once.
        let d = registry(&[("qemu-aarch64", &QEMU_AARCH64.replace("enabled", "disabled"))]);
        let why = emulator(d.path(), &p("linux/arm64")).unwrap_err();
        assert!(why.contains("no enabled handler"), "{why}");
        let d = registry(&[("qemu-aarch64", QEMU_AARCH64)]);
        std::fs::write(d.path().join("status"), "disabled\n").unwrap();
        assert!(emulator(d.path(), &p("linux/arm64")).is_err());
        // Not mounted.
        let empty = tempfile::tempdir().unwrap();
        let why = emulator(empty.path(), &p("linux/arm64")).unwrap_err();
        assert!(why.contains("not mounted"), "{why}");
        assert!(emulator(d.path(), &Platform::linux("sparc64")).is_err());
    }
}
