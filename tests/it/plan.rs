//! Planner tests: ARG precedence, pruning, order, cycles, --target, history text and cache keys.
use kiln::dockerfile::{instructions, parse};
use kiln::plan::{
    plan, Base, BaseConfig, BaseResolver, BuildPlan, CacheKeys, ConfigEdit, Input, NoBases,
    PlanError, PlanErrorKind, PlanOptions, Platform, Source, StepKind,
};
use std::collections::BTreeMap;

fn plan_src(src: &str, opts: &PlanOptions) -> Result<BuildPlan, PlanError> {
    plan_with(src, opts, &mut NoBases)
}

fn plan_with(
    src: &str,
    opts: &PlanOptions,
    bases: &mut impl BaseResolver<Error = std::convert::Infallible>,
) -> Result<BuildPlan, PlanError> {
    let ast = parse(src).expect("parses");
    let df = instructions(&ast).expect("validates");
    plan(&df, opts, bases).map_err(PlanError::from)
}

/// Base image configs by reference, as a builder that has read the images gives them.
struct Configs(BTreeMap<String, BaseConfig>);

impl BaseResolver for Configs {
    type Error = std::convert::Infallible;

    fn resolve(
        &mut self,
        reference: &str,
        _platform: &Platform,
        _position: kiln::dockerfile::Position,
    ) -> Result<Option<BaseConfig>, Self::Error> {
        Ok(self.0.get(reference).cloned())
    }
}

fn ok(src: &str) -> BuildPlan {
    plan_src(src, &PlanOptions::default()).unwrap_or_else(|e| panic!("{}", e.render(src)))
}

fn with_args(args: &[(&str, &str)]) -> PlanOptions {
    let mut o = PlanOptions::default();
    for (k, v) in args {
        o.build_args.insert(k.to_string(), v.to_string());
    }
    o
}

fn run_env(p: &BuildPlan, stage: usize, step: usize) -> Vec<(String, String)> {
    match &p.stages[stage].steps[step].kind {
        StepKind::Run(r) => r.env.clone(),
        k => panic!("not a RUN: {k:?}"),
    }
}

fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
}

#[test]
fn arg_precedence_follows_buildkit() {
    let src = "ARG G=global\nFROM scratch\nARG G\nARG D=default\nARG N\nRUN x\n";
    let p = ok(src);
    let env = run_env(&p, 0, 3);
    assert_eq!(
        get(&env, "G"),
        Some("global"),
        "global value imported by ARG NAME"
    );
    assert_eq!(get(&env, "D"), Some("default"));
    assert_eq!(get(&env, "N"), None, "declared without a value stays unset");

    let p = plan_src(src, &with_args(&[("G", "b1"), ("D", "b2"), ("N", "b3")])).unwrap();
    let env = run_env(&p, 0, 3);
    assert_eq!(get(&env, "G"), Some("b1"));
    assert_eq!(get(&env, "D"), Some("b2"));
    assert_eq!(get(&env, "N"), Some("b3"));
}

#[test]
fn global_args_are_not_visible_without_redeclaring() {
    let p = ok("ARG V=1\nFROM scratch\nENV X=${V:-unset}\n");
    match &p.stages[0].steps[0].kind {
        StepKind::Config(ConfigEdit::Env { pairs }) => assert_eq!(pairs[0].1, "unset"),
        k => panic!("{k:?}"),
    }
}

#[test]
fn env_after_arg_wins_and_arg_after_env_wins_in_build_env() {
    let p = ok("FROM scratch\nARG X=arg\nENV X=env\nRUN a\nARG X=arg2\nRUN b\n");
    assert_eq!(get(&run_env(&p, 0, 2), "X"), Some("env"));
    assert_eq!(get(&run_env(&p, 0, 4), "X"), Some("arg2"));
    // The image config keeps the ENV value.
    assert_eq!(get(&p.stages[0].env, "X"), Some("env"));
}

