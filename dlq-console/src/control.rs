//! Operators steering live jobs: cancel one, run a waiting one now, and cancel in bulk by
//! filter with the confirm-and-freeze flow of the dead letters' bulk replay. The JSON API
//! (`/api/jobs/...`), the pages' forms (`/jobs/...`) and the CLI share [`Console`]'s methods
//! here; each action is in the operator audit log (resource type `job`), and refused to
//! read-only operators.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use jobs::control::{CancelFilter, CancelOutcome, MAX_BULK, RunNowOutcome, WaitingState};
use jobs::{FieldError, JobStatus, Kind};
use maud::html;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use service::Problem;
use service::csrf::CsrfForm;

use crate::AppState;
use crate::actions::{ActionError, Console};
use crate::api::Operator;
use crate::pages::{Session, html_response, page, problem_page};

/// What a cancel did, as the API answers it.
#[derive(Debug, Serialize)]
pub struct Cancelled {
    pub id: String,
    /// `cancelled`, or `running` for a job that had started.
    pub status: JobStatus,
    /// On a running job: the request is recorded; its final status tells what happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<bool>,
}

/// What a bulk cancel did.
#[derive(Debug, Default, Serialize)]
pub struct BulkCancelReport {
    pub cancelled: u64,
    /// Jobs that had started meanwhile: each carries a cancellation request.
    pub cancel_requested: u64,
    /// Jobs that had finished meanwhile (or were gone): untouched.
    pub unchanged: u64,
}

impl Console {
    /// Cancels job `id` (any producer's).
    pub async fn cancel_job(&self, operator: &str, id: &str) -> Result<Cancelled, ActionError> {
        let (kind, outcome) = self.control.cancel(id, None).await?;
        let answer = match outcome {
            CancelOutcome::Cancelled | CancelOutcome::AlreadyCancelled => {
                Cancelled { id: id.to_owned(), status: JobStatus::Cancelled, cancel_requested: None }
            }
            CancelOutcome::CancelRequested => {
                Cancelled { id: id.to_owned(), status: JobStatus::Running, cancel_requested: Some(true) }
            }
            CancelOutcome::Finished(status) => {
                return Err(ActionError::Refused(format!(
                    "the job has finished as `{}`: there is nothing left to cancel",
                    status.as_str()
                )));
            }
            CancelOutcome::NotFound => return Err(ActionError::JobNotFound),
            CancelOutcome::Protected => return Err(ActionError::Refused(jobs::control::PROTECTED.to_owned())),
        };
        if outcome != CancelOutcome::AlreadyCancelled {
            let requested = outcome == CancelOutcome::CancelRequested;
            self.record_on(operator, "job.cancel", "job", Some(id), json!({"kind": kind, "running": requested})).await;
        }
        Ok(answer)
    }

    /// Starts a scheduled or retrying job now.
    pub async fn run_job_now(&self, operator: &str, id: &str) -> Result<Kind, ActionError> {
        match self.control.run_now(id).await? {
            (Some(kind), RunNowOutcome::Queued) => {
                self.record_on(operator, "job.run_now", "job", Some(id), json!({"kind": kind})).await;
                Ok(kind)
            }
            (_, RunNowOutcome::NotWaiting(status)) => Err(ActionError::Refused(format!(
                "the job is `{}`: only a scheduled or retrying job can be run now",
                status.as_str()
            ))),
            _ => Err(ActionError::JobNotFound),
        }
    }

    /// How many jobs `filter` selects; more than [`MAX_BULK`] is refused (narrow the filter).
    pub async fn cancel_count(&self, filter: &CancelFilter) -> Result<u64, ActionError> {
        Ok(self.cancel_targets(filter).await?.len() as u64)
    }

    async fn cancel_targets(&self, filter: &CancelFilter) -> Result<Vec<String>, ActionError> {
        let ids = self.control.matching(filter, MAX_BULK).await?;
        if ids.len() > MAX_BULK {
            return Err(ActionError::Refused(format!(
                "more than {MAX_BULK} jobs match; narrow the filter (a producer) and cancel in parts"
            )));
        }
        Ok(ids)
    }

