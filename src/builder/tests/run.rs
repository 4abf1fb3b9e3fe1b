//! RUN through the fake sandbox: the spec it is given (command, environment, working
//! directory, user, network, hostname, mounts), the layer its changes become, and how a failing
//! command is reported.
use crate::sandbox::{Bound, ExitStatus, MountKind, Network, ScriptedChange, DEFAULT_PATH};

use super::super::{Error, Secret, StepError};
use super::{env_of, node, paths, Fixture};

fn write(path: &str, content: &[u8], mode: u32) -> ScriptedChange {
    ScriptedChange::Write {
        path: path.into(),
        content: content.to_vec(),
        mode,
    }
}

#[test]
fn shell_form_is_wrapped_in_the_default_shell_and_exec_form_is_not() {
    let f = Fixture::new();
    f.build("FROM base\nRUN echo hi there\nRUN [\"/bin/sh\", \"x y\"]\n")
        .unwrap();
    let s = f.specs();
    assert_eq!(s[0].argv, ["/bin/sh", "-c", "echo hi there"]);
    assert_eq!(s[1].argv, ["/bin/sh", "x y"]);
}

#[test]
fn shell_form_uses_the_stage_shell() {
    let f = Fixture::new();
    f.build("FROM base\nSHELL [\"/bin/sh\", \"-eux\", \"-c\"]\nRUN make all\n")
        .unwrap();
    assert_eq!(f.specs()[0].argv, ["/bin/sh", "-eux", "-c", "make all"]);
}

#[test]
fn the_environment_has_env_args_the_default_path_and_the_epoch() {
    let f = Fixture::new();
    let mut o = f.opts();
    o.epoch = 1_700_000_000;
    o.build_args.insert("B".into(), "from-cli".into());
    f.dockerfile("FROM base\nENV A=1\nARG B=default\nARG C=dflt\nRUN true\n");
    f.build_opts(&o).unwrap();
    let s = &f.specs()[0];
    assert_eq!(env_of(s, "A"), Some("1"));
    assert_eq!(env_of(s, "B"), Some("from-cli"));
    assert_eq!(env_of(s, "C"), Some("dflt"));
    assert_eq!(env_of(s, "PATH"), Some(DEFAULT_PATH));
    assert_eq!(env_of(s, "SOURCE_DATE_EPOCH"), Some("1700000000"));
}

#[test]
fn an_env_path_replaces_the_default_path() {
    let f = Fixture::new();
    f.build("FROM base\nENV PATH=/opt/bin:/bin\nRUN true\n")
        .unwrap();
    let s = &f.specs()[0];
    assert_eq!(env_of(s, "PATH"), Some("/opt/bin:/bin"));
    assert_eq!(s.env.iter().filter(|(k, _)| k == "PATH").count(), 1);
}

#[test]
fn a_step_own_source_date_epoch_wins_over_the_build_epoch() {
    let f = Fixture::new();
    f.build("FROM base\nENV SOURCE_DATE_EPOCH=42\nRUN true\n")
        .unwrap();
    let s = &f.specs()[0];
    let all: Vec<_> = s
        .env
        .iter()
        .filter(|(k, _)| k == "SOURCE_DATE_EPOCH")
        .collect();
    assert_eq!(all, [&("SOURCE_DATE_EPOCH".to_string(), "42".to_string())]);
}

#[test]
fn the_working_directory_is_the_workdir() {
    let f = Fixture::new();
    f.build("FROM base\nRUN true\nWORKDIR /srv/app\nRUN true\nWORKDIR rel\nRUN true\n")
        .unwrap();
    let cwd: Vec<String> = f.specs().into_iter().map(|s| s.cwd).collect();
    assert_eq!(cwd, ["/", "/srv/app", "/srv/app/rel"]);
}

#[test]
fn user_names_resolve_through_the_stage_passwd() {
    let f = Fixture::new();
    f.build("FROM base\nRUN true\nUSER app\nRUN true\nUSER svc\nRUN true\nUSER 7:8\nRUN true\n")
        .unwrap();
    let ids: Vec<(u32, u32)> = f.specs().iter().map(|s| (s.user.uid, s.user.gid)).collect();
    assert_eq!(ids, [(0, 0), (1000, 1000), (2000, 50), (7, 8)]);
}

