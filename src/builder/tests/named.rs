//! `--build-context NAME=…` (BuildOptions::named_contexts): an image that replaces `FROM NAME`
//! and `COPY --from=NAME`, matched by normalised name too; a directory read by `COPY --from`,
//! its content in the step's key; a directory refused as a base.
use super::super::NamedContext;
use super::{err_text, node, Fixture};

#[test]
fn an_image_context_replaces_from_and_copy_from_by_normalised_name() {
    let f = Fixture::new();
    let mut o = f.opts();
    // `alpine` is not in the store: only the named context makes the build work.
    o.named_contexts.insert(
        "docker.io/library/alpine:latest".into(),
        NamedContext::Image("base".into()),
    );
    f.dockerfile("FROM alpine\nCOPY --from=alpine /etc/group /copied\n");
    let out = f.build_opts(&o).unwrap();
    let top = f.top(&out.image);
    assert_eq!(node(&top, "copied").kind, 'f');
    o.named_contexts.clear();
    assert!(err_text(f.build_opts(&o)).contains("alpine"));
}

#[test]
fn a_directory_context_is_read_by_copy_from_and_keyed_by_its_content() {
    let f = Fixture::new();
    let named = f.ctx().parent().unwrap().join("named");
    std::fs::create_dir_all(named.join("sub")).unwrap();
    std::fs::write(named.join("sub/n.txt"), b"one").unwrap();
    let mut o = f.opts();
    o.named_contexts
        .insert("files".into(), NamedContext::Dir(named.clone()));
    f.dockerfile("FROM base\nCOPY --from=files sub/n.txt /n.txt\n");
    let first = f.build_opts(&o).unwrap();
    assert_eq!(node(&f.top(&first.image), "n.txt").content, b"one");
    let again = f.build_opts(&o).unwrap();
    assert!(again.steps.iter().all(|s| s.cached));
    std::fs::write(named.join("sub/n.txt"), b"two").unwrap();
    let changed = f.build_opts(&o).unwrap();
    assert!(!changed.steps.last().unwrap().cached);
    assert_eq!(node(&f.top(&changed.image), "n.txt").content, b"two");
    // Not a base image.
    f.dockerfile("FROM files\n");
    let e = err_text(f.build_opts(&o));
    assert!(e.contains("COPY --from=files only"), "{e}");
}

#[test]
fn a_directory_context_is_a_bind_mount_source() {
    use crate::sandbox::{Bound, ExitStatus, MountKind};
    let f = Fixture::new();
    let named = f.ctx().parent().unwrap().join("named");
    std::fs::create_dir_all(&named).unwrap();
    std::fs::write(named.join("conf"), b"NAMED").unwrap();
    let mut o = f.opts();
    o.named_contexts
        .insert("cfg".into(), NamedContext::Dir(named.clone()));
    f.fake.script(ExitStatus::Code(0), b"", vec![]);
    f.dockerfile("FROM base\nRUN --mount=type=bind,from=cfg,source=conf,target=/c true\n");
    f.build_opts(&o).unwrap();
    let m = &f.specs()[0].mounts;
    match &m[0].kind {
        MountKind::Bind { root, source, .. } => {
            assert_eq!((root, source.as_str()), (&named, "conf"));
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(
        f.fake.binds(),
        [("/c".into(), Bound::File(b"NAMED".to_vec()))]
    );
}

#[test]
fn an_image_context_replaces_the_stage_of_its_name() {
    let f = Fixture::new();
    let mut o = f.opts();
    o.named_contexts
        .insert("builder".into(), NamedContext::Image("base".into()));
    // The stage's own base does not exist and its RUN is not run: the named image replaces it.
    f.dockerfile(
        "FROM nonexistent.example/x AS builder\nRUN exit 1\nFROM base\nCOPY --from=builder /etc/group /g\n",
    );
    let out = f.build_opts(&o).unwrap();
    assert_eq!(node(&f.top(&out.image), "g").kind, 'f');
    assert!(f.specs().is_empty(), "the replaced stage's RUN ran");
    o.named_contexts
        .insert("builder".into(), NamedContext::Dir(f.ctx()));
    let e = err_text(f.build_opts(&o));
    assert!(e.contains("cannot replace the stage"), "{e}");
}
