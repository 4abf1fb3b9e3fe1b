//! What `kiln build`'s CONTEXT and `-f` name, as buildx reads them: a directory; a git URL
//! (`https://host/repo.git#ref:subdir`, `git@host:repo.git#ref`, …; docker/cli's
//! `urlutil.IsGitURL` and BuildKit's `gitutil.ParseGitRef`, see [`crate::git`]) fetched at its
//! ref; or `-`, a tar (or a bare Dockerfile, as `docker build -`) on stdin. `-f -` reads the
//! Dockerfile from stdin. Then the `-t` tag templates (`{gitsha}`, `{version}`, `{branch}`,
//! bake's placeholders) are filled from the source's commit.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::anyhow;

use crate::bake::GitInfo;
use crate::builder::NamedContext;
use crate::git::{FetchOptions, GitRef};
use crate::ops::{self, Scratch, StdinContext};
use crate::store::Store;

use super::Exit;

/// The commit a git context was fetched at.
#[derive(Debug, Clone)]
pub(crate) struct Vcs {
    /// The repository URL, without credentials.
    pub source: String,
    /// The full commit id.
    pub revision: String,
    /// The commit's tree id.
    pub tree: String,
    /// The ref asked for, if any.
    pub reference: Option<String>,
    /// The `:subdir`, if any.
    pub subdir: Option<String>,
}

/// Parses `--build-context NAME=VALUE` as buildx does (BuildKit's dockerui `namedContext`):
/// `docker-image://REF` and `oci-layout://DIR[:TAG|@sha256:…]` are images; a git URL is
/// fetched (into a scratch directory returned with the map, alive as long as the build needs it)
/// and read as a directory, as a local path is.
pub(crate) fn named_contexts(
    store: &Store,
    specs: &[String],
    credentials: Option<&crate::registry::Credentials>,
) -> Result<(BTreeMap<String, NamedContext>, Vec<Scratch>), Exit> {
    let mut map = BTreeMap::new();
    let mut scratch = Vec::new();
    for spec in specs {
        let Some((name, value)) = spec
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        else {
            return Err(anyhow!("--build-context `{spec}`: expected NAME=VALUE").into());
        };
        if map.contains_key(name) {
            return Err(anyhow!("--build-context `{name}` is given twice").into());
        }
        let context = if let Some(r) = value.strip_prefix("docker-image://") {
            crate::store::normalize_name(r)
                .map_err(|e| anyhow!("--build-context {name}: `{r}`: {e}"))?;
            NamedContext::Image(r.to_string())
        } else if let Some(rest) = value.strip_prefix("oci-layout://") {
            // buildx: `DIR@sha256:…` picks by digest, `DIR:TAG` by ref.name.
            let (dir, pick) = match rest.rsplit_once('@') {
                Some((d, digest)) => (d, Some(digest.to_string())),
                None => match rest.rsplit_once(':') {
                    Some((d, tag)) if !tag.contains('/') => (d, Some(tag.to_string())),
                    _ => (rest, None),
                },
            };
            if !Path::new(dir).join("index.json").is_file() {
                return Err(anyhow!(
                    "--build-context {name}: `{dir}` is not an OCI layout (no index.json)"
                )
                .into());
            }
            let dir = std::fs::canonicalize(dir)
                .map_err(|e| anyhow!("--build-context {name}: `{dir}`: {e}"))?;
            NamedContext::Image(match pick {
                Some(p) => format!("oci:{}:{p}", dir.display()),
                None => format!("oci:{}", dir.display()),
            })
        } else if value.starts_with("target:") {
            return Err(anyhow!(
                "--build-context {name}: `target:` contexts are bake's; kiln build reads a path, \
                 docker-image://, oci-layout:// or a git URL"
            )
            .into());
        } else if Path::new(value).is_dir() {
            NamedContext::Dir(
                std::fs::canonicalize(value)
                    .map_err(|e| anyhow!("--build-context {name}: `{value}`: {e}"))?,
            )
        } else if let Ok(r) = GitRef::parse(value) {
            let opts = FetchOptions {
                credential: credentials.and_then(|c| crate::git::credential(&r, c)),
                ..FetchOptions::default()
            };
            let (s, checkout) = ops::git_context(store, &r, &opts).map_err(fail)?;
            scratch.push(s);
            NamedContext::Dir(checkout.context)
        } else if value.starts_with("http://") || value.starts_with("https://") {
            return Err(anyhow!(
                "--build-context {name}: `{value}`: remote tarball contexts are not supported by \
                 kiln; give a git URL (ending in .git), a directory or an image"
            )
            .into());
        } else {
            return Err(anyhow!(
                "--build-context {name}: `{value}` is not a directory, docker-image://, \
                 oci-layout:// or a git URL"
            )
            .into());
        };
        map.insert(name.to_string(), context);
    }
    Ok((map, scratch))
}

