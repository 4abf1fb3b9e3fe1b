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
