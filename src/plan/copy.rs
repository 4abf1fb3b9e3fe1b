//! COPY and ADD → [`CopyStep`]: expanded sources, destination under WORKDIR, heredoc files,
//! `--chown`/`--chmod`/`--checksum`, the content source and the key inputs it adds. Methods of
//! the stage planner ([`super::steps`]), which calls them without importing this file.
use super::history::{is_git_source, resolve_under};
use super::key::Input;
use super::scope::undefined;
use super::steps::StagePlanner;
use super::{CopyStep, InlineFile, PlanError, PlanErrorKind, Source};
use crate::dockerfile::instructions::{Add, Command, Copy};
use crate::dockerfile::lex::Lexer;

impl StagePlanner<'_, '_> {
    /// `COPY`: its sources (context, stage or image), destination and options.
    pub(super) fn plan_copy_instruction(
        &mut self,
        cmd: &Command,
        c: &Copy,
        inputs: &mut Vec<Input>,
    ) -> Result<(CopyStep, String), PlanError> {
        let l = CopyLike {
            add: false,
            srcs: &c.sources,
            inline: &c.inline,
            dest: &c.dest,
            from: c.from.clone(),
            chown: &c.chown,
            chmod: &c.chmod,
            link: c.link,
            parents: c.parents,
            excludes: &c.excludes,
            keep_git_dir: false,
            checksum: &None,
            unpack: None,
        };
        self.plan_copy(cmd, l, inputs)
    }

    /// `ADD`: as COPY, plus URL and git sources, `--checksum`, `--keep-git-dir`, `--unpack`.
    pub(super) fn plan_add_instruction(
        &mut self,
        cmd: &Command,
        a: &Add,
        inputs: &mut Vec<Input>,
    ) -> Result<(CopyStep, String), PlanError> {
        let l = CopyLike {
            add: true,
            srcs: &a.sources,
            inline: &a.inline,
            dest: &a.dest,
            from: None,
            chown: &a.chown,
            chmod: &a.chmod,
            link: a.link,
            parents: false,
            excludes: &a.excludes,
            keep_git_dir: a.keep_git_dir,
            checksum: &a.checksum,
            unpack: a.unpack,
        };
        self.plan_copy(cmd, l, inputs)
    }

    fn plan_copy(
        &mut self,
        cmd: &Command,
        l: CopyLike<'_>,
        inputs: &mut Vec<Input>,
    ) -> Result<(CopyStep, String), PlanError> {
        let CopyLike {
            add,
            srcs,
            inline,
            dest,
            from,
            chown,
            chmod,
            link,
            parents,
            excludes,
            ..
        } = l;
        let source = self.content_source(&from, cmd)?;
        let mut sources = Vec::new();
        for s in srcs {
            sources.push(self.exp(s, cmd)?);
        }
        let dest_x = self.exp(dest, cmd)?;
        let mut files = Vec::new();
        for f in inline {
            let data = if f.expand {
                let mut lex = Lexer::new(self.cx.df.escape);
                lex.skip_process_quotes = true;
                let env = self.state.env.clone();
                let r = lex.process_word(&f.data, &env).map_err(|e| {
                    self.cx
                        .err(PlanErrorKind::Expand(e), cmd.span, cmd.position)
                })?;
                if self.state.env_complete {
                    undefined(self.cx, &r.unmatched, cmd);
                }
                r.result
            } else {
                f.data.clone()
            };
            files.push(InlineFile {
                name: f.name.clone(),
                data,
            });
        }
        let chown = self.exp_opt(chown, cmd)?;
        let chmod = self.exp_opt(chmod, cmd)?;
        let (keep_git_dir, unpack) = (l.keep_git_dir, l.unpack);
        let checksum = self.exp_opt(l.checksum, cmd)?;
        // A relative destination is under WORKDIR; a trailing slash (or `.`) means a directory.
        let dir = dest_x.ends_with('/') || dest_x == "." || dest_x.ends_with("/.");
        let mut resolved = resolve_under(&self.state.workdir, &dest_x);
        if dir && !resolved.ends_with('/') {
            resolved.push('/');
        }
        match &source {
            Source::Context => {
                let mut local = Vec::new();
                for s in &sources {
                    if add && is_git_source(s) {
                        inputs.push(Input::Git { url: s.clone() });
                    } else if add && (s.starts_with("http://") || s.starts_with("https://")) {
                        inputs.push(Input::Url { url: s.clone() });
                    } else {
                        local.push(s.clone());
                    }
                }
                if !local.is_empty() {
                    inputs.insert(
                        0,
                        Input::Context {
                            paths: local,
                            excludes: excludes.to_vec(),
                        },
                    );
                }
            }
            Source::Stage { stage } => inputs.push(Input::Stage { stage: *stage }),
            Source::Image { reference } => inputs.push(Input::Image {
                reference: reference.clone(),
                platform: String::new(),
            }),
        }
        let mut cb = String::from(if add { "ADD" } else { "COPY" });
        for s in &sources {
            cb.push(' ');
            cb.push_str(s);
        }
        for f in &files {
            cb.push_str(" <<");
            cb.push_str(&f.name);
        }
        cb.push(' ');
        cb.push_str(&dest_x);
        cb.push_str(" # buildkit");
        Ok((
            CopyStep {
                add,
                source,
                sources,
                inline: files,
                dest: resolved,
                chown,
                chmod,
                link,
                parents,
                excludes: excludes.to_vec(),
                keep_git_dir,
                checksum,
                unpack,
            },
            cb,
        ))
    }
}

/// The fields COPY and ADD share.
struct CopyLike<'a> {
    add: bool,
    srcs: &'a [String],
    inline: &'a [crate::dockerfile::instructions::InlineSource],
    dest: &'a str,
    from: Option<String>,
    chown: &'a Option<String>,
    chmod: &'a Option<String>,
    link: bool,
    parents: bool,
    excludes: &'a [String],
    keep_git_dir: bool,
    checksum: &'a Option<String>,
    unpack: Option<bool>,
}
