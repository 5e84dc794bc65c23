//! The retry policy: exponential backoff with full jitter, per kind, never sooner than a
//! `Retry-After`. It is computed here, in one small function, and the delay it gives is the
//! one `finish.lua` schedules: no other layer retries.

use std::time::Duration;

use crate::Kind;
use crate::settings::{Env, SettingError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// Full jitter (the default) spreads retries of a failing burst; without it every retry
    /// waits exactly the ceiling (`RETRY_JITTER=none`), which is predictable but herds.
    pub jitter: bool,
}

impl Backoff {
    /// Defaults per kind: an OTP is worth retrying fast and briefly, an email or a webhook
    /// over an hour, an audit event until PostgreSQL is back.
    pub fn default_for(kind: Kind) -> Self {
        let (base, cap) = match kind {
            Kind::OtpSms => (Duration::from_secs(1), Duration::from_secs(30)),
            Kind::Email | Kind::Webhook => (Duration::from_secs(5), Duration::from_hours(1)),
            Kind::AuditLog => (Duration::from_secs(1), Duration::from_mins(5)),
        };
        Self { base, cap, jitter: true }
    }

    /// `RETRY_BASE_MS_<KIND>` and `RETRY_CAP_MS_<KIND>` (e.g. `RETRY_BASE_MS_WEBHOOK`) override the defaults.
    pub fn from_env(env: &Env, kind: Kind) -> Result<Self, SettingError> {
        let default = Self::default_for(kind);
        let (base_name, cap_name) = match kind {
            Kind::OtpSms => ("RETRY_BASE_MS_OTP_SMS", "RETRY_CAP_MS_OTP_SMS"),
            Kind::Email => ("RETRY_BASE_MS_EMAIL", "RETRY_CAP_MS_EMAIL"),
            Kind::Webhook => ("RETRY_BASE_MS_WEBHOOK", "RETRY_CAP_MS_WEBHOOK"),
            Kind::AuditLog => ("RETRY_BASE_MS_AUDIT_LOG", "RETRY_CAP_MS_AUDIT_LOG"),
        };
        let base = env.millis(base_name, u64::try_from(default.base.as_millis()).unwrap_or(u64::MAX))?;
        let cap = env.millis(cap_name, u64::try_from(default.cap.as_millis()).unwrap_or(u64::MAX))?;
        if base.is_zero() {
            return Err(SettingError::new(base_name, "must be at least 1"));
        }
        if cap < base {
            return Err(SettingError::new(cap_name, "must not be below the base"));
        }
        let jitter = match env.or("RETRY_JITTER", "full").as_str() {
            "full" => true,
            "none" => false,
            other => return Err(SettingError::new("RETRY_JITTER", format!("`{other}` is not full or none"))),
        };
        Ok(Self { base, cap, jitter })
    }

    /// The wait before the attempt after `attempt` (1 = the first failed): a uniform draw in
    /// `[0, min(cap, base * 2^(attempt-1))]` ("full jitter"), raised to `retry_after` when the
    /// far side asked for more. `unit` is the random draw in `[0, 1)`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let ceiling = self.base.saturating_mul(1_u32 << exp.min(31)).min(self.cap);
        let jittered = ceiling.mul_f64(unit.clamp(0.0, 1.0));
        retry_after.map_or(jittered, |after| jittered.max(after))
    }

    /// [`Backoff::delay`] with a fresh random draw.
    pub fn next_delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        self.delay(attempt, retry_after, if self.jitter { fastrand::f64() } else { 1.0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let b = Backoff { base: Duration::from_secs(5), cap: Duration::from_hours(1), jitter: true };
        assert_eq!(b.delay(1, None, 1.0), Duration::from_secs(5));
        assert_eq!(b.delay(2, None, 1.0), Duration::from_secs(10));
        assert_eq!(b.delay(4, None, 1.0), Duration::from_secs(40));
        assert_eq!(b.delay(20, None, 1.0), Duration::from_hours(1));
        assert_eq!(b.delay(u32::MAX, None, 1.0), Duration::from_hours(1));
        assert_eq!(b.delay(3, None, 0.5), Duration::from_secs(10));
        assert_eq!(b.delay(3, None, 0.0), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let b = Backoff::default_for(Kind::Webhook);
        assert_eq!(b.delay(1, Some(Duration::from_secs(3)), 0.1), Duration::from_secs(3));
        assert_eq!(b.delay(5, Some(Duration::from_secs(3)), 1.0), Duration::from_secs(80));
    }

    #[test]
    fn draws_stay_within_the_ceiling() {
        let b = Backoff::default_for(Kind::OtpSms);
        for attempt in 1..10 {
            let ceiling = b.delay(attempt, None, 1.0);
            for _ in 0..100 {
                assert!(b.next_delay(attempt, None) <= ceiling);
            }
        }
    }

    #[test]
    fn settings_override_and_are_checked() {
        let env = Env::from_pairs(&[("RETRY_BASE_MS_WEBHOOK", "100"), ("RETRY_CAP_MS_WEBHOOK", "400")]);
        let b = Backoff::from_env(&env, Kind::Webhook).unwrap();
        assert_eq!(b, Backoff { base: Duration::from_millis(100), cap: Duration::from_millis(400), jitter: true });
        let exact = Backoff::from_env(&Env::from_pairs(&[("RETRY_JITTER", "none")]), Kind::OtpSms).unwrap();
        assert_eq!(exact.next_delay(3, None), Duration::from_secs(4));
        assert!(Backoff::from_env(&Env::from_pairs(&[("RETRY_JITTER", "half")]), Kind::OtpSms).is_err());
        let bad = Env::from_pairs(&[("RETRY_CAP_MS_EMAIL", "1")]);
        assert!(Backoff::from_env(&bad, Kind::Email).unwrap_err().to_string().starts_with("RETRY_CAP_MS_EMAIL: "));
    }
}
