//! Fuzz target: arbitrary bytes → parse → dump → instructions → plan (with and without a
//! target and build args). No input may panic, hang or allocate without bound.
#![no_main]

use kiln::dockerfile;
use kiln::plan::{plan, NoBases, PlanOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ast) = dockerfile::parse_bytes(data) else {
        return;
    };
    let _ = ast.dump();
    for n in &ast.nodes {
        // Spans must stay inside the source and on character boundaries.
        assert!(n.span.end <= ast.source.len());
        assert!(ast.source.is_char_boundary(n.keyword_span.start));
    }
    let Ok(df) = dockerfile::instructions(&ast) else {
        return;
    };
    let mut opts = PlanOptions::default();
    let _ = plan(&df, &opts, &mut NoBases);
    opts.build_args.insert("A".into(), "x y".into());
    if let Some(name) = df.stages.first().and_then(|s| s.name()) {
        opts.target = Some(name.to_string());
    }
    if let Ok(p) = plan(&df, &opts, &mut NoBases) {
        let _ = serde_json::to_string(&p);
    }
});
