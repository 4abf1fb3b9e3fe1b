//! RUN as a step: the user, environment, mounts and network of the command, a snapshot of the
//! stage's files, the sandbox, and the diff as layer entries. The command's failure is a
//! [`StepError::Run`] with its exit status and last output lines.
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use crate::dockerfile::instructions::MountType;
use crate::layer::Entry;
use crate::plan::{RunStep, Source};
use crate::sandbox::{self, RunSpec, Snapshot, SnapshotterKind, SshAgent};

use super::super::error::StepError;
use super::super::preflight::missing_program;
use super::super::stage::StepAt;
use super::super::state::StageState;
use super::super::user::resolve_exec_user;
use super::super::Builder;
use super::diff::{diff_entries, stamp_fresh_mtimes};
use super::mounts::{mounts, network, ssh_id, MountEnv, MountError};

/// How many output lines a failed RUN's error shows.
const TAIL_LINES: usize = 20;

/// The last lines of a command's output.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    partial: String,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.partial.push_str(&String::from_utf8_lossy(bytes));
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            self.lines.push_back(line.trim_end().to_string());
            if self.lines.len() > TAIL_LINES {
                self.lines.pop_front();
            }
        }
    }

    fn finish(mut self) -> Vec<String> {
        if !self.partial.is_empty() {
            self.lines.push_back(std::mem::take(&mut self.partial));
        }
        self.lines.into()
    }
}

impl Builder<'_> {
    /// Runs one RUN step of `state` in the sandbox; returns its layer entries.
    pub(in crate::builder) fn run_step(
        &mut self,
        r: &RunStep,
        at: &StepAt<'_>,
        state: &mut StageState,
    ) -> Result<Vec<Entry>, StepError> {
        let host = self.host.ok_or_else(|| StepError::NotReady {
            what: "the sandbox".into(),
        })?;
        let mut spec = self.run_spec(r, state)?;
        let layer_key = self.opts.layer_key(at.key);
        self.cache_mounts(r, &spec.mounts, &layer_key);
        if let Some(e) = at.emulator {
            // A handler without `F` needs its interpreter inside the step's root: bound
            // read-only, its mount point a stub the sandbox removes (never in the diff).
            spec.mounts.splice(0..0, e.binds());
            self.reporter.on_status(&format!(
                "step {}: {} runs under emulation: {}",
                at.id,
                e.platform,
                e.describe()
            ));
        }
        let step_dir = self.scratch.join(format!("step-{}", at.id));
        std::fs::create_dir_all(&step_dir).map_err(StepError::io("create", &step_dir))?;
        let snap = match host.kind {
            SnapshotterKind::Overlay => {
                Snapshot::overlay(state.lowers(self.disk(), at.stage_name)?, &step_dir)?
            }
            SnapshotterKind::Walk => Snapshot::walk(state.rootfs(self.disk(), at.stage_name)?),
        };
        let mut tail = Tail::default();
        let reporter = self.reporter;
        let outcome = host.sandbox.run(&snap, &spec, &mut |_, bytes| {
            reporter.on_run_output(at.id, bytes);
            tail.push(bytes);
        })?;
        for w in &outcome.warnings {
            self.reporter.on_warning(&w.to_string());
        }
        if !outcome.status.success() {
            return Err(StepError::Run {
                argv: r.argv.clone(),
                status: outcome.status,
                tail: tail.finish(),
            });
        }
        let mut entries = diff_entries(&outcome.diff, state.index(self.layers())?);
        stamp_fresh_mtimes(&mut entries, self.started, self.opts.epoch);
        Ok(entries)
    }

    /// What the sandbox runs: the command, its environment, user, working directory, network
    /// and mounts.
    fn run_spec(&mut self, r: &RunStep, state: &mut StageState) -> Result<RunSpec, StepError> {
        let user = match r.user.as_deref().filter(|u| !u.is_empty()) {
            Some(u) => {
                let o = resolve_exec_user(state.index(self.layers())?, u)?;
                sandbox::User {
                    uid: o.uid,
                    gid: o.gid,
                    additional_gids: o.additional_gids,
                }
            }
            None => sandbox::User::default(),
        };
        if let Some(e) = missing_program(state.index(self.layers())?, &r.argv) {
            return Err(e);
        }
        // The files of the stages and images bind mounts name with `from=`.
        let mut tree_roots = Vec::with_capacity(r.mounts.len());
        for pm in &r.mounts {
            let root = match (&pm.source, pm.mount.mount_type()) {
                (Source::Stage { .. } | Source::Image { .. }, MountType::Bind) => {
                    self.source_root(&pm.source)?
                }
                _ => None,
            };
            tree_roots.push(root);
        }
        let ssh = self.ssh_agents(r)?;
        let (mounts, extra_env) = mounts(
            r,
            &MountEnv {
                ssh: &ssh,
                store_root: self.store.root(),
                context_root: self.context.root(),
                secrets: &self.opts.secrets,
                tree_roots: &tree_roots,
            },
        )?;
        let mut env = r.env.clone();
        env.extend(r.proxy_env.iter().cloned());
        env.extend(extra_env);
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.insert(0, ("PATH".into(), sandbox::DEFAULT_PATH.into()));
        }
        // The build epoch, as BuildKit exposes the `SOURCE_DATE_EPOCH` build arg to RUN
        // (moby/buildkit#2918): dpkg, pip and py_compile (hash-checked `.pyc` files, valid
        // whatever the sources' clamped mtimes) then build reproducibly. Always set, since kiln
        // always has an epoch; a step's own ENV or ARG of the name wins.
        if !env.iter().any(|(k, _)| k == "SOURCE_DATE_EPOCH") {
            env.push(("SOURCE_DATE_EPOCH".into(), self.opts.epoch.to_string()));
        }
        Ok(RunSpec {
            argv: r.argv.clone(),
            env,
            cwd: r.workdir.clone(),
            user,
            network: network(r)?,
            mounts,
            // BuildKit's hostname inside RUN steps; some build scripts look for it.
            hostname: "buildkitsandbox".into(),
            extra_hosts: self.opts.add_hosts.clone(),
        })
    }

    /// The agents of the step's ssh mounts that were given (`--ssh`), started on first use,
    /// as id → socket.
    fn ssh_agents(&mut self, r: &RunStep) -> Result<BTreeMap<String, PathBuf>, StepError> {
        let mut out = BTreeMap::new();
        for pm in &r.mounts {
            if pm.mount.mount_type() != MountType::Ssh {
                continue;
            }
            let id = ssh_id(&pm.mount);
            let Some(source) = self.opts.ssh.get(id) else {
                continue;
            };
            if !self.ssh_agents.contains_key(id) {
                let agent = SshAgent::start(source).map_err(|source| MountError::SshAgent {
                    id: id.into(),
                    source,
                })?;
                self.ssh_agents.insert(id.to_string(), agent);
            }
            out.insert(id.to_string(), self.ssh_agents[id].socket().to_owned());
        }
        Ok(out)
    }
}
