//! `kiln build` as a `docker buildx build` user types it: `-o` in buildx's syntax (image files,
//! the root filesystem as a directory or a tar), `-q`, `--progress` modes, buildx flags kiln
//! lacks answered with what to use, names inside archives as containerd reads them (a real
//! containerd: `ctr images import`, `ctr run`), and input refused before the build starts.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::support::containerd::Containerd;
use crate::support::runas::{layer_entries, KilnAs, TarEntry, Who};
use crate::support::{assert_success, Kiln};

/// A base with a file the next step deletes (a whiteout in the RUN layer) and a file given to
/// 1000:1000.
const ROOTFS_DOCKERFILE: &str = "FROM busybox\n\
COPY gone /gone\n\
COPY keep /keep\n\
RUN rm /gone && mkdir -p /x && echo y > /x/y && chown 1000:1000 /x/y\n\
RUN mkdir /ro && echo s > /ro/secret && chmod 000 /ro/secret && chmod 555 /ro\n";

fn entries(tar: &Path) -> BTreeMap<String, TarEntry> {
    layer_entries(&std::fs::read(tar).unwrap())
        .into_iter()
        .map(|e| (e.path.trim_end_matches('/').to_string(), e))
        .collect()
}

fn rootfs_outputs(who: Who) {
    let Some(k) = KilnAs::new(who) else { return };
    if !k.busybox() {
        return;
    }
    let ctx = k.context(
        "ctx",
        ROOTFS_DOCKERFILE,
        &[("gone", b"gone\n"), ("keep", b"keep\n")],
    );
    let dir = k.path("out/rootfs");
    let bare = k.path("out/bare");
    let tar = k.path("out/rootfs.tar");
    let printed = k.ok(&[
        "build",
        ctx.to_str().unwrap(),
        "-t",
        "rootfs-test",
        "-o",
        &format!("type=local,dest={}", dir.display()),
        "-o",
        &format!("type=tar,dest={}", tar.display()),
        "-o",
        bare.to_str().unwrap(),
    ]);
    assert!(printed.trim().starts_with("sha256:"), "{printed}");
    for d in [&dir, &bare] {
        assert!(
            !d.join("gone").exists(),
            "{who:?}: the whiteout was not applied in {d:?}"
        );
        assert_eq!(std::fs::read(d.join("keep")).unwrap(), b"keep\n");
        assert_eq!(std::fs::read(d.join("x/y")).unwrap(), b"y\n");
        assert!(
            d.join("bin/busybox").is_file(),
            "{who:?}: the base's files are in {d:?}"
        );
    }
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(dir.join("x/y")).unwrap().uid();
    match who {
        // As root the layers' owners are set; rootless, the files are the caller's, as
        // BuildKit's local exporter leaves them.
        Who::Root => assert_eq!(owner, 1000),
        Who::User => assert_eq!(owner, std::fs::metadata(k.path("out")).unwrap().uid()),
    }
    let e = entries(&tar);
    assert!(
        !e.contains_key("gone"),
        "{who:?}: the tar has the deleted file"
    );
    assert!(
        !e.keys().any(|p| p.contains(".wh.")),
        "{who:?}: a whiteout in the tar"
    );
    let y = &e["x/y"];
    assert_eq!(
        (y.uid, y.gid),
        (1000, 1000),
        "{who:?}: the tar keeps the layers' owners"
    );
    assert_eq!((e["keep"].uid, e["bin/busybox"].uid), (0, 0));
    assert_eq!(e["bin/sh"].kind, 'l', "symlinks stay symlinks");
    // Modes as the layers give them, even those the caller could not read or write through.
    assert_eq!(
        (e["ro"].mode & 0o7777, e["ro/secret"].mode & 0o7777),
        (0o555, 0)
    );
    assert!(
        !std::fs::read_dir(k.path("out")).unwrap().any(|d| d
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".kiln-rootfs-")),
        "{who:?}: the temporary tree was left behind"
    );
}

#[test]
fn output_local_and_tar_export_the_merged_root_filesystem_as_root() {
    rootfs_outputs(Who::Root);
}

