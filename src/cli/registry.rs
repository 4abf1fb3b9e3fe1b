//! `kiln pull`, `kiln push`, `kiln login`, `kiln logout`, `kiln tags`, and the registry client
//! every command that may talk to a registry gets from the global flags and the config file.
use std::io::Read;
use std::path::PathBuf;

use clap::Args;

use crate::oci::Platform;
use crate::ops::{self, CopyOptions};
use crate::registry::{
    self, Client, ClientOptions, CredentialEnv, Credentials, Reference, RegistriesConfig,
    SpeedLimit,
};
use crate::transport::{Remote, Target};

use super::{out, out_json, CliResult, Context};

/// Registry settings shared by every command (`--tls-verify`, `--cert-dir`, `--jobs`, config,
/// `--speed-limit`/`--speed-time`).
#[derive(Debug, Clone, Args)]
pub struct RegistryFlags {
    /// Verify TLS certificates of registries; `false` also allows plain HTTP [default: true].
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub tls_verify: Option<bool>,
    /// A directory of extra CA certificates (`*.crt`) to trust for registries.
    #[arg(long, global = true, value_name = "DIR")]
    pub cert_dir: Vec<PathBuf>,
    /// Blobs transferred at once.
    #[arg(long, global = true, default_value_t = 4)]
    pub jobs: usize,
    /// Upload blobs in chunks of this many bytes instead of one request.
    #[arg(long, global = true, value_name = "BYTES")]
    pub chunk_size: Option<u64>,
    /// The config file with `[[registry]]` mirrors [default: $KILN_CONFIG, else ./kiln.toml,
    /// else ~/.config/kiln/config.toml].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Fail a registry transfer or an `ADD URL` download that moves fewer than BYTES per second
    /// over a whole `--speed-time` window (curl's option of the same name); 0 turns it off.
    #[arg(long, global = true, value_name = "BYTES", default_value_t = SpeedLimit::DEFAULT_BYTES_PER_SEC)]
    pub speed_limit: u64,
    /// The window of `--speed-limit`, in seconds.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = SpeedLimit::DEFAULT_WINDOW_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub speed_time: u64,
}

/// The config file kiln reads registry settings from (only its `[[registry]]` tables here).
fn config_file(flag: Option<&PathBuf>) -> Option<PathBuf> {
    if let Some(f) = flag {
        return Some(f.clone());
    }
    if let Some(f) = std::env::var_os("KILN_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(f));
    }
    let local = PathBuf::from("kiln.toml");
    if local.is_file() {
        return Some(local);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let f = base.join("kiln/config.toml");
    f.is_file().then_some(f)
}

/// Reads the `[[registry]]` tables of `file`; other tables belong to other commands.
pub(crate) fn registries(file: Option<&PathBuf>) -> anyhow::Result<RegistriesConfig> {
    let Some(path) = config_file(file) else {
        return Ok(RegistriesConfig::default());
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read `{}`: {e}", path.display()))?;
    let value: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("`{}`: {e}", path.display()))?;
    let Some(list) = value.get("registry") else {
        return Ok(RegistriesConfig::default());
    };
    let mut t = toml::Table::new();
    t.insert("registry".into(), list.clone());
    t.try_into::<RegistriesConfig>()
        .map_err(|e| anyhow::anyhow!("`{}`: [[registry]]: {e}", path.display()))
}

impl RegistryFlags {
    /// The client these flags and the environment describe.
    pub(crate) fn remote(&self) -> anyhow::Result<Remote> {
        let mut opts = ClientOptions {
            tls_verify: self.tls_verify.unwrap_or(true),
            cert_dirs: self.cert_dir.clone(),
            credentials: Credentials {
                explicit: Default::default(),
                env: Some(CredentialEnv::from_process_env()),
            },
            registries: registries(self.config.as_ref())?,
            speed: SpeedLimit {
                bytes_per_sec: self.speed_limit,
                window: std::time::Duration::from_secs(self.speed_time),
            },
            ..ClientOptions::default()
        };
        if let Some(n) = self.chunk_size {
            opts.upload = registry::UploadMode::Chunked { chunk_size: n };
        }
        let client = Client::new(opts)?;
        Ok(Remote::new(client, self.jobs.max(1)))
    }
}

/// Arguments of `kiln pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image, e.g. `debian:bookworm-slim` or `ghcr.io/org/app@sha256:…`.
    pub reference: String,
    /// Which platform to pull from a multi-platform image [default: the host's].
    #[arg(long)]
    pub platform: Option<Platform>,
}

/// Arguments of `kiln push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image in the local store.
    pub name: String,
    /// Where to push [default: NAME itself, as a registry reference]; `docker://` optional.
    pub dest: Option<String>,
    /// Also write the pushed manifest digest to this file.
    #[arg(long, value_name = "FILE")]
    pub digestfile: Option<PathBuf>,
}

/// Arguments of `kiln login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry, e.g. `ghcr.io` or `localhost:5000`.
    pub registry: String,
    /// The user name.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

/// Arguments of `kiln logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry.
    pub registry: String,
}

