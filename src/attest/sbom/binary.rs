//! Packages compiled into binaries:
//! - Go's build info (Go 1.18 and later): the `\xff Go buildinf:` header (16-byte aligned, 32
//!   bytes) followed by two varint-prefixed strings, the Go version and the module info, whose
//!   16-byte sentinels are stripped; the module info's `path`/`mod`/`dep`/`=>` lines name the
//!   main module and each dependency (Go's `debug/buildinfo/buildinfo.go` and
//!   `runtime/debug/mod.go` `ParseBuildInfo`; syft's `pkg/cataloger/golang/parse_go_binary.go`).
//!   Binaries of Go before 1.18 keep pointers to the strings instead: a warning, not read.
//! - `cargo auditable` data: the ELF section `.dep-v0`, zlib-compressed JSON
//!   `{"packages":[{"name","version","source","kind",…}]}` (rust-secure-code/cargo-auditable,
//!   `auditable-serde`); build-time dependencies (`"kind":"build"`) are not in the binary and
//!   are left out.
use std::io::Read;

use super::{Ecosystem, Found};

const GO_MAGIC: &[u8] = b"\xff Go buildinf:";
/// The largest decompressed `.dep-v0` document.
const MAX_AUDIT_JSON: u64 = 8 * 1024 * 1024;

/// Whether `head` starts an ELF file.
pub fn is_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

/// The packages a binary embeds; `Ok(empty)` for a binary that embeds none.
pub fn parse(bytes: &[u8]) -> Result<Vec<Found>, String> {
    let mut out = go(bytes)?;
    if let Some(section) = elf_section(bytes, ".dep-v0") {
        out.extend(cargo_auditable(section)?);
    }
    Ok(out)
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    for (i, &c) in b.iter().enumerate().take(10) {
        x |= u64::from(c & 0x7f) << (7 * i);
        if c < 0x80 {
            return Some((x, i + 1));
        }
    }
    None
}

fn varint_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (n, k) = uvarint(b)?;
    let n = usize::try_from(n).ok()?;
    let rest = b.get(k..)?;
    (rest.len() >= n).then(|| rest.split_at(n))
}

fn go(bytes: &[u8]) -> Result<Vec<Found>, String> {
    for pos in memchr::memmem::find_iter(bytes, GO_MAGIC) {
        if pos % 16 != 0 {
            continue;
        }
        let Some(hdr) = bytes.get(pos..pos + 32) else {
            continue;
        };
        if hdr[15] & 2 == 0 {
            return Err(
                "a Go binary older than Go 1.18 (pointer-based build info): not read".into(),
            );
        }
        let Some((vers, rest)) = varint_string(&bytes[pos + 32..]) else {
            return Err("Go build info: the version string is truncated".into());
        };
        let Some((modinfo, _)) = varint_string(rest) else {
            return Err("Go build info: the module info is truncated".into());
        };
        let vers = String::from_utf8_lossy(vers);
        let n = modinfo.len();
        let modinfo = if n >= 33 && modinfo[n - 17] == b'\n' {
            &modinfo[16..n - 16]
        } else {
            &[][..]
        };
        return Ok(go_modules(&String::from_utf8_lossy(modinfo), &vers));
    }
    Ok(Vec::new())
}

/// The modules of Go's module info text, replacements (`=>`) applied; the standard library as
/// `stdlib` at the Go version, as syft reports it.
fn go_modules(text: &str, go_version: &str) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    let mk = |name: &str, version: &str| Found {
        ecosystem: Ecosystem::Golang,
        name: name.to_string(),
        version: version.to_string(),
        arch: None,
        license: None,
        source: None,
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["mod", path, version, ..] | ["dep", path, version, ..] if !path.is_empty() => {
                out.push(mk(path, version));
            }
            ["=>", path, version, ..] if !path.is_empty() => {
                if let Some(last) = out.last_mut() {
                    *last = mk(path, version);
                }
            }
            _ => {}
        }
    }
    if !go_version.is_empty() && go_version.starts_with("go") {
        out.push(mk("stdlib", go_version));
    }
    out
}

/// The bytes of the section named `name` of an ELF file, every offset checked.
fn elf_section<'a>(b: &'a [u8], name: &str) -> Option<&'a [u8]> {
    if !is_elf(b) || b.len() < 64 {
        return None;
    }
    let wide = match b[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let le = b[5] == 1;
    let rd = |off: usize, n: usize| -> Option<u64> {
        let s = b.get(off..off.checked_add(n)?)?;
        let mut v = 0u64;
        for i in 0..n {
            let byte = if le { s[n - 1 - i] } else { s[i] };
            v = (v << 8) | u64::from(byte);
        }
        Some(v)
    };
    let us = |v: u64| usize::try_from(v).ok();
    let (shoff, shentsize, shnum, shstrndx) = if wide {
        (
            us(rd(0x28, 8)?)?,
            us(rd(0x3a, 2)?)?,
            us(rd(0x3c, 2)?)?,
            us(rd(0x3e, 2)?)?,
        )
    } else {
        (
            us(rd(0x20, 4)?)?,
            us(rd(0x2e, 2)?)?,
            us(rd(0x30, 2)?)?,
            us(rd(0x32, 2)?)?,
        )
    };
    if shentsize < if wide { 64 } else { 40 } || shnum > 65_535 {
        return None;
    }
    // (name offset, file offset, size) of section `i`.
    let sec = |i: usize| -> Option<(usize, usize, usize)> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        if wide {
            Some((us(rd(h, 4)?)?, us(rd(h + 0x18, 8)?)?, us(rd(h + 0x20, 8)?)?))
        } else {
            Some((us(rd(h, 4)?)?, us(rd(h + 0x10, 4)?)?, us(rd(h + 0x14, 4)?)?))
        }
    };
    let (_, stroff, strsize) = sec(shstrndx)?;
    let strtab = b.get(stroff..stroff.checked_add(strsize)?)?;
    for i in 0..shnum {
        let (n, off, size) = sec(i)?;
        let Some(s) = strtab.get(n..) else { continue };
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        if &s[..end] == name.as_bytes() {
            return b.get(off..off.checked_add(size)?);
        }
    }
    None
}