#[test]
fn output_local_and_tar_export_the_merged_root_filesystem_as_unprivileged_user() {
    rootfs_outputs(Who::User);
}

fn scratch_context(k: &Kiln) -> std::path::PathBuf {
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY a /a\n").unwrap();
    std::fs::write(ctx.join("a"), "a\n").unwrap();
    ctx
}

/// The manifest annotations of the image `name` in `k`'s store (copied to an OCI layout, its
/// manifest blob read).
fn manifest_annotations(k: &Kiln, name: &str) -> serde_json::Value {
    let dir = k.path(&format!(
        "ann-{}",
        crate::support::sha256_hex(name.as_bytes())
    ));
    k.ok(&["copy", name, &format!("oci:{}:x", dir.display())]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap();
    m["annotations"].clone()
}

#[test]
fn output_buildx_image_forms_write_archives_layouts_and_names() {
    let k = Kiln::new();
    let ctx = scratch_context(&k);
    let oci = k.path("img.oci.tar");
    let layout = k.path("layout");
    let docker = k.path("img.docker.tar");
    let digest = k.ok(&[
        "build",
        ctx.to_str().unwrap(),
        "-t",
        "kiln.local/example:1",
        "-o",
        &format!("type=oci,dest={}", oci.display()),
        "-o",
        &format!(
            "type=oci,dest={},tar=false,name=reg.example/other:2,annotation.org.example.k=v",
            layout.display()
        ),
        "-o",
        &format!("type=docker,dest={}", docker.display()),
        "-o",
        "type=image,name=kiln.local/also:3",
    ]);
    let digest = digest.trim();
    // skopeo reads what kiln wrote: the OCI archive by the tag its index entry carries, the
    // docker-archive with its RepoTags.
    if crate::support::need("skopeo") {
        let raw = crate::support::run(Command::new("skopeo").args([
            "inspect",
            "--raw",
            &format!("oci-archive:{}:1", oci.display()),
        ]));
        assert_eq!(
            format!("sha256:{}", crate::support::sha256_hex(raw.as_bytes())),
            digest
        );
        crate::support::run(
            Command::new("skopeo")
                .args(["inspect", &format!("docker-archive:{}", docker.display())]),
        );
    }
    let mut archive = tar::Archive::new(std::fs::File::open(&docker).unwrap());
    let manifest: serde_json::Value = archive
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.path().unwrap().to_str() == Some("manifest.json"))
        .map(|e| serde_json::from_reader(e).unwrap())
        .unwrap();
    assert_eq!(
        manifest[0]["RepoTags"][0], "kiln.local/example:1",
        "{manifest}"
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let a = &index["manifests"][0]["annotations"];
    assert_eq!(a["io.containerd.image.name"], "reg.example/other:2");
    assert_eq!(a["org.opencontainers.image.ref.name"], "2");
    // annotation.KEY= annotates the manifest, so every output (and the store) has it.
    assert_eq!(
        manifest_annotations(&k, "kiln.local/example:1")["org.example.k"],
        "v"
    );
    let images = k.ok(&["images"]);
    assert!(images.contains("kiln.local/also:3"), "{images}");
    // The layout is read back by its full name, as containerd names it.
    k.ok(&[
        "copy",
        &format!("oci:{}:reg.example/other:2", layout.display()),
        "back:1",
    ]);
}

#[test]
fn output_keys_kiln_does_not_support_fail_before_the_build() {
    let k = Kiln::new();
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    // A build that ran would fail at this step with exit 1; refused up front, the exit is 2.
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY missing /m\n").unwrap();
    let c = ctx.to_str().unwrap();
    let x = k.path("x.tar");
    let x = x.to_str().unwrap();
    let o = |rest: &str| format!("type=oci,dest={x},{rest}");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["-o".into(), o("push-by-digest=true")],
            "`push-by-digest` is not supported by kiln",
        ),
        (
            vec!["-o".into(), o("force-compression=true")],
            "force-compression=true is not supported by kiln",
        ),
        (
            vec!["-o".into(), o("frobnicate=1")],
            "`frobnicate` is not a key of type=oci",
        ),
        (
            vec!["-o".into(), "type=docker".into()],
            "give dest=FILE and run `docker load -i FILE`",
        ),
        (
            vec!["-o".into(), "type=nope,dest=x".into()],
            "unknown output type `nope`",
        ),
        (
            vec!["-o".into(), "type=registry".into()],
            "needs a name: add name=REF or -t REF",
        ),
        (
            vec!["-o".into(), "type=tar,dest=/nonexistent-dir/x.tar".into()],
            "the directory `/nonexistent-dir` does not exist",
        ),
        (vec!["-t".into(), "Foo/Bar".into()], "-t `Foo/Bar`"),
        (
            vec!["--push".into()],
            "--push needs a name to push to: add -t REF",
        ),
        (
            vec!["-o".into(), "type=image,name=Bad/Name".into()],
            "name `Bad/Name`",
        ),
        (
            vec!["--annotation".into(), "index:k=v".into()],
            "index annotations not supported for single platform export",
        ),
        (
            vec!["--annotation".into(), "bogus:k=v".into()],
            "unknown annotation type `bogus`",
        ),
        (
            vec!["-o".into(), o("rewrite-timestamp=true")],
            "needs an epoch",
        ),
    ];
    for (args, said) in cases {
        let mut all = vec!["build", c];
        all.extend(args.iter().map(String::as_str));
        let (code, err) = k.fails(&all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(said), "{args:?}: expected `{said}` in:\n{err}");
        assert!(!err.contains("missing"), "{args:?}: the build ran:\n{err}");
    }
}

