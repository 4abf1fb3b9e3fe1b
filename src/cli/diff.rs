//! `kiln diff A B`.
use clap::Args;

use crate::oci::Platform;
use crate::ops::{self, DiffOptions};
use crate::transport::Target;

use super::{code, out, out_json, CliResult, Context};

/// The `--json` schema, shown by `kiln diff --help`.
const JSON_SCHEMA: &str = "\
Exit status: 0 the images are the same, 1 they differ, 2 an error (as diff(1)).

Text output, sorted by path: `+ PATH (TYPE) [b: layer I DIGEST]` (only in B),
`- PATH (TYPE) [a: layer I DIGEST]` (only in A), `M PATH: FIELD A -> B, … [a: …; b: …]`,
`C config KEY` for each differing config key, then a summary line. Nothing when identical.

--json prints one object:
  {\"a\": SIDE, \"b\": SIDE, \"identical\": BOOL, \"config\": [KEY…], \"paths\": [CHANGE…]}
  SIDE   = {\"image\": NAME, \"digest\": MANIFEST_DIGEST, \"layers\": [BLOB_DIGEST…]}
  KEY    = a top-level config key (\"history\", \"created\", …) or \"config.NAME\" (\"config.Env\", …)
  CHANGE = {\"path\": \"/ABS/PATH\", \"change\": \"added\"|\"removed\"|\"modified\",
            \"fields\": [\"type\"|\"content\"|\"mode\"|\"uid\"|\"gid\"|\"xattrs\"|\"link\"|\"device\"|\"mtime\"…],
            \"a\": META|null, \"b\": META|null}
  META   = {\"type\": \"file\"|\"dir\"|\"symlink\"|\"char\"|\"block\"|\"fifo\", \"mode\": \"0644\",
            \"uid\": N, \"gid\": N, \"size\": N, \"mtime\": SECONDS, \"digest\"?: CONTENT_SHA256,
            \"link\"?: TARGET, \"device\"?: \"MAJOR,MINOR\", \"xattrs\"?: {NAME: BASE64},
            \"layer\": INDEX_INTO_SIDE_LAYERS, \"layer_digest\": BLOB_DIGEST}
Paths are sorted by their bytes; bytes that are not UTF-8 are written as \\xNN.";

/// Arguments of `kiln diff`.
#[derive(Debug, Args)]
#[command(after_long_help = JSON_SCHEMA)]
pub struct DiffArgs {
    /// The first image: a store name, `oci:DIR[:REF]`, `oci-archive:FILE[:REF]`,
    /// `docker-archive:FILE[:NAME:TAG]` or `docker://REF`.
    pub a: Target,
    /// The second image, in the same forms.
    pub b: Target,
    /// Which platform to take from a multi-platform image [default: the host's].
    #[arg(long)]
    pub platform: Option<Platform>,
    /// Print JSON (schema in `--help`).
    #[arg(long)]
    pub json: bool,
}

/// Prints the differences; exit 1 when there are any, as diff(1).
pub(crate) fn run(ctx: &Context, a: DiffArgs) -> CliResult {
    let store = ctx.store()?;
    let result = ops::diff(
        &store,
        &DiffOptions {
            a: a.a,
            b: a.b,
            platform: a.platform,
            remote: Some(ctx.remote()?),
        },
    )?;
    if a.json {
        out_json(&result)?;
    } else if !result.identical {
        out(&result.to_text())?;
    }
    code(if result.identical { 0 } else { 1 })
}
