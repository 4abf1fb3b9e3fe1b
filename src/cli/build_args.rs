//! `kiln build`'s arguments, apart from the code that reads them (`build`, `build_outputs`).
use std::path::PathBuf;

use clap::Args;

use crate::layer::Compression;

/// Arguments of `kiln build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The build context directory.
    #[arg(default_value = ".")]
    pub context: PathBuf,
    /// The Dockerfile [default: CONTEXT/Dockerfile].
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Name(s) for the image in the local store.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,
    /// A build argument `NAME=VALUE`, or `NAME` to take it from the environment.
    #[arg(long = "build-arg", value_name = "NAME[=VALUE]")]
    pub build_args: Vec<String>,
    /// The stage to build [default: the last].
    #[arg(long)]
    pub target: Option<String>,
    /// The target platform `os/arch[/variant]` [default: the host's]; several, comma-separated,
    /// build one image each and an OCI index of them.
    #[arg(long, value_name = "OS/ARCH[,...]")]
    pub platform: Option<String>,
    /// Also write the image or its files, as buildx: `type=oci|docker,dest=FILE[,name=REF]`,
    /// `type=local,dest=DIR`, `type=tar,dest=FILE`, `type=image|registry[,name=REF]`, a bare DIR
    /// (= type=local), or kiln's `oci:DIR[:TAG]`, `oci-archive:FILE`,
    /// `docker-archive:FILE[:NAME:TAG]`, `docker://REF`.
    #[arg(short = 'o', long = "output", value_name = "OUTPUT")]
    pub outputs: Vec<String>,
    /// Layer compression: gzip, zstd or none, with an optional `:LEVEL`.
    #[arg(long, default_value = "gzip")]
    pub compression: Compression,
    /// Compression threads [default: one per core].
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Timestamps in config and history, in SOURCE_DATE_EPOCH for RUN, and of files steps write;
    /// given (or $SOURCE_DATE_EPOCH), every newer mtime in the layers is clamped to it [default:
    /// $SOURCE_DATE_EPOCH, else 0, and mtimes the inputs carry are kept].
    #[arg(long, value_name = "SECONDS", conflicts_with = "timestamp")]
    pub source_date_epoch: Option<i64>,
    /// `now` to stamp the current time instead of a reproducible epoch, or a number of seconds.
    #[arg(long, value_name = "now|SECONDS")]
    pub timestamp: Option<String>,
    /// Do not use the cache (results are still recorded in it).
    #[arg(long)]
    pub no_cache: bool,
    /// A label `KEY=VALUE` for the final image.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// An annotation `KEY=VALUE` for the final manifest.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Write the image's manifest digest to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write JSON with names, digests, layers and steps to this file.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// A secret for `RUN --mount=type=secret`: `id=ID,src=FILE` or `id=ID,env=VARIABLE`.
    #[arg(long = "secret", value_name = "id=ID,src=FILE|env=VAR")]
    pub secrets: Vec<String>,
    /// How RUN steps are snapshotted: `overlay` (kernel overlayfs) or `walk` [default: probed].
    #[arg(long, value_name = "overlay|walk")]
    pub snapshotter: Option<String>,
    /// Map only the caller's own id into RUN steps, even when subordinate ids exist.
    #[arg(long)]
    pub single_id: bool,
    /// Push every `-t` name to its registry after the build.
    #[arg(long)]
    pub push: bool,
    /// Lint findings (the final stage runs as root) are errors.
    #[arg(long)]
    pub strict: bool,
    /// The network of RUN steps without a `--network` flag: `default` (a network namespace of
    /// their own, outbound access through pasta), `none`, or `host` (needs `--allow
    /// network.host`).
    #[arg(long, value_name = "default|none|host", default_value = "default")]
    pub network: String,
    /// Grant an entitlement, as buildx does: `network.host` lets RUN steps use the host's
    /// network (`--network host`, `RUN --network=host`).
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
    /// Write the build cache here after the build, as buildx does:
    /// `type=registry,ref=REPO[:TAG][,mode=min|max][,compression=gzip|zstd][,ignore-error=true]`,
    /// `type=local,dest=DIR[,mode=min|max]`, or a bare `REF` (docs/CACHE.md).
    #[arg(
        long = "cache-to",
        value_name = "type=registry,ref=REF|type=local,dest=DIR|REF"
    )]
    pub cache_to: Vec<String>,
    /// Reuse the layers of a build cache (repeatable, first match wins):
    /// `type=registry,ref=REPO[:TAG]`, `type=local,src=DIR`, or a bare `REF`.
    #[arg(
        long = "cache-from",
        value_name = "type=registry,ref=REF|type=local,src=DIR|REF"
    )]
    pub cache_from: Vec<String>,

    // Signing (#19, src/cli/sign.rs).
    /// Sign what `--push` (or `-o type=registry`) pushed with a cosign private key (`--key`),
    /// in cosign's `sha256-<hex>.sig` layout: each pushed repository's manifest digest, the
    /// index for several platforms (cosign's default, not `--recursive`).
    #[arg(long, requires = "sign_key")]
    pub sign: bool,
    /// The cosign private key for `--sign` (password: $COSIGN_PASSWORD, else asked).
    #[arg(long = "key", value_name = "FILE", requires = "sign")]
    pub sign_key: Option<PathBuf>,

    // Git sources and named contexts (src/cli/build_source.rs).
    /// A named context, as buildx: `NAME=PATH`, `NAME=docker-image://REF`,
    /// `NAME=oci-layout://DIR[:TAG|@sha256:…]` or `NAME=https://host/repo.git#ref:subdir`;
    /// `FROM NAME`, `COPY --from=NAME` read it instead of the image NAME.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,

    // buildx's --ssh, --add-host, --pull and --no-cache-filter (src/cli/build_flags.rs).
    /// An SSH agent for `RUN --mount=type=ssh[,id=ID]`, as buildx: `default` (your agent,
    /// $SSH_AUTH_SOCK), `ID=SOCKET`, or `ID=KEYFILE[,KEYFILE…]` (served by a private agent);
    /// forwarded read-only and never stored.
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET|KEYFILE[,KEYFILE]]")]
    pub ssh: Vec<String>,
    /// A line `IP NAME` for RUN steps' /etc/hosts: `HOST:IP` or `HOST=IP` (not stored in the
    /// image).
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// Resolve base images named by tag against their registry even when the store has them.
    #[arg(long)]
    pub pull: bool,
    /// Never answer these stages' steps from a cache (repeatable, comma-separated).
    #[arg(long = "no-cache-filter", value_name = "STAGE[,STAGE...]")]
    pub no_cache_filter: Vec<String>,

    // Supply-chain attestations (#19; src/cli/attest.rs), buildx's flags.
    /// Attach an SBOM (SPDX 2.3) attestation to the image, in an index: `--sbom`,
    /// `--sbom=true|false`.
    #[arg(long, value_name = "true|false", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub sbom: Option<String>,
    /// Attach SLSA v1 provenance: `--provenance`, `--provenance=true|false|mode=min|max`.
    #[arg(long, value_name = "true|false|mode=min|max", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub provenance: Option<String>,
    /// An attestation, buildx's syntax: `type=sbom[,disabled=true]`,
    /// `type=provenance[,mode=min|max][,disabled=true]`.
    #[arg(long = "attest", value_name = "type=sbom|provenance[,...]")]
    pub attest: Vec<String>,

    // buildx's output flags (src/cli/output.rs).
    /// Print only the image digest: no progress (buildx's `-q`).
    #[arg(short = 'q', long)]
    pub quiet: bool,
}
