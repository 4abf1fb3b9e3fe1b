//! Retrying: the policy (exponential backoff with jitter, `Retry-After`) and [`retry`], the one
//! loop every retrying operation of the client goes through.
//!
//! What is retried is decided by [`super::Error::is_temporary`]: connection errors, 408, 429 and
//! 500/502/503/504. A request with a replayable body (none, or bytes in memory) is retried by the
//! client itself; a streamed blob upload is restarted from a freshly opened reader by the blob code
//! (a new upload session: distribution's upload sessions do not survive a broken PATCH or PUT
//! reliably, and restarting only that blob is what go-containerregistry does too); a broken
//! download resumes where it stopped. Each of those is one call of [`retry`] with its own
//! attempt, its own verdict on an error, and its own bookkeeping between attempts.
use std::time::{Duration, SystemTime};

/// How often and how patiently to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: u32,
    /// The first delay; each retry doubles it.
    pub base_delay: Duration,
    /// The longest delay between two attempts, also the cap on `Retry-After`.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// The delay before retry number `attempt` (0-based): `base * 2^attempt`, capped, times a
    /// random factor in [0.5, 1.5) so parallel workers do not retry in lock step; a
    /// `Retry-After` from the server replaces it (still capped: a registry asking for an hour
    /// should fail the command, not hang it).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.max_delay);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
        let capped = exp.min(self.max_delay);
        capped.mul_f64(0.5 + jitter())
    }
}

/// A number in [0, 1) that differs between calls and threads (no `rand` dependency for this).
fn jitter() -> f64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9e37_79b9_7f4a_7c15);
            let addr = &t as *const u64 as u64;
            (t ^ addr.rotate_left(32)) | 1
        });
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// What [`retry`] does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Give up: the error is the result.
    Stop,
    /// Try again while retries remain, after the backoff delay, or after the server's
    /// `Retry-After` when it sent one (capped by [`RetryPolicy::max_delay`]).
    Retry(Option<Duration>),
    /// Try again even when the retries are used up. The caller bounds how often (a token that
    /// expired mid-upload is fetched anew and the upload tried once more); it still counts as
    /// an attempt.
    RetryAnyway(Option<Duration>),
}

/// The error of one attempt, for operations that can also fail for good before the part that
/// is retried (a `should_retry` then looks at `Again` only).
pub(crate) enum Attempt<E> {
    /// Worth another attempt, if the verdict and the policy allow.
    Again(E),
    /// Not worth another attempt.
    Final(E),
}

impl<E> Attempt<E> {
    /// The error, whichever kind.
    pub(crate) fn error(&self) -> &E {
        match self {
            Attempt::Again(e) | Attempt::Final(e) => e,
        }
    }

    /// The error, whichever kind.
    pub(crate) fn into_error(self) -> E {
        match self {
            Attempt::Again(e) | Attempt::Final(e) => e,
        }
    }
}

/// Runs `op` until it succeeds or `should_retry` gives up on its error; at most
/// `1 + policy.max_retries` attempts except for [`Verdict::RetryAnyway`]. `op` gets the
/// 0-based attempt number; `on_retry` gets each error that is retried (to report it, or to
/// drain a response) just before the delay. The last error is returned as it is.
///
/// The shape is go-containerregistry's `internal/retry.Retry(f, predicate, backoff)`, with the
/// predicate also saying how long the server asked us to wait.
pub(crate) fn retry<T, E>(
    policy: &RetryPolicy,
    op: impl FnMut(u32) -> Result<T, E>,
    should_retry: impl FnMut(&E) -> Verdict,
    on_retry: impl FnMut(E),
) -> Result<T, E> {
    retry_with_sleep(policy, std::thread::sleep, op, should_retry, on_retry)
}

