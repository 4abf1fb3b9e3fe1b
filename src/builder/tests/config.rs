//! Config steps and WORKDIR: what ends in the image config and history, the options that
//! edit the final image, and the directories WORKDIR creates.
use super::{base_entries, node, paths, Fixture};

#[test]
fn env_label_cmd_entrypoint_user_and_maintainer_reach_the_config() {
    let f = Fixture::new();
    let out = f
        .build(
            "FROM base\nMAINTAINER someone\nENV A=1 B=two\nENV A=3\nLABEL l=v\n\
             ENTRYPOINT [\"/bin/app\"]\nCMD [\"--help\"]\nUSER app\n",
        )
        .unwrap();
    let c = &out.image.config.config;
    assert_eq!(c.env.as_deref().unwrap(), ["A=3", "B=two"]);
    assert_eq!(c.labels["l"], "v");
    assert_eq!(c.entrypoint.as_deref().unwrap(), ["/bin/app"]);
    assert_eq!(c.cmd.as_deref().unwrap(), ["--help"]);
    assert_eq!(c.user.as_deref(), Some("app"));
    assert_eq!(out.image.config.author.as_deref(), Some("someone"));
}

#[test]
fn shell_form_cmd_and_entrypoint_are_wrapped_in_the_shell() {
    let f = Fixture::new();
    let out = f
        .build("FROM base\nSHELL [\"/bin/sh\", \"-ec\"]\nENTRYPOINT run it\n")
        .unwrap();
    let c = &out.image.config.config;
    assert_eq!(
        c.entrypoint.as_deref().unwrap(),
        ["/bin/sh", "-ec", "run it"]
    );
    assert_eq!(c.shell.as_deref().unwrap(), ["/bin/sh", "-ec"]);
}

/// A base image `withcmd` whose config has `Cmd ["serve"]`.
fn with_cmd(f: &Fixture) {
    f.image("withcmd", &base_entries(), |c| {
        c.config.cmd = Some(vec!["serve".into()]);
    });
}

#[test]
fn entrypoint_resets_a_cmd_inherited_from_the_base() {
    let f = Fixture::new();
    with_cmd(&f);
    let out = f.build("FROM withcmd\nENTRYPOINT [\"/e\"]\n").unwrap();
    assert_eq!(out.image.config.config.cmd, None);
    let out = f.build("FROM withcmd\nENV X=1\n").unwrap();
    assert_eq!(
        out.image.config.config.cmd.as_deref().unwrap(),
        ["serve"],
        "inherited when no ENTRYPOINT"
    );
}

#[test]
fn entrypoint_keeps_a_cmd_set_in_the_stage() {
    let f = Fixture::new();
    with_cmd(&f);
    let out = f
        .build("FROM withcmd\nCMD [\"mine\"]\nENTRYPOINT [\"/e\"]\n")
        .unwrap();
    assert_eq!(out.image.config.config.cmd.as_deref().unwrap(), ["mine"]);
}

#[test]
fn entrypoint_resets_a_cmd_inherited_from_a_parent_stage() {
    let f = Fixture::new();
    let out = f
        .build("FROM base AS a\nCMD [\"a\"]\nFROM a\nENTRYPOINT [\"/e\"]\n")
        .unwrap();
    assert_eq!(out.image.config.config.cmd, None);
}

#[test]
fn expose_volume_stopsignal_and_healthcheck_reach_the_config() {
    let f = Fixture::new();
    let out = f
        .build(
            "FROM base\nEXPOSE 80 53/udp\nVOLUME /data [\"/logs\"]\nSTOPSIGNAL SIGINT\n\
             HEALTHCHECK --interval=5s --retries=2 CMD check --fast\n",
        )
        .unwrap();
    let c = &out.image.config.config;
    let ports: Vec<&str> = c.exposed_ports.keys().map(String::as_str).collect();
    assert_eq!(ports, ["53/udp", "80/tcp"]);
    let vols: Vec<&str> = c.volumes.keys().map(String::as_str).collect();
    assert!(vols.contains(&"/data"), "{vols:?}");
    assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
    let h = c.healthcheck.as_ref().unwrap();
    assert_eq!(h.test, ["CMD-SHELL", "check --fast"]);
    assert_eq!(h.interval, Some(5_000_000_000));
    assert_eq!(h.retries, Some(2));
    assert_eq!(h.timeout, None);
}

#[test]
fn healthcheck_none_disables_the_check() {
    let f = Fixture::new();
    let out = f.build("FROM base\nHEALTHCHECK NONE\n").unwrap();
    let h = out.image.config.config.healthcheck.as_ref().unwrap();
    assert_eq!(h.test, ["NONE"]);
}

#[test]
fn label_options_override_defaults_fill_gaps_and_annotations_follow_them() {
    let f = Fixture::new();
    let mut o = f.opts();
    o.labels.insert("forced".into(), "cli".into());
    o.default_labels.insert("own".into(), "default".into());
    o.default_labels.insert("gap".into(), "default".into());
    o.annotations.insert("own".into(), "annotation".into());
    o.annotations.insert("other".into(), "x".into());
    f.dockerfile("FROM base\nLABEL forced=dockerfile own=dockerfile\n");
    let out = f.build_opts(&o).unwrap();
    let l = &out.image.config.config.labels;
    assert_eq!(l["forced"], "cli");
    assert_eq!(l["own"], "dockerfile", "a stage's LABEL beats a default");
    assert_eq!(l["gap"], "default");
    let a = &out.image.manifest.annotations;
    assert_eq!(
        a["own"], "dockerfile",
        "an annotation of a default label's key"
    );
    assert_eq!(a["other"], "x");
}

