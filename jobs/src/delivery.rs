//! What a provider reported after it accepted a message: delivered to the phone or the inbox,
//! undelivered, bounced, complained of. A job "succeeds" when the provider accepted it; a
//! report arrives later (seconds to days) and is kept on the job record (`dv`), finished or not,
//! so `GET /v1/jobs/{id}` shows it as `delivery`.
//!
//! Reports are written by `lua/delivery.lua`, one job per call, and are idempotent: providers
//! resend. Precedence decides between two reports of one job: complained > bounced >
//! undelivered > delivered. A report replaces the one held only when it is stronger; the same
//! report again, or a weaker one (a late `delivered` after a bounce), changes nothing. A report
//! for a job Redis no longer holds (unknown, expired) is dropped: [`DeliveryOutcome::Unknown`].

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::Script;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::record::{millis, with_records};
use crate::redis_conn::Conn;
use crate::{Keys, Kind, StoreError};

/// Digits, with separators (space, `-`, `.`, `(`, `)`, `/`) between them: a number as people
/// write it. [`redact_detail`] hides one that looks like a phone number or a code.
static DIGITS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\+?\d(?:[\s\-.()/]{0,2}\d)*").expect("a valid pattern"));
static DELIVERY: LazyLock<Script> = LazyLock::new(|| with_records(include_str!("../lua/delivery.lua")));

/// The longest `detail` kept, in characters, after redaction.
pub const MAX_DETAIL_CHARS: usize = 256;
/// The longest provider code [`Delivery::coded`] keeps verbatim.
pub const MAX_CODE_CHARS: usize = 32;

/// The final word of a provider on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// The handset or the receiving mail server took it.
    Delivered,
    /// The carrier gave up on it (SMS: `undelivered`, `failed`; a mail server's soft bounce).
    Undelivered,
    /// The address does not exist or refuses mail for good (a hard bounce).
    Bounced,
    /// The recipient marked it as spam.
    Complained,
}

impl DeliveryStatus {
    /// Weakest first: the order of precedence.
    pub const ALL: [DeliveryStatus; 4] =
        [DeliveryStatus::Delivered, DeliveryStatus::Undelivered, DeliveryStatus::Bounced, DeliveryStatus::Complained];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Undelivered => "undelivered",
            DeliveryStatus::Bounced => "bounced",
            DeliveryStatus::Complained => "complained",
        }
    }

    /// The statuses a report of this one replaces: the weaker ones. The derived order is the
    /// precedence (the declaration order).
    pub fn overrides(self) -> impl Iterator<Item = DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().filter(move |s| *s < self)
    }
}

impl FromStr for DeliveryStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeliveryStatus::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("must be one of {}", DeliveryStatus::ALL.map(DeliveryStatus::as_str).join(", ")))
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider's report on a job's message, as `GET /v1/jobs/{id}` shows it. Build it with
/// [`Delivery::new`] or [`Delivery::coded`]: the detail is bounded and redacted there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    pub status: DeliveryStatus,
    /// When the provider says it happened (or, when it does not say, when the report came).
    pub at: DateTime<Utc>,
    /// The provider's words (an error code, a bounce's diagnostic), with secrets, numbers and
    /// codes hidden; at most 256 characters.
    pub detail: Option<String>,
}

impl Delivery {
    /// A report with free text from a provider as its detail (redacted and bounded here).
    pub fn new(status: DeliveryStatus, at: DateTime<Utc>, detail: Option<&str>) -> Self {
        Self { status, at: truncate_ms(at), detail: detail.map(redact_detail).filter(|d| !d.is_empty()) }
    }

    /// A report whose detail starts with a provider's error code (`30003`, `5.1.1`), kept
    /// verbatim when it is short visible ASCII (a number in it is a code, not a phone number),
    /// followed by the free `text`, redacted.
    pub fn coded(status: DeliveryStatus, at: DateTime<Utc>, code: &str, text: Option<&str>) -> Self {
        let code = code.trim();
        let code_ok = !code.is_empty()
            && code.len() <= MAX_CODE_CHARS
            && code.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b));
        let text = text.map(redact_detail).filter(|t| !t.is_empty());
        let detail = match (code_ok, text) {
            (true, Some(text)) => Some(cut(&format!("{code}: {text}"), MAX_DETAIL_CHARS)),
            (true, None) => Some(code.to_owned()),
            (false, text) => text,
        };
        Self { status, at: truncate_ms(at), detail }
    }

    fn stored(&self) -> StoredDelivery {
        StoredDelivery { status: self.status, at: self.at.timestamp_millis(), detail: self.detail.clone() }
    }
}

/// Ms precision, as the record keeps it: what was written reads back equal.
fn truncate_ms(at: DateTime<Utc>) -> DateTime<Utc> {
    millis(at.timestamp_millis())
}

/// The report as the job record keeps it (`dv`): `s` status, `a` when (ms), `d` detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDelivery {
    #[serde(rename = "s")]
    pub status: DeliveryStatus,
    #[serde(rename = "a")]
    pub at: i64,
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl StoredDelivery {
    pub fn shown(&self) -> Delivery {
        Delivery { status: self.status, at: millis(self.at), detail: self.detail.clone() }
    }
}

