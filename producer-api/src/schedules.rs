//! `/v1/schedules`: recurring jobs. The API stores schedules in Redis; workers fire them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use jobs::schedule::{CatchUp, DeleteOutcome, PutOutcome, Schedule, ScheduleLimit, ScheduleLimits, Source};
use jobs::{FieldError, ValidJob};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Producer;
use crate::problem::{ApiError, ProblemDoc};
use crate::routes::json_body;

/// Schedule bodies are small; 64 KiB leaves room for a webhook's data.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A schedule as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub catch_up: CatchUp,
    #[schema(value_type = Object)]
    pub job: Value,
    pub source: Source,
    /// The API key name that stored it (`file` for SCHEDULES_FILE); its jobs carry it.
    pub producer: String,
    pub updated_at: DateTime<Utc>,
    /// The last tick fired (or skipped); absent before the first.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The next tick; absent if the expression no longer fires.
    pub next_run_at: Option<DateTime<Utc>>,
}

impl ScheduleView {
    fn new(schedule: Schedule, last_run_at: Option<DateTime<Utc>>) -> Self {
        let from = last_run_at.unwrap_or(schedule.updated_at).max(Utc::now());
        let next_run_at = schedule.timetable().and_then(|t| t.next_after(from));
        Self {
            name: schedule.name,
            cron: schedule.cron,
            timezone: schedule.timezone,
            catch_up: schedule.catch_up,
            job: schedule.job,
            source: schedule.source,
            producer: schedule.producer,
            updated_at: schedule.updated_at,
            last_run_at,
            next_run_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    /// Sorted by name: API-created and SCHEDULES_FILE ones alike.
    pub schedules: Vec<ScheduleView>,
}

#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", request_body = jobs::schedule::ScheduleRequest,
    responses(
        (status = 201, description = "Stored (created, or replaced the one of that name); its ticks count from now", body = ScheduleView),
        (status = 400, description = "Malformed JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown API key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "A schedule of that name comes from SCHEDULES_FILE or belongs to another producer (`/problems/schedule-taken`): of producers racing for a new name, one gets `201` and the others this; nothing written", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid: bad name, time zone or job (`errors` names each); a cron expression over 256 characters, or firing more often than `SCHEDULES_MIN_INTERVAL_SECONDS`, at `/cron`; a job over 16 KiB as JSON at `/job`; the job checked as `POST /v1/jobs` checks it (an audit actor `console:…` at `/job/payload/actor`)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "A schedule quota is full, named in `limit`: `schedules_per_producer` (`SCHEDULES_MAX_PER_PRODUCER`, default 1000) or `schedules_max` (`SCHEDULES_MAX`, all producers, default 10000); nothing written. Replacing one's own schedule is never refused", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Redis unreachable (header `Retry-After`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<AppState>,
    Producer(producer): Producer,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ScheduleView>), ApiError> {
    let value = json_body(body, BODY_LIMIT)?;
    let now = Utc::now();
    let (schedule, table) = Schedule::parse(value, "", Source::Api, &producer, now).map_err(ApiError::Validation)?;
    let mut errors: Vec<FieldError> = state.schedule_limits.check_interval(&table, "", now).into_iter().collect();
    // The rules of `POST /v1/jobs` that need this deployment's settings.
    if let Ok(job) = ValidJob::parse(schedule.job.clone(), "/job", now) {
        errors.extend(crate::routes::check_template(&state.sms_templates, &job, "/job"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    match state.schedules.put_checked(&schedule, &state.schedule_limits).await? {
        PutOutcome::Created | PutOutcome::Replaced => {
            Ok((StatusCode::CREATED, Json(ScheduleView::new(schedule, None))))
        }
        PutOutcome::FromFile => Err(ApiError::ScheduleFromFile(schedule.name)),
        PutOutcome::Taken => Err(ApiError::ScheduleTaken(schedule.name)),
        PutOutcome::OverLimit(limit) => Err(over_limit(limit, &state.schedule_limits)),
    }
}

fn over_limit(limit: ScheduleLimit, limits: &ScheduleLimits) -> ApiError {
    metrics::counter!("jobplane_schedule_limited_total", "limit" => limit.as_str()).increment(1);
    let detail = match limit {
        ScheduleLimit::PerProducer => format!(
            "this API key holds {} schedules, the most {} allows; delete one, or replace one of the same name",
            limits.per_producer,
            limit.setting()
        ),
        ScheduleLimit::Total => format!(
            "the deployment holds {} schedules, the most {} allows; delete one first",
            limits.total,
            limit.setting()
        ),
    };
    ApiError::ScheduleLimit { limit, detail }
}

#[utoipa::path(get, path = "/v1/schedules", tag = "schedules",
    responses(
        (status = 200, description = "This producer's schedules and SCHEDULES_FILE's, with their next runs", body = ScheduleList),
        (status = 401, description = "Missing or unknown API key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Redis unreachable (header `Retry-After`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, Producer(producer): Producer) -> Result<Json<ScheduleList>, ApiError> {
    // A producer sees its own schedules (their jobs may hold its secrets) and the file's.
    let schedules =
        state.schedules.list_for(&producer).await?.into_iter().map(|(s, last)| ScheduleView::new(s, last)).collect();
    Ok(Json(ScheduleList { schedules }))
}

#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 204, description = "Deleted: no tick fires after this"),
        (status = 401, description = "Missing or unknown API key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No schedule of that name (of this producer's)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The schedule comes from SCHEDULES_FILE", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Redis unreachable (header `Retry-After`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Producer(producer): Producer,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    // A name that does not decode (bytes that are not UTF-8) names no schedule.
    let Ok(Path(name)) = name else { return Err(ApiError::NoSchedule("(not UTF-8)".into())) };
    match state.schedules.delete_checked(&name, &producer).await? {
        DeleteOutcome::Deleted => Ok(StatusCode::NO_CONTENT),
        DeleteOutcome::Missing | DeleteOutcome::Taken => Err(ApiError::NoSchedule(name)),
        DeleteOutcome::FromFile => Err(ApiError::ScheduleFromFile(name)),
    }
}
