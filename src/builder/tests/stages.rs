//! Multi-stage builds: `COPY --from` a stage by name or index, `FROM` a stage, `--target`, and
//! `RUN --mount=from=` a stage.
use crate::sandbox::{Bound, ExitStatus, ScriptedChange};

use super::{node, paths, Fixture};

fn gen(f: &Fixture, path: &str, content: &[u8]) {
    f.fake.script(
        ExitStatus::Code(0),
        b"",
        vec![ScriptedChange::Write {
            path: path.into(),
            content: content.to_vec(),
            mode: 0o755,
        }],
    );
}

#[test]
fn copy_from_a_stage_by_name_copies_what_its_run_made() {
    let f = Fixture::new();
    gen(&f, "tmp/tool", b"TOOL");
    let out = f
        .build(
            "FROM base AS builder\nRUN make\nFROM base\nCOPY --from=builder /tmp/tool /usr/bin/\n",
        )
        .unwrap();
    let top = f.top(&out.image);
    assert_eq!(paths(&top), ["usr", "usr/bin", "usr/bin/tool"]);
    let t = node(&top, "usr/bin/tool");
    assert_eq!((t.content.as_slice(), t.mode), (&b"TOOL"[..], 0o755));
}

#[test]
fn copy_from_a_stage_by_index_keeps_owners() {
    let f = Fixture::new();
    f.file("a", b"A");
    let out = f
        .build("FROM base\nCOPY --chown=app a /a\nFROM base\nCOPY --from=0 /a /b\n")
        .unwrap();
    let b = node(&f.top(&out.image), "b").clone();
    assert_eq!(
        (b.content.as_slice(), b.uid, b.gid),
        (&b"A"[..], 1000, 1000)
    );
}

#[test]
fn from_a_stage_starts_with_its_layers_and_config() {
    let f = Fixture::new();
    f.file("a", b"A");
    let out = f
        .build("FROM base AS parent\nENV P=1\nCOPY a /a\nFROM parent\nCOPY a /b\n")
        .unwrap();
    assert_eq!(out.image.layers().len(), 3);
    assert_eq!(paths(&f.layer(&out.image, 1)), ["a"]);
    assert_eq!(paths(&f.layer(&out.image, 2)), ["b"]);
    assert_eq!(out.image.config.config.env.as_deref().unwrap(), ["P=1"]);
}

#[test]
fn target_builds_only_the_stages_it_needs() {
    let f = Fixture::new();
    let text = "FROM base AS a\nRUN in-a\nFROM base AS b\nRUN in-b\nFROM a AS c\nRUN in-c\n";
    let mut o = f.opts();
    o.target = Some("c".into());
    f.dockerfile(text);
    let out = f.build_opts(&o).unwrap();
    let ran: Vec<String> = f.specs().iter().map(|s| s.argv[2].clone()).collect();
    assert_eq!(ran, ["in-a", "in-c"]);
    let stages: Vec<&str> = out.steps.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(stages, ["a", "c"]);
}

#[test]
fn without_target_the_last_stage_is_built_and_unused_stages_are_not() {
    let f = Fixture::new();
    f.build("FROM base AS unused\nRUN in-unused\nFROM base\nRUN in-last\n")
        .unwrap();
    let ran: Vec<String> = f.specs().iter().map(|s| s.argv[2].clone()).collect();
    assert_eq!(ran, ["in-last"]);
}

#[test]
fn run_mount_from_a_stage_binds_that_stage_files() {
    let f = Fixture::new();
    gen(&f, "tmp/made", b"M");
    f.build(
        "FROM base AS a\nRUN make\nFROM base\n\
         RUN --mount=from=a,source=/tmp,target=/m --mount=from=a,source=tmp/made,target=/f true\n",
    )
    .unwrap();
    assert_eq!(
        f.fake.binds(),
        [
            ("/m".into(), Bound::Dir(vec!["made".into()])),
            ("/f".into(), Bound::File(b"M".to_vec())),
        ]
    );
}

#[test]
fn a_file_a_run_deleted_is_gone_for_copy_from_that_stage() {
    let f = Fixture::new();
    f.fake.script(
        ExitStatus::Code(0),
        b"",
        vec![ScriptedChange::Delete {
            path: "etc/group".into(),
        }],
    );
    let out = f
        .build("FROM base AS a\nRUN rm /etc/group\nFROM base\nCOPY --from=a /etc /etc2\n")
        .unwrap();
    let p = paths(&f.top(&out.image)).join(" ");
    assert!(p.contains("etc2/passwd") && !p.contains("group"), "{p}");
}

#[test]
fn a_cached_run_layer_is_in_the_stage_files_of_the_next_build() {
    let f = Fixture::new();
    gen(&f, "tmp/tool", b"TOOL");
    f.build("FROM base AS a\nRUN make\n").unwrap();
    let out = f
        .build("FROM base AS a\nRUN make\nFROM base\nCOPY --from=a /tmp/tool /tool\n")
        .unwrap();
    assert!(out.steps[0].cached);
    assert_eq!(node(&f.top(&out.image), "tool").content, b"TOOL");
    assert_eq!(f.specs().len(), 1);
}

#[test]
fn copy_from_a_stage_with_chown_gives_the_new_owner() {
    let f = Fixture::new();
    f.file("a", b"A");
    let out = f
        .build(
            "FROM base AS a\nCOPY --chown=svc a /a\nFROM base\nCOPY --from=a --chown=app /a /b\n",
        )
        .unwrap();
    let b = node(&f.top(&out.image), "b").clone();
    assert_eq!((b.uid, b.gid), (1000, 1000));
}
