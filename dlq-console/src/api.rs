//! `/api`: the JSON API, `Authorization: Bearer <token>` on every request.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use jobs::dead::{DeadFilter, DeadPage, DeadRecord, Depths};
use jobs::{FieldError, Kind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use service::Problem;

use crate::AppState;
use crate::actions::{ActionError, ReplayReport};
use crate::config::Role;

/// A refused action (a letter that may not be replayed, a count that grew since it was
/// confirmed): `409`.
pub fn refused(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::CONFLICT, "/problems/refused", "The action was refused", detail)
}

/// One broken rule, as `422`.
fn invalid_field(field: &str, message: impl Into<String>) -> Problem {
    Problem::invalid(&[FieldError::new(field, message)])
}

impl From<ActionError> for Problem {
    fn from(e: ActionError) -> Self {
        match e {
            ActionError::NotFound | ActionError::JobNotFound => Problem::not_found(e.to_string()),
            ActionError::Refused(_) => refused(e.to_string()),
            ActionError::Invalid(errors) => Problem::invalid(&errors),
            // Counted and logged (once per interval) where it was classified.
            ActionError::Store(jobs::StoreError::Full(_)) => Problem::queue_full(
                "the queue store is full (Redis reached its maxmemory), so nothing was changed; \
                 retry once workers have drained some jobs",
            ),
            // Redis refused the call itself: a fault of ours, not an outage.
            ActionError::Store(jobs::StoreError::Protocol(detail)) => Problem::internal(detail),
            ActionError::Store(_) => Problem::unavailable(e.to_string()),
        }
    }
}

/// The operator behind a bearer token.
#[derive(Debug, Clone)]
pub struct Operator {
    pub name: String,
    pub role: Role,
}

impl Operator {
    /// Admins only: a read-only operator gets `403`.
    pub fn may_act(&self) -> Result<(), Problem> {
        match self.role {
            Role::Admin => Ok(()),
            Role::ReadOnly => Err(Problem::forbidden(format!("operator `{}` is read-only", self.name))),
        }
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let op = state.config.operators.from_headers(&parts.headers);
        op.map(|o| Operator { name: o.name.clone(), role: o.role }).ok_or_else(|| {
            Problem::unauthorized("a valid bearer token (CONSOLE_TOKEN or CONSOLE_OPERATORS) is required")
        })
    }
}

/// `?kind=&reason=&q=&since=&until=&limit=&cursor=`, checked.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub kind: Option<String>,
    pub reason: Option<String>,
    pub q: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// The longest query string `ListQuery` reads: its seven parameters, generously.
const MAX_LIST_QUERY_BYTES: usize = 8 * 1024;

/// Read from the raw query string rather than by axum's `Query`, whose refusal (a repeated
/// parameter) is a plain-text `400`: each parameter at most once, a repeat `422` naming it;
/// unknown parameters are ignored (the pages' forms add their own); bytes that are not UTF-8
/// read as U+FFFD, which no filter matches.
impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or_default();
        if raw.len() > MAX_LIST_QUERY_BYTES {
            return Err(invalid_field("query", format!("is longer than {MAX_LIST_QUERY_BYTES} bytes")));
        }
        let mut query = ListQuery::default();
        let mut errors: Vec<FieldError> = Vec::new();
        for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            let slot = match name.as_ref() {
                "kind" => &mut query.kind,
                "reason" => &mut query.reason,
                "q" => &mut query.q,
                "since" => &mut query.since,
                "until" => &mut query.until,
                "limit" => &mut query.limit,
                "cursor" => &mut query.cursor,
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() && !errors.iter().any(|e| e.field == name) {
                errors.push(FieldError::new(name.as_ref(), "is given more than once"));
            }
        }
        if errors.is_empty() { Ok(query) } else { Err(Problem::invalid(&errors)) }
    }
}

