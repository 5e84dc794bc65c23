//! A job's life cycle as `GET /v1/jobs/{id}` reports it.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::record::{JobRecord, millis};
use crate::{Kind, Priority};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Cancelled before it ran (or, asked while running, instead of a later attempt): terminal.
    Cancelled,
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
            JobStatus::Cancelled => "cancelled",
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
            JobStatus::Cancelled,
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
    /// The job's priority; absent for `normal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// The job's group; absent when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The provider's report on the message, once one came (SMS delivery reports, SES
    /// events): see `jobs::delivery` for the precedence between reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<crate::delivery::Delivery>,
    /// The API key name that enqueued the job; not shown, used to keep producers apart.
    #[serde(skip)]
    pub producer: String,
}

impl JobInfo {
    pub fn from_record(id: &str, kind: Kind, record: &JobRecord) -> Self {
        JobInfo {
            id: id.to_owned(),
            kind,
            status: record.status,
            attempts: record.attempts,
            max_attempts: record.max_attempts,
            // A receiver's answer may echo a URL's query or a token: shown as operators see it.
            last_error: record.last_error.as_deref().filter(|e| !e.is_empty()).map(crate::redact::redact_text),
            created_at: millis(record.created_at),
            run_at: millis(record.run_at),
            finished_at: record.finished_at.map(millis),
            provider_message_id: record.provider_message_id.clone().filter(|v| !v.is_empty()),
            priority: (!record.priority.is_normal()).then_some(record.priority),
            group: record.group.clone(),
            delivery: record.delivery.as_ref().map(crate::delivery::StoredDelivery::shown),
            producer: record.producer.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_is_shown_redacted() {
        let record = JobRecord {
            last_error: Some(
                "HTTP 401: bad key sk_live_4eC39HqLyjWDarjtT1zdp7dc for https://a.example/cb?token=t".into(),
            ),
            ..crate::record::tests::dead_record()
        };
        let info = JobInfo::from_record("j1", Kind::Webhook, &record);
        assert_eq!(
            info.last_error.as_deref(),
            Some("HTTP 401: bad key [redacted] for https://a.example/cb?[redacted]")
        );
    }
}
