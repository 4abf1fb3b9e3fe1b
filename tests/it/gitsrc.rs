//! Git sources, `-f -` and a stdin context, against real git servers on 127.0.0.1 (`git
//! daemon`, `git http-backend` behind basic auth) and `file://` repositories.
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use crate::support::git::{self, bare, commit, repo, Daemon, Http};
use crate::support::Kiln;

/// The repository most tests serve: a Dockerfile copying the tree, an `app/` with its own.
fn sample(k: &Kiln) -> (std::path::PathBuf, String) {
    let work = k.path("work");
    let first = repo(
        &work,
        &[
            ("Dockerfile", "FROM scratch\nCOPY . /src/\n"),
            ("top.txt", "top v1\n"),
            (
                "app/Dockerfile",
                "FROM scratch\nCOPY hello.txt /hello.txt\n",
            ),
            ("app/hello.txt", "hello\n"),
        ],
    );
    git::git(&work, &["tag", "v1.2.0"]);
    (work, first)
}

/// Builds `args` and exports the root filesystem; returns the export directory.
fn export(k: &Kiln, name: &str, args: &[&str]) -> std::path::PathBuf {
    let dest = k.path(name);
    let mut a = vec!["build"];
    a.extend_from_slice(args);
    let o = format!("type=local,dest={}", dest.display());
    a.extend_from_slice(&["-o", &o]);
    k.ok(&a);
    dest
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn context_at_branch_tag_sha_and_subdir_over_git_daemon() {
    if !git::available() {
        return;
    }
    let k = Kiln::new();
    let (work, first) = sample(&k);
    let second = commit(&work, &[("top.txt", "top v2\n")], "second");
    let served = k.path("served");
    std::fs::create_dir_all(&served).unwrap();
    bare(&work, &served.join("repo.git"));
    let d = Daemon::start(&served);
    let url = d.url("repo.git");

    let at = |name: &str, frag: &str| export(&k, name, &[&format!("{url}#{frag}")]);
    assert_eq!(read(&at("branch", "main").join("src/top.txt")), "top v2\n");
    assert_eq!(read(&at("tag", "v1.2.0").join("src/top.txt")), "top v1\n");
    assert_eq!(read(&at("sha", &first).join("src/top.txt")), "top v1\n");
    // An abbreviated id is not a ref the server advertises: the full-fetch fallback finds it.
    assert_eq!(
        read(&at("short", &first[..10]).join("src/top.txt")),
        "top v1\n"
    );
    let head = export(&k, "head", &[&url]);
    assert_eq!(read(&head.join("src/top.txt")), "top v2\n");
    // The `.git` directory is not part of the context.
    assert!(!head.join("src/.git").exists());
    // `:subdir` is the context, and its Dockerfile the one built.
    let sub = at("subdir", "main:app");
    assert_eq!(read(&sub.join("hello.txt")), "hello\n");
    assert!(!sub.join("src").exists());
    let _ = second;
}

#[test]
fn version_and_gitsha_tag_labels_and_metadata_from_a_file_url() {
    if !git::available() {
        return;
    }
    let k = Kiln::new();
    let (work, first) = sample(&k);
    let url = format!("file://{}#v1.2.0", work.display());
    let meta = k.path("meta.json");
    k.ok(&[
        "build",
        &url,
        "-t",
        "reg.example/app:{version}-{gitsha}",
        "--metadata-file",
        meta.to_str().unwrap(),
    ]);
    let want = format!("reg.example/app:1.2.0-{}", &first[..12]);
    assert!(k.ok(&["images"]).contains(&want), "{}", k.ok(&["images"]));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(m["vcs"]["revision"], first.as_str());
    assert_eq!(m["vcs"]["ref"], "v1.2.0");
    assert_eq!(m["vcs"]["source"], format!("file://{}", work.display()));
    let inspect = k.ok(&["inspect", &want]);
    assert!(
        inspect.contains(&format!(
            "\"org.opencontainers.image.revision\": \"{first}\""
        )),
        "{inspect}"
    );
    // Provenance names the fetched commit and its tree (the checkout has no `.git` to ask).
    let layout = k.path("prov-layout");
    k.ok(&[
        "build",
        &url,
        "--provenance=mode=min",
        "-o",
        &format!("oci:{}", layout.display()),
    ]);
    let read = |d: &str| -> serde_json::Value {
        let hex = d.trim_start_matches("sha256:");
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let index = read(top["manifests"][0]["digest"].as_str().unwrap());
    let att = read(index["manifests"][1]["digest"].as_str().unwrap());
    let statement = read(att["layers"][0]["digest"].as_str().unwrap());
    let deps = &statement["predicate"]["buildDefinition"]["resolvedDependencies"];
    let context = deps
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "context")
        .unwrap_or_else(|| panic!("no context dependency: {statement}"));
    assert_eq!(context["digest"]["gitCommit"], first.as_str(), "{context}");
    let tree = git::git(&work, &["rev-parse", "v1.2.0^{tree}"]);
    assert_eq!(context["digest"]["gitTree"], tree.trim(), "{context}");
    assert_eq!(context["uri"], format!("file://{}", work.display()));
    // A local context in a work tree: `{gitsha}` and `{version}` (HEAD at a version tag) from it.
    k.ok(&[
        "build",
        work.to_str().unwrap(),
        "-t",
        "local/app:{version}-{gitsha}",
    ]);
    let want = format!("local/app:1.2.0-{}", &first[..12]);
    assert!(k.ok(&["images"]).contains(&want), "{}", k.ok(&["images"]));
    // `{version}` needs a version ref; the error names the ref.
    let (code, err) = k.fails(&[
        "build",
        &format!("file://{}#main", work.display()),
        "-t",
        "app:{version}",
    ]);
    assert_eq!(
        code, 2,
        "a -t that cannot be rendered is a usage error, as a bad -t is"
    );
    assert!(err.contains("the ref `main` is not a version"), "{err}");
}

#[test]
fn cache_hits_on_the_same_commit_and_misses_after_a_new_one() {
    if !git::available() {
        return;
    }
    let k = Kiln::new();
    let (work, _) = sample(&k);
    let url = format!("file://{}#main", work.display());
    let meta = k.path("meta.json");
    let build = || {
        k.ok(&["build", &url, "--metadata-file", meta.to_str().unwrap()]);
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        m["steps"][0]["cached"].as_bool().unwrap()
    };
    assert!(!build());
    assert!(build(), "the same commit is a cache hit");
    commit(&work, &[("top.txt", "changed\n")], "change");
    assert!(!build(), "a new commit that changes the tree rebuilds");
}

#[test]
fn a_hostile_repository_is_harmless() {
    if !git::available() {
        return;
    }
    let k = Kiln::new();
    // The user's own git configuration names hooks and a template with hooks (as a
    // compromised or careless setup might): kiln's fetch runs none of them.
    let home = k.path("home");
    let hooks = home.join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let marker = k.path("hook-ran");
    for h in [
        "post-checkout",
        "post-merge",
        "reference-transaction",
        "fsmonitor",
    ] {
        let p = hooks.join(h);
        std::fs::write(&p, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::fs::create_dir_all(home.join("template/hooks")).unwrap();
    std::fs::copy(
        hooks.join("post-checkout"),
        home.join("template/hooks/post-checkout"),
    )
    .unwrap();
    std::fs::write(
        home.join(".gitconfig"),
        format!(
            "[core]\n\thooksPath = {}\n\tfsmonitor = {}\n[init]\n\ttemplateDir = {}\n",
            hooks.display(),
            hooks.join("fsmonitor").display(),
            home.join("template").display()
        ),
    )
    .unwrap();
    // A secret repository on the builder, which a submodule URL points at.
    let secret = k.path("secret");
    repo(&secret, &[("secret.txt", "s3cret\n")]);
    let work = k.path("work");
    repo(
        &work,
        &[
            ("Dockerfile", "FROM scratch\nCOPY . /src/\n"),
            ("escape", "@/etc/passwd"),
            ("up", "@../../../.."),
        ],
    );
    let served = k.path("served");
    std::fs::create_dir_all(&served).unwrap();
    bare(&work, &served.join("repo.git"));
    let d = Daemon::start(&served);
    let build = |args: &[&str]| {
        let mut c = k.cmd();
        c.env("HOME", &home)
            .env_remove("GIT_CONFIG_GLOBAL")
            .arg("build")
            .args(args);
        c.output().unwrap()
    };
    let dest = k.path("out");
    let o = format!("type=local,dest={}", dest.display());
    let out = build(&[&d.url("repo.git"), "-o", &o]);
    crate::support::assert_success(&out, &"build");
    assert!(!marker.exists(), "a hook ran");
    // Symlinks stay symlinks, as in any context: nothing outside the checkout is read.
    assert_eq!(
        std::fs::read_link(dest.join("src/escape")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert!(std::fs::symlink_metadata(dest.join("src/up"))
        .unwrap()
        .is_symlink());
    // `:subdir` through a symlink out of the tree is refused, naming it.
    let out = build(&[&format!("{}#main:up", d.url("repo.git"))]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("the subdirectory `up` leaves the repository"),
        "{err}"
    );
    // A Dockerfile that is a symlink out of the tree is refused.
    commit(&work, &[("Dockerfile", "@/etc/passwd")], "link");
    std::fs::remove_dir_all(served.join("repo.git")).unwrap();
    bare(&work, &served.join("repo.git"));
    let out = build(&[&d.url("repo.git")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("is not a file inside the context"), "{err}");
    // A submodule with a file:// URL, in a repository served over git://: git's `file`
    // protocol is refused for it.
    let work2 = k.path("work2");
    repo(&work2, &[("Dockerfile", "FROM scratch\nCOPY . /src/\n")]);
    git::git(
        &work2,
        &[
            "submodule",
            "add",
            "-q",
            &format!("file://{}", secret.display()),
            "sub",
        ],
    );
    commit(&work2, &[], "submodule");
    bare(&work2, &served.join("sub.git"));
    let out = build(&[&d.url("sub.git")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a file:// submodule was fetched");
    assert!(err.contains("submodule"), "{err}");
    assert!(!marker.exists(), "a hook ran");
}

#[test]
fn a_wrong_ref_or_an_unreachable_host_fails_naming_the_url_and_ref() {
    if !git::available() {
        return;
    }
    let k = Kiln::new();
    let (work, _) = sample(&k);
    let url = format!("file://{}", work.display());
    let (code, err) = k.fails(&["build", &format!("{url}#no-such-branch")]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("cannot fetch `{url}` at no-such-branch")),
        "{err}"
    );
    let port = crate::support::free_port();
    let dead = format!("git://127.0.0.1:{port}/repo.git");
    let (code, err) = k.fails(&["build", &format!("{dead}#main")]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("cannot fetch `{dead}` at main")),
        "{err}"
    );
}

#[test]
fn https_credentials_from_kiln_login_never_reach_the_image() {
    if !git::available() {
        return;
    }
    let k = Kiln::new();
    let (work, _) = sample(&k);
    let served = k.path("served");
    std::fs::create_dir_all(&served).unwrap();
    bare(&work, &served.join("repo.git"));
    let token = "tok-3f9a1c55e0";
    let h = Http::start(&served, "ci", token);
    let docker_config = k.path("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    let cmd = |args: &[&str]| {
        let mut c = k.cmd();
        c.env("DOCKER_CONFIG", &docker_config)
            .env("REGISTRY_AUTH_FILE", docker_config.join("auth.json"))
            .args(args);
        c
    };
    let url = format!("{}#main", h.url("repo.git"));
    // Without a credential: git gets 401 and does not prompt; the error names the URL.
    let out = cmd(&["build", &url]).stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("cannot fetch `{}` at main", h.url("repo.git"))),
        "{err}"
    );
    // `kiln login HOST` stores the credential; the build uses it.
    let mut login = cmd(&["login", &h.host(), "-u", "ci", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    login
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    let out = login.wait_with_output().unwrap();
    crate::support::assert_success(&out, &"kiln login");
    let layout = k.path("layout");
    let o = format!("type=oci,dest={},tar=false", layout.display());
    let out = cmd(&["build", &url, "-o", &o]).output().unwrap();
    crate::support::assert_success(&out, &"build with the stored credential");
    // `ADD --keep-git-dir` of the same repository: the kept `.git/config` names the remote
    // without userinfo.
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nADD --keep-git-dir=true {url} /kept\n"),
    )
    .unwrap();
    let rootfs = k.path("rootfs");
    let o = format!("type=local,dest={}", rootfs.display());
    let out = cmd(&["build", ctx.to_str().unwrap(), "-o", &o])
        .output()
        .unwrap();
    crate::support::assert_success(&out, &"ADD --keep-git-dir with the stored credential");
    let config = read(&rootfs.join("kept/.git/config"));
    assert!(config.contains(&h.url("repo.git")), "{config}");
    assert!(
        !config.contains(token) && !config.contains("ci@"),
        "{config}"
    );
    let layout2 = k.path("layout2");
    let o = format!("type=oci,dest={},tar=false", layout2.display());
    let out = cmd(&["build", ctx.to_str().unwrap(), "-o", &o])
        .output()
        .unwrap();
    crate::support::assert_success(&out, &"ADD again");
    // No blob (config, manifest, layer: decompressed) holds the token.
    for f in git::files(&layout).into_iter().chain(git::files(&layout2)) {
        let bytes = std::fs::read(&f).unwrap();
        let mut plain = Vec::new();
        if bytes.starts_with(&[0x1f, 0x8b]) {
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut plain)
                .unwrap();
        } else {
            plain = bytes;
        }
        assert!(
            !String::from_utf8_lossy(&plain).contains(token),
            "{} holds the token",
            f.display()
        );
    }
}

#[test]
fn dockerfile_from_stdin_and_contexts_from_stdin() {
    let k = Kiln::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(ctx.join("d")).unwrap();
    std::fs::write(ctx.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(ctx.join("d/b.txt"), "beta\n").unwrap();
    let run = |args: &[&str], stdin: &[u8]| {
        let mut c = k.cmd();
        c.arg("build")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut i = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let w = std::thread::spawn(move || {
            let _ = i.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        w.join().unwrap();
        out
    };
    let local = |name: &str| format!("type=local,dest={}", k.path(name).display());
    // -f -: the Dockerfile from stdin, the context from the path.
    let out = run(
        &["-f", "-", ctx.to_str().unwrap(), "-o", &local("f")],
        b"FROM scratch\nCOPY a.txt /\n",
    );
    crate::support::assert_success(&out, &"-f -");
    assert_eq!(read(&k.path("f/a.txt")), "alpha\n");
    // -: a tar context, plain and gzip.
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_dir_all(".", &ctx).unwrap();
    let df = b"FROM scratch\nCOPY d/b.txt /b.txt\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(df.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    tar.append_data(&mut h, "Dockerfile", &df[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let out = run(&["-", "-o", &local("t")], &tar);
    crate::support::assert_success(&out, &"- (tar)");
    assert_eq!(read(&k.path("t/b.txt")), "beta\n");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let out = run(&["-", "-o", &local("g")], &gz.finish().unwrap());
    crate::support::assert_success(&out, &"- (gzip tar)");
    assert_eq!(read(&k.path("g/b.txt")), "beta\n");
    // -: a bare Dockerfile, with an empty context.
    let out = run(&["-", "-o", &local("df")], b"FROM scratch\nLABEL a=b\n");
    crate::support::assert_success(&out, &"- (Dockerfile)");
    let out = run(&["-"], b"FROM scratch\nCOPY a.txt /\n");
    assert!(
        !out.status.success(),
        "the context of a bare Dockerfile is empty"
    );
    // A hostile tar: a member outside the context is refused.
    let mut evil = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../escape.txt");
    h.set_cksum();
    evil.append(&h, &b"bad"[..]).unwrap();
    let out = run(&["-"], &evil.into_inner().unwrap());
    assert!(!out.status.success());
    assert!(!k.dir.path().join("escape.txt").exists());
    assert!(String::from_utf8_lossy(&out.stderr).contains("<stdin>"));
    // Both on stdin is refused.
    let out = run(&["-f", "-", "-"], b"");
    assert!(String::from_utf8_lossy(&out.stderr).contains("both read stdin"));
}

#[test]
fn add_a_git_url_with_and_without_keep_git_dir_cached_by_commit() {
    if !git::available() {
        return;
    }
    let k = Kiln::new();
    let (work, _) = sample(&k);
    let served = k.path("served");
    std::fs::create_dir_all(&served).unwrap();
    let bare_repo = served.join("repo.git");
    bare(&work, &bare_repo);
    let d = Daemon::start(&served);
    let url = d.url("repo.git");
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nADD --keep-git-dir {url}#v1.2.0:app /kept/\nADD {url}#main /src\n"),
    )
    .unwrap();
    let meta = k.path("meta.json");
    let build = |name: &str| {
        let dest = k.path(name);
        let o = format!("type=local,dest={}", dest.display());
        k.ok(&[
            "build",
            ctx.to_str().unwrap(),
            "-o",
            &o,
            "--metadata-file",
            meta.to_str().unwrap(),
        ]);
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        let cached: Vec<bool> = m["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["cached"].as_bool().unwrap())
            .collect();
        (dest, cached)
    };
    let (dest, cached) = build("one");
    assert_eq!(cached, [false, false]);
    assert_eq!(read(&dest.join("src/top.txt")), "top v1\n");
    assert!(
        !dest.join("src/.git").exists(),
        ".git without --keep-git-dir"
    );
    assert_eq!(read(&dest.join("kept/hello.txt")), "hello\n");
    // With `:subdir` the kept `.git` is the repository's, above the subdirectory: not copied.
    assert!(!dest.join("kept/.git").exists());
    let (_, cached) = build("two");
    assert_eq!(cached, [true, true], "the same commits are cache hits");
    // The branch moves: its ADD rebuilds, the tag's is still a hit.
    commit(&work, &[("top.txt", "top v2\n")], "second");
    git::push(&work, &bare_repo);
    let (dest, cached) = build("three");
    assert_eq!(cached, [true, false]);
    assert_eq!(read(&dest.join("src/top.txt")), "top v2\n");

    // --keep-git-dir of the whole repository keeps `.git`, at the fetched commit.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nADD --keep-git-dir {url}#v1.2.0 /kept\n"),
    )
    .unwrap();
    let (dest, _) = build("four");
    assert!(dest.join("kept/.git/HEAD").is_file());
    assert_eq!(
        read(&dest.join("kept/.git/config"))
            .matches("url = ")
            .count(),
        1
    );
    let head = read(&dest.join("kept/.git/HEAD"));
    let tag = git::git(&work, &["rev-parse", "v1.2.0^{commit}"]);
    assert_eq!(head.trim(), tag);

    // `--checksum` of a git source is the commit.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nADD --checksum={tag} {url}#v1.2.0 /src\n"),
    )
    .unwrap();
    build("five");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nADD --checksum=0000000 {url}#v1.2.0 /src\n"),
    )
    .unwrap();
    let (code, err) = k.fails(&["build", ctx.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("expected commit `0000000`"), "{err}");

    // A Dockerfile cannot ADD a repository on the builder's disk through file://.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nADD file://{} /x\n", work.display()),
    )
    .unwrap();
    let (code, _) = k.fails(&["build", ctx.to_str().unwrap()]);
    assert_eq!(code, 1);
}

#[test]
fn build_contexts_replace_from_and_copy_from() {
    if !git::available() {
        return;
    }
    let Some(reg) =
        crate::support::registry::Registry::start(crate::support::registry::Mode::Plain)
    else {
        return;
    };
    let k = Kiln::new();
    let (work, _) = sample(&k);
    // A base image, pushed to the test registry and written as an OCI layout.
    let base = k.path("base");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("Dockerfile"), "FROM scratch\nCOPY x /x\n").unwrap();
    std::fs::write(base.join("x"), "from the base\n").unwrap();
    let pushed = format!("{}/it/base:1", reg.addr);
    let layout = k.path("layout");
    let o = format!("type=oci,dest={},tar=false", layout.display());
    let digest = k.ok(&[
        "build",
        base.to_str().unwrap(),
        "-t",
        &pushed,
        "--push",
        "-o",
        &o,
    ]);
    let digest = digest.trim();
    let files = k.path("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("f.txt"), "a named dir\n").unwrap();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM alpine\nCOPY --from=files f.txt /f.txt\nCOPY --from=repo top.txt /top.txt\n",
    )
    .unwrap();
    let repo = format!("file://{}#v1.2.0", work.display());
    let meta = k.path("meta.json");
    // A new store each time: the base comes from the named context, not a name it holds.
    let build = |base_ctx: &str, name: &str| {
        let k2 = Kiln::new();
        let dest = k.path(name);
        let o = format!("type=local,dest={}", dest.display());
        k2.ok(&[
            "build",
            ctx.to_str().unwrap(),
            "--build-context",
            &format!("alpine={base_ctx}"),
            "--build-context",
            &format!("files={}", files.display()),
            "--build-context",
            &format!("repo={repo}"),
            "-o",
            &o,
            "--metadata-file",
            meta.to_str().unwrap(),
        ]);
        assert_eq!(read(&dest.join("x")), "from the base\n");
        assert_eq!(read(&dest.join("f.txt")), "a named dir\n");
        assert_eq!(read(&dest.join("top.txt")), "top v1\n");
    };
    build(&format!("docker-image://{pushed}"), "image");
    build(&format!("oci-layout://{}", layout.display()), "layout");
    build(
        &format!("oci-layout://{}@{digest}", layout.display()),
        "digest",
    );
    // A named directory's content is in the cache key.
    let k3 = Kiln::new();
    let run = |k: &Kiln| {
        k.ok(&[
            "build",
            ctx.to_str().unwrap(),
            "--build-context",
            &format!("alpine=oci-layout://{}", layout.display()),
            "--build-context",
            &format!("files={}", files.display()),
            "--build-context",
            &format!("repo={repo}"),
            "--metadata-file",
            meta.to_str().unwrap(),
        ]);
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        m["steps"][0]["cached"].as_bool().unwrap()
    };
    assert!(!run(&k3));
    assert!(run(&k3));
    std::fs::write(files.join("f.txt"), "changed\n").unwrap();
    assert!(!run(&k3), "a changed named directory rebuilds");
    // A directory is not a base image; a bad value is named.
    std::fs::write(ctx.join("Dockerfile"), "FROM files\n").unwrap();
    let (_, err) = k3.fails(&[
        "build",
        ctx.to_str().unwrap(),
        "--build-context",
        &format!("files={}", files.display()),
    ]);
    assert!(err.contains("COPY --from=files only"), "{err}");
    let (code, err) = k3.fails(&[
        "build",
        ctx.to_str().unwrap(),
        "--build-context",
        "x=/nonexistent",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--build-context x: `/nonexistent`"), "{err}");
}
