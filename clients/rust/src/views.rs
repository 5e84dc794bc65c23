//! What the API answers, as the client reads it: tolerant of fields and statuses added later.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::Kind;

/// `202`/`200` of `POST /v1/jobs`.
#[derive(Debug, Clone, Deserialize)]
pub struct Accepted {
    pub id: String,
    pub kind: Kind,
    pub status: String,
    pub run_at: DateTime<Utc>,
    /// Set when the key returned an earlier job (`200`, `Idempotent-Replayed: true`).
    #[serde(skip)]
    pub replayed: bool,
}

/// One item of a batch's answer, in the order sent.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchItem {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub replayed: bool,
}

/// `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, Deserialize)]
pub struct JobView {
    pub id: String,
    pub kind: Kind,
    /// `queued`, `scheduled`, `running`, `retrying`, `succeeded`, `dead`, `expired`, `cancelled`.
    pub status: String,
    pub attempts: u32,
    pub max_attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Anything else the API shows (`delivery`, `priority`, ...).
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

/// `DELETE /v1/jobs/{id}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Cancelled {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub cancel_requested: bool,
}

/// A schedule as `/v1/schedules` shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub next_run_at: Option<DateTime<Utc>>,
    pub job: Value,
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

/// One audit event, as `GET /v1/audit-logs` shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct AuditEvent {
    pub event_id: uuid::Uuid,
    pub tenant_id: String,
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    #[serde(default)]
    pub resource_id: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub metadata: Value,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    #[serde(default)]
    pub job_id: Option<uuid::Uuid>,
}

/// One page of audit events, newest first.
#[derive(Debug, Clone, Deserialize)]
pub struct AuditPage {
    pub items: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
}
