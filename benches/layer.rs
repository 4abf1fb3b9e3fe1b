//! Layer pipeline benchmarks: the writer on one large file and on 10k small files, SHA-256, gzip on
//! one thread versus all cores, and zstd. Inputs come from a seed, never a download.
use std::hint::black_box;
use std::io::Write;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln::layer::{Compression, Entry, LayerOptions, LayerWriter, ParallelGzipWriter};
use sha2::{Digest, Sha256};

/// Compressible pseudo-random bytes, roughly like binaries (ratio about 0.4 under gzip -6).
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let words: Vec<&[u8]> =
        b"mov rax rbx call ret push pop jmp lea add sub xor cmp test \0\0\0\0 \xff\xfe"
            .split(|&b| b == b' ')
            .collect();
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x % 4 == 0 {
            v.extend_from_slice(&x.to_le_bytes()[..3]);
        } else {
            v.extend_from_slice(words[(x >> 8) as usize % words.len()]);
        }
    }
    v.truncate(len);
    v
}

fn one_large_file() -> Vec<Entry> {
    vec![
        Entry::dir("d", 0o755),
        Entry::file("d/big", 0o644, data(1, 64 << 20)),
    ]
}

fn small_files() -> Vec<Entry> {
    let mut v = vec![Entry::dir("s", 0o755)];
    for i in 0..10_000 {
        v.push(Entry::file(format!("s/f{i:05}"), 0o644, data(i, 1500)));
    }
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

fn write_layer(entries: &[Entry], compression: Compression, threads: usize) -> u64 {
    let mut w = LayerWriter::new(
        std::io::sink(),
        LayerOptions {
            compression,
            threads,
            epoch: 0,
        },
    )
    .unwrap();
    for e in entries {
        w.append(e).unwrap();
    }
    w.finish().unwrap().1.size
}

fn layer_writer(c: &mut Criterion) {
    let mut g = c.benchmark_group("layer_writer");
    g.sample_size(10);
    for (name, entries) in [
        ("one_64MiB_file", one_large_file()),
        ("10k_small_files", small_files()),
    ] {
        let bytes: u64 = entries.iter().map(|e| e.data_size()).sum();
        g.throughput(Throughput::Bytes(bytes));
        for comp in [
            Compression::None,
            Compression::Gzip { level: 6 },
            Compression::Zstd { level: 3 },
        ] {
            g.bench_with_input(
                BenchmarkId::new(name, comp.to_string()),
                &entries,
                |b, e| b.iter(|| black_box(write_layer(e, comp, 0))),
            );
        }
    }
    g.finish();
}

fn sha256(c: &mut Criterion) {
    let buf = data(2, 64 << 20);
    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("64MiB_in_1MiB_updates", |b| {
        b.iter(|| {
            let mut h = Sha256::new();
            for c in buf.chunks(1 << 20) {
                h.update(c);
            }
            black_box(h.finalize())
        })
    });
    g.finish();
}

fn gzip(c: &mut Criterion) {
    let buf = data(3, 64 << 20);
    let mut g = c.benchmark_group("gzip6");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(buf.len() as u64));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in [1, cores] {
        g.bench_with_input(BenchmarkId::new("threads", threads), &threads, |b, &t| {
            b.iter(|| {
                let mut w = ParallelGzipWriter::new(std::io::sink(), 6, t);
                w.write_all(&buf).unwrap();
                black_box(w.finish().unwrap().1)
            })
        });
    }
    g.finish();
}

fn zstd(c: &mut Criterion) {
    let buf = data(4, 64 << 20);
    let mut g = c.benchmark_group("zstd3");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("all_cores", |b| {
        b.iter(|| {
            black_box(write_layer(
                &[Entry::file("f", 0o644, buf.clone())],
                Compression::Zstd { level: 3 },
                0,
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, layer_writer, sha256, gzip, zstd);
criterion_main!(benches);
