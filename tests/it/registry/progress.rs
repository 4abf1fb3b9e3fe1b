//! Blob transfers reported through the `Reporter`: a pull, a push and a lazy layer fetch
//! against the real registry, seen by a recording reporter; and what `--progress plain`,
//! `json` and `quiet` print for a `kiln pull`.
use std::process::Command;
use std::sync::{Arc, Mutex};

use kiln::oci::Digest;
use kiln::progress::{BlobOutcome, Direction, Reporter, TRANSFER_PROGRESS_STEP};
use kiln::transport::{Remote, Target};

use super::{client, push_image, reference, TestImage};
use crate::support::registry::{Mode, Registry};
use crate::support::Kiln;

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Start(Digest, u64, Direction),
    Progress(Digest, u64, u64),
    Retry(Digest),
    Done(Digest, u64, BlobOutcome),
}

#[derive(Default)]
struct Recording(Mutex<Vec<Event>>);

impl Recording {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Reporter for Recording {
    fn on_transfer_start(&self, d: &Digest, size: u64, direction: Direction) {
        let e = Event::Start(d.clone(), size, direction);
        self.0.lock().unwrap().push(e);
    }
    fn on_transfer_progress(&self, d: &Digest, size: u64, done: u64) {
        let e = Event::Progress(d.clone(), size, done);
        self.0.lock().unwrap().push(e);
    }
    fn on_transfer_retry(&self, d: &Digest, _error: &str) {
        self.0.lock().unwrap().push(Event::Retry(d.clone()));
    }
    fn on_transfer_done(&self, d: &Digest, size: u64, outcome: BlobOutcome) {
        let e = Event::Done(d.clone(), size, outcome);
        self.0.lock().unwrap().push(e);
    }
}

/// The events of one blob, in order.
fn of(events: &[Event], digest: &Digest) -> Vec<Event> {
    events
        .iter()
        .filter(|e| match e {
            Event::Start(d, ..) | Event::Progress(d, ..) | Event::Retry(d) | Event::Done(d, ..) => {
                d == digest
            }
        })
        .cloned()
        .collect()
}

/// Checks that `digest` was downloaded in full, reported as start, progress up to its size
/// (one event per [`TRANSFER_PROGRESS_STEP`] and one at the end), done.
fn assert_downloaded(events: &[Event], digest: &Digest, size: u64) {
    let mine = of(events, digest);
    assert_eq!(
        mine.first(),
        Some(&Event::Start(digest.clone(), size, Direction::Download)),
        "{mine:#?}"
    );
    assert_eq!(
        mine.last(),
        Some(&Event::Done(digest.clone(), size, BlobOutcome::Downloaded)),
        "{mine:#?}"
    );
    let done: Vec<u64> = mine
        .iter()
        .filter_map(|e| match e {
            Event::Progress(_, s, done) if *s == size => Some(*done),
            Event::Progress(..) => panic!("a progress event with another size: {mine:#?}"),
            _ => None,
        })
        .collect();
    assert_eq!(done.last(), Some(&size), "{mine:#?}");
    assert!(done.windows(2).all(|w| w[0] < w[1]), "{done:?}");
    assert_eq!(
        done.len() as u64,
        size.div_ceil(TRANSFER_PROGRESS_STEP),
        "{done:?}"
    );
}

fn digests(img: &TestImage) -> Vec<(Digest, u64)> {
    img.blobs()
        .iter()
        .map(|b| (Digest::sha256(b), b.len() as u64))
        .collect()
}

#[test]
fn a_pull_a_push_and_a_lazy_fetch_report_every_blob() {
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    // A layer of 2.5 steps, and one smaller than a step.
    let big = (TRANSFER_PROGRESS_STEP * 5 / 2) as usize;
    let img = TestImage::new(21, &[big, 70_000]);
    let src = reference(&reg, "progress/src:v1");
    push_image(&client(), &src, &img);
    let rec = Arc::new(Recording::default());
    let remote = Remote {
        client: client(),
        jobs: 2,
        reporter: rec.clone(),
    };

    // A pull: every blob, config included.
    let dir = tempfile::tempdir().unwrap();
    let store = kiln::store::Store::open(dir.path()).unwrap();
    let image = kiln::transport::read_into_store(
        &store,
        &Target::Registry(src.to_string()),
        None,
        Some(&remote),
    )
    .unwrap();
    let events = rec.take();
    for (d, size) in digests(&img) {
        assert_downloaded(&events, &d, size);
    }
    // Start, progress, done for the config and the small layer; three progress events for
    // the big one.
    assert_eq!(events.len(), 3 + 5 + 3, "{events:#?}");

    // A push to another repository of the same registry: every blob is mounted (or was
    // there), none uploaded, and each is reported as an upload.
    let dst = reference(&reg, "progress/dst:v1");
    kiln::transport::write_from_store(
        &store,
        &image,
        &Target::Registry(dst.to_string()),
        None,
        Some(&remote),
    )
    .unwrap();
    let events = rec.take();
    for (d, size) in digests(&img) {
        let mine = of(&events, &d);
        assert_eq!(
            mine.first(),
            Some(&Event::Start(d.clone(), size, Direction::Upload)),
            "{mine:#?}"
        );
        assert!(
            matches!(mine.last(), Some(Event::Done(_, s, BlobOutcome::Mounted | BlobOutcome::Existed)) if *s == size),
            "{mine:#?}"
        );
    }

    // A lazy base: nothing moves until a layer is opened; then that layer (and its sibling,
    // with two jobs) is fetched and reported.
    let lazy_dir = tempfile::tempdir().unwrap();
    let lazy = kiln::store::Store::open(lazy_dir.path()).unwrap();
    let base = kiln::transport::read_base_into_store(
        &lazy,
        &Target::Registry(src.to_string()),
        None,
        Some(&remote),
    )
    .unwrap();
    lazy.tag("base:1", &base.descriptor).unwrap();
    let (config, config_size) = digests(&img)[0].clone();
    let events = rec.take();
    assert_downloaded(&events, &config, config_size);
    assert_eq!(events.len(), 3, "only the config moves: {events:#?}");
    let (layer, layer_size) = digests(&img)[1].clone();
    let layers = kiln::transport::LayerSource::new(&lazy, Some(&remote));
    drop(layers.open_blob(&layer).unwrap());
    let events = rec.take();
    assert_downloaded(&events, &layer, layer_size);
}

fn kiln_pull(k: &Kiln, progress: &str, image: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(k.root())
        .args(["--progress", progress, "pull", image])
        .env_remove("KILN_ROOT")
        .output()
        .unwrap();
    crate::support::assert_success(&out, &progress);
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn kiln_pull_prints_one_line_per_blob_plain_events_as_json_and_nothing_quiet() {
    let Some(reg) = Registry::start(Mode::Plain) else {
        return;
    };
    let img = TestImage::new(22, &[1_500_000, 20_000]);
    let r = reference(&reg, "progress/cli:v1");
    push_image(&client(), &r, &img);
    let blobs = digests(&img);

    let plain = kiln_pull(&Kiln::new(), "plain", &r.to_string());
    for (d, _) in &blobs {
        let line = format!("Copying blob {d} done");
        assert_eq!(plain.lines().filter(|l| *l == line).count(), 1, "{plain}");
    }

    let json = kiln_pull(&Kiln::new(), "json", &r.to_string());
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (d, size) in &blobs {
        let d = d.to_string();
        let with = |kind: &str| {
            events
                .iter()
                .filter(|e| e["event"] == kind && e["digest"] == d.as_str())
                .collect::<Vec<_>>()
        };
        let start = with("transfer_start");
        assert_eq!(start.len(), 1, "{json}");
        assert_eq!(start[0]["size"], *size);
        assert_eq!(start[0]["direction"], "download");
        let done = with("transfer_done");
        assert_eq!(done.len(), 1, "{json}");
        assert_eq!(done[0]["outcome"], "downloaded");
        assert_eq!(
            with("transfer_progress").last().unwrap()["done"],
            *size,
            "{json}"
        );
    }

    let quiet = kiln_pull(&Kiln::new(), "quiet", &r.to_string());
    assert_eq!(quiet, "", "quiet prints nothing");
}
