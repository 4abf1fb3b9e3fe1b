//! `kiln copy SRC DST`: between the local store and the local transports.
use crate::oci::{Descriptor, Platform};
use crate::progress::Reporter;
use crate::store::Store;
use crate::transport::{
    read_all_into_store, read_base_into_store, read_into_store, write_all_from_store,
    write_from_store, Target,
};

use super::Result;

/// Options of `kiln copy`.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Where the image is.
    pub source: Target,
    /// Where it goes.
    pub dest: Target,
    /// Which platform to take from an index (host's by default).
    pub platform: Option<Platform>,
    /// The registry client, for `docker://` references.
    pub remote: Option<crate::transport::Remote>,
    /// `--all`: an index with every manifest it lists (the same index digest), not one platform.
    pub all: bool,
}

/// Copies an image; returns the manifest descriptor written.
pub fn copy(store: &Store, opts: &CopyOptions, reporter: &dyn Reporter) -> Result<Descriptor> {
    reporter.on_status(&format!("reading {}", opts.source));
    // Registry to registry: layers are not stored here; the push mounts or skips them in the
    // destination registry, or streams them from the source (verified on the way).
    let to_registry = matches!(opts.dest, Target::Registry(_));
    if opts.all {
        if opts.platform.is_some() {
            return Err(crate::transport::Error::InvalidTarget {
                value: opts.source.to_string(),
                reason: "--all copies every platform; it cannot be combined with --platform".into(),
            }
            .into());
        }
        let tree = read_all_into_store(store, &opts.source, opts.remote.as_ref(), to_registry)?;
        reporter.on_status(&format!("writing {}", opts.dest));
        return Ok(write_all_from_store(
            store,
            &tree,
            &opts.dest,
            None,
            opts.remote.as_ref(),
        )?);
    }
    let read = if to_registry {
        read_base_into_store
    } else {
        read_into_store
    };
    let image = read(
        store,
        &opts.source,
        opts.platform.as_ref(),
        opts.remote.as_ref(),
    )?;
    let name = match &opts.source {
        Target::Store(n) => Some(n.as_str()),
        Target::DockerArchive(_, Some(n)) if !n.starts_with('@') => Some(n.as_str()),
        _ => None,
    };
    reporter.on_status(&format!("writing {}", opts.dest));
    Ok(write_from_store(
        store,
        &image,
        &opts.dest,
        name,
        opts.remote.as_ref(),
    )?)
}