/// The context directory and Dockerfile a build reads, with the scratch directories that hold
/// them (removed when this is dropped).
pub(crate) struct Source {
    pub context: PathBuf,
    pub dockerfile: PathBuf,
    pub vcs: Option<Vcs>,
    _scratch: Vec<Scratch>,
}

fn fail(e: impl Into<anyhow::Error>) -> Exit {
    Exit {
        code: 1,
        error: Some(e.into()),
    }
}

/// Reads the Dockerfile from stdin into a scratch directory.
fn stdin_dockerfile(store: &Store, scratch: &mut Vec<Scratch>) -> Result<PathBuf, Exit> {
    let s = Scratch::new(store, "stdin-")
        .map_err(|e| anyhow!("cannot create a scratch directory: {e}"))?;
    let p = s.path().join("Dockerfile");
    let mut f =
        std::fs::File::create(&p).map_err(|e| anyhow!("cannot write `{}`: {e}", p.display()))?;
    std::io::copy(
        &mut std::io::Read::take(std::io::stdin().lock(), crate::oci::limits::MAX_CONFIG_SIZE),
        &mut f,
    )
    .map_err(|e| anyhow!("-f -: cannot read the Dockerfile from stdin: {e}"))?;
    scratch.push(s);
    Ok(p)
}

/// Resolves CONTEXT and `-f` (see the module doc). `remote` gives the credentials for https git
/// sources.
pub(crate) fn resolve(
    store: &Store,
    context: &Path,
    file: Option<&Path>,
    credentials: Option<&crate::registry::Credentials>,
) -> Result<Source, Exit> {
    let mut scratch = Vec::new();
    let stdin_file = file == Some(Path::new("-"));
    let arg = context.to_string_lossy();
    if arg == "-" {
        if stdin_file {
            return Err(anyhow!("-f - and a context of `-` both read stdin: give one").into());
        }
        let (s, what) = ops::tar_context(store, std::io::stdin().lock()).map_err(fail)?;
        scratch.push(s);
        let (context, dockerfile) = match what {
            StdinContext::Tar(dir) => {
                let df = in_tree(&dir, &dir, file.unwrap_or(Path::new("Dockerfile")), "-")?;
                (dir, df)
            }
            StdinContext::Dockerfile {
                dockerfile,
                context,
            } => {
                if file.is_some() {
                    return Err(anyhow!(
                        "-f: stdin held a Dockerfile, not a tar context; drop -f (as `docker build -`)"
                    )
                    .into());
                }
                (context, dockerfile)
            }
        };
        return Ok(Source {
            context,
            dockerfile,
            vcs: None,
            _scratch: scratch,
        });
    }
    let local = context.exists();
    let git = if local {
        None
    } else {
        GitRef::parse(&arg).ok()
    };
    let Some(r) = git else {
        // A directory (checked by the caller, which names a missing one as such).
        let dockerfile = match file {
            Some(f) if stdin_file => {
                let _ = f;
                stdin_dockerfile(store, &mut scratch)?
            }
            Some(f) => f.to_path_buf(),
            None => context.join("Dockerfile"),
        };
        // A context named by a symbolic link is the directory it points to, as `docker build`
        // resolves it (docker/cli `ResolveAndValidateContextPath`); read through the link, the
        // walk would see the link itself and `COPY .` would copy nothing.
        let context = match context.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => {
                std::fs::canonicalize(context).unwrap_or_else(|_| context.to_path_buf())
            }
            _ => context.to_path_buf(),
        };
        return Ok(Source {
            context,
            dockerfile,
            vcs: None,
            _scratch: scratch,
        });
    };
    let opts = FetchOptions {
        credential: credentials.and_then(|c| crate::git::credential(&r, c)),
        ..FetchOptions::default()
    };
    let (s, checkout) = ops::git_context(store, &r, &opts).map_err(fail)?;
    scratch.push(s);
    let dockerfile = match file {
        Some(_) if stdin_file => stdin_dockerfile(store, &mut scratch)?,
        // buildx sends a local `-f` file along with a remote context; else the name is
        // looked up in the repository's context directory.
        Some(f) if f.exists() => f.to_path_buf(),
        Some(f) => in_tree(&checkout.root, &checkout.context, f, &r.to_string())?,
        None => in_tree(
            &checkout.root,
            &checkout.context,
            Path::new("Dockerfile"),
            &r.to_string(),
        )?,
    };
    Ok(Source {
        context: checkout.context.clone(),
        dockerfile,
        vcs: Some(Vcs {
            source: r.source_url(),
            revision: checkout.commit.clone(),
            tree: checkout.tree.clone(),
            reference: r.reference.clone(),
            subdir: r.subdir.clone(),
        }),
        _scratch: scratch,
    })
}

