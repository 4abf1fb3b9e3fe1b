//! The layer cache across builds in one store: what a second build reuses, which step keys a
//! change moves, `no_cache`, and that a cached RUN never reaches the sandbox.
use crate::sandbox::{ExitStatus, ScriptedChange};

use super::super::BuildOutcome;
use super::{node, Fixture};

const DOCKERFILE: &str = "FROM base\nENV A=1\nCOPY a /a\nCOPY b /b\nRUN make\nWORKDIR /w\n";

fn script_make(f: &Fixture) {
    f.fake.script(
        ExitStatus::Code(0),
        b"",
        vec![ScriptedChange::Write {
            path: "tmp/made".into(),
            content: b"MADE".to_vec(),
            mode: 0o644,
        }],
    );
}

fn cached(out: &BuildOutcome) -> Vec<bool> {
    out.steps.iter().map(|s| s.cached).collect()
}

fn keys(out: &BuildOutcome) -> Vec<String> {
    out.steps.iter().map(|s| s.cache_key.clone()).collect()
}

fn fixture() -> Fixture {
    let f = Fixture::new();
    f.file("a", b"A");
    f.file("b", b"B");
    script_make(&f);
    f
}

#[test]
fn a_second_identical_build_is_all_cache_hits_with_the_same_digest() {
    let f = fixture();
    let one = f.build(DOCKERFILE).unwrap();
    assert_eq!(cached(&one), [true, false, false, false, false]);
    let two = f.build(DOCKERFILE).unwrap();
    assert_eq!(cached(&two), [true; 5]);
    assert_eq!(two.image.digest(), one.image.digest());
    assert_eq!(keys(&two), keys(&one));
    assert_eq!(f.specs().len(), 1, "the cached RUN did not run again");
}

#[test]
fn a_run_answered_by_the_cache_does_not_reach_the_sandbox() {
    let f = fixture();
    f.build("FROM base\nRUN make\n").unwrap();
    let out = f.build("FROM base\nRUN make\nRUN other\n").unwrap();
    let ran: Vec<String> = f.specs().iter().map(|s| s.argv[2].clone()).collect();
    assert_eq!(ran, ["make", "other"]);
    assert_eq!(cached(&out), [true, false]);
    let from_cache = f.layer(&out.image, 1);
    assert_eq!(node(&from_cache, "tmp/made").content, b"MADE");
}

#[test]
fn a_changed_context_file_moves_its_step_key_and_later_keys_only() {
    let f = fixture();
    let one = f.build(DOCKERFILE).unwrap();
    f.file("b", b"B2");
    let two = f.build(DOCKERFILE).unwrap();
    let (k1, k2) = (keys(&one), keys(&two));
    assert_eq!(k1[..2], k2[..2], "ENV and COPY a");
    for i in 2..5 {
        assert_ne!(k1[i], k2[i], "step {i}");
    }
    assert_eq!(cached(&two), [true, true, false, false, false]);
    assert_eq!(f.specs().len(), 2, "the RUN after the change ran again");
}

#[test]
fn touching_a_context_file_without_changing_it_keeps_the_cache() {
    let f = fixture();
    let one = f.build(DOCKERFILE).unwrap();
    let p = f.ctx().join("a");
    let t = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(t)
        .unwrap();
    let two = f.build(DOCKERFILE).unwrap();
    assert_eq!(cached(&two), [true; 5]);
    assert_eq!(two.image.digest(), one.image.digest());
}

#[test]
fn editing_a_comment_changes_nothing() {
    let f = fixture();
    let one = f.build(DOCKERFILE).unwrap();
    let commented = DOCKERFILE.replace("COPY b", "# a new comment\n# another\nCOPY b");
    let two = f.build(&commented).unwrap();
    assert_eq!(keys(&two), keys(&one));
    assert_eq!(cached(&two), [true; 5]);
    assert_eq!(two.image.digest(), one.image.digest());
}

#[test]
fn no_cache_executes_every_step_again_to_the_same_image() {
    let f = fixture();
    let one = f.build(DOCKERFILE).unwrap();
    script_make(&f);
    let mut o = f.opts();
    o.no_cache = true;
    let two = f.build_opts(&o).unwrap();
    assert_eq!(cached(&two), [true, false, false, false, false]);
    assert_eq!(f.specs().len(), 2, "the RUN ran again");
    assert_eq!(two.image.digest(), one.image.digest());
}

#[test]
fn a_new_build_arg_value_runs_the_run_steps_again_with_it() {
    let f = fixture();
    script_make(&f);
    f.dockerfile("FROM base\nARG V\nCOPY a /a\nRUN make\n");
    let mut o = f.opts();
    o.build_args.insert("V".into(), "1".into());
    let one = f.build_opts(&o).unwrap();
    f.build_opts(&o).unwrap();
    o.build_args.insert("V".into(), "2".into());
    let three = f.build_opts(&o).unwrap();
    // Keys chain through the ARG step (src/plan/mod.rs, "Cache keys"): everything after it moves.
    assert_ne!(keys(&one)[2], keys(&three)[2]);
    assert!(!three.steps[2].cached);
    let seen: Vec<Option<String>> = f
        .specs()
        .iter()
        .map(|s| super::env_of(s, "V").map(str::to_string))
        .collect();
    assert_eq!(seen, [Some("1".into()), Some("2".into())]);
}
