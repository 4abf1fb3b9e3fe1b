//! Fuzz target: arbitrary bytes → manifest, index, image config, digest and platform parsing, and
//! `Image::from_raw`. Whatever parses must survive kiln's canonical JSON: serialising and parsing
//! again gives the same value, and canonical JSON is a fixed point (canonical(parse(canonical(v)))
//! is canonical(v)).
#![no_main]

use std::str::FromStr;

use kiln::image::Image;
use kiln::oci::{from_json, to_canonical_json, Digest, ImageConfig, Index, Manifest, Platform};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    what: &'static str,
    data: &[u8],
) {
    let Ok(v) = from_json::<T>(what, data) else {
        return;
    };
    let canon = to_canonical_json(&v);
    let again: T = from_json(what, &canon)
        .unwrap_or_else(|e| panic!("canonical {what} does not parse back: {e}"));
    let canon2 = to_canonical_json(&again);
    assert_eq!(canon, canon2, "canonical {what} JSON is not a fixed point");
    if !has_float(&canon) {
        assert_eq!(v, again, "{what} changed in a round trip");
    }
}

/// serde_json parses floats to the nearest double only with `float_roundtrip`; kiln's types hold
/// no floats of their own, so values are compared only when the unmodelled fields hold none.
fn has_float(json: &[u8]) -> bool {
    fn walk(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Number(n) => n.is_f64(),
            serde_json::Value::Array(a) => a.iter().any(walk),
            serde_json::Value::Object(o) => o.values().any(walk),
            _ => false,
        }
    }
    serde_json::from_slice::<serde_json::Value>(json)
        .map(|v| walk(&v))
        .unwrap_or(true)
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Manifest>("manifest", data);
    round_trip::<Index>("index", data);
    round_trip::<ImageConfig>("image config", data);

    // An image from a manifest and a config: split the input at the first NUL.
    if let Some(i) = data.iter().position(|&b| b == 0) {
        let _ = Image::from_raw(data[..i].to_vec(), data[i + 1..].to_vec());
    }

    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(d) = Digest::from_str(s) {
            assert_eq!(Digest::from_str(&d.to_string()).unwrap(), d);
        }
        if let Ok(p) = Platform::from_str(s) {
            assert_eq!(Platform::from_str(&p.to_string()).unwrap(), p);
        }
    }
});
