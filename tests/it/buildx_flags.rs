//! buildx's `--ssh` (with `RUN --mount=type=ssh`), `--add-host`, `--pull` and
//! `--no-cache-filter` through `kiln build`: as root and as the unprivileged test user
//! (subordinate ids) where the sandbox is involved, with OpenSSH's own tools inside the step
//! (the host's `ssh-add` and `ssh-keygen`, bound in with their libraries), a real `ssh-agent`,
//! and the real registry for `--pull`.
//!
//! Without user namespaces or OpenSSH the tests say why and pass, except with `CI=true`, where
//! they fail.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::registry::{Mode, Registry};
use crate::support::runas::{blob_views, contains, layer_entries, layout_layers, KilnAs, Who};
use crate::support::users::TEST_USER;
use crate::support::{busybox, need, Kiln};

/// Copies `programs` and every library they load (and the dynamic loader, as `ld.so`) into
/// `dir`, so a step of any base can run them as `dir/ld.so --library-path dir dir/PROGRAM`.
fn bundle(dir: &Path, programs: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    for p in programs {
        let exe = PathBuf::from("/usr/bin").join(p);
        std::fs::copy(&exe, dir.join(p)).unwrap();
        let out = Command::new("ldd").arg(&exe).output().unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = line
                .split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from);
            let Some(path) = path else { continue };
            let name = if line.contains("ld-linux") {
                "ld.so".to_string()
            } else {
                path.file_name().unwrap().to_string_lossy().into_owned()
            };
            std::fs::copy(&path, dir.join(name)).unwrap();
        }
    }
}

/// `ssh-keygen -t ed25519` without a passphrase (or with `pass`) at `path`, owned by `k`'s user.
fn keygen(k: &KilnAs, path: &Path, pass: &str) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-C", "kiln-it", "-N", pass, "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    k.give(path);
    std::fs::read_to_string(path.with_extension("pub")).unwrap()
}

/// Runs `args` as `who` (the test user: its uid and gid, set by root), with
/// `SSH_AUTH_SOCK=sock`.
fn as_who(who: Who, sock: &Path, args: &[&str]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(args[0]);
    c.args(&args[1..]).env("SSH_AUTH_SOCK", sock);
    if who == Who::User {
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, TEST_USER]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        c.uid(id("-u")).gid(id("-g"));
    }
    c
}

/// An `ssh-agent -D` of `who` at `sock` holding `key`; killed when dropped.
struct Agent(std::process::Child);

