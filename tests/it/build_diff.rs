//! Differential tests: `kiln build` against `buildah bud` (1.28) for Dockerfiles without RUN.
//!
//! Each case is a folder of `fixtures/build/` (a Dockerfile whose top comment says what it checks,
//! and a small context). The test copies the folder to a temp context (modes normalised to 0644 /
//! 0755 so the checkout's umask does not matter, plus whatever git cannot store: hard links,
//! setuid bits, tarballs), builds it with both tools on the same busybox base (made once per test
//! process with `kiln import`, passed to both as `--build-arg BASE=oci-archive:…`), unpacks both
//! images with umoci and compares:
//! - the root filesystems: path, type, mode, uid, gid, size, content, link target, hard links;
//! - the config fields Env, Cmd, Entrypoint, User, WorkingDir, ExposedPorts, Volumes, Labels,
//!   StopSignal, Healthcheck, OnBuild, Shell (empty values count as absent: buildah's docker format
//!   writes `[]` and `{}` where BuildKit writes nothing).
//!
//! BuildKit's semantics are the oracle (/work/shared/DOCKERFILE-SEMANTICS.md). Each test also
//! asserts the BuildKit result explicitly. Where buildah 1.28 differs from BuildKit, the
//! difference is listed in the test as a `Known` entry with the reason, and the comparison requires
//! exactly those differences, so a change on either side is noticed.
//!
//! Differences common to every case, asserted by `compare`:
//! - buildah adds the label `io.buildah.version`; kiln does not (BuildKit adds no label).
//!
//! Where buildah 1.28 differs from BuildKit (each asserted in its test, buildah's value included):
//! - `setuid`: buildah strips setuid/setgid bits of build-context files (containers/buildah#2498);
//!   BuildKit keeps them.
//! - `expose_volume`: buildah keeps `EXPOSE 53/UDP` and `8000-8002` as written; BuildKit
//!   lower-cases the protocol and expands ranges.
//! - `env_arg`, `onbuild`: ENV of an existing key: buildah moves it to the end of Env; BuildKit
//!   replaces it in place. `ARG X` after `ENV X`: buildah expands the ENV value; BuildKit the ARG.
//! - `shell`: buildah wraps shell-form CMD/ENTRYPOINT with /bin/sh -c whatever SHELL says.
//! - `dest_symlink`: COPY onto a symlink to a file: buildah replaces the link; BuildKit writes
//!   through it.
//! - `json_form`, `archive_implied_parents`: ADD --chown of an archive: buildah keeps the
//!   archive's owners and chowns the parents the archive implies; BuildKit chowns the listed
//!   entries and creates implied parents 0:0.
//! - `onbuild`, `healthcheck`, `shell`: buildah's OCI format drops OnBuild, Healthcheck and Shell,
//!   so these cases build with `--format docker`.
//! - Not comparable (kiln checked alone, buildah's failure asserted): mixed-case stage names,
//!   heredocs, `COPY --link/--parents/--exclude`.
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::buildah::{busybox_base, layout_image, umoci_unpack, Buildah};
use crate::support::{is_root, need, run, snapshot, Kiln, Meta};

/// Tools every case needs. Root is needed to unpack images with their owners and to build a base
/// with owned files; CI runs as root.
fn ready() -> bool {
    if !is_root() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the build differential tests must run as root in CI");
        }
        eprintln!("skipping: the build differential tests need root");
        return false;
    }
    need("buildah") && need("umoci") && need("busybox")
}

/// One case: a fixture folder and how to build it.
struct Case {
    name: &'static str,
    file: &'static str,
    args: Vec<(String, String)>,
    docker_format: bool,
    target: Option<&'static str>,
    ctx: tempfile::TempDir,
}

impl Case {
    fn new(name: &'static str) -> Case {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/build")
            .join(name);
        assert!(fixture.is_dir(), "{} is missing", fixture.display());
        let ctx = tempfile::Builder::new()
            .prefix(&format!("kiln-diff-{name}-"))
            .tempdir()
            .unwrap();
        copy_normalised(&fixture, ctx.path());
        Case {
            name,
            file: "Dockerfile",
            args: vec![(
                "BASE".into(),
                format!("oci-archive:{}", busybox_base().display()),
            )],
            docker_format: false,
            target: None,
            ctx,
        }
    }

    fn file(mut self, f: &'static str) -> Case {
        self.file = f;
        self
    }

    fn arg(mut self, k: &str, v: &str) -> Case {
        self.args.push((k.into(), v.into()));
        self
    }

    fn target(mut self, stage: &'static str) -> Case {
        self.target = Some(stage);
        self
    }

    fn docker_format(mut self) -> Case {
        self.docker_format = true;
        self
    }

    fn dir(&self) -> &Path {
        self.ctx.path()
    }

    /// Builds with buildah into `b`'s store as `localhost/kiln-diff/<tag>`, pushes it to an OCI
    /// layout and unpacks it.
    fn buildah(&self, b: &Buildah, tag: &str) -> Image {
        let name = format!("localhost/kiln-diff/{tag}:latest");
        b.bud(
            self.dir(),
            &self.dir().join(self.file),
            &name,
            &self.args,
            self.docker_format,
            self.target,
        );
        let work = tempfile::Builder::new()
            .prefix("kiln-diff-img-")
            .tempdir()
            .unwrap();
        let layout = work.path().join("layout");
        b.push_oci(&name, &layout, "buildah");
        let config = b.config(&name, self.docker_format);
        Image::unpack(work, layout, "buildah", Some(config), name)
    }

