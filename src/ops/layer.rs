//! `kiln layer DIR`: one directory → one layer blob in the store, with per-stage counters.
use std::path::PathBuf;

use serde::Serialize;

use crate::layer::{LayerOptions, LayerStats, LayerWriter, WalkOptions};
use crate::oci::{Digest, MediaType};
use crate::progress::Reporter;
use crate::store::Store;

use super::Result;

/// Options of `kiln layer`.
#[derive(Debug, Clone)]
pub struct LayerCommandOptions {
    /// The directory to turn into a layer.
    pub dir: PathBuf,
    /// Compression, threads and epoch.
    pub layer: LayerOptions,
}

/// The layer written, and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct LayerResult {
    /// The blob's digest.
    pub digest: Digest,
    /// SHA-256 of the uncompressed tar.
    pub diff_id: Digest,
    /// The media type.
    pub media_type: MediaType,
    /// The blob's size.
    pub size: u64,
    /// The tar's size.
    pub uncompressed_size: u64,
    /// Per-stage counters.
    pub stats: LayerStats,
}

/// Writes the layer of `opts.dir` into the store.
pub fn layer(
    store: &Store,
    opts: &LayerCommandOptions,
    reporter: &dyn Reporter,
) -> Result<LayerResult> {
    reporter.on_status(&format!("writing layer of {}", opts.dir.display()));
    let mut w = LayerWriter::new(store.blob_writer()?, opts.layer)?;
    w.append_dir(&opts.dir, &WalkOptions::default())?;
    let (blob, summary) = w.finish()?;
    let (digest, size) = blob.finish()?;
    Ok(LayerResult {
        digest,
        diff_id: summary.diff_id,
        media_type: summary.media_type,
        size,
        uncompressed_size: summary.uncompressed_size,
        stats: summary.stats,
    })
}
