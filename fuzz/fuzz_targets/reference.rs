//! Fuzz target: arbitrary text → image reference parsing. Normalisation is idempotent: parsing
//! the normalised form (and the familiar short form) gives the same reference back.
#![no_main]

use kiln::registry::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(r) = Reference::parse(s) else {
        return;
    };
    let full = r.to_string();
    let again = Reference::parse(&full)
        .unwrap_or_else(|e| panic!("`{s}` normalises to `{full}`, which does not parse: {e}"));
    assert_eq!(again, r, "`{s}` → `{full}`");
    assert_eq!(again.to_string(), full);
    let short = r.familiar();
    let from_short = Reference::parse(&short)
        .unwrap_or_else(|e| panic!("`{s}`: familiar `{short}` does not parse: {e}"));
    assert_eq!(from_short, r, "`{s}` → familiar `{short}`");
    let _ = (r.api_host(), r.manifest_reference(), r.name());
});
