//! `--cache-to` / `--cache-from` with a cache directory between two fixtures (two stores, two
//! context directories): the layer keys do not depend on either, a fresh store runs nothing,
//! and a layer whose bytes do not match its digest is rebuilt.
use crate::cache::remote::{CacheExport, CacheLocation, CacheMode};
use crate::sandbox::{ExitStatus, ScriptedChange};

use super::super::{BuildOutcome, StepCache};
use super::Fixture;

const DOCKERFILE: &str =
    "FROM base AS b\nCOPY a /a\nRUN make\nFROM base\nCOPY --from=b /tmp/made /made\nCOPY c /c\n";

fn fixture() -> Fixture {
    let f = Fixture::new();
    f.file("a", b"A");
    f.file("c", b"C");
    f.fake.script(
        ExitStatus::Code(0),
        b"",
        vec![ScriptedChange::Write {
            path: "tmp/made".into(),
            content: b"MADE".to_vec(),
            mode: 0o644,
        }],
    );
    f
}

fn answers(out: &BuildOutcome) -> Vec<StepCache> {
    out.steps.iter().map(|s| s.cache).collect()
}

#[test]
fn a_second_store_in_another_directory_answers_every_step_from_a_cache_directory() {
    let cache = tempfile::tempdir().unwrap();
    let a = fixture();
    let b = fixture();
    assert_ne!(a.ctx(), b.ctx());
    let mut opts = a.opts();
    a.dockerfile(DOCKERFILE);
    opts.cache_to = vec![CacheExport {
        location: CacheLocation::Local(cache.path().to_path_buf()),
        mode: CacheMode::Max,
        ignore_error: false,
    }];
    let one = a.build_opts(&opts).unwrap();
    assert_eq!(answers(&one), [StepCache::Ran; 4]);

    b.dockerfile(DOCKERFILE);
    let mut opts = b.opts();
    opts.cache_from = vec![CacheLocation::Local(cache.path().to_path_buf())];
    let two = b.build_opts(&opts).unwrap();
    let keys = |o: &BuildOutcome| {
        o.steps
            .iter()
            .map(|s| s.cache_key.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&two), keys(&one));
    assert_eq!(answers(&two), [StepCache::Remote; 4]);
    assert!(b.specs().is_empty(), "no RUN reached the sandbox");
    assert_eq!(two.image.digest(), one.image.digest());

    // The RUN's layer, poisoned in the cache, on a third store: it runs, the image is the same.
    let c = fixture();
    let blobs = cache.path().join("blobs/sha256");
    let made = a
        .store
        .root()
        .join("cache-v1/keys")
        .read_dir()
        .unwrap()
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap())
        .map(|b| serde_json::from_slice::<crate::cache::CachedLayer>(&b).unwrap())
        .find(|l| !one.image.layers().contains(&l.descriptor))
        .unwrap();
    let path = blobs.join(made.descriptor.digest.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    c.dockerfile(DOCKERFILE);
    let mut opts = c.opts();
    opts.cache_from = vec![CacheLocation::Local(cache.path().to_path_buf())];
    let three = c.build_opts(&opts).unwrap();
    assert_eq!(
        answers(&three),
        [
            StepCache::Remote,
            StepCache::Ran,
            StepCache::Remote,
            StepCache::Remote
        ]
    );
    assert_eq!(c.specs().len(), 1);
    assert_eq!(three.image.digest(), one.image.digest());
}

/// The store directory of the cache mount `id` (as `step::mounts` names it).
fn mount_dir(f: &Fixture, id: &str) -> std::path::PathBuf {
    let key = crate::oci::Digest::sha256(id.as_bytes());
    f.store
        .root()
        .join("cache-v1/mounts")
        .join(&key.hex()[..32])
}

fn cache_mounts(dir: &std::path::Path) -> Vec<String> {
    let from = [CacheLocation::Local(dir.to_path_buf())];
    crate::cache::remote::RemoteCache::load(&from, None, &crate::progress::NoopReporter)
        .mount_keys()
}

