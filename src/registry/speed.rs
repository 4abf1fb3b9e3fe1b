//! The minimum transfer rate: curl's `--speed-limit`/`--speed-time` idea, applied to every
//! registry transfer (manifests, blobs, uploads, token requests, error bodies) and to `ADD URL`.
//!
//! A per-read timeout alone does not bound a transfer: a peer sending one byte every 299 s never
//! trips a 300 s timeout and holds a build forever. So each body is read (or, for uploads, read
//! from our side) through a [`Meter`] that adds up the bytes moved and the time spent *waiting on
//! the network* (not the time our consumer spends between reads, so a slow disk or a slow
//! destination registry in a streaming copy is not blamed on the source). Whenever that time
//! reaches the window and fewer than `bytes_per_sec × window` bytes moved in it, the transfer
//! fails with [`SlowTransfer`], which names the URL and the rate. Socket reads get a timeout of
//! one window, so a peer that sends nothing at all is caught the same way.
//!
//! Defaults: 1024 bytes/s over 60 s, so a peer must move at least 60 KiB a minute. curl,
//! containerd and go-containerregistry set no such limit by default; 1 KiB/s is far below any
//! usable link (a 50 MiB layer would take 14 hours) while a stalled or trickling peer is dropped
//! within one to two minutes. `--speed-limit 0` turns the check off (the 300 s per-read timeout
//! of [`super::ClientOptions::io_timeout`] still applies).
use std::io::{self, Read};
use std::time::{Duration, Instant};

/// The minimum rate a transfer must keep (`--speed-limit`, `--speed-time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeedLimit {
    /// Bytes per second; 0 turns the check off.
    pub bytes_per_sec: u64,
    /// The window over which the rate is measured (at least one second is sensible).
    pub window: Duration,
}

impl SpeedLimit {
    /// The default bytes per second (`--speed-limit`).
    pub const DEFAULT_BYTES_PER_SEC: u64 = 1024;
    /// The default window in seconds (`--speed-time`).
    pub const DEFAULT_WINDOW_SECS: u64 = 60;

    /// No minimum rate.
    pub fn off() -> SpeedLimit {
        SpeedLimit {
            bytes_per_sec: 0,
            ..SpeedLimit::default()
        }
    }

    /// Whether the check is off.
    pub fn is_off(&self) -> bool {
        self.bytes_per_sec == 0 || self.window.is_zero()
    }

    /// The per-read socket timeout to use with this limit: one window (so that a peer sending
    /// nothing is caught after one window), or `io_timeout` if that is shorter or the check is
    /// off.
    pub fn read_timeout(&self, io_timeout: Option<Duration>) -> Option<Duration> {
        if self.is_off() {
            return io_timeout;
        }
        Some(io_timeout.map_or(self.window, |t| t.min(self.window)))
    }

    /// A meter for one transfer of `url` (already redacted: it goes into errors).
    pub fn meter(&self, url: &str) -> Meter {
        Meter {
            limit: *self,
            url: url.to_string(),
            busy: Duration::ZERO,
            bytes: 0,
        }
    }
}

impl Default for SpeedLimit {
    fn default() -> Self {
        SpeedLimit {
            bytes_per_sec: Self::DEFAULT_BYTES_PER_SEC,
            window: Duration::from_secs(Self::DEFAULT_WINDOW_SECS),
        }
    }
}

/// A transfer that fell below the minimum rate. Carried inside an `io::Error` (kind `TimedOut`)
/// through readers; the registry client turns it into [`super::Error::TooSlow`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the transfer of `{url}` fell below {min} bytes/s over {window_secs} s: {bytes} bytes in \
     {spent_ms} ms (see --speed-limit and --speed-time)"
)]
pub struct SlowTransfer {
    /// The redacted URL.
    pub url: String,
    /// The minimum rate, bytes per second.
    pub min: u64,
    /// The window, seconds.
    pub window_secs: u64,
    /// Bytes moved in the window that failed.
    pub bytes: u64,
    /// Milliseconds spent waiting on the network in that window.
    pub spent_ms: u64,
}

impl SlowTransfer {
    /// The `SlowTransfer` inside an I/O error, if that is what it carries.
    pub fn from_io(e: &io::Error) -> Option<&SlowTransfer> {
        e.get_ref().and_then(|i| i.downcast_ref::<SlowTransfer>())
    }
}

/// Counts one transfer's bytes and network time; see the module documentation.
#[derive(Debug, Clone)]
pub struct Meter {
    limit: SpeedLimit,
    url: String,
    busy: Duration,
    bytes: u64,
}

