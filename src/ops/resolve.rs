//! `kiln ensure`: makes the resolved image present in the store: pulls rules 1–4, builds rule 5,
//! and builds a fallback Dockerfile only when the pull fails and `--build-fallback` is given.
use serde::Serialize;

use crate::builder::BuildOptions;
use crate::progress::Reporter;
use crate::resolve::{Resolution, Rule};
use crate::store::Store;
use crate::transport::{self, Target};

/// What `ensure` did.
#[derive(Debug, Clone, Serialize)]
pub struct Ensured {
    /// The image reference (the local build's tag for rule 5 or a fallback).
    pub reference: String,
    /// The rule that chose it.
    pub rule: Rule,
    /// `pulled`, `built` or `built-fallback`.
    pub action: &'static str,
    /// The manifest digest in the store.
    pub digest: String,
    /// Why a fallback build happened (the pull's error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_error: Option<String>,
}

/// Why `ensure` failed.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    /// The pull failed (and no fallback was allowed or possible).
    #[error("cannot pull `{reference}` (chosen by rule {rule}){hint}")]
    Pull {
        /// The reference.
        reference: String,
        /// The rule number.
        rule: u8,
        /// What could be done.
        hint: String,
        /// The cause.
        #[source]
        source: Box<transport::Error>,
    },
    /// The build failed.
    #[error("cannot build `{reference}` from `{}`", dockerfile.display())]
    Build {
        /// The tag.
        reference: String,
        /// The Dockerfile.
        dockerfile: std::path::PathBuf,
        /// The cause.
        #[source]
        source: Box<crate::builder::Error>,
    },
}

/// Pulls or builds what `res` chose. `build` carries the shared build settings (its context,
/// Dockerfile and tags are replaced).
pub fn ensure(
    store: &Store,
    res: &Resolution,
    build_fallback: bool,
    build: &BuildOptions,
    reporter: &dyn Reporter,
) -> Result<Ensured, EnsureError> {
    let do_build = |df: &std::path::Path, ctx: &std::path::Path, tag: &str| {
        let mut b = build.clone();
        b.dockerfile = df.to_path_buf();
        b.context = ctx.to_path_buf();
        b.tags = vec![tag.to_string()];
        b.outputs = Vec::new();
        crate::builder::build(store, &b, reporter)
            .map(|o| o.image.digest().to_string())
            .map_err(|e| EnsureError::Build {
                reference: tag.to_string(),
                dockerfile: df.to_path_buf(),
                source: Box::new(e),
            })
    };
    if let (Rule::LocalBuild, Some(df), Some(ctx)) = (res.rule, &res.dockerfile, &res.context) {
        return Ok(Ensured {
            reference: res.reference.clone(),
            rule: res.rule,
            action: "built",
            digest: do_build(df, ctx, &res.reference)?,
            pull_error: None,
        });
    }
    let pulled = crate::registry::Reference::parse(&res.reference)
        .map_err(|e| transport::Error::Registry(Box::new(e)))
        .and_then(|r| {
            // A digest reference is stored under the repository's name, a tag under itself.
            let name = match r.digest() {
                Some(d) => format!("{}:digest-{}", r.name(), &d.hex()[..12.min(d.hex().len())]),
                None => r.to_string(),
            };
            crate::ops::copy(
                store,
                &crate::ops::CopyOptions {
                    source: Target::Registry(r.to_string()),
                    dest: name.parse::<Target>()?,
                    platform: Some(build.platform.clone()),
                    remote: build.remote.clone(),
                    all: false,
                },
                reporter,
            )
            .map_err(|e| match e {
                crate::ops::Error::Transport(t) => *t,
                other => transport::Error::Malformed {
                    location: res.reference.clone(),
                    reason: other.to_string(),
                },
            })
        });
    match pulled {
        Ok(d) => Ok(Ensured {
            reference: res.reference.clone(),
            rule: res.rule,
            action: "pulled",
            digest: d.digest.to_string(),
            pull_error: None,
        }),
        Err(e) => match (&res.fallback, build_fallback) {
            (Some((df, ctx, tag)), true) => Ok(Ensured {
                reference: tag.clone(),
                rule: res.rule,
                action: "built-fallback",
                digest: do_build(df, ctx, tag)?,
                pull_error: Some(format!("{e}")),
            }),
            (fallback, allowed) => Err(EnsureError::Pull {
                reference: res.reference.clone(),
                rule: res.rule.number(),
                hint: match (fallback, allowed) {
                    (Some((df, _, _)), false) => format!(
                        "; `--build-fallback` would build `{}` instead",
                        df.display()
                    ),
                    (None, true) => {
                        "; no Dockerfile to fall back to (set image.name and add one)".into()
                    }
                    _ => String::new(),
                },
                source: Box::new(e),
            }),
        },
    }
}