#[test]
fn one_snapshot_per_instruction() {
    let p = ok("FROM scratch\nENV abc=hello\nENV abc=bye def=$abc\n");
    match &p.stages[0].steps[1].kind {
        StepKind::Config(ConfigEdit::Env { pairs }) => {
            assert_eq!(pairs[1], ("def".to_string(), "hello".to_string()))
        }
        k => panic!("{k:?}"),
    }
}

#[test]
fn from_expands_global_args_and_platform_args() {
    let mut o = with_args(&[("TAG", "3.20")]);
    o.target_platform = Platform::parse("linux/arm64/v8").unwrap();
    let p = plan_src(
        "ARG TAG=latest\nFROM --platform=$BUILDPLATFORM alpine:$TAG\nARG TARGETARCH\nRUN echo\n",
        &o,
    )
    .unwrap();
    assert_eq!(
        p.stages[0].base,
        Base::Image {
            reference: "alpine:3.20".into()
        }
    );
    assert_eq!(p.stages[0].platform.to_string(), "linux/amd64");
    assert_eq!(get(&run_env(&p, 0, 1), "TARGETARCH"), Some("arm64"));
}

#[test]
fn target_prunes_and_orders_stages() {
    let src = "FROM alpine AS a\nRUN a\nFROM alpine AS b\nRUN b\nFROM a AS c\nCOPY --from=b /x /x\nFROM alpine AS d\nRUN d\n";
    let p = ok(src);
    assert_eq!(p.order, vec![3], "default target is the last stage");
    let o = PlanOptions {
        target: Some("C".into()),
        ..PlanOptions::default()
    };
    let p = plan_src(src, &o).unwrap();
    assert_eq!(p.order, vec![0, 1, 2]);
    assert_eq!(p.target, 2);
    assert_eq!(p.stages[2].base, Base::Stage { stage: 0 });
    match &p.stages[2].steps[0].kind {
        StepKind::Copy(c) => assert_eq!(c.source, Source::Stage { stage: 1 }),
        k => panic!("{k:?}"),
    }
}

#[test]
fn copy_from_index_and_image() {
    let p = ok("FROM alpine\nRUN a\nFROM scratch\nCOPY --from=0 /a /a\nCOPY --from=busybox:1 /bin/sh /sh\n");
    assert_eq!(p.order, vec![0, 1]);
    match &p.stages[1].steps[1].kind {
        StepKind::Copy(c) => assert_eq!(
            c.source,
            Source::Image {
                reference: "busybox:1".into()
            }
        ),
        k => panic!("{k:?}"),
    }
}

#[test]
fn unknown_target_is_an_error_with_suggestion() {
    let o = PlanOptions {
        target: Some("buidl".into()),
        ..PlanOptions::default()
    };
    let e = plan_src("FROM alpine AS build\n", &o).unwrap_err();
    assert_eq!(
        e.kind.to_string(),
        "target stage \"buidl\" could not be found (did you mean \"build\"?)"
    );
}

#[test]
fn self_reference_is_a_cycle_and_forward_reference_an_error() {
    let e = plan_src(
        "FROM alpine AS a\nCOPY --from=a /x /y\n",
        &PlanOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(*e.kind, PlanErrorKind::Cycle { .. }), "{e}");
    let e = plan_src(
        "FROM alpine AS a\nCOPY --from=b /x /y\nFROM alpine AS b\n",
        &PlanOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(*e.kind, PlanErrorKind::FutureStage { .. }), "{e}");
    // FROM naming its own stage is an image, as in BuildKit.
    let p = ok("FROM foo AS foo\n");
    assert_eq!(
        p.stages[0].base,
        Base::Image {
            reference: "foo".into()
        }
    );
}