/// `name` inside `dir`, which is inside the fetched or unpacked `root`: a Dockerfile that is a
/// symlink out of the tree (a hostile repository's `Dockerfile -> /etc/shadow`) is refused.
fn in_tree(root: &Path, dir: &Path, name: &Path, what: &str) -> Result<PathBuf, Exit> {
    let p = dir.join(name);
    let real = p.canonicalize().map_err(|e| {
        fail(anyhow!(
            "`{what}`: no Dockerfile `{}` in the context: {e}",
            name.display()
        ))
    })?;
    let real_root = root
        .canonicalize()
        .map_err(|e| anyhow!("`{}`: {e}", root.display()))?;
    if !real.starts_with(&real_root) || !real.is_file() {
        return Err(fail(anyhow!(
            "`{what}`: the Dockerfile `{}` is not a file inside the context",
            name.display()
        )));
    }
    Ok(real)
}

/// `git -C dir ARGS`' trimmed output, when it succeeds and says something.
pub(crate) fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// What git (or GitHub Actions' environment) says about `dir`.
pub(crate) fn git_info(dir: &Path) -> GitInfo {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let remote = git(dir, &["remote", "get-url", "origin"])
        .map(|u| {
            let u = u.trim_end_matches(".git").to_string();
            match u.strip_prefix("git@") {
                Some(rest) => format!("https://{}", rest.replacen(':', "/", 1)),
                None => u,
            }
        })
        .or_else(
            || match (env("GITHUB_SERVER_URL"), env("GITHUB_REPOSITORY")) {
                (Some(s), Some(r)) => Some(format!("{s}/{r}")),
                _ => None,
            },
        );
    GitInfo {
        sha: git(dir, &["rev-parse", "HEAD"]).or_else(|| env("GITHUB_SHA")),
        branch: git(dir, &["rev-parse", "--abbrev-ref", "HEAD"])
            .filter(|b| b != "HEAD")
            .or_else(|| env("GITHUB_REF_NAME")),
        remote,
    }
}

/// The values of the tag placeholders: from the git source's commit and ref, or, for a local
/// context, from its work tree as `kiln bake` reads it (`GITHUB_SHA`, `GITHUB_REF_NAME` when
/// it is not one).
fn tag_vars(source: &Source) -> BTreeMap<&'static str, String> {
    let mut vars = BTreeMap::new();
    let (sha, reference, branch) = match &source.vcs {
        Some(v) => {
            let r = v.reference.clone();
            let branch = r.clone().filter(|r| version_of(r).is_none() && !is_hex(r));
            (Some(v.revision.clone()), r, branch)
        }
        None => {
            let info = git_info(&source.context);
            let tag = git(
                &source.context,
                &["describe", "--tags", "--exact-match", "HEAD"],
            );
            (info.sha, tag, info.branch)
        }
    };
    if let Some(s) = sha {
        vars.insert("gitsha", s.chars().take(12).collect());
    }
    if let Some(v) = reference.as_deref().and_then(version_of) {
        vars.insert("version", v);
    }
    if let Some(b) = branch {
        vars.insert("branch", crate::bake::template::sanitize(&b));
    }
    vars
}

