//! Writes kiln's man pages (`kiln.1`, `kiln-build.1`, …) into the directory given, from the
//! same clap command the binary parses with (so each page lists only the flags its command
//! reads). Run through `scripts/gen-man.sh`.
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .expect("usage: manpages OUTPUT-DIRECTORY"),
    );
    std::fs::create_dir_all(&dir)?;
    let cmd = kiln::cli::help::command();
    clap_mangen::generate_to(cmd, &dir)?;
    Ok(())
}