#[test]
fn created_by_matches_buildkit_history() {
    let p = ok("FROM alpine\nRUN echo hi\nCOPY dir /data\nENV A=b\nWORKDIR /x\nWORKDIR y\nCMD [\"a\"]\nCMD echo\nUSER me\nLABEL k=v\nEXPOSE 80 53/udp\nVOLUME /v\nARG Q=1\nRUN q\n");
    let got: Vec<(&str, bool)> = p.stages[0]
        .steps
        .iter()
        .map(|s| (s.created_by.as_str(), s.empty_layer))
        .collect();
    assert_eq!(
        got,
        vec![
            ("RUN /bin/sh -c echo hi # buildkit", false),
            ("COPY dir /data # buildkit", false),
            ("ENV A=b", true),
            ("WORKDIR /x", false),
            ("WORKDIR /x/y", false),
            ("CMD [\"a\"]", true),
            ("CMD [\"/bin/sh\" \"-c\" \"echo\"]", true),
            ("USER me", true),
            ("LABEL k=v", true),
            ("EXPOSE map[53/udp:{} 80/tcp:{}]", true),
            ("VOLUME [/v]", true),
            ("ARG Q=1", true),
            ("RUN |1 Q=1 /bin/sh -c q # buildkit", false),
        ]
    );
}

fn keys(p: &BuildPlan) -> Vec<String> {
    keys_with(p, &|_| None)
}

/// Every step key, stage by stage, with these input digests.
fn keys_with(p: &BuildPlan, resolve: &dyn Fn(&Input) -> Option<String>) -> Vec<String> {
    let k = CacheKeys::compute(p, resolve);
    p.stages
        .iter()
        .flat_map(|s| k.stage(s.id).unwrap().steps.clone())
        .collect()
}

#[test]
fn cache_keys_change_exactly_when_an_input_changes() {
    let base = "FROM alpine\nRUN a\nENV X=1\nRUN b\n";
    let k0 = keys(&ok(base));
    assert_eq!(k0.len(), 3);
    assert_eq!(k0, keys(&ok(base)), "deterministic");
    // A comment or blank line changes nothing.
    assert_eq!(
        k0,
        keys(&ok("# hi\nFROM alpine\n\nRUN a\nENV X=1\nRUN b\n"))
    );
    // Changing the middle step changes it and everything after, not before.
    let k1 = keys(&ok("FROM alpine\nRUN a\nENV X=2\nRUN b\n"));
    assert_eq!(k0[0], k1[0]);
    assert_ne!(k0[1], k1[1]);
    assert_ne!(k0[2], k1[2]);
    // Changing the base changes all.
    let k2 = keys(&ok("FROM alpine:3\nRUN a\nENV X=1\nRUN b\n"));
    assert!(k0.iter().zip(&k2).all(|(a, b)| a != b));
    // A build arg only matters once declared.
    let src = "FROM alpine\nRUN a\nARG V\nRUN b\n";
    let a = keys(&plan_src(src, &PlanOptions::default()).unwrap());
    let b = keys(&plan_src(src, &with_args(&[("V", "1")])).unwrap());
    assert_eq!(a[0], b[0]);
    assert_ne!(a[2], b[2]);
    // Undeclared proxy args are not part of the key.
    let c = keys(&plan_src(src, &with_args(&[("HTTP_PROXY", "http://p")])).unwrap());
    assert_eq!(a, c);
}

#[test]
fn content_digests_change_dependent_keys() {
    let p = ok("FROM alpine\nRUN a\nCOPY . /src\nRUN b\n");
    let before = keys(&p);
    let step = &p.stages[0].steps[1];
    assert!(matches!(step.inputs[0], Input::Context { .. }));
    let after = keys_with(&p, &|i| match i {
        Input::Context { .. } => Some("sha256:aaaa".into()),
        _ => None,
    });
    assert_eq!(before[0], after[0]);
    assert_ne!(before[1], after[1]);
    assert_ne!(before[2], after[2]);
}

#[test]
fn stage_keys_flow_into_copy_from() {
    let a = keys(&ok(
        "FROM alpine AS b\nRUN one\nFROM scratch\nCOPY --from=b /x /x\n",
    ));
    let b = keys(&ok(
        "FROM alpine AS b\nRUN two\nFROM scratch\nCOPY --from=b /x /x\n",
    ));
    assert_ne!(a.last(), b.last());
}

#[test]
fn unused_build_args_are_reported() {
    let p = plan_src(
        "FROM scratch\nARG A\n",
        &with_args(&[("A", "1"), ("B", "2")]),
    )
    .unwrap();
    assert_eq!(p.unused_build_args, vec!["B".to_string()]);
}

