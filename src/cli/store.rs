//! `kiln store fsck` and `kiln store gc`.
use clap::Subcommand;

use crate::ops;

use super::{out, out_json, CliResult, Context, Format};

/// Store maintenance commands.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Verify every blob's digest and size and every reference; exit 2 on any problem.
    Fsck {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Remove blobs no name refers to, and stale temp files (waits for running kiln processes).
    Gc {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

pub(crate) fn run(ctx: &Context, c: StoreCommand) -> CliResult {
    match c {
        StoreCommand::Fsck { format } => {
            let store = ctx.store()?;
            let r = ops::fsck(&store, ctx.reporter().as_ref())?;
            if format == Format::Json {
                return out_json(&r);
            }
            out(&format!(
                "ok: {} blobs ({} bytes) verified, {} names, {} lazy layers (not downloaded yet)",
                r.blobs_checked, r.bytes_checked, r.names, r.lazy
            ))
        }
        StoreCommand::Gc { format } => {
            let store = crate::store::Store::open_exclusive(&ctx.root())?;
            let r = ops::gc(&store, ctx.reporter().as_ref())?;
            if format == Format::Json {
                return out_json(&r);
            }
            out(&format!(
                "removed {} blobs and {} temp files ({} bytes); kept {} blobs",
                r.blobs_removed, r.temp_files_removed, r.bytes_freed, r.blobs_kept
            ))
        }
    }
}
