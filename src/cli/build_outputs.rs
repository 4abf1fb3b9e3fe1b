//! What `kiln build` checks before the build starts and writes after it: `-t` names, `-o`
//! destinations (parsed by [`super::output`]), the context directory, `--annotation` with
//! buildx's `TYPE:` prefixes, the layers' compression and timestamp rule; then the image files
//! and root filesystems the `-o` flags ask for.
use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};

use super::output::{parse, FileOutput, Outputs};
use crate::layer::Compression;
use crate::oci::Platform;
use crate::ops::RootfsDest;
use crate::progress::{Status, Task};
use crate::transport::Target;

/// Parses `--annotation` as buildx does (docker/buildx `util/buildflags/export.go`,
/// `ParseAnnotations`): `KEY=VALUE`, or `TYPES:KEY=VALUE` where TYPES is a comma-separated list
/// of `index`, `index-descriptor`, `manifest`, `manifest-descriptor`, each with an optional
/// `[os/arch]`. kiln annotates the manifest (no type, `manifest`, or `manifest[P]` for a
/// platform being built); a single-platform build has no index, so `index` and
/// `index-descriptor` get BuildKit's own error; `manifest-descriptor`, and typed annotations of
/// a several-platform build, are refused as not supported rather than stored under a wrong key.
pub(crate) fn annotations(
    items: &[String],
    platforms: &[Platform],
) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for item in items {
        let Some((k, v)) = item.split_once('=') else {
            bail!("--annotation `{item}`: invalid annotation, expected KEY=VALUE");
        };
        let Some((types, key)) = k.split_once(':') else {
            if k.is_empty() {
                bail!("--annotation `{item}`: the key is empty");
            }
            m.insert(k.to_string(), v.to_string());
            continue;
        };
        if key.is_empty() {
            bail!("--annotation `{item}`: the key is empty");
        }
        for t in types.split(',') {
            let (typ, platform) = match t.split_once('[') {
                Some((typ, rest)) => {
                    let p = rest.strip_suffix(']').ok_or_else(|| {
                        anyhow!("--annotation `{item}`: invalid annotation type `{t}`, expected type and optional platform in square brackets")
                    })?;
                    let p: Platform = p.parse().map_err(|e| {
                        anyhow!("--annotation `{item}`: invalid platform `{p}`: {e}")
                    })?;
                    (typ, Some(p))
                }
                None => (t, None),
            };
            match typ {
                "" | "manifest" if platforms.len() > 1 && !typ.is_empty() => bail!(
                    "--annotation `{item}`: typed annotations are not supported by kiln for a \
                     build of several platforms; `--annotation KEY=VALUE` annotates each \
                     manifest and the index"
                ),
                "" | "manifest" => {
                    if platform.as_ref().is_none_or(|p| platforms.contains(p)) {
                        m.insert(key.to_string(), v.to_string());
                    }
                }
                "index" | "index-descriptor" if platforms.len() <= 1 => bail!(
                    "--annotation `{item}`: index annotations not supported for single \
                     platform export (a one-platform build writes no index); use \
                     `manifest:{key}=…` or build with several --platform values"
                ),
                "index" | "index-descriptor" => bail!(
                    "--annotation `{item}`: typed annotations are not supported by kiln for a \
                     build of several platforms; `--annotation KEY=VALUE` annotates each \
                     manifest and the index"
                ),
                "manifest-descriptor" => bail!(
                    "--annotation `{item}`: manifest-descriptor annotations are not supported \
                     by kiln; use `manifest:{key}=…` to annotate the manifest itself"
                ),
                other => bail!("--annotation `{item}`: unknown annotation type `{other}` (index, index-descriptor, manifest, manifest-descriptor)"),
            }
        }
    }
    Ok(m)
}

/// Checks that the build context is a directory, so a missing one is named as such (not as a
/// missing Dockerfile inside it).
pub(crate) fn check_context(context: &std::path::Path) -> Result<()> {
    match std::fs::metadata(context) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!(
            "the build context `{}` is not a directory",
            context.display()
        ),
        Err(e) => bail!(
            "the build context directory `{}` cannot be read: {e}",
            context.display()
        ),
    }
}

