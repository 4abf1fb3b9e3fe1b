//! `kiln parse FILE [--dump]`: parse and validate a Dockerfile, print warnings, and optionally
//! the AST in BuildKit's s-expression form. Exit 0 on success, 2 with a located error.
use crate::dockerfile::{self, Warning};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `kiln parse`.
#[derive(Debug, Args)]
pub struct ParseArgs {
    /// The Dockerfile.
    pub file: PathBuf,
    /// Print the AST in BuildKit's dump form.
    #[arg(long)]
    pub dump: bool,
}

/// Prints warnings as `FILE:LINE:COL: warning: message [Rule]`, after applying the file's
/// `# check=` directive. Returns false when `# check=error=true` turns remaining warnings into
/// a failure (after printing them and a summary).
pub(crate) fn print_warnings(file: &str, warnings: &[Warning], check: Option<&str>) -> bool {
    let (kept, error) = crate::dockerfile::lint::apply_check_directive(warnings, check);
    for w in &kept {
        eprintln!(
            "{file}:{}:{}: warning: {} [{}]",
            w.position.line, w.position.col, w.message, w.rule
        );
    }
    if error && !kept.is_empty() {
        eprintln!(
            "error: {file}: {} build check warning(s) and `# check=error=true`",
            kept.len()
        );
        return false;
    }
    true
}

/// Writes `text` and a newline to stdout; a closed pipe is not an error (`kiln parse | head`).
pub(crate) fn out(text: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{text}").and_then(|_| o.flush());
}

/// Runs `kiln parse`; returns the exit code.
pub fn run(args: &ParseArgs) -> i32 {
    let name = args.file.display().to_string();
    let bytes = match std::fs::read(&args.file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read `{name}`: {e}");
            return 2;
        }
    };
    let ast = match dockerfile::parse_bytes(&bytes) {
        Ok(a) => a,
        Err(e) => {
            let src = String::from_utf8_lossy(&bytes);
            eprintln!("{}", e.with_file(&name).render(&src));
            return 2;
        }
    };
    let df = match dockerfile::instructions(&ast) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{}", e.with_file(&name).render(&ast.source));
            return 2;
        }
    };
    if !print_warnings(&name, &df.warnings, ast.directive("check")) {
        return 2;
    }
    if args.dump {
        out(&ast.dump());
    }
    0
}
