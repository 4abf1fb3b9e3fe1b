//! Per-stage counters of the layer pipeline, for `kiln layer --json` and build metadata.
use serde::Serialize;

/// What one layer cost, stage by stage. Seconds are busy time of that stage (stages overlap in
/// the pipeline, so they do not add up to the wall time); MB/s is 10^6 bytes per busy second.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LayerStats {
    /// Entries walked (files, directories, links, …).
    pub files_walked: u64,
    /// Seconds spent walking and sorting the tree.
    pub walk_seconds: f64,
    /// File content bytes read from disk or memory.
    pub bytes_read: u64,
    /// Seconds spent in read calls.
    pub read_seconds: f64,
    /// Bytes of tar stream produced (and hashed into the diff_id).
    pub bytes_tarred: u64,
    /// Bytes hashed for the diff_id (equal to `bytes_tarred`).
    pub bytes_hashed: u64,
    /// Seconds spent hashing the diff_id (wall-clock: on a busy machine this includes waiting
    /// for a core).
    pub hash_seconds: f64,
    /// CPU seconds the hashing thread spent hashing the diff_id: the figure to compare with
    /// another hasher's CPU time on a shared machine.
    pub hash_cpu_seconds: f64,
    /// Bytes fed to the compressor.
    pub bytes_compressed_in: u64,
    /// Compressed bytes written to the sink.
    pub bytes_written: u64,
    /// Seconds the compression threads were busy, summed over threads.
    pub compress_seconds: f64,
    /// Compression threads used.
    pub compress_threads: usize,
    /// Wall-clock seconds from the start of the layer (its walk included) to the last byte
    /// written.
    pub wall_seconds: f64,
}

impl LayerStats {
    /// Throughput of each stage in MB/s, as `(stage, MB/s)`.
    pub fn throughput(&self) -> Vec<(&'static str, f64)> {
        let rate = |bytes: u64, secs: f64| {
            if secs > 0.0 {
                bytes as f64 / 1e6 / secs
            } else {
                0.0
            }
        };
        vec![
            ("read", rate(self.bytes_read, self.read_seconds)),
            ("hash", rate(self.bytes_hashed, self.hash_seconds)),
            ("hash_cpu", rate(self.bytes_hashed, self.hash_cpu_seconds)),
            (
                "compress",
                rate(self.bytes_compressed_in, self.compress_seconds),
            ),
            ("overall", rate(self.bytes_tarred, self.wall_seconds)),
        ]
    }
}

/// CPU time of the calling thread, in seconds (0 where the clock is unavailable).
pub(crate) fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the valid pointer we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
