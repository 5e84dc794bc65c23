//! `/v1/schedules`: recurring jobs. The API stores schedules in Redis; workers fire them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use jobs::schedule::{
    Actor, CatchUp, DeleteOutcome, Listed, PutOutcome, Refused, RunNow, Schedule, ScheduleLimit, ScheduleLimits, Source,
};
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
    /// The next tick; absent while paused, or if the expression no longer fires.
    pub next_run_at: Option<DateTime<Utc>>,
    /// A paused schedule fires nothing until resumed (`POST /v1/schedules/{name}/resume`).
    pub paused: bool,
    /// When it was paused; absent while running.
    pub paused_at: Option<DateTime<Utc>>,
}

impl ScheduleView {
    pub(crate) fn from_listed(listed: Listed) -> Self {
        let next_run_at = listed.next_run_at(Utc::now());
        let paused_at = listed.pause.as_ref().map(|p| p.at);
        let mut view = Self::new(listed.schedule, listed.last);
        view.next_run_at = next_run_at;
        view.paused = paused_at.is_some();
        view.paused_at = paused_at;
        view
    }

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
            paused: false,
            paused_at: None,
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
        PutOutcome::Created => Ok((StatusCode::CREATED, Json(ScheduleView::new(schedule, None)))),
        // A replaced schedule keeps its pause: shown as stored.
        PutOutcome::Replaced => match state.schedules.get(&schedule.name).await? {
            (Some(listed), _) => Ok((StatusCode::CREATED, Json(ScheduleView::from_listed(listed)))),
            (None, _) => Ok((StatusCode::CREATED, Json(ScheduleView::new(schedule, None)))),
        },
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
    let schedules = state.schedules.list_for(&producer).await?.into_iter().map(ScheduleView::from_listed).collect();
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

/// A schedule name from the path: one that does not decode, or breaks the naming rule (longer
/// than 128 bytes, ...), names no schedule: `404` without a Redis call.
fn schedule_name(name: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match name {
        Ok(Path(name)) if jobs::schedule::valid_name(&name) => Ok(name),
        Ok(Path(name)) => Err(ApiError::NoSchedule(name.chars().take(128).collect())),
        Err(_) => Err(ApiError::NoSchedule("(not UTF-8)".into())),
    }
}

/// A refused control as the API answers it: another producer's schedule is `404`, as if it
/// did not exist.
fn refused(name: String, refused: Refused) -> ApiError {
    match refused {
        Refused::Missing | Refused::Taken => ApiError::NoSchedule(name),
        Refused::FromFile => ApiError::ScheduleFromFile(name),
        Refused::Invalid(errors) => ApiError::Validation(errors),
        Refused::KeyTaken { existing_id } => ApiError::IdempotencyConflict {
            errors: vec![FieldError::new(
                "/idempotency_key",
                format!("this second's run-now key was used by another request of yours (job {existing_id})"),
            )],
            enqueued: None,
        },
    }
}

/// The schedule as it now is.
async fn view(state: &AppState, name: String) -> Result<Json<ScheduleView>, ApiError> {
    match state.schedules.get(&name).await? {
        (Some(listed), _) => Ok(Json(ScheduleView::from_listed(listed))),
        // Deleted meanwhile.
        (None, _) => Err(ApiError::NoSchedule(name)),
    }
}

#[utoipa::path(post, path = "/v1/schedules/{name}/pause", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "Paused (or already was): from this answer on, no tick of it fires, however many workers run; `paused: true`, no `next_run_at`. The pause lives in Redis with the schedule: it survives restarts and a replacement of the schedule (`POST /v1/schedules` with its name), and ends with `resume` or `DELETE`", body = ScheduleView),
        (status = 401, description = "Missing or unknown API key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No schedule of that name of this producer's (another producer's is not shown)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The schedule comes from SCHEDULES_FILE: operators pause it from the console (`/problems/schedule-from-file`)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Redis unreachable (header `Retry-After`); the pause may be half taken: send it again", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn pause(
    State(state): State<AppState>,
    Producer(producer): Producer,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<ScheduleView>, ApiError> {
    let name = schedule_name(name)?;
    match state.schedules.pause(&name, &Actor::Producer(producer)).await? {
        Ok(_) => view(&state, name).await,
        Err(e) => Err(refused(name, e)),
    }
}

#[utoipa::path(post, path = "/v1/schedules/{name}/resume", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "Running (or already was). What it owes for the ticks missed while paused follows its `catch_up`: `latest` fires the most recent missed tick once, at once (none if no tick fell in the pause); `none` fires none of them and picks up at the first tick after the resume", body = ScheduleView),
        (status = 401, description = "Missing or unknown API key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No schedule of that name of this producer's", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The schedule comes from SCHEDULES_FILE (`/problems/schedule-from-file`)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Redis unreachable (header `Retry-After`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    Producer(producer): Producer,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<ScheduleView>, ApiError> {
    let name = schedule_name(name)?;
    match state.schedules.resume(&name, &Actor::Producer(producer), &state.store).await? {
        Ok(_) => view(&state, name).await,
        Err(e) => Err(refused(name, e)),
    }
}

/// The job a run-now made.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    pub id: String,
    pub kind: jobs::Kind,
    pub status: jobs::JobStatus,
    pub run_at: DateTime<Utc>,
    /// `schedule:<name>:manual:<unix seconds>`.
    #[schema(example = "schedule:weekday-digest:manual:1795792006")]
    pub idempotency_key: String,
    /// True when a run within the second before had made this job already (the answer is then `200`).
    pub replayed: bool,
    pub links: crate::routes::Links,
}

impl From<RunNow> for RunView {
    fn from(run: RunNow) -> Self {
        let links = crate::routes::Links { self_link: format!("/v1/jobs/{}", run.id) };
        Self {
            id: run.id,
            kind: run.kind,
            status: run.status,
            run_at: run.run_at,
            idempotency_key: run.idempotency_key,
            replayed: run.replayed,
            links,
        }
    }
}

#[utoipa::path(post, path = "/v1/schedules/{name}/run", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 202, description = "One extra job of the schedule, now, with idempotency key `schedule:<name>:manual:<unix seconds>` (Redis's clock): any number of runs within one second of the first make this one job, across the turn of a second too. The regular ticks are unchanged; a paused schedule runs too (and stays paused)", body = RunView),
        (status = 200, description = "A run within the second before made the job already: that job, `replayed: true`, header `Idempotent-Replayed: true`", body = RunView),
        (status = 401, description = "Missing or unknown API key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No schedule of that name of this producer's", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The schedule comes from SCHEDULES_FILE (`/problems/schedule-from-file`)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "The schedule's job no longer passes the rules of `POST /v1/jobs` (`errors` names each), or this producer used this second's run key itself for another request", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Redis unreachable (header `Retry-After`): run again; within a second of the first run it makes one job", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn run(
    State(state): State<AppState>,
    Producer(producer): Producer,
    name: Result<Path<String>, PathRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;
    let name = schedule_name(name)?;
    let run = match state.schedules.run_now(&name, &Actor::Producer(producer), &state.store).await? {
        Ok(run) => run,
        Err(e) => return Err(refused(name, e)),
    };
    let replayed = run.replayed;
    let status = if replayed { StatusCode::OK } else { StatusCode::ACCEPTED };
    let mut response = (status, Json(RunView::from(run))).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
    }
    Ok(response)
}
