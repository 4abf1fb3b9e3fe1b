//! `kiln copy`, `kiln inspect`, `kiln images`, `kiln rmi`.
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
    /// Copy a whole multi-platform index: every manifest and the index itself (same digest).
    #[arg(long)]
    pub all: bool,
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
            all: a.all,
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

/// Arguments of `kiln rmi`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// The names to remove (`app` means `app:latest`).
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// Removes each name; a name the store does not have is an error (exit 2) after the others
/// are removed, like `podman rmi`.
pub(crate) fn rmi(ctx: &Context, a: RmiArgs) -> CliResult {
    let store = ctx.store()?;
    let mut missing = Vec::new();
    let mut text = String::new();
    for name in &a.names {
        if store.untag(name)? {
            text += &format!("untagged {name}\n");
        } else {
            missing.push(name.as_str());
        }
    }
    if !missing.is_empty() {
        print!("{text}");
        return Err(anyhow::anyhow!(
            "no image named {} in the store `{}`",
            missing.join(", "),
            store.root().display()
        )
        .into());
    }
    out(&text)
}
