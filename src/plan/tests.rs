//! Unit tests of the planner: scoping, stages, ONBUILD, CMD/ENTRYPOINT, spans, the base
//! resolver and what the cache keys depend on. (The command-line and fixture tests are in
//! `tests/it/plan.rs`.)
use super::*;
use crate::dockerfile::instructions::Dockerfile;
use std::collections::BTreeMap;

fn dockerfile(src: &str) -> Dockerfile {
    let ast = crate::dockerfile::parse(src).unwrap();
    crate::dockerfile::instructions(&ast).unwrap()
}

fn opts(args: &[(&str, &str)]) -> PlanOptions {
    let mut o = PlanOptions::default();
    for (k, v) in args {
        o.build_args.insert(k.to_string(), v.to_string());
    }
    o
}

fn try_plan(src: &str, o: &PlanOptions) -> Result<BuildPlan, PlanError> {
    plan(&dockerfile(src), o, &mut NoBases).map_err(PlanError::from)
}

fn ok(src: &str) -> BuildPlan {
    try_plan(src, &PlanOptions::default()).unwrap_or_else(|e| panic!("{}", e.render(src)))
}

fn step(p: &BuildPlan, stage: StageId, i: usize) -> &Step {
    &p.stage(stage).unwrap().steps[i]
}

fn run(p: &BuildPlan, stage: StageId, i: usize) -> &RunStep {
    match &step(p, stage, i).kind {
        StepKind::Run(r) => r,
        k => panic!("not a RUN: {k:?}"),
    }
}

fn var<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
}

/// A resolver that records its calls and answers from a table (or fails on one reference).
#[derive(Default)]
struct Recorder {
    calls: Vec<(String, String, Position)>,
    configs: BTreeMap<String, BaseConfig>,
    fail_on: Option<String>,
}

impl BaseResolver for Recorder {
    type Error = std::io::Error;

    fn resolve(
        &mut self,
        reference: &str,
        platform: &Platform,
        position: Position,
    ) -> Result<Option<BaseConfig>, std::io::Error> {
        self.calls
            .push((reference.to_string(), platform.to_string(), position));
        if self.fail_on.as_deref() == Some(reference) {
            return Err(std::io::Error::other("manifest unknown"));
        }
        Ok(self.configs.get(reference).cloned())
    }
}

fn with(src: &str, r: &mut Recorder) -> BuildPlan {
    plan(&dockerfile(src), &PlanOptions::default(), r)
        .unwrap_or_else(|e| panic!("{}", e.render(src)))
}

fn keys(p: &BuildPlan) -> CacheKeys {
    CacheKeys::compute(p, &|_| None)
}

#[test]
fn a_global_arg_is_seen_in_a_stage_only_after_arg_name() {
    let p = ok("ARG V=g\nFROM scratch\nRUN a\nARG V\nRUN b\n");
    assert_eq!(var(&run(&p, 0, 0).env, "V"), None);
    assert_eq!(var(&run(&p, 0, 2).env, "V"), Some("g"));
}

#[test]
fn a_build_arg_beats_the_default_and_the_default_beats_the_global() {
    let src = "ARG V=g\nFROM scratch\nARG V=d\nRUN x\n";
    assert_eq!(var(&run(&ok(src), 0, 1).env, "V"), Some("d"));
    let p = try_plan(src, &opts(&[("V", "b")])).unwrap();
    assert_eq!(var(&run(&p, 0, 1).env, "V"), Some("b"));
    assert!(p.unused_build_args.is_empty());
}

#[test]
fn an_arg_default_expands_with_the_stage_environment() {
    let p = ok("FROM scratch\nENV A=1\nARG B=${A}2\nRUN x\n");
    assert_eq!(var(&run(&p, 0, 2).env, "B"), Some("12"));
}

