//! Compression settings: `gzip[:LEVEL]`, `zstd[:LEVEL]`, `none`.
use std::fmt;
use std::str::FromStr;

use crate::oci::MediaType;

use super::Error;

/// gzip level used when none is given: 6, what other builders use.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;
/// zstd level used when none is given: 3, zstd's own default.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip at a level from 1 to 9.
    Gzip {
        /// The level.
        level: u32,
    },
    /// zstd at a level from 1 to 19.
    Zstd {
        /// The level.
        level: i32,
    },
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip {
            level: DEFAULT_GZIP_LEVEL,
        }
    }
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn media_type(self) -> MediaType {
        match self {
            Compression::None => MediaType::OciLayer,
            Compression::Gzip { .. } => MediaType::OciLayerGzip,
            Compression::Zstd { .. } => MediaType::OciLayerZstd,
        }
    }
}

impl FromStr for Compression {
    type Err = Error;

    fn from_str(value: &str) -> Result<Compression, Error> {
        let bad = || Error::InvalidCompression {
            value: value.to_string(),
        };
        let (name, level) = match value.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (value, None),
        };
        match (name, level) {
            ("none" | "uncompressed", None) => Ok(Compression::None),
            ("gzip", None) => Ok(Compression::default()),
            ("gzip", Some(l)) => match l.parse::<u32>() {
                Ok(level @ 1..=9) => Ok(Compression::Gzip { level }),
                _ => Err(bad()),
            },
            ("zstd", None) => Ok(Compression::Zstd {
                level: DEFAULT_ZSTD_LEVEL,
            }),
            ("zstd", Some(l)) => match l.parse::<i32>() {
                Ok(level @ 1..=19) => Ok(Compression::Zstd { level }),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Gzip { level } => write!(f, "gzip:{level}"),
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_levels() {
        assert_eq!(
            "gzip".parse::<Compression>().unwrap(),
            Compression::Gzip { level: 6 }
        );
        assert_eq!(
            "gzip:1".parse::<Compression>().unwrap(),
            Compression::Gzip { level: 1 }
        );
        assert_eq!(
            "zstd:19".parse::<Compression>().unwrap(),
            Compression::Zstd { level: 19 }
        );
        assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
        for bad in ["gzip:0", "gzip:10", "zstd:x", "lz4", "none:1", ""] {
            assert!(bad.parse::<Compression>().is_err(), "{bad}");
        }
    }
}
