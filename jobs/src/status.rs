//! A job's life cycle as `GET /v1/jobs/{id}` reports it.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Scheduled,
    Running,
    Retrying,
    Succeeded,
    Dead,
    Expired,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Running => "running",
            JobStatus::Retrying => "retrying",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Dead => "dead",
            JobStatus::Expired => "expired",
        }
    }
}

impl FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            JobStatus::Queued,
            JobStatus::Scheduled,
            JobStatus::Running,
            JobStatus::Retrying,
            JobStatus::Succeeded,
            JobStatus::Dead,
            JobStatus::Expired,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown job status `{s}`"))
    }
}

/// What the status endpoint shows of a job: never its payload, so no OTP code can leak.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobInfo {
    pub id: String,
    pub kind: Kind,
    pub status: JobStatus,
    pub attempts: u32,
    pub max_attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub run_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What the provider called the message it accepted: the SES message id, the Twilio
    /// message SID or the SMS gateway's id. Set once an attempt succeeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    /// The API key name that enqueued the job; not shown, used to keep producers apart.
    #[serde(skip)]
    pub producer: String,
}

impl JobInfo {
    /// Reads a job hash as `enqueue.lua` and the workers write it; `None` when a field is
    /// missing or malformed, which only a foreign writer could cause.
    pub fn from_hash(fields: &HashMap<String, String>) -> Option<Self> {
        let millis =
            |name: &str| fields.get(name).and_then(|v| v.parse::<i64>().ok()).and_then(DateTime::from_timestamp_millis);
        let number = |name: &str| fields.get(name).and_then(|v| v.parse::<u32>().ok());
        Some(JobInfo {
            id: fields.get("id")?.clone(),
            kind: fields.get("kind")?.parse().ok()?,
            status: fields.get("status")?.parse().ok()?,
            attempts: number("attempts")?,
            max_attempts: number("max_attempts")?,
            // A receiver's answer may echo a URL's query or a token: shown as operators see it.
            last_error: fields.get("last_error").filter(|e| !e.is_empty()).map(|e| crate::redact::redact_text(e)),
            created_at: millis("created_at")?,
            run_at: millis("run_at")?,
            finished_at: millis("finished_at"),
            provider_message_id: fields.get("provider_message_id").filter(|v| !v.is_empty()).cloned(),
            producer: fields.get("producer")?.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_is_shown_redacted() {
        let fields: HashMap<String, String> = [
            ("id", "j1"),
            ("kind", "webhook"),
            ("status", "dead"),
            ("attempts", "1"),
            ("max_attempts", "1"),
            ("created_at", "1763712000000"),
            ("run_at", "1763712000000"),
            ("producer", "shop"),
            ("last_error", "HTTP 401: bad key sk_live_4eC39HqLyjWDarjtT1zdp7dc for https://a.example/cb?token=t"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let info = JobInfo::from_hash(&fields).unwrap();
        assert_eq!(
            info.last_error.as_deref(),
            Some("HTTP 401: bad key [redacted] for https://a.example/cb?[redacted]")
        );
    }
}
