//! Real `docker buildx build` command lines (the Docker docs, docker/build-push-action's
//! generated lines, GitLab's CI template; `fixtures/buildx-lines.txt`, each with its source) run
//! as `kiln build`: each builds, with its output checked, or fails with kiln's "not
//! supported, use …" message and exit code. A bash function `docker` stands for
//! `docker buildx build` / `docker build`, so the lines run as a user's shell runs them; a real
//! registry on 127.0.0.1 takes the pushes, a real ssh-agent the `--ssh` line.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::registry::{Mode, Registry};
use crate::support::{busybox, need, Kiln};

const FIXTURE: &str = include_str!("fixtures/buildx-lines.txt");

/// One record of the fixture.
#[derive(Debug)]
struct Line {
    source: String,
    expect: String,
    check: String,
    run: String,
}

fn records() -> Vec<Line> {
    let mut out = Vec::new();
    let field = |block: &str, name: &str| -> String {
        block
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("a record without `{name}:`: {block}"))
            .trim()
            .to_string()
    };
    for block in FIXTURE.split("\n\n") {
        let block: String = block
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        if block.trim().is_empty() {
            continue;
        }
        let run = field(&block, "run");
        // A note after two spaces and `#` says what was substituted; it is not run.
        let run = run.split("  # ").next().unwrap().trim().to_string();
        out.push(Line {
            source: field(&block, "source"),
            expect: field(&block, "expect"),
            check: field(&block, "check"),
            run,
        });
    }
    out
}

/// Stands for the docker CLI: `docker buildx build …` and `docker build …` are `kiln build …`.
const DOCKER_FN: &str = r#"docker() {
  if [ "$1" = buildx ]; then shift; fi
  if [ "$1" != build ]; then echo "not a build: $*" >&2; return 99; fi
  shift
  "$KILN" --root "$KILN_ROOT" --progress quiet build "$@"
}
"#;

struct World {
    k: Kiln,
    reg: Registry,
    env: Vec<(String, String)>,
    agent: Option<std::process::Child>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(a) = &mut self.agent {
            let _ = a.kill();
            let _ = a.wait();
        }
    }
}

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const COPY_DOCKERFILE: &str = "FROM scratch AS build-env\nCOPY hello.txt /hello.txt\n\
FROM build-env AS install\nCOPY app.txt /app.txt\nFROM install AS release\n\
ARG HTTP_PROXY\nLABEL org.example.stage=release\n";

const RUN_DOCKERFILE: &str = "FROM busybox\n\
RUN --mount=type=secret,id=aws,required=false --mount=type=ssh \
cat /etc/hosts > /hosts.txt && { test -S \"$SSH_AUTH_SOCK\" && echo agent || echo none; } > /ssh.txt\n";

/// The work directories (`copy`, `run`), the store with busybox, the registry, an agent.
fn world() -> Option<World> {
    let k = Kiln::new();
    busybox::import(&k, "busybox")?;
    let reg = Registry::start(Mode::Plain)?;
    let copy = k.path("copy");
    write(&copy.join("Dockerfile"), COPY_DOCKERFILE);
    write(&copy.join("path/to/Dockerfile"), COPY_DOCKERFILE);
    write(&copy.join("hello.txt"), "hello\n");
    write(&copy.join("app.txt"), "app\n");
    write(&copy.join("path/to/project/source/main.c"), "int main;\n");
    write(&k.path("run/Dockerfile"), RUN_DOCKERFILE);
    let home = k.path("home");
    write(
        &home.join(".aws/credentials"),
        "[default]\naws_access_key_id=AKIAFIXTURE\n",
    );
    let temp = k.path("runner-temp");
    std::fs::create_dir_all(&temp).unwrap();
    let mut agent = None;
    let sock = k.path("agent.sock");
    if need("ssh-agent") && need("ssh-keygen") {
        let key = k.path("id");
        let kg = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(kg.success());
        let child = Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&sock)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        agent = Some(child);
        while !sock.exists() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let added = Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .unwrap();
        assert!(added.status.success(), "{added:?}");
    }
    let r = reg.addr.clone();
    let env = vec![
        ("KILN".into(), env!("CARGO_BIN_EXE_kiln").into()),
        ("KILN_ROOT".into(), k.root().display().to_string()),
        ("REGISTRY".into(), r.clone()),
        ("TAG".into(), format!("{r}/docs/app:annotated")),
        ("CI_REGISTRY_IMAGE".into(), format!("{r}/group/project")),
        ("tag".into(), String::new()),
        ("HOME".into(), home.display().to_string()),
        ("RUNNER_TEMP".into(), temp.display().to_string()),
        ("SSH_AUTH_SOCK".into(), sock.display().to_string()),
    ];
    Some(World { k, reg, env, agent })
}

