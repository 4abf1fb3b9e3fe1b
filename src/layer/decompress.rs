//! Compressed streams: which compression a stream's first bytes show ([`sniff_compression`]),
//! and the one reader that undoes it ([`decompressor`]). Used for `ADD` archives, `docker save`
//! layers and `kiln import` tarballs, so the magic numbers and the decoders' limits live here
//! only.
//!
//! Every decoder streams: a decompression bomb costs time, never memory beyond the decoder's
//! window, which is capped for xz (an archive whose header asks for more is refused instead of
//! allocated). gzip and bzip2 read every member/stream of a concatenated file, as `gzip -d`
//! and `bzip2 -d` do (pigz and lbzip2 write several).
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

/// A stream's compression, as its magic bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressed {
    /// No known magic: plain bytes (or a format kiln does not decompress).
    None,
    /// gzip: `1f 8b`.
    Gzip,
    /// bzip2: `BZh`.
    Bzip2,
    /// xz: `fd 37 7a 58 5a 00`.
    Xz,
    /// zstd: `28 b5 2f fd`.
    Zstd,
}

/// The most bytes [`sniff_compression`] looks at.
pub const SNIFF_LEN: usize = 6;

/// The most memory the xz decoder may need for one block, in KiB: 64 MiB is `xz -9`'s
/// dictionary, the largest any standard preset makes (liblzma's own decoder would use 65 MiB).
const XZ_MEM_LIMIT_KIB: u32 = 80 * 1024;

/// The compression whose magic bytes `head` starts with (the first [`SNIFF_LEN`] bytes are
/// enough; fewer are fine and sniff as what they can still show).
pub fn sniff_compression(head: &[u8]) -> Compressed {
    match head {
        [0x1f, 0x8b, ..] => Compressed::Gzip,
        [b'B', b'Z', b'h', ..] => Compressed::Bzip2,
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Compressed::Xz,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compressed::Zstd,
        _ => Compressed::None,
    }
}

/// A reader of `r`'s bytes with `format` undone, decoding as it is read. Its read errors name
/// `name` ("cannot decompress `name`: …"). zstd without the `zstd` feature is
/// [`io::ErrorKind::Unsupported`].
pub fn decompressor<'a, R: BufRead + 'a>(
    r: R,
    format: Compressed,
    name: &Path,
) -> io::Result<Box<dyn Read + 'a>> {
    let named = |inner: Box<dyn Read + 'a>| -> Box<dyn Read + 'a> {
        Box::new(Named {
            inner,
            name: name.to_path_buf(),
        })
    };
    Ok(match format {
        Compressed::None => Box::new(r),
        Compressed::Gzip => named(Box::new(flate2::read::MultiGzDecoder::new(r))),
        Compressed::Bzip2 => named(Box::new(bzip2::read::MultiBzDecoder::new(r))),
        // Streaming, like the others (lzma-rs decompressed the whole archive into a Vec: 150
        // KiB of xz took 2 GiB); the header's dictionary size is capped.
        Compressed::Xz => named(Box::new(lzma_rust2::XzReader::new_mem_limit(
            r,
            true,
            XZ_MEM_LIMIT_KIB,
        ))),
        #[cfg(feature = "zstd")]
        Compressed::Zstd => named(Box::new(zstd::stream::read::Decoder::with_buffer(r)?)),
        #[cfg(not(feature = "zstd"))]
        Compressed::Zstd => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "`{}` is zstd-compressed, and this kiln was built without zstd",
                    name.display()
                ),
            ))
        }
    })
}

/// A decoder whose errors name the stream.
struct Named<'a> {
    inner: Box<dyn Read + 'a>,
    name: PathBuf,
}

