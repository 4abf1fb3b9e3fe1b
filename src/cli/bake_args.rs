//! `kiln bake`'s arguments, apart from the code that reads them (`bake`, `bake_fanout`).
use std::path::PathBuf;

use clap::Args;

use crate::layer::Compression;

/// Arguments of `kiln bake`.
#[derive(Debug, Args)]
pub struct BakeArgs {
    /// Targets to build [default: all].
    pub targets: Vec<String>,
    /// Push every tag to its registry.
    #[arg(long)]
    pub push: bool,
    /// Push each platform's image by digest only (no tag, no index), for `--merge` to join.
    #[arg(long, conflicts_with_all = ["push", "matrix", "merge"])]
    pub push_by_digest: bool,
    /// Print the targets × platforms as a CI matrix (each entry: target, platform, the
    /// `kiln bake` command that builds and pushes it by digest, its cache refs); build nothing.
    #[arg(long, conflicts_with_all = ["print", "merge"])]
    pub matrix: bool,
    /// The matrix's format: `json` (an array) or `github` (`{"include": [...]}`, one line).
    #[arg(long, value_name = "json|github", requires = "matrix")]
    pub format: Option<String>,
    /// Join the runners' digests files (the positional arguments) into the tagged images and
    /// indexes, pushed, and one digests file (`--metadata-file`).
    #[arg(long, conflicts_with_all = ["print", "push"])]
    pub merge: bool,
    /// Override a target's setting: `TARGET.KEY=VALUE` (TARGET `*` for all; keys: dockerfile,
    /// context, stage, tags, platforms, size_budget, repository, description, cache-to,
    /// cache-from, args.NAME, labels.NAME); `TARGET.cache-to+=VALUE` appends a cache ref.
    #[arg(long = "set", value_name = "TARGET.KEY=VALUE")]
    pub sets: Vec<String>,
    /// Write the digests file (target → manifest digest, tags, platforms, size, steps) here.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Print the resolved plan as JSON and build nothing.
    #[arg(long)]
    pub print: bool,
    /// Lint findings are errors.
    #[arg(long)]
    pub strict: bool,
    /// Platforms for every target, comma-separated (overrides the file).
    #[arg(long, value_name = "OS/ARCH,...")]
    pub platform: Option<String>,
    /// Layer compression: gzip, zstd or none, with an optional `:LEVEL`.
    #[arg(long, default_value = "gzip")]
    pub compression: Compression,
    /// Timestamps in config and history, in SOURCE_DATE_EPOCH for RUN, and of files steps write;
    /// given (or $SOURCE_DATE_EPOCH), every newer mtime in the layers is clamped to it [default:
    /// $SOURCE_DATE_EPOCH, else 0, and mtimes the inputs carry are kept].
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<i64>,
    /// Do not use the cache (results are still recorded in it).
    #[arg(long)]
    pub no_cache: bool,
    /// Map only the caller's own id into RUN steps.
    #[arg(long)]
    pub single_id: bool,

    // Signing (#19, src/cli/sign.rs).
    /// Sign every pushed target with a cosign private key (`--key`): each tag's repository gets
    /// a signature of the target's manifest digest (its index for several platforms).
    #[arg(long, requires_all = ["sign_key", "push"])]
    pub sign: bool,
    /// The cosign private key for `--sign` (password: $COSIGN_PASSWORD, else asked).
    #[arg(long = "key", value_name = "FILE", requires = "sign")]
    pub sign_key: Option<PathBuf>,
    /// A secret for `RUN --mount=type=secret` in every target: `id=ID,src=FILE` or
    /// `id=ID,env=VARIABLE`.
    #[arg(long = "secret", value_name = "id=ID,src=FILE|env=VAR")]
    pub secrets: Vec<String>,
    /// The network of RUN steps without a `--network` flag: `default`, `none`, or `host`
    /// (needs `--allow network.host`); as for `kiln build`.
    #[arg(long, value_name = "default|none|host", default_value = "default")]
    pub network: String,
    /// Grant an entitlement: `network.host` lets RUN steps use the host's network.
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
}
