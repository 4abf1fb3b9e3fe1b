//! Command-line interface: clap arguments → validated options → `ops`.
//!
//! This is the only module that reads environment variables. Each command lives in its own file.
use clap::{Parser, Subcommand};

pub mod parse;
pub mod plan;

/// kiln: a daemonless, rootless, reproducible OCI image builder.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about)]
pub struct Cli {
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
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match &cli.command {
        Command::Parse(a) => parse::run(a),
        Command::Plan(a) => plan::run(a),
    }
}
