//! When a call is tried again, and for how long.
//!
//! A call is retried on `503` (Redis unreachable: the API says so within 2 s), on `429` (a
//! rate limit) and when no answer came (connection refused or reset, a request timeout), with
//! jittered exponential backoff (`backon`), never sooner than the answer's `Retry-After`. It
//! gives up at its deadline: a wait that would end past the deadline is not started, and the
//! last answer is returned as the error.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// How long a call keeps trying by default: 30 s. Long enough to ride out a Redis restart or
/// a Sentinel failover (down-after 5–10 s plus the election) and a `Retry-After` of a few
/// seconds; short enough that a producer calling from inside a web request answers before
/// the usual 30–60 s proxy and load-balancer timeouts, instead of hanging there.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// The most one attempt may take, within the deadline's remainder.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The backoff between attempts: 200 ms doubling to 5 s, each with up to as much again of
/// random jitter, so producers that failed together do not come back together.
pub fn backoff() -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Whether an answer with `status` is worth trying again.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 429 | 503)
}

/// `Retry-After` in seconds (the API's form); an HTTP date is read as "no hint".
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(|s| Duration::from_secs(s.min(3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_grows_jittered_and_bounded() {
        let delays: Vec<Duration> = backoff().take(12).collect();
        assert!(delays[0] >= Duration::from_millis(200) && delays[0] <= Duration::from_millis(400), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)), "{delays:?}");
        assert!(delays[11] >= Duration::from_secs(5), "{delays:?}");
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(reqwest::header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
