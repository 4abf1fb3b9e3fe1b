//! `kiln index create -t REF IMAGE...`: merges single-platform images into one OCI index.
use clap::{Args, Subcommand};

use crate::ops::{self, IndexOptions};
use crate::transport::Target;

use super::{out_json, CliResult, Context};

/// `kiln index` subcommands.
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Merge images (store names or docker:// references) into one index.
    Create(CreateArgs),
}

/// Arguments of `kiln index create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The index's name: a store name, or `docker://REF` to push it (and keep it in the store).
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub tag: String,
    /// The images, one per platform.
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub(crate) fn run(ctx: &Context, c: IndexCommand) -> CliResult {
    match c {
        IndexCommand::Create(a) => {
            let store = ctx.store()?;
            let opts = IndexOptions {
                dest: a.tag.parse::<Target>()?,
                images: a
                    .images
                    .iter()
                    .map(|i| i.parse::<Target>())
                    .collect::<Result<_, _>>()?,
                remote: Some(ctx.remote()?),
            };
            let r = ops::create_index(&store, &opts, ctx.reporter().as_ref())?;
            out_json(&r)
        }
    }
}