impl Meter {
    /// Records that `bytes` moved in `spent` of network time; fails once a whole window moved
    /// too little.
    pub fn record(&mut self, bytes: u64, spent: Duration) -> io::Result<()> {
        if self.limit.is_off() {
            return Ok(());
        }
        self.busy += spent;
        self.bytes += bytes;
        if self.busy < self.limit.window {
            return Ok(());
        }
        let need = self.limit.bytes_per_sec as f64 * self.busy.as_secs_f64();
        if (self.bytes as f64) < need {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                SlowTransfer {
                    url: self.url.clone(),
                    min: self.limit.bytes_per_sec,
                    window_secs: self.limit.window.as_secs(),
                    bytes: self.bytes,
                    spent_ms: self.busy.as_millis() as u64,
                },
            ));
        }
        self.busy = Duration::ZERO;
        self.bytes = 0;
        Ok(())
    }

    /// Wraps a response body: the time spent inside its `read` is network time.
    pub fn download<R: Read>(self, inner: R) -> MeteredRead<R> {
        MeteredRead { inner, meter: self }
    }

    /// Wraps an upload's source: the time between two reads (when the HTTP client writes what
    /// the last read gave) is network time; the time spent reading the source is not.
    pub fn upload<R: Read>(self, inner: R) -> MeteredUpload<R> {
        MeteredUpload {
            inner,
            meter: self,
            last: None,
        }
    }
}

/// A body read through a [`Meter`] (see [`Meter::download`]).
#[derive(Debug)]
pub struct MeteredRead<R> {
    inner: R,
    meter: Meter,
}

impl<R: Read> Read for MeteredRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let start = Instant::now();
        match self.inner.read(buf) {
            Ok(n) => {
                self.meter.record(n as u64, start.elapsed())?;
                Ok(n)
            }
            Err(e) => {
                // A read that timed out after a whole window moved nothing: say so (a shorter
                // timeout keeps its own error).
                if is_timeout(&e) {
                    self.meter.record(0, start.elapsed())?;
                }
                Err(e)
            }
        }
    }
}

/// Whether an I/O error is a read timeout (ureq wraps its own `Timeout` in an `io::Error`).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    ) || e
        .get_ref()
        .and_then(|i| i.downcast_ref::<ureq::Error>())
        .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

/// An upload source read through a [`Meter`] (see [`Meter::upload`]).
#[derive(Debug)]
pub struct MeteredUpload<R> {
    inner: R,
    meter: Meter,
    /// When the last read returned and how many bytes it gave.
    last: Option<(Instant, u64)>,
}

impl<R: Read> Read for MeteredUpload<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((at, n)) = self.last.take() {
            self.meter.record(n, at.elapsed())?;
        }
        let n = self.inner.read(buf)?;
        self.last = Some((Instant::now(), n as u64));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(bytes_per_sec: u64, ms: u64) -> SpeedLimit {
        SpeedLimit {
            bytes_per_sec,
            window: Duration::from_millis(ms),
        }
    }

    #[test]
    fn a_window_below_the_rate_fails_naming_the_url() {
        let mut m = limit(1000, 1000).meter("http://r/v2/x");
        m.record(10, Duration::from_millis(600)).unwrap();
        let e = m.record(10, Duration::from_millis(600)).unwrap_err();
        let slow = SlowTransfer::from_io(&e).unwrap();
        assert_eq!((slow.bytes, slow.spent_ms), (20, 1200));
        assert!(e.to_string().contains("http://r/v2/x"), "{e}");
        assert!(e.to_string().contains("1000 bytes/s"), "{e}");
    }

    #[test]
    fn a_fast_window_starts_a_new_one_and_off_never_fails() {
        let mut m = limit(1000, 1000).meter("u");
        m.record(5000, Duration::from_millis(1100)).unwrap();
        m.record(900, Duration::from_millis(900)).unwrap();
        let mut off = SpeedLimit::off().meter("u");
        off.record(0, Duration::from_secs(3600)).unwrap();
    }

    #[test]
    fn consumer_time_is_not_network_time() {
        // A reader that gives one byte per call, instantly: however long the consumer waits
        // between calls, the source is fast.
        struct OneByte;
        impl Read for OneByte {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                buf[0] = 1;
                Ok(1)
            }
        }
        let mut r = limit(1_000_000, 20).meter("u").download(OneByte);
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(15));
            assert_eq!(r.read(&mut [0u8; 4]).unwrap(), 1);
        }
    }
}
