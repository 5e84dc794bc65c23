//! Rate limits per kind: one token bucket per kind in Redis ([`crate::keys::QueueKeys::bucket`],
//! `lua/rate.lua`), shared by every worker on any host. `fetch.lua` takes tokens in the same
//! script that leases, so a job without a token is never leased (no attempt, no record write),
//! and answers how long until the next token, which the worker sleeps.
//!
//! The limit comes from `RATE_LIMIT_<KIND>` (each worker writes it at start: [`RateLimits::put_default`])
//! until the console sets or removes one ([`RateLimits::put`]); from then on the console's value
//! stands. A provider's "too many requests" slows the kind down ([`RateLimits::throttle`],
//! `lua/throttle.lua`): no token until its `Retry-After`, the rate halved, then climbing back
//! to the limit over [`RAMP`] (AIMD).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::Script;
use serde::Serialize;

use crate::record::{millis, with_rate};
use crate::redis_conn::Conn;
use crate::settings::{Env, SettingError};
use crate::{Keys, Kind, StoreError};

static PUT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/rate_put.lua")));
static THROTTLE: LazyLock<Script> = LazyLock::new(|| with_rate(include_str!("../lua/throttle.lua")));

/// After a throttle, the rate climbs back by the whole limit in this time: from half the limit
/// to all of it in 10 s.
pub const RAMP: Duration = Duration::from_secs(20);
/// The lowest rate throttles reduce to, as a fraction of the limit.
pub const FLOOR: f64 = 0.1;
/// Throttles within this time of a reduction do not reduce again: the jobs already in flight
/// meet the same refusal, and one answer of the provider is one halving.
pub const REDUCE_GAP: Duration = Duration::from_secs(1);
/// A kind without a limit whose provider throttles without a `Retry-After` gets no token for this long.
pub const UNLIMITED_PAUSE: Duration = Duration::from_secs(1);
/// Bounds of a limit: tokens a second, and burst.
pub const MAX_PER_SECOND: u32 = 100_000;
pub const MAX_BURST: u32 = 1_000_000;

/// A limit: `per_second` tokens a second, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// Which part of a limit is out of bounds: the field's name, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct LimitError {
    pub field: &'static str,
    pub problem: String,
}

impl RateLimit {
    /// `burst` defaults to one second's worth (`per_second`): a kind idle for a second may send
    /// that much at once, so no one-second window sees more than twice the rate, and a worker
    /// leasing in batches never waits on a bucket smaller than what a second brings.
    pub fn new(per_second: u32, burst: Option<u32>) -> Result<Self, LimitError> {
        let bad = |field, problem: String| LimitError { field, problem };
        if !(1..=MAX_PER_SECOND).contains(&per_second) {
            return Err(bad("per_second", format!("must be between 1 and {MAX_PER_SECOND}")));
        }
        let burst = burst.unwrap_or(per_second);
        if !(1..=MAX_BURST).contains(&burst) {
            return Err(bad("burst", format!("must be between 1 and {MAX_BURST}")));
        }
        Ok(Self { per_second, burst })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s:{}", self.per_second, self.burst)
    }
}

/// `<n>/s` or `<n>/s:<burst>`.
impl FromStr for RateLimit {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let shape = || format!("`{raw}` is not <n>/s or <n>/s:<burst> (e.g. 14/s:28)");
        let (rate, burst) = match raw.trim().split_once(':') {
            Some((rate, burst)) => (rate, Some(burst.trim().parse::<u32>().map_err(|_| shape())?)),
            None => (raw.trim(), None),
        };
        let per_second =
            rate.trim().strip_suffix("/s").ok_or_else(shape)?.trim().parse::<u32>().map_err(|_| shape())?;
        Self::new(per_second, burst).map_err(|e| format!("`{raw}`: {e}"))
    }
}

/// The variable naming `kind`'s limit.
pub fn setting_name(kind: Kind) -> String {
    format!("RATE_LIMIT_{}", kind.as_str().to_ascii_uppercase())
}

