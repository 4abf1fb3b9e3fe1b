//! Fuzz target: `.dockerignore` text and paths → pattern compilation and matching, plus the
//! COPY source glob (`builder::context::glob_match`). Nothing may panic or hang; a path that is
//! excluded stays excluded whether written with a leading `/` or `./`.
#![no_main]

use kiln::builder::context::glob_match;
use kiln::dockerfile::ignore::Ignore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The patterns, then (after the first NUL) the paths to match, one per line.
    let (patterns, paths) = text.split_once('\0').unwrap_or((&text, "a/b/c"));
    if let Ok(ig) = Ignore::parse(patterns) {
        for p in paths.lines().take(16) {
            let m = ig.matches(p);
            if !p.starts_with('/') {
                assert_eq!(ig.matches(&format!("/{p}")), m, "`{p}` vs `/{p}`");
            }
            for pat in ig.patterns() {
                let _ = pat.is_match(p);
            }
        }
    }
    for line in patterns.lines().take(8) {
        for p in paths.lines().take(8) {
            let _ = glob_match(line.as_bytes(), p.as_bytes());
        }
    }
});
