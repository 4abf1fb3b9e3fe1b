//! buildx's `--ssh` (`RUN --mount=type=ssh`), `--add-host` and `--no-cache-filter` through
//! the fake sandbox: the mounts and environment a step gets, what a skipped agent leaves, the
//! hosts lines, and which stages a cache answers.
use std::path::PathBuf;

use crate::sandbox::{ExitStatus, MountKind, ScriptedChange, SshSource};

use super::super::BuildOutcome;
use super::{env_of, err_text, Fixture};

fn socket(f: &Fixture) -> (PathBuf, std::os::unix::net::UnixListener) {
    let p = f.dir.path().join("agent.sock");
    let l = std::os::unix::net::UnixListener::bind(&p).unwrap();
    (p, l)
}

#[test]
fn ssh_mounts_get_buildkits_targets_the_agent_and_ssh_auth_sock() {
    let f = Fixture::new();
    let (sock, _l) = socket(&f);
    let mut o = f.opts();
    o.ssh
        .insert("default".into(), SshSource::Socket(sock.clone()));
    o.ssh.insert("gh".into(), SshSource::Socket(sock.clone()));
    f.dockerfile(
        "FROM base\nRUN --mount=type=ssh true\n\
         RUN --mount=type=ssh,id=gh,target=/tmp/gh.sock,mode=0660,uid=1000,gid=1001 \
             --mount=type=ssh true\n\
         RUN --mount=type=ssh,id=absent --mount=type=ssh,id=gh true\n",
    );
    f.build_opts(&o).unwrap();
    let s = f.specs();
    assert_eq!(s[0].mounts.len(), 1);
    assert_eq!(s[0].mounts[0].target, "/run/buildkit/ssh_agent.0");
    assert_eq!(
        s[0].mounts[0].kind,
        MountKind::Ssh {
            agent: sock.clone(),
            uid: 0,
            gid: 0,
            mode: 0o600
        }
    );
    assert_eq!(
        env_of(&s[0], "SSH_AUTH_SOCK"),
        Some("/run/buildkit/ssh_agent.0")
    );
    // The second ssh mount of a step is `.1`; SSH_AUTH_SOCK names the first.
    let targets: Vec<&str> = s[1].mounts.iter().map(|m| m.target.as_str()).collect();
    assert_eq!(targets, ["/tmp/gh.sock", "/run/buildkit/ssh_agent.1"]);
    assert!(matches!(
        s[1].mounts[0].kind,
        MountKind::Ssh {
            uid: 1000,
            gid: 1001,
            mode: 0o660,
            ..
        }
    ));
    assert_eq!(env_of(&s[1], "SSH_AUTH_SOCK"), Some("/tmp/gh.sock"));
    // An agent not given is skipped (not `required`), as BuildKit's `SSHOptional`; it still
    // counts for the default targets and SSH_AUTH_SOCK.
    let targets: Vec<&str> = s[2].mounts.iter().map(|m| m.target.as_str()).collect();
    assert_eq!(targets, ["/run/buildkit/ssh_agent.1"]);
    assert_eq!(
        env_of(&s[2], "SSH_AUTH_SOCK"),
        Some("/run/buildkit/ssh_agent.0")
    );
}

#[test]
fn an_env_ssh_auth_sock_wins_and_the_socket_is_in_no_key_or_history() {
    let f = Fixture::new();
    let (sock, _l) = socket(&f);
    let df = "FROM base\nENV SSH_AUTH_SOCK=/mine\nRUN --mount=type=ssh true\n";
    f.dockerfile(df);
    let without = f.build_opts(&f.opts()).unwrap();
    let mut o = f.opts();
    o.ssh
        .insert("default".into(), SshSource::Socket(sock.clone()));
    o.no_cache = true;
    let with = f.build_opts(&o).unwrap();
    assert_eq!(env_of(&f.specs()[1], "SSH_AUTH_SOCK"), Some("/mine"));
    // BuildKit keys the mount (its id), never the agent behind it.
    let keys =
        |o: &BuildOutcome| -> Vec<String> { o.steps.iter().map(|s| s.cache_key.clone()).collect() };
    assert_eq!(keys(&without), keys(&with));
    assert_eq!(with.image.digest(), without.image.digest());
    let cfg = String::from_utf8_lossy(&with.image.raw_config).into_owned();
    assert!(!cfg.contains(sock.to_str().unwrap()), "{cfg}");
}

#[test]
fn add_host_lines_reach_every_run_step() {
    let f = Fixture::new();
    let mut o = f.opts();
    o.add_hosts = vec![
        ("db".into(), "10.0.0.5".parse().unwrap()),
        ("v6".into(), "::1".parse().unwrap()),
    ];
    f.dockerfile("FROM base\nRUN one\nRUN two\n");
    f.build_opts(&o).unwrap();
    for s in f.specs() {
        assert_eq!(s.extra_hosts, o.add_hosts);
    }
}

const STAGES: &str =
    "FROM base AS deps\nRUN deps\nFROM deps AS App\nRUN app\nFROM base\nRUN final\n";

fn ran(f: &Fixture) -> Vec<String> {
    f.specs().iter().map(|s| s.argv[2].clone()).collect()
}

#[test]
fn no_cache_filter_reruns_only_the_named_stages() {
    let f = Fixture::new();
    for _ in 0..3 {
        f.fake.script(
            ExitStatus::Code(0),
            b"",
            vec![ScriptedChange::Write {
                path: "tmp/x".into(),
                content: b"x".to_vec(),
                mode: 0o644,
            }],
        );
    }
    f.dockerfile(STAGES);
    let mut o = f.opts();
    o.target = Some("app".into());
    f.build_opts(&o).unwrap();
    assert_eq!(ran(&f), ["deps", "app"]);
    o.no_cache_filter = vec!["APP".into()];
    let out = f.build_opts(&o).unwrap();
    assert_eq!(ran(&f), ["deps", "app", "app"], "only `app` ran again");
    let cached: Vec<bool> = out.steps.iter().map(|s| s.cached).collect();
    assert_eq!(cached, [true, false]);
}

#[test]
fn an_unknown_no_cache_filter_stage_says_which_one_was_meant() {
    let f = Fixture::new();
    f.dockerfile(STAGES);
    let mut o = f.opts();
    o.no_cache_filter = vec!["dep".into()];
    let text = err_text(f.build_opts(&o));
    assert!(
        text.contains("--no-cache-filter `dep`: the Dockerfile has no stage named so")
            && text.contains("did you mean `deps`?"),
        "{text}"
    );
    assert!(f.specs().is_empty());
}
