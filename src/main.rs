//! The `kiln` binary: parse arguments, run the command, print the error chain, exit.
fn main() {
    std::process::exit(kiln::cli::main());
}
