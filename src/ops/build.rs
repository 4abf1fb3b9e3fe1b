//! `kiln build`: runs the builder and writes the metadata file.
use serde_json::json;

use crate::builder::{self, BuildOptions, BuildOutcome};
use crate::progress::Reporter;
use crate::store::Store;

/// Builds; see [`crate::builder::build`].
pub fn build(
    store: &Store,
    opts: &BuildOptions,
    reporter: &dyn Reporter,
) -> builder::Result<BuildOutcome> {
    builder::build(store, opts, reporter)
}

/// The `--metadata-file` document: buildx's keys, plus each layer and step.
pub fn metadata(outcome: &BuildOutcome) -> serde_json::Value {
    let img = &outcome.image;
    json!({
        "image.name": outcome.names.join(","),
        "containerimage.digest": img.digest().to_string(),
        "containerimage.config.digest": img.manifest.config.digest.to_string(),
        "containerimage.descriptor": {
            "mediaType": img.descriptor.media_type.to_string(),
            "digest": img.digest().to_string(),
            "size": img.descriptor.size,
        },
        "names": outcome.names,
        "layers": outcome.layers,
        "steps": outcome.steps,
        "context": {
            "files_hashed": outcome.context_files_hashed,
            "files_reused": outcome.context_files_reused,
        },
    })
}
