//! The four kinds of job, each one queue.
//!
//! Also compiled into the producers' Rust client (`clients/rust/src/lib.rs`, `#[path]`), without
//! the rest of this crate: use only `crate::Kind`, `crate::payload` and `crate::validation` here,
//! and the dependencies `clients/rust/Cargo.toml` lists (`cargo build -p jobplane-client` checks).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A kind of job. Each kind is its own queue with its own Redis hash tag, so a queue never
/// spans two Redis Cluster slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    OtpSms,
    Email,
    Webhook,
    AuditLog,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::OtpSms, Kind::Email, Kind::Webhook, Kind::AuditLog];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OtpSms => "otp_sms",
            Kind::Email => "email",
            Kind::Webhook => "webhook",
            Kind::AuditLog => "audit_log",
        }
    }

    /// Attempts a job gets when the request names none.
    pub fn default_max_attempts(self) -> u32 {
        match self {
            Kind::OtpSms => 5,
            Kind::Email => 8,
            Kind::Webhook => 10,
            Kind::AuditLog => 20,
        }
    }

    /// The most attempts a request may ask for: an OTP is useless after minutes, an audit
    /// event must eventually land.
    pub fn max_attempts_limit(self) -> u32 {
        match self {
            Kind::OtpSms => 10,
            Kind::Email | Kind::Webhook => 25,
            Kind::AuditLog => 50,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown kind `{0}`; expected one of otp_sms, email, webhook, audit_log")]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>().unwrap(), kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        assert!("sms".parse::<Kind>().is_err());
    }

    #[test]
    fn default_attempts_fit_the_limit() {
        for kind in Kind::ALL {
            assert!(kind.default_max_attempts() <= kind.max_attempts_limit());
        }
    }
}
