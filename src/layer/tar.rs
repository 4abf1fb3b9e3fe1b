//! Deterministic tar headers: ustar, plus a PAX extended header only where ustar cannot hold a value;
//! and [`TarGuard`], which bounds what a hostile tar stream can make a reader hold in memory.
//!
//! We build headers ourselves instead of using the `tar` crate's builder: its deterministic mode
//! rewrites uid, gid and mode (wrong for images), and its disk-reading path writes sparse entries
//! that depend on the source filesystem. The layout follows Go's `archive/tar` (what BuildKit and
//! containerd write): ustar with the name split into prefix/name when that fits, PAX otherwise.
use std::io::{self, Read};

use super::entry::{Entry, EntryKind};

pub(crate) const BLOCK: usize = 512;
const MAX_OCTAL_11: u64 = 0o77777777777; // 8 GiB - 1
const MAX_OCTAL_7: u64 = 0o7777777;

/// The bytes that precede an entry's data: optional PAX header + data, then the ustar header.
pub(crate) fn header_bytes(entry: &Entry, mtime: i64, out: &mut Vec<u8>) {
    let mut name = entry.path.clone();
    if matches!(entry.kind, EntryKind::Dir) {
        name.push(b'/');
    }
    let size = entry.data_size();
    let link: &[u8] = match &entry.kind {
        EntryKind::Symlink(t) | EntryKind::Hardlink(t) => t,
        _ => b"",
    };
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let split = split_ustar_name(&name);
    if split.is_none() {
        pax.push(("path".into(), name.clone()));
    }
    if link.len() > 100 {
        pax.push(("linkpath".into(), link.to_vec()));
    }
    if size > MAX_OCTAL_11 {
        pax.push(("size".into(), size.to_string().into_bytes()));
    }
    if u64::from(entry.uid) > MAX_OCTAL_7 {
        pax.push(("uid".into(), entry.uid.to_string().into_bytes()));
    }
    if u64::from(entry.gid) > MAX_OCTAL_7 {
        pax.push(("gid".into(), entry.gid.to_string().into_bytes()));
    }
    for (k, v) in &entry.xattrs {
        pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
    }
    if !pax.is_empty() {
        pax.sort();
        let mut body = Vec::new();
        for (k, v) in &pax {
            pax_record(k, v, &mut body);
        }
        let base = name
            .rsplit(|&b| b == b'/')
            .find(|c| !c.is_empty())
            .unwrap_or(b"");
        let mut pax_name = b"PaxHeaders.0/".to_vec();
        pax_name.extend_from_slice(base);
        pax_name.truncate(100);
        let mut h = [0u8; BLOCK];
        put_bytes(&mut h[0..100], &pax_name);
        put_octal(&mut h[100..108], 0o644);
        put_octal(&mut h[108..116], 0);
        put_octal(&mut h[116..124], 0);
        put_octal(&mut h[124..136], body.len() as u64);
        put_octal(&mut h[136..148], 0);
        h[156] = b'x';
        finish_ustar(&mut h);
        out.extend_from_slice(&h);
        out.extend_from_slice(&body);
        pad(out, body.len() as u64);
    }

    let mut h = [0u8; BLOCK];
    match split {
        Some((prefix, base)) => {
            put_bytes(&mut h[0..100], base);
            put_bytes(&mut h[345..500], prefix);
        }
        None => put_bytes(&mut h[0..100], &name[..name.len().min(100)]),
    }
    put_octal(&mut h[100..108], u64::from(entry.mode & 0o7777));
    put_octal(&mut h[108..116], u64::from(entry.uid).min(MAX_OCTAL_7));
    put_octal(&mut h[116..124], u64::from(entry.gid).min(MAX_OCTAL_7));
    put_octal(&mut h[124..136], size.min(MAX_OCTAL_11));
    put_octal(&mut h[136..148], mtime.max(0) as u64);
    let (flag, dev) = match &entry.kind {
        EntryKind::File { .. } => (b'0', None),
        EntryKind::Hardlink(_) => (b'1', None),
        EntryKind::Symlink(_) => (b'2', None),
        EntryKind::CharDevice { major, minor } => (b'3', Some((*major, *minor))),
        EntryKind::BlockDevice { major, minor } => (b'4', Some((*major, *minor))),
        EntryKind::Dir => (b'5', None),
        EntryKind::Fifo => (b'6', None),
    };
    h[156] = flag;
    put_bytes(&mut h[157..257], &link[..link.len().min(100)]);
    if let Some((major, minor)) = dev {
        put_octal(&mut h[329..337], u64::from(major));
        put_octal(&mut h[337..345], u64::from(minor));
    }
    finish_ustar(&mut h);
    out.extend_from_slice(&h);
}