fn cargo_auditable(section: &[u8]) -> Result<Vec<Found>, String> {
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(section)
        .take(MAX_AUDIT_JSON + 1)
        .read_to_end(&mut json)
        .map_err(|e| format!("cargo auditable data (.dep-v0): cannot inflate: {e}"))?;
    if json.len() as u64 > MAX_AUDIT_JSON {
        return Err(format!(
            "cargo auditable data (.dep-v0) inflates past {MAX_AUDIT_JSON} bytes"
        ));
    }
    #[derive(serde::Deserialize)]
    struct Audit {
        packages: Vec<Pkg>,
    }
    #[derive(serde::Deserialize)]
    struct Pkg {
        name: String,
        version: String,
        #[serde(default)]
        kind: Option<String>,
    }
    let a: Audit = serde_json::from_slice(&json)
        .map_err(|e| format!("cargo auditable data (.dep-v0): invalid JSON: {e}"))?;
    Ok(a.packages
        .into_iter()
        .filter(|p| p.kind.as_deref() != Some("build") && !p.name.is_empty())
        .map(|p| Found {
            ecosystem: Ecosystem::Cargo,
            name: p.name,
            version: p.version,
            arch: None,
            license: None,
            source: None,
        })
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A Go 1.18+ build info blob as the linker writes it, at a 16-byte-aligned offset.
    pub(crate) fn go_blob(modinfo: &str) -> Vec<u8> {
        let mut b = b"\x7fELF".to_vec();
        b.resize(64, 0);
        b.extend_from_slice(GO_MAGIC);
        b.push(8);
        b.push(2);
        b.resize(64 + 32, 0);
        let vers = b"go1.22.1";
        b.push(vers.len() as u8);
        b.extend_from_slice(vers);
        let mut m = vec![b'x'; 16];
        m.extend_from_slice(modinfo.as_bytes());
        m.push(b'\n');
        m.extend_from_slice(&[b'y'; 16]);
        let mut n = m.len();
        while n >= 0x80 {
            b.push((n as u8) | 0x80);
            n >>= 7;
        }
        b.push(n as u8);
        b.extend_from_slice(&m);
        b
    }

    /// A minimal ELF64 file with one named section holding `data`.
    pub(crate) fn elf_with_section(name: &str, data: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        let data_off = b.len();
        b.extend_from_slice(data);
        let strtab_off = b.len();
        let strtab = format!("\0{name}\0.shstrtab\0");
        b.extend_from_slice(strtab.as_bytes());
        while b.len() % 8 != 0 {
            b.push(0);
        }
        let shoff = b.len();
        let mut sh = |name_off: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[0..4].copy_from_slice(&name_off.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            b.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, data_off, data.len());
        sh(name.len() as u32 + 2, strtab_off, strtab.len());
        b[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        b[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        b[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        b[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        b
    }

    pub(crate) fn zlib(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn go_build_info_names_modules_with_replacements() {
        let b = go_blob("path\texample.com/app\nmod\texample.com/app\t(devel)\t\ndep\tgithub.com/a/b\tv1.2.3\th1:x=\ndep\tgolang.org/x/sys\tv0.1.0\th1:y=\n=>\tgolang.org/x/sys\tv0.2.0\th1:z=\nbuild\t-compiler=gc");
        let p = parse(&b).unwrap();
        let names: Vec<(&str, &str)> = p
            .iter()
            .map(|f| (f.name.as_str(), f.version.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("example.com/app", "(devel)"),
                ("github.com/a/b", "v1.2.3"),
                ("golang.org/x/sys", "v0.2.0"),
                ("stdlib", "go1.22.1")
            ]
        );
    }

    #[test]
    fn hostile_go_blobs_are_errors_not_panics() {
        let mut b = go_blob("mod\tx\tv1\t\n");
        b.truncate(64 + 34);
        assert!(parse(&b).is_err());
        let mut b = go_blob("mod\tx\tv1\t\n");
        b[64 + 15] = 0;
        assert!(parse(&b).unwrap_err().contains("1.18"));
        // A length past the end.
        let mut b = go_blob("");
        b.truncate(64 + 32);
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(parse(&b).is_err());
    }

    #[test]
    fn cargo_auditable_section_is_read_and_build_deps_left_out() {
        let json = br#"{"packages":[{"name":"app","version":"0.1.0","source":"local","root":true},{"name":"serde","version":"1.0.200","source":"crates.io"},{"name":"cc","version":"1.0.0","source":"crates.io","kind":"build"}]}"#;
        let elf = elf_with_section(".dep-v0", &zlib(json));
        let p = parse(&elf).unwrap();
        let names: Vec<&str> = p.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["app", "serde"]);
        assert_eq!(p[1].ecosystem, Ecosystem::Cargo);
        // A zip bomb is cut at the cap; garbage is an error.
        let bomb = zlib(&vec![b' '; (MAX_AUDIT_JSON + 10) as usize]);
        assert!(parse(&elf_with_section(".dep-v0", &bomb))
            .unwrap_err()
            .contains("past"));
        assert!(parse(&elf_with_section(".dep-v0", b"junk")).is_err());
        // Section headers pointing outside the file.
        let mut bad = elf.clone();
        bad[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(&bad).unwrap().is_empty());
    }
}