#[test]
fn a_cache_mount_s_contents_reach_a_changed_step_in_another_store_through_mode_max() {
    let (max, min) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let to = |dir: &tempfile::TempDir, mode| CacheExport {
        location: CacheLocation::Local(dir.path().to_path_buf()),
        mode,
        ignore_error: false,
    };
    let a = Fixture::new();
    // What an earlier RUN left in runner A's cache mount.
    let dir_a = mount_dir(&a, "pip");
    std::fs::create_dir_all(dir_a.join("wheels")).unwrap();
    std::fs::write(dir_a.join("wheels/w.whl"), b"WHEEL").unwrap();
    a.dockerfile(
        "FROM base\nRUN --mount=type=cache,id=pip,target=/root/.cache \
         --mount=type=secret,id=tok --mount=type=tmpfs,target=/t make\n",
    );
    let mut opts = a.opts();
    opts.secrets
        .insert("tok".into(), crate::builder::Secret(b"s3cr3t".to_vec()));
    opts.cache_to = vec![to(&max, CacheMode::Max), to(&min, CacheMode::Min)];
    a.build_opts(&opts).unwrap();
    // One layer per cache mount id in mode=max; none in mode=min; never the secret or tmpfs.
    assert_eq!(
        cache_mounts(max.path()),
        [crate::cache::remote::mount_key("pip")]
    );
    assert!(cache_mounts(min.path()).is_empty());

    let b = Fixture::new();
    b.dockerfile(
        "FROM base\nRUN --mount=type=cache,id=pip,target=/root/.cache \
         --mount=type=secret,id=tok --mount=type=tmpfs,target=/t make again\n",
    );
    let mut opts = b.opts();
    opts.secrets
        .insert("tok".into(), crate::builder::Secret(b"s3cr3t".to_vec()));
    opts.cache_from = vec![CacheLocation::Local(max.path().to_path_buf())];
    let out = b.build_opts(&opts).unwrap();
    assert_eq!(answers(&out), [StepCache::Ran]);
    let dir_b = mount_dir(&b, "pip");
    assert_eq!(std::fs::read(dir_b.join("wheels/w.whl")).unwrap(), b"WHEEL");
    // A mount that already has files is left as it is.
    std::fs::write(dir_b.join("wheels/w.whl"), b"LOCAL").unwrap();
    b.dockerfile("FROM base\nRUN --mount=type=cache,id=pip,target=/root/.cache make 3\n");
    let mut opts = b.opts();
    opts.cache_from = vec![CacheLocation::Local(max.path().to_path_buf())];
    b.build_opts(&opts).unwrap();
    assert_eq!(std::fs::read(dir_b.join("wheels/w.whl")).unwrap(), b"LOCAL");
}

#[test]
fn cache_mount_contents_that_do_not_verify_are_not_restored() {
    let cache = tempfile::tempdir().unwrap();
    let a = Fixture::new();
    let dir_a = mount_dir(&a, "/root/.cache");
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::write(dir_a.join("f"), b"GOOD").unwrap();
    a.dockerfile("FROM base\nRUN --mount=type=cache,target=/root/.cache make\n");
    let mut opts = a.opts();
    opts.cache_to = vec![CacheExport {
        location: CacheLocation::Local(cache.path().to_path_buf()),
        mode: CacheMode::Max,
        ignore_error: false,
    }];
    a.build_opts(&opts).unwrap();
    // Poison every blob holding the file's bytes (uncompressed layers).
    let mut poisoned = 0;
    for e in std::fs::read_dir(cache.path().join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        if let Some(i) = bytes.windows(4).position(|w| w == b"GOOD") {
            let mut bad = bytes.clone();
            bad[i..i + 4].copy_from_slice(b"EVIL");
            std::fs::write(&p, bad).unwrap();
            poisoned += 1;
        }
    }
    assert_eq!(poisoned, 1);
    let b = Fixture::new();
    b.dockerfile("FROM base\nRUN --mount=type=cache,target=/root/.cache make 2\n");
    let mut opts = b.opts();
    opts.cache_from = vec![CacheLocation::Local(cache.path().to_path_buf())];
    b.build_opts(&opts).unwrap();
    assert!(!mount_dir(&b, "/root/.cache").join("f").exists());
}
