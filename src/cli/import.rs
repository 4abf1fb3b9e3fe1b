//! `kiln import SRC -t NAME [-o DEST]...`
use std::path::PathBuf;

use clap::Args;

use crate::layer::{Compression, LayerOptions};
use crate::ops::{self, ImportOptions};
use crate::transport::Target;

use super::{given_epoch, out, CliResult, Context};

/// Arguments of `kiln import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A root filesystem: a directory, or a tarball (plain, gzip or zstd).
    pub source: PathBuf,
    /// Name(s) for the image in the local store.
    #[arg(short = 't', long = "tag", value_name = "NAME", required = true)]
    pub tags: Vec<String>,
    /// Also write the image here (`oci:DIR[:TAG]`, `oci-archive:FILE`, `docker-archive:FILE[:NAME:TAG]`).
    #[arg(short = 'o', long = "output", value_name = "DEST")]
    pub outputs: Vec<Target>,
    /// The platform recorded in the config [default: the host's].
    #[arg(long)]
    pub platform: Option<crate::oci::Platform>,
    /// `Cmd`: a JSON array, or words split like a shell does.
    #[arg(long)]
    pub cmd: Option<String>,
    /// `Entrypoint`: a JSON array, or words split like a shell does.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// `Env` entries, `KEY=value`.
    #[arg(long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// `WorkingDir`.
    #[arg(long)]
    pub workdir: Option<String>,
    /// `User`.
    #[arg(long)]
    pub user: Option<String>,
    /// Layer compression: gzip, zstd or none, with an optional `:LEVEL`.
    #[arg(long, default_value = "gzip")]
    pub compression: Compression,
    /// Compression threads [default: one per core].
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Clamp the layer's mtimes to this epoch, also the config's `created` [default:
    /// $SOURCE_DATE_EPOCH, else mtimes are kept as they are and `created` is 0].
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<i64>,
    /// Owners of a directory's files: `auto` records them as a rootless container sees them
    /// when kiln is not root (your uid/gid → 0, your /etc/subuid and /etc/subgid ranges → 1..,
    /// any other id → 65534, as `podman unshare` shows them) and as they are when it is root;
    /// `host` records the ids on disk as they are.
    #[arg(
        long,
        value_name = "auto|host",
        default_value = "auto",
        value_parser = ["auto", "host"],
        overrides_with = "userns"
    )]
    pub userns: String,
}

/// Splits `s` as a JSON array if it is one, else into shell words.
pub(crate) fn command_words(s: &str) -> anyhow::Result<Vec<String>> {
    if s.trim_start().starts_with('[') {
        return serde_json::from_str(s)
            .map_err(|e| anyhow::anyhow!("`{s}` is not a JSON array of strings: {e}"));
    }
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => cur.extend(chars.next()),
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                cur.extend(chars.next());
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        anyhow::bail!("`{s}` has an unterminated quote");
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

pub(crate) fn run(ctx: &Context, a: ImportArgs) -> CliResult {
    for e in &a.env {
        if !e.contains('=') || e.starts_with('=') {
            return Err(anyhow::anyhow!("--env `{e}` is not KEY=value").into());
        }
    }
    if a.userns == "auto" && a.source.is_dir() && !rustix::process::geteuid().is_root() {
        if let Some(code) = import_in_namespace()? {
            return super::code(code);
        }
    }
    let given = given_epoch(a.source_date_epoch)?;
    let opts = ImportOptions {
        source: a.source,
        names: a.tags,
        outputs: a.outputs,
        platform: a.platform.unwrap_or_else(crate::oci::Platform::host),
        layer: LayerOptions {
            compression: a.compression,
            threads: a.threads,
            epoch: given.unwrap_or(i64::MAX),
        },
        created: given.unwrap_or(0),
        cmd: a.cmd.as_deref().map(command_words).transpose()?,
        entrypoint: a.entrypoint.as_deref().map(command_words).transpose()?,
        env: a.env,
        workdir: a.workdir,
        user: a.user,
        remote: Some(ctx.remote()?),
        ids: match a.userns.as_str() {
            "host" => None,
            _ => crate::sandbox::caller_view(std::path::Path::new("/etc")).map(|(uid, gid)| {
                let ranges = |m: Vec<crate::sandbox::IdRange>| {
                    m.iter().map(|r| (r.inside, r.outside, r.count)).collect()
                };
                crate::layer::IdMap {
                    uid: ranges(uid),
                    gid: ranges(gid),
                }
            }),
        },
    };
    let store = ctx.store()?;
    let r = ops::import(&store, &opts, ctx.reporter().as_ref())?;
    out(&format!("{}", r.image.digest()))
}

/// A rootless caller with subordinate ids imports a directory as `podman unshare` would see it:
/// kiln runs again as root in a user namespace (0 → the caller, 1.. → its subordinate ranges)
/// with `--userns host`, so it reads files of subordinate owners the caller may not (a 0700
/// directory of uid 1000) and records the namespace's ids (an owner outside the ranges shows as
/// 65534). Returns that run's exit code, or `None` without subordinate ids (single-id: the
/// walk maps the caller to 0 itself).
fn import_in_namespace() -> Result<Option<i32>, super::Exit> {
    use crate::sandbox::{IdMapping, SandboxOptions, Stream, UserNsSandbox};
    use std::io::Write;
    let sb = UserNsSandbox::new(SandboxOptions::default());
    if !matches!(sb.id_mapping(), IdMapping::Subordinate { .. }) {
        return Ok(None);
    }
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find the kiln executable: {e}"))?;
    let mut argv: Vec<std::ffi::OsString> = vec![exe.into_os_string()];
    argv.extend(std::env::args_os().skip(1));
    argv.extend(["--userns".into(), "host".into()]);
    let env: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os().collect();
    let status = sb
        .exec_in_namespace(&argv, &env, &mut |stream, bytes| {
            let _ = match stream {
                Stream::Stdout => std::io::stdout().write_all(bytes),
                Stream::Stderr => std::io::stderr().write_all(bytes),
            };
        })
        .map_err(|e| anyhow::anyhow!("cannot run the import in a user namespace: {e}"))?;
    Ok(Some(match status {
        crate::sandbox::ExitStatus::Code(c) => c,
        crate::sandbox::ExitStatus::Signal(s) => 128 + s,
    }))
}

#[cfg(test)]
mod tests {
    use super::command_words;

    #[test]
    fn command_words_split_like_a_shell_or_parse_json() {
        assert_eq!(
            command_words("/bin/sh -c 'echo hi'").unwrap(),
            ["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(command_words(r#"["a b", "c"]"#).unwrap(), ["a b", "c"]);
        assert_eq!(command_words(r#"a\ b "c\"d""#).unwrap(), ["a b", "c\"d"]);
        assert!(command_words("'open").is_err());
    }
}