    /// Cancels what `filter` (frozen: its `until` set) selects, provided no more than
    /// `confirmed` match now: the count can only shrink after the confirmation, as jobs run.
    pub async fn bulk_cancel(
        &self,
        operator: &str,
        filter: &CancelFilter,
        confirmed: u64,
    ) -> Result<BulkCancelReport, ActionError> {
        let ids = self.cancel_targets(filter).await?;
        if ids.len() as u64 > confirmed {
            return Err(ActionError::Refused(format!(
                "{} jobs match now, more than the {confirmed} confirmed; nothing was done. Review the count again.",
                ids.len()
            )));
        }
        let scope = json!({"filter": filter, "confirmed": confirmed});
        self.record_on(operator, "job.bulk_cancel.started", "job", None, json!({"scope": scope, "jobs": ids.len()}))
            .await;
        let mut report = BulkCancelReport::default();
        for outcome in self.control.cancel_many(filter.kind, &ids, None).await? {
            match outcome {
                CancelOutcome::Cancelled => report.cancelled += 1,
                CancelOutcome::CancelRequested => report.cancel_requested += 1,
                _ => report.unchanged += 1,
            }
        }
        self.record_on(operator, "job.bulk_cancel", "job", None, json!({"scope": scope, "report": &report})).await;
        Ok(report)
    }
}

fn job_id(id: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    id.map(|Path(id)| id).map_err(|_| ActionError::JobNotFound.into())
}

/// `POST /api/jobs/{id}/cancel`: `200 {"id", "status": "cancelled"}` (again on a second
/// call), `202` with `"cancel_requested": true` for a running job, `409` for a finished one.
pub async fn api_cancel(
    State(state): State<AppState>,
    op: Operator,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let id = job_id(id)?;
    op.may_act()?;
    let answer = state.console.cancel_job(&op.name, &id).await?;
    let status = if answer.cancel_requested.is_some() { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(answer)).into_response())
}

/// `POST /api/jobs/{id}/run`: `200 {"id", "status": "queued"}`; `409` unless scheduled or retrying.
pub async fn api_run_now(
    State(state): State<AppState>,
    op: Operator,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, Problem> {
    let id = job_id(id)?;
    op.may_act()?;
    state.console.run_job_now(&op.name, &id).await?;
    Ok(Json(json!({"id": id, "status": "queued"})))
}

/// `POST /api/jobs/bulk-cancel` `{"filter": {"kind", "state", "producer"?}}` answers the count
/// and the filter frozen now (`until` set): nothing is cancelled. Sending that filter back with
/// `"confirm": <count>` cancels, unless more match by then (`409`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkCancel {
    pub filter: CancelFilter,
    #[serde(default)]
    pub confirm: Option<u64>,
}

pub async fn api_bulk_cancel(
    State(state): State<AppState>,
    op: Operator,
    Json(body): Json<BulkCancel>,
) -> Result<Json<Value>, Problem> {
    op.may_act()?;
    let field =
        |(field, message): (&str, String)| Problem::invalid(&[FieldError::new(format!("/filter/{field}"), message)]);
    body.filter.check().map_err(field)?;
    match body.confirm {
        None => {
            let frozen = freeze(body.filter);
            let count = state.console.cancel_count(&frozen).await?;
            Ok(Json(json!({"matching": count, "filter": frozen, "confirm": count})))
        }
        Some(confirmed) => {
            if body.filter.until.is_none() {
                return Err(field(("until", "is required with `confirm`: send back the frozen filter".into())));
            }
            let report = state.console.bulk_cancel(&op.name, &body.filter, confirmed).await?;
            Ok(Json(serde_json::to_value(report).unwrap_or_default()))
        }
    }
}

/// The filter as the operator confirms it: jobs created after now are not part of it.
fn freeze(mut filter: CancelFilter) -> CancelFilter {
    let now = Utc::now();
    if filter.until.is_none_or(|u| u > now) {
        filter.until = Some(now);
    }
    filter
}

fn done(session: &Session, message: &str, id: Option<&str>) -> Response {
    crate::pages::done_page(session, message, id, ("/", "Back to the overview"))
}

/// `POST /jobs/{id}/cancel` (form field `csrf`).
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm { session, .. }: CsrfForm<Session>,
) -> Response {
    if let Err(r) = session.may_act() {
        return r;
    }
    match state.console.cancel_job(&session.operator, &id).await {
        Ok(Cancelled { cancel_requested: Some(_), .. }) => done(
            &session,
            &format!(
                "Job {id} is running: its cancellation is requested. It ends cancelled unless this attempt succeeds or fails for good."
            ),
            Some(&id),
        ),
        Ok(_) => done(&session, &format!("Job {id} is cancelled: it will not run."), Some(&id)),
        Err(e) => problem_page(&session, e.into()),
    }
}