#[test]
fn the_network_follows_the_flag_the_option_and_the_entitlement() {
    let f = Fixture::new();
    let mut o = f.opts();
    o.allow_network_host = true;
    f.dockerfile(
        "FROM base\nRUN true\nRUN --network=none true\nRUN --network=host true\nRUN --network=default true\n",
    );
    f.build_opts(&o).unwrap();
    let nets: Vec<Network> = f.specs().iter().map(|s| s.network).collect();
    assert_eq!(
        nets,
        [
            Network::Default,
            Network::None,
            Network::Host,
            Network::Default
        ]
    );
}

#[test]
fn the_network_option_is_the_default_of_steps_without_a_flag() {
    let f = Fixture::new();
    let mut o = f.opts();
    o.network = Network::None;
    f.dockerfile("FROM base\nRUN true\n");
    f.build_opts(&o).unwrap();
    assert_eq!(f.specs()[0].network, Network::None);
}

#[test]
fn the_hostname_is_buildkits() {
    let f = Fixture::new();
    f.build("FROM base\nRUN true\n").unwrap();
    assert_eq!(f.specs()[0].hostname, "buildkitsandbox");
}

#[test]
fn a_bind_mount_from_the_context_binds_the_context_file_read_only() {
    let f = Fixture::new();
    f.file("src/conf", b"CONF");
    f.build("FROM base\nWORKDIR /w\nRUN --mount=type=bind,source=src/conf,target=c true\n")
        .unwrap();
    let m = &f.specs()[0].mounts;
    assert_eq!(m.len(), 1);
    assert_eq!(
        m[0].target, "/w/c",
        "a relative target is below the WORKDIR"
    );
    match &m[0].kind {
        MountKind::Bind {
            root,
            source,
            readonly,
        } => {
            assert_eq!(root, &f.ctx());
            assert_eq!((source.as_str(), *readonly), ("src/conf", true));
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(
        f.fake.binds(),
        [("/w/c".into(), Bound::File(b"CONF".to_vec()))]
    );
}

#[test]
fn cache_and_tmpfs_mounts_have_their_options() {
    let f = Fixture::new();
    f.build(
        "FROM base\nRUN --mount=type=cache,target=/root/.cache,uid=5,mode=0700 \
         --mount=type=tmpfs,target=/scratch,size=1048576 true\n",
    )
    .unwrap();
    let m = &f.specs()[0].mounts;
    assert_eq!(m[0].target, "/root/.cache");
    match &m[0].kind {
        MountKind::Cache {
            source,
            uid,
            gid,
            mode,
        } => {
            assert!(
                source.starts_with(f.store.root().join("cache-v1/mounts")),
                "{source:?}"
            );
            assert_eq!((*uid, *gid, *mode), (5, 0, 0o700));
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(m[1].target, "/scratch");
    assert_eq!(
        m[1].kind,
        MountKind::Tmpfs {
            size: Some(1_048_576)
        }
    );
}

#[test]
fn a_secret_reaches_the_step_as_a_file_or_an_env_variable() {
    let f = Fixture::new();
    let mut o = f.opts();
    o.secrets.insert("tok".into(), Secret(b"s3cr3t".to_vec()));
    f.dockerfile(
        "FROM base\nRUN --mount=type=secret,id=tok true\n\
         RUN --mount=type=secret,id=tok,env=TOKEN true\n",
    );
    let out = f.build_opts(&o).unwrap();
    let s = f.specs();
    assert_eq!(s[0].mounts.len(), 1);
    assert_eq!(s[0].mounts[0].target, "/run/secrets/tok");
    match &s[0].mounts[0].kind {
        MountKind::Secret { data, mode, .. } => {
            assert_eq!((data.0.as_slice(), *mode), (&b"s3cr3t"[..], 0o400));
        }
        k => panic!("{k:?}"),
    }
    assert!(s[1].mounts.is_empty(), "env= without target mounts nothing");
    assert_eq!(env_of(&s[1], "TOKEN"), Some("s3cr3t"));
    // Never in the history or the config.
    let cfg = String::from_utf8_lossy(&out.image.raw_config).into_owned();
    assert!(!cfg.contains("s3cr3t"), "{cfg}");
}

#[test]
fn scripted_changes_become_the_step_layer_with_their_parents() {
    let f = Fixture::new();
    f.fake.script(
        ExitStatus::Code(0),
        b"",
        vec![
            write("tmp/out", b"OUT", 0o640),
            ScriptedChange::Symlink {
                path: "tmp/link".into(),
                target: "out".into(),
            },
            ScriptedChange::Dir {
                path: "srv/data".into(),
                mode: 0o750,
            },
            ScriptedChange::Delete {
                path: "etc/group".into(),
            },
        ],
    );
    let out = f.build("FROM base\nUSER app\nRUN make\n").unwrap();
    let top = f.top(&out.image);
    assert_eq!(
        paths(&top),
        [
            "etc",
            "etc/.wh.group",
            "srv",
            "srv/data",
            "tmp",
            "tmp/link",
            "tmp/out"
        ]
    );
    let o = node(&top, "tmp/out");
    assert_eq!(
        (o.content.as_slice(), o.mode, o.uid, o.gid),
        (&b"OUT"[..], 0o640, 1000, 1000)
    );
    assert_eq!(node(&top, "tmp/link").content, b"out");
    assert_eq!(node(&top, "tmp/link").kind, 'l');
    assert_eq!(node(&top, "srv/data").mode, 0o750);
    assert_eq!(
        node(&top, "srv").mode,
        0o700,
        "parent with its metadata from below"
    );
    assert_eq!(node(&top, "tmp").mode, 0o1777);
}

#[test]
fn a_failing_command_gives_its_status_and_last_output_lines() {
    let f = Fixture::new();
    let output: String = (1..=25).map(|i| format!("line {i}\n")).collect();
    f.fake
        .script(ExitStatus::Code(3), output.as_bytes(), vec![]);
    let err = f.build("FROM base\nRUN false\n").unwrap_err();
    let Error::Step { line, source, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*line, 2);
    let StepError::Run { status, tail, argv } = source.as_ref() else {
        panic!("{source:?}")
    };
    assert_eq!(*status, ExitStatus::Code(3));
    assert_eq!(argv, &["/bin/sh", "-c", "false"]);
    assert_eq!(tail.len(), 20);
    assert_eq!((tail[0].as_str(), tail[19].as_str()), ("line 6", "line 25"));
    assert!(err.chain_text().contains("line 25"), "{}", err.chain_text());
    assert!(
        f.store.resolve("out").is_err(),
        "a failed build tags nothing"
    );
}

#[test]
fn a_numeric_user_without_a_passwd_entry_runs_with_group_0() {
    let f = Fixture::new();
    f.build("FROM base\nUSER 4242\nRUN true\n").unwrap();
    let u = &f.specs()[0].user;
    assert_eq!((u.uid, u.gid), (4242, 0));
}

#[test]
fn a_named_user_runs_with_its_supplementary_groups() {
    let f = Fixture::new();
    let mut entries = super::base_entries();
    for e in &mut entries {
        if e.path == b"etc/group" {
            *e = crate::layer::Entry::file(
                "etc/group",
                0o644,
                b"root:x:0:\napp:x:1000:\nwheel:x:10:root,app\naudio:x:29:app\n".to_vec(),
            );
        }
    }
    f.image("groups", &entries, |_| {});
    f.build("FROM groups\nUSER app\nRUN true\n").unwrap();
    let u = &f.specs()[0].user;
    assert_eq!((u.uid, u.gid), (1000, 1000));
    assert_eq!(u.additional_gids, [10, 29]);
}

#[test]
fn stage_files_unpacked_for_a_run_get_their_owners_through_the_sandbox_when_rootless() {
    let f = Fixture::new();
    f.build("FROM base\nRUN true\n").unwrap();
    let chowns = f.fake.chowns();
    let app = (b"home/app".to_vec(), 1000, 1000);
    if rustix::process::geteuid().is_root() {
        // Root unpacks with the owners itself; the sandbox is asked for nothing.
        assert!(!chowns.contains(&app), "{chowns:?}");
    } else {
        // Unpacked as the caller, the owners are set inside the namespace: not 0:0 ones only.
        assert!(chowns.contains(&app), "{chowns:?}");
        assert!(chowns.iter().all(|c| (c.1, c.2) != (0, 0)), "{chowns:?}");
    }
}
