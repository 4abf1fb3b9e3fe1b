//! `kiln bake --matrix [--format json|github]` and `kiln bake --merge FILE...`: fanning a bake
//! out over CI runners (a GitHub Actions matrix, Kubernetes Jobs) with the registry as the
//! shared store, and joining the runners' results, as buildx's "multi-platform build across
//! runners" recipe does with `push-by-digest=true` and `imagetools create`.
use serde::Serialize;

use crate::bake::BakePlan;
use crate::ops::{self, MergeOptions};

use super::bake_args::BakeArgs;
use super::{out, CliResult, Context, Exit};

/// One entry of the matrix: one target, one platform.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MatrixEntry {
    /// The target.
    pub target: String,
    /// The platform.
    pub platform: String,
    /// `TARGET-PLATFORM` with `/` as `-`: a name for the job and its artifact.
    pub id: String,
    /// The digests file the command writes (what `--merge` reads).
    pub metadata_file: String,
    /// The `kiln bake` command line that builds this target for this platform and pushes it by
    /// digest.
    pub command: String,
    /// Its `--cache-to` values.
    pub cache_to: Vec<String>,
    /// Its `--cache-from` values.
    pub cache_from: Vec<String>,
}

/// Quotes `s` for a POSIX shell when it needs it.
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,@+%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The flags of `a` that change what a runner builds, to repeat on every entry's command line.
fn passed_flags(ctx: &Context, a: &BakeArgs) -> Vec<String> {
    let mut f = Vec::new();
    if let Some(c) = &ctx.registry.config {
        f.extend(["--config".to_string(), c.display().to_string()]);
    }
    for s in &a.sets {
        f.extend(["--set".to_string(), s.clone()]);
    }
    f.extend(["--compression".to_string(), a.compression.to_string()]);
    if let Some(e) = a.source_date_epoch {
        f.extend(["--source-date-epoch".to_string(), e.to_string()]);
    }
    if a.no_cache {
        f.push("--no-cache".into());
    }
    if a.single_id {
        f.push("--single-id".into());
    }
    if a.network != "default" {
        f.extend(["--network".to_string(), a.network.clone()]);
    }
    for x in &a.allow {
        f.extend(["--allow".to_string(), x.clone()]);
    }
    f
}

/// The matrix of `plan`: targets × platforms, in build order.
pub(crate) fn matrix(plan: &BakePlan, flags: &[String]) -> Vec<MatrixEntry> {
    let mut entries = Vec::new();
    for t in &plan.targets {
        for p in &t.platforms {
            let id = format!("{}-{}", t.name, crate::bake::plan::platform_slug(p));
            let metadata_file = format!("digests-{id}.json");
            let mut args: Vec<String> = vec![
                "kiln".into(),
                "bake".into(),
                t.name.clone(),
                "--platform".into(),
                p.clone(),
                "--push-by-digest".into(),
                "--metadata-file".into(),
                metadata_file.clone(),
            ];
            args.extend(flags.iter().cloned());
            entries.push(MatrixEntry {
                target: t.name.clone(),
                platform: p.clone(),
                id,
                metadata_file,
                command: args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "),
                cache_to: t.cache_to.get(p).cloned().unwrap_or_default(),
                cache_from: t.cache_from.get(p).cloned().unwrap_or_default(),
            });
        }
    }
    entries
}

/// `--matrix`: prints the matrix as JSON (`json`: an array) or as GitHub Actions wants it in
/// `strategy.matrix` through `fromJSON` (`github`: `{"include": [...]}` on one line).
pub(crate) fn print_matrix(ctx: &Context, a: &BakeArgs, plan: &BakePlan) -> CliResult {
    let entries = matrix(plan, &passed_flags(ctx, a));
    match a.format.as_deref().unwrap_or("json") {
        "json" => out(&format!("{}\n", serde_json::to_string_pretty(&entries)?)),
        "github" => out(&format!(
            "{}\n",
            serde_json::to_string(&serde_json::json!({ "include": entries }))?
        )),
        other => Err(anyhow::anyhow!("--format `{other}`: expected json or github").into()),
    }
}

/// `--merge FILE...`: joins the runners' digests files, pushes the tags, writes the joined
/// digests file to `--metadata-file`.
pub(crate) fn run_merge(ctx: &Context, a: &BakeArgs, plan: BakePlan) -> CliResult {
    if a.targets.is_empty() {
        return Err(anyhow::anyhow!("--merge: name the runners' digests files").into());
    }
    let opts = MergeOptions {
        plan,
        files: a.targets.iter().map(Into::into).collect(),
        remote: ctx.remote()?,
    };
    let store = ctx.store()?;
    let reporter = ctx.reporter();
    let result = ops::merge(&store, &opts, reporter.as_ref()).map_err(|e| Exit {
        code: 1,
        error: Some(e.into()),
    })?;
    drop(reporter);
    if let Some(f) = &a.metadata_file {
        let text = serde_json::to_string_pretty(&result)?;
        std::fs::write(f, text)
            .map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", f.display()))?;
    }
    let mut text = String::new();
    for (name, t) in &result.targets {
        text.push_str(&format!("{name}\t{}\t{}\n", t.digest, t.tags.join(",")));
    }
    out(&text)
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn command_lines_are_quoted_for_the_shell() {
        assert_eq!(
            quote("python.cache-to=type=registry,ref=r/c:x"),
            "python.cache-to=type=registry,ref=r/c:x"
        );
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }
}
