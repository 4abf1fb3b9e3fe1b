//! Config edits (ENV, LABEL, CMD, ENTRYPOINT, USER, EXPOSE, VOLUME, STOPSIGNAL, SHELL,
//! HEALTHCHECK, ONBUILD, MAINTAINER) and the directories WORKDIR creates.
use crate::layer::Entry;
use crate::oci::{self, ImageConfig};
use crate::plan::ConfigEdit;

use super::super::fsindex::{FsIndex, NodeKind};
use super::super::user::Owner;

/// Applies `edit` to the image config. Dockerfile semantics are the planner's: whether an
/// ENTRYPOINT resets the CMD is decided there (`reset_cmd`), not here.
pub(in crate::builder) fn apply_config(cfg: &mut ImageConfig, edit: &ConfigEdit) {
    let c = &mut cfg.config;
    match edit {
        ConfigEdit::Env { pairs } => {
            let env = c.env.get_or_insert_with(Vec::new);
            for (k, v) in pairs {
                let kv = format!("{k}={v}");
                match env
                    .iter_mut()
                    .find(|e| e.split_once('=').map(|x| x.0) == Some(k.as_str()))
                {
                    Some(e) => *e = kv,
                    None => env.push(kv),
                }
            }
        }
        ConfigEdit::Label { pairs } => {
            for (k, v) in pairs {
                c.labels.insert(k.clone(), v.clone());
            }
        }
        ConfigEdit::Arg { .. } => {}
        ConfigEdit::Cmd { command } => {
            c.cmd = Some(command.clone());
        }
        ConfigEdit::Entrypoint { command, reset_cmd } => {
            c.entrypoint = command.clone();
            // The planner decided: an ENTRYPOINT resets a CMD the stage inherited.
            if *reset_cmd {
                c.cmd = None;
            }
        }
        ConfigEdit::User { user } => c.user = Some(user.clone()),
        ConfigEdit::Expose { ports } => {
            for p in ports {
                c.exposed_ports.insert(p.clone(), serde_json::json!({}));
            }
        }
        ConfigEdit::Volume { paths } => {
            for p in paths {
                c.volumes.insert(p.clone(), serde_json::json!({}));
            }
        }
        ConfigEdit::StopSignal { signal } => c.stop_signal = Some(signal.clone()),
        ConfigEdit::Shell { shell } => c.shell = Some(shell.clone()),
        ConfigEdit::Healthcheck { check } => {
            use crate::dockerfile::instructions::Healthcheck as H;
            let nz = |v: i64| (v != 0).then_some(v);
            c.healthcheck = Some(match check {
                H::None => oci::Healthcheck {
                    test: vec!["NONE".into()],
                    ..Default::default()
                },
                H::Cmd {
                    test,
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                } => oci::Healthcheck {
                    test: test.clone(),
                    interval: nz(*interval),
                    timeout: nz(*timeout),
                    start_period: nz(*start_period),
                    start_interval: nz(*start_interval),
                    retries: nz(*retries),
                    ..Default::default()
                },
            });
        }
        ConfigEdit::Onbuild { expression } => c
            .on_build
            .get_or_insert_with(Vec::new)
            .push(expression.clone()),
        ConfigEdit::Maintainer { name } => cfg.author = Some(name.clone()),
    }
}

/// Directories WORKDIR must create: the missing components of `path`.
pub(in crate::builder) fn workdir_entries(
    index: &FsIndex,
    path: &str,
    owner: Option<Owner>,
) -> Vec<Entry> {
    let resolved = index.resolve(path.as_bytes(), true);
    let mut out = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    for c in resolved.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        if !cur.is_empty() {
            cur.push(b'/');
        }
        cur.extend_from_slice(c);
        match index.get(&cur) {
            Some(n) if n.kind == NodeKind::Dir => {}
            _ => {
                let mut e = Entry::dir(cur.clone(), 0o755);
                if let Some(o) = owner {
                    e.uid = o.uid;
                    e.gid = o.gid;
                }
                out.push(e);
            }
        }
    }
    out
}

impl super::super::Builder<'_> {
    /// The directories WORKDIR creates, owned by the stage's USER; `None` when the directory
    /// exists (no layer).
    pub(in crate::builder) fn workdir_step(
        &mut self,
        path: &str,
        state: &mut super::super::state::StageState,
    ) -> Result<Option<Vec<Entry>>, super::super::StepError> {
        let user = state
            .builder
            .config_mut()
            .config
            .user
            .clone()
            .filter(|u| !u.is_empty());
        let index = state.index(self.layers())?;
        let owner = match &user {
            Some(u) => Some(super::super::user::resolve_owner(index, u)?),
            None => None,
        };
        Ok(Some(workdir_entries(index, path, owner)).filter(|e| !e.is_empty()))
    }
}
