//! Serde helpers for raw bytes in a [`super::Diff`]: a path is written as a JSON string when it is
//! UTF-8 (almost always; four times smaller than an array of numbers) and as an array of numbers
//! otherwise, so file names that are not UTF-8 survive the trip from the helper to kiln.
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

#[derive(Deserialize)]
#[serde(untagged)]
enum Repr {
    Str(String),
    Bytes(Vec<u8>),
}

impl Repr {
    fn into_bytes(self) -> Vec<u8> {
        match self {
            Repr::Str(s) => s.into_bytes(),
            Repr::Bytes(b) => b,
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum ReprRef<'a> {
    Str(&'a str),
    Bytes(&'a [u8]),
}

fn repr(bytes: &[u8]) -> ReprRef<'_> {
    match std::str::from_utf8(bytes) {
        Ok(s) => ReprRef::Str(s),
        Err(_) => ReprRef::Bytes(bytes),
    }
}

/// `Vec<u8>`.
pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    repr(bytes).serialize(s)
}

/// `Vec<u8>`.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    Repr::deserialize(d).map(Repr::into_bytes)
}

/// `Option<Vec<u8>>`.
pub(crate) mod option {
    use super::*;

    /// Serializes.
    pub(crate) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_deref().map(repr).serialize(s)
    }

    /// Deserializes.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<Repr>::deserialize(d)?.map(Repr::into_bytes))
    }
}

/// `PathBuf`, which serde itself refuses to write when it is not UTF-8.
pub(crate) mod path {
    use super::*;

    /// Serializes.
    pub(crate) fn serialize<S: Serializer>(p: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
        repr(p.as_os_str().as_bytes()).serialize(s)
    }

    /// Deserializes.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(PathBuf::from(OsString::from_vec(
            Repr::deserialize(d)?.into_bytes(),
        )))
    }
}

/// `Vec<(Vec<u8>, Vec<u8>)>` (xattr names and values).
pub(crate) mod pairs {
    use super::*;

    /// Names and values.
    type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

    /// Serializes.
    pub(crate) fn serialize<S: Serializer>(
        v: &[(Vec<u8>, Vec<u8>)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(k, v)| (repr(k), repr(v))))
    }

    /// Deserializes.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Pairs, D::Error> {
        let v = Vec::<(Repr, Repr)>::deserialize(d)?;
        Ok(v.into_iter()
            .map(|(k, v)| (k.into_bytes(), v.into_bytes()))
            .collect())
    }
}