    /// Builds with `kiln build … -o oci:DIR:kiln` and unpacks the layout.
    fn kiln(&self, k: &Kiln, tag: &str) -> Image {
        let work = tempfile::Builder::new()
            .prefix("kiln-diff-img-")
            .tempdir()
            .unwrap();
        let layout = work.path().join("layout");
        let name = format!("kiln-diff/{tag}:latest");
        let mut args: Vec<String> = vec![
            "build".into(),
            self.dir().display().to_string(),
            "-f".into(),
            self.dir().join(self.file).display().to_string(),
            "-t".into(),
            name.clone(),
            "-o".into(),
            format!("oci:{}:kiln", layout.display()),
        ];
        for (k, v) in &self.args {
            args.push("--build-arg".into());
            args.push(format!("{k}={v}"));
        }
        if let Some(t) = self.target {
            args.push("--target".into());
            args.push(t.into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        k.ok(&args);
        Image::unpack(work, layout, "kiln", None, name)
    }
}

/// Copies a fixture folder with modes 0755 (directories, executables) or 0644 (other files).
fn copy_normalised(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let md = std::fs::symlink_metadata(&src).unwrap();
        if md.is_dir() {
            copy_normalised(&src, &dst);
        } else if md.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else {
            std::fs::copy(&src, &dst).unwrap();
            let mode = if md.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

/// A built image: manifest digest, config, unpacked root filesystem.
struct Image {
    tool: &'static str,
    name: String,
    digest: String,
    /// The `config` object of the image config.
    config: serde_json::Value,
    fs: BTreeMap<String, Meta>,
    rootfs: PathBuf,
    layout: PathBuf,
    _work: tempfile::TempDir,
}

impl Image {
    fn unpack(
        work: tempfile::TempDir,
        layout: PathBuf,
        tool: &'static str,
        config: Option<serde_json::Value>,
        name: String,
    ) -> Image {
        let (digest, full) = layout_image(&layout, tool);
        let bundle = work.path().join("bundle");
        umoci_unpack(&layout, tool, &bundle);
        let rootfs = bundle.join("rootfs");
        Image {
            tool,
            name,
            digest,
            config: config.unwrap_or_else(|| full["config"].clone()),
            fs: snapshot(&rootfs),
            rootfs,
            layout,
            _work: work,
        }
    }

    fn meta(&self, path: &str) -> &Meta {
        self.fs.get(path).unwrap_or_else(|| {
            let parent = path.rsplit_once('/').map(|x| x.0).unwrap_or("");
            let near: Vec<&String> = self
                .fs
                .keys()
                .filter(|p| {
                    p.starts_with(parent) && !p.starts_with("usr/") && !p.starts_with("bin/")
                })
                .take(40)
                .collect();
            panic!("{}: {path} is missing; nearby: {near:?}", self.tool)
        })
    }

    fn has(&self, path: &str) -> bool {
        self.fs.contains_key(path)
    }

    /// Asserts `path` is a regular file with `text`, `mode` and owner.
    fn file(&self, path: &str, text: &str, mode: u32, uid: u32, gid: u32) {
        let m = self.meta(path);
        assert_eq!(m.kind, "file", "{}: {path}: {m:?}", self.tool);
        assert_eq!(
            std::fs::read_to_string(self.rootfs.join(path)).unwrap(),
            text,
            "{}: {path}",
            self.tool
        );
        assert_eq!(
            (m.mode, m.uid, m.gid),
            (mode, uid, gid),
            "{}: {path}: (mode, uid, gid) = ({:o}, {}, {})",
            self.tool,
            m.mode,
            m.uid,
            m.gid
        );
    }

    /// Asserts `path` is a directory with `mode` and owner.
    fn dir(&self, path: &str, mode: u32, uid: u32, gid: u32) {
        let m = self.meta(path);
        assert_eq!(m.kind, "dir", "{}: {path}: {m:?}", self.tool);
        assert_eq!(
            (m.mode, m.uid, m.gid),
            (mode, uid, gid),
            "{}: {path}: (mode, uid, gid) = ({:o}, {}, {})",
            self.tool,
            m.mode,
            m.uid,
            m.gid
        );
    }

    /// Paths under `prefix` (relative to it), sorted.
    fn under(&self, prefix: &str) -> Vec<String> {
        let p = format!("{prefix}/");
        self.fs
            .keys()
            .filter_map(|k| k.strip_prefix(&p).map(str::to_string))
            .collect()
    }

    /// A config field, `Null` when absent or empty.
    fn cfg(&self, field: &str) -> serde_json::Value {
        normalise(&self.config[field])
    }
}

/// The config fields compared.
const FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "User",
    "WorkingDir",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
];

/// Empty strings, arrays and objects count as absent.
fn normalise(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) if s.is_empty() => Value::Null,
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Object(o) if o.is_empty() => Value::Null,
        other => other.clone(),
    }
}

/// A difference between kiln and buildah that is expected, with the reason.
struct Known {
    /// A path of the root filesystem, or `config.<Field>`.
    what: &'static str,
    why: &'static str,
}

/// Compares the two images. Every difference must be listed in `known` and every `known` entry
/// must be a difference. Also checks the differences common to all cases.
fn compare(k: &Image, b: &Image, known: &[Known]) {
    let mut diffs: BTreeMap<String, String> = BTreeMap::new();
    let paths: BTreeSet<&String> = k.fs.keys().chain(b.fs.keys()).collect();
    for p in paths {
        match (k.fs.get(p), b.fs.get(p)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => {
                diffs.insert(p.clone(), format!("kiln {x:?}\n   buildah {y:?}"));
            }
        }
    }
    // buildah's only addition to every config: its version label (deliberate; BuildKit adds none).
    let mut b_labels = b.config["Labels"].clone();
    assert!(
        b_labels
            .as_object_mut()
            .and_then(|o| o.remove("io.buildah.version"))
            .is_some(),
        "buildah no longer adds io.buildah.version: {}",
        b.config
    );
    assert!(
        k.config["Labels"].get("io.buildah.version").is_none(),
        "kiln must not add buildah's label"
    );
    for f in FIELDS {
        let bv = if *f == "Labels" {
            normalise(&b_labels)
        } else {
            b.cfg(f)
        };
        let kv = k.cfg(f);
        if kv != bv {
            diffs.insert(format!("config.{f}"), format!("kiln {kv}\n   buildah {bv}"));
        }
    }
    let want: BTreeSet<&str> = known.iter().map(|x| x.what).collect();
    let got: BTreeSet<&str> = diffs.keys().map(String::as_str).collect();
    let unexpected: Vec<String> = diffs
        .iter()
        .filter(|(p, _)| !want.contains(p.as_str()))
        .map(|(p, d)| format!("{p}:\n   {d}"))
        .collect();
    let vanished: Vec<String> = known
        .iter()
        .filter(|x| !got.contains(x.what))
        .map(|x| format!("{} ({})", x.what, x.why))
        .collect();
    assert!(
        unexpected.is_empty() && vanished.is_empty(),
        "kiln ({}) and buildah ({}) differ:\n{}\nexpected differences that did not occur:\n{}",
        k.name,
        b.name,
        unexpected.join("\n"),
        vanished.join("\n")
    );
}

/// Builds `case` with buildah (checked by `check`), then with kiln (checked by `check`), and
/// compares the two with `known` differences. Returns (kiln, buildah).
fn differential(case: &Case, check: impl Fn(&Image), known: &[Known]) -> (Image, Image) {
    let b = case.buildah(&Buildah::new(), case.name);
    check(&b);
    let k = case.kiln(&Kiln::new(), case.name);
    check(&k);
    compare(&k, &b, known);
    (k, b)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap()
}

fn env_has(img: &Image, entry: &str) -> bool {
    img.config["Env"]
        .as_array()
        .is_some_and(|a| a.iter().any(|e| e == entry))
}

// ---------------------------------------------------------------------------------------------
// The cases.

#[test]
fn multi_stage_builds_copy_from_a_named_stage_an_index_and_a_derived_stage() {
    if !ready() {
        return;
    }
    let case = Case::new("multi_stage");
    let check = |i: &Image| {
        i.file("app/a.txt", "alpha\n", 0o644, 0, 0);
        i.file("app/b.txt", "bravo\n", 0o644, 0, 0);
        i.file("app/sub/c.txt", "charlie\n", 0o644, 0, 0);
        // from "second", which is FROM build and added extra.txt
        i.file("app/extra.txt", "charlie\n", 0o644, 0, 0);
        i.file("from-index.txt", "alpha\n", 0o644, 0, 0);
        i.file("sub-by-name/c.txt", "charlie\n", 0o644, 0, 0);
        // The final stage is FROM the base: nothing of the other stages but what was copied.
        assert!(
            !i.has("out"),
            "{}: /out leaked into the final stage",
            i.tool
        );
        assert!(!env_has(i, "STAGE=build"), "{}: {}", i.tool, i.config);
        assert_eq!(i.cfg("Labels").get("stage"), None, "{}", i.tool);
        assert_eq!(i.cfg("Cmd"), json(r#"["cat","/app/a.txt"]"#));
    };
    differential(&case, check, &[]);
}

#[test]
fn chown_by_name_and_by_id_resolves_through_the_stage_passwd_and_group() {
    if !ready() {
        return;
    }
    let case = Case::new("chown");
    let check = |i: &Image| {
        i.file("names/user-group.txt", "owned\n", 0o644, 1000, 1002);
        // a user alone: that user's primary group
        i.file("names/user-only.txt", "owned\n", 0o644, 1000, 1000);
        i.file("names/web-only.txt", "owned\n", 0o644, 1001, 1002);
        i.file("ids/uid-gid.txt", "owned\n", 0o644, 1234, 5678);
        // a numeric uid alone: gid = uid
        i.file("ids/uid-only.txt", "owned\n", 0o644, 4321, 4321);
        i.file("ids/mixed.txt", "owned\n", 0o644, 1000, 1002);
        i.file("tree/one.txt", "one\n", 0o644, 1001, 1000);
        i.dir("tree/inner", 0o755, 1001, 1000);
        i.file("tree/inner/two.txt", "two\n", 0o644, 1001, 1000);
        i.file("new/parents/here/f.txt", "owned\n", 0o644, 1500, 1600);
    };
    // BuildKit creates missing destination directories with the --chown owner (fileop copy:
    // MkdirAll with the chown option); buildah 1.28 does the same.
    let check_dirs = |i: &Image| {
        check(i);
        for (dir, uid, gid) in [
            ("names", 1000, 1002),
            ("ids", 1234, 5678),
            ("tree", 1001, 1000),
            ("new", 1500, 1600),
            ("new/parents", 1500, 1600),
            ("new/parents/here", 1500, 1600),
        ] {
            i.dir(dir, 0o755, uid, gid);
        }
    };
    differential(&case, check_dirs, &[]);
}
#[test]
fn chmod_sets_octal_modes_on_files_and_copied_directories() {
    if !ready() {
        return;
    }
    let case = Case::new("chmod");
    let check = |i: &Image| {
        i.file("m/f640.txt", "data\n", 0o640, 0, 0);
        i.file("m/f0755.txt", "data\n", 0o755, 0, 0);
        i.file("m/run.sh", "#!/bin/sh\necho run\n", 0o600, 0, 0);
        i.file("m/kept.sh", "#!/bin/sh\necho run\n", 0o755, 0, 0);
        i.file("m/both.txt", "data\n", 0o444, 1000, 1000);
        i.file("tree/one.txt", "one\n", 0o750, 0, 0);
        i.file("tree/inner/two.txt", "two\n", 0o750, 0, 0);
        i.dir("tree/inner", 0o750, 0, 0);
        // --chmod applies to what is copied, not to the destination directory COPY creates
        // (fsutil's prepareTargetDir makes it 0755; the top directory's file info is not copied)
        i.dir("tree", 0o755, 0, 0);
    };
    differential(&case, check, &[]);
}

#[test]
fn dockerignore_applies_doublestar_patterns_and_exceptions() {
    if !ready() {
        return;
    }
    let case = Case::new("dockerignore");
    let check = |i: &Image| {
        let mut got = i.under("ctx");
        got.retain(|p| i.meta(&format!("ctx/{p}")).kind == "file");
        assert_eq!(
            got,
            [
                ".dockerignore",
                "docs/a/b/final.md",
                "docs/keep/draft-ok.md",
                "logs/deep/notes.txt",
                "logs/keep.log",
                "src/main.c",
                "src/y.tmp",
            ],
            "{}",
            i.tool
        );
    };
    differential(&case, check, &[]);
}

#[test]
fn a_dockerfile_specific_dockerignore_takes_precedence_over_dockerignore() {
    if !ready() {
        return;
    }
    let case = Case::new("dockerignore_per_dockerfile").file("build.Dockerfile");
    let check = |i: &Image| {
        assert_eq!(
            i.under("ctx"),
            [
                "README.md",
                "a",
                "a/file",
                "build.Dockerfile",
                "build.Dockerfile.dockerignore"
            ],
            "{}",
            i.tool
        );
    };
    differential(&case, check, &[]);
}

/// A tar archive with a directory, a file owned 1234:5678 (0640), a setuid file and a symlink.
fn tarball(prefix: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        b.append_data(&mut h, format!("{prefix}/{path}"), data)
            .unwrap();
    };
    add("", tar::EntryType::Directory, 0o755, b"", None);
    add(
        "file.txt",
        tar::EntryType::Regular,
        0o640,
        b"in the tar\n",
        None,
    );
    add("suid", tar::EntryType::Regular, 0o4755, b"suid\n", None);
    add(
        "link",
        tar::EntryType::Symlink,
        0o777,
        b"",
        Some("file.txt"),
    );
    b.into_inner().unwrap()
}

/// `tool -c` (xz, bzip2, zstd) over `data`.
fn compress(tool: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new(tool)
        .args(["-c", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "{tool} failed");
    out.stdout
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn add_extracts_plain_gzip_xz_bzip2_and_zstd_tarballs_found_by_content() {
    if !ready() {
        return;
    }
    let case = Case::new("add_tarball");
    std::fs::write(case.dir().join("plain.tar"), tarball("p")).unwrap();
    std::fs::write(case.dir().join("data.tar.gz"), gzip(&tarball("g"))).unwrap();
    std::fs::write(case.dir().join("payload.bin"), gzip(&tarball("b"))).unwrap();
    for (file, tool, prefix) in [
        ("data.tar.xz", "xz", "x"),
        ("data.tar.bz2", "bzip2", "j"),
        ("data.tar.zst", "zstd", "z"),
    ] {
        if !need(tool) {
            return;
        }
        std::fs::write(case.dir().join(file), compress(tool, &tarball(prefix))).unwrap();
    }
    std::fs::write(case.dir().join("text.gz"), gzip(b"just text\n")).unwrap();
    let text_gz_len = std::fs::metadata(case.dir().join("text.gz")).unwrap().len();
    let gz_len = std::fs::metadata(case.dir().join("data.tar.gz"))
        .unwrap()
        .len();
    let check = |i: &Image| {
        for dir in ["plain/p", "gz/g", "bin-named/b", "xz/x", "bz2/j", "zst/z"] {
            i.dir(dir, 0o755, 1234, 5678);
            // members keep their owners and modes
            i.file(
                &format!("{dir}/file.txt"),
                "in the tar\n",
                0o640,
                1234,
                5678,
            );
            i.file(&format!("{dir}/suid"), "suid\n", 0o4755, 1234, 5678);
            let l = i.meta(&format!("{dir}/link"));
            assert_eq!((l.kind, l.link.as_str()), ("symlink", "file.txt"));
        }
        i.file(
            "not/notatar.tar",
            "this is not a tar archive\n",
            0o644,
            0,
            0,
        );
        let t = i.meta("not/text.gz");
        assert_eq!(
            (t.kind, t.size),
            ("file", text_gz_len),
            "{}: text.gz",
            i.tool
        );
        let c = i.meta("copied/data.tar.gz");
        assert_eq!(
            (c.kind, c.size),
            ("file", gz_len),
            "{}: COPY extracted",
            i.tool
        );
    };
    differential(&case, check, &[]);
}

#[test]
fn globs_match_star_question_mark_and_classes_and_flatten_matched_directories() {
    if !ready() {
        return;
    }
    let case = Case::new("globs");
    let check = |i: &Image| {
        assert_eq!(i.under("star"), ["one.txt", "two.txt"], "{}", i.tool);
        // dir/* matches dir/a, dir/b.txt and dir/sub; a matched directory is copied by contents
        assert_eq!(i.under("dirstar"), ["a", "b.txt", "s.txt"], "{}", i.tool);
        assert_eq!(i.under("question"), ["file1.md", "file2.md"], "{}", i.tool);
        assert_eq!(
            i.under("class"),
            ["file1.md", "file2.md", "x.cfg"],
            "{}",
            i.tool
        );
    };
    differential(&case, check, &[]);
}

#[test]
fn copy_follows_the_directory_contents_and_trailing_slash_rules() {
    if !ready() {
        return;
    }
    let case = Case::new("dest_rules");
    for d in ["private", "private/sub"] {
        std::fs::set_permissions(case.dir().join(d), std::fs::Permissions::from_mode(0o700))
            .unwrap();
    }
    let check = |i: &Image| {
        assert_eq!(i.under("contents"), ["sub", "sub/y", "x"], "{}", i.tool);
        assert_eq!(
            i.under("contents-slash"),
            ["sub", "sub/y", "x"],
            "{}",
            i.tool
        );
        i.file("as-name", "a\n", 0o644, 0, 0);
        i.file("into-dir/a.txt", "a\n", 0o644, 0, 0);
        i.dir("into-dir", 0o755, 0, 0);
        i.file("deep/er/path/renamed.txt", "a\n", 0o644, 0, 0);
        i.dir("deep/er", 0o755, 0, 0);
        assert_eq!(i.under("multi"), ["a.txt", "b.txt"], "{}", i.tool);
        i.dir("private-contents/sub", 0o700, 0, 0);
        i.file("private-contents/p.txt", "p\n", 0o644, 0, 0);
        i.dir("etc", 0o755, 0, 0);
        i.dir("etc/sub", 0o700, 0, 0);
        i.file("etc/p.txt", "p\n", 0o644, 0, 0);
        // the directory receiving a directory's contents: created 0755, or left as it was
        i.dir("private-contents", 0o755, 0, 0);
    };
    differential(&case, check, &[]);
}

#[test]
fn copy_into_an_existing_base_directory_without_a_slash_goes_inside_it() {
    if !ready() {
        return;
    }
    let case = Case::new("existing_dir");
    let check = |i: &Image| {
        i.dir("etc", 0o755, 0, 0);
        i.file("etc/motd", "welcome\n", 0o644, 0, 0);
        i.file("etc/app.conf", "a=1\n", 0o644, 0, 0);
        i.file("etc/passwd", crate::support::buildah::PASSWD, 0o644, 0, 0);
        // the base's directory keeps its mode and owner
        i.dir("srv/www", 0o750, 1001, 1002);
        i.file("srv/www/index.html", "<h1>hi</h1>\n", 0o644, 0, 0);
        i.file("srv/www/app.conf", "a=1\n", 0o644, 0, 0);
    };
    differential(&case, check, &[]);
}

#[test]
fn workdir_is_created_and_relative_destinations_resolve_against_it() {
    if !ready() {
        return;
    }
    let case = Case::new("workdir");
    let check = |i: &Image| {
        i.file("app/sub/rel/a.txt", "a\n", 0o644, 0, 0);
        i.file("app/sub/a.txt", "a\n", 0o644, 0, 0);
        i.file("app/other/renamed.txt", "a\n", 0o644, 0, 0);
        i.dir("empty/never/used", 0o755, 0, 0);
        assert_eq!(i.cfg("WorkingDir"), "/srv", "{}", i.tool);
        assert_eq!(i.cfg("User"), "root", "{}", i.tool);
    };
    // BuildKit creates a WORKDIR given after USER owned by that user (dispatchWorkdir); so does
    // buildah 1.28.
    let check_owned = |i: &Image| {
        check(i);
        for d in ["owned", "owned/by", "owned/by/app"] {
            i.dir(d, 0o755, 1000, 1000);
        }
        i.dir("webdir", 0o755, 1001, 1002);
        i.dir("numeric", 0o755, 1500, 1600);
        // an existing directory is not re-created or re-owned
        i.dir("srv/www", 0o750, 1001, 1002);
    };
    differential(&case, check_owned, &[]);
}

#[test]
fn env_and_arg_follow_buildkit_precedence_and_expansion() {
    if !ready() {
        return;
    }
    let case = Case::new("env_arg").arg("FROMCLI", "from-cli");
    let check = |i: &Image| {
        let env: Vec<&str> = i.config["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        for e in [
            "FROMCLI_E=from-cli",
            "DEFAULTED_E=default-kept",
            "GLOBAL_E=global-default",
            "UNUSED_E=xx",
            "PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "X=new",
            "Y=old",
            "Z=fallback",
            "W=set",
            "OVERRIDDEN=env-value",
            // the config keeps the ENV value even though ARG SHADOWED came later
            "SHADOWED=env-value",
        ] {
            assert!(env.contains(&e), "{}: {e} not in {env:?}", i.tool);
        }
        // ARGs are never written to Env
        for a in ["FROMCLI=", "DEFAULTED=", "GLOBAL="] {
            assert!(
                !env.iter().any(|e| e.starts_with(a)),
                "{}: {a} in {env:?}",
                i.tool
            );
        }
        let l = i.cfg("Labels");
        assert_eq!(l["cli"], "from-cli", "{}", i.tool);
        assert_eq!(l["default"], "default-kept", "{}", i.tool);
        assert_eq!(l["overridden"], "env-value", "{}", i.tool);
        assert_eq!(l["global"], "global-default", "{}", i.tool);
        assert_eq!(i.cfg("WorkingDir"), "/w/default-kept", "{}", i.tool);
        i.file("from-cli/a.txt", "a\n", 0o644, 0, 0);
    };
    // ENV SHADOWED=env-value then ARG SHADOWED=arg-value: BuildKit expands ${SHADOWED} to the ARG
    // value ("last definition wins" in the build environment); buildah 1.28, like the classic
    // builder, lets the ENV win (docker/cli#3344, moby/moby#34494).
    // ENV PATH=/opt/bin:$PATH: BuildKit replaces the base's PATH in place (addEnv), so it stays
    // first; buildah 1.28 removes it and appends it.
    let known = [
        Known {
            what: "config.Labels",
            why: "label shadowed: BuildKit arg-value (ARG after ENV), buildah env-value",
        },
        Known {
            what: "config.Env",
            why: "ENV PATH over the base's PATH: BuildKit in place, buildah appended",
        },
    ];
    let (k, b) = differential(&case, check, &known);
    assert_eq!(k.cfg("Labels")["shadowed"], "arg-value");
    assert_eq!(b.cfg("Labels")["shadowed"], "env-value");
    let path = "PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let rest = [
        "OVERRIDDEN=env-value",
        "SHADOWED=env-value",
        "FROMCLI_E=from-cli",
        "DEFAULTED_E=default-kept",
        "GLOBAL_E=global-default",
        "UNUSED_E=xx",
    ];
    let tail = ["X=new", "Y=old", "Z=fallback", "W=set"];
    let kiln_env: Vec<&str> = [path].iter().chain(&rest).chain(&tail).copied().collect();
    let buildah_env: Vec<&str> = rest.iter().chain([&path]).chain(&tail).copied().collect();
    assert_eq!(k.cfg("Env"), serde_json::json!(kiln_env));
    assert_eq!(b.cfg("Env"), serde_json::json!(buildah_env));
}

#[test]
fn onbuild_triggers_are_stored_in_the_parent_and_run_in_the_child() {
    if !ready() {
        return;
    }
    // ONBUILD is not in buildah 1.28's OCI configs: build both in docker format.
    let parent = Case::new("onbuild")
        .file("parent.Dockerfile")
        .docker_format();
    let bah = Buildah::new();
    let kiln = Kiln::new();
    let bp = parent.buildah(&bah, "onbuild-parent");
    let kp = parent.kiln(&kiln, "onbuild-parent");
    let triggers =
        json(r#"["COPY trig.txt /trig/", "ENV FROM_TRIGGER=${WHERE}", "LABEL onbuild=ran"]"#);
    for p in [&bp, &kp] {
        assert_eq!(p.cfg("OnBuild"), triggers, "{}: {}", p.tool, p.config);
        assert!(!p.has("trig"), "{}: a trigger ran in the parent", p.tool);
        p.file("parent.txt", "parent\n", 0o644, 0, 0);
    }
    compare(&kp, &bp, &[]);

    // The child, in the same context: FROM the parent (buildah: by name in its store; kiln: the
    // parent's OCI layout).
    let mut child = Case::new("onbuild").docker_format();
    child.args = vec![("PARENT".into(), bp.name.clone())];
    let bc = child.buildah(&bah, "onbuild-child");
    child.args = vec![("PARENT".into(), format!("oci:{}:kiln", kp.layout.display()))];
    let kc = child.kiln(&kiln, "onbuild-child");
    for c in [&bc, &kc] {
        c.file("trig/trig.txt", "trig\n", 0o644, 0, 0);
        c.file("child.txt", "child\n", 0o644, 0, 0);
        assert!(
            env_has(c, "FROM_TRIGGER=parent"),
            "{}: {}",
            c.tool,
            c.config
        );
        assert!(env_has(c, "WHERE=child"), "{}: {}", c.tool, c.config);
        assert!(!env_has(c, "WHERE=parent"), "{}: {}", c.tool, c.config);
        assert_eq!(c.cfg("Labels")["onbuild"], "ran", "{}", c.tool);
        assert_eq!(c.cfg("OnBuild"), serde_json::Value::Null, "{}", c.tool);
    }
    // ENV of an existing key: BuildKit replaces it in place (addEnv), buildah 1.28 removes it and
    // appends it, so WHERE moves after FROM_TRIGGER.
    compare(
        &kc,
        &bc,
        &[Known {
            what: "config.Env",
            why: "ENV WHERE=child over the parent's WHERE: BuildKit in place, buildah appended",
        }],
    );
    let path = crate::support::buildah::PATH_ENV;
    assert_eq!(
        kc.cfg("Env"),
        json(&format!(
            r#"["{path}", "WHERE=child", "FROM_TRIGGER=parent"]"#
        ))
    );
    assert_eq!(
        bc.cfg("Env"),
        json(&format!(
            r#"["{path}", "FROM_TRIGGER=parent", "WHERE=child"]"#
        ))
    );

    // The grandchild: no trigger runs again.
    let mut grand = Case::new("onbuild")
        .file("grand.Dockerfile")
        .docker_format();
    grand.args = vec![("CHILD".into(), bc.name.clone())];
    let bg = grand.buildah(&bah, "onbuild-grand");
    grand.args = vec![("CHILD".into(), format!("oci:{}:kiln", kc.layout.display()))];
    let kg = grand.kiln(&kiln, "onbuild-grand");
    for g in [&bg, &kg] {
        assert!(
            env_has(g, "FROM_TRIGGER=parent"),
            "{}: {}",
            g.tool,
            g.config
        );
        assert!(env_has(g, "GRAND=1"), "{}: {}", g.tool, g.config);
        assert_eq!(g.cfg("OnBuild"), serde_json::Value::Null, "{}", g.tool);
    }
    compare(
        &kg,
        &bg,
        &[Known {
            what: "config.Env",
            why: "inherited from the child (see above)",
        }],
    );
}

#[test]
fn stage_names_are_case_insensitive_in_from_and_copy_from() {
    if !ready() {
        return;
    }
    let case = Case::new("stage_name_case");
    // buildah 1.28 looks `build` up as an image (short-name resolution) and fails; BuildKit
    // lower-cases stage names.
    let k = kiln_only(
        &case,
        "buildah 1.28 stage names are case-sensitive",
        // depending on which stage buildah resolves first
        &[
            "short-name \"build\"",
            "COPY --from=BUILD: no stage or image",
        ],
    );
    k.file("one.txt", "a\n", 0o644, 0, 0);
    assert_eq!(k.under("two"), ["a.txt", "again.txt"]);
}

#[test]
fn healthcheck_keeps_the_last_one_with_its_options() {
    if !ready() {
        return;
    }
    // HEALTHCHECK is not in buildah 1.28's OCI configs: build in docker format.
    let case = Case::new("healthcheck").docker_format();
    let check = |i: &Image| {
        assert_eq!(
            i.cfg("Healthcheck"),
            json(
                r#"{"Test": ["CMD-SHELL", "wget -q -O- http://localhost:$PORT/ || exit 1"],
                    "Interval": 30000000000, "Timeout": 5000000000,
                    "StartPeriod": 90000000000, "Retries": 4}"#
            ),
            "{}",
            i.tool
        );
    };
    differential(&case, check, &[]);
}

#[test]
fn expose_and_volume_merge_expand_and_keep_files_under_volumes() {
    if !ready() {
        return;
    }
    let case = Case::new("expose_volume");
    let check = |i: &Image| {
        // the ports both tools agree on
        let ports = i.cfg("ExposedPorts");
        for p in ["80/tcp", "443/tcp", "9090/tcp", "9091/udp"] {
            assert!(ports.get(p).is_some(), "{}: {p} not in {ports}", i.tool);
        }
        assert_eq!(
            i.cfg("Volumes"),
            json(r#"{"/data":{}, "/logs":{}, "/cache":{}, "/var/spool":{}}"#),
            "{}",
            i.tool
        );
        i.file("data/keep.txt", "keep\n", 0o644, 0, 0);
    };
    // BuildKit lower-cases the protocol (`53/UDP` -> `53/udp`) and expands a range into one entry
    // per port (convert_expose.go); buildah 1.28 keeps `53/UDP` and the range as one key.
    let known = [Known {
        what: "config.ExposedPorts",
        why: "EXPOSE 53/UDP and 8000-8002: BuildKit 53/udp and 3 ports, buildah as written",
    }];
    let (k, b) = differential(&case, check, &known);
    assert_eq!(
        k.cfg("ExposedPorts"),
        json(
            r#"{"80/tcp":{}, "443/tcp":{}, "53/udp":{}, "9090/tcp":{}, "9091/udp":{},
                "8000/tcp":{}, "8001/tcp":{}, "8002/tcp":{}, "9000/udp":{}, "9001/udp":{}}"#
        )
    );
    assert_eq!(
        b.cfg("ExposedPorts"),
        json(
            r#"{"80/tcp":{}, "443/tcp":{}, "53/UDP":{}, "9090/tcp":{}, "9091/udp":{},
                "8000-8002/tcp":{}, "9000-9001/udp":{}}"#
        )
    );
}

#[test]
fn exec_form_entrypoint_resets_the_base_cmd() {
    if !ready() {
        return;
    }
    let case = Case::new("entrypoint_exec");
    let check = |i: &Image| {
        assert_eq!(
            i.cfg("Entrypoint"),
            json(r#"["/bin/echo", "from-entrypoint"]"#)
        );
        assert_eq!(i.cfg("Cmd"), json(r#"["and", "cmd"]"#));
    };
    differential(&case, check, &[]);
}

#[test]
fn shell_form_entrypoint_keeps_a_cmd_of_its_stage_and_a_later_stage_resets_it() {
    if !ready() {
        return;
    }
    let case = Case::new("entrypoint_shell");
    let check = |i: &Image| {
        // the last stage: FROM first, ENTRYPOINT only -> the inherited CMD is reset
        assert_eq!(i.cfg("Entrypoint"), json(r#"["/bin/true"]"#), "{}", i.tool);
        assert_eq!(i.cfg("Cmd"), serde_json::Value::Null, "{}", i.tool);
    };
    differential(&case, check, &[]);
}

#[test]
fn shell_form_cmd_and_entrypoint_are_wrapped_and_a_cmd_of_the_same_stage_survives() {
    if !ready() {
        return;
    }
    // The first stage of entrypoint_shell, built as the last stage of a copy without stage 2.
    let case = Case::new("entrypoint_shell");
    let df = std::fs::read_to_string(case.dir().join("Dockerfile")).unwrap();
    let first = df.split("\nFROM first").next().unwrap();
    std::fs::write(case.dir().join("Dockerfile"), first).unwrap();
    let check = |i: &Image| {
        assert_eq!(
            i.cfg("Entrypoint"),
            json(r#"["/bin/sh", "-c", "echo entry $0"]"#),
            "{}",
            i.tool
        );
        assert_eq!(
            i.cfg("Cmd"),
            json(r#"["/bin/sh", "-c", "echo \"$HOME\" from cmd"]"#),
            "{}",
            i.tool
        );
    };
    differential(&case, check, &[]);
}

#[test]
fn label_stopsignal_and_user_are_recorded_verbatim() {
    if !ready() {
        return;
    }
    let case = Case::new("label_stopsignal_user");
    let check = |i: &Image| {
        let mut l = i.cfg("Labels");
        l.as_object_mut().unwrap().remove("io.buildah.version");
        assert_eq!(
            l,
            json(
                r#"{"org.example.version": "1.2.3", "org.example.name": "kiln diff",
                    "plain": "two", "legacy": "this is the value", "empty": ""}"#
            ),
            "{}",
            i.tool
        );
        assert_eq!(i.cfg("StopSignal"), "SIGUSR1", "{}", i.tool);
        assert_eq!(i.cfg("User"), "app:web", "{}", i.tool);
    };
    differential(&case, check, &[]);
}

#[test]
fn symlinks_and_hard_links_in_the_context_are_kept_and_source_links_followed() {
    if !ready() {
        return;
    }
    let case = Case::new("links");
    let t = case.dir().join("tree");
    std::os::unix::fs::symlink("file.txt", t.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", t.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("missing/target", t.join("dangling")).unwrap();
    std::os::unix::fs::symlink("dir", t.join("dir-link")).unwrap();
    std::fs::hard_link(t.join("file.txt"), t.join("hard.txt")).unwrap();
    std::fs::hard_link(t.join("file.txt"), t.join("dir/hard2.txt")).unwrap();
    let check = |i: &Image| {
        for (p, target) in [
            ("tree/rel-link", "file.txt"),
            ("tree/abs-link", "/etc/passwd"),
            ("tree/dangling", "missing/target"),
            ("tree/dir-link", "dir"),
        ] {
            let m = i.meta(p);
            assert_eq!((m.kind, m.link.as_str()), ("symlink", target), "{}", i.tool);
        }
        let groups: Vec<&str> = ["tree/file.txt", "tree/hard.txt", "tree/dir/hard2.txt"]
            .iter()
            .map(|p| i.meta(p).hardlink_group.as_str())
            .collect();
        assert_eq!(groups, ["tree/dir/hard2.txt"; 3], "{}: hard links", i.tool);
        i.file("followed.txt", "file\n", 0o644, 0, 0);
        assert_eq!(
            i.under("followed-dir"),
            ["hard2.txt", "inner.txt"],
            "{}",
            i.tool
        );
    };
    differential(&case, check, &[]);
}

#[test]
fn setuid_setgid_and_sticky_bits_survive_copy() {
    if !ready() {
        return;
    }
    let case = Case::new("setuid");
    let s = case.dir().join("special");
    for (p, mode) in [
        ("suid", 0o4755),
        ("sgid", 0o2755),
        ("gw", 0o664),
        ("stickydir", 0o1777),
        ("sgiddir", 0o2775),
    ] {
        std::fs::set_permissions(s.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let check = |i: &Image| {
        i.file("special/gw", "gw\n", 0o664, 0, 0);
        i.dir("special/stickydir", 0o1777, 0, 0);
    };
    // BuildKit keeps setuid and setgid bits of context files (fsutil sends the full mode and
    // chmods with it). buildah strips them from build-context content on purpose (copier
    // StripSetuidBit/StripSetgidBit, containers/buildah#2498, to match the classic builder) and
    // keeps the sticky bit.
    let why = "setuid/setgid from the context: BuildKit keeps, buildah strips";
    let known = [
        Known {
            what: "special/suid",
            why,
        },
        Known {
            what: "special/sgid",
            why,
        },
        Known {
            what: "special/sgiddir",
            why,
        },
        Known {
            what: "single-suid",
            why,
        },
    ];
    let (k, b) = differential(&case, check, &known);
    k.file("special/suid", "suid\n", 0o4755, 0, 0);
    k.file("special/sgid", "sgid\n", 0o2755, 0, 0);
    k.dir("special/sgiddir", 0o2775, 0, 0);
    k.file("single-suid", "suid\n", 0o4755, 0, 0);
    b.file("special/suid", "suid\n", 0o755, 0, 0);
    b.file("special/sgid", "sgid\n", 0o755, 0, 0);
    b.dir("special/sgiddir", 0o775, 0, 0);
    b.file("single-suid", "suid\n", 0o755, 0, 0);
}

// ---------------------------------------------------------------------------------------------
// Running and reproducing.

#[test]
fn podman_runs_a_kiln_built_image_and_prints_what_its_cmd_says() {
    if !ready() || !need("podman") || !need("runc") {
        return;
    }
    let case = Case::new("entrypoint_exec");
    let k = Kiln::new();
    let archive = k.path("image.oci.tar");
    let mut args: Vec<String> = vec![
        "build".into(),
        case.dir().display().to_string(),
        "-t".into(),
        "kiln-diff/run:latest".into(),
        "-o".into(),
        format!("oci-archive:{}", archive.display()),
    ];
    for (key, v) in &case.args {
        args.push("--build-arg".into());
        args.push(format!("{key}={v}"));
    }
    k.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let p = k.path("podman");
    let out = run(Command::new("podman")
        .arg("--root")
        .arg(p.join("root"))
        .arg("--runroot")
        .arg(p.join("run"))
        .args(["--storage-driver", "vfs", "run", "--rm"])
        .args(["--runtime", "runc", "--network", "none"])
        .args([
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=32768:32768",
        ])
        .arg(format!("oci-archive:{}", archive.display())));
    assert_eq!(out, "from-entrypoint and cmd\n");
}

#[test]
fn two_builds_into_two_empty_stores_give_the_same_manifest_digest() {
    if !ready() {
        return;
    }
    // Two contexts made a second apart (different mtimes, inode numbers and paths).
    let one = Case::new("multi_stage");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let two = Case::new("multi_stage");
    let a = one.kiln(&Kiln::new(), "repro");
    let b = two.kiln(&Kiln::new(), "repro");
    assert_eq!(a.digest, b.digest, "the same build gave two manifests");
    assert_eq!(a.fs, b.fs);
    // Without --source-date-epoch or SOURCE_DATE_EPOCH the epoch is 0: file times in the layers
    // and the config's `created`.
    use std::os::unix::fs::MetadataExt;
    for p in ["app/a.txt", "app/sub", "from-index.txt"] {
        let md = std::fs::symlink_metadata(a.rootfs.join(p)).unwrap();
        assert_eq!(md.mtime(), 0, "{p}: mtime");
    }
    let (_, config) = layout_image(&a.layout, "kiln");
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
}

#[test]
fn context_files_become_root_owned_and_copy_from_keeps_the_stage_owners() {
    if !ready() {
        return;
    }
    let case = Case::new("ownership");
    std::fs::write(case.dir().join("owned.tar"), tarball("p")).unwrap();
    for p in [
        "hostowned.txt",
        "hostdir",
        "hostdir/d.txt",
        "hostdir/sub",
        "hostdir/sub/s.txt",
    ] {
        std::os::unix::fs::lchown(case.dir().join(p), Some(4242), Some(4343)).unwrap();
    }
    let check = |i: &Image| {
        i.file("ctx-file.txt", "host\n", 0o644, 0, 0);
        i.dir("ctx-dir/sub", 0o755, 0, 0);
        i.file("ctx-dir/d.txt", "d\n", 0o644, 0, 0);
        i.file("ctx-dir/sub/s.txt", "s\n", 0o644, 0, 0);
        i.dir("from-stage/p", 0o755, 1234, 5678);
        i.file("from-stage/p/file.txt", "in the tar\n", 0o640, 1234, 5678);
        i.file("from-stage/p/suid", "suid\n", 0o4755, 1234, 5678);
        let l = i.meta("from-stage/p/link");
        assert_eq!(
            (l.kind, l.uid, l.gid),
            ("symlink", 1234, 5678),
            "{}",
            i.tool
        );
        i.dir("from-stage-chowned", 0o755, 7, 8);
        i.dir("from-stage-chowned/p", 0o755, 7, 8);
        i.file("from-stage-chowned/p/file.txt", "in the tar\n", 0o640, 7, 8);
        i.file("from-stage-chowned/p/suid", "suid\n", 0o4755, 7, 8);
    };
    differential(&case, check, &[]);
}

#[test]
fn copy_destinations_resolve_through_symlinks_inside_the_image() {
    if !ready() {
        return;
    }
    let case = Case::new("dest_symlink");
    let mut t = tar::Builder::new(Vec::new());
    for (name, target) in [
        ("weblink", "srv/www"),
        ("abslink", "/srv/www"),
        ("filelink", "srv/www/target.txt"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_link_name(target).unwrap();
        t.append_data(&mut h, name, &b""[..]).unwrap();
    }
    std::fs::write(case.dir().join("links.tar"), t.into_inner().unwrap()).unwrap();
    let check = |i: &Image| {
        for (p, target) in [("weblink", "srv/www"), ("abslink", "/srv/www")] {
            let m = i.meta(p);
            assert_eq!((m.kind, m.link.as_str()), ("symlink", target), "{}", i.tool);
        }
        i.dir("srv/www", 0o750, 1001, 1002);
        i.file("srv/www/a.txt", "a\n", 0o644, 0, 0);
        i.file("srv/www/b.txt", "b\n", 0o644, 0, 0);
        i.file("srv/www/sub/c.txt", "c\n", 0o644, 0, 0);
    };
    // COPY onto an existing symlink to a file: BuildKit resolves the destination through the link
    // and writes the target; buildah 1.28 replaces the link with a regular file.
    let known = [
        Known {
            what: "filelink",
            why: "COPY onto a symlink: BuildKit writes through it, buildah replaces it",
        },
        Known {
            what: "srv/www/target.txt",
            why: "COPY onto a symlink: BuildKit writes through it, buildah replaces it",
        },
    ];
    let (k, b) = differential(&case, check, &known);
    let l = k.meta("filelink");
    assert_eq!((l.kind, l.link.as_str()), ("symlink", "srv/www/target.txt"));
    k.file("srv/www/target.txt", "new\n", 0o644, 0, 0);
    b.file("filelink", "new\n", 0o644, 0, 0);
    b.file("srv/www/target.txt", "old\n", 0o644, 0, 0);
}

#[test]
fn target_builds_the_named_stage_as_the_image() {
    if !ready() {
        return;
    }
    let case = Case::new("target_stage").target("middle");
    let check = |i: &Image| {
        i.file("first.txt", "a\n", 0o644, 0, 0);
        i.file("middle.txt", "b\n", 0o644, 0, 0);
        assert!(!i.has("last.txt"), "{}: built the last stage", i.tool);
        assert_eq!(
            i.cfg("Cmd"),
            json(r#"["cat", "/middle.txt"]"#),
            "{}",
            i.tool
        );
        assert_eq!(i.cfg("Labels")["stage"], "first", "{}", i.tool);
    };
    differential(&case, check, &[]);
}

/// Builds a case that buildah 1.28 cannot build (asserting that it still fails, saying one of
/// `errors`), then with kiln alone.
fn kiln_only(case: &Case, why: &str, errors: &[&str]) -> Image {
    let b = Buildah::new();
    let mut c = b.cmd();
    c.args([
        "bud",
        "--layers=false",
        "--no-cache",
        "--timestamp",
        "0",
        "-f",
    ])
    .arg(case.dir().join(case.file));
    for (k, v) in &case.args {
        c.arg("--build-arg").arg(format!("{k}={v}"));
    }
    let out = c.arg(case.dir()).output().unwrap();
    assert!(
        !out.status.success(),
        "buildah now builds {} ({why}): make it a differential case",
        case.name
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        errors.iter().any(|e| stderr.contains(e)),
        "buildah failed on {} for another reason than {why}:\n{stderr}",
        case.name
    );
    case.kiln(&Kiln::new(), case.name)
}

#[test]
fn copy_heredocs_expand_unless_quoted_and_take_chmod() {
    if !ready() {
        return;
    }
    let case = Case::new("heredoc");
    let k = kiln_only(&case, "buildah 1.28 has no heredocs", &["\"/<<EOF\""]);
    // BuildKit writes inline files with llb.Mkfile(0664) under buildkitd's umask 022: 0644.
    k.file("greeting.txt", "hello kiln\n", 0o644, 0, 0);
    k.file("literal.txt", "hello ${NAME}\n", 0o644, 0, 0);
    k.file("run.sh", "#!/bin/sh\necho run\n", 0o755, 0, 0);
    k.file("two/A", "first\n", 0o644, 0, 0);
    k.file("two/B", "second\n", 0o644, 0, 0);
}

#[test]
fn copy_link_parents_and_exclude_follow_buildkit() {
    if !ready() {
        return;
    }
    let case = Case::new("copy_link_parents_exclude");
    let k = kiln_only(
        &case,
        "buildah 1.28 has no COPY --link/--parents/--exclude",
        &["COPY only supports"],
    );
    k.file("linked/one.txt", "one\n", 0o644, 0, 0);
    assert_eq!(
        k.under("linked-dir"),
        [
            "a",
            "a/debug.log",
            "a/one.txt",
            "b",
            "b/three.txt",
            "b/two.txt"
        ]
    );
    assert_eq!(
        k.under("parents"),
        [
            "src",
            "src/a",
            "src/a/one.txt",
            "src/b",
            "src/b/three.txt",
            "src/b/two.txt"
        ]
    );
    assert_eq!(k.under("parents-dot"), ["a", "a/one.txt"]);
    // --exclude patterns match paths relative to the source directory
    assert_eq!(k.under("excluded"), ["a", "a/one.txt"]);
}

#[test]
fn json_form_handles_spaces_empty_directories_and_add_chown_of_an_archive() {
    if !ready() {
        return;
    }
    let case = Case::new("json_form");
    std::fs::create_dir_all(case.dir().join("dir with space/empty sub")).unwrap();
    std::fs::create_dir(case.dir().join("empty")).unwrap();
    std::fs::set_permissions(
        case.dir().join("empty"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let mut t = tar::Builder::new(Vec::new());
    for (path, kind, mode, data) in [
        ("p/", tar::EntryType::Directory, 0o755, &b""[..]),
        (
            "p/file.txt",
            tar::EntryType::Regular,
            0o640,
            &b"in the tar\n"[..],
        ),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_size(data.len() as u64);
        t.append_data(&mut h, path, data).unwrap();
    }
    std::fs::write(case.dir().join("owned.tar"), t.into_inner().unwrap()).unwrap();
    let check = |i: &Image| {
        i.file("with space/with space.txt", "s\n", 0o644, 0, 0);
        i.file("spaced dir/top.txt", "t\n", 0o644, 0, 0);
        i.file("spaced dir/inner/i.txt", "i\n", 0o644, 0, 0);
        i.dir("spaced dir/empty sub", 0o755, 0, 0);
        // ADD --chown: the directory ADD creates gets the owner
        i.dir("owned tar", 0o755, 1000, 1002);
        assert!(i.under("empty-copy").is_empty(), "{}", i.tool);
        // the destination of a directory's contents is created 0755 (see dest_rules)
        i.dir("empty-copy", 0o755, 0, 0);
    };
    // ADD --chown of a local archive: BuildKit applies the owner to every extracted entry
    // (solver/llbsolver/file/unpack_root.go, mapArchiveHeaderOwner: "explicit --chown values
    // override the header ownership"); buildah 1.28 keeps the archive's owners.
    let why =
        "ADD --chown of an archive: BuildKit chowns extracted entries, buildah keeps 1234:5678";
    let known = [
        Known {
            what: "owned tar/p",
            why,
        },
        Known {
            what: "owned tar/p/file.txt",
            why,
        },
    ];
    let (k, b) = differential(&case, check, &known);
    k.dir("owned tar/p", 0o755, 1000, 1002);
    k.file("owned tar/p/file.txt", "in the tar\n", 0o640, 1000, 1002);
    b.dir("owned tar/p", 0o755, 1234, 5678);
    b.file("owned tar/p/file.txt", "in the tar\n", 0o640, 1234, 5678);
}

#[test]
fn copy_from_an_image_reference_takes_files_with_their_owners() {
    if !ready() {
        return;
    }
    let case = Case::new("copy_from_image");
    let df = case.dir().join("Dockerfile");
    let text = std::fs::read_to_string(&df).unwrap().replace(
        "@BASE@",
        &format!("oci-archive:{}", busybox_base().display()),
    );
    std::fs::write(&df, text).unwrap();
    let check = |i: &Image| {
        i.file(
            "copied-passwd",
            crate::support::buildah::PASSWD,
            0o644,
            0,
            0,
        );
        i.dir("from-image-srv/www", 0o750, 1001, 1002);
    };
    differential(&case, check, &[]);
}

#[test]
fn shell_changes_later_shell_forms_only() {
    if !ready() {
        return;
    }
    // SHELL is not in buildah 1.28's OCI configs: build in docker format.
    let case = Case::new("shell").docker_format();
    let check = |i: &Image| {
        assert_eq!(
            i.cfg("Shell"),
            json(r#"["/bin/sh", "-x", "-c"]"#),
            "{}",
            i.tool
        );
        assert_eq!(
            i.cfg("Healthcheck"),
            json(r#"{"Test": ["CMD-SHELL", "true"]}"#),
            "{}",
            i.tool
        );
    };
    // BuildKit wraps shell-form ENTRYPOINT and CMD with the SHELL in effect (withShell);
    // buildah 1.28 always uses /bin/sh -c.
    let known = [
        Known {
            what: "config.Entrypoint",
            why: "shell form after SHELL: BuildKit uses the SHELL, buildah /bin/sh -c",
        },
        Known {
            what: "config.Cmd",
            why: "shell form after SHELL: BuildKit uses the SHELL, buildah /bin/sh -c",
        },
    ];
    let (k, b) = differential(&case, check, &known);
    assert_eq!(
        k.cfg("Entrypoint"),
        json(r#"["/bin/ash", "-e", "-c", "echo entry"]"#)
    );
    assert_eq!(
        k.cfg("Cmd"),
        json(r#"["/bin/ash", "-e", "-c", "echo cmd"]"#)
    );
    assert_eq!(
        b.cfg("Entrypoint"),
        json(r#"["/bin/sh", "-c", "echo entry"]"#)
    );
    assert_eq!(b.cfg("Cmd"), json(r#"["/bin/sh", "-c", "echo cmd"]"#));
}

#[test]
fn copy_flags_and_paths_expand_variables_and_from_paths_are_rooted() {
    if !ready() {
        return;
    }
    let case = Case::new("flag_expansion");
    let check = |i: &Image| {
        i.dir("dst", 0o755, 1000, 1002);
        i.file("dst/f.txt", "f\n", 0o750, 1000, 1002);
        i.file("relative-from.txt", "f\n", 0o644, 0, 0);
    };
    differential(&case, check, &[]);
}

#[test]
fn chown_names_resolve_through_the_destination_stage_as_it_is_at_that_step() {
    if !ready() {
        return;
    }
    let case = Case::new("chown_stage_passwd");
    let check = |i: &Image| {
        i.file("late.txt", "f\n", 0o644, 2000, 2001);
        i.file("from-other.txt", "f\n", 0o644, 2000, 2001);
    };
    differential(&case, check, &[]);
}

#[test]
fn quoting_escapes_and_source_paths_follow_the_shell_lexer() {
    if !ready() {
        return;
    }
    let case = Case::new("quoting");
    let check = |i: &Image| {
        i.file("x/sub/d", "d\n", 0o644, 0, 0);
        i.file("y", "a\n", 0o644, 0, 0);
        i.file("z", "a\n", 0o644, 0, 0);
        i.file("w", "d\n", 0o644, 0, 0);
        i.dir("wd", 0o755, 0, 0);
        for e in ["a=x y", "b=x y", "c=$lit", "d=q\"uote", "e=$esc"] {
            assert!(env_has(i, e), "{}: {e} not in {}", i.tool, i.config);
        }
        let l = i.cfg("Labels");
        assert_eq!(l["k 1"], "v 1", "{}", i.tool);
        assert_eq!(l["k2"], "single $a", "{}", i.tool);
        assert_eq!(l["k3"], "x y-x y", "{}", i.tool);
        assert_eq!(i.cfg("WorkingDir"), "/wd", "{}", i.tool);
        assert_eq!(i.cfg("User"), "65534", "{}", i.tool);
        assert_eq!(i.cfg("StopSignal"), "9", "{}", i.tool);
        assert_eq!(
            i.cfg("ExposedPorts"),
            json(r#"{"7000/tcp": {}, "7000/udp": {}}"#),
            "{}",
            i.tool
        );
    };
    differential(&case, check, &[]);
}

#[test]
fn hard_links_inside_an_added_archive_stay_hard_links() {
    if !ready() {
        return;
    }
    let case = Case::new("archive_hardlinks");
    let mut t = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        t.append_data(&mut h, path, data).unwrap();
    };
    add("t/", tar::EntryType::Directory, b"", None);
    add("t/f", tar::EntryType::Regular, b"h\n", None);
    add("t/d/", tar::EntryType::Directory, b"", None);
    add("t/d/g", tar::EntryType::Link, b"", Some("t/f"));
    std::fs::write(case.dir().join("h.tar"), t.into_inner().unwrap()).unwrap();
    let check = |i: &Image| {
        for (f, g) in [("copied/f", "copied/d/g"), ("added/t/f", "added/t/d/g")] {
            i.file(f, "h\n", 0o644, 0, 0);
            i.file(g, "h\n", 0o644, 0, 0);
            assert_ne!(
                i.meta(f).hardlink_group,
                "",
                "{}: {f} is not hard-linked",
                i.tool
            );
            assert_eq!(
                i.meta(f).hardlink_group,
                i.meta(g).hardlink_group,
                "{}: {f} and {g} are not one file",
                i.tool
            );
        }
    };
    differential(&case, check, &[]);
}

#[test]
fn parents_implied_by_an_archive_are_created_root_owned() {
    if !ready() {
        return;
    }
    let case = Case::new("archive_implied_parents");
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_size(2);
    t.append_data(&mut h, "x/y/z.txt", &b"z\n"[..]).unwrap();
    std::fs::write(case.dir().join("n.tar"), t.into_inner().unwrap()).unwrap();
    let check = |i: &Image| {
        i.dir("np/x", 0o755, 0, 0);
        i.dir("np/x/y", 0o755, 0, 0);
        i.file("np/x/y/z.txt", "z\n", 0o600, 1234, 5678);
        i.dir("npc", 0o755, 7, 8);
    };
    // With --chown, BuildKit's unpack (solver/llbsolver/file/unpack_root.go) creates the implied
    // parents with the root pair (0:0) and chowns the listed entries; buildah 1.28 chowns the
    // implied parents and keeps the archive's owner on the listed file.
    let known = [
        Known {
            what: "npc/x",
            why: "implied parent with --chown: BuildKit 0:0, buildah 7:8",
        },
        Known {
            what: "npc/x/y",
            why: "implied parent with --chown: BuildKit 0:0, buildah 7:8",
        },
        Known {
            what: "npc/x/y/z.txt",
            why: "archive member with --chown: BuildKit 7:8, buildah keeps 1234:5678",
        },
    ];
    let b = case.buildah(&Buildah::new(), case.name);
    check(&b);
    b.dir("npc/x", 0o755, 7, 8);
    b.dir("npc/x/y", 0o755, 7, 8);
    b.file("npc/x/y/z.txt", "z\n", 0o600, 1234, 5678);
    let k = case.kiln(&Kiln::new(), case.name);
    check(&k);
    k.file("npc/x/y/z.txt", "z\n", 0o600, 7, 8);
    k.dir("npc/x", 0o755, 0, 0);
    k.dir("npc/x/y", 0o755, 0, 0);
    compare(&k, &b, &known);
}

#[test]
fn copy_from_follows_symlinked_sources_and_keeps_links_inside_directories() {
    if !ready() {
        return;
    }
    let case = Case::new("copy_from_symlinks");
    let check = |i: &Image| {
        let busybox = i.meta("bin/busybox").clone();
        for p in ["sh", "two/sh", "two/env"] {
            let m = i.meta(p);
            assert_eq!(
                (m.kind, m.mode, m.size, &m.content),
                ("file", 0o755, busybox.size, &busybox.content),
                "{}: {p}",
                i.tool
            );
        }
        let links: Vec<String> = i.under("sbins");
        assert!(!links.is_empty(), "{}: /sbins is empty", i.tool);
        for l in links {
            let m = i.meta(&format!("sbins/{l}"));
            assert_eq!(
                (m.kind, m.link.as_str()),
                ("symlink", "/bin/busybox"),
                "{}",
                i.tool
            );
        }
    };
    differential(&case, check, &[]);
}

#[test]
fn from_a_stage_inherits_its_config_and_healthcheck_none_disables_the_check() {
    if !ready() {
        return;
    }
    let case = Case::new("stage_inheritance").docker_format();
    let check = |i: &Image| {
        assert_eq!(
            i.cfg("Healthcheck"),
            json(r#"{"Test": ["NONE"]}"#),
            "{}",
            i.tool
        );
        assert_eq!(i.cfg("Labels")["from"], "a", "{}", i.tool);
        assert_eq!(i.cfg("StopSignal"), "SIGINT", "{}", i.tool);
        assert_eq!(i.cfg("User"), "app", "{}", i.tool);
        assert_eq!(i.cfg("WorkingDir"), "/wa", "{}", i.tool);
        assert!(env_has(i, "FROM_A=yes"), "{}", i.tool);
        assert_eq!(
            i.cfg("ExposedPorts"),
            json(r#"{"81/tcp": {}}"#),
            "{}",
            i.tool
        );
        assert_eq!(i.cfg("Volumes"), json(r#"{"/va": {}}"#), "{}", i.tool);
        assert_eq!(i.cfg("Entrypoint"), json(r#"["/bin/echo"]"#), "{}", i.tool);
        assert_eq!(i.cfg("Cmd"), json(r#"["from", "a"]"#), "{}", i.tool);
        i.dir("wa", 0o755, 1000, 1000);
    };
    differential(&case, check, &[]);
}

#[test]
fn dockerignore_pattern_forms_and_copy_owners_ignore_user() {
    if !ready() {
        return;
    }
    let case = Case::new("dockerignore_forms");
    let check = |i: &Image| {
        assert_eq!(
            i.under("ctx"),
            [
                ".dockerignore",
                "Dockerfile",
                "deep",
                "deep/a",
                "dir",
                "dir/keep",
                "keep.md",
                "sub",
                "sub/y"
            ],
            "{}",
            i.tool
        );
        i.file("ctx/dir/keep", "k\n", 0o644, 0, 0);
        assert!(env_has(i, "URL=a=b"), "{}", i.tool);
    };
    differential(&case, check, &[]);
}

#[test]
fn long_names_long_link_targets_unicode_and_mode_0000_are_carried() {
    if !ready() {
        return;
    }
    let case = Case::new("odd_names");
    let t = case.dir().join("t");
    let long_dir = "d".repeat(120);
    let long_file = "f".repeat(130);
    std::fs::create_dir_all(t.join(&long_dir)).unwrap();
    std::fs::write(t.join(&long_dir).join(&long_file), "deep\n").unwrap();
    std::os::unix::fs::symlink("x".repeat(200), t.join("longlink")).unwrap();
    std::fs::write(t.join("é ü.txt"), "u\n").unwrap();
    std::fs::write(t.join("zero"), "zero\n").unwrap();
    std::fs::set_permissions(t.join("zero"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let check = |i: &Image| {
        i.file(&format!("t/{long_dir}/{long_file}"), "deep\n", 0o644, 0, 0);
        let l = i.meta("t/longlink");
        assert_eq!((l.kind, l.link.len()), ("symlink", 200), "{}", i.tool);
        i.file("t/é ü.txt", "u\n", 0o644, 0, 0);
        i.file("t/zero", "zero\n", 0, 0, 0);
        i.file("zero", "zero\n", 0, 0, 0);
    };
    differential(&case, check, &[]);
}