#[test]
fn arg_self_reference_is_not_an_error_but_warns() {
    let p = ok("FROM scratch\nARG A=$A\nARG B=$C\nARG C=$B\nRUN x\n");
    let env = run_env(&p, 0, 3);
    assert_eq!(get(&env, "A"), Some(""));
    assert!(p
        .warnings
        .iter()
        .any(|w| w.rule == "UndefinedVar" && w.message.contains("'$A'")));
}

#[test]
fn heredoc_run_and_copy_are_planned() {
    let src = "FROM scratch\nARG NAME=world\nCOPY <<EOF /hello\nhi $NAME\nEOF\nCOPY <<'EOF' /raw\nhi $NAME\nEOF\nRUN <<EOF\necho one\nEOF\nRUN python3 <<EOF\nprint(1)\nEOF\n";
    let p = ok(src);
    let steps = &p.stages[0].steps;
    match &steps[1].kind {
        StepKind::Copy(c) => assert_eq!(c.inline[0].data, "hi world\n"),
        k => panic!("{k:?}"),
    }
    match &steps[2].kind {
        StepKind::Copy(c) => assert_eq!(c.inline[0].data, "hi $NAME\n"),
        k => panic!("{k:?}"),
    }
    assert_eq!(steps[1].created_by, "COPY <<EOF /hello # buildkit");
    match &steps[3].kind {
        StepKind::Run(r) => assert_eq!(r.argv, vec!["/bin/sh", "-c", "echo one\n"]),
        k => panic!("{k:?}"),
    }
    match &steps[4].kind {
        StepKind::Run(r) => {
            assert_eq!(
                r.argv,
                vec!["/bin/sh", "-c", "python3 <<EOF\nprint(1)\nEOF"]
            )
        }
        k => panic!("{k:?}"),
    }
}