/// Pads `out` after `len` bytes of data to the next 512-byte boundary.
pub(crate) fn pad(out: &mut Vec<u8>, len: u64) {
    let rem = (len % BLOCK as u64) as usize;
    if rem != 0 {
        out.extend(std::iter::repeat_n(0u8, BLOCK - rem));
    }
}

/// The zero blocks that end an archive.
pub(crate) const END_OF_ARCHIVE: [u8; 2 * BLOCK] = [0; 2 * BLOCK];

/// Splits a name into ustar's prefix (≤155) and name (≤100) at a `/`, as Go's writer does.
fn split_ustar_name(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((b"", name));
    }
    if name.len() > 256 {
        return None;
    }
    // The last byte may be a directory's trailing '/', which must stay in the name part.
    let search_end = name.len() - 1;
    let mut i = name[..search_end].iter().rposition(|&b| b == b'/')?;
    loop {
        let (prefix, rest) = (&name[..i], &name[i + 1..]);
        if rest.len() > 100 || rest.is_empty() {
            return None;
        }
        if prefix.len() <= 155 && !prefix.is_empty() {
            return Some((prefix, rest));
        }
        i = name[..i].iter().rposition(|&b| b == b'/')?;
    }
}

fn pax_record(key: &str, value: &[u8], out: &mut Vec<u8>) {
    // "<len> <key>=<value>\n", where len counts itself.
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while len != base + len.to_string().len() {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn put_bytes(field: &mut [u8], value: &[u8]) {
    field[..value.len()].copy_from_slice(value);
}

/// Octal, zero-padded to the field width minus one, NUL-terminated (Go's formatOctal).
fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

fn finish_ustar(h: &mut [u8; BLOCK]) {
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

/// The most bytes a PAX extended header or a GNU long name or long link member may hold (Go's
/// `archive/tar` limit, `maxSpecialFileSize`). The `tar` crate reads such members whole into
/// memory, so without a bound a gzip-compressed layer of a few megabytes could ask for gigabytes.
pub const MAX_SPECIAL_MEMBER: u64 = 1 << 20;
/// The most GNU sparse extension blocks one member may have (each becomes bookkeeping in memory).
pub const MAX_SPARSE_EXTENSION_BLOCKS: u64 = 2048;

/// A reader in front of a tar stream that follows its member headers and fails, before the `tar`
/// crate would buffer them, on members it would hold in memory beyond a bound: PAX extended headers
/// and GNU long names or links over [`MAX_SPECIAL_MEMBER`] bytes, GNU sparse members with more than
/// [`MAX_SPARSE_EXTENSION_BLOCKS`] extension blocks. It reads the stream exactly as `tar` 0.4 does
/// (the same header parsing, PAX `size` overriding the header's for the next member, sparse
/// extension blocks before the data), and passes every byte through unchanged.
pub struct TarGuard<R> {
    inner: R,
    header: Box<[u8; BLOCK]>,
    header_len: usize,
    /// Bytes of member data (and padding) to pass before the next header.
    skip: u64,
    /// Unpadded data bytes of the current PAX header still to be collected.
    pax_left: u64,
    pax: Vec<u8>,
    /// A PAX header was read and applies to the next member that is not an extension header.
    pending_pax: Option<Vec<u8>>,
    /// GNU sparse extension blocks are being read; the data that follows them, padded.
    sparse: Option<(u64, u64)>,
    /// The path of the member being read, for errors.
    name: String,
    /// The end-of-archive block was seen, or the stream is one `tar` rejects anyway.
    done: bool,
}

impl<R: Read> TarGuard<R> {
    /// Guards the tar stream read from `inner`.
    pub fn new(inner: R) -> TarGuard<R> {
        TarGuard {
            inner,
            header: Box::new([0; BLOCK]),
            header_len: 0,
            skip: 0,
            pax_left: 0,
            pax: Vec::new(),
            pending_pax: None,
            sparse: None,
            name: String::new(),
            done: false,
        }
    }

    fn refuse(&self, what: &str, size: u64, limit: u64) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "member `{}` is {what} of {size} bytes; at most {limit} are accepted",
                self.name
            ),
        )
    }

    fn observe(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() && !self.done {
            if self.skip > 0 {
                let n = (self.skip.min(data.len() as u64)) as usize;
                if self.pax_left > 0 {
                    let m = (self.pax_left.min(n as u64)) as usize;
                    self.pax.extend_from_slice(&data[..m]);
                    self.pax_left -= m as u64;
                    if self.pax_left == 0 {
                        self.pending_pax = Some(std::mem::take(&mut self.pax));
                    }
                }
                self.skip -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (BLOCK - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            data = &data[n..];
            if self.header_len == BLOCK {
                self.header_len = 0;
                self.block()?;
            }
        }
        Ok(())
    }

    /// One whole 512-byte block where a header (or a sparse extension block) is due.
    fn block(&mut self) -> io::Result<()> {
        if let Some((blocks, data)) = &mut self.sparse {
            *blocks += 1;
            if *blocks > MAX_SPARSE_EXTENSION_BLOCKS {
                let n = *blocks;
                return Err(self.refuse(
                    "a sparse file with more extension blocks than allowed, at least",
                    n * BLOCK as u64,
                    MAX_SPARSE_EXTENSION_BLOCKS * BLOCK as u64,
                ));
            }
            // `isextended` of a GNU sparse extension block.
            if self.header[504] == 0 {
                self.skip = *data;
                self.sparse = None;
            }
            return Ok(());
        }
        if self.header.iter().all(|&b| b == 0) {
            self.done = true; // `tar` stops at the first zero block
            return Ok(());
        }
        let h = ::tar::Header::from_byte_slice(&self.header[..]);
        self.name = String::from_utf8_lossy(&h.path_bytes()).into_owned(); // ≤ 256 bytes
        let et = h.entry_type();
        let extension = et.is_gnu_longname()
            || et.is_gnu_longlink()
            || et.is_pax_local_extensions()
            || et.is_pax_global_extensions();
        let header_size = match h.entry_size() {
            Ok(s) => s,
            Err(_) => {
                self.done = true; // `tar` fails on this header itself
                return Ok(());
            }
        };
        let size = match self.pending_pax.as_deref().filter(|_| !extension) {
            Some(pax) => pax_size(pax).unwrap_or(header_size),
            None => header_size,
        };
        let Some(padded) = size
            .checked_add(BLOCK as u64 - 1)
            .map(|s| s & !(BLOCK as u64 - 1))
        else {
            self.done = true; // `tar`: "size overflow"
            return Ok(());
        };
        let recognized = h.as_gnu().is_some() || h.as_ustar().is_some();
        let buffered = recognized
            && (et.is_gnu_longname() || et.is_gnu_longlink() || et.is_pax_local_extensions());
        if buffered {
            if size > MAX_SPECIAL_MEMBER {
                let what = if et.is_pax_local_extensions() {
                    "a PAX extended header"
                } else {
                    "a GNU long name"
                };
                return Err(self.refuse(what, size, MAX_SPECIAL_MEMBER));
            }
            if et.is_pax_local_extensions() {
                self.pax.clear();
                self.pax_left = size;
                if size == 0 {
                    self.pending_pax = Some(Vec::new());
                }
            }
            self.skip = padded;
            return Ok(());
        }
        // A member: the PAX header, if any, was for it.
        self.pending_pax = None;
        if et.is_gnu_sparse() && h.as_gnu().is_some_and(|g| g.is_extended()) {
            self.sparse = Some((0, padded));
            return Ok(());
        }
        self.skip = padded;
        Ok(())
    }
}

/// The PAX `size` record, read as `tar` 0.4 reads it (the first `size` key; nothing if a record
/// before it is malformed or its value is not a number).
fn pax_size(pax: &[u8]) -> Option<u64> {
    for ext in ::tar::PaxExtensions::new(pax) {
        let ext = ext.ok()?;
        if ext.key() != Ok("size") {
            continue;
        }
        return ext.value().ok()?.parse::<u64>().ok();
    }
    None
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::entry::Entry;

    fn read_back(bytes: &[u8]) -> Vec<(String, u64, Vec<u8>)> {
        let mut a = ::tar::Archive::new(bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e.link_name_bytes().map(|l| l.to_vec()).unwrap_or_default();
                (
                    String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                    e.header().size().unwrap(),
                    link,
                )
            })
            .collect()
    }

    #[test]
    fn long_names_use_prefix_or_pax_and_read_back() {
        let long_dir = "d".repeat(120);
        let very_long = "x".repeat(300);
        let mut out = Vec::new();
        for e in [
            Entry::dir(long_dir.clone(), 0o755),
            Entry::file(format!("{long_dir}/f"), 0o644, b"hi".to_vec()),
            Entry::file(very_long.clone(), 0o644, Vec::new()),
            Entry::symlink("l", "t".repeat(150)),
        ] {
            header_bytes(&e, 0, &mut out);
            if let EntryKind::File {
                source: crate::layer::FileSource::Bytes(b),
                ..
            } = &e.kind
            {
                out.extend_from_slice(b);
                pad(&mut out, b.len() as u64);
            }
        }
        out.extend_from_slice(&END_OF_ARCHIVE);
        let got = read_back(&out);
        assert_eq!(got[0].0, format!("{long_dir}/"));
        assert_eq!(got[1].0, format!("{long_dir}/f"));
        assert_eq!(got[1].1, 2);
        assert_eq!(got[2].0, very_long);
        assert_eq!(got[3].2, "t".repeat(150).into_bytes());
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record("path", &[b'a'; 93], &mut out);
        let text = String::from_utf8(out).unwrap();
        let (len, _) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), text.len());
    }

    fn raw_header(name: &[u8], kind: u8, size: u64) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        put_bytes(&mut h[0..100], name);
        put_octal(&mut h[100..108], 0o644);
        put_octal(&mut h[108..116], 0);
        put_octal(&mut h[116..124], 0);
        put_octal(&mut h[124..136], size);
        put_octal(&mut h[136..148], 0);
        h[156] = kind;
        finish_ustar(&mut h);
        h
    }

    fn read_all(bytes: &[u8]) -> std::io::Result<Vec<String>> {
        let mut a = ::tar::Archive::new(TarGuard::new(bytes));
        let mut names = Vec::new();
        for e in a.entries()? {
            let mut e = e?;
            names.push(String::from_utf8_lossy(&e.path_bytes()).into_owned());
            std::io::copy(&mut e, &mut std::io::sink())?;
        }
        Ok(names)
    }

    /// The guard follows a PAX `size` that overrides the header's: here the data is 1536 zero
    /// bytes, which a guard reading the header's size (0) would take for the end of the archive,
    /// missing the oversized PAX header after it.
    #[test]
    fn the_guard_follows_pax_sizes_and_refuses_oversized_special_members() {
        let mut t = Vec::new();
        let mut body = Vec::new();
        pax_record("size", b"1536", &mut body);
        t.extend_from_slice(&raw_header(b"PaxHeaders/f", b'x', body.len() as u64));
        t.extend_from_slice(&body);
        pad(&mut t, body.len() as u64);
        t.extend_from_slice(&raw_header(b"f", b'0', 0));
        t.extend_from_slice(&[0u8; 1536]);
        let ok = {
            let mut ok = t.clone();
            ok.extend_from_slice(&END_OF_ARCHIVE);
            ok
        };
        assert_eq!(read_all(&ok).unwrap(), ["f"]);
        t.extend_from_slice(&raw_header(b"PaxHeaders/big", b'x', MAX_SPECIAL_MEMBER + 1));
        t.extend_from_slice(&[b'a'; 4096]);
        let e = read_all(&t).unwrap_err().to_string();
        assert!(
            e.contains("PaxHeaders/big") && e.contains("PAX extended header"),
            "{e}"
        );
        // A GNU long name at the limit is fine; one byte more is refused.
        for (size, fine) in [(MAX_SPECIAL_MEMBER, true), (MAX_SPECIAL_MEMBER + 1, false)] {
            let mut t = raw_header(b"././@LongLink", b'L', size).to_vec();
            let mut name = vec![b'n'; size as usize - 1];
            name.push(0);
            t.extend_from_slice(&name);
            pad(&mut t, size);
            t.extend_from_slice(&raw_header(b"short", b'0', 0));
            t.extend_from_slice(&END_OF_ARCHIVE);
            let r = read_all(&t);
            assert_eq!(r.is_ok(), fine, "{size}: {:?}", r.map(|n| n.len()));
        }
    }
}
