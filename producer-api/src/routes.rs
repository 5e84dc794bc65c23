//! `/v1/jobs`: enqueue one job or a batch, and read a job's status.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use jobs::payload::Payload;
use jobs::sms_templates::SmsTemplates;
use jobs::{EnqueueOutcome, FieldError, JobInfo, Kind, NewJob, OtpLimit, OtpLimits, ValidJob};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Producer;
use crate::problem::{ApiError, ProblemDoc};

pub const SINGLE_BODY_LIMIT: usize = 256 * 1024;
pub const BATCH_BODY_LIMIT: usize = 8 * 1024 * 1024;
pub const MAX_BATCH: usize = 1000;

/// A job to enqueue (request schema, for the OpenAPI document; the handler validates the raw JSON).
#[derive(Debug, ToSchema)]
#[expect(dead_code, reason = "documentation only")]
pub struct JobRequestDoc {
    kind: Kind,
    payload: Payload,
    /// When to run, RFC 3339. A time in the past means now.
    run_at: Option<DateTime<Utc>>,
    /// Run after this many seconds (not together with `run_at`); at most 366 days.
    delay_seconds: Option<u64>,
    /// Bounded per kind: otp_sms 1–10 (default 5), email 1–25 (8), webhook 1–25 (10), audit_log 1–50 (20).
    max_attempts: Option<u32>,
    /// Batch items only; a single job takes the `Idempotency-Key` header.
    idempotency_key: Option<String>,
    /// Served after every ready job of a higher priority of its kind; default `normal`.
    priority: Option<jobs::Priority>,
    /// A tenant or customer: 1 to 128 visible ASCII characters (no space). Within a kind and
    /// priority, groups are served round-robin, so one group's flood cannot starve another.
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]{1,128}$")]
    group: Option<String>,
}