#[test]
fn annotation_prefixes_are_read_as_buildx_reads_them() {
    let k = Kiln::new();
    let ctx = scratch_context(&k);
    let host = kiln::oci::Platform::host().to_string();
    let other = if host == "linux/s390x" {
        "linux/ppc64le"
    } else {
        "linux/s390x"
    };
    k.ok(&[
        "build",
        ctx.to_str().unwrap(),
        "-t",
        "ann",
        "--annotation",
        "manifest:org.example.a=1",
        "--annotation",
        &format!("manifest[{host}]:org.example.b=2"),
        "--annotation",
        &format!("manifest[{other}]:org.example.c=3"),
        "--annotation",
        "org.example.d=4",
    ]);
    let a = manifest_annotations(&k, "ann");
    assert_eq!(a["org.example.a"], "1", "{a}");
    assert_eq!(a["org.example.b"], "2", "{a}");
    assert!(a.get("org.example.c").is_none(), "another platform's: {a}");
    assert_eq!(a["org.example.d"], "4", "{a}");
    assert!(a.get("manifest:org.example.a").is_none(), "{a}");
}

#[test]
fn buildx_flags_kiln_lacks_say_so_and_what_to_use() {
    let k = Kiln::new();
    let ctx = scratch_context(&k);
    let c = ctx.to_str().unwrap();
    for (flag, use_) in [
        (vec!["--load"], "-o type=docker,dest=FILE"),
        (vec!["--builder", "mybuilder"], "remove `--builder`"),
        (vec!["--shm-size", "2g"], "/dev/shm"),
    ] {
        let mut args = vec!["build", c];
        args.extend(flag.iter().copied());
        let (code, err) = k.fails(&args);
        assert_eq!(code, 2, "{flag:?}");
        assert!(err.contains("is not supported by kiln"), "{flag:?}: {err}");
        assert!(err.contains(use_), "{flag:?}: {err}");
        assert!(!err.contains("as a value"), "{flag:?}: clap's hint: {err}");
    }
}

fn kiln_progress(k: &Kiln, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.arg("--root").arg(k.root()).args(args);
    c.env_remove("SOURCE_DATE_EPOCH").env_remove("KILN_ROOT");
    c.output().unwrap()
}

