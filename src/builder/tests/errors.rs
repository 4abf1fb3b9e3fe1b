//! Builds that must fail, and how: before any step runs when the problem is visible up front
//! (no shell, no entitlement, no secret), naming the Dockerfile location and the object, and
//! leaving the store consistent with nothing tagged.
use super::super::{Error, Secret, StepError};
use super::{base_entries, err_text, Fixture};

/// Stages `first` (RUN), `second` (from `img`, with `second_steps`) and a final one using both:
/// `first` runs before `second` unless the build is refused up front.
fn two_stages(img: &str, second_steps: &str) -> String {
    format!(
        "FROM base AS first\nRUN one\nFROM {img} AS second\n{second_steps}\n\
         FROM base\nCOPY --from=first /tmp /a\nCOPY --from=second /tmp /b\n"
    )
}

#[test]
fn a_shell_form_run_without_bin_sh_is_refused_before_any_step() {
    let f = Fixture::new();
    let no_sh: Vec<_> = base_entries()
        .into_iter()
        .filter(|e| e.path != b"bin/sh")
        .collect();
    f.image("nosh", &no_sh, |_| {});
    let err = f.build(&two_stages("nosh", "RUN two")).unwrap_err();
    let Error::Step { line, source, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*line, 4);
    assert!(
        matches!(source.as_ref(), StepError::MissingProgram { program } if program == "/bin/sh"),
        "{source:?}"
    );
    assert!(f.specs().is_empty(), "no step ran: {:?}", f.specs());
}

#[test]
fn network_host_without_the_entitlement_is_refused_before_any_step() {
    let f = Fixture::new();
    let err = f
        .build(&two_stages("base", "RUN --network=host two"))
        .unwrap_err();
    let text = err.chain_text();
    assert!(
        text.contains(":4:") && text.contains("network.host"),
        "{text}"
    );
    assert!(f.specs().is_empty(), "no step ran: {:?}", f.specs());
}

#[test]
fn a_missing_required_secret_is_refused_before_any_step() {
    let f = Fixture::new();
    let text = err_text(f.build(&two_stages("base", "RUN --mount=type=secret,id=npmrc two")));
    assert!(
        text.contains(":4:") && text.contains("`npmrc` was not provided"),
        "{text}"
    );
    assert!(f.specs().is_empty());
}

#[test]
fn a_missing_optional_secret_is_not_mounted() {
    let f = Fixture::new();
    let mut o = f.opts();
    o.secrets.insert("other".into(), Secret(b"x".to_vec()));
    f.dockerfile("FROM base\nRUN --mount=type=secret,id=npmrc,required=false true\n");
    f.build_opts(&o).unwrap();
    assert!(f.specs()[0].mounts.is_empty());
}

#[test]
fn a_required_ssh_agent_not_given_is_refused_before_any_step() {
    let f = Fixture::new();
    let text = err_text(f.build(&two_stages(
        "base",
        "RUN --mount=type=ssh,id=gh,required=true two",
    )));
    assert!(text.contains("Dockerfile:4:"), "{text}");
    assert!(
        text.contains("ssh agent `gh` was not provided") && text.contains("--ssh gh"),
        "{text}"
    );
    assert!(f.specs().is_empty());
}

#[test]
fn an_unknown_user_names_the_user_the_file_and_the_line() {
    let f = Fixture::new();
    let text = err_text(f.build("FROM base\nUSER ghost\nRUN true\n"));
    assert!(text.contains("Dockerfile:3:"), "{text}");
    assert!(
        text.contains("`ghost`") && text.contains("/etc/passwd"),
        "{text}"
    );
    assert!(f.specs().is_empty());
}

#[test]
fn an_unknown_chown_group_names_the_group() {
    let f = Fixture::new();
    f.file("a", b"A");
    let text = err_text(f.build("FROM base\nCOPY --chown=app:ghosts a /a\n"));
    assert!(text.contains("Dockerfile:2:"), "{text}");
    assert!(
        text.contains("`ghosts`") && text.contains("/etc/group"),
        "{text}"
    );
}

#[test]
fn an_invalid_chmod_names_the_value() {
    let f = Fixture::new();
    f.file("a", b"A");
    let text = err_text(f.build("FROM base\nCOPY --chmod=rwx a /a\n"));
    assert!(
        text.contains("Dockerfile:2:") && text.contains("`rwx`"),
        "{text}"
    );
}

#[test]
fn a_missing_copy_from_image_names_the_reference_and_the_line() {
    let f = Fixture::new();
    let err = f
        .build("FROM base\nCOPY --from=nosuch/img /x /x\n")
        .unwrap_err();
    let Error::Image {
        line, reference, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*line, reference.as_str()), (2, "nosuch/img"));
}

#[test]
fn a_failed_build_leaves_the_store_consistent_and_tags_nothing() {
    let f = Fixture::new();
    f.file("a", b"A");
    f.fake
        .script(crate::sandbox::ExitStatus::Signal(9), b"killed\n", vec![]);
    let err = f
        .build("FROM base\nCOPY a /a\nRUN make\nCOPY a /b\n")
        .unwrap_err();
    let Error::Step { line, source, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*line, 3);
    assert!(
        matches!(source.as_ref(), StepError::Run { .. }),
        "{source:?}"
    );
    assert!(f.store.resolve("out").is_err());
    let report = f.store.fsck().unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    // The steps before the failure are cached for the next try.
    f.file("a", b"A");
    let out = f
        .build("FROM base\nCOPY a /a\nRUN make\nCOPY a /b\n")
        .unwrap();
    assert_eq!(
        out.steps.iter().map(|s| s.cached).collect::<Vec<_>>(),
        [true, false, false]
    );
}

#[test]
fn a_bind_source_outside_the_context_is_refused_naming_it() {
    let f = Fixture::new();
    let text = err_text(f.build("FROM base\nRUN --mount=type=bind,source=../x,target=/m true\n"));
    assert!(
        text.contains("Dockerfile:2:") && text.contains("`../x`"),
        "{text}"
    );
    assert!(f.specs().is_empty());
}

#[test]
fn a_missing_bind_source_names_it_and_the_context() {
    let f = Fixture::new();
    let text =
        err_text(f.build("FROM base\nRUN --mount=type=bind,source=nothere,target=/m true\n"));
    assert!(
        text.contains("`nothere`") && text.contains("build context"),
        "{text}"
    );
    assert!(f.specs().is_empty());
}