/// `POST /jobs/{id}/run` (form field `csrf`).
pub async fn run_now(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm { session, .. }: CsrfForm<Session>,
) -> Response {
    if let Err(r) = session.may_act() {
        return r;
    }
    match state.console.run_job_now(&session.operator, &id).await {
        Ok(_) => done(&session, &format!("Job {id} is queued to run now."), Some(&id)),
        Err(e) => problem_page(&session, e.into()),
    }
}

/// The bulk-cancel form: `csrf`, `kind`, `state`, optional `producer`; the confirmation page
/// adds `until` (the frozen filter, RFC 3339) and `confirm` (the count the operator saw).
#[derive(Debug, Deserialize)]
pub struct BulkCancelForm {
    kind: String,
    state: String,
    #[serde(default)]
    producer: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    confirm: Option<u64>,
}

impl BulkCancelForm {
    fn filter(&self) -> Result<CancelFilter, Problem> {
        let mut errors = Vec::new();
        let kind = self.kind.parse::<Kind>().map_err(|e| errors.push(FieldError::new("kind", e.to_string()))).ok();
        let state = self.state.parse::<WaitingState>().map_err(|e| errors.push(FieldError::new("state", e))).ok();
        let until = match self.until.as_deref().filter(|u| !u.is_empty()) {
            None => None,
            Some(u) => DateTime::parse_from_rfc3339(u)
                .map(|u| u.with_timezone(&Utc))
                .map_err(|_| errors.push(FieldError::new("until", "must be an RFC 3339 time")))
                .ok(),
        };
        let producer = self.producer.clone().filter(|p| !p.trim().is_empty());
        match (kind, state) {
            (Some(kind), Some(state)) if errors.is_empty() => {
                let filter = CancelFilter { kind, state, producer, until };
                filter.check().map_err(|(f, m)| Problem::invalid(&[FieldError::new(f, m)]))?;
                Ok(filter)
            }
            _ => Err(Problem::invalid(&errors)),
        }
    }
}

/// `POST /jobs/bulk-cancel`: the first post shows the count and freezes the filter; the
/// confirmation posts it back with the count, and the cancel runs unless more match by then.
pub async fn bulk_cancel(
    State(state): State<AppState>,
    CsrfForm { session, form }: CsrfForm<Session, BulkCancelForm>,
) -> Response {
    if let Err(r) = session.may_act() {
        return r;
    }
    let filter = match form.filter() {
        Ok(filter) => filter,
        Err(problem) => return problem_page(&session, problem),
    };
    let Some(confirmed) = form.confirm.filter(|_| filter.until.is_some()) else {
        let frozen = freeze(filter);
        let count = match state.console.cancel_count(&frozen).await {
            Ok(n) => n,
            Err(e) => return problem_page(&session, e.into()),
        };
        let until = frozen.until.map(|u| u.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_default();
        return html_response(page(
            &format!("Cancel {count} jobs?"),
            Some(&session),
            html! {
                p.warn { "Cancel " strong #count { (count) } " " (frozen.state.as_str()) " " (frozen.kind.as_str()) " jobs"
                    @if let Some(p) = &frozen.producer { " of producer " code { (p) } }
                    " created up to " (crate::pages::format_time(frozen.until.unwrap_or_default())) "? They will not run. This cannot be undone." }
                form method="post" action="/jobs/bulk-cancel" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="kind" value=(frozen.kind.as_str());
                    input type="hidden" name="state" value=(frozen.state.as_str());
                    @if let Some(p) = &frozen.producer { input type="hidden" name="producer" value=(p); }
                    input type="hidden" name="until" value=(until);
                    input type="hidden" name="confirm" value=(count);
                    button #confirm.danger type="submit" { "Yes, cancel them" }
                    " " a href="/" { "Back" }
                }
            },
        ));
    };
    match state.console.bulk_cancel(&session.operator, &filter, confirmed).await {
        Ok(r) => done(
            &session,
            &format!(
                "{} cancelled, {} running (cancellation requested), {} had finished.",
                r.cancelled, r.cancel_requested, r.unchanged
            ),
            None,
        ),
        Err(e) => problem_page(&session, e.into()),
    }
}
