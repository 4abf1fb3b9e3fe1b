//! RUN steps: starting the sandbox once per build, `RUN --mount`s, secrets, and turning the
//! sandbox's diff into layer entries.
//!
//! Secrets reach a step only as a file bound read-only at its target (default
//! `/run/secrets/<id>`) or, with `env=`, in its environment; the sandbox keeps mount points out
//! of the diff, history shows the RUN text (never the value) and cache keys hash the mount
//! options, not the secret.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::dockerfile::instructions::{Mount as DfMount, MountType};
use crate::layer::{Entry, EntryKind, FileSource};
use crate::plan::{BuildPlan, RunStep, Source, StepKind};
use crate::sandbox::{
    self, probe, ChangeKind, Diff, FileKind, Mount, MountKind, SandboxError, SandboxOptions,
    SandboxWarning, SnapshotterKind, UserNsSandbox,
};

use super::context::clean_rel;
use super::fsindex::{FsIndex, NodeKind};
use super::{BuildOptions, Secret};

/// The sandbox of a build, started before the first RUN.
pub(super) struct RunHost {
    pub(super) sandbox: UserNsSandbox,
    pub(super) kind: SnapshotterKind,
    pub(super) warnings: Vec<SandboxWarning>,
}

/// Whether any reachable stage has a RUN step.
pub(super) fn has_run(plan: &BuildPlan) -> bool {
    plan.stages
        .iter()
        .any(|s| s.steps.iter().any(|st| matches!(st.kind, StepKind::Run(_))))
}

/// RUN steps that use the host's network need the `network.host` entitlement
/// (`--allow network.host`), as in BuildKit (`entitlements.EntitlementNetworkHost`, which the
/// solver checks for every ExecOp with `NetMode_HOST`): the first one without it is an error (line,
/// column, instruction, message), before any step runs.
pub(super) fn check_network(
    plan: &BuildPlan,
    opts: &BuildOptions,
) -> Result<(), (usize, usize, String, String)> {
    if opts.allow_network_host {
        return Ok(());
    }
    for step in plan.stages.iter().flat_map(|s| s.steps.iter()) {
        let StepKind::Run(r) = &step.kind else {
            continue;
        };
        if r.network.as_deref() == Some("host") {
            let what = if opts.network == sandbox::Network::Host {
                "`--network host`"
            } else {
                "`RUN --network=host`"
            };
            return Err((
                step.position.line,
                step.position.col,
                step.created_by.clone(),
                format!(
                    "{what} needs the `network.host` entitlement: pass `--allow network.host` \
                     to let RUN steps share the host's network, its loopback services and \
                     abstract unix sockets included"
                ),
            ));
        }
    }
    Ok(())
}

/// Whether a RUN step of the plan uses the default network (pasta).
pub(super) fn has_default_network(plan: &BuildPlan) -> bool {
    plan.stages.iter().flat_map(|s| s.steps.iter()).any(|s| {
        matches!(&s.kind, StepKind::Run(r) if matches!(network(r), Ok(sandbox::Network::Default)))
    })
}