/// What `kiln build` takes from `-t`, `-o`, `--push`, `--compression` and `--annotation`,
/// all checked before the build starts.
pub(crate) struct BuildOutputs {
    /// `-o` and `--push`.
    pub outputs: Outputs,
    /// The store names: `-t`, then `type=image,name=…`.
    pub tags: Vec<String>,
    /// The layers' compression.
    pub compression: Compression,
    /// Whether every mtime is clamped to the epoch.
    pub clamp_mtimes: bool,
    /// The manifest's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Parses and checks the output flags of `a`; `epoch_given` says whether the user gave an
/// epoch (`--source-date-epoch`, `$SOURCE_DATE_EPOCH`, `--timestamp`). Every name is checked
/// here (`-t Foo/Bar` fails before any step runs) and every file's directory must exist.
pub(crate) fn plan(
    a: &super::build_args::BuildArgs,
    epoch_given: bool,
    platforms: &[Platform],
) -> Result<BuildOutputs> {
    for t in &a.tags {
        crate::store::normalize_name(t).map_err(|e| anyhow!("-t `{t}`: {e}"))?;
    }
    let outputs = parse(&a.outputs, &a.tags, a.push)?;
    let mut tags = a.tags.clone();
    for n in outputs.names.iter().chain(&outputs.push) {
        crate::store::normalize_name(n).map_err(|e| anyhow!("-o: name `{n}`: {e}"))?;
        crate::registry::Reference::parse(n).map_err(|e| anyhow!("-o: name `{n}`: {e}"))?;
    }
    for n in &outputs.names {
        if !tags.contains(n) {
            tags.push(n.clone());
        }
    }
    for f in &outputs.files {
        let (path, name) = match f {
            FileOutput::Image { target, name } => match target {
                Target::OciDir(p, _) | Target::OciArchive(p, _) | Target::DockerArchive(p, _) => {
                    (p, name.as_deref())
                }
                Target::Store(_) | Target::Registry(_) => continue,
            },
            FileOutput::Rootfs(RootfsDest::Dir(p)) => (p, None),
            FileOutput::Rootfs(RootfsDest::Tar(p)) => (p, None),
        };
        if let Some(n) = name {
            crate::store::normalize_name(n).map_err(|e| anyhow!("-o: name `{n}`: {e}"))?;
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        };
        if !parent.is_dir() {
            bail!(
                "-o: `{}`: the directory `{}` does not exist",
                path.display(),
                parent.display()
            );
        }
    }
    let default = Compression::default();
    let compression = match outputs.compression {
        Some(c) if a.compression != default && a.compression != c => bail!(
            "--compression {} and -o compression= ({c}) disagree: give one",
            a.compression
        ),
        Some(c) => c,
        None => a.compression,
    };
    let clamp_mtimes = match outputs.rewrite_timestamp {
        Some(true) if !epoch_given => bail!(
            "-o rewrite-timestamp=true needs an epoch to clamp to: set SOURCE_DATE_EPOCH or \
             give --source-date-epoch"
        ),
        Some(b) => b,
        None => epoch_given,
    };
    let mut annotations = annotations(&a.annotations, platforms)?;
    annotations.extend(outputs.annotations.clone());
    Ok(BuildOutputs {
        outputs,
        tags,
        compression,
        clamp_mtimes,
        annotations,
    })
}

/// Writes the image and root-filesystem outputs of a finished build, in order; with
/// `attached`, image outputs get the index with the attestations. A failure is exit 2, as a
/// failed push is: the image was built and is in the store.
pub(crate) fn write_files(
    ctx: &super::Context,
    store: &crate::store::Store,
    outcome: &crate::builder::BuildOutcome,
    files: &[FileOutput],
    attached: Option<&crate::ops::Attached>,
) -> Result<(), super::Exit> {
    if files.is_empty() {
        return Ok(());
    }
    let remote = ctx.remote()?;
    let reporter = ctx.reporter();
    for f in files {
        match f {
            FileOutput::Image { target, name } => {
                // BuildKit's oci and docker exporters' steps and status lines.
                let kind = match target {
                    crate::transport::Target::DockerArchive(..) => "docker",
                    _ => "oci",
                };
                let task = Task::start(
                    reporter.as_ref(),
                    "",
                    &format!("exporting to {kind} image format"),
                );
                task.status(&Status::done("exporting layers"));
                let image = &outcome.image;
                task.status(&Status::done(&format!(
                    "exporting manifest {}",
                    image.digest()
                )));
                task.status(&Status::done(&format!(
                    "exporting config {}",
                    image.manifest.config.digest
                )));
                // With attestations: the index (a docker-archive cannot hold one: the image alone).
                let written = match attached {
                    Some(att) => {
                        if matches!(target, crate::transport::Target::DockerArchive(..)) {
                            reporter.on_warning(&format!(
                                "{target}: a docker-archive cannot hold attestations (they live \
                                 in an image index): the image is written without them; use \
                                 `-o type=oci` or push to keep them"
                            ));
                        }
                        crate::ops::write_attached(
                            store,
                            att,
                            target,
                            name.as_deref(),
                            Some(&remote),
                        )
                    }
                    None => crate::transport::write_from_store(
                        store,
                        image,
                        target,
                        name.as_deref(),
                        Some(&remote),
                    ),
                };
                match written {
                    Ok(_) => {
                        task.status(&Status::done(&format!("sending tarball to {target}")));
                        task.done();
                    }
                    Err(e) => {
                        task.failed(&e.to_string());
                        return Err(anyhow!(e).context(format!("cannot write {target}")).into());
                    }
                }
            }
            FileOutput::Rootfs(dest) => {
                let (what, p) = match dest {
                    RootfsDest::Dir(p) => ("directory", p),
                    RootfsDest::Tar(p) => ("tarball", p),
                };
                let task = Task::start(
                    reporter.as_ref(),
                    "",
                    &format!("exporting to client {what}"),
                );
                let r = crate::ops::export_rootfs(
                    crate::transport::LayerSource::new(store, Some(&remote)),
                    &outcome.image,
                    dest,
                );
                match r {
                    Ok(_) => {
                        task.status(&Status::done(&format!("copying files to {}", p.display())));
                        task.done();
                    }
                    Err(e) => {
                        task.failed(&e.to_string());
                        return Err(e.into());
                    }
                }
            }
        }
    }
    Ok(())
}
