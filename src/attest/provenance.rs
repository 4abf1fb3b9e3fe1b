//! SLSA provenance v1 (slsa.dev/spec/v1.0/provenance) of a kiln build, from plain facts the
//! caller gathers ([`Facts`]); field names follow BuildKit's v1 predicate
//! (`solver/llbsolver/provenance/types`, `configSource`, `request`, `builderPlatform`), except
//! `runDetails.metadata.invocationId`, spelled as the SLSA spec (BuildKit writes
//! `invocationID`, which the spec's schema does not know).
//!
//! - `buildType` is [`BUILD_TYPE`], documented in docs/SUPPLY-CHAIN.md.
//! - `externalParameters`: `configSource` (the Dockerfile's path and sha256), `request`
//!   (`frontend`, `args` as BuildKit names them: `build-arg:NAME`, `target`; `platforms`;
//!   the ids of the secrets given). A build arg whose name looks like a secret (BuildKit's
//!   `SecretsUsedInArgOrEnv` rule) has its value replaced by [`REDACTED`].
//! - `resolvedDependencies`: every base and `--from` image (`pkg:docker/…` with its platform,
//!   the manifest digest), the context's git commit and tree when it is a checkout, every
//!   `ADD URL` and its sha256; sorted.
//! - `internalParameters`: `builderPlatform`; with `mode=max`, `buildConfig.steps`: each step's
//!   stage, instruction and cache key.
//! - `runDetails`: builder id [`super::BUILDER_ID`] and version; `invocationId` a hash of the
//!   parameters and dependencies (the same inputs give the same id); `startedOn` and
//!   `finishedOn` only when times are given (the build epoch, or the clock with
//!   `--timestamp now`), so the default output is reproducible.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::oci::{Digest, Platform};

/// kiln's SLSA `buildType`.
pub const BUILD_TYPE: &str =
    "https://github.com/kiln-build/kiln/blob/main/docs/SUPPLY-CHAIN.md#provenance";
/// What a secret-named build arg's value becomes.
pub const REDACTED: &str = "<redacted>";

/// How much provenance says (`--provenance mode=min|max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Parameters and dependencies.
    #[default]
    Min,
    /// Also each step's inputs.
    Max,
}

/// The git checkout the context is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// `remote.origin.url`, credentials removed, when set.
    pub uri: Option<String>,
    /// `git rev-parse HEAD`.
    pub commit: String,
    /// `git rev-parse HEAD^{tree}`.
    pub tree: String,
}

/// One step, for `mode=max`.
#[derive(Debug, Clone)]
pub struct StepFact {
    /// Its stage.
    pub stage: String,
    /// Its instruction (history text).
    pub instruction: String,
    /// Its cache key.
    pub cache_key: String,
}

/// What a build was given and resolved.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The mode.
    pub mode: Mode,
    /// The Dockerfile as the build named it (relative to the context when inside it).
    pub dockerfile_path: String,
    /// The Dockerfile's digest.
    pub dockerfile_digest: Option<Digest>,
    /// `--target`.
    pub target: Option<String>,
    /// The platforms built.
    pub platforms: Vec<Platform>,
    /// The build args.
    pub build_args: BTreeMap<String, String>,
    /// The secrets' ids.
    pub secrets: Vec<String>,
    /// Base and `--from` images: reference, platform, manifest digest.
    pub images: Vec<(String, Option<Platform>, Digest)>,
    /// The context's git checkout.
    pub git: Option<GitSource>,
    /// `ADD` URLs and their content's digest.
    pub urls: Vec<(String, Digest)>,
    /// The steps (used with `mode=max`).
    pub steps: Vec<StepFact>,
    /// The platform kiln ran on.
    pub builder_platform: Option<Platform>,
    /// Start and finish, in seconds since the epoch, when they are to be written.
    pub times: Option<(i64, i64)>,
}

/// Whether a build arg's name looks like it holds a secret: BuildKit's `SecretsUsedInArgOrEnv`
/// lint (`frontend/dockerfile/dockerfile2llb/convert.go`, `secretsRegexp` minus
/// `secretsAllowRegexp`), which buildx surfaces.
pub fn is_secret_name(name: &str) -> bool {
    let words: Vec<String> = name
        .split(['_', '-'])
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let secret = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    let public_key = words.windows(2).any(|w| w[0] == "public" && w[1] == "key");
    words.iter().any(|w| secret.contains(&w.as_str())) && !public_key
}

fn digest_set(d: &Digest) -> Value {
    json!({d.algorithm().as_str(): d.hex()})
}

/// Removes `user:password@` from a URL.
pub fn strip_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (auth, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match auth.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{host}{path}"),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// The SLSA v1 predicate of a build.
pub fn predicate(f: &Facts) -> Value {
    let mut args = serde_json::Map::new();
    for (k, v) in &f.build_args {
        let v = if is_secret_name(k) {
            REDACTED
        } else {
            v.as_str()
        };
        args.insert(format!("build-arg:{k}"), Value::from(v));
    }
    if let Some(t) = &f.target {
        args.insert("target".into(), Value::from(t.as_str()));
    }
    let mut config_source = json!({"path": f.dockerfile_path});
    if let Some(d) = &f.dockerfile_digest {
        config_source["digest"] = digest_set(d);
    }
    let mut request = json!({
        "frontend": "dockerfile.v0",
        "args": args,
        "platforms": f.platforms.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
    });
    if !f.secrets.is_empty() {
        let mut ids = f.secrets.clone();
        ids.sort();
        request["secrets"] = ids.into_iter().map(|id| json!({"id": id})).collect();
    }
    let external = json!({"configSource": config_source, "request": request});
    let mut deps: Vec<Value> = Vec::new();
    for (r, p, d) in &f.images {
        deps.push(json!({"uri": super::docker_purl(r, p.as_ref()), "digest": digest_set(d)}));
    }
    for (u, d) in &f.urls {
        deps.push(json!({"uri": strip_credentials(u), "digest": digest_set(d)}));
    }
    if let Some(g) = &f.git {
        let mut v =
            json!({"name": "context", "digest": {"gitCommit": g.commit, "gitTree": g.tree}});
        if let Some(u) = &g.uri {
            v["uri"] = Value::from(strip_credentials(u));
        }
        deps.push(v);
    }
    deps.sort_by_key(crate::oci::to_canonical_json);
    deps.dedup();
    let mut internal = json!({});
    if let Some(p) = &f.builder_platform {
        internal["builderPlatform"] = Value::from(p.to_string());
    }
    if f.mode == Mode::Max {
        internal["buildConfig"] = json!({"steps": f.steps.iter().map(|s| json!({
            "stage": s.stage,
            "instruction": s.instruction,
            "cacheKey": s.cache_key,
        })).collect::<Vec<_>>()});
    }
    let invocation = crate::oci::Digest::sha256(&crate::oci::to_canonical_json(&json!({
        "external": external,
        "internal": internal,
        "deps": deps,
    })));
    let mut metadata = json!({"invocationId": &invocation.hex()[..32]});
    if let Some((start, finish)) = f.times {
        metadata["startedOn"] = Value::from(crate::oci::rfc3339(start));
        metadata["finishedOn"] = Value::from(crate::oci::rfc3339(finish));
    }
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": external,
            "internalParameters": internal,
            "resolvedDependencies": deps,
        },
        "runDetails": {
            "builder": {
                "id": super::BUILDER_ID,
                "version": {"kiln": env!("CARGO_PKG_VERSION")},
            },
            "metadata": metadata,
        },
    })
}
