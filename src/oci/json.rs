//! Canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant white space.
//!
//! The same value always gives the same bytes, whatever map types the structs use and whether a
//! crate in the graph turns on serde_json's `preserve_order`: we sort keys ourselves while writing.
//! A manifest's digest is computed over these exact bytes; a pulled manifest is never re-serialised
//! (its raw bytes are kept beside the parsed value).
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::{Error, Result};

/// Serialises `value` as canonical JSON.
pub fn to_canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own types to a Value cannot fail: they have string keys and no floats
    // that could be NaN.
    let v = serde_json::to_value(value).expect("kiln's OCI types always serialise to JSON");
    let mut out = Vec::with_capacity(512);
    write_value(&v, &mut out);
    out
}

fn write_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(k.clone()), out);
                out.push(b':');
                write_value(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(v: &Value, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, v).expect("writing JSON to a Vec cannot fail");
}

/// Parses `bytes` as `T`, naming the document in the error.
pub fn from_json<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn keys_are_sorted_at_every_depth() {
        let mut inner = HashMap::new();
        for k in ["z", "a", "m", "B"] {
            inner.insert(k.to_string(), 1);
        }
        let v = serde_json::json!({"b": inner, "a": [ {"y": 1, "x": "é\n"} ]});
        let s = String::from_utf8(to_canonical_json(&v)).unwrap();
        assert_eq!(
            s,
            r#"{"a":[{"x":"é\n","y":1}],"b":{"B":1,"a":1,"m":1,"z":1}}"#
        );
    }

    /// Found by the `oci_json` fuzz target: a float in a field kiln does not model (a base
    /// image's config) changed in its last digit when the config was parsed and written again,
    /// because serde_json parses floats exactly only with `float_roundtrip`.
    #[test]
    fn floats_survive_a_parse_and_write() {
        let raw = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"x-size":4.444444404444445e+115,"y":[0.1,1e-300,123456789.12345679]}"#;
        let c: crate::oci::ImageConfig = from_json("image config", raw).unwrap();
        let out = to_canonical_json(&c);
        let again: crate::oci::ImageConfig = from_json("image config", &out).unwrap();
        assert_eq!(to_canonical_json(&again), out);
        assert_eq!(again, c);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("4.444444404444445e+115"), "{text}");
    }
}
