//! The clap command as users see it: per-command help that lists only the flags that command
//! reads, shell completions (`kiln completions bash|zsh|fish`, clap_complete), and the same
//! command for the man pages `scripts/gen-man.sh` writes (clap_mangen).
//!
//! The store, progress and registry flags are global (`kiln push --jobs 8` and `kiln --jobs 8
//! push` both work), so clap would list them under every command; here each command's copy of a
//! flag it never reads is hidden from its help and completions (it is still accepted).
use clap::{Args, CommandFactory, ValueEnum};

use super::{Cli, CliResult};

/// Registry flags, and the commands that read none of them.
const REGISTRY_FLAGS: [&str; 7] = [
    "tls_verify",
    "cert_dir",
    "jobs",
    "chunk_size",
    "config",
    "speed_limit",
    "speed_time",
];

/// Which global flags each command does not read.
fn unused(command: &str) -> &'static [&'static str] {
    match command {
        // No store, no registry, no transfers (parse, plan: local files only; logout: the
        // credentials file; completions: nothing; key: two files).
        "parse" | "plan" | "logout" | "completions" | "key" => &[
            "root",
            "progress",
            "tls_verify",
            "cert_dir",
            "jobs",
            "chunk_size",
            "config",
            "speed_limit",
            "speed_time",
        ],
        "images" | "rmi" | "store" | "layer" => &REGISTRY_FLAGS,
        // One request at a time, no blobs.
        "login" | "tags" => &["root", "progress", "jobs", "chunk_size"],
        _ => &[],
    }
}

/// `cmd` (a command, or one of its subcommands: `under` names the command they take their
/// unused list from) with a hidden copy of each global flag it does not read: clap copies a
/// global flag into a command only where the command has none of that id, so the copy stays
/// hidden, and as a global flag its value still reaches the top-level matches.
fn hide_unused(mut cmd: clap::Command, under: &str, globals: &[clap::Arg]) -> clap::Command {
    for id in unused(under) {
        if let Some(a) = globals.iter().find(|a| a.get_id() == *id) {
            cmd = cmd.arg(a.clone().hide(true));
        }
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for s in subs {
        cmd = cmd.mut_subcommand(s, |sub| hide_unused(sub, under, globals));
    }
    cmd
}

/// The kiln command, each command's unused global flags hidden from its help and completions.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let globals: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for n in names {
        let under = n.clone();
        cmd = cmd.mut_subcommand(n, |sub| hide_unused(sub, &under, &globals));
    }
    cmd
}

/// A shell `kiln completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash (`source <(kiln completions bash)`).
    Bash,
    /// zsh (write it as `_kiln` into a directory of `$fpath`).
    Zsh,
    /// fish (write it to `~/.config/fish/completions/kiln.fish`).
    Fish,
}

/// Arguments of `kiln completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub(crate) fn completions(a: CompletionsArgs) -> CliResult {
    let shell = match a.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut command(), "kiln", &mut text);
    super::out(&String::from_utf8_lossy(&text))
}
