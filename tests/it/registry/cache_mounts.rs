//! `RUN --mount=type=cache` contents through the real registry (`--cache-to …,mode=max`):
//! runner A (an empty store) fills a cache mount; runner B (another empty store) runs a changed
//! step and finds runner A's files in the mount, with their owners, as root and as the
//! unprivileged user; a secret mounted inside the cache mount never reaches the cache.
use crate::support::registry::{Mode, Registry};
use crate::support::runas::{KilnAs, Who};

const SECRET: &str = "cache-mount-secret-value";

fn runner(who: Who) -> Option<KilnAs> {
    let k = KilnAs::new(who)?;
    k.busybox().then_some(k)
}

fn a_changed_step_sees_the_other_runner_s_cache_mount(who: Who) {
    let Some(a) = runner(who) else { return };
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let cache = format!("{}/cache:mounts", reg.addr);
    let mount = "--mount=type=cache,id=dl,target=/var/cache/dl";
    let secret = "--mount=type=secret,id=tok,target=/var/cache/dl/token";
    let ctx_a = a.context(
        "ctx-a",
        &format!(
            "FROM busybox\nRUN {mount} {secret} mkdir -p /var/cache/dl/sub && \
             cp /var/cache/dl/token /dev/null && echo from-a > /var/cache/dl/sub/a.txt && \
             chown 1000:1001 /var/cache/dl/sub/a.txt && echo a > /a\n"
        ),
        &[],
    );
    let tok = a.path("tok");
    std::fs::write(&tok, SECRET).unwrap();
    a.give(&tok);
    let secret_arg = format!("id=tok,src={}", tok.display());
    a.ok(&[
        "build",
        ctx_a.to_str().unwrap(),
        "--secret",
        &secret_arg,
        "--cache-to",
        &format!("type=registry,ref={cache},mode=max"),
    ]);

    // Runner B: another empty store, a changed step (it runs), the same mount id.
    let Some(b) = runner(who) else { return };
    let ctx_b = b.context(
        "ctx-b",
        &format!(
            "FROM busybox\nRUN {mount} test \"$(cat /var/cache/dl/sub/a.txt)\" = from-a && \
             test \"$(stat -c %u:%g /var/cache/dl/sub/a.txt)\" = 1000:1001 && \
             test ! -s /var/cache/dl/token && echo b > /b\n"
        ),
        &[],
    );
    let before = reg.accesses().len();
    b.ok(&[
        "build",
        ctx_b.to_str().unwrap(),
        "--cache-from",
        &cache,
        "--cache-to",
        &format!("type=registry,ref={cache},mode=max"),
    ]);
    // The mount's layer came from the registry (B had nothing).
    let gets = reg
        .accesses()
        .into_iter()
        .skip(before)
        .filter(|x| x.method == "GET" && x.path.contains("/blobs/sha256:"))
        .count();
    assert!(gets >= 2, "the cache config and the mount's layer");
    // Nothing of the secret in runner B's store: the mount's directory (the cache layer's
    // members, unpacked) included.
    for f in b.store_files() {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{who:?}: the secret is in {}",
            f.display()
        );
    }
}

#[test]
fn a_cache_mount_s_contents_reach_another_runner_through_the_registry_as_root() {
    a_changed_step_sees_the_other_runner_s_cache_mount(Who::Root);
}

#[test]
fn a_cache_mount_s_contents_reach_another_runner_through_the_registry_as_unprivileged_user() {
    a_changed_step_sees_the_other_runner_s_cache_mount(Who::User);
}
