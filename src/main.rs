//! The `kiln` binary: parse arguments, run the command, print the error chain, exit.
fn main() {
    // Re-executed as the RUN sandbox helper? Then this runs it and never returns.
    kiln::sandbox::helper_main_if_requested();
    std::process::exit(kiln::cli::main());
}
