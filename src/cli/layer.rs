//! `kiln layer DIR [--compression …] [--json]`
use std::path::PathBuf;

use clap::Args;

use crate::layer::{Compression, LayerOptions};
use crate::ops::{self, LayerCommandOptions};

use super::{given_epoch, out, out_json, CliResult, Context};

/// Arguments of `kiln layer`.
#[derive(Debug, Args)]
pub struct LayerArgs {
    /// The directory to write as a layer.
    pub dir: PathBuf,
    /// gzip, zstd or none, with an optional `:LEVEL` (gzip 1-9, default 6; zstd 1-19, default 3).
    #[arg(long, default_value = "gzip")]
    pub compression: Compression,
    /// Compression threads [default: one per core]. The output does not depend on it.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Clamp mtimes to this epoch [default: $SOURCE_DATE_EPOCH, else mtimes are kept].
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<i64>,
    /// Print the result and per-stage counters as JSON.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run(ctx: &Context, a: LayerArgs) -> CliResult {
    let store = ctx.store()?;
    let opts = LayerCommandOptions {
        dir: a.dir,
        layer: LayerOptions {
            compression: a.compression,
            threads: a.threads,
            epoch: given_epoch(a.source_date_epoch)?.unwrap_or(i64::MAX),
        },
    };
    let r = ops::layer(&store, &opts, ctx.reporter().as_ref())?;
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        let tp: serde_json::Map<String, serde_json::Value> = r
            .stats
            .throughput()
            .into_iter()
            .map(|(k, mbs)| {
                (
                    k.to_string(),
                    serde_json::json!((mbs * 10.0).round() / 10.0),
                )
            })
            .collect();
        v["throughput_mb_s"] = serde_json::Value::Object(tp);
        return out_json(&v);
    }
    let s = &r.stats;
    let mut text = format!(
        "digest       {}\ndiff_id      {}\nmedia type   {}\nsize         {} bytes ({} uncompressed, ratio {:.3})\n",
        r.digest,
        r.diff_id,
        r.media_type,
        r.size,
        r.uncompressed_size,
        r.size as f64 / r.uncompressed_size.max(1) as f64
    );
    text += &format!(
        "walked       {} entries in {:.2} s\nread         {} bytes\ntarred       {} bytes\ncompressed   {} → {} bytes on {} thread(s)\nwall         {:.2} s\n",
        s.files_walked, s.walk_seconds, s.bytes_read, s.bytes_tarred, s.bytes_compressed_in, s.bytes_written,
        s.compress_threads, s.wall_seconds
    );
    for (stage, mbs) in s.throughput() {
        text += &format!("{stage:<12} {mbs:.1} MB/s\n");
    }
    out(&text)
}
