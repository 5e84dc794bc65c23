//! The SMS-pumping guard: how many OTP SMS one recipient, and one API key, may be sent within
//! a sliding window. `enqueue.lua` counts and refuses in the same atomic call that writes the
//! jobs (one round trip), on Redis's clock, in sorted sets under the `{otp_sms}` hash tag.

use std::fmt;
use std::time::Duration;

use crate::settings::{Env, SettingError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtpLimits {
    /// `OTP_RATE_LIMIT_PER_NUMBER` (default 5; 0 = off): OTP SMS accepted per recipient per window.
    pub per_number: u32,
    /// `OTP_RATE_LIMIT_PER_KEY` (default 1000; 0 = off): OTP SMS accepted per API key per window.
    pub per_key: u32,
    /// `OTP_RATE_WINDOW_SECONDS` (default 3600): the sliding window of both limits.
    pub window: Duration,
}

impl OtpLimits {
    /// No limit at all: what a [`crate::Store`] applies unless told otherwise.
    pub const OFF: Self = Self { per_number: 0, per_key: 0, window: Duration::from_hours(1) };

    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let window = env.seconds("OTP_RATE_WINDOW_SECONDS", 3600)?;
        if window.is_zero() || window > Duration::from_hours(24 * 30) {
            return Err(SettingError::new("OTP_RATE_WINDOW_SECONDS", "must be between 1 and 2592000 (30 days)"));
        }
        Ok(Self {
            per_number: env.parse("OTP_RATE_LIMIT_PER_NUMBER", 5)?,
            per_key: env.parse("OTP_RATE_LIMIT_PER_KEY", 1000)?,
            window,
        })
    }

    pub fn is_off(&self) -> bool {
        self.per_number == 0 && self.per_key == 0
    }
}

/// Which limit refused a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OtpLimit {
    #[serde(rename = "otp_per_number")]
    PerNumber,
    #[serde(rename = "otp_per_key")]
    PerKey,
}

impl OtpLimit {
    /// The name `enqueue.lua` answers with, and the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            OtpLimit::PerNumber => "otp_per_number",
            OtpLimit::PerKey => "otp_per_key",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [OtpLimit::PerNumber, OtpLimit::PerKey].into_iter().find(|l| l.as_str() == name)
    }
}

impl fmt::Display for OtpLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let limits = OtpLimits::from_env(&Env::default()).unwrap();
        assert_eq!(limits, OtpLimits { per_number: 5, per_key: 1000, window: Duration::from_hours(1) });
        assert!(!limits.is_off());
        let off = OtpLimits::from_env(&Env::from_pairs(&[
            ("OTP_RATE_LIMIT_PER_NUMBER", "0"),
            ("OTP_RATE_LIMIT_PER_KEY", "0"),
        ]))
        .unwrap();
        assert!(off.is_off());
        for (name, value) in
            [("OTP_RATE_LIMIT_PER_NUMBER", "-1"), ("OTP_RATE_LIMIT_PER_KEY", "many"), ("OTP_RATE_WINDOW_SECONDS", "0")]
        {
            let error = OtpLimits::from_env(&Env::from_pairs(&[(name, value)])).unwrap_err();
            assert!(error.to_string().starts_with(&format!("{name}: ")), "{error}");
        }
        assert_eq!(OtpLimit::parse("otp_per_key"), Some(OtpLimit::PerKey));
        assert_eq!(OtpLimit::parse("x"), None);
    }
}