impl World {
    fn expand(&self, s: &str) -> String {
        let mut out = s.to_string();
        // Longest names first, so `$TAG` does not eat the start of a longer one.
        let mut env = self.env.clone();
        env.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        for (k, v) in env {
            out = out.replace(&format!("${k}"), &v);
        }
        out
    }

    /// Whether `check` holds after a line printed `stdout`; `Err` says what is wrong.
    fn check(&self, dir: &Path, check: &str, stdout: &str) -> Result<(), String> {
        let digest = stdout.trim();
        let (kind, arg) = check.split_once(':').unwrap_or((check, ""));
        let arg = self.expand(arg);
        let ok = match kind {
            "digest" => digest.starts_with("sha256:") && digest.lines().count() == 1,
            "image" => self
                .k
                .cmd()
                .args(["inspect", &arg])
                .output()
                .unwrap()
                .status
                .success(),
            "file" => dir.join(&arg).is_file(),
            "iidfile" => std::fs::read_to_string(&arg).is_ok_and(|d| d.trim() == digest),
            "manifest" => Command::new("skopeo")
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{arg}"))
                .output()
                .unwrap()
                .status
                .success(),
            other => return Err(format!("unknown check `{other}`")),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("check `{check}` ({arg}) does not hold"))
        }
    }

    /// Runs one line; `Err` says how it differs from its expectation.
    fn run(&self, line: &Line, dir: &Path) -> Result<(), String> {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("{DOCKER_FN}\n{}", line.run))
            .current_dir(dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code().unwrap_or(-1);
        if let Some(rest) = line.expect.strip_prefix("fail ") {
            let (want_code, message) = rest.split_once(' ').unwrap();
            let want_code: i32 = want_code.parse().unwrap();
            if code != want_code || !stderr.contains(message) {
                return Err(format!(
                    "expected exit {want_code} and `{message}`, got exit {code}: {stderr}"
                ));
            }
            return Ok(());
        }
        if code != 0 {
            return Err(format!("exit {code}: {stderr}"));
        }
        for c in line.check.split(';').map(str::trim) {
            self.check(dir, c, &stdout)?;
        }
        Ok(())
    }
}

#[test]
fn the_fixture_has_twenty_sourced_lines_and_few_markers() {
    let lines = records();
    assert!(lines.len() >= 20, "{} lines", lines.len());
    for l in &lines {
        assert!(l.source.starts_with("https://"), "{l:?}");
        assert!(
            l.run.starts_with("docker buildx build ") || l.run.starts_with("docker build "),
            "{l:?}"
        );
        assert!(
            l.expect.starts_with("ok") || l.expect.starts_with("fail "),
            "{l:?}"
        );
    }
    let marked = lines.iter().filter(|l| l.expect.contains("needs=")).count();
    assert!(marked <= 5, "{marked} lines wait for another branch");
}

#[test]
fn real_buildx_command_lines_build_or_say_what_to_use() {
    if !need("bash") || !need("skopeo") {
        return;
    }
    let Some(w) = world() else { return };
    let sandbox = crate::support::sandbox::sandbox().is_some();
    let mut failures = Vec::new();
    let mut ran = 0;
    for line in records() {
        if line.expect.contains("needs=") {
            eprintln!("skipped until its branch is merged: {}", line.run);
            continue;
        }
        let context = if line.expect.contains("context=run") {
            if !sandbox || w.agent.is_none() {
                continue; // said why already; fails under CI=true
            }
            "run"
        } else {
            "copy"
        };
        let dir: PathBuf = w.k.path(context);
        if let Err(e) = w.run(&line, &dir) {
            failures.push(format!("{}\n  {}\n  {e}", line.source, line.run));
        }
        ran += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} lines:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(ran >= 20 || !sandbox, "only {ran} lines ran");
    // The lines that pushed reached the registry.
    assert!(!w.reg.accesses().is_empty());
}
