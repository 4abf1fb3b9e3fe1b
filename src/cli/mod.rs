//! Command-line interface: clap arguments → validated options → `ops`.
//!
//! This is the only module that reads environment variables (`KILN_ROOT`, `XDG_DATA_HOME`,
//! `HOME`, `SOURCE_DATE_EPOCH`). Each command lives in its own file; `render` draws progress;
//! `output` reads `kiln build -o` (buildx's syntax and kiln's transports), `build_outputs`
//! checks every name and destination before the build starts and writes the files after it; `help` builds the clap command (per-command help,
//! completions, man pages); `unsupported` answers buildx flags kiln lacks with what to use;
//! `attest` reads the attestation flags and runs `kiln sbom`; `unauthorized` heads a registry's 401 with `kiln login HOST` or "credentials were rejected".
//! Exit codes: 0 success, 1 a failed build step (or, for `kiln diff`, images that differ; for
//! `kiln verify`, and `resolve`/`ensure` with `[image]` verification, a failed verification), 2
//! usage or any other error; a broken pipe on stdout exits 0.
use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

mod attest;
mod bake;
mod bake_args;
mod bake_fanout;
mod build;
mod build_args;
mod build_flags;
mod build_outputs;
mod build_source;
mod cache;
mod diff;
pub mod help;
mod images;
mod import;
mod index;
mod layer;
mod output;
pub mod parse;
pub mod plan;
mod registry;
mod render;
mod resolve;
mod sign;
mod store;
mod unauthorized;
mod unsupported;

pub use render::ProgressMode;

/// `kiln --version`: the package version, the commit and the build date (see `build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("KILN_COMMIT"),
    ", built ",
    env!("KILN_BUILD_DATE"),
    ")"
);

/// kiln: a daemonless, rootless, reproducible OCI image builder.
#[derive(Debug, Parser)]
#[command(name = "kiln", version = VERSION, about, max_term_width = 100)]
pub struct Cli {
    /// The local store [default: $KILN_ROOT, else $XDG_DATA_HOME/kiln, else ~/.local/share/kiln]
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// How to show progress.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Registry settings.
    #[command(flatten)]
    pub registry: registry::RegistryFlags,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every kiln command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and validate a Dockerfile; `--dump` prints the AST.
    Parse(parse::ParseArgs),
    /// Plan a build: stages, steps, history text and cache keys.
    Plan(plan::PlanArgs),
    /// Build an image from a Dockerfile and a context.
    Build(Box<build::BuildArgs>),
    /// Make a one-layer base image from a root filesystem (directory or tarball).
    Import(import::ImportArgs),
    /// Write one directory as a layer blob into the store and report what each stage cost.
    Layer(layer::LayerArgs),
    /// Copy an image between the store, `oci:`, `oci-archive:` and `docker-archive:`.
    Copy(images::CopyArgs),
    /// Print an image's manifest digest, config and layers as JSON.
    Inspect(images::InspectArgs),
    /// Show every path (content, mode, owner, xattrs, link, mtime) that differs between two images.
    Diff(diff::DiffArgs),
    /// List the images in the local store.
    Images(images::ImagesArgs),
    /// Remove names from the local store (`kiln store gc` then frees what nothing refers to).
    Rmi(images::RmiArgs),
    /// Pull an image from a registry into the local store.
    Pull(registry::PullArgs),
    /// Push an image from the local store to a registry.
    Push(registry::PushArgs),
    /// Store a registry credential in the Docker config.json other tools read.
    Login(registry::LoginArgs),
    /// Remove a registry credential.
    Logout(registry::LogoutArgs),
    /// List a repository's tags.
    Tags(registry::TagsArgs),
    /// Maintain the local store.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Build the image family `kiln.toml` describes (every target, shared cache), tag, push.
    Bake(bake::BakeArgs),
    /// Work with image indexes (multi-platform images).
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Say which image to run, and which rule chose it, from the config's `[image]` section.
    Resolve(resolve::ResolveArgs),
    /// Make the resolved image present: pull it, or build it (rule 5 or `--build-fallback`).
    Ensure(resolve::EnsureArgs),
    /// Show the resolved image (`Image: none` when nothing is configured).
    Status(resolve::ResolveArgs),
    /// Print a shell completion script: `source <(kiln completions bash)`.
    Completions(help::CompletionsArgs),
    /// Manage signing keys (cosign's format).
    #[command(subcommand)]
    Key(sign::KeyCommand),
    /// Sign an image in a registry (cosign's `sha256-<hex>.sig` layout).
    Sign(sign::SignArgs),
    /// Attach a signed in-toto attestation (DSSE) to an image in a registry.
    Attest(sign::AttestArgs),
    /// Verify an image's signatures, or its attestations, with a public key.
    Verify(sign::VerifyArgs),
    /// Print the SBOM (SPDX or CycloneDX JSON) of any image kiln can read.
    Sbom(attest::SbomArgs),
}

/// Output format for commands that can print JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Text,
    /// JSON.
    Json,
}

/// An error with the exit code it should produce.
#[derive(Debug)]
pub(crate) struct Exit {
    code: i32,
    /// `None` when the command already printed its error.
    error: Option<anyhow::Error>,
}

impl<E: Into<anyhow::Error>> From<E> for Exit {
    fn from(e: E) -> Self {
        Exit {
            code: 2,
            error: Some(e.into()),
        }
    }
}

/// Turns a command's exit code into a result (its error was printed already).
pub(crate) fn code(c: i32) -> CliResult {
    if c == 0 {
        Ok(())
    } else {
        Err(Exit {
            code: c,
            error: None,
        })
    }
}