impl ListQuery {
    /// The filter, the page size and the cursor; every bad parameter is named.
    pub fn parse(&self) -> Result<(DeadFilter, usize, Option<String>), Problem> {
        let mut errors = Vec::new();
        let nonempty = |v: &Option<String>| v.as_ref().filter(|s| !s.trim().is_empty()).map(|s| s.trim().to_owned());
        let kind = nonempty(&self.kind)
            .and_then(|k| k.parse::<Kind>().map_err(|e| errors.push(FieldError::new("kind", e.to_string()))).ok());
        let mut time = |name: &str, v: &Option<String>| {
            nonempty(v).and_then(|t| {
                DateTime::parse_from_rfc3339(&t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        errors.push(FieldError::new(name, "must be an RFC 3339 time, such as 2026-11-21T09:00:00Z"));
                    })
                    .ok()
            })
        };
        let since = time("since", &self.since);
        let until = time("until", &self.until);
        let limit = match nonempty(&self.limit) {
            None => 50,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => {
                    errors.push(FieldError::new("limit", "must be a whole number from 1 to 1000"));
                    50
                }
            },
        };
        let cursor = nonempty(&self.cursor);
        if cursor.as_deref().is_some_and(|c| jobs::dead::decode_cursor(c).is_none()) {
            errors.push(FieldError::new("cursor", "is not a cursor this API returned"));
        }
        let filter = DeadFilter { kind, reason: nonempty(&self.reason), q: nonempty(&self.q), since, until };
        if let Err((field, message)) = filter.check() {
            errors.push(FieldError::new(field, message));
        }
        if errors.is_empty() { Ok((filter, limit, cursor)) } else { Err(Problem::invalid(&errors)) }
    }
}

pub async fn list(State(state): State<AppState>, _op: Operator, query: ListQuery) -> Result<Json<DeadPage>, Problem> {
    let (filter, limit, cursor) = query.parse()?;
    Ok(Json(state.console.dead.list(&filter, limit, cursor.as_deref()).await.map_err(ActionError::from)?))
}

/// A dead letter's id from the path: one that does not decode (bytes that are not UTF-8) names
/// no letter, `404` like any unknown id, not axum's plain-text `400`.
fn dead_id(id: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    id.map(|Path(id)| id).map_err(|_| ActionError::NotFound.into())
}

pub async fn show(
    State(state): State<AppState>,
    _op: Operator,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<DeadRecord>, Problem> {
    let id = dead_id(id)?;
    state.console.dead.get(&id).await.map_err(ActionError::from)?.map(Json).ok_or_else(|| ActionError::NotFound.into())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayOne {
    /// Replaces the payload, checked by the producer API's rules.
    #[serde(default)]
    pub payload: Option<Value>,
}

pub async fn replay_one(
    State(state): State<AppState>,
    op: Operator,
    id: Result<Path<String>, PathRejection>,
    body: Option<Json<ReplayOne>>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let id = dead_id(id)?;
    op.may_act()?;
    let edited = body.and_then(|Json(b)| b.payload);
    state.console.replay(&op.name, &id, edited).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"id": id, "status": "queued"}))))
}

/// `{"ids": [...]}` or `{"filter": {...}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bulk {
    #[serde(default)]
    pub ids: Option<Vec<String>>,
    #[serde(default)]
    pub filter: Option<DeadFilter>,
}

impl Bulk {
    async fn targets(&self, state: &AppState) -> Result<(Vec<String>, Value), Problem> {
        match (&self.ids, &self.filter) {
            (Some(ids), None) if !ids.is_empty() && ids.len() <= 100_000 => {
                Ok((ids.clone(), json!({"ids": ids.len()})))
            }
            (Some(_), None) => Err(invalid_field("/ids", "must hold 1 to 100000 ids")),
            (None, Some(filter)) => {
                filter.check().map_err(|(field, message)| invalid_field(&format!("/filter/{field}"), message))?;
                let ids = state.console.matching(filter).await?.into_iter().map(|(_, id)| id).collect();
                Ok((ids, json!({"filter": filter})))
            }
            _ => Err(invalid_field("", "give either ids or filter")),
        }
    }
}

pub async fn replay_many(
    State(state): State<AppState>,
    op: Operator,
    Json(bulk): Json<Bulk>,
) -> Result<Json<ReplayReport>, Problem> {
    op.may_act()?;
    let (ids, scope) = bulk.targets(&state).await?;
    // Its own task: a client that gives up does not cut a paced replay short.
    let console = state.console.clone();
    let task = tokio::spawn(async move { console.replay_many(&op.name, &ids, scope, |_| {}).await });
    let report = task.await.map_err(|e| Problem::internal(format!("the replay failed: {e}")))??;
    Ok(Json(report))
}

