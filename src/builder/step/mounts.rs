//! `RUN --mount`: bind, cache, tmpfs, secret and ssh mounts of a step, as sandbox [`Mount`]s.
//!
//! An ssh mount names an agent (`--ssh ID=…`, started by the builder) that the sandbox relays
//! read-only to a socket at the target ([`crate::sandbox::ssh`]); its cache key is the
//! mount's fields (id, target, owner, mode), never the agent or its keys.
//!
//! Secrets reach a step only as a file bound read-only at its target (default
//! `/run/secrets/<id>`) or, with `env=`, in its environment; the sandbox keeps mount points out
//! of the diff, history shows the RUN text (never the value) and cache keys hash the mount
//! options, not the secret.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::dockerfile::instructions::{Mount as DfMount, MountType};
use crate::plan::{RunStep, Source};
use crate::sandbox::{self, Mount, MountKind};

use super::super::context::clean_rel;
use super::super::Secret;

/// Why a `RUN --mount` cannot be provided.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A bind source climbs out of its root.
    #[error("bind source `{source_path}` is outside its root")]
    BindOutside {
        /// The `source=` value.
        source_path: String,
    },
    /// A bind source does not exist in its root.
    #[error("bind source `{source_path}` does not exist in {root} (symlinks resolve inside it)")]
    BindMissing {
        /// The `source=` value.
        source_path: String,
        /// "the build context", "the stage", "the image".
        root: &'static str,
        /// The cause.
        #[source]
        source: crate::inroot::Error,
    },
    /// A bind source cannot be opened.
    #[error("bind source `{source_path}`")]
    BindOpen {
        /// The `source=` value.
        source_path: String,
        /// The cause.
        #[source]
        source: crate::inroot::Error,
    },
    /// A cache or tmpfs mount without `target`.
    #[error("a {kind} mount needs a `target`")]
    NoTarget {
        /// `cache` or `tmpfs`.
        kind: &'static str,
    },
    /// A secret mount without `id` or `target`.
    #[error("a secret mount needs an `id` or a `target`")]
    NoSecretId,
    /// A required secret that was not given.
    #[error("secret `{id}` was not provided: pass it with `kiln build --secret id={id},src=FILE` (or `env=VARIABLE`), or mark the mount `required=false`")]
    SecretMissing {
        /// The id.
        id: String,
    },
    /// A required SSH agent (`required=true`) that was not given.
    #[error("ssh agent `{id}` was not provided: pass it with `kiln build --ssh {id}` (your agent, $SSH_AUTH_SOCK), `--ssh {id}=SOCKET` or `--ssh {id}=KEYFILE`")]
    SshMissing {
        /// The id.
        id: String,
    },
    /// The agent of an `--ssh` id could not be started.
    #[error("--ssh {id}")]
    SshAgent {
        /// The id.
        id: String,
        /// The cause.
        #[source]
        source: sandbox::SshError,
    },
    /// A `mode=` that is not octal.
    #[error("invalid mode `{value}`: expected octal")]
    Mode {
        /// The value.
        value: String,
    },
    /// A `uid=` or `gid=` that is not a number.
    #[error("invalid {what} `{value}`: expected a number")]
    Id {
        /// `uid` or `gid`.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// A tmpfs `size=` that is not a byte count.
    #[error("invalid tmpfs size `{value}`: expected bytes")]
    Size {
        /// The value.
        value: String,
    },
    /// A `--network` value kiln does not know.
    #[error("unknown network `{value}`: expected default, none or host")]
    Network {
        /// The value.
        value: String,
    },
    /// The cache mount's directory cannot be created.
    #[error("cannot create `{}`", path.display())]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The id and target of a secret mount, with BuildKit's defaults.
pub(in crate::builder) fn secret_id_target(m: &DfMount) -> (String, String) {
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

fn parse_octal(s: Option<&str>, default: u32) -> Result<u32, MountError> {
    match s {
        None => Ok(default),
        Some(v) => u32::from_str_radix(v, 8).map_err(|_| MountError::Mode { value: v.into() }),
    }
}

fn parse_id(s: Option<&str>, what: &'static str) -> Result<u32, MountError> {
    match s {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| MountError::Id {
            what,
            value: v.into(),
        }),
    }
}

fn abs_target(target: &str, workdir: &str) -> String {
    if target.starts_with('/') {
        target.to_string()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), target)
    }
}

/// The id of a cache mount (`id=`, else its absolute target); `None` for other mounts. Only
/// `type=cache` mounts have contents that outlive a step (a secret is never one of them).
pub(in crate::builder) fn cache_id(m: &DfMount, workdir: &str) -> Option<String> {
    if m.mount_type() != MountType::Cache {
        return None;
    }
    let target = abs_target(m.target.as_deref()?, workdir);
    Some(m.id.clone().unwrap_or(target))
}

/// The id of an SSH mount, with BuildKit's default (`sshforward.DefaultID`).
pub(in crate::builder) fn ssh_id(m: &DfMount) -> &str {
    m.id.as_deref().unwrap_or("default")
}