#[test]
fn quiet_prints_only_the_digest_and_progress_modes_follow_buildx() {
    let k = Kiln::new();
    let ctx = scratch_context(&k);
    let c = ctx.to_str().unwrap();
    let out = kiln_progress(&k, &["--progress", "plain", "build", "-q", c, "--no-cache"]);
    assert_success(&out, &"build -q");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("sha256:") && stdout.lines().count() == 1,
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("COPY"), "-q shows no steps:\n{stderr}");
    for mode in ["rawjson", "json"] {
        let out = kiln_progress(&k, &["--progress", mode, "build", c, "--no-cache"]);
        assert_success(&out, &mode);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.trim().is_empty(), "{mode}");
        for line in stderr.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{mode}: `{line}` is not JSON: {e}"));
        }
    }
    // `tty` on a pipe: no escape codes.
    let out = kiln_progress(&k, &["--progress", "tty", "build", c, "--no-cache"]);
    assert_success(&out, &"tty");
    assert!(!out.stderr.contains(&0x1b), "escape codes on a pipe");
}

/// Builds a busybox image named `kiln.local/example:latest` whose CMD prints a line; writes it
/// with `-o oci-archive:`, `-o type=docker,dest=` and through `kiln copy`.
#[test]
fn containerd_imports_archives_by_the_names_kiln_writes_and_runs_them() {
    let Some(ctd) = Containerd::start() else {
        return;
    };
    let Some(k) = KilnAs::new(Who::Root) else {
        return;
    };
    if !k.busybox() {
        return;
    }
    let ctx = k.context(
        "ctx",
        "FROM busybox\nCMD [\"/bin/echo\", \"hello from kiln\"]\n",
        &[],
    );
    let oci = k.path("out/oci.tar");
    let docker = k.path("out/docker.tar");
    k.ok(&[
        "build",
        ctx.to_str().unwrap(),
        "-t",
        "kiln.local/example:latest",
        "-o",
        &format!("oci-archive:{}", oci.display()),
        "-o",
        &format!("type=docker,dest={}", docker.display()),
    ]);
    k.ok(&["copy", "busybox", "kiln.local/example:copied"]);
    k.ok(&[
        "copy",
        "kiln.local/example:copied",
        &format!("oci-archive:{}", k.path("out/copied2.tar").display()),
    ]);
    let printed = ctd.import(&oci);
    assert!(printed.contains("kiln.local/example:latest"), "{printed}");
    assert!(ctd
        .names()
        .contains(&"kiln.local/example:latest".to_string()));
    let out = ctd.ctr(&["run", "--rm", "kiln.local/example:latest", "kiln-it-run"]);
    assert_success(&out, &"ctr run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from kiln"
    );
    assert_success(
        &ctd.ctr(&["images", "rm", "kiln.local/example:latest"]),
        &"rm",
    );
    ctd.import(&docker);
    assert!(ctd
        .names()
        .contains(&"kiln.local/example:latest".to_string()));
    ctd.import(&k.path("out/copied2.tar"));
    assert!(
        ctd.names()
            .contains(&"kiln.local/example:copied".to_string()),
        "{:?}",
        ctd.names()
    );
}