#[test]
fn cli_plan_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let df = dir.path().join("Dockerfile");
    std::fs::write(
        &df,
        "ARG BASE=alpine\nFROM $BASE AS build\nARG API_TOKEN\nRUN echo $X\nFROM scratch\nCOPY --from=build /out /out\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "plan",
            dir.path().to_str().unwrap(),
            "-f",
            df.to_str().unwrap(),
        ])
        .args([
            "--build-arg",
            "BASE=debian",
            "--platform",
            "linux/arm64",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["order"], serde_json::json!([0, 1]));
    assert_eq!(v["stages"][0]["base"]["reference"], "debian");
    assert_eq!(v["stages"][1]["platform"]["arch"], "arm64");
    // The keys sit in place: each stage's base key and each step's key.
    let p = plan_src(&std::fs::read_to_string(&df).unwrap(), &{
        let mut o = with_args(&[("BASE", "debian")]);
        o.target_platform = Platform::parse("linux/arm64").unwrap();
        o.build_platform = Platform::host();
        o
    })
    .unwrap();
    let k = CacheKeys::compute(&p, &|_| None);
    assert_eq!(
        v["stages"][0]["base_key"],
        k.stage(0).unwrap().base.as_str()
    );
    assert_eq!(
        v["stages"][1]["steps"][0]["cache_key"],
        k.step(1, 0).unwrap()
    );
    assert_eq!(
        v["stages"][0]["steps"][1]["created_by"],
        "RUN |1 API_TOKEN= /bin/sh -c echo $X # buildkit"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(":3:5: warning: do not use ARG or ENV instructions for sensitive data"),
        "{err}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["plan", "-f", df.to_str().unwrap(), "--target", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn stopsignal_is_validated_after_expansion() {
    assert!(plan_src(
        "FROM scratch\nARG S=SIGTERM\nSTOPSIGNAL $S\n",
        &PlanOptions::default()
    )
    .is_ok());
    assert!(plan_src("FROM scratch\nSTOPSIGNAL 9\n", &PlanOptions::default()).is_ok());
    assert!(plan_src(
        "FROM scratch\nSTOPSIGNAL rtmin+3\n",
        &PlanOptions::default()
    )
    .is_ok());
    let e = plan_src(
        "FROM scratch\nSTOPSIGNAL SIGNOPE\n",
        &PlanOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "2:1: invalid signal: SIGNOPE");
}

#[test]
fn windows_targets_use_cmd_and_case_insensitive_names() {
    let o = PlanOptions {
        target_platform: Platform::parse("windows/amd64").unwrap(),
        ..PlanOptions::default()
    };
    let p = plan_src("FROM scratch\nENV Foo=1\nENV BAR=$FOO\nRUN dir\n", &o).unwrap();
    match &p.stages[0].steps[2].kind {
        StepKind::Run(r) => {
            assert_eq!(r.argv, vec!["cmd", "/S", "/C", "dir"]);
            assert_eq!(get(&r.env, "BAR"), Some("1"));
        }
        k => panic!("{k:?}"),
    }
}

#[test]
fn base_configs_feed_env_and_onbuild_triggers() {
    let o = PlanOptions::default();
    let mut bases = Configs(BTreeMap::new());
    bases.0.insert(
        "node:0.10".into(),
        BaseConfig {
            env: vec![("PATH".into(), "/usr/bin".into())],
            working_dir: Some("/usr/src/app".into()),
            onbuild: vec![
                "COPY package.json /usr/src/app/".into(),
                "RUN npm install".into(),
            ],
            ..Default::default()
        },
    );
    let p = plan_with(
        "FROM node:0.10\nENV PATH=$PATH:/x\nRUN echo $UNSET_THING\n",
        &o,
        &mut bases,
    )
    .unwrap();
    let by: Vec<&str> = p.stages[0]
        .steps
        .iter()
        .map(|s| s.created_by.as_str())
        .collect();
    assert_eq!(
        by,
        vec![
            "COPY package.json /usr/src/app/ # buildkit",
            "RUN /bin/sh -c npm install # buildkit",
            "ENV PATH=/usr/bin:/x",
            "RUN /bin/sh -c echo $UNSET_THING # buildkit",
        ]
    );
    match &p.stages[0].steps[1].kind {
        StepKind::Run(r) => assert_eq!(r.workdir, "/usr/src/app"),
        k => panic!("{k:?}"),
    }
    // RUN text is not expanded by the planner, so no UndefinedVar for it.
    assert!(!p.warnings.iter().any(|w| w.message.contains("UNSET_THING")));
    bases.0.get_mut("node:0.10").unwrap().onbuild = vec!["FROM x".into()];
    assert!(plan_with("FROM node:0.10\n", &o, &mut bases).is_err());
}

/// Every real-world and variant Dockerfile plans, for its default target and for every named
/// stage as `--target`, and plans are deterministic.
#[test]
fn every_fixture_dockerfile_plans_for_every_target() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dockerfile");
    let mut n = 0;
    for sub in ["real-world", "variants"] {
        for e in std::fs::read_dir(root.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "md") {
                continue;
            }
            let src = std::fs::read_to_string(&p).unwrap();
            let ast = parse(&src).unwrap();
            let df = instructions(&ast).unwrap();
            let mut targets: Vec<Option<String>> = vec![None];
            targets.extend(
                df.stages
                    .iter()
                    .filter_map(|s| s.name().map(|n| Some(n.to_string()))),
            );
            for t in targets {
                let o = PlanOptions {
                    target: t.clone(),
                    ..PlanOptions::default()
                };
                let a = plan(&df, &o, &mut NoBases)
                    .unwrap_or_else(|e| panic!("{}: {}", p.display(), e.render(&src)));
                let b = plan(&df, &o, &mut NoBases).unwrap();
                assert_eq!(a, b, "{} {t:?}", p.display());
                assert!(a.order.contains(&a.target));
                n += 1;
            }
        }
    }
    assert!(n > 100, "planned {n} targets");
}

#[test]
fn mount_spelling_does_not_change_the_key_but_values_do() {
    let k = |m: &str| keys(&ok(&format!("FROM alpine\nRUN --mount={m} make\n")));
    assert_eq!(k("type=cache,target=/c"), k("target=/c,type=cache"));
    assert_ne!(k("type=cache,target=/c"), k("type=cache,target=/d"));
}