/// Everything a RUN's mounts need from the rest of the build.
pub(in crate::builder) struct MountEnv<'a> {
    /// The started agents of the step's `--ssh` ids, by id (an id not given is absent).
    pub(in crate::builder) ssh: &'a BTreeMap<String, PathBuf>,
    pub(in crate::builder) store_root: &'a Path,
    pub(in crate::builder) context_root: &'a Path,
    pub(in crate::builder) secrets: &'a BTreeMap<String, Secret>,
    /// For each of the step's mounts, in order: the directory holding the files of the stage
    /// or image a bind mount's `from=` names (`None` for the context and other mount types).
    pub(in crate::builder) tree_roots: &'a [Option<PathBuf>],
}

/// Environment variables, in order.
pub(in crate::builder) type EnvPairs = Vec<(String, String)>;

/// The sandbox mounts and extra environment of a RUN step.
pub(in crate::builder) fn mounts(
    r: &RunStep,
    env: &MountEnv<'_>,
) -> Result<(Vec<Mount>, EnvPairs), MountError> {
    let mut out = Vec::new();
    let mut extra_env = Vec::new();
    let mut ssh_count = 0;
    for (i, pm) in r.mounts.iter().enumerate() {
        let m = &pm.mount;
        match m.mount_type() {
            MountType::Bind => {
                let target = abs_target(m.target.as_deref().unwrap_or(&r.workdir), &r.workdir);
                let source_path = m.source.as_deref().unwrap_or("").to_string();
                let rel = clean_rel(&source_path).ok_or_else(|| MountError::BindOutside {
                    source_path: source_path.clone(),
                })?;
                let (root, what) = match (&pm.source, env.tree_roots.get(i).cloned().flatten()) {
                    (Source::Stage { .. }, Some(root)) => (root, "the stage"),
                    (Source::Image { .. }, Some(root)) => (root, "the image"),
                    _ => (env.context_root.to_path_buf(), "the build context"),
                };
                // The sandbox resolves the same name in the same root with the same primitive,
                // so this check and the mount cannot disagree; a symlink leading out of the
                // root resolves inside it, as in BuildKit (a chroot: dockerfile2llb passes the
                // source as `llb.SourcePath`, and the executor's `sub` in executor/oci resolves
                // it with continuity's `fs.RootPath(m.Source, subPath)`).
                crate::inroot::open_path(&root, &rel, rustix::fs::OFlags::PATH).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        MountError::BindMissing {
                            source_path: source_path.clone(),
                            root: what,
                            source: e,
                        }
                    } else {
                        MountError::BindOpen {
                            source_path: source_path.clone(),
                            source: e,
                        }
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
                let target = m
                    .target
                    .as_deref()
                    .ok_or(MountError::NoTarget { kind: "cache" })?;
                let target = abs_target(target, &r.workdir);
                let id = cache_id(m, &r.workdir).unwrap_or_default();
                let key = crate::oci::Digest::sha256(id.as_bytes());
                let source = env
                    .store_root
                    .join("cache-v1/mounts")
                    .join(&key.hex()[..32]);
                if let Some(parent) = source.parent() {
                    std::fs::create_dir_all(parent).map_err(|source| MountError::CacheDir {
                        path: parent.to_path_buf(),
                        source,
                    })?;
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
                let target = m
                    .target
                    .as_deref()
                    .ok_or(MountError::NoTarget { kind: "tmpfs" })?;
                let size = match m.size.as_deref() {
                    None => None,
                    Some(s) => Some(
                        s.parse::<u64>()
                            .map_err(|_| MountError::Size { value: s.into() })?,
                    ),
                };
                out.push(Mount {
                    target: abs_target(target, &r.workdir),
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
            MountType::Ssh => {
                // BuildKit's llb `ExecOp.Marshal`: the Nth ssh mount's default target is
                // `/run/buildkit/ssh_agent.N`, and SSH_AUTH_SOCK names the first one unless
                // the step's environment sets it; an agent not given (`required` unset) is
                // skipped, its SSH_AUTH_SOCK still set.
                let target = match m.target.as_deref() {
                    Some(t) => abs_target(t, &r.workdir),
                    None => format!("/run/buildkit/ssh_agent.{ssh_count}"),
                };
                if ssh_count == 0 && !r.env.iter().any(|(k, _)| k == "SSH_AUTH_SOCK") {
                    extra_env.push(("SSH_AUTH_SOCK".to_string(), target.clone()));
                }
                ssh_count += 1;
                let Some(agent) = env.ssh.get(ssh_id(m)) else {
                    continue;
                };
                out.push(Mount {
                    target,
                    kind: MountKind::Ssh {
                        agent: agent.clone(),
                        uid: parse_id(m.uid.as_deref(), "uid")?,
                        gid: parse_id(m.gid.as_deref(), "gid")?,
                        mode: parse_octal(m.mode.as_deref(), 0o600)?,
                    },
                });
            }
        }
    }
    Ok((out, extra_env))
}

/// The network of a step.
pub(in crate::builder) fn network(r: &RunStep) -> Result<sandbox::Network, MountError> {
    match r.network.as_deref() {
        None | Some("default") => Ok(sandbox::Network::Default),
        Some("none") => Ok(sandbox::Network::None),
        Some("host") => Ok(sandbox::Network::Host),
        Some(other) => Err(MountError::Network {
            value: other.into(),
        }),
    }
}