/// What [`Deliveries::record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The report is on the job now.
    Recorded,
    /// The job holds this report already, or a stronger one: nothing changed.
    Unchanged,
    /// No such job in the kind's queue (never enqueued, or expired): dropped.
    Unknown,
}

impl DeliveryOutcome {
    pub fn changed(self) -> bool {
        self == DeliveryOutcome::Recorded
    }
}

/// `text` as a report's detail may keep it: secrets hidden ([`crate::redact::redact_text`]),
/// every number of 7 digits or more (a phone number, however spaced) or with 4 digits in a
/// row (an OTP code) shown as `[digits]`, control characters as spaces, at most [`MAX_DETAIL_CHARS`].
pub fn redact_detail(text: &str) -> String {
    // Bounded before the patterns run, so a huge report costs nothing.
    let bounded = cut(text, 4 * MAX_DETAIL_CHARS);
    let hidden = crate::redact::redact_text(&bounded);
    let hidden = DIGITS.replace_all(&hidden, |c: &regex::Captures<'_>| {
        let number = &c[0];
        let total = number.bytes().filter(u8::is_ascii_digit).count();
        let longest = number.split(|ch: char| !ch.is_ascii_digit()).map(str::len).max().unwrap_or(0);
        // A phone number (7 digits or more) or a code (4 in a row); `550 5.1.1` stays.
        if total >= 7 || longest >= 4 { "[digits]".to_owned() } else { number.to_owned() }
    });
    let clean: String = hidden.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    cut(clean.trim(), MAX_DETAIL_CHARS)
}

fn cut(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Records providers' reports on jobs, for every queue of one namespace.
#[derive(Debug, Clone)]
pub struct Deliveries {
    conn: Conn,
    keys: Keys,
    call_timeout: Duration,
}

impl Deliveries {
    pub fn new(conn: Conn, keys: Keys, call_timeout: Duration) -> Self {
        Self { conn, keys, call_timeout }
    }

    /// Puts `delivery` on job `job_id` of `kind` (an id that is not a UUID names no job: `Unknown`
    /// without asking Redis). The record keeps its expiry (`KEEPTTL`).
    pub async fn record(&self, kind: Kind, job_id: &str, delivery: &Delivery) -> Result<DeliveryOutcome, StoreError> {
        if uuid::Uuid::try_parse(job_id).is_err() {
            return Ok(DeliveryOutcome::Unknown);
        }
        let mut call = DELIVERY.prepare_invoke();
        call.key(self.keys.queue(kind).job(job_id));
        call.arg(rmp_serde::to_vec_named(&delivery.stored()).unwrap_or_default());
        for weaker in delivery.status.overrides() {
            call.arg(weaker.as_str());
        }
        let reply: String =
            tokio::time::timeout(self.call_timeout, call.invoke_async(&mut self.conn.clone())).await.map_err(
                |_| StoreError::Unavailable(format!("no answer within {} ms", self.call_timeout.as_millis()).into()),
            )??;
        match reply.as_str() {
            "recorded" => Ok(DeliveryOutcome::Recorded),
            "unchanged" => Ok(DeliveryOutcome::Unchanged),
            "missing" => Ok(DeliveryOutcome::Unknown),
            other => Err(StoreError::Protocol(format!("delivery.lua answered `{other}`").into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_the_declaration_order() {
        assert_eq!(DeliveryStatus::Delivered.overrides().count(), 0);
        assert_eq!(
            DeliveryStatus::Bounced.overrides().collect::<Vec<_>>(),
            [DeliveryStatus::Delivered, DeliveryStatus::Undelivered]
        );
        assert_eq!("complained".parse::<DeliveryStatus>(), Ok(DeliveryStatus::Complained));
        assert!("sent".parse::<DeliveryStatus>().unwrap_err().contains("delivered, undelivered"));
    }

    #[test]
    fn details_lose_numbers_codes_and_secrets_and_stay_short() {
        let d = redact_detail("to +886 912-345-678: code 482913, see https://x.example/cb?token=abc\nnext");
        assert_eq!(d, "to [digits]: code [digits], see https://x.example/cb?[redacted] next");
        assert_eq!(redact_detail("smtp; 550 5.1.1 user unknown"), "smtp; 550 5.1.1 user unknown");
        assert_eq!(redact_detail(&"é".repeat(10_000)).chars().count(), MAX_DETAIL_CHARS);
        let at = Utc::now();
        assert_eq!(Delivery::coded(DeliveryStatus::Undelivered, at, "30003", None).detail.as_deref(), Some("30003"));
        assert_eq!(
            Delivery::coded(DeliveryStatus::Undelivered, at, "30003", Some("unreachable 0912345678")).detail.as_deref(),
            Some("30003: unreachable [digits]")
        );
        assert_eq!(
            Delivery::coded(DeliveryStatus::Undelivered, at, "a b", Some("x")).detail.as_deref(),
            Some("x"),
            "a code that is not a code is dropped"
        );
        assert_eq!(Delivery::new(DeliveryStatus::Delivered, at, Some(" \n")).detail, None);
    }
}