/// Arguments of `kiln tags`.
#[derive(Debug, Args)]
pub struct TagsArgs {
    /// The repository, e.g. `ghcr.io/org/app`.
    pub repository: String,
}

fn docker(reference: &str) -> String {
    reference
        .strip_prefix("docker://")
        .unwrap_or(reference)
        .to_string()
}

pub(crate) fn pull(ctx: &Context, flags: &RegistryFlags, a: PullArgs) -> CliResult {
    let store = ctx.store()?;
    let r = Reference::parse(&docker(&a.reference))?;
    let d = ops::copy(
        &store,
        &CopyOptions {
            source: Target::Registry(r.to_string()),
            dest: Target::Store(r.to_string()),
            platform: a.platform,
            remote: Some(ctx.remote_for(flags)?),
            all: false,
        },
        ctx.reporter().as_ref(),
    )?;
    out(&format!("{}@{}", r, d.digest))
}

pub(crate) fn push(ctx: &Context, flags: &RegistryFlags, a: PushArgs) -> CliResult {
    let store = ctx.store()?;
    let dest = docker(a.dest.as_deref().unwrap_or(&a.name));
    let r = Reference::parse(&dest)?;
    let d = ops::copy(
        &store,
        &CopyOptions {
            source: a.name.parse()?,
            dest: Target::Registry(r.to_string()),
            platform: None,
            remote: Some(ctx.remote_for(flags)?),
            all: false,
        },
        ctx.reporter().as_ref(),
    )?;
    if let Some(f) = &a.digestfile {
        std::fs::write(f, d.digest.to_string())
            .map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", f.display()))?;
    }
    out(&format!("pushed {}@{}", r, d.digest))
}

pub(crate) fn login(flags: &RegistryFlags, a: LoginArgs) -> CliResult {
    let username = match a.username {
        Some(u) => u,
        None => {
            return Err(anyhow::anyhow!("kiln login needs -u USER (and --password-stdin)").into())
        }
    };
    if !a.password_stdin {
        return Err(anyhow::anyhow!(
            "kiln login reads the password only from standard input: pass --password-stdin"
        )
        .into());
    }
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .map_err(|e| anyhow::anyhow!("cannot read the password from standard input: {e}"))?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    let registry = login_registry(&a.registry);
    // Check the credential against the registry before storing it.
    let mut remote = flags.remote()?;
    let mut opts = remote.client.options().clone();
    opts.credentials.explicit.insert(
        registry.clone(),
        registry::Credential::Basic {
            username: username.clone(),
            password: password.clone(),
        },
    );
    remote.client = Client::new(opts)?;
    remote.client.check_credentials(&registry)?;
    let env = CredentialEnv::from_process_env();
    let file = registry::store_credential(&env, &registry, &username, &password)?;
    out(&format!("Login Succeeded ({registry}, stored in {file})"))
}

/// The registry a `kiln login`/`logout` argument names, as credentials are keyed: `docker login`
/// accepts a URL too (`https://ghcr.io/`, `http://host:5000`, `https://index.docker.io/v1/`), so
/// a scheme and a path are dropped (`http://host:5000` used to become the host `http:`), and a
/// Docker Hub name is normalised like a reference's registry.
fn login_registry(arg: &str) -> String {
    let bare = arg
        .strip_prefix("https://")
        .or_else(|| arg.strip_prefix("http://"))
        .unwrap_or(arg);
    let host = bare.split('/').next().unwrap_or(bare);
    registry::Reference::parse(&format!("{host}/x"))
        .map(|r| r.registry().to_string())
        .unwrap_or_else(|_| host.to_string())
}

pub(crate) fn logout(a: LogoutArgs) -> CliResult {
    let env = CredentialEnv::from_process_env();
    let registry = login_registry(&a.registry);
    if registry::erase_credential(&env, &registry)? {
        out(&format!("Removed login credentials for {registry}"))
    } else {
        Err(anyhow::anyhow!("not logged in to {registry}").into())
    }
}

pub(crate) fn tags(flags: &RegistryFlags, a: TagsArgs) -> CliResult {
    let r = Reference::parse(&docker(&a.repository))?;
    let remote = flags.remote()?;
    let tags = remote.client.list_tags(&r, None)?;
    out_json(&serde_json::json!({ "Repository": r.name(), "Tags": tags }))
}

#[cfg(test)]
mod tests {
    use super::login_registry;

    /// Regression: `kiln login http://host:5000` asked `https://http://host:5000/v2/`.
    #[test]
    fn login_takes_a_registry_or_its_url() {
        for (arg, want) in [
            ("ghcr.io", "ghcr.io"),
            ("https://ghcr.io/", "ghcr.io"),
            ("http://127.0.0.1:5000", "127.0.0.1:5000"),
            ("https://registry.example:8443/v2/", "registry.example:8443"),
            ("localhost:5000", "localhost:5000"),
        ] {
            assert_eq!(login_registry(arg), want, "{arg}");
        }
        let hub = login_registry("https://index.docker.io/v1/");
        assert_eq!(hub, login_registry("docker.io"));
    }
}
