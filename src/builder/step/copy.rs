//! COPY and ADD as a step: resolves `--chown` and `--chmod`, finds the source filesystem (the
//! context, another stage, an image) and hands them to the copy rules of `super::super::copy`.
use crate::layer::Entry;
use crate::plan::{CopyStep, Source};

use super::super::copy::{copy_entries, parse_chmod, CopyInput, SourceFs};
use super::super::error::StepError;
use super::super::fsindex::FsIndex;
use super::super::state::StageState;
use super::super::user::resolve_owner;
use super::super::Builder;

impl Builder<'_> {
    /// The entries of a COPY or ADD step into `state`.
    pub(in crate::builder) fn copy_step(
        &mut self,
        c: &CopyStep,
        state: &mut StageState,
    ) -> Result<Vec<Entry>, StepError> {
        let chmod = c.chmod.as_deref().map(parse_chmod).transpose()?;
        let owner = match &c.chown {
            Some(spec) => Some(resolve_owner(state.index(self.layers())?, spec)?),
            None => None,
        };
        // `COPY --from=NAME` of a directory `--build-context`: read like the context.
        let named = match &c.source {
            Source::Image { reference } => match self.opts.named_context(reference) {
                Some(crate::builder::NamedContext::Dir(d)) => Some(
                    crate::builder::context::Context::new(d.clone(), Default::default()),
                ),
                _ => None,
            },
            _ => None,
        };
        let tree = match (&c.source, &named) {
            (Source::Context, _) | (_, Some(_)) => None,
            (other, None) => self.source_tree(other)?,
        };
        let dest = if c.link {
            FsIndex::default()
        } else {
            state.index(self.layers())?.clone()
        };
        let source = match &tree {
            None if named.is_some() => SourceFs::Context(named.as_ref().expect("checked")),
            None => SourceFs::Context(&self.context),
            Some((index, root)) => SourceFs::Tree {
                index,
                rootfs: root,
            },
        };
        let gits = self
            .gits
            .iter()
            .map(|(url, g)| (url.clone(), (g.context.clone(), g.commit.clone())))
            .collect();
        let input = CopyInput {
            source,
            dest: &dest,
            owner,
            chmod,
            scratch: self.scratch,
            urls: &self.urls,
            gits: &gits,
            epoch: self.opts.epoch,
        };
        Ok(copy_entries(c, &input)?)
    }
}