/// `RATE_LIMIT_<KIND>` of every kind that has one. A bad value, or a variable naming no kind
/// (a typo would otherwise leave a kind unlimited), stops the start naming the variable.
pub fn from_env(env: &Env) -> Result<BTreeMap<Kind, RateLimit>, SettingError> {
    let mut limits = BTreeMap::new();
    for (suffix, raw) in env.with_prefix("RATE_LIMIT_") {
        let name = format!("RATE_LIMIT_{suffix}");
        let kind = Kind::ALL.into_iter().find(|k| setting_name(*k) == name).ok_or_else(|| {
            SettingError::named(&name, "names no kind (RATE_LIMIT_OTP_SMS, _EMAIL, _WEBHOOK or _AUDIT_LOG)")
        })?;
        limits.insert(kind, raw.parse().map_err(|problem| SettingError::named(&name, problem))?);
    }
    Ok(limits)
}

/// Who set the limit in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A worker's `RATE_LIMIT_<KIND>`.
    Setting,
    /// An operator, through the console: stands until the console changes it.
    Console,
}

/// A kind's limit as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateView {
    pub per_second: Option<u32>,
    pub burst: Option<u32>,
    /// `None`: no limit was ever set (or a setting's was removed).
    pub source: Option<Source>,
    pub set_by: Option<String>,
    pub set_at: Option<DateTime<Utc>>,
    /// The rate in force after a provider's throttle, climbing back to `per_second`.
    pub effective_per_second: Option<f64>,
    /// A provider's throttle: no job of the kind starts before this time.
    pub throttled_until: Option<DateTime<Utc>>,
}

/// What a throttle left in force.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throttle {
    /// The rate now in force (`None`: the kind has no limit).
    pub per_second: Option<f64>,
    pub until: Option<DateTime<Utc>>,
    /// This throttle halved the rate (not one within [`REDUCE_GAP`] of the last).
    pub reduced: bool,
}

/// Sets, reads and throttles the kinds' limits.
#[derive(Debug, Clone)]
pub struct RateLimits {
    conn: Conn,
    keys: Keys,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RateLimits {
    pub fn new(conn: Conn, keys: Keys) -> Self {
        Self { conn, keys }
    }

    async fn write(&self, kind: Kind, source: &str, limit: Option<RateLimit>, by: &str) -> Result<bool, StoreError> {
        let mut call = PUT.prepare_invoke();
        call.key(self.keys.queue(kind).bucket()).arg(source);
        match limit {
            Some(l) => call.arg(l.per_second).arg(l.burst),
            None => call.arg("").arg(""),
        };
        call.arg(by).arg(Utc::now().timestamp_millis());
        let written: i64 = call.invoke_async(&mut self.conn.clone()).await?;
        Ok(written == 1)
    }

    /// A worker's `RATE_LIMIT_<KIND>` (`None`: it has none), written unless the console has
    /// set the limit: whether it was written. Every worker of a kind should carry the same
    /// setting; the last one to start wins.
    pub async fn put_default(&self, kind: Kind, limit: Option<RateLimit>, worker: &str) -> Result<bool, StoreError> {
        self.write(kind, "setting", limit, worker).await
    }

    /// The console's limit (`None`: no limit), in force from the next fetch, and standing
    /// against the workers' settings from now on.
    pub async fn put(&self, kind: Kind, limit: Option<RateLimit>, by: &str) -> Result<(), StoreError> {
        self.write(kind, "console", limit, by).await.map(|_| ())
    }

    /// The limit of `kind` and any throttle in force at `now`.
    pub async fn view(&self, kind: Kind, now: DateTime<Utc>) -> Result<RateView, StoreError> {
        let fields = ["ps", "bu", "src", "by", "at", "un", "e0", "t0"];
        let v: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.queue(kind).bucket())
            .arg(&fields[..])
            .query_async(&mut self.conn.clone())
            .await?;
        let num = |i: usize| v.get(i).cloned().flatten().and_then(|s| s.parse::<f64>().ok());
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "stored by rate_put.lua from u32 values"
        )]
        let whole = |i: usize| num(i).map(|n| n as u32);
        #[expect(clippy::cast_possible_truncation, reason = "ms since the epoch")]
        let time = |i: usize| num(i).map(|n| millis(n as i64));
        let per_second = whole(0);
        let source = match v.get(2).cloned().flatten().as_deref() {
            Some("setting") => Some(Source::Setting),
            Some("console") => Some(Source::Console),
            _ => None,
        };
        #[expect(clippy::cast_precision_loss, reason = "ms since the epoch, far below 2^52")]
        let now_ms = now.timestamp_millis() as f64;
        let effective = per_second.map(|ps| {
            let ps = f64::from(ps);
            match (num(6), num(7)) {
                #[expect(clippy::cast_precision_loss, reason = "20 000 ms")]
                (Some(e0), Some(t0)) => (e0 + ps * (now_ms - t0).max(0.0) / ms(RAMP) as f64).min(ps),
                _ => ps,
            }
        });
        Ok(RateView {
            per_second,
            burst: per_second.and(whole(1)),
            source,
            set_by: v.get(3).cloned().flatten(),
            set_at: time(4),
            effective_per_second: effective,
            throttled_until: time(5).filter(|until| *until > now),
        })
    }

    /// A provider throttled `kind` (`after`: its `Retry-After`): every worker slows down.
    pub async fn throttle(&self, kind: Kind, after: Option<Duration>) -> Result<Throttle, StoreError> {
        let mut call = THROTTLE.prepare_invoke();
        call.key(self.keys.queue(kind).bucket())
            .arg(after.map_or(-1, |a| i64::try_from(ms(a)).unwrap_or(i64::MAX)))
            .arg(ms(RAMP))
            .arg(ms(UNLIMITED_PAUSE))
            .arg(FLOOR)
            .arg(ms(REDUCE_GAP));
        let (rate, until, reduced): (i64, i64, i64) = call.invoke_async(&mut self.conn.clone()).await?;
        #[expect(clippy::cast_precision_loss, reason = "thousandths of a rate below 10^8")]
        let per_second = (rate >= 0).then(|| rate as f64 / 1000.0);
        Ok(Throttle { per_second, until: (until > 0).then(|| millis(until)), reduced: reduced == 1 })
    }
}