/// Starts the sandbox and decides the snapshotter; its error says what is missing and the fix.
/// When a RUN step uses the default network, checks that it can be set up here.
pub(super) fn start(
    opts: &BuildOptions,
    scratch: &Path,
    default_network: bool,
) -> Result<RunHost, SandboxError> {
    let sandbox = UserNsSandbox::new(SandboxOptions {
        helper_exe: opts.helper_exe.clone(),
        search_path: None,
        force_single_id: opts.single_id,
        etc_dir: PathBuf::from("/etc"),
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
    let warnings = report.warnings.clone();
    Ok(RunHost {
        sandbox,
        kind,
        warnings,
    })
}

/// The id and target of a secret mount, with BuildKit's defaults.
fn secret_id_target(m: &DfMount) -> (String, String) {
    let id =
        m.id.clone()
            .or_else(|| {
                m.target
                    .as_ref()
                    .and_then(|t| t.rsplit('/').next().map(str::to_string))
            })
            .unwrap_or_default();
    let target = m
        .target
        .clone()
        .unwrap_or_else(|| format!("/run/secrets/{id}"));
    (id, target)
}

/// Checks, before any step runs, every RUN mount that can be checked: secrets that were not
/// given (unless `required=false`) and mount types kiln cannot provide.
pub(super) fn check_mounts(
    plan: &BuildPlan,
    opts: &BuildOptions,
) -> Result<(), (usize, usize, String, String)> {
    for stage in &plan.stages {
        for step in &stage.steps {
            let StepKind::Run(r) = &step.kind else {
                continue;
            };
            for pm in &r.mounts {
                let m = &pm.mount;
                let fail = |msg: String| {
                    (
                        step.position.line,
                        step.position.col,
                        step.created_by.clone(),
                        msg,
                    )
                };
                match m.mount_type() {
                    MountType::Secret => {
                        let (id, _) = secret_id_target(m);
                        if id.is_empty() {
                            return Err(fail("a secret mount needs an `id` or a `target`".into()));
                        }
                        // BuildKit skips a missing secret silently unless `required=true`; kiln
                        // refuses it unless `required=false`, because a step that silently lacks
                        // its credentials fails later, far from the cause.
                        if !opts.secrets.contains_key(&id) && m.required != Some(false) {
                            return Err(fail(format!(
                                "secret `{id}` was not provided: pass it with `kiln build --secret id={id},src=FILE` (or `env=VARIABLE`), or mark the mount `required=false`"
                            )));
                        }
                    }
                    MountType::Ssh => {
                        return Err(fail(
                            "`RUN --mount=type=ssh` is not supported by kiln; use a secret mount"
                                .into(),
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

fn parse_octal(s: Option<&str>, default: u32) -> Result<u32, String> {
    match s {
        None => Ok(default),
        Some(v) => {
            u32::from_str_radix(v, 8).map_err(|_| format!("invalid mode `{v}`: expected octal"))
        }
    }
}

fn parse_id(s: Option<&str>, what: &str) -> Result<u32, String> {
    match s {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| format!("invalid {what} `{v}`: expected a number")),
    }
}

fn abs_target(target: &str, workdir: &str) -> String {
    if target.starts_with('/') {
        target.to_string()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), target)
    }
}

/// Everything a RUN's mounts need from the rest of the build.
pub(super) struct MountEnv<'a> {
    pub(super) store_root: &'a Path,
    pub(super) context_root: &'a Path,
    pub(super) secrets: &'a BTreeMap<String, Secret>,
    /// The directory holding another stage's or an image's files, for `from=`.
    pub(super) tree_root: &'a mut dyn FnMut(&Source) -> Result<PathBuf, String>,
}

/// Environment variables, in order.
pub(super) type EnvPairs = Vec<(String, String)>;

/// The sandbox mounts and extra environment of a RUN step.
pub(super) fn mounts(
    r: &RunStep,
    env: &mut MountEnv<'_>,
) -> Result<(Vec<Mount>, EnvPairs), String> {
    let mut out = Vec::new();
    let mut extra_env = Vec::new();
    for pm in &r.mounts {
        let m = &pm.mount;
        match m.mount_type() {
            MountType::Bind => {
                let target = abs_target(m.target.as_deref().unwrap_or(&r.workdir), &r.workdir);
                let rel = clean_rel(m.source.as_deref().unwrap_or("")).ok_or_else(|| {
                    format!(
                        "bind source `{}` is outside its root",
                        m.source.as_deref().unwrap_or("")
                    )
                })?;
                let (root, what) = match &pm.source {
                    Source::Context => (env.context_root.to_path_buf(), "the build context"),
                    Source::Stage { .. } => ((env.tree_root)(&pm.source)?, "the stage"),
                    Source::Image { .. } => ((env.tree_root)(&pm.source)?, "the image"),
                };
                // The sandbox resolves the same name in the same root with the same primitive,
                // so this check and the mount cannot disagree; a symlink leading out of the
                // root resolves inside it, as in BuildKit (a chroot: dockerfile2llb passes the
                // source as `llb.SourcePath`, and the executor's `sub` in executor/oci resolves
                // it with continuity's `fs.RootPath(m.Source, subPath)`).
                crate::inroot::open_path(&root, &rel, rustix::fs::OFlags::PATH).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        format!(
                            "bind source `{}` does not exist in {what} (symlinks resolve inside it): {e}",
                            m.source.as_deref().unwrap_or("")
                        )
                    } else {
                        format!(
                            "bind source `{}`: {e}",
                            m.source.as_deref().unwrap_or("")
                        )
                    }
                })?;
                out.push(Mount {
                    target,
                    kind: MountKind::Bind {
                        root,
                        source: rel,
                        readonly: m.read_only.unwrap_or(true),
                    },
                });
            }
            MountType::Cache => {
                let target = abs_target(
                    m.target
                        .as_deref()
                        .ok_or("a cache mount needs a `target`")?,
                    &r.workdir,
                );
                let id = m.id.clone().unwrap_or_else(|| target.clone());
                let key = crate::oci::Digest::sha256(id.as_bytes());
                let source = env
                    .store_root
                    .join("cache-v1/mounts")
                    .join(&key.hex()[..32]);
                if let Some(parent) = source.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("cannot create `{}`: {e}", parent.display()))?;
                }
                out.push(Mount {
                    target,
                    kind: MountKind::Cache {
                        source,
                        uid: parse_id(m.uid.as_deref(), "uid")?,
                        gid: parse_id(m.gid.as_deref(), "gid")?,
                        mode: parse_octal(m.mode.as_deref(), 0o755)?,
                    },
                });
            }
            MountType::Tmpfs => {
                let target = abs_target(
                    m.target
                        .as_deref()
                        .ok_or("a tmpfs mount needs a `target`")?,
                    &r.workdir,
                );
                let size = match m.size.as_deref() {
                    None => None,
                    Some(s) => Some(
                        s.parse::<u64>()
                            .map_err(|_| format!("invalid tmpfs size `{s}`: expected bytes"))?,
                    ),
                };
                out.push(Mount {
                    target,
                    kind: MountKind::Tmpfs { size },
                });
            }
            MountType::Secret => {
                let (id, target) = secret_id_target(m);
                let Some(secret) = env.secrets.get(&id) else {
                    continue;
                }; // required=false
                if let Some(var) = &m.env {
                    extra_env.push((var.clone(), String::from_utf8_lossy(&secret.0).into_owned()));
                    if m.target.is_none() {
                        continue;
                    }
                }
                // The sandbox puts the bytes on a tmpfs private to the step: never on disk.
                out.push(Mount {
                    target: abs_target(&target, &r.workdir),
                    kind: MountKind::Secret {
                        data: sandbox::SecretData(secret.0.clone()),
                        uid: parse_id(m.uid.as_deref(), "uid")?,
                        gid: parse_id(m.gid.as_deref(), "gid")?,
                        mode: parse_octal(m.mode.as_deref(), 0o400)?,
                    },
                });
            }
            MountType::Ssh => return Err("`RUN --mount=type=ssh` is not supported by kiln".into()),
        }
    }
    Ok((out, extra_env))
}

/// Gives the files this build wrote with the clock (mtime at or after `started`, the second the
/// build began) the build epoch, so they do not depend on when the steps ran; older mtimes came
/// with the inputs (a package's files, an archive's members, `cp -p`, a base layer) and are
/// kept, so a `.py` file keeps the mtime its `.pyc` header names. Whiteouts carry no time.
pub(super) fn stamp_fresh_mtimes(entries: &mut [Entry], started: i64, epoch: i64) {
    for e in entries.iter_mut().filter(|e| e.mtime >= started) {
        e.mtime = epoch;
    }
}

/// The layer entries of a step's diff, sorted by path, in one form whichever snapshotter made
/// the diff, so overlay and walk give the same layer for the same step (the layer cache does not
/// know which one made a layer). `before` is the stage's files before the step.
///
/// - A directory whose type, mode, owner and xattrs are what they were before the step is left
///   out here: overlay copies up the parents of whatever changed below them, walk sees only the
///   mtimes the sandbox did not restore after removing its mount points. (A step that changes
///   only a directory's mtime changes no layer.) The builder then adds every parent of the
///   entries with its metadata from before the step ([`FsIndex::parent_entries`]), whichever
///   snapshotter ran, so both give the same bytes.
/// - An opaque directory (overlay: a directory removed and created again) becomes whiteouts of
///   the paths below it that existed before and are gone, topmost only, as walk reports them.
pub(super) fn diff_entries(diff: &Diff, before: &FsIndex) -> Vec<Entry> {
    use std::collections::HashSet;
    let upserted: HashSet<&[u8]> = diff
        .changes
        .iter()
        .filter(|c| matches!(c.kind, ChangeKind::Upsert(_)))
        .map(|c| c.path.as_slice())
        .collect();
    let non_dirs: HashSet<&[u8]> = diff
        .changes
        .iter()
        .filter(|c| matches!(&c.kind, ChangeKind::Upsert(e) if e.kind != FileKind::Directory))
        .map(|c| c.path.as_slice())
        .collect();
    let mut out = Vec::new();
    for ch in &diff.changes {
        match &ch.kind {
            ChangeKind::Upsert(e) => {
                if e.kind == FileKind::Directory
                    && before.get(&ch.path).is_some_and(|n| {
                        n.kind == NodeKind::Dir
                            && (n.mode, n.uid, n.gid) == (e.mode, e.uid, e.gid)
                            && same_xattrs(&n.xattrs, &e.xattrs)
                    })
                {
                    continue;
                }
                let kind = match &e.kind {
                    FileKind::Regular => match &e.hardlink_to {
                        Some(t) => EntryKind::Hardlink(t.clone()),
                        None => EntryKind::File {
                            size: e.size,
                            source: FileSource::Path(e.host_path.clone()),
                        },
                    },
                    FileKind::Directory => EntryKind::Dir,
                    FileKind::Symlink { target } => EntryKind::Symlink(target.clone()),
                    FileKind::CharDevice { major, minor } => EntryKind::CharDevice {
                        major: *major,
                        minor: *minor,
                    },
                    FileKind::BlockDevice { major, minor } => EntryKind::BlockDevice {
                        major: *major,
                        minor: *minor,
                    },
                    FileKind::Fifo => EntryKind::Fifo,
                };
                out.push(Entry {
                    path: ch.path.clone(),
                    kind,
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    mtime: e.mtime,
                    xattrs: e
                        .xattrs
                        .iter()
                        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.clone()))
                        .collect(),
                });
            }
            ChangeKind::Delete => out.push(Entry::whiteout(&ch.path)),
            ChangeKind::OpaqueDir => {
                let mut gone: HashSet<Vec<u8>> = HashSet::new();
                for (path, _) in before.children(&ch.path) {
                    if upserted.contains(path.as_slice()) {
                        continue;
                    }
                    // Below a path already whited out, or below one that is no longer a
                    // directory: gone with it.
                    let hidden = path
                        .iter()
                        .enumerate()
                        .filter(|(i, &b)| b == b'/' && *i > ch.path.len())
                        .any(|(i, _)| gone.contains(&path[..i]) || non_dirs.contains(&path[..i]));
                    if !hidden {
                        gone.insert(path.clone());
                        out.push(Entry::whiteout(path));
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Whether a directory's xattrs in the index (sorted) are the ones the step left.
fn same_xattrs(index: &[(String, Vec<u8>)], diff: &[(Vec<u8>, Vec<u8>)]) -> bool {
    let mut d: Vec<(&[u8], &[u8])> = diff.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    d.sort();
    index.len() == d.len()
        && index
            .iter()
            .zip(d)
            .all(|((k, v), (dk, dv))| k.as_bytes() == dk && &v[..] == dv)
}

/// The network of a step.
pub(super) fn network(r: &RunStep) -> Result<sandbox::Network, String> {
    match r.network.as_deref() {
        None | Some("default") => Ok(sandbox::Network::Default),
        Some("none") => Ok(sandbox::Network::None),
        Some("host") => Ok(sandbox::Network::Host),
        Some(other) => Err(format!(
            "unknown network `{other}`: expected default, none or host"
        )),
    }
}
