//! [`LayerWriter`]: entries in, a compressed layer and its `diff_id` out, in one streaming pass.
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::oci::{Digest, MediaType};

use super::compress::Compression;
use super::entry::{validate_path, Entry, EntryKind, FileSource};
use super::gzip::{ParallelGzipWriter, Side};
use super::stats::LayerStats;
use super::tar::{header_bytes, pad, END_OF_ARCHIVE};
use super::walk::{SortedWalk, WalkOptions};
use super::{Error, Result};

const READ_BUF: usize = 1 << 20;
/// Batches of walked entries (one per directory read, about) the walk may run ahead of the tar.
const WALK_BATCHES_AHEAD: usize = 64;
/// The largest zstd worker job at levels 2-6 (see [`zstd_job_size`]).
#[cfg(feature = "zstd")]
const ZSTD_FAST_JOB_CAP: u32 = 4 << 20;

/// Bytes per zstd worker job at `level`; 0 is libzstd's own choice, 4x the level's window (8 MiB
/// at level 3, 16 MiB at 9, 32 MiB from 16), which is what `zstd -N -T2` uses.
///
/// Measured on the 1 GiB corpus (issue #21, docs/bench/NOTES.md): the job size trades bytes and
/// speed against memory, as each of the two workers holds its job's input and output plus the
/// queue. libzstd's size gives the CLI's ratio (1% smaller than 4 MiB jobs at level 9, 0.9% at
/// 12) and is faster from level 9, at the CLI's memory (143 MiB at level 9, 205 at 12, the CLI
/// 132 and 206). At levels 2-6 it would take the peak RSS of a 1 GiB layer to 73-76 MiB, over
/// kiln's 64 MiB layer budget, for 0.3% of bytes: there jobs are capped at 4 MiB (49 MiB RSS at
/// the default level 3, smaller and faster than `zstd -3 -T2`). Level 1's own job is 2 MiB.
/// A fixed function of the level keeps the output independent of the worker count.
#[cfg(feature = "zstd")]
fn zstd_job_size(level: i32) -> u32 {
    match level {
        2..=6 => ZSTD_FAST_JOB_CAP,
        _ => 0,
    }
}
/// How to write a layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerOptions {
    /// Compression and level.
    pub compression: Compression,
    /// Compression threads; 0 means one per available core.
    pub threads: usize,
    /// The build epoch: every mtime is clamped to it (`min(mtime, epoch)`; `i64::MAX` keeps
    /// them).
    pub epoch: i64,
}

impl LayerOptions {
    fn thread_count(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// What a finished layer is: its diff_id, sizes and media type, and what it cost.
#[derive(Debug, Clone)]
pub struct LayerSummary {
    /// SHA-256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// Bytes written to the sink (the blob's size).
    pub size: u64,
    /// The layer's media type.
    pub media_type: MediaType,
    /// Per-stage counters.
    pub stats: LayerStats,
}

/// Counts bytes written through it.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Encoder<W: Write + Send + 'static> {
    Plain(Counting<W>),
    Gzip(ParallelGzipWriter<W>),
    #[cfg(feature = "zstd")]
    Zstd(zstd::stream::write::Encoder<'static, Counting<W>>),
}

impl<W: Write + Send + 'static> Encoder<W> {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.write_all(buf),
            Encoder::Gzip(w) => w.write_all(buf),
            #[cfg(feature = "zstd")]
            Encoder::Zstd(w) => w.write_all(buf),
        }
    }

    /// Returns the sink, the bytes written to it and the compression threads' busy time.
    fn finish(self) -> io::Result<(W, u64, Option<Duration>)> {
        match self {
            Encoder::Plain(mut w) => {
                w.flush()?;
                Ok((w.inner, w.count, None))
            }
            Encoder::Gzip(w) => w.finish().map(|(w, n, busy)| (w, n, Some(busy))),
            #[cfg(feature = "zstd")]
            Encoder::Zstd(w) => {
                let mut c = w.finish()?;
                c.flush()?;
                Ok((c.inner, c.count, None))
            }
        }
    }
}

