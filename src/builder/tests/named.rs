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
