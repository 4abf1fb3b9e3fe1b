//! `kiln plan [CONTEXT] -f FILE [--build-arg K=V]... [--target S] [--platform P] --json`: parse,
//! validate and plan a build, and print the plan (stages, steps with expanded values, history
//! text, cache keys and their inputs). Reads the Dockerfile only; the context is not walked.
use super::parse::{out, print_warnings};
use crate::dockerfile;
use crate::plan::{self, PlanOptions, Platform, StepKind};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `kiln plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The build context directory (default `.`).
    pub context: Option<PathBuf>,
    /// The Dockerfile (default `CONTEXT/Dockerfile`).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// A build argument `NAME=VALUE` (repeatable).
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_args: Vec<String>,
    /// The stage to build (default: the last).
    #[arg(long)]
    pub target: Option<String>,
    /// The target platform `os/arch[/variant]` (default linux/amd64).
    #[arg(long)]
    pub platform: Option<String>,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `kiln plan`; returns the exit code.
pub fn run(args: &PlanArgs) -> i32 {
    let context = args.context.clone().unwrap_or_else(|| PathBuf::from("."));
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| context.join("Dockerfile"));
    let name = file.display().to_string();
    let mut opts = PlanOptions {
        build_platform: Platform::host(),
        target: args.target.clone(),
        ..PlanOptions::default()
    };
    opts.target_platform = opts.build_platform.clone();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) => {
                opts.build_args.insert(k.to_string(), v.to_string());
            }
            None => {
                eprintln!("error: --build-arg `{a}` is not NAME=VALUE");
                return 2;
            }
        }
    }
    if let Some(p) = &args.platform {
        match Platform::parse(p) {
            Some(p) => opts.target_platform = p,
            None => {
                eprintln!("error: invalid --platform `{p}`: expected os/arch[/variant]");
                return 2;
            }
        }
    }
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read `{name}`: {e}");
            return 2;
        }
    };
    let ast = match dockerfile::parse_bytes(&bytes) {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "{}",
                e.with_file(&name).render(&String::from_utf8_lossy(&bytes))
            );
            return 2;
        }
    };
    let df = match dockerfile::instructions(&ast) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{}", e.with_file(&name).render(&ast.source));
            return 2;
        }
    };
    let p = match plan::plan(&df, &opts, &mut plan::NoBases).map_err(plan::PlanError::from) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}", e.with_file(&name).render(&ast.source));
            return 2;
        }
    };
    if !print_warnings(&name, &p.warnings, ast.directive("check")) {
        return 2;
    }
    if !p.unused_build_args.is_empty() {
        eprintln!(
            "warning: build arguments not consumed: {}",
            p.unused_build_args.join(", ")
        );
    }
    // No content is read: context, image, URL and git inputs hash as `unresolved`.
    let keys = plan::CacheKeys::compute(&p, &|_| None);
    if args.json {
        match serde_json::to_value(&p)
            .map(|v| with_keys(v, &p, &keys))
            .and_then(|v| serde_json::to_string_pretty(&v))
        {
            Ok(s) => out(&s),
            Err(e) => {
                eprintln!("error: cannot serialize the plan: {e}");
                return 2;
            }
        }
        return 0;
    }
    for s in &p.stages {
        let name = s.name.clone().unwrap_or_else(|| format!("#{}", s.id));
        out(&format!(
            "stage {name} ({}) from {}",
            s.platform, s.from_source
        ));
        for (i, st) in s.steps.iter().enumerate() {
            let kind = match &st.kind {
                StepKind::Run(_) => "run",
                StepKind::Copy(_) => "copy",
                StepKind::Workdir { .. } => "workdir",
                StepKind::Config(_) => "config",
            };
            let key = keys.step(s.id, i).unwrap_or_default();
            let key = key.get(..12).unwrap_or(key);
            out(&format!("  {key} {kind:<7} {}", st.name));
        }
    }
    0
}

/// The plan's JSON with each stage's `base_key` and each step's `cache_key` in place (the
/// shape `kiln plan --json` has always printed; the keys are a separate value in the plan API).
fn with_keys(
    mut v: serde_json::Value,
    p: &plan::BuildPlan,
    keys: &plan::CacheKeys,
) -> serde_json::Value {
    let stages = v.get_mut("stages").and_then(|s| s.as_array_mut());
    for (stage, sv) in p.stages.iter().zip(stages.into_iter().flatten()) {
        let Some(k) = keys.stage(stage.id) else {
            continue;
        };
        sv["base_key"] = k.base.clone().into();
        let steps = sv.get_mut("steps").and_then(|s| s.as_array_mut());
        for (key, st) in k.steps.iter().zip(steps.into_iter().flatten()) {
            st["cache_key"] = key.clone().into();
        }
    }
    v
}