pub(crate) type CliResult = Result<(), Exit>;

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match help::command()
        .try_get_matches()
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => {
            if let Some(text) = unsupported::explain(&e) {
                eprintln!("error: {text}");
                return 2;
            }
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match run(cli) {
        Ok(()) => 0,
        Err(Exit { code, error: None }) => code,
        Err(Exit {
            code,
            error: Some(error),
        }) => {
            if is_broken_pipe(&error) {
                return 0;
            }
            let error = unauthorized::explain(error);
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("caused by: {cause}");
            }
            code
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> CliResult {
    let progress = match &cli.command {
        Command::Build(a) if a.quiet => ProgressMode::Quiet,
        _ => cli.progress,
    };
    let ctx = Context {
        root: cli.root.clone(),
        reporter: render::reporter(progress),
        registry: cli.registry.clone(),
    };
    match cli.command {
        Command::Parse(a) => code(parse::run(&a)),
        Command::Plan(a) => code(plan::run(&a)),
        Command::Build(a) => build::run(&ctx, *a),
        Command::Import(a) => import::run(&ctx, a),
        Command::Layer(a) => layer::run(&ctx, a),
        Command::Copy(a) => images::copy(&ctx, a),
        Command::Inspect(a) => images::inspect(&ctx, a),
        Command::Diff(a) => diff::run(&ctx, a),
        Command::Images(a) => images::images(&ctx, a),
        Command::Rmi(a) => images::rmi(&ctx, a),
        Command::Store(c) => store::run(&ctx, c),
        Command::Pull(a) => registry::pull(&ctx, &cli.registry, a),
        Command::Push(a) => registry::push(&ctx, &cli.registry, a),
        Command::Login(a) => registry::login(&cli.registry, a),
        Command::Logout(a) => registry::logout(a),
        Command::Tags(a) => registry::tags(&cli.registry, a),
        Command::Bake(a) => bake::run(&ctx, a),
        Command::Index(c) => index::run(&ctx, c),
        Command::Resolve(a) => resolve::run_resolve(&ctx, a),
        Command::Ensure(a) => resolve::run_ensure(&ctx, a),
        Command::Status(a) => resolve::run_status(&ctx, a),
        Command::Completions(a) => help::completions(a),
        Command::Key(c) => sign::run_key(c),
        Command::Sign(a) => sign::run_sign(&ctx, a),
        Command::Attest(a) => sign::run_attest(&ctx, a),
        Command::Verify(a) => sign::run_verify(&ctx, a),
        Command::Sbom(a) => attest::run_sbom(&ctx, a),
    }
}

/// What every command needs: the store root, the reporter and the registry flags.
pub(crate) struct Context {
    root: Option<PathBuf>,
    /// One renderer for the whole command: the registry's transfers (lazy layers included)
    /// report to the same one as the build.
    reporter: std::sync::Arc<dyn crate::progress::Reporter>,
    registry: registry::RegistryFlags,
}

impl Context {
    /// The store root: `--root`, `$KILN_ROOT`, `$XDG_DATA_HOME/kiln`, `~/.local/share/kiln`,
    /// made absolute against the current directory (overlay lower directories and the
    /// sandbox's mounts need absolute paths).
    pub(crate) fn root(&self) -> PathBuf {
        let r = self.given_root();
        if r.is_absolute() {
            return r;
        }
        std::path::absolute(&r).unwrap_or(r)
    }

    fn given_root(&self) -> PathBuf {
        if let Some(r) = &self.root {
            return r.clone();
        }
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(r) = env("KILN_ROOT") {
            return r;
        }
        if let Some(x) = env("XDG_DATA_HOME") {
            return x.join("kiln");
        }
        env("HOME")
            .unwrap_or_else(|| PathBuf::from("/"))
            .join(".local/share/kiln")
    }

    pub(crate) fn store(&self) -> Result<crate::store::Store, Exit> {
        Ok(crate::store::Store::open(&self.root())?)
    }

    /// The registry client the global flags describe, reporting its transfers.
    pub(crate) fn remote(&self) -> Result<crate::transport::Remote, Exit> {
        self.remote_for(&self.registry)
    }

    /// The registry client `flags` describe, reporting its transfers.
    pub(crate) fn remote_for(
        &self,
        flags: &registry::RegistryFlags,
    ) -> Result<crate::transport::Remote, Exit> {
        let mut remote = flags.remote()?;
        remote.reporter = self.reporter();
        Ok(remote)
    }

    pub(crate) fn reporter(&self) -> std::sync::Arc<dyn crate::progress::Reporter> {
        self.reporter.clone()
    }
}

/// The epoch given (`--source-date-epoch`, else `$SOURCE_DATE_EPOCH`), if any.
pub(crate) fn given_epoch(flag: Option<i64>) -> Result<Option<i64>, Exit> {
    if let Some(e) = flag {
        return Ok(Some(e));
    }
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v.trim().parse::<i64>().map(Some).map_err(|_| {
            anyhow::anyhow!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds").into()
        }),
        _ => Ok(None),
    }
}

/// Prints to stdout; a closed pipe ends the program quietly.
pub(crate) fn out(text: &str) -> CliResult {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        o.write_all(b"\n")?;
    }
    o.flush()?;
    Ok(())
}

/// Serialises `v` as pretty JSON on stdout.
pub(crate) fn out_json<T: serde::Serialize>(v: &T) -> CliResult {
    out(&serde_json::to_string_pretty(v)?)
}