/// Sets `jobplane_rate_limit_per_second{kind}`, the rate in force (0: no limit), every `every`
/// until the process ends.
pub async fn sample(rates: RateLimits, kinds: Vec<Kind>, every: Duration) {
    loop {
        for kind in &kinds {
            if let Ok(view) = rates.view(*kind, Utc::now()).await {
                metrics::gauge!("jobplane_rate_limit_per_second", "kind" => kind.as_str())
                    .set(view.effective_per_second.unwrap_or(0.0));
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_with_and_without_burst() {
        assert_eq!("14/s:28".parse(), Ok(RateLimit { per_second: 14, burst: 28 }));
        assert_eq!("50/s".parse(), Ok(RateLimit { per_second: 50, burst: 50 }));
        for bad in ["14", "14/m", "x/s", "0/s", "14/s:0", "14/s:", "-1/s", "100001/s"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
        assert_eq!(RateLimit::new(5, Some(0)).unwrap_err().field, "burst");
        assert_eq!(RateLimit::new(0, None).unwrap_err().field, "per_second");
    }

    #[test]
    fn settings_name_the_variable() {
        let env = Env::from_pairs(&[("RATE_LIMIT_EMAIL", "14/s:28"), ("RATE_LIMIT_WEBHOOK", "20/s")]);
        let limits = from_env(&env).unwrap();
        assert_eq!(limits[&Kind::Email], RateLimit { per_second: 14, burst: 28 });
        assert_eq!(limits[&Kind::Webhook].burst, 20);
        assert!(!limits.contains_key(&Kind::OtpSms));
        let error = |pairs: &[(&str, &str)]| from_env(&Env::from_pairs(pairs)).unwrap_err().to_string();
        assert!(error(&[("RATE_LIMIT_OTP_SMS", "fast")]).starts_with("RATE_LIMIT_OTP_SMS: `fast` is not"));
        assert!(error(&[("RATE_LIMIT_EMAILS", "5/s")]).starts_with("RATE_LIMIT_EMAILS: names no kind"));
        assert!(error(&[("RATE_LIMIT_AUDIT_LOG", "5/s:0")]).contains("burst"));
    }
}
