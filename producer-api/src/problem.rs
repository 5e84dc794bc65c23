//! One error type for the API, rendered as `application/problem+json` (RFC 9457).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jobs::FieldError;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[schema(example = "/problems/validation")]
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[schema(example = "The request is not valid")]
    pub title: &'static str,
    #[schema(example = 422)]
    pub status: u16,
    pub detail: String,
    /// Every broken rule, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Batch only: jobs of other kinds in the batch that were enqueued before a conflict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enqueued: Option<Value>,
    /// `429` only: the limit reached, `otp_per_number` or `otp_per_key` (OTP SMS), or
    /// `schedules_per_producer` or `schedules_max` (schedules).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "otp_per_number")]
    pub limit: Option<&'static str>,
}

/// `Retry-After` when Redis is full: room comes back as memory is freed or raised, which takes
/// seconds at least, not the instant a reconnect takes.
pub const QUEUE_FULL_RETRY_AFTER_SECONDS: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid bearer API key is required")]
    Unauthorized,
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{} rule(s) broken", .0.len())]
    Validation(Vec<FieldError>),
    #[error("the idempotency key was already used with a different request")]
    IdempotencyConflict { errors: Vec<FieldError>, enqueued: Option<Value> },
    /// Over an OTP SMS rate limit: nothing of that kind was written; `Retry-After` says when a slot frees.
    #[error("{detail}")]
    RateLimited {
        limit: jobs::OtpLimit,
        detail: String,
        errors: Vec<FieldError>,
        retry_after_seconds: u64,
        enqueued: Option<Value>,
    },
    #[error("no such job")]
    NotFound,
    #[error("no schedule is named `{0}`")]
    NoSchedule(String),
    #[error("schedule `{0}` comes from SCHEDULES_FILE; change it there")]
    ScheduleFromFile(String),
    #[error("the schedule name `{0}` belongs to another producer")]
    ScheduleTaken(String),
    /// A schedule quota is full: nothing was written. No `Retry-After`: only a delete frees a slot.
    #[error("{detail}")]
    ScheduleLimit { limit: jobs::schedule::ScheduleLimit, detail: String },
    #[error(
        "the queue store did not answer in time, so whether the job was written is unknown; \
         retry with the same Idempotency-Key to get exactly one job"
    )]
    Unavailable,
    #[error(
        "the queue store is full (Redis reached its maxmemory), so the job was not written; \
         retry later with the same Idempotency-Key"
    )]
    QueueFull,
    #[error("the audit-log database did not answer; try again shortly")]
    DatabaseUnavailable,
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "/problems/unauthorized", "Unauthorized"),
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "/problems/malformed-json", "Malformed JSON"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "/problems/too-large", "Request body too large"),
            ApiError::Validation(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "/problems/validation", "The request is not valid")
            }
            ApiError::IdempotencyConflict { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/idempotency-key-reused",
                "Idempotency key reused with another request",
            ),
            ApiError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "/problems/rate-limited",
                "Too many OTP SMS for this recipient or API key",
            ),
            ApiError::ScheduleLimit { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "/problems/schedule-limit", "Too many schedules")
            }
            ApiError::NotFound | ApiError::NoSchedule(_) => (StatusCode::NOT_FOUND, "/problems/not-found", "Not found"),
            ApiError::ScheduleFromFile(_) => {
                (StatusCode::CONFLICT, "/problems/schedule-from-file", "The schedule belongs to SCHEDULES_FILE")
            }
            ApiError::ScheduleTaken(_) => {
                (StatusCode::CONFLICT, "/problems/schedule-taken", "The schedule belongs to another producer")
            }
            ApiError::Unavailable | ApiError::DatabaseUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "/problems/unavailable", "Service unavailable")
            }
            ApiError::QueueFull => (StatusCode::SERVICE_UNAVAILABLE, "/problems/queue-full", "Queue store full"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "/problems/internal", "Internal server error"),
        }
    }
}

impl From<jobs::StoreError> for ApiError {
    fn from(e: jobs::StoreError) -> Self {
        match &e {
            jobs::StoreError::Unavailable(_) => {
                tracing::warn!(error = jobs::store::chain(&e), "redis unavailable");
                ApiError::Unavailable
            }
            // Logged, once per interval, and counted where it was classified.
            jobs::StoreError::Full(_) => ApiError::QueueFull,
            jobs::StoreError::Protocol(_) => ApiError::Internal(jobs::store::chain(&e)),
        }
    }
}

impl ApiError {
    /// A PostgreSQL failure as the caller should see it: the database away, busy or not set up
    /// yet is `503`; anything else it refused is a bug of ours (queries are checked before they
    /// are sent), `500` with the detail in the log. Never an outage for a refusal of the data.
    pub fn from_database(e: &sqlx::Error) -> Self {
        if database_unavailable(e) {
            tracing::warn!(error = %e, "audit-log database unavailable");
            ApiError::DatabaseUnavailable
        } else {
            ApiError::Internal(format!("audit-log query refused: {e}"))
        }
    }
}

/// Whether `e` says PostgreSQL cannot serve the query now (try again), rather than that it
/// refused the query itself.
fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| retryable_sqlstate(&code)),
        _ => false,
    }
}

/// SQLSTATEs that mean "not now": connection exceptions (08), insufficient resources (53),
/// operator intervention (57: shutdown, statement timeout, cannot connect now), serialization
/// failures and deadlocks (40001, 40P01), and a table not there yet (42P01: the migrations run
/// in the background at start).
fn retryable_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57")
        || matches!(code, "40001" | "40P01" | "42P01")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = self.parts();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "request failed");
        }
        let detail = self.to_string();
        let (errors, enqueued, limit, retry_after) = match self {
            ApiError::Validation(errors) => (errors, None, None, None),
            ApiError::IdempotencyConflict { errors, enqueued } => (errors, enqueued, None, None),
            ApiError::RateLimited { limit, errors, retry_after_seconds, enqueued, .. } => {
                (errors, enqueued, Some(limit.as_str()), Some(retry_after_seconds))
            }
            ApiError::QueueFull => (Vec::new(), None, None, Some(QUEUE_FULL_RETRY_AFTER_SECONDS)),
            ApiError::ScheduleLimit { limit, .. } => (Vec::new(), None, Some(limit.as_str()), None),
            _ => (Vec::new(), None, None, None),
        };
        let problem = Problem { kind, title, status: status.as_u16(), detail, errors, enqueued, limit };
        let mut response = (status, axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE if !headers.contains_key(header::RETRY_AFTER) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
