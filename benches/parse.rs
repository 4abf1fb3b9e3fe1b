//! Parsing throughput: every Dockerfile in the fixtures (BuildKit parser cases, the real-world
//! corpus, the variants), through parse, parse + instructions, and parse + instructions + plan.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::fs;
use std::path::{Path, PathBuf};

fn dockerfiles() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dockerfile");
    let mut out = Vec::new();
    let mut push = |p: PathBuf| {
        if let Ok(b) = fs::read(&p) {
            out.push((p.display().to_string(), b));
        }
    };
    for sub in ["real-world", "variants"] {
        if let Ok(rd) = fs::read_dir(root.join(sub)) {
            for e in rd.flatten() {
                let p = e.path();
                let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if !n.ends_with(".md") {
                    push(p);
                }
            }
        }
    }
    if let Ok(rd) = fs::read_dir(root.join("buildkit-parser/parser/testfiles")) {
        for e in rd.flatten() {
            push(e.path().join("Dockerfile"));
        }
    }
    out.sort();
    out
}

fn bench(c: &mut Criterion) {
    let files = dockerfiles();
    let bytes: u64 = files.iter().map(|f| f.1.len() as u64).sum();
    let mut g = c.benchmark_group("dockerfile");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(format!("parse {} files", files.len()), |b| {
        b.iter(|| {
            for (_, src) in &files {
                let _ = std::hint::black_box(kiln::dockerfile::parse_bytes(src));
            }
        })
    });
    g.bench_function("parse+instructions", |b| {
        b.iter(|| {
            for (_, src) in &files {
                if let Ok(ast) = kiln::dockerfile::parse_bytes(src) {
                    let _ = std::hint::black_box(kiln::dockerfile::instructions(&ast));
                }
            }
        })
    });
    let opts = kiln::plan::PlanOptions::default();
    g.bench_function("parse+instructions+plan", |b| {
        b.iter(|| {
            for (_, src) in &files {
                if let Ok(ast) = kiln::dockerfile::parse_bytes(src) {
                    if let Ok(df) = kiln::dockerfile::instructions(&ast) {
                        let _ = std::hint::black_box(kiln::plan::plan(
                            &df,
                            &opts,
                            &mut kiln::plan::NoBases,
                        ));
                    }
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
