//! kiln: a daemonless, rootless, reproducible OCI image builder.
//!
//! Start reading here. Imports point down only; from the bottom:
//!
//! | module | owns |
//! |---|---|
//! | [`inroot`] | the one way to resolve a name inside a root directory to a file descriptor (`openat2(RESOLVE_IN_ROOT)`, or a checked walk) |
//! | [`oci`] | `Digest`, `MediaType`, `Descriptor`, `Platform`, `Manifest`, `Index`, `ImageConfig`, canonical JSON, size caps (`oci::limits`) |
//! | [`progress`] | the `Reporter` trait that library code reports through (build steps as BuildKit names them, their status lines and output, blob transfers, the final digests); only the CLI draws (`cli::render`: plain, rawjson, the live tty view; docs/PROGRESS.md) (below `registry`, which reports blob transfers through it) |
//! | [`layer`] | the deterministic layer pipeline: walk → tar → diff_id → gzip/zstd → digest, whiteouts; sniffing and decompressing gzip/bzip2/xz/zstd streams |
//! | [`sandbox`] | rootless execution of RUN steps in user namespaces; the `binfmt_misc` emulator (QEMU user mode) a foreign platform's steps run under; SSH agents relayed read-only into steps (`sandbox::ssh`) |
//! | [`registry`] | the OCI distribution API client: references, auth, pull, push, retries, mirrors |
//! | [`git`] | git sources (a context, `--build-context` or `ADD` as a git URL): BuildKit's URL forms, a shallow fetch of one commit through the `git` CLI with hooks, prompts and unlisted protocols off |
//! | [`store`] | the on-disk OCI image layout under `--root`: atomic blob writes, names, lock, fsck, gc |
//! | [`image`] | `Image` (manifest + config + layers, raw bytes kept) and `ImageBuilder` |
//! | [`transport`] | reading and writing images: local store, `oci:`, `oci-archive:`, `docker-archive:` |
//! | [`attest`] | supply-chain attestations: package scanners over an image's layers (cached per diff_id), SPDX and CycloneDX SBOMs, SLSA v1 provenance, in-toto statements and the attestation manifests of an index |
//! | [`sign`] | cosign-compatible keys, signatures (`sha256-<hex>.sig`), DSSE attestations (`.att`, OCI 1.1 referrers with the tag-schema fallback) and their verification |
//! | [`dockerfile`] | Dockerfile parser (text → AST with spans), typed instructions, word expansion |
//! | [`plan`] | Dockerfile + build args + target (+ a base-config resolver) → `BuildPlan` (stage DAG, steps), then its `CacheKeys`; no I/O |
//! | [`cache`] | the build cache: step key → layer, and the persistent file-hash index; `cache::remote`: the same keys, and cache mounts' contents, in a registry or an OCI layout (`--cache-to` / `--cache-from`, docs/CACHE.md) |
//! | [`builder`] | the build engine: runs a `BuildPlan` (bases, input digests, COPY/ADD, RUN through a `sandbox::Sandbox`, config edits, layers, cache) into an image |
//! | [`bake`] | the image family: the `kiln.toml` model, targets, tag templates, the bake plan, lints |
//! | [`resolve`] | which image a deployer runs: the `[image]` section and its five rules |
//! | [`ops`] | one function per operation (`import`, `layer`, `copy`, `inspect`, …); never prints |
//! | [`cli`] | clap arguments → validated options → `ops`; the only place that reads the environment |
//!
//! Determinism is on by default: the same inputs give the same digests, bit for bit. Config
//! timestamps are the build epoch (`SOURCE_DATE_EPOCH`, else 0), files a step writes with the
//! clock and the context's files get it as their mtime (mtimes the inputs carry are kept, or
//! clamped to a given epoch), tar entries are sorted by path bytes, owner names are empty,
//! compressed streams do not depend on the thread count, and JSON is canonical.
#![warn(missing_docs)]

pub mod attest;
pub mod bake;
pub mod builder;
pub mod cache;
pub mod cli;
pub mod dockerfile;
pub mod git;
pub mod image;
pub mod inroot;
pub mod layer;
pub mod oci;
pub mod ops;
pub mod plan;
pub mod progress;
pub mod registry;
pub mod resolve;
pub mod sandbox;
pub mod sign;
pub mod store;
pub mod transport;