/// [`retry`] with the sleeping given (tests record the delays instead of waiting).
fn retry_with_sleep<T, E>(
    policy: &RetryPolicy,
    mut sleep: impl FnMut(Duration),
    mut op: impl FnMut(u32) -> Result<T, E>,
    mut should_retry: impl FnMut(&E) -> Verdict,
    mut on_retry: impl FnMut(E),
) -> Result<T, E> {
    let mut attempt = 0u32;
    loop {
        let e = match op(attempt) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let after = match should_retry(&e) {
            Verdict::Retry(after) if attempt < policy.max_retries => after,
            Verdict::RetryAnyway(after) => after,
            Verdict::Retry(_) | Verdict::Stop => return Err(e),
        };
        let delay = policy.delay(attempt, after);
        on_retry(e);
        sleep(delay);
        attempt = attempt.saturating_add(1);
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (RFC 9110 section 10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let d0 = p.delay(0, None);
        assert!(d0 >= Duration::from_millis(50) && d0 < Duration::from_millis(150));
        let d3 = p.delay(3, None);
        assert!(d3 >= Duration::from_millis(400) && d3 < Duration::from_millis(1200));
        assert!(p.delay(30, None) <= Duration::from_millis(1500));
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(120))),
            Duration::from_secs(1)
        );
    }

    fn policy(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
    }

    #[test]
    fn retry_gives_up_after_max_retries() {
        let (mut calls, mut retried, mut slept) = (Vec::new(), 0, Vec::new());
        let r: Result<(), &str> = retry_with_sleep(
            &policy(3),
            |d| slept.push(d),
            |attempt| {
                calls.push(attempt);
                Err("busy")
            },
            |_| Verdict::Retry(None),
            |_| retried += 1,
        );
        assert_eq!(r, Err("busy"));
        assert_eq!(calls, [0, 1, 2, 3], "one attempt and three retries");
        assert_eq!(retried, 3);
        assert_eq!(slept.len(), 3);
        // Backoff: base * 2^attempt times a jitter in [0.5, 1.5).
        assert!(slept[0] >= Duration::from_millis(50) && slept[0] < Duration::from_millis(150));
        assert!(slept[2] >= Duration::from_millis(200) && slept[2] < Duration::from_millis(600));
    }

    #[test]
    fn retry_honours_retry_after_and_succeeds() {
        let mut slept = Vec::new();
        let r: Result<u32, &str> = retry_with_sleep(
            &policy(5),
            |d| slept.push(d),
            |attempt| {
                if attempt < 2 {
                    Err("slow down")
                } else {
                    Ok(attempt)
                }
            },
            |_| Verdict::Retry(Some(Duration::from_secs(7))),
            |_| {},
        );
        assert_eq!(r, Ok(2));
        assert_eq!(slept, [Duration::from_secs(7), Duration::from_secs(7)]);
        // A Retry-After beyond the cap waits only the cap.
        let mut slept = Vec::new();
        let _: Result<(), &str> = retry_with_sleep(
            &policy(1),
            |d| slept.push(d),
            |_| Err("later"),
            |_| Verdict::Retry(Some(Duration::from_secs(3600))),
            |_| {},
        );
        assert_eq!(slept, [Duration::from_secs(10)]);
    }

    #[test]
    fn retry_stops_on_a_permanent_error() {
        let (mut calls, mut retried, mut slept) = (0, Vec::new(), 0);
        let r: Result<(), &str> = retry_with_sleep(
            &policy(5),
            |_| slept += 1,
            |attempt| {
                calls += 1;
                Err(if attempt == 0 {
                    "temporary"
                } else {
                    "permanent"
                })
            },
            |e| match *e {
                "temporary" => Verdict::Retry(None),
                _ => Verdict::Stop,
            },
            |e| retried.push(e),
        );
        assert_eq!(r, Err("permanent"));
        assert_eq!(calls, 2);
        assert_eq!(retried, ["temporary"]);
        assert_eq!(slept, 1);
    }

    #[test]
    fn retry_anyway_goes_past_max_retries() {
        let mut calls = 0;
        let r: Result<(), &str> = retry_with_sleep(
            &policy(0),
            |_| {},
            |_| {
                calls += 1;
                Err(if calls == 1 { "token expired" } else { "busy" })
            },
            |e| match *e {
                "token expired" => Verdict::RetryAnyway(None),
                _ => Verdict::Retry(None),
            },
            |_| {},
        );
        assert_eq!(r, Err("busy"));
        assert_eq!(
            calls, 2,
            "max_retries 0 still allows the forced retry, and only it"
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