impl Read for Named<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot decompress `{}`: {e}", self.name.display()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TEXT: &[u8] = b"the same bytes, whatever the compression\n";
    const XZ_TEXT: &[u8] = &[
        0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x04, 0xe6, 0xd6, 0xb4, 0x46, 0x02, 0x00, 0x21,
        0x01, 0x16, 0x00, 0x00, 0x00, 0x74, 0x2f, 0xe5, 0xa3, 0x01, 0x00, 0x28, 0x74, 0x68, 0x65,
        0x20, 0x73, 0x61, 0x6d, 0x65, 0x20, 0x62, 0x79, 0x74, 0x65, 0x73, 0x2c, 0x20, 0x77, 0x68,
        0x61, 0x74, 0x65, 0x76, 0x65, 0x72, 0x20, 0x74, 0x68, 0x65, 0x20, 0x63, 0x6f, 0x6d, 0x70,
        0x72, 0x65, 0x73, 0x73, 0x69, 0x6f, 0x6e, 0x0a, 0x00, 0x00, 0x00, 0x00, 0xd9, 0xfe, 0xaf,
        0xfc, 0x04, 0xf8, 0xda, 0x19, 0x00, 0x01, 0x41, 0x29, 0x03, 0x53, 0x56, 0x8b, 0x1f, 0xb6,
        0xf3, 0x7d, 0x01, 0x00, 0x00, 0x00, 0x00, 0x04, 0x59, 0x5a,
    ];

    fn compressed(format: Compressed) -> Vec<u8> {
        match format {
            Compressed::None => TEXT.to_vec(),
            Compressed::Gzip => {
                let mut w = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                w.write_all(TEXT).unwrap();
                w.finish().unwrap()
            }
            Compressed::Bzip2 => {
                let mut w = bzip2::write::BzEncoder::new(Vec::new(), Default::default());
                w.write_all(TEXT).unwrap();
                w.finish().unwrap()
            }
            // kiln builds lzma-rust2 without its encoder: `TEXT` as Python's `lzma.compress`
            // (xz format, CRC64) writes it.
            Compressed::Xz => XZ_TEXT.to_vec(),
            #[cfg(feature = "zstd")]
            Compressed::Zstd => zstd::encode_all(TEXT, 3).unwrap(),
            #[cfg(not(feature = "zstd"))]
            Compressed::Zstd => unreachable!("zstd is not built in"),
        }
    }

    #[test]
    fn sniffs_and_decompresses_every_format() {
        for format in [
            Compressed::None,
            Compressed::Gzip,
            Compressed::Bzip2,
            Compressed::Xz,
            Compressed::Zstd,
        ] {
            if format == Compressed::Zstd && !cfg!(feature = "zstd") {
                continue;
            }
            let bytes = compressed(format);
            assert_eq!(sniff_compression(&bytes), format, "{format:?}");
            let mut r = decompressor(&bytes[..], format, Path::new("x")).unwrap();
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, TEXT, "{format:?}");
        }
    }

    #[test]
    fn short_and_unknown_heads_are_plain() {
        assert_eq!(sniff_compression(b""), Compressed::None);
        assert_eq!(sniff_compression(&[0x1f]), Compressed::None);
        assert_eq!(sniff_compression(&[0xfd, b'7', b'z']), Compressed::None);
        assert_eq!(sniff_compression(b"BZ"), Compressed::None);
        assert_eq!(sniff_compression(b"ustar"), Compressed::None);
        // Exactly the magic is enough.
        assert_eq!(
            sniff_compression(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compressed::Zstd
        );
    }

    #[test]
    fn concatenated_gzip_members_are_all_read() {
        let mut two = compressed(Compressed::Gzip);
        two.extend(compressed(Compressed::Gzip));
        let mut out = Vec::new();
        decompressor(&two[..], Compressed::Gzip, Path::new("x"))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, [TEXT, TEXT].concat());
    }

    #[test]
    fn corrupt_streams_fail_naming_the_stream() {
        let mut bytes = compressed(Compressed::Xz);
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        let mut out = Vec::new();
        let err = decompressor(&bytes[..], Compressed::Xz, Path::new("/ctx/a.tar.xz"))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot decompress `/ctx/a.tar.xz`"),
            "{err}"
        );
    }
}