#[test]
fn input_errors_name_the_object_and_change_nothing() {
    let k = Kiln::new();
    let ctx = scratch_context(&k);
    k.ok(&["build", ctx.to_str().unwrap(), "-t", "q"]);
    // `kiln copy` reads its destination strictly: `foo:/tmp/x` is no store name.
    let (code, err) = k.fails(&["copy", "q", "foo:/tmp/x"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`foo:` is not a transport kiln knows"),
        "{err}"
    );
    let images = k.ok(&["images"]);
    assert!(!images.contains("foo"), "{images}");
    // A missing context is reported as a missing context (exit 1, as a failed build).
    let missing = k.path("no-such-context");
    let (code, err) = k.fails(&["build", missing.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("build context directory") && !err.contains("Dockerfile"),
        "{err}"
    );
    // A misspelt stage in `COPY --from` is read as an image, as BuildKit reads it; the error
    // names the stage it was probably meant to be.
    let typo = k.path("typo");
    std::fs::create_dir_all(&typo).unwrap();
    std::fs::write(
        typo.join("Dockerfile"),
        "FROM scratch AS builder\nCOPY Dockerfile /d\nFROM scratch\nCOPY --from=buidler /d /d\n",
    )
    .unwrap();
    let (code, err) = k.fails(&["build", typo.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(":4:1: cannot use image `buidler`")
            && err.contains("did you mean the stage `builder`?"),
        "{err}"
    );
}

#[test]
fn a_registry_401_says_whether_to_log_in_or_fix_the_credentials() {
    use crate::support::registry::{Mode, Registry};
    let Some(reg) = Registry::start(Mode::BasicTls {
        user: "kilnuser".into(),
        password: "s3cr3t-pw".into(),
    }) else {
        return;
    };
    let k = Kiln::new();
    let ctx = scratch_context(&k);
    k.ok(&["build", ctx.to_str().unwrap(), "-t", "img"]);
    let certs = k.path("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(reg.ca_file.as_ref().unwrap(), certs.join("ca.crt")).unwrap();
    let docker_config = k.path("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    let push = || {
        let out = k
            .cmd()
            .env("DOCKER_CONFIG", &docker_config)
            .env_remove("REGISTRY_AUTH_FILE")
            .env("XDG_RUNTIME_DIR", k.path("no-runtime-dir"))
            .args(["--cert-dir", certs.to_str().unwrap(), "push", "img"])
            .arg(format!("{}/team/img:1", reg.addr))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = push();
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.starts_with(&format!(
            "error: no credentials for {0}: run `kiln login {0}`",
            reg.addr
        )),
        "{err}"
    );
    assert!(err.contains("401"), "the registry's answer follows: {err}");
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode("kilnuser:wrong-password");
    std::fs::write(
        docker_config.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let (code, err) = push();
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.starts_with(&format!(
            "error: credentials for {} were rejected",
            reg.addr
        )),
        "{err}"
    );
    assert!(!err.contains("wrong-password"), "{err}");
}

#[test]
fn completions_version_and_per_command_help() {
    let k = Kiln::new();
    // bash loads the script and registers the completion function.
    let script = k.path("kiln.bash");
    std::fs::write(&script, k.ok(&["completions", "bash"])).unwrap();
    let registered = crate::support::run(
        Command::new("bash")
            .arg("-c")
            .arg(format!("source {} && complete -p kiln", script.display())),
    );
    assert!(registered.contains("-F _kiln kiln"), "{registered}");
    for (shell, marker) in [("zsh", "#compdef kiln"), ("fish", "complete -c kiln")] {
        let text = k.ok(&["completions", shell]);
        assert!(text.contains(marker), "{shell}: {text}");
        assert!(text.contains("build"), "{shell}");
    }
    let (code, _) = k.fails(&["completions", "tcsh"]);
    assert_eq!(code, 2);
    // The version names the commit and a date.
    let version = k.ok(&["--version"]);
    let re = regex::Regex::new(r"^kiln \d+\.\d+\.\d+ \(commit ([0-9a-f]{12}|unknown), built (\d{4}-\d{2}-\d{2}|unknown)\)\n$").unwrap();
    assert!(re.is_match(&version), "{version}");
    // Each command's help lists the global flags it reads, not the others (still accepted).
    let help = |cmd: &[&str]| {
        let mut args = cmd.to_vec();
        args.push("--help");
        k.ok(&args)
    };
    let login = help(&["login"]);
    assert!(
        !login.contains("--jobs") && !login.contains("--chunk-size"),
        "{login}"
    );
    assert!(login.contains("--tls-verify"), "{login}");
    let parse = help(&["parse"]);
    for flag in ["--jobs", "--tls-verify", "--root", "--progress"] {
        assert!(!parse.contains(flag), "parse --help lists {flag}:\n{parse}");
    }
    assert!(!help(&["store", "gc"]).contains("--jobs"));
    let push = help(&["push"]);
    assert!(push.contains("--jobs") && push.contains("--root"), "{push}");
    let build = help(&["build"]);
    assert!(
        build.contains("--output") && build.contains("--jobs"),
        "{build}"
    );
    k.ok(&["images", "--jobs", "2"]);
}