#[test]
fn undeclared_from_argument_warns() {
    let p = ok("FROM alpine:${TAG:-3}\n");
    assert!(p
        .warnings
        .iter()
        .any(|w| w.rule == "UndefinedArgInFrom" && w.message.contains("'TAG'")));
    let p = ok("ARG TAG=3\nFROM alpine:${TAG}\n");
    assert!(!p.warnings.iter().any(|w| w.rule == "UndefinedArgInFrom"));
}

#[test]
fn args_on_one_line_resolve_in_order() {
    let p = ok("FROM scratch\nARG a=1 b=${a}2\nRUN x\n");
    assert_eq!(get(&run_env(&p, 0, 1), "b"), Some("12"));
    // A build arg wins without expanding the default (an invalid default is then harmless).
    let p = plan_src(
        "FROM scratch\nARG a=${x:=bad}\nRUN x\n",
        &with_args(&[("a", "ok")]),
    )
    .unwrap();
    assert_eq!(get(&run_env(&p, 0, 1), "a"), Some("ok"));
}

/// The build's `--network` (`PlanOptions::network`) applies to RUN steps without a flag and
/// with `--network=default`, not to `none`/`host` flags; it enters their keys like the RUN
/// flag does (BuildKit's ExecOp `network` field), and without it keys are unchanged.
#[test]
fn the_builds_network_keys_run_steps_like_their_own_flag() {
    let src = "FROM scratch\nRUN a\nRUN --network=default b\nRUN --network=host c\nRUN --network=none d\n";
    let net = |p: &BuildPlan| -> Vec<Option<String>> {
        p.stages[0]
            .steps
            .iter()
            .map(|s| match &s.kind {
                StepKind::Run(r) => r.network.clone(),
                k => panic!("not a RUN: {k:?}"),
            })
            .collect()
    };
    let default = ok(src);
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        net(&default),
        vec![None, s("default"), s("host"), s("none")]
    );
    let none = plan_src(
        src,
        &PlanOptions {
            network: s("none"),
            ..PlanOptions::default()
        },
    )
    .unwrap();
    assert_eq!(net(&none), vec![s("none"), s("none"), s("host"), s("none")]);
    let (dk, nk) = (keys(&default), keys(&none));
    assert_ne!(dk[0], nk[0]);
    assert_ne!(dk[1], nk[1]);
    // A RUN whose `none` is its own flag or the build's is the same step.
    let flagged = ok("FROM scratch\nRUN --network=none a\n");
    assert_eq!(keys(&flagged)[0], nk[0]);
}

/// `kiln plan` and `kiln build` plan through one path with one host platform: the same
/// `BUILDPLATFORM`/`TARGETPLATFORM` and the same cache keys for a build with no content inputs
/// (regression: `kiln plan` had its own host platform).
#[test]
fn kiln_plan_and_kiln_build_compute_the_same_buildplatform_and_keys() {
    let k = crate::support::Kiln::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let df = ctx.join("Dockerfile");
    std::fs::write(
        &df,
        "FROM scratch AS base\nARG BUILDPLATFORM TARGETPLATFORM\nLABEL bp=$BUILDPLATFORM tp=$TARGETPLATFORM\nENV X=1\nWORKDIR /w\nFROM base\nENTRYPOINT [\"/w/run\"]\n",
    )
    .unwrap();
    let plan = k.ok(&[
        "plan",
        ctx.to_str().unwrap(),
        "-f",
        df.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&plan).unwrap();
    let host = Platform::host().to_string();
    assert_eq!(
        v["stages"][0]["steps"][1]["created_by"],
        format!("LABEL bp={host} tp={host}").as_str()
    );
    let plan_keys: Vec<String> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["steps"].as_array().unwrap().iter())
        .map(|s| s["cache_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(plan_keys.len(), 5);
    let meta = k.path("meta.json");
    k.ok(&[
        "build",
        ctx.to_str().unwrap(),
        "-t",
        "it/plan-vs-build:1",
        "--metadata-file",
        meta.to_str().unwrap(),
    ]);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let build_keys: Vec<String> = m["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["cache_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(plan_keys, build_keys);
}
