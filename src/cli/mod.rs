//! Command-line interface: clap arguments → validated options → `ops`.
//!
//! This is the only module that reads environment variables. Each command lives in its own file.
use clap::{Parser, Subcommand};

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
pub enum Command {}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let _cli = Cli::parse();
    0
}