#[test]
fn predefined_args_come_from_the_options_and_build_args_override_them() {
    let mut o = PlanOptions {
        target: Some("App".into()),
        target_platform: Platform::parse("linux/arm64/v8").unwrap(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
        ..PlanOptions::default()
    };
    let src =
        "FROM scratch AS app\nARG TARGETARCH TARGETVARIANT BUILDPLATFORM TARGETSTAGE\nRUN x\n";
    let p = try_plan(src, &o).unwrap();
    let env = &run(&p, 0, 1).env;
    assert_eq!(var(env, "TARGETARCH"), Some("arm64"));
    assert_eq!(var(env, "TARGETVARIANT"), Some("v8"));
    assert_eq!(var(env, "BUILDPLATFORM"), Some("linux/amd64"));
    assert_eq!(var(env, "TARGETSTAGE"), Some("app"));
    o.build_args.insert("TARGETARCH".into(), "riscv64".into());
    let p = try_plan(src, &o).unwrap();
    assert_eq!(var(&run(&p, 0, 1).env, "TARGETARCH"), Some("riscv64"));
}

#[test]
fn unreachable_stages_are_pruned_and_dependencies_come_first() {
    let src = "FROM scratch AS a\nFROM scratch AS unused\nFROM scratch AS b\nCOPY --from=a /x /x\nFROM b AS c\nCOPY --from=0 /y /y\n";
    let p = ok(src);
    assert_eq!(p.order, vec![0, 2, 3]);
    assert_eq!(p.target, 3);
    assert!(p.stage(1).is_none(), "the unused stage is not planned");
    let ids: Vec<StageId> = p.stages.iter().map(|s| s.id).collect();
    assert_eq!(ids, p.order, "stages are kept in build order");
}

#[test]
fn copy_from_a_stage_makes_an_edge_and_a_stage_input() {
    let p = ok("FROM scratch AS a\nFROM scratch\nCOPY --from=A /x /x\nCOPY --from=img:1 /y /y\n");
    let s = step(&p, 1, 0);
    match &s.kind {
        StepKind::Copy(c) => assert_eq!(c.source, Source::Stage { stage: 0 }),
        k => panic!("{k:?}"),
    }
    assert_eq!(s.inputs, vec![Input::Stage { stage: 0 }]);
    assert_eq!(
        step(&p, 1, 1).inputs,
        vec![Input::Image {
            reference: "img:1".into(),
            platform: String::new()
        }]
    );
    assert_eq!(p.order, vec![0, 1]);
}

#[test]
fn a_run_mount_from_a_stage_makes_an_edge() {
    let p = ok("FROM scratch AS tools\nFROM scratch AS unused\nFROM scratch\nRUN --mount=from=tools,target=/t x\n");
    assert_eq!(p.order, vec![0, 2]);
    assert_eq!(step(&p, 2, 0).inputs, vec![Input::Stage { stage: 0 }]);
}

#[test]
fn self_and_future_references_are_errors_at_their_line() {
    let e = try_plan(
        "FROM scratch AS a\nRUN --mount=from=a,target=/t x\n",
        &PlanOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(*e.kind, PlanErrorKind::Cycle { .. }), "{e}");
    assert_eq!(e.position.line, 2);
    let e = try_plan(
        "FROM scratch\nCOPY --from=1 /x /x\nFROM scratch\n",
        &PlanOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(*e.kind, PlanErrorKind::FutureStage { .. }), "{e}");
    assert_eq!(e.position.line, 2);
    let e = try_plan(
        "FROM scratch\nCOPY --from=7 /x /x\n",
        &PlanOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(*e.kind, PlanErrorKind::UnknownStageIndex { .. }),
        "{e}"
    );
}

#[test]
fn a_stage_carries_its_from_span_and_position() {
    let src = "# base\n\n  FROM \\\n  scratch AS a\nRUN x\n";
    let p = ok(src);
    let s = &p.stages[0];
    assert_eq!(s.position, Position { line: 3, col: 3 });
    assert!(
        src[s.span.start..s.span.end].starts_with("FROM"),
        "{:?}",
        s.span
    );
    assert_eq!(step(&p, 0, 0).position.line, 5);
}

#[test]
fn the_resolver_is_asked_once_per_reachable_reference_and_platform_with_its_from() {
    let mut r = Recorder::default();
    let src = "FROM alpine AS a\nFROM --platform=linux/arm64 alpine AS b\nFROM debian AS unused\nFROM a AS c\nCOPY --from=b /x /x\nCOPY --from=busybox /y /y\nFROM scratch\nCOPY --from=c /z /z\n";
    with(src, &mut r);
    assert_eq!(
        r.calls,
        vec![
            (
                "alpine".to_string(),
                "linux/amd64".to_string(),
                Position { line: 1, col: 1 }
            ),
            (
                "alpine".to_string(),
                "linux/arm64".to_string(),
                Position { line: 2, col: 1 }
            )
        ],
        "stage and scratch bases, COPY --from images and unreachable stages are not asked; \
         one reference for two platforms is two images"
    );
    let mut r = Recorder::default();
    with(
        "ARG T=3\nFROM scratch AS s\nFROM img:$T\nCOPY --from=s /a /a\n",
        &mut r,
    );
    assert_eq!(r.calls.len(), 1);
    assert_eq!(r.calls[0].0, "img:3", "the expanded reference");
    assert_eq!(r.calls[0].2, Position { line: 3, col: 1 });
}

#[test]
fn a_failing_base_names_the_from_and_the_reference() {
    let mut r = Recorder {
        fail_on: Some("ghost:1".into()),
        ..Recorder::default()
    };
    let src = "FROM scratch\n\nFROM ghost:1\nRUN x\n";
    let e = plan(&dockerfile(src), &PlanOptions::default(), &mut r)
        .unwrap_err()
        .with_file("Dockerfile");
    match &e {
        PlanFailure::Base {
            position,
            reference,
            ..
        } => {
            assert_eq!(*position, Position { line: 3, col: 1 });
            assert_eq!(reference, "ghost:1");
        }
        PlanFailure::Plan(p) => panic!("{p}"),
    }
    let text = e.render(src);
    assert!(
        text.starts_with("Dockerfile:3:1: cannot use base image `ghost:1`: manifest unknown\n"),
        "{text}"
    );
    assert!(text.contains("FROM ghost:1"), "{text}");
}

#[test]
fn a_base_config_gives_env_workdir_user_and_shell() {
    let mut r = Recorder::default();
    r.configs.insert(
        "py".into(),
        BaseConfig {
            env: vec![("PATH".into(), "/opt/bin".into())],
            working_dir: Some("/srv".into()),
            user: Some("app".into()),
            shell: Some(vec!["/bin/bash".into(), "-c".into()]),
            onbuild: Vec::new(),
        },
    );
    let p = with("FROM py\nENV PATH=$PATH:/x\nRUN go\n", &mut r);
    let run = run(&p, 0, 1);
    assert_eq!(var(&run.env, "PATH"), Some("/opt/bin:/x"));
    assert_eq!(run.workdir, "/srv");
    assert_eq!(run.user.as_deref(), Some("app"));
    assert_eq!(run.argv, vec!["/bin/bash", "-c", "go"]);
    assert_eq!(var(&p.stages[0].env, "PATH"), Some("/opt/bin:/x"));
}

#[test]
fn onbuild_triggers_are_planned_after_the_from_and_located_there() {
    let mut r = Recorder::default();
    r.configs.insert(
        "node".into(),
        BaseConfig {
            onbuild: vec!["COPY . /app".into(), "RUN npm ci".into()],
            ..BaseConfig::default()
        },
    );
    let p = with("# c\n\nFROM node\nRUN test\nONBUILD RUN later\n", &mut r);
    let by: Vec<(&str, usize)> = p.stages[0]
        .steps
        .iter()
        .map(|s| (s.created_by.as_str(), s.position.line))
        .collect();
    assert_eq!(
        by,
        vec![
            ("COPY . /app # buildkit", 3),
            ("RUN /bin/sh -c npm ci # buildkit", 3),
            ("RUN /bin/sh -c test # buildkit", 4),
            ("ONBUILD RUN later", 5),
        ]
    );
    assert!(matches!(step(&p, 0, 0).inputs[0], Input::Context { .. }));
    r.configs.get_mut("node").unwrap().onbuild = vec!["ONBUILD RUN x".into()];
    let e = plan(&dockerfile("FROM node\n"), &PlanOptions::default(), &mut r).unwrap_err();
    match e {
        PlanFailure::Plan(e) => {
            assert!(
                matches!(*e.kind, PlanErrorKind::OnbuildTrigger { .. }),
                "{e}"
            );
            assert_eq!(e.position.line, 1);
        }
        PlanFailure::Base { .. } => panic!("not a base failure"),
    }
}

fn resets(p: &BuildPlan) -> Vec<(StageId, bool)> {
    p.stages
        .iter()
        .flat_map(|s| {
            s.steps.iter().filter_map(move |st| match &st.kind {
                StepKind::Config(ConfigEdit::Entrypoint { reset_cmd, .. }) => {
                    Some((s.id, *reset_cmd))
                }
                _ => None,
            })
        })
        .collect()
}

#[test]
fn an_entrypoint_resets_an_inherited_cmd_but_not_one_its_stage_set() {
    let p = ok("FROM alpine AS a\nENTRYPOINT [\"e\"]\nCMD [\"c\"]\nENTRYPOINT [\"f\"]\nFROM a\nENTRYPOINT [\"g\"]\n");
    assert_eq!(resets(&p), vec![(0, true), (0, false), (1, true)]);
    // A CMD from the base's ONBUILD triggers is the stage's own.
    let mut r = Recorder::default();
    r.configs.insert(
        "b".into(),
        BaseConfig {
            onbuild: vec!["CMD [\"c\"]".into()],
            ..BaseConfig::default()
        },
    );
    assert_eq!(
        resets(&with("FROM b\nENTRYPOINT e\n", &mut r)),
        vec![(0, false)]
    );
}

#[test]
fn the_cmd_reset_is_not_part_of_the_entrypoint_key() {
    let a = ok("FROM alpine\nENTRYPOINT [\"e\"]\n");
    let b = ok("FROM alpine\nCMD [\"c\"]\nENTRYPOINT [\"e\"]\n");
    assert_eq!(resets(&a), vec![(0, true)]);
    assert_eq!(resets(&b), vec![(0, false)]);
    assert_eq!(step(&a, 0, 0).encoding, step(&b, 0, 1).encoding);
}

#[test]
fn keys_change_exactly_when_an_input_changes() {
    let src = "FROM scratch AS a\nRUN one\nFROM scratch AS b\nRUN two\nFROM img AS c\nRUN three\nCOPY . /src\nRUN four\nCOPY --from=a /x /x\n";
    let p = ok(src);
    let base = keys(&p);
    let ctx = CacheKeys::compute(&p, &|i| match i {
        Input::Context { .. } => Some("sha256:1".into()),
        _ => None,
    });
    let c = |k: &CacheKeys| k.stage(2).unwrap().clone();
    // A context digest: the COPY and every later step of its stage, nothing before or elsewhere.
    assert_eq!(c(&base).base, c(&ctx).base);
    assert_eq!(c(&base).steps[0], c(&ctx).steps[0]);
    for i in 1..4 {
        assert_ne!(c(&base).steps[i], c(&ctx).steps[i], "step {i}");
    }
    assert_eq!(base.stage(0), ctx.stage(0));
    // The image digest: the base key and all of the stage.
    let img = CacheKeys::compute(&p, &|i| match i {
        Input::Image { .. } => Some("sha256:2".into()),
        _ => None,
    });
    assert_ne!(c(&base).base, c(&img).base);
    assert!(c(&base)
        .steps
        .iter()
        .zip(&c(&img).steps)
        .all(|(x, y)| x != y));
    // Another stage's content: only the step that copies from it (and after).
    let other = keys(&ok(&src.replace("RUN one", "RUN uno")));
    assert_ne!(base.final_key(0), other.final_key(0));
    assert_eq!(c(&base).steps[..3], c(&other).steps[..3]);
    assert_ne!(c(&base).steps[3], c(&other).steps[3]);
    // An unrelated stage (not reachable) and comments change nothing.
    let p2 = ok(&format!("# note\n{}", src.replace("RUN two", "RUN deux")));
    assert_eq!(keys(&p2), base);
    // The final key is the last step's, or the base key.
    assert_eq!(base.final_key(2), base.step(2, 3));
    let empty = ok("FROM scratch\n");
    let k = keys(&empty);
    assert_eq!(k.final_key(0), Some(k.stage(0).unwrap().base.as_str()));
}

#[test]
fn undeclared_proxy_args_reach_run_but_not_history_or_keys() {
    let src = "FROM scratch\nRUN x\n";
    let p = try_plan(src, &opts(&[("HTTPS_PROXY", "http://p:3128")])).unwrap();
    let r = run(&p, 0, 0);
    assert_eq!(
        r.proxy_env,
        vec![("HTTPS_PROXY".to_string(), "http://p:3128".to_string())]
    );
    assert!(!step(&p, 0, 0).created_by.contains("PROXY"));
    assert_eq!(keys(&p), keys(&ok(src)));
    assert!(p.unused_build_args.is_empty());
    // Declared, it is an ordinary ARG: in the environment, history and key.
    let d = "FROM scratch\nARG HTTPS_PROXY\nRUN x\n";
    let p = try_plan(d, &opts(&[("HTTPS_PROXY", "http://p:3128")])).unwrap();
    assert!(run(&p, 0, 1).proxy_env.is_empty());
    assert!(step(&p, 0, 1)
        .created_by
        .contains("HTTPS_PROXY=http://p:3128"));
    assert_ne!(keys(&p), keys(&ok(d)));
}

#[test]
fn undefined_variables_warn_only_where_the_environment_is_known() {
    let warned = |p: &BuildPlan| p.warnings.iter().any(|w| w.rule == "UndefinedVar");
    assert!(warned(&ok("FROM scratch\nENV A=$NOPE\n")));
    assert!(!warned(&ok("FROM img\nENV A=$NOPE\n")), "unknown base env");
    let mut r = Recorder::default();
    r.configs.insert("img".into(), BaseConfig::default());
    assert!(warned(&with("FROM img\nENV A=$NOPE\n", &mut r)));
}

/// Steps are named by their Dockerfile text as BuildKit's progress shows them: the logical
/// line (continuations joined, flags kept), the keyword upper-cased, variables expanded with
/// the environment before the step (RUN keeps quotes and unset variables), never the history
/// text's Go struct syntax or `# buildkit` suffix.
#[test]
fn steps_are_named_by_their_dockerfile_text() {
    let p = ok("FROM scratch\n\
         ARG V=1.2\n\
         expose 8080\n\
         HEALTHCHECK --interval=30s CMD [\"curl\", \"-f\", \"http://localhost/\"]\n\
         COPY --chmod=644 a.txt \\\n    /app/a-${V}.txt\n\
         RUN echo \"$V\" '$HOME' $UNSET && \\\n    true\n");
    let names: Vec<&str> = p.stages[0].steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ARG V=1.2",
            "EXPOSE 8080",
            "HEALTHCHECK --interval=30s CMD [curl, -f, http://localhost/]",
            "COPY --chmod=644 a.txt     /app/a-1.2.txt",
            "RUN echo \"1.2\" '$HOME' $UNSET &&     true",
        ]
    );
    for s in &p.stages[0].steps {
        for bad in ["map[", "&{", "# buildkit", "/bin/sh -c"] {
            assert!(!s.name.contains(bad), "{}", s.name);
        }
    }
}

/// A secret-looking variable's value never reaches a step's name (progress and errors show it).
#[test]
fn step_names_redact_secret_looking_values() {
    let p = try_plan(
        "FROM scratch\nARG API_TOKEN\nARG REGION=eu\nRUN curl -H \"$API_TOKEN\" $REGION\n",
        &opts(&[("API_TOKEN", "s3cr3t")]),
    )
    .unwrap();
    let run = &p.stages[0].steps[2];
    assert_eq!(run.name, "RUN curl -H \"<redacted>\" eu");
}
