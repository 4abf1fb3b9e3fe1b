//! What is checked before any step runs, so a build fails in seconds rather than after an hour
//! of steps: RUN mounts that cannot be provided (secrets, or `required` ssh agents, not given), the
//! `network.host` entitlement, a RUN program missing from its base image; starting the
//! sandbox once per build, which learns what this machine allows; and the emulator of each
//! foreign-platform stage with RUN steps.
use std::path::Path;

use crate::dockerfile::instructions::MountType;
use crate::dockerfile::Position;
use crate::image::Image;
use crate::plan::{Base, BuildPlan, CacheKeys, StageId, Step, StepKind};
use crate::progress::Reporter;
use crate::sandbox::{
    self, probe, Emulator, Sandbox, SandboxError, SandboxOptions, SnapshotterKind, UserNsSandbox,
};
use std::collections::BTreeMap;

use super::error::{Error, Result, StepError};
use super::fsindex::FsIndex;
use super::inputs::Env;
use super::state::StageState;
use super::step::mounts::{network, secret_id_target, ssh_id, MountError};

fn run_steps(plan: &BuildPlan) -> impl Iterator<Item = (&Step, &crate::plan::RunStep)> {
    plan.stages
        .iter()
        .flat_map(|s| s.steps.iter())
        .filter_map(|s| match &s.kind {
            StepKind::Run(r) => Some((s, r)),
            _ => None,
        })
}

/// Whether any reachable stage has a RUN step.
pub(super) fn has_run(plan: &BuildPlan) -> bool {
    run_steps(plan).next().is_some()
}

/// Checks every RUN step's mounts and network before any step runs.
pub(super) fn check_run_steps(env: Env<'_>, plan: &BuildPlan) -> Result<()> {
    for (step, r) in run_steps(plan) {
        check_mounts(env, r)
            .and_then(|()| check_network(env, r))
            .map_err(|e| Error::step(env.file, step, e))?;
    }
    Ok(())
}

/// RUN steps that use the host's network need the `network.host` entitlement
/// (`--allow network.host`), as in BuildKit (`entitlements.EntitlementNetworkHost`, which the
/// solver checks for every ExecOp with `NetMode_HOST`).
fn check_network(env: Env<'_>, r: &crate::plan::RunStep) -> Result<(), StepError> {
    if env.opts.allow_network_host || r.network.as_deref() != Some("host") {
        return Ok(());
    }
    let what = if env.opts.network == sandbox::Network::Host {
        "`--network host`"
    } else {
        "`RUN --network=host`"
    };
    Err(StepError::NetworkHost { what })
}