impl Agent {
    fn start(k: &KilnAs, sock: &Path, key: &Path) -> Agent {
        let dir = sock.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        k.give(dir);
        let sock_s = sock.to_str().unwrap();
        let child = as_who(k.who, sock, &["ssh-agent", "-D", "-a", sock_s])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let agent = Agent(child);
        for _ in 0..500 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let out = as_who(k.who, sock, &["ssh-add", "-q", key.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh-add: {out:?}");
        agent
    }

    fn listed(&self, who: Who, sock: &Path) -> String {
        let out = as_who(who, sock, &["ssh-add", "-L"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SSH_DOCKERFILE: &str = r#"FROM busybox
RUN --mount=type=bind,source=sshbin,target=/opt/ssh \
    --mount=type=ssh,uid=1000,gid=1001,mode=0640 \
    stat -c '%u:%g %a' "$SSH_AUTH_SOCK" > /sockstat && echo "$SSH_AUTH_SOCK" > /sockpath \
 && /opt/ssh/ld.so --library-path /opt/ssh /opt/ssh/ssh-add -L > /listed
RUN --mount=type=bind,source=sshbin,target=/opt/ssh \
    --mount=type=ssh,id=signer,target=/tmp/agent.sock \
    echo hello > /msg \
 && /opt/ssh/ld.so --library-path /opt/ssh /opt/ssh/ssh-keygen -Y sign -f /listed -n kiln /msg \
 && { /opt/ssh/ld.so --library-path /opt/ssh /opt/ssh/ssh-add -D 2>/dev/null; echo "remove-all: $?" > /removed; } \
 && /opt/ssh/ld.so --library-path /opt/ssh /opt/ssh/ssh-add -L > /still
RUN test ! -e /run/buildkit && test ! -e /tmp/agent.sock && echo clean > /clean
"#;

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

fn ssh_forwarding(who: Who) {
    if !(need("ssh-agent") && need("ssh-add") && need("ssh-keygen") && need("ldd")) {
        return;
    }
    let Some(k) = KilnAs::new(who) else { return };
    if !k.busybox() {
        return;
    }
    let key = k.path("keys/id");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    k.give(key.parent().unwrap());
    let public = keygen(&k, &key, "");
    let ctx = k.context("ctx", SSH_DOCKERFILE, &[]);
    bundle(&ctx.join("sshbin"), &["ssh-add", "ssh-keygen"]);
    k.give(&ctx);
    let sock = k.path("agent/sock");
    let agent = Agent::start(&k, &sock, &key);
    let private = std::fs::read_to_string(&key).unwrap();
    // A line of the private key's base64 body: in no file kiln writes unless it leaks.
    let needle = private.lines().nth(2).unwrap().to_string();
    let sock_arg = sock.display().to_string();
    let key_arg = key.display().to_string();
    for (name, source) in [("socket", &sock_arg), ("keys", &key_arg)] {
        let rootfs = k.path(&format!("out/rootfs-{name}"));
        let layout = k.path(&format!("out/layout-{name}"));
        let out = k
            .cmd_progress("plain")
            .args(["build", ctx.to_str().unwrap(), "--no-cache"])
            .args(["--ssh", &format!("default={source}")])
            .args(["--ssh", &format!("signer={source}")])
            .args(["-o", &format!("type=local,dest={}", rootfs.display())])
            .args(["-o", &format!("oci:{}:t", layout.display())])
            .output()
            .unwrap();
        crate::support::assert_success(&out, &(who, name));
        let what = format!("{who:?} {name}");
        assert_eq!(read(&rootfs, "sockstat"), "1000:1001 640\n", "{what}");
        assert_eq!(
            read(&rootfs, "sockpath"),
            "/run/buildkit/ssh_agent.0\n",
            "{what}"
        );
        assert_eq!(
            read(&rootfs, "listed"),
            public,
            "{what}: the step lists the key"
        );
        // The signature the agent made in the step verifies with the public key.
        let sig = rootfs.join("msg.sig");
        let check = Command::new("ssh-keygen")
            .args(["-Y", "check-novalidate", "-n", "kiln", "-f"])
            .arg(key.with_extension("pub"))
            .arg("-s")
            .arg(&sig)
            .stdin(std::fs::File::open(rootfs.join("msg")).unwrap())
            .output()
            .unwrap();
        assert!(check.status.success(), "{what}: {check:?}");
        // Read-only: the step could not remove the agent's keys.
        assert_eq!(read(&rootfs, "removed"), "remove-all: 1\n", "{what}");
        assert_eq!(read(&rootfs, "still"), public, "{what}");
        assert_eq!(read(&rootfs, "clean"), "clean\n", "{what}");
        assert!(!rootfs.join("run/buildkit").exists(), "{what}");
        for l in layout_layers(&layout, "t") {
            for e in layer_entries(&l) {
                assert!(
                    !e.path.starts_with("run/buildkit") && e.path != "tmp/agent.sock",
                    "{what}: ssh mount point `{}` in a layer",
                    e.path
                );
            }
        }
        for f in k.store_files() {
            let bytes = std::fs::read(&f).unwrap();
            for view in blob_views(&bytes) {
                assert!(
                    !contains(&view, needle.as_bytes()),
                    "{what}: the private key is in `{}`",
                    f.display()
                );
            }
        }
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !text.contains(&sock_arg) && !text.contains(&needle),
            "{text}"
        );
    }
    assert_eq!(
        agent.listed(who, &sock),
        public,
        "the host's agent kept its key"
    );
    // No private agent is left behind by the key-file build.
    let left = crate::support::sandbox::processes_with("kiln-ssh-");
    assert_eq!(left, 0, "kiln's private ssh-agent is still running");

    // A required agent that was not given: the Dockerfile line, the flag, exit 1, no step.
    let ctx2 = k.context(
        "ctx-required",
        "FROM busybox\nRUN --mount=type=ssh,id=deploy,required=true echo ran > /ran\n",
        &[],
    );
    k.give(&ctx2);
    let (code, _, err) = k.fails(&["build", ctx2.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Dockerfile:2:")
            && err.contains(
                "ssh agent `deploy` was not provided: pass it with `kiln build --ssh deploy`"
            ),
        "{err}"
    );
    // Not required: the mount is skipped, and the step runs without an agent.
    let ctx3 = k.context(
        "ctx-optional",
        "FROM busybox\nRUN --mount=type=ssh,id=deploy test ! -e \"$SSH_AUTH_SOCK\" && echo $SSH_AUTH_SOCK > /sock\n",
        &[],
    );
    k.give(&ctx3);
    let rootfs = k.path("out/rootfs-optional");
    k.ok(&[
        "build",
        ctx3.to_str().unwrap(),
        "-o",
        &format!("type=local,dest={}", rootfs.display()),
    ]);
    assert_eq!(read(&rootfs, "sock"), "/run/buildkit/ssh_agent.0\n");
    // An encrypted key: a clear error before the build, exit 2.
    let enc = k.path("keys/enc");
    keygen(&k, &enc, "a passphrase");
    let spec = format!("default={}", enc.display());
    let (code, _, err) = k.fails(&["build", ctx3.to_str().unwrap(), "--ssh", &spec]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("--ssh `{spec}`"))
            && err.contains("is encrypted with a passphrase: add it to your agent"),
        "{err}"
    );
}

#[test]
fn ssh_forwards_an_agent_read_only_and_never_stores_it_as_root() {
    ssh_forwarding(Who::Root);
}

#[test]
fn ssh_forwards_an_agent_read_only_and_never_stores_it_as_unprivileged_user() {
    ssh_forwarding(Who::User);
}

fn add_host(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    if !k.busybox() {
        return;
    }
    let ctx = k.context(
        "ctx",
        "FROM busybox\nRUN grep -E '^10[.]1[.]2[.]3[[:space:]]+db[.]example$' /etc/hosts \
         && grep -E '^fe80::1[[:space:]]+v6$' /etc/hosts && grep -c . /etc/hosts > /lines\n",
        &[],
    );
    k.give(&ctx);
    let layout = k.path("out/hosts");
    k.ok(&[
        "build",
        ctx.to_str().unwrap(),
        "--network",
        "none",
        "--add-host",
        "db.example:10.1.2.3",
        "--add-host=v6=[fe80::1]",
        "-o",
        &format!("oci:{}:t", layout.display()),
    ]);
    for l in layout_layers(&layout, "t") {
        for e in layer_entries(&l) {
            assert_ne!(e.path, "etc/hosts", "{who:?}: /etc/hosts in a layer");
        }
    }
    for (flag, says) in [
        ("nohost", "--add-host `nohost`: expected HOST:IP or HOST=IP"),
        (
            "db:10.1.2.300",
            "`10.1.2.300` is not an IPv4 or IPv6 address",
        ),
        ("bad name:10.1.2.3", "`bad name` is not a host name"),
        ("db:host-gateway", "`host-gateway` is not supported"),
    ] {
        let (code, _, err) = k.fails(&["build", ctx.to_str().unwrap(), "--add-host", flag]);
        assert_eq!(code, 2, "{flag}: {err}");
        assert!(err.contains(says), "{flag}: {err}");
    }
}

#[test]
fn add_host_lines_reach_run_steps_but_not_the_image_as_root() {
    add_host(Who::Root);
}

#[test]
fn add_host_lines_reach_run_steps_but_not_the_image_as_unprivileged_user() {
    add_host(Who::User);
}

/// The content of `/version` in the image `kiln build` makes from `ctx` with `extra` flags.
fn built_version(k: &Kiln, ctx: &Path, extra: &[&str]) -> String {
    let dest = tempfile::tempdir_in(k.dir.path()).unwrap();
    let out = format!("type=local,dest={}", dest.path().join("r").display());
    let mut args = vec!["build", ctx.to_str().unwrap(), "-o", &out];
    args.extend(extra);
    k.ok(&args);
    std::fs::read_to_string(dest.path().join("r/version")).unwrap()
}

/// Pushes an image whose `/version` says `v` to `reference`, built in `k`.
fn push_version(k: &Kiln, reference: &str, v: &str) {
    let ctx = k.path(&format!("base-{v}"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("version"), v).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY version /version\n",
    )
    .unwrap();
    k.ok(&["build", ctx.to_str().unwrap(), "-t", reference, "--push"]);
}

#[test]
fn pull_resolves_a_moved_tag_again_and_a_digest_never() {
    let publisher = Kiln::new();
    if busybox::import(&publisher, "busybox").is_none() {
        return;
    }
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let base = format!("{}/team/base:1", reg.addr);
    push_version(&publisher, &base, "v1");
    let ci = Kiln::new();
    let ctx = ci.path("app");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nLABEL app=1\n"),
    )
    .unwrap();
    assert_eq!(built_version(&ci, &ctx, &[]), "v1");
    // The tag moves: the store's copy wins without --pull (as Docker Engine's builder), the
    // registry's with it (BuildKit's `pull` resolve mode); the store's name follows.
    push_version(&publisher, &base, "v2");
    assert_eq!(built_version(&ci, &ctx, &[]), "v1");
    assert_eq!(built_version(&ci, &ctx, &["--pull"]), "v2");
    assert_eq!(built_version(&ci, &ctx, &[]), "v2");
    // A tag that did not move costs the manifest only: no blob is fetched again.
    let before = reg.accesses().len();
    assert_eq!(built_version(&ci, &ctx, &["--pull", "--no-cache"]), "v2");
    let new: Vec<_> = reg.accesses().into_iter().skip(before).collect();
    assert!(
        new.iter().any(|a| a.path.contains("/manifests/1")),
        "--pull asked for the tag: {new:?}"
    );
    assert!(
        new.iter().all(|a| !a.path.contains("/blobs/")),
        "an unchanged tag fetched blobs: {new:?}"
    );
    // A digest is never resolved again.
    let v: serde_json::Value = serde_json::from_str(&ci.ok(&["inspect", &base])).unwrap();
    let pinned = format!("{}/team/base@{}", reg.addr, v["digest"].as_str().unwrap());
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {pinned}\n")).unwrap();
    assert_eq!(built_version(&ci, &ctx, &["--pull"]), "v2");
    let before = reg.accesses().len();
    assert_eq!(built_version(&ci, &ctx, &["--pull", "--no-cache"]), "v2");
    let new: Vec<_> = reg.accesses().into_iter().skip(before).collect();
    assert!(new.is_empty(), "a digest was resolved again: {new:?}");
    // --pull with an unreachable registry fails (it does not fall back to the store's copy).
    drop(reg);
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {base}\n")).unwrap();
    let (code, err) = ci.fails(&["build", ctx.to_str().unwrap(), "--pull"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&base), "{err}");
}

const STAGES: &str = "FROM busybox AS deps\nCOPY a /a\nFROM busybox AS app\nCOPY --from=deps /a /b\nCOPY b /b2\nFROM app\nCOPY c /c\n";

fn steps_cached(k: &Kiln, ctx: &Path, extra: &[&str]) -> Vec<(String, bool)> {
    let meta = k.path("meta.json");
    let mut args = vec![
        "build",
        ctx.to_str().unwrap(),
        "--metadata-file",
        meta.to_str().unwrap(),
    ];
    args.extend(extra);
    k.ok(&args);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["cached"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn no_cache_filter_rebuilds_the_named_stages_from_no_cache() {
    let k = Kiln::new();
    if busybox::import(&k, "busybox").is_none() {
        return;
    }
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    for f in ["a", "b", "c"] {
        std::fs::write(ctx.join(f), f).unwrap();
    }
    std::fs::write(ctx.join("Dockerfile"), STAGES).unwrap();
    let cache = k.path("cache");
    let to = format!("type=local,dest={},mode=max", cache.display());
    steps_cached(&k, &ctx, &["--cache-to", &to]);
    let all_cached = steps_cached(&k, &ctx, &[]);
    assert!(all_cached.iter().all(|(_, c)| *c), "{all_cached:?}");
    let got = steps_cached(&k, &ctx, &["--no-cache-filter", "app"]);
    let want: Vec<(String, bool)> = [
        ("deps", true),
        ("app", false),
        ("app", false),
        ("stage-2", true),
    ]
    .iter()
    .map(|(s, c)| (s.to_string(), *c))
    .collect();
    assert_eq!(got, want);
    // A fresh store answered by `--cache-from`: the named stage is not.
    let fresh = Kiln::new();
    let archive = k.path("busybox.oci.tar");
    fresh.ok(&[
        "copy",
        &format!("oci-archive:{}", archive.display()),
        "busybox",
    ]);
    let from = format!("type=local,src={}", cache.display());
    let got = steps_cached(
        &fresh,
        &ctx,
        &["--cache-from", &from, "--no-cache-filter=deps,APP"],
    );
    assert!(got.iter().all(|(s, c)| *c == (s == "stage-2")), "{got:?}");
    let (code, err) = k.fails(&["build", ctx.to_str().unwrap(), "--no-cache-filter", "dep"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "--no-cache-filter `dep`: the Dockerfile has no stage named so (did you mean `deps`?)"
        ),
        "{err}"
    );
}

/// Every refusal of the four flags' values: before anything is built, exit 2, the flag named.
#[test]
fn bad_flag_values_are_refused_before_the_build_with_exit_2() {
    let k = Kiln::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch AS only\nLABEL a=b\n").unwrap();
    std::fs::write(k.path("notakey"), "not a key\n").unwrap();
    let sock = k.path("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let key = k.path("id");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let notakey = k.path("notakey").display().to_string();
    let missing = k.path("missing").display().to_string();
    let sock = sock.display().to_string();
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["--ssh".into(), "default".into()],
            "--ssh `default`: SSH_AUTH_SOCK is not set: start an agent".into(),
        ),
        (
            vec!["--ssh".into(), format!("k={missing}")],
            format!("--ssh `k={missing}`"),
        ),
        (
            vec!["--ssh".into(), format!("k={notakey}")],
            format!("`{notakey}` is not a private key OpenSSH can read"),
        ),
        (
            vec!["--ssh".into(), format!("k={sock},{}", key.display())],
            "give one agent socket, or key files, not both".into(),
        ),
        (
            vec![
                "--ssh".into(),
                format!("a={sock}"),
                "--ssh".into(),
                format!("a={sock}"),
            ],
            format!("--ssh `a={sock}`: the id `a` is given twice"),
        ),
        (
            vec!["--no-cache-filter".into(), "only,".into()],
            "--no-cache-filter `only,`: an empty stage name".into(),
        ),
    ];
    for (flags, says) in cases {
        let mut args = vec!["build".to_string(), ctx.display().to_string()];
        args.extend(flags.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = k
            .cmd()
            .args(&args)
            .env_remove("SSH_AUTH_SOCK")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(&says), "{flags:?}: {err}");
    }
    // Without OpenSSH, key files cannot be checked or served: the package is named.
    let out = k
        .cmd()
        .args(["build", ctx.to_str().unwrap(), "--ssh"])
        .arg(format!("default={}", key.display()))
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`ssh-keygen` (package openssh-client) is needed to forward key files"),
        "{err}"
    );
}
