//! Parallel gzip whose output does not depend on the number of threads (pigz's scheme).
//!
//! The input is cut into fixed [`BLOCK_SIZE`] blocks. Each block is deflated by a *fresh*
//! `flate2::Compress` primed with the last 32 KiB of the previous block as a dictionary, and ends
//! with a sync flush (the last block with a final flush), so the raw deflate pieces concatenate into
//! one valid stream. A reused-and-reset compressor does not give the same bytes as a fresh one
//! (measured with gzp, see CRATES.md §5), which is why every block gets a new one: the bytes of a
//! block depend only on the block, its predecessor and the level, never on which thread ran it.
//! A writer thread puts blocks back in order and writes them to the sink; the CRC-32 and length
//! for the trailer are computed on the caller's thread, which sees the input in order.
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flate2::{Compress, FlushCompress, Status};

/// Input bytes per independently compressed block (pigz's default).
pub const BLOCK_SIZE: usize = 128 * 1024;
const DICT_SIZE: usize = 32 * 1024;
/// gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown (as Go writes it).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

struct Job {
    seq: u64,
    data: Arc<Vec<u8>>,
    dict: Option<Arc<Vec<u8>>>,
    last: bool,
}

enum Done {
    Block(u64, Vec<u8>),
    Trailer { blocks: u64, trailer: [u8; 8] },
}

/// A `Write` that gzips into `W` using `threads` compression threads, deterministically.
pub struct ParallelGzipWriter<W: Write + Send + 'static> {
    level: u32,
    cur: Vec<u8>,
    prev: Option<Arc<Vec<u8>>>,
    seq: u64,
    crc: crc32fast::Hasher,
    total_in: u64,
    jobs: Option<SyncSender<Job>>,
    done_tx: Option<SyncSender<Done>>,
    workers: Vec<JoinHandle<Duration>>,
    writer: Option<JoinHandle<io::Result<(W, u64)>>>,
}

impl<W: Write + Send + 'static> ParallelGzipWriter<W> {
    /// Starts the threads. `level` is 1–9; `threads` is at least 1.
    pub fn new(sink: W, level: u32, threads: usize) -> Self {
        let threads = threads.max(1);
        let (jobs_tx, jobs_rx) = sync_channel::<Job>(threads * 2);
        let (done_tx, done_rx) = sync_channel::<Done>(threads * 2 + 2);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&jobs_rx);
                let tx = done_tx.clone();
                std::thread::spawn(move || worker(level, &rx, &tx))
            })
            .collect();
        let writer = std::thread::spawn(move || write_in_order(sink, done_rx));
        ParallelGzipWriter {
            level,
            cur: Vec::with_capacity(BLOCK_SIZE),
            prev: None,
            seq: 0,
            crc: crc32fast::Hasher::new(),
            total_in: 0,
            jobs: Some(jobs_tx),
            done_tx: Some(done_tx),
            workers,
            writer: Some(writer),
        }
    }

    /// The compression level.
    pub fn level(&self) -> u32 {
        self.level
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = Arc::new(std::mem::replace(
            &mut self.cur,
            Vec::with_capacity(if last { 0 } else { BLOCK_SIZE }),
        ));
        let job = Job {
            seq: self.seq,
            data: Arc::clone(&data),
            dict: self.prev.take(),
            last,
        };
        self.seq += 1;
        self.prev = Some(data);
        let sent = self.jobs.as_ref().map(|tx| tx.send(job).is_ok());
        if sent != Some(true) {
            return Err(self.writer_error());
        }
        Ok(())
    }

    /// When a channel is closed, the writer thread has stopped: return its error.
    fn writer_error(&mut self) -> io::Error {
        self.jobs = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("gzip writer thread stopped"),
        }
    }

    /// Flushes the last block and the trailer; returns the sink, the compressed size and the
    /// seconds the compression threads were busy in total.
    pub fn finish(mut self) -> io::Result<(W, u64, Duration)> {
        self.submit(true)?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        trailer[4..].copy_from_slice(&(self.total_in as u32).to_le_bytes());
        let blocks = self.seq;
        self.jobs = None; // workers drain and exit
        let done_tx = self.done_tx.take();
        if let Some(tx) = &done_tx {
            if tx.send(Done::Trailer { blocks, trailer }).is_err() {
                return Err(self.writer_error());
            }
        }
        drop(done_tx);
        let busy = std::mem::take(&mut self.workers)
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .sum();
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(Ok((w, n)))) => Ok((w, n, busy)),
            Some(Ok(Err(e))) => Err(e),
            _ => Err(io::Error::other("gzip writer thread panicked")),
        }
    }
}