fn is_hex(s: &str) -> bool {
    s.len() >= 7 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `1.2.0` for the refs `v1.2.0`, `1.2.0`, `refs/tags/v1.2.0`: a semantic version.
fn version_of(reference: &str) -> Option<String> {
    let r = reference.rsplit('/').next().unwrap_or(reference);
    let r = r.strip_prefix('v').unwrap_or(r);
    semver::Version::parse(r).ok().map(|v| v.to_string())
}

/// Fills the placeholders of the `-t` names whose tag is a template (`reg/app:{version}-{gitsha}`,
/// bake's placeholders and scanner); the others are returned as given.
pub(crate) fn render_tags(tags: &[String], source: &Source) -> Result<Vec<String>, Exit> {
    if !tags.iter().any(|t| t.contains('{')) {
        return Ok(tags.to_vec());
    }
    let vars = tag_vars(source);
    let vars: BTreeMap<&str, String> = vars.into_iter().collect();
    let mut out = Vec::new();
    for t in tags {
        if !t.contains('{') {
            out.push(t.clone());
            continue;
        }
        let slash = t.rfind('/').map_or(0, |i| i + 1);
        let Some(colon) = t[slash..].find(':').map(|i| i + slash) else {
            return Err(anyhow!(
                "-t `{t}`: placeholders are allowed in the tag only (NAME:TEMPLATE)"
            )
            .into());
        };
        let tpl = crate::bake::template::Template::parse(&t[colon + 1..])
            .map_err(|e| anyhow!("-t `{t}`: {e}"))?;
        let tag = tpl.render(&vars).map_err(|e| {
            let why = if tpl.uses("version") && !vars.contains_key("version") {
                match source.vcs.as_ref().and_then(|v| v.reference.as_deref()) {
                    Some(r) => format!(": the ref `{r}` is not a version (vX.Y.Z)"),
                    None => ": the source has no version tag (build a git URL at #vX.Y.Z)".into(),
                }
            } else if tpl.uses("gitsha") && !vars.contains_key("gitsha") {
                format!(": `{}` is not in a git work tree", source.context.display())
            } else {
                String::new()
            };
            anyhow!("-t `{t}`: {e}{why}")
        })?;
        out.push(format!("{}:{tag}", &t[..colon]));
    }
    Ok(out)
}

/// The labels buildx sets from git with `BUILDX_GIT_LABELS=1` (`org.opencontainers.image.source`,
/// `.revision`), for a git context; a `--label` of the same key wins.
pub(crate) fn vcs_labels(vcs: &Vcs, labels: &mut BTreeMap<String, String>) {
    for (k, v) in [
        ("org.opencontainers.image.source", &vcs.source),
        ("org.opencontainers.image.revision", &vcs.revision),
    ] {
        labels.entry(k.to_string()).or_insert_with(|| v.clone());
    }
}

/// The source for `--metadata-file`: BuildKit's `vcs:source` / `vcs:revision` build attributes.
pub(crate) fn vcs_metadata(vcs: &Vcs) -> serde_json::Value {
    serde_json::json!({
        "source": vcs.source,
        "revision": vcs.revision,
        "ref": vcs.reference,
        "subdir": vcs.subdir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_refs() {
        assert_eq!(version_of("v1.2.0").as_deref(), Some("1.2.0"));
        assert_eq!(
            version_of("refs/tags/2.0.0-rc.1").as_deref(),
            Some("2.0.0-rc.1")
        );
        assert_eq!(version_of("main"), None);
        assert_eq!(version_of("v1.2"), None);
    }

    #[test]
    fn tags_render_from_the_commit() {
        let source = Source {
            context: PathBuf::from("/nonexistent"),
            dockerfile: PathBuf::from("/nonexistent/Dockerfile"),
            vcs: Some(Vcs {
                source: "https://h/r.git".into(),
                revision: "0123456789abcdef0123456789abcdef01234567".into(),
                tree: "89abcdef0123456789abcdef0123456789abcdef".into(),
                reference: Some("v1.2.0".into()),
                subdir: None,
            }),
            _scratch: Vec::new(),
        };
        let t = render_tags(
            &["reg:5000/app:{version}-{gitsha}".into(), "plain:1".into()],
            &source,
        )
        .unwrap();
        assert_eq!(t, ["reg:5000/app:1.2.0-0123456789ab", "plain:1"]);
        let e = render_tags(&["app:{branch}".into()], &source).unwrap_err();
        assert!(format!("{:?}", e.error).contains("{branch}"));
        let e = render_tags(&["app:{nope}".into()], &source).unwrap_err();
        assert!(format!("{:?}", e.error).contains("unknown placeholder"));
    }
}
