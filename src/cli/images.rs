//! `kiln copy`, `kiln inspect`, `kiln images`.
use clap::Args;

use crate::oci::Platform;
use crate::ops::{self, CopyOptions};
use crate::transport::Target;

use super::{out, out_json, CliResult, Context, Format};

/// Arguments of `kiln copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Source: a store name, `oci:DIR[:REF]`, `oci-archive:FILE[:REF]`, `docker-archive:FILE[:NAME:TAG]`.
    pub source: Target,
    /// Destination, in the same forms.
    pub dest: Target,
    /// Which platform to take from a multi-platform source [default: the host's].
    #[arg(long)]
    pub platform: Option<Platform>,
}

/// Arguments of `kiln inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image: a store name or a transport reference.
    pub image: Target,
    /// Which platform to take from a multi-platform image [default: the host's].
    #[arg(long)]
    pub platform: Option<Platform>,
}

/// Arguments of `kiln images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub(crate) fn copy(ctx: &Context, a: CopyArgs) -> CliResult {
    let store = ctx.store()?;
    let d = ops::copy(
        &store,
        &CopyOptions {
            source: a.source,
            dest: a.dest,
            platform: a.platform,
            remote: Some(ctx.remote()?),
        },
        ctx.reporter().as_ref(),
    )?;
    out(&d.digest.to_string())
}

pub(crate) fn inspect(ctx: &Context, a: InspectArgs) -> CliResult {
    let store = ctx.store()?;
    out_json(&ops::inspect(
        &store,
        &a.image,
        a.platform.as_ref(),
        Some(&ctx.remote()?),
    )?)
}

pub(crate) fn images(ctx: &Context, a: ImagesArgs) -> CliResult {
    let store = ctx.store()?;
    let list = ops::images(&store)?;
    if a.format == Format::Json {
        return out_json(&list);
    }
    let mut text = format!(
        "{:<48} {:<19} {:>12}  {}\n",
        "NAME", "DIGEST", "SIZE", "CREATED"
    );
    for i in &list {
        text += &format!(
            "{:<48} {:<19} {:>12}  {}\n",
            i.name,
            i.digest.short(),
            i.size,
            i.created.as_deref().unwrap_or("-")
        );
    }
    out(&text)
}