/// Secrets that were not given (unless `required=false`), ssh agents that were not given
/// (when `required=true`).
fn check_mounts(env: Env<'_>, r: &crate::plan::RunStep) -> Result<(), StepError> {
    for pm in &r.mounts {
        let m = &pm.mount;
        match m.mount_type() {
            MountType::Secret => {
                let (id, _) = secret_id_target(m);
                if id.is_empty() {
                    return Err(MountError::NoSecretId.into());
                }
                // BuildKit skips a missing secret silently unless `required=true`; kiln refuses
                // it unless `required=false`, because a step that silently lacks its
                // credentials fails later, far from the cause.
                if !env.opts.secrets.contains_key(&id) && m.required != Some(false) {
                    return Err(MountError::SecretMissing { id }.into());
                }
            }
            // As BuildKit: an agent that was not given skips the mount unless `required=true`.
            MountType::Ssh => {
                let id = ssh_id(m);
                if m.required == Some(true) && !env.opts.ssh.contains_key(id) {
                    return Err(MountError::SshMissing { id: id.into() }.into());
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Starts the sandbox and decides the snapshotter; its error says what is missing and the fix,
/// at the first RUN step. When a RUN step uses the default network, checks that it can be set
/// up here. The sandbox's warnings (single-id mode, …) go to `reporter`.
pub(super) fn start(
    env: Env<'_>,
    plan: &BuildPlan,
    scratch: &Path,
    reporter: &dyn Reporter,
) -> Result<(UserNsSandbox, SnapshotterKind)> {
    let opts = env.opts;
    let default_network =
        run_steps(plan).any(|(_, r)| matches!(network(r), Ok(sandbox::Network::Default)));
    let started = (|| {
        let sandbox = UserNsSandbox::new(SandboxOptions {
            helper_exe: opts.helper_exe.clone(),
            search_path: None,
            force_single_id: opts.single_id,
            etc_dir: std::path::PathBuf::from("/etc"),
            ..SandboxOptions::default()
        });
        let dir = scratch.join("probe");
        std::fs::create_dir_all(&dir).map_err(|source| SandboxError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let report = probe(&sandbox, &dir)?;
        let kind = report.snapshotter(opts.snapshotter)?;
        if default_network {
            sandbox.check_network()?;
        }
        // The probe's report already holds the sandbox's own warnings (single-id mode, …).
        for w in &report.warnings {
            reporter.on_warning(&w.to_string());
        }
        Ok((sandbox, kind))
    })();
    started.map_err(|e| {
        let (pos, instruction) = run_steps(plan)
            .next()
            .map(|(s, _)| (s.position, s.name.clone()))
            .unwrap_or((Position { line: 1, col: 1 }, String::new()));
        Error::Sandbox {
            file: env.file.to_string(),
            line: pos.line,
            col: pos.col,
            instruction,
            source: Box::new(e),
        }
    })
}

/// The emulator of every stage with RUN steps for a platform this host does not run natively
/// (`FROM --platform=linux/arm64`, `--platform linux/arm64` on amd64), asked of the sandbox
/// once per platform; a platform nothing runs fails here, at its first RUN step, naming the
/// packages to install and the native-runner alternative.
pub(super) fn emulators(
    env: Env<'_>,
    plan: &BuildPlan,
    sandbox: &dyn Sandbox,
) -> Result<BTreeMap<StageId, Emulator>> {
    let mut found: BTreeMap<String, Option<Emulator>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for id in &plan.order {
        let Some(stage) = plan.stage(*id) else {
            continue;
        };
        let Some(step) = stage
            .steps
            .iter()
            .find(|s| matches!(s.kind, StepKind::Run(_)))
        else {
            continue;
        };
        let platform = stage.platform.to_oci();
        let e = match found.get(&platform.to_string()) {
            Some(e) => e.clone(),
            None => {
                let e = sandbox.emulator(&platform).map_err(|e| Error::Sandbox {
                    file: env.file.to_string(),
                    line: step.position.line,
                    col: step.position.col,
                    instruction: step.name.clone(),
                    source: Box::new(e),
                })?;
                found.insert(platform.to_string(), e.clone());
                e
            }
        };
        if let Some(e) = e {
            out.insert(stage.id, e);
        }
    }
    Ok(out)
}

/// The error for a RUN whose program (`argv[0]`, absolute: the shell of a shell-form RUN) is
/// not in the image, or `None` when it is (or is not absolute: found through `PATH`).
pub(super) fn missing_program(index: &FsIndex, argv: &[String]) -> Option<StepError> {
    let a0 = argv.first().filter(|a| a.starts_with('/'))?;
    let p = index.resolve(a0.as_bytes(), true);
    index.get(&p).is_none().then(|| StepError::MissingProgram {
        program: a0.clone(),
    })
}

/// A RUN needs its program (for the shell form, the stage's shell) in the image. Where nothing
/// before a RUN in its stage can have added it (the stage starts from an image or `scratch`,
/// and no COPY, ADD or other RUN comes first), a missing program is reported here, before any
/// step of the build runs. RUN steps the cache will answer (`hit`: the store's or a
/// `--cache-from`'s, not for a `--no-cache-filter` stage) are not checked: they do not run,
/// and their base's layers need not be read.
pub(super) fn check_programs(
    env: Env<'_>,
    plan: &BuildPlan,
    keys: &CacheKeys,
    images: &BTreeMap<super::inputs::ImageKey, Image>,
    hit: &dyn Fn(StageId, &str) -> bool,
) -> Result<()> {
    for id in &plan.order {
        let Some(stage) = plan.stage(*id) else {
            continue;
        };
        let mut state = match &stage.base {
            Base::Image { reference } => {
                match images.get(&(reference.clone(), stage.platform.to_string())) {
                    Some(img) => StageState::from_image(img),
                    None => continue,
                }
            }
            Base::Scratch => StageState::scratch(&stage.platform.to_oci()),
            Base::Stage { .. } => continue,
        };
        let Some((index, step)) = stage
            .steps
            .iter()
            .enumerate()
            .find(|(_, s)| matches!(s.kind, StepKind::Run(_) | StepKind::Copy(_)))
        else {
            continue;
        };
        let StepKind::Run(r) = &step.kind else {
            continue;
        };
        let key = env
            .opts
            .layer_key(keys.step(stage.id, index).unwrap_or_default());
        if !env.opts.no_cache && hit(stage.id, &key) {
            continue;
        }
        let fail = |e: StepError| Error::step(env.file, step, e);
        if let Some(e) = missing_program(state.index(env.layers()).map_err(fail)?, &r.argv) {
            return Err(fail(e));
        }
    }
    Ok(())
}