pub async fn delete_one(
    State(state): State<AppState>,
    op: Operator,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, Problem> {
    let id = dead_id(id)?;
    op.may_act()?;
    state.console.delete(&op.name, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purge {
    pub filter: DeadFilter,
}

pub async fn purge(
    State(state): State<AppState>,
    op: Operator,
    Json(body): Json<Purge>,
) -> Result<Json<Value>, Problem> {
    op.may_act()?;
    body.filter.check().map_err(|(field, message)| invalid_field(&format!("/filter/{field}"), message))?;
    let deleted = state.console.purge(&op.name, &body.filter, |_| {}).await?;
    Ok(Json(json!({"deleted": deleted})))
}

/// One queue's counts, its last minute, its pause and its latency.
#[derive(Debug, Serialize)]
pub struct QueueView {
    pub kind: Kind,
    #[serde(flatten)]
    pub depths: Depths,
    /// Among `scheduled`: retries waiting for their backoff.
    pub retrying: u64,
    pub processed_last_minute: u64,
    pub failed_last_minute: u64,
    /// Workers lease none of its jobs (it still accepts them).
    pub paused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_since: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<String>,
    /// Age of the oldest ready job, since it became due (0: none is ready).
    pub latency_seconds: f64,
    /// The limit in force (`per_second`, `burst`: `null` when none; `source`: `setting` or
    /// `console`), the rate after a provider's throttle, and `throttled_until` while one holds.
    pub rate_limit: jobs::rate::RateView,
}

/// One queue's view, as `GET /api/queues` lists it.
pub async fn queue_view(state: &AppState, kind: Kind, now: DateTime<Utc>) -> Result<QueueView, Problem> {
    let console = &state.console;
    let depths = console.dead.depths(kind).await.map_err(ActionError::from)?;
    let retrying = console.dead.retrying(kind).await.map_err(ActionError::from)?;
    let last = console.dead.throughput(kind, last_complete_minute(now), 1).await.map_err(ActionError::from)?;
    let (processed, failed) = last.first().map_or((0, 0), |(_, ok, failed)| (ok + failed, *failed));
    let pause = console.pauses.paused(kind).await.map_err(ActionError::from)?;
    let latency = console.pauses.latency(kind, now).await.map_err(ActionError::from)?;
    let rate_limit = console.rate_limit(kind).await?;
    Ok(QueueView {
        kind,
        depths,
        retrying,
        processed_last_minute: processed,
        failed_last_minute: failed,
        paused: pause.is_some(),
        paused_since: pause.as_ref().map(|p| p.since),
        paused_by: pause.map(|p| p.by),
        latency_seconds: latency.as_secs_f64(),
        rate_limit,
    })
}

/// What "last minute" means everywhere (the API, the overview's column and its chart, the
/// CLI): the last complete minute, ending at the start of the current one, which is still
/// filling. `DeadLetters::throughput(kind, last_complete_minute(now), n)` reads the `n`
/// complete minutes up to it.
pub fn last_complete_minute(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::minutes(1)
}

pub async fn queues_view(state: &AppState) -> Result<Vec<QueueView>, Problem> {
    let mut views = Vec::new();
    let now = Utc::now();
    for kind in Kind::ALL {
        views.push(queue_view(state, kind, now).await?);
    }
    Ok(views)
}

pub async fn queues(State(state): State<AppState>, _op: Operator) -> Result<Json<Value>, Problem> {
    Ok(Json(json!({"queues": queues_view(&state).await?})))
}

pub async fn schedules(State(state): State<AppState>, _op: Operator) -> Result<Json<Value>, Problem> {
    let now = Utc::now();
    let list: Vec<Value> = state
        .schedules
        .list()
        .await
        .map_err(ActionError::from)?
        .iter()
        .map(|listed| crate::schedule_actions::view(listed, now))
        .collect();
    Ok(Json(json!({"schedules": list})))
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::http::header;
    use axum::response::IntoResponse as _;

    fn answer(e: jobs::StoreError) -> axum::response::Response {
        Problem::from(ActionError::Store(e)).into_response()
    }

    #[test]
    fn a_full_redis_is_503_with_retry_after_and_a_refused_call_is_500() {
        let full = answer(jobs::StoreError::Full("OOM command not allowed".into()));
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(full.headers()[header::RETRY_AFTER], "5");
        let down = answer(jobs::StoreError::Unavailable("no answer within 5000 ms".into()));
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(down.headers()[header::RETRY_AFTER], "1");
        let refused = answer(jobs::StoreError::Protocol("WRONGTYPE".into()));
        assert_eq!(refused.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