#[derive(Debug, ToSchema)]
#[expect(dead_code, reason = "documentation only")]
pub struct BatchRequestDoc {
    /// 1 to 1000 jobs; all are validated before any is written.
    jobs: Vec<JobRequestDoc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub id: String,
    pub kind: Kind,
    /// `queued` or `scheduled` when created; the job's current status on a replay.
    pub status: jobs::JobStatus,
    pub run_at: DateTime<Utc>,
    pub links: Links,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Links {
    #[serde(rename = "self")]
    pub self_link: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAccepted {
    pub jobs: Vec<BatchItem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItem {
    pub id: String,
    pub status: jobs::JobStatus,
    /// Present and true when the item's idempotency key returned an earlier job.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

pub(crate) fn json_body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Value, ApiError> {
    let bytes = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(limit),
        _ => ApiError::MalformedJson(rejection.body_text()),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

/// The request's W3C `traceparent`, carried in its jobs so the worker's span continues the
/// trace; a malformed one is ignored, as the Trace Context spec says.
fn traceparent(headers: &HeaderMap) -> Option<String> {
    let incoming =
        headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(jobs::envelope::valid_traceparent)?;
    // With spans exported, the enqueue is a span of its own in the trace, the job's parent.
    let span = tracing::info_span!("enqueue");
    service::continue_trace(&span, &incoming);
    Some(service::traceparent_of(&span).unwrap_or(incoming))
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters, optionally in the
/// quoted form of a structured-field string.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else { return Ok(None) };
    let invalid =
        || ApiError::Validation(vec![FieldError::new("Idempotency-Key", "must be 1 to 255 visible ASCII characters")]);
    let text = raw.to_str().map_err(|_| invalid())?;
    let key = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    if jobs::envelope::valid_idempotency_key(key) { Ok(Some(key.to_owned())) } else { Err(invalid()) }
}

/// The rule `jobs` cannot check alone, for every route that stores a job (direct, batch,
/// schedule): an OTP SMS may name only a template this deployment has. (The rest, such as
/// audit actors reserved for the console, is `ValidJob::parse`'s.)
pub(crate) fn check_template(templates: &SmsTemplates, job: &ValidJob, base: &str) -> Option<FieldError> {
    match &job.payload {
        Payload::OtpSms(otp) => templates.check(otp, base),
        _ => None,
    }
}

/// The `429` for jobs over an OTP SMS limit, each given as (its JSON pointer base, the limit,
/// the wait until a slot frees for it); `Retry-After` is the longest wait.
fn rate_limited(limits: &OtpLimits, refused: &[(String, OtpLimit, Duration)], enqueued: Option<Value>) -> ApiError {
    let window = limits.window.as_secs();
    let errors = refused
        .iter()
        .map(|(base, limit, _)| match limit {
            OtpLimit::PerNumber => FieldError::new(
                format!("{base}/payload/to"),
                format!("this number was sent {} OTP SMS within {window} s, the most allowed", limits.per_number),
            ),
            OtpLimit::PerKey => FieldError::new(
                if base.is_empty() { "Authorization".to_owned() } else { base.clone() },
                format!("this API key enqueued {} OTP SMS within {window} s, the most allowed", limits.per_key),
            ),
        })
        .collect();
    let wait = refused.iter().map(|(_, _, wait)| *wait).max().unwrap_or_default();
    let retry_after_seconds = wait.as_millis().div_ceil(1000).clamp(1, u128::from(u32::MAX));
    let limit = refused.first().map_or(OtpLimit::PerNumber, |(_, limit, _)| *limit);
    let what = match limit {
        OtpLimit::PerNumber => format!("{} per recipient", limits.per_number),
        OtpLimit::PerKey => format!("{} per API key", limits.per_key),
    };
    metrics::counter!("jobplane_otp_rate_limited_total", "limit" => limit.as_str()).increment(1);
    ApiError::RateLimited {
        limit,
        detail: format!(
            "OTP SMS limit reached ({what} within {window} s); nothing was enqueued for otp_sms; retry after {retry_after_seconds} s"
        ),
        errors,
        retry_after_seconds: u64::try_from(retry_after_seconds).unwrap_or(u64::MAX),
        enqueued,
    }
}

fn count_created(job: &NewJob, outcome: &EnqueueOutcome) {
    if matches!(outcome, EnqueueOutcome::Created { .. }) {
        metrics::counter!("jobplane_jobs_enqueued_total", "kind" => job.kind.as_str(), "producer" => job.producer.clone()).increment(1);
    }
}

/// Enqueue one job.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = JobRequestDoc,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 visible ASCII characters; the same key and body within 24 h return the same job"),
        ("traceparent" = Option<String>, Header, description = "W3C Trace Context; the job's processing continues this trace (a malformed one is ignored)"),
    ),
    responses(
        (status = 202, description = "Enqueued: the job is in Redis", body = Accepted),
        (status = 200, description = "Replayed: this key was seen with the same body (header `Idempotent-Replayed: true`); the earlier job with its current status, `cancelled` included: a cancelled job keeps its key until the key expires", body = Accepted),
        (status = 400, description = "Malformed JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown API key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Body over 256 KiB", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid job (including an OTP SMS naming a template this deployment lacks, at `/payload/template`), or the key was used with another body", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "OTP SMS rate limit reached, per recipient (`limit: otp_per_number`, field `/payload/to`) or per API key (`otp_per_key`); nothing written; header `Retry-After`: seconds until a slot frees", body = ProblemDoc, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until the limit lets this job through"))),
        (status = 503, description = "Redis unreachable (header `Retry-After`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn create_job(
    State(state): State<AppState>,
    Producer(producer): Producer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let value = json_body(body, SINGLE_BODY_LIMIT)?;
    let key = idempotency_key(&headers)?;
    if value.get("idempotency_key").is_some() {
        return Err(ApiError::Validation(vec![FieldError::new(
            "/idempotency_key",
            "belongs in the Idempotency-Key header for a single job (the field is for batch items)",
        )]));
    }
    let now = Utc::now();
    let mut job = ValidJob::parse(value, "", now).map_err(ApiError::Validation)?;
    if let Some(error) = check_template(&state.sms_templates, &job, "") {
        return Err(ApiError::Validation(vec![error]));
    }
    job.idempotency_key = key;
    let mut job = job.into_new(&producer, now);
    job.traceparent = traceparent(&headers);
    let outcome = state.store.enqueue(std::slice::from_ref(&job)).await?.pop().unwrap_or(EnqueueOutcome::NotWritten);
    count_created(&job, &outcome);
    let (status, id, job_status, run_at) = match outcome {
        EnqueueOutcome::Created { id, status, run_at } => (StatusCode::ACCEPTED, id, status, run_at),
        EnqueueOutcome::Replayed { id, status, run_at } => (StatusCode::OK, id, status, run_at),
        EnqueueOutcome::Conflict { existing_id } => {
            return Err(ApiError::IdempotencyConflict {
                errors: vec![FieldError::new(
                    "Idempotency-Key",
                    format!("was used with a different request (job {existing_id})"),
                )],
                enqueued: None,
            });
        }
        EnqueueOutcome::Limited { limit, retry_after } => {
            return Err(rate_limited(&state.otp_limits, &[(String::new(), limit, retry_after)], None));
        }
        EnqueueOutcome::NotWritten => {
            return Err(ApiError::Internal("enqueue.lua wrote nothing without a conflict".into()));
        }
    };
    let link = format!("/v1/jobs/{id}");
    let mut response = (
        status,
        Json(Accepted { id, kind: job.kind, status: job_status, run_at, links: Links { self_link: link.clone() } }),
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&link) {
        headers.insert(header::LOCATION, location);
    }
    if status == StatusCode::OK {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    jobs: Vec<Value>,
}

/// Enqueue up to 1000 jobs. All are validated before any is written; each kind's jobs are
/// written atomically, all kinds in one Redis round trip.
#[utoipa::path(post, path = "/v1/jobs/batch", tag = "jobs", request_body = BatchRequestDoc,
    params(("traceparent" = Option<String>, Header, description = "W3C Trace Context; every job of the batch continues this trace")),
    responses(
        (status = 202, description = "Every job is in Redis, in request order", body = BatchAccepted),
        (status = 400, description = "Malformed JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown API key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Body over 8 MiB", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Some job is invalid (nothing written), or an idempotency key was used with another body (nothing of that kind written; `enqueued` lists what other kinds wrote)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "The batch's OTP SMS would pass a rate limit: the batch is refused whole, `errors` naming each job over it (`/jobs/<i>/payload/to` per recipient, `/jobs/<i>` per API key); header `Retry-After`: seconds until all of them fit", body = ProblemDoc, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until the limit lets the whole batch through"))),
        (status = 503, description = "Redis unreachable (header `Retry-After`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn create_batch(
    State(state): State<AppState>,
    Producer(producer): Producer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<BatchAccepted>), ApiError> {
    let value = json_body(body, BATCH_BODY_LIMIT)?;
    let request: BatchRequest = serde_path_to_error::deserialize(value)
        .map_err(|e| ApiError::Validation(vec![jobs::validation::from_serde("", &e)]))?;
    let now = Utc::now();
    let jobs = validate_batch(request.jobs, now, &state.sms_templates)?;
    let trace = traceparent(&headers);
    let jobs: Vec<NewJob> =
        jobs.into_iter().map(|job| NewJob { traceparent: trace.clone(), ..job.into_new(&producer, now) }).collect();
    let outcomes = state.store.enqueue(&jobs).await?;
    for (job, outcome) in jobs.iter().zip(&outcomes) {
        count_created(job, outcome);
    }
    batch_answer(outcomes, &state.otp_limits)
}

fn validate_batch(items: Vec<Value>, now: DateTime<Utc>, templates: &SmsTemplates) -> Result<Vec<ValidJob>, ApiError> {
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::Validation(vec![FieldError::new("/jobs", format!("must hold 1 to {MAX_BATCH} jobs"))]));
    }
    let mut errors = Vec::new();
    let mut valid = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let base = format!("/jobs/{i}");
        match ValidJob::parse(item, &base, now) {
            Ok(job) => {
                errors.extend(check_template(templates, &job, &base));
                valid.push(job);
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        let mut seen: HashMap<(Kind, &str), usize> = HashMap::new();
        for (i, job) in valid.iter().enumerate() {
            if let Some(key) = job.idempotency_key.as_deref()
                && let Some(first) = seen.insert((job.kind, key), i)
            {
                errors.push(FieldError::new(
                    format!("/jobs/{i}/idempotency_key"),
                    format!("repeats the key of /jobs/{first}"),
                ));
            }
        }
    }
    if errors.is_empty() { Ok(valid) } else { Err(ApiError::Validation(errors)) }
}

fn batch_answer(
    outcomes: Vec<EnqueueOutcome>,
    limits: &OtpLimits,
) -> Result<(StatusCode, Json<BatchAccepted>), ApiError> {
    let mut conflicts = Vec::new();
    let mut limited = Vec::new();
    let mut written = Vec::new();
    let mut items = Vec::with_capacity(outcomes.len());
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            EnqueueOutcome::Created { id, status, .. } => {
                written.push(serde_json::json!({"index": i, "id": id}));
                items.push(BatchItem { id, status, replayed: false });
            }
            EnqueueOutcome::Replayed { id, status, .. } => {
                written.push(serde_json::json!({"index": i, "id": id}));
                items.push(BatchItem { id, status, replayed: true });
            }
            EnqueueOutcome::Conflict { existing_id } => conflicts.push(FieldError::new(
                format!("/jobs/{i}/idempotency_key"),
                format!("was used with a different request (job {existing_id})"),
            )),
            EnqueueOutcome::Limited { limit, retry_after } => limited.push((format!("/jobs/{i}"), limit, retry_after)),
            EnqueueOutcome::NotWritten => {}
        }
    }
    let enqueued = (!written.is_empty()).then(|| Value::from(written));
    if !conflicts.is_empty() {
        Err(ApiError::IdempotencyConflict { errors: conflicts, enqueued })
    } else if !limited.is_empty() {
        Err(rate_limited(limits, &limited, enqueued))
    } else {
        Ok((StatusCode::ACCEPTED, Json(BatchAccepted { jobs: items })))
    }
}

/// A job's status. Jobs are visible to the producer that enqueued them, for at least 24 h after they end.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job", body = JobInfo),
        (status = 401, description = "Missing or unknown API key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Unknown, expired, or another producer's", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Redis unreachable", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn get_job(
    State(state): State<AppState>,
    Producer(producer): Producer,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<JobInfo>, ApiError> {
    // An id that does not decode (bytes that are not UTF-8) names no job, as any non-UUID.
    let Ok(Path(id)) = id else { return Err(ApiError::NotFound) };
    if uuid::Uuid::try_parse(&id).is_err() {
        return Err(ApiError::NotFound);
    }
    match state.store.job(&id).await? {
        Some(job) if job.producer == producer => Ok(Json(job)),
        _ => Err(ApiError::NotFound),
    }
}

/// The answer to `DELETE /v1/jobs/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelAnswer {
    pub id: String,
    /// `cancelled`; `running` for a job that had started (see `cancel_requested`).
    pub status: jobs::JobStatus,
    /// Present, `true`, on a running job: the request is recorded. If its delivery had not
    /// begun (the worker was stopping and puts it back), or the attempt fails and would be
    /// retried, or its worker dies, it ends `cancelled`; an attempt that succeeds ends
    /// `succeeded`, one that fails for good `dead`. Follow `GET /v1/jobs/{id}`: the final
    /// status tells what happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<bool>,
}

/// Cancels a job that has not run: a `queued` or `scheduled` job, or one waiting to retry,
/// never runs (again); its status becomes `cancelled`, kept like a finished job's. A second
/// cancel gives the same answer. Its idempotency key keeps answering with this cancelled job
/// (`200`, `Idempotent-Replayed: true`) until the key expires: a late resend never revives it.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "Cancelled (now or before): `{\"id\", \"status\": \"cancelled\"}`", body = CancelAnswer),
        (status = 202, description = "Running: `{\"id\", \"status\": \"running\", \"cancel_requested\": true}`; the final status tells what happened", body = CancelAnswer),
        (status = 401, description = "Missing or unknown API key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Unknown, expired, or another producer's", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Finished (`succeeded`, `dead` or `expired`): the detail names the status", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Redis unreachable (header `Retry-After`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn cancel_job(
    State(state): State<AppState>,
    Producer(producer): Producer,
    id: Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<CancelAnswer>), ApiError> {
    use jobs::control::CancelOutcome;
    let Ok(Path(id)) = id else { return Err(ApiError::NotFound) };
    if uuid::Uuid::try_parse(&id).is_err() {
        return Err(ApiError::NotFound);
    }
    let (_, outcome) = state.control.cancel(&id, Some(&producer)).await?;
    match outcome {
        CancelOutcome::Cancelled | CancelOutcome::AlreadyCancelled => {
            Ok((StatusCode::OK, Json(CancelAnswer { id, status: jobs::JobStatus::Cancelled, cancel_requested: None })))
        }
        CancelOutcome::CancelRequested => Ok((
            StatusCode::ACCEPTED,
            Json(CancelAnswer { id, status: jobs::JobStatus::Running, cancel_requested: Some(true) }),
        )),
        CancelOutcome::Finished(status) => Err(ApiError::AlreadyFinished(status)),
        // Only operators' cancels are refused so; a producer's never is.
        CancelOutcome::NotFound | CancelOutcome::Protected => Err(ApiError::NotFound),
    }
}