/// Hashes `bytes` into the diff_id and adds the time it took, wall and the thread's CPU, to the
/// stats; returns the wall time.
fn hash_timed(hasher: &mut Sha256, stats: &mut LayerStats, bytes: &[u8]) -> Duration {
    let t = Instant::now();
    // Thread CPU time is a system call (~0.2 µs), counted in the hash's cost.
    let cpu = super::stats::thread_cpu_seconds();
    hasher.update(bytes);
    stats.hash_cpu_seconds += super::stats::thread_cpu_seconds() - cpu;
    let wall = t.elapsed();
    stats.hash_seconds += wall.as_secs_f64();
    wall
}

/// Writes a deterministic layer into `W`. See the module doc for the rules.
pub struct LayerWriter<W: Write + Send + 'static> {
    enc: Encoder<W>,
    hasher: Sha256,
    header: Vec<u8>,
    buf: Vec<u8>,
    opts: LayerOptions,
    stats: LayerStats,
    start: Instant,
    encode_time: Duration,
    /// File bytes read so far, for a progress view on another thread.
    read: Arc<AtomicU64>,
}

impl<W: Write + Send + 'static> LayerWriter<W> {
    /// Starts a layer that will be written to `sink`.
    pub fn new(sink: W, opts: LayerOptions) -> Result<Self> {
        let threads = opts.thread_count();
        let enc = match opts.compression {
            Compression::None => Encoder::Plain(Counting {
                inner: sink,
                count: 0,
            }),
            Compression::Gzip { level } => {
                Encoder::Gzip(ParallelGzipWriter::new(sink, level, threads))
            }
            #[cfg(feature = "zstd")]
            Compression::Zstd { level } => {
                let mut e = zstd::stream::write::Encoder::new(
                    Counting {
                        inner: sink,
                        count: 0,
                    },
                    level,
                )
                .map_err(Error::Write)?;
                // nbWorkers >= 1 gives output independent of the worker count (facebook/zstd#2238);
                // 0 (single-threaded mode) would give different bytes.
                e.multithread(threads as u32).map_err(Error::Write)?;
                e.include_checksum(false).map_err(Error::Write)?;
                e.set_parameter(zstd::stream::raw::CParameter::JobSize(zstd_job_size(level)))
                    .map_err(Error::Write)?;
                Encoder::Zstd(e)
            }
            #[cfg(not(feature = "zstd"))]
            Compression::Zstd { .. } => {
                return Err(Error::InvalidCompression {
                    value: "zstd (this kiln was built without the zstd feature)".into(),
                })
            }
        };
        Ok(LayerWriter {
            enc,
            hasher: Sha256::new(),
            header: Vec::with_capacity(2048),
            buf: vec![0; READ_BUF],
            opts,
            stats: LayerStats {
                compress_threads: match opts.compression {
                    Compression::None => 0,
                    _ => threads,
                },
                ..LayerStats::default()
            },
            start: Instant::now(),
            encode_time: Duration::ZERO,
            read: Arc::new(AtomicU64::new(0)),
        })
    }

    /// A counter of the file bytes read so far (regular files' contents), which another thread
    /// may watch to show the layer's progress.
    pub fn bytes_read(&self) -> Arc<AtomicU64> {
        self.read.clone()
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<()> {
        hash_timed(&mut self.hasher, &mut self.stats, bytes);
        let t = Instant::now();
        self.enc.write_all(bytes).map_err(Error::Write)?;
        self.encode_time += t.elapsed();
        self.stats.bytes_tarred += bytes.len() as u64;
        Ok(())
    }

    /// Appends one entry. Entries must come sorted by path, parents first, for a canonical layer;
    /// [`walk`](crate::layer::walk) returns them that way.
    pub fn append(&mut self, entry: &Entry) -> Result<()> {
        validate_path(&entry.path).map_err(|reason| Error::InvalidPath {
            path: String::from_utf8_lossy(&entry.path).into_owned(),
            reason,
        })?;
        self.stats.files_walked += 1;
        let mut header = std::mem::take(&mut self.header);
        header.clear();
        header_bytes(entry, entry.mtime.min(self.opts.epoch), &mut header);
        let r = self.emit(&header);
        self.header = header;
        r?;
        if let EntryKind::File { size, source } = &entry.kind {
            match source {
                FileSource::Bytes(b) => {
                    self.stats.bytes_read += b.len() as u64;
                    self.read.fetch_add(b.len() as u64, Ordering::Relaxed);
                    self.emit(b)?;
                }
                FileSource::Path(p) => self.copy_file(p, *size)?,
            }
            let mut padding = std::mem::take(&mut self.header);
            padding.clear();
            pad(&mut padding, *size);
            let r = self.emit(&padding);
            self.header = padding;
            r?;
        }
        Ok(())
    }

    fn copy_file(&mut self, path: &Path, size: u64) -> Result<()> {
        let mut f = File::open(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.copy_reader(&mut f, size, path)
    }

    /// Copies exactly `size` bytes from `src` into the tar stream. With gzip the bytes are read
    /// straight into the compressor's block buffer and hashed there; otherwise through `buf`.
    fn copy_reader(&mut self, src: &mut dyn Read, size: u64, path: &Path) -> Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        let mut total = 0u64;
        let result = loop {
            let want = usize::try_from(size - total).unwrap_or(usize::MAX);
            if want == 0 {
                break Ok(());
            }
            let t = Instant::now();
            let (hasher, stats) = (&mut self.hasher, &mut self.stats);
            let mut hashed = Duration::ZERO;
            let mut seen = |bytes: &[u8]| hashed = hash_timed(hasher, stats, bytes);
            let read = match &mut self.enc {
                Encoder::Gzip(w) => w.read_from(src, want, &mut seen),
                _ => match src.read(&mut buf[..want.min(READ_BUF)]) {
                    // A Read that claims more than it was given is not trusted.
                    Ok(n) => {
                        let n = n.min(want.min(READ_BUF));
                        seen(&buf[..n]);
                        Ok(n)
                    }
                    Err(e) => Err(Side::Read(e)),
                },
            };
            let read_end = Instant::now();
            let n = match read {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(Side::Read(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(Side::Read(source)) => {
                    break Err(Error::Read {
                        path: path.to_path_buf(),
                        source,
                    })
                }
                Err(Side::Write(e)) => break Err(Error::Write(e)),
            };
            self.stats.read_seconds += ((read_end - t).saturating_sub(hashed)).as_secs_f64();
            // Handing the bytes on (and waiting for a free block or the encoder) is encode time.
            let handed = match &mut self.enc {
                Encoder::Gzip(w) => w.submit_full(),
                other => other.write_all(&buf[..n]),
            };
            self.encode_time += read_end.elapsed();
            if let Err(e) = handed {
                break Err(Error::Write(e));
            }
            self.stats.bytes_tarred += n as u64;
            self.read.fetch_add(n as u64, Ordering::Relaxed);
            total += n as u64;
        };
        self.buf = buf;
        result?;
        // A file that grew since it was listed: one more byte is there to read.
        if total == size {
            let mut probe = [0u8; 1];
            loop {
                match src.read(&mut probe) {
                    Ok(0) => break,
                    Ok(_) => {
                        return Err(Error::FileChanged {
                            path: path.to_path_buf(),
                            expected: size,
                            actual: size + 1,
                        })
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(source) => {
                        return Err(Error::Read {
                            path: path.to_path_buf(),
                            source,
                        })
                    }
                }
            }
        }
        self.stats.bytes_read += total;
        if total != size {
            return Err(Error::FileChanged {
                path: path.to_path_buf(),
                expected: size,
                actual: total,
            });
        }
        Ok(())
    }

    /// Appends an entry whose data (for a regular file, exactly its size) comes from `data`.
    /// `what` names the source in errors (an archive member, say).
    pub fn append_from(&mut self, entry: &Entry, data: &mut dyn Read, what: &Path) -> Result<()> {
        let EntryKind::File { size, .. } = entry.kind else {
            return self.append(entry);
        };
        let placeholder = Entry {
            kind: EntryKind::File {
                size,
                source: FileSource::Bytes(Vec::new().into()),
            },
            ..entry.clone()
        };
        validate_path(&entry.path).map_err(|reason| Error::InvalidPath {
            path: String::from_utf8_lossy(&entry.path).into_owned(),
            reason,
        })?;
        self.stats.files_walked += 1;
        let mut header = std::mem::take(&mut self.header);
        header.clear();
        super::tar::header_bytes(&placeholder, entry.mtime.min(self.opts.epoch), &mut header);
        let r = self.emit(&header);
        self.header = header;
        r?;
        let mut limited = data.take(size);
        self.copy_reader(&mut limited, size, what)?;
        let mut padding = std::mem::take(&mut self.header);
        padding.clear();
        pad(&mut padding, size);
        let r = self.emit(&padding);
        self.header = padding;
        r
    }

    /// Walks `root` and appends everything below it. The walk runs on its own thread and hands
    /// entries over in sorted order as it finds them (a sorted walk), so tarring and compressing
    /// start with the first directories rather than after the whole tree is listed.
    pub fn append_dir(&mut self, root: &Path, walk_opts: &WalkOptions) -> Result<()> {
        let mut walker = SortedWalk::new(root, walk_opts.clone())?;
        let (tx, rx) = sync_channel::<Result<Vec<Entry>>>(WALK_BATCHES_AHEAD);
        std::thread::scope(|scope| {
            let walking = scope.spawn(move || {
                let mut busy = Duration::ZERO;
                loop {
                    let t = Instant::now();
                    let batch = walker.next_batch().transpose();
                    busy += t.elapsed();
                    let Some(batch) = batch else { break };
                    let failed = batch.is_err();
                    // A closed channel means the writer failed and stopped listening.
                    if tx.send(batch).is_err() || failed {
                        break;
                    }
                }
                busy
            });
            // Owned here, so a panic below drops it while unwinding and a walk blocked on a full
            // channel wakes up; the scope would otherwise wait for that walk for ever.
            let rx = rx;
            let mut result = Ok(());
            for batch in &rx {
                result = batch.and_then(|entries| entries.iter().try_for_each(|e| self.append(e)));
                if result.is_err() {
                    break;
                }
            }
            drop(rx);
            match walking.join() {
                Ok(busy) => self.stats.walk_seconds += busy.as_secs_f64(),
                // Its channel closed early, so `result` may look fine: the layer is incomplete.
                Err(_) if result.is_ok() => {
                    return Err(Error::Read {
                        path: root.to_path_buf(),
                        source: io::Error::other("the walk stopped unexpectedly"),
                    })
                }
                Err(_) => {}
            }
            result
        })
    }

    /// Ends the archive and the compressed stream; returns the sink and the summary.
    pub fn finish(mut self) -> Result<(W, LayerSummary)> {
        self.emit(&END_OF_ARCHIVE)?;
        let t = Instant::now();
        let (sink, size, busy) = self.enc.finish().map_err(Error::Write)?;
        self.encode_time += t.elapsed();
        let mut stats = self.stats;
        stats.bytes_hashed = stats.bytes_tarred;
        stats.bytes_compressed_in = match self.opts.compression {
            Compression::None => 0,
            _ => stats.bytes_tarred,
        };
        stats.compress_seconds = match (self.opts.compression, busy) {
            (Compression::None, _) => 0.0,
            (_, Some(busy)) => busy.as_secs_f64(),
            // zstd's workers are internal: count the time the pipeline waited on them.
            (_, None) => self.encode_time.as_secs_f64(),
        };
        stats.bytes_written = size;
        stats.wall_seconds = self.start.elapsed().as_secs_f64();
        let summary = LayerSummary {
            diff_id: Digest::from_sha256_bytes(&self.hasher.finalize()),
            uncompressed_size: stats.bytes_tarred,
            size,
            media_type: self.opts.compression.media_type(),
            stats,
        };
        Ok((sink, summary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Entry;

    fn build(
        entries: &[Entry],
        compression: Compression,
        threads: usize,
    ) -> (Vec<u8>, LayerSummary) {
        let mut w = LayerWriter::new(
            Vec::new(),
            LayerOptions {
                compression,
                threads,
                epoch: 100,
            },
        )
        .unwrap();
        for e in entries {
            w.append(e).unwrap();
        }
        w.finish().unwrap()
    }

    fn sample() -> Vec<Entry> {
        let mut f = Entry::file("d/f", 0o4755, b"data".repeat(100_000));
        f.uid = 1000;
        f.gid = 3_000_000; // needs PAX
        f.mtime = 1_000_000; // clamped to 100
        f.xattrs = vec![("user.k".into(), b"v\0bin".to_vec())];
        vec![
            Entry::dir("d", 0o755),
            f,
            Entry::symlink("d/l", "f"),
            Entry::whiteout(b"d/gone"),
        ]
    }

    #[test]
    fn diff_id_is_the_sha256_of_the_tar_and_tar_reads_back() {
        let (tar, s) = build(&sample(), Compression::None, 1);
        assert_eq!(s.diff_id, Digest::sha256(&tar));
        assert_eq!(s.size, tar.len() as u64);
        let mut a = ::tar::Archive::new(&tar[..]);
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let path = e.path().unwrap().into_owned();
            assert!(h.mtime().unwrap() <= 100);
            if path.to_str() == Some("d/f") {
                assert_eq!(h.mode().unwrap(), 0o4755);
                assert_eq!(h.uid().unwrap(), 1000);
                assert_eq!(h.mtime().unwrap(), 100);
                assert_eq!(h.username_bytes(), Some(&b""[..]));
                let x: Vec<_> = e
                    .pax_extensions()
                    .unwrap()
                    .unwrap()
                    .map(|x| x.unwrap().key().unwrap().to_string())
                    .collect();
                assert!(x.contains(&"SCHILY.xattr.user.k".to_string()), "{x:?}");
                assert!(x.contains(&"gid".to_string()));
                let mut body = Vec::new();
                e.read_to_end(&mut body).unwrap();
                assert_eq!(body.len(), 400_000);
            }
            seen.push(path.to_string_lossy().into_owned());
        }
        assert_eq!(seen, ["d/", "d/f", "d/l", "d/.wh.gone"]);
    }

    /// zstd's multithreaded jobs ([`zstd_job_size`]): a layer of several jobs must give the same
    /// bytes whatever the worker count, with kiln's capped job (level 3) and libzstd's own
    /// (level 9, 16 MiB jobs).
    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_layers_of_several_jobs_ignore_thread_count() {
        // 40 MiB of compressible, non-repeating text: ten jobs at level 3, three at level 9.
        let mut body = Vec::with_capacity(40 << 20);
        let mut x: u64 = 1;
        while body.len() < 40 << 20 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            body.extend_from_slice(format!("line {} of {}\n", x >> 40, x % 1000).as_bytes());
        }
        let entries = [Entry::file("big", 0o644, body)];
        for level in [3, 9] {
            let c = Compression::Zstd { level };
            let (one, _) = build(&entries, c, 1);
            for threads in [2, 3] {
                let (more, _) = build(&entries, c, threads);
                assert!(one == more, "{c} bytes differ with {threads} threads");
            }
        }
    }

    /// The job sizes the front was measured with (docs/bench/NOTES.md): changing them changes
    /// every zstd layer's bytes, so it must be a decision, not an accident.
    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_jobs_are_capped_at_the_fast_levels_only() {
        assert_eq!(zstd_job_size(1), 0);
        for level in 2..=6 {
            assert_eq!(zstd_job_size(level), 4 << 20, "level {level}");
        }
        for level in 7..=19 {
            assert_eq!(zstd_job_size(level), 0, "level {level}");
        }
    }

    #[test]
    fn compressed_layers_decompress_to_the_diff_id_and_ignore_thread_count() {
        let (plain, p) = build(&sample(), Compression::None, 1);
        for c in [
            Compression::Gzip { level: 6 },
            Compression::Zstd { level: 3 },
        ] {
            let (one, s1) = build(&sample(), c, 1);
            let (two, s2) = build(&sample(), c, 2);
            assert_eq!(one, two, "{c}");
            assert_eq!(s1.diff_id, p.diff_id);
            assert_eq!(s2.size, two.len() as u64);
            let mut back = Vec::new();
            match c {
                Compression::Gzip { .. } => {
                    flate2::read::MultiGzDecoder::new(&one[..])
                        .read_to_end(&mut back)
                        .unwrap();
                }
                _ => {
                    zstd::stream::read::Decoder::new(&one[..])
                        .unwrap()
                        .read_to_end(&mut back)
                        .unwrap();
                }
            }
            assert_eq!(back, plain);
        }
    }

    #[test]
    fn file_data_read_from_disk_gives_the_same_layer_as_from_memory() {
        // Files go through `copy_reader` (read straight into the gzip block buffer), bytes
        // through `emit`: the layer must not depend on which. Sizes straddle block boundaries.
        let dir = tempfile::tempdir().unwrap();
        let sizes = [
            0usize,
            1,
            4095,
            super::super::gzip::BLOCK_SIZE - 3,
            3 << 20,
            77,
        ];
        let mut on_disk = Vec::new();
        let mut in_memory = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..len).map(|j| (j * 7 % 251 + i) as u8).collect();
            let p = dir.path().join(format!("f{i}"));
            std::fs::write(&p, &data).unwrap();
            let mut e = Entry::file(format!("f{i}"), 0o644, data);
            in_memory.push(e.clone());
            e.kind = EntryKind::File {
                size: len as u64,
                source: FileSource::Path(p),
            };
            on_disk.push(e);
        }
        for c in [
            Compression::None,
            Compression::Gzip { level: 6 },
            Compression::Zstd { level: 3 },
        ] {
            let (a, sa) = build(&on_disk, c, 2);
            let (b, sb) = build(&in_memory, c, 1);
            assert!(a == b, "{c}: layers differ");
            assert_eq!(sa.diff_id, sb.diff_id);
            assert_eq!(sa.stats.bytes_tarred, sb.stats.bytes_tarred);
            assert_eq!(sa.stats.bytes_read, sizes.iter().sum::<usize>() as u64);
        }
    }

    /// Hands out its data in odd-sized pieces, with an `Interrupted` now and then.
    struct Choppy<'a> {
        data: &'a [u8],
        calls: usize,
    }

    impl Read for Choppy<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 5 == 0 {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            let n = [1, 7, 4099, 65_537, 300_001][self.calls % 5]
                .min(buf.len())
                .min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_reads_and_interruptions_do_not_change_the_layer() {
        let data: Vec<u8> = (0..3 * super::super::gzip::BLOCK_SIZE + 12_345)
            .map(|i| (i * 31 % 253) as u8)
            .collect();
        let from_memory = Entry::file("f", 0o644, data.clone());
        for c in [
            Compression::None,
            Compression::Gzip { level: 6 },
            Compression::Zstd { level: 3 },
        ] {
            let (expected, _) = build(std::slice::from_ref(&from_memory), c, 1);
            for threads in [1, 3] {
                let opts = LayerOptions {
                    compression: c,
                    threads,
                    epoch: 100,
                };
                let mut w = LayerWriter::new(Vec::new(), opts).unwrap();
                let mut src = Choppy {
                    data: &data,
                    calls: 0,
                };
                w.append_from(&from_memory, &mut src, Path::new("f"))
                    .unwrap();
                let (got, _) = w.finish().unwrap();
                assert!(got == expected, "{c}, {threads} threads: layers differ");
            }
        }
    }

    #[test]
    fn a_walk_error_after_entries_were_written_fails_the_layer() {
        // 100 directories come out in batches before the socket in the last one is found.
        let dir = tempfile::tempdir().unwrap();
        for i in 0..100 {
            let d = dir.path().join(format!("d{i:03}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("f"), vec![b'x'; 40_000]).unwrap();
        }
        let sock = dir.path().join("d099/s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let opts = LayerOptions {
            compression: Compression::Gzip { level: 1 },
            threads: 2,
            epoch: 0,
        };
        let mut w = LayerWriter::new(Vec::new(), opts).unwrap();
        match w.append_dir(dir.path(), &WalkOptions::default()) {
            Err(Error::Socket { path }) => assert_eq!(path, sock),
            other => panic!("{other:?}"),
        }
        assert!(
            w.stats.files_walked > 100,
            "the error came before any entry was written"
        );
    }

    #[test]
    fn read_and_write_failures_are_told_apart() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("bad sector"))
            }
        }
        let opts = LayerOptions {
            compression: Compression::Gzip { level: 6 },
            threads: 2,
            epoch: 0,
        };
        let e = Entry::file("f", 0o644, vec![0u8; 10]);
        let mut w = LayerWriter::new(Vec::new(), opts).unwrap();
        let err = w.append_from(&e, &mut Broken, Path::new("archive.tar:f"));
        assert!(
            matches!(&err, Err(Error::Read { path, .. }) if path == Path::new("archive.tar:f")),
            "{err:?}"
        );
        // The sink fails once a block is compressed: reported as a write error, not a read one.
        let big = vec![7u8; 16 << 20];
        let e = Entry::file("big", 0o644, Vec::new());
        let e = Entry {
            kind: EntryKind::File {
                size: big.len() as u64,
                source: FileSource::Bytes(Vec::new().into()),
            },
            ..e
        };
        let mut w = LayerWriter::new(crate::layer::FullSink, opts).unwrap();
        let err = w
            .append_from(&e, &mut &big[..], Path::new("big"))
            .and_then(|()| w.finish().map(|_| ()));
        assert!(matches!(&err, Err(Error::Write(_))), "{err:?}");
    }

    #[test]
    fn a_file_that_shrank_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"12").unwrap();
        let mut e = Entry::file("f", 0o644, Vec::new());
        e.kind = EntryKind::File {
            size: 5,
            source: FileSource::Path(p),
        };
        let opts = LayerOptions {
            compression: Compression::Gzip { level: 6 },
            threads: 2,
            epoch: 0,
        };
        let mut w = LayerWriter::new(Vec::new(), opts).unwrap();
        match w.append(&e).unwrap_err() {
            Error::FileChanged {
                path,
                expected: 5,
                actual: 2,
            } => assert!(path.ends_with("f")),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_file_that_grew_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        let e = Entry {
            path: b"f".to_vec(),
            kind: EntryKind::File {
                size: 3,
                source: FileSource::Path(p.clone()),
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: vec![],
        };
        let mut w = LayerWriter::new(Vec::new(), LayerOptions::default()).unwrap();
        let err = w.append(&e).unwrap_err();
        assert!(matches!(err, Error::FileChanged { .. }), "{err}");
    }
}
