//! The API's errors, each rendered as the `application/problem+json` document of
//! [`service::Problem`] with a `type` of the API's (`/problems/...`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jobs::FieldError;
use serde::Serialize;
use serde_json::Value;
use service::Problem;
use utoipa::ToSchema;

/// The OpenAPI schema of the problem documents the API answers (`service::Problem` as the API
/// fills it in); documentation only.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDoc {
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
    /// A cancel of a job that has finished: `409` naming its status.
    #[error("the job has finished as `{}`: there is nothing left to cancel", .0.as_str())]
    AlreadyFinished(jobs::JobStatus),
    #[error("`{0}` is not on the suppression list")]
    NotSuppressed(String),
    #[error("no schedule is named `{0}`")]
    NoSchedule(String),
    #[error(
        "schedule `{0}` comes from SCHEDULES_FILE: the operator changes it there, and pauses, resumes or runs it from the console"
    )]
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
    /// A provider callback whose signature or secret is missing or wrong: `403`, the same
    /// answer whatever was wrong, and nothing about any job.
    #[error("the callback's signature or secret is not valid")]
    CallbackForbidden,
    /// Over `CALLBACK_RATE_LIMIT_PER_SECOND`: `503` with `Retry-After` (SNS retries only 5xx).
    #[error("too many callbacks; try again shortly")]
    CallbacksBusy(std::time::Duration),
    #[error("internal error")]
    Internal(String),
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
        let detail = self.to_string();
        let problem = match self {
            ApiError::Unauthorized => Problem::unauthorized(detail),
            ApiError::MalformedJson(_) => {
                Problem::new(StatusCode::BAD_REQUEST, "/problems/malformed-json", "Malformed JSON", detail)
            }
            ApiError::TooLarge(_) => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "/problems/too-large", "Request body too large", detail)
            }
            ApiError::Validation(errors) => Problem::invalid(&errors),
            ApiError::IdempotencyConflict { errors, enqueued } => with_optional(
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "/problems/idempotency-key-reused",
                    "Idempotency key reused with another request",
                    detail,
                ),
                &errors,
                enqueued,
            ),
            ApiError::RateLimited { limit, errors, retry_after_seconds, enqueued, .. } => with_optional(
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "/problems/rate-limited",
                    "Too many OTP SMS for this recipient or API key",
                    detail,
                ),
                &errors,
                enqueued,
            )
            .with("limit", limit.as_str())
            .retry_after(retry_after_seconds),
            ApiError::ScheduleLimit { limit, .. } => {
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "/problems/schedule-limit", "Too many schedules", detail)
                    .with("limit", limit.as_str())
            }
            ApiError::NotFound | ApiError::NoSchedule(_) | ApiError::NotSuppressed(_) => Problem::not_found(detail),
            ApiError::AlreadyFinished(_) => {
                Problem::new(StatusCode::CONFLICT, "/problems/job-finished", "The job has finished", detail)
            }
            ApiError::ScheduleFromFile(_) => Problem::new(
                StatusCode::CONFLICT,
                "/problems/schedule-from-file",
                "The schedule belongs to SCHEDULES_FILE",
                detail,
            ),
            ApiError::ScheduleTaken(_) => Problem::new(
                StatusCode::CONFLICT,
                "/problems/schedule-taken",
                "The schedule belongs to another producer",
                detail,
            ),
            ApiError::CallbackForbidden => Problem::forbidden(detail),
            ApiError::CallbacksBusy(after) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "/problems/callbacks-busy", "Too many callbacks", detail)
                    .retry_after(after.as_secs().max(1))
            }
            ApiError::Unavailable | ApiError::DatabaseUnavailable => Problem::unavailable(detail),
            ApiError::QueueFull => Problem::queue_full(detail),
            ApiError::Internal(cause) => Problem::internal(cause),
        };
        problem.into_response()
    }
}

/// `errors` and `enqueued`, each only when there is something to say.
fn with_optional(problem: Problem, errors: &[FieldError], enqueued: Option<Value>) -> Problem {
    let problem = if errors.is_empty() { problem } else { problem.with("errors", errors) };
    match enqueued {
        Some(enqueued) => problem.with("enqueued", enqueued),
        None => problem,
    }
}