impl<W: Write + Send + 'static> Write for ParallelGzipWriter<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        self.crc.update(buf);
        self.total_in += n as u64;
        while !buf.is_empty() {
            let take = (BLOCK_SIZE - self.cur.len()).min(buf.len());
            self.cur.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.cur.len() == BLOCK_SIZE {
                self.submit(false)?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ParallelGzipWriter<W> {
    fn drop(&mut self) {
        // On an error path: close the channels so every thread exits; nothing is joined twice.
        self.jobs = None;
        self.done_tx = None;
    }
}

fn worker(level: u32, jobs: &Mutex<Receiver<Job>>, done: &SyncSender<Done>) -> Duration {
    let mut busy = Duration::ZERO;
    loop {
        // The lock is held only to receive; a poisoned lock means another worker panicked.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return busy,
        };
        let Ok(job) = job else { return busy };
        let start = Instant::now();
        let out = deflate_block(level, &job);
        busy += start.elapsed();
        if done.send(Done::Block(job.seq, out)).is_err() {
            return busy;
        }
    }
}

fn deflate_block(level: u32, job: &Job) -> Vec<u8> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if let Some(dict) = &job.dict {
        let d = &dict[dict.len().saturating_sub(DICT_SIZE)..];
        // zlib-rs supports raw-deflate dictionaries; this cannot fail for a fresh stream.
        c.set_dictionary(d)
            .expect("setting a dictionary on a fresh deflate stream");
    }
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let input = &job.data[..];
    let mut out = Vec::with_capacity(input.len() / 2 + 1024);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&input[consumed..], &mut out, flush)
            .expect("deflate on an in-memory buffer cannot fail");
        let all_in = c.total_in() as usize == input.len();
        let finished = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            _ => all_in && out.len() < out.capacity(),
        };
        if finished {
            return out;
        }
        out.reserve(out.capacity().max(4096));
    }
}

fn write_in_order<W: Write>(mut sink: W, done: Receiver<Done>) -> io::Result<(W, u64)> {
    sink.write_all(&HEADER)?;
    let mut written = HEADER.len() as u64;
    let mut next = 0u64;
    let mut pending: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut trailer: Option<(u64, [u8; 8])> = None;
    for msg in done {
        match msg {
            Done::Block(seq, bytes) => {
                pending.insert(seq, bytes);
            }
            Done::Trailer { blocks, trailer: t } => trailer = Some((blocks, t)),
        }
        while let Some(bytes) = pending.remove(&next) {
            sink.write_all(&bytes)?;
            written += bytes.len() as u64;
            next += 1;
        }
        if let Some((blocks, t)) = trailer {
            if next == blocks {
                sink.write_all(&t)?;
                sink.flush()?;
                return Ok((sink, written + 8));
            }
        }
    }
    Err(io::Error::other("gzip stream ended before its trailer"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: a little LCG-driven text.
        let mut x: u32 = 12345;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                b"abcdefgh ijklmnop\n"[(x >> 16) as usize % 18]
            })
            .collect()
    }

    fn gzip(data: &[u8], threads: usize, chunk: usize) -> Vec<u8> {
        let mut w = ParallelGzipWriter::new(Vec::new(), 6, threads);
        for c in data.chunks(chunk) {
            w.write_all(c).unwrap();
        }
        w.finish().unwrap().0
    }

    #[test]
    fn output_is_identical_for_any_thread_count_and_write_size() {
        let data = sample(BLOCK_SIZE * 5 + 777);
        let one = gzip(&data, 1, 4096);
        assert_eq!(one, gzip(&data, 2, 1 << 20));
        assert_eq!(one, gzip(&data, 7, 1000));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&one[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn empty_and_exact_block_inputs_round_trip() {
        for len in [0, 1, BLOCK_SIZE, 2 * BLOCK_SIZE] {
            let data = sample(len);
            let out = gzip(&data, 2, 8192);
            let mut back = Vec::new();
            flate2::read::MultiGzDecoder::new(&out[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len}");
        }
    }

    #[test]
    fn a_failing_sink_reports_its_error() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = ParallelGzipWriter::new(Full, 6, 2);
        let data = sample(BLOCK_SIZE * 40);
        let mut err = None;
        for c in data.chunks(65536) {
            if let Err(e) = w.write_all(c) {
                err = Some(e);
                break;
            }
        }
        let err = match err {
            Some(e) => e,
            None => w.finish().err().expect("finish must fail"),
        };
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }
}