#[test]
fn created_and_history_times_are_the_epoch() {
    let f = Fixture::new();
    f.file("a", b"A");
    let mut o = f.opts();
    o.epoch = 86_400;
    f.dockerfile("FROM base\nENV A=1\nCOPY a /a\n");
    let out = f.build_opts(&o).unwrap();
    let cfg = &out.image.config;
    assert_eq!(cfg.created.as_deref(), Some("1970-01-02T00:00:00Z"));
    let h = &cfg.history;
    assert_eq!(h.len(), 3);
    assert_eq!(
        h[0].created.as_deref(),
        Some("1970-01-12T13:46:40Z"),
        "the base's own"
    );
    assert!(h[1..]
        .iter()
        .all(|h| h.created.as_deref() == Some("1970-01-02T00:00:00Z")));
}

#[test]
fn history_marks_config_steps_as_empty_layers() {
    let f = Fixture::new();
    f.file("a", b"A");
    let out = f
        .build("FROM base\nENV A=1\nCOPY a /a\nRUN true\nLABEL x=y\n")
        .unwrap();
    let h = &out.image.config.history;
    let steps: Vec<(bool, &str)> = h[1..]
        .iter()
        .map(|h| (h.empty_layer, h.created_by.as_deref().unwrap()))
        .collect();
    assert_eq!(steps.len(), 4);
    assert_eq!(
        steps.iter().map(|s| s.0).collect::<Vec<_>>(),
        [true, false, false, true]
    );
    assert!(steps[0].1.contains("ENV A=1"), "{steps:?}");
    assert!(steps[1].1.starts_with("COPY"), "{steps:?}");
    assert_eq!(out.image.layers().len(), 3);
    assert!(h[1..]
        .iter()
        .all(|h| h.comment.as_deref() == Some("buildkit.dockerfile.v0")));
}

#[test]
fn workdir_creates_missing_directories_owned_by_the_user() {
    let f = Fixture::new();
    let out = f.build("FROM base\nUSER app\nWORKDIR /srv/a/b\n").unwrap();
    let top = f.top(&out.image);
    assert_eq!(paths(&top), ["srv", "srv/a", "srv/a/b"]);
    let srv = node(&top, "srv");
    assert_eq!(
        (srv.mode, srv.uid),
        (0o700, 0),
        "the existing parent, as it was"
    );
    for p in ["srv/a", "srv/a/b"] {
        let n = node(&top, p);
        assert_eq!(
            (n.kind, n.mode, n.uid, n.gid),
            ('d', 0o755, 1000, 1000),
            "{p}"
        );
    }
    assert_eq!(
        out.image.config.config.working_dir.as_deref(),
        Some("/srv/a/b")
    );
}

#[test]
fn workdir_of_an_existing_directory_makes_no_layer() {
    let f = Fixture::new();
    let out = f.build("FROM base\nWORKDIR /tmp\n").unwrap();
    assert_eq!(out.image.layers().len(), 1);
    let last = out.image.config.history.last().unwrap();
    assert!(last.empty_layer, "{last:?}");
    assert_eq!(out.image.config.config.working_dir.as_deref(), Some("/tmp"));
}

#[test]
fn onbuild_triggers_of_the_base_run_after_from_and_are_not_inherited() {
    let f = Fixture::new();
    f.file("a", b"A");
    f.image("withtriggers", &base_entries(), |c| {
        c.config.on_build = Some(vec!["ENV T=1".into(), "RUN from-trigger".into()]);
    });
    let out = f
        .build("FROM withtriggers\nRUN mine\nONBUILD RUN for-children\n")
        .unwrap();
    let argv: Vec<String> = f.specs().iter().map(|s| s.argv[2].clone()).collect();
    assert_eq!(argv, ["from-trigger", "mine"]);
    assert_eq!(
        crate::builder::tests::env_of(&f.specs()[0], "T"),
        Some("1"),
        "the trigger's ENV applies to later steps"
    );
    let c = &out.image.config.config;
    assert_eq!(
        c.on_build.as_deref().unwrap(),
        ["RUN for-children"],
        "only the stage's own ONBUILD"
    );
    let out = f
        .build("FROM withtriggers AS s\nFROM s\nENV X=1\n")
        .unwrap();
    assert_eq!(out.image.config.config.on_build, None);
}

#[test]
fn workdir_before_user_is_owned_by_root() {
    let f = Fixture::new();
    let out = f.build("FROM base\nWORKDIR /opt/w\nUSER app\n").unwrap();
    let top = f.top(&out.image);
    assert_eq!((node(&top, "opt/w").uid, node(&top, "opt/w").gid), (0, 0));
    assert_eq!(out.image.config.config.user.as_deref(), Some("app"));
}
