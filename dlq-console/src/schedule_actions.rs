//! Operators' control of schedules: pause, resume and run now, from the JSON API
//! (`POST /api/schedules/{name}/pause|resume|run`) and from the schedules page's buttons. An
//! operator acts on any schedule, `SCHEDULES_FILE`'s too; read-only operators are refused
//! (`403`), and every action is written to the audit log (actor `console:<operator>`,
//! `resource_type` `schedule`, `action` `schedule.pause`, `schedule.resume` or `schedule.run`).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use jobs::schedule::{Actor, Listed, Refused, RunNow};
use serde::Deserialize;
use serde_json::{Value, json};
use service::Problem;
use service::csrf::CsrfForm;

use crate::AppState;
use crate::actions::ActionError;
use crate::api::Operator;
use crate::pages::Session;

/// A schedule as the console shows it (`GET /api/schedules` and the answers of its actions).
pub fn view(listed: &Listed, now: DateTime<Utc>) -> Value {
    let s = &listed.schedule;
    json!({"name": s.name, "cron": s.cron, "timezone": s.timezone, "catch_up": s.catch_up, "source": s.source,
           "producer": s.producer, "kind": s.job.get("kind"), "last_run_at": listed.last,
           "next_run_at": listed.next_run_at(now), "paused": listed.pause.is_some(),
           "paused_at": listed.pause.as_ref().map(|p| p.at), "paused_by": listed.pause.as_ref().map(|p| &p.by)})
}

/// The three actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Pause,
    Resume,
    Run,
}

impl Action {
    fn audit_name(self) -> &'static str {
        match self {
            Action::Pause => "schedule.pause",
            Action::Resume => "schedule.resume",
            Action::Run => "schedule.run",
        }
    }
}

/// What an action did.
enum Done {
    /// Paused or resumed; false when it already was so.
    Changed(bool),
    Ran(RunNow),
}

fn not_found(name: &str) -> Problem {
    Problem::not_found(format!("no schedule is named `{name}`"))
}

/// A name from the path; one breaking the naming rule names no schedule.
fn schedule_name(name: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    match name {
        Ok(Path(name)) if jobs::schedule::valid_name(&name) => Ok(name),
        Ok(Path(name)) => Err(not_found(&name.chars().take(128).collect::<String>())),
        Err(_) => Err(not_found("(not UTF-8)")),
    }
}

/// Does `action` on `name` as `operator` and writes it to the audit log.
async fn act(state: &AppState, operator: &str, name: &str, action: Action) -> Result<Done, Problem> {
    let actor = Actor::Operator(operator.to_owned());
    let schedules = &state.schedules;
    let done = match action {
        Action::Pause => schedules.pause(name, &actor).await.map(|r| r.map(|c| Done::Changed(c.changed))),
        Action::Resume => {
            schedules.resume(name, &actor, &state.console.store).await.map(|r| r.map(|c| Done::Changed(c.changed)))
        }
        Action::Run => schedules.run_now(name, &actor, &state.console.store).await.map(|r| r.map(Done::Ran)),
    }
    .map_err(|e| Problem::from(ActionError::from(e)))?;
    let done = match done {
        Ok(done) => done,
        // An operator may act on every schedule: only a missing one or a broken job refuses.
        Err(Refused::Missing | Refused::Taken | Refused::FromFile) => return Err(not_found(name)),
        Err(Refused::Invalid(errors)) => return Err(Problem::invalid(&errors)),
        Err(Refused::KeyTaken { existing_id }) => {
            return Err(crate::api::refused(format!(
                "this second's run-now key is held by job {existing_id}, made by another request of the schedule's producer"
            )));
        }
    };
    let metadata = match &done {
        Done::Changed(changed) => json!({"changed": changed}),
        Done::Ran(run) => json!({"job_id": run.id, "kind": run.kind, "idempotency_key": run.idempotency_key,
                                 "replayed": run.replayed}),
    };
    state.console.record_on(operator, action.audit_name(), "schedule", Some(name), metadata).await;
    Ok(done)
}

/// The schedule as it now is, for the API's answer.
async fn current(state: &AppState, name: &str) -> Result<Value, Problem> {
    match state.schedules.get(name).await.map_err(|e| Problem::from(ActionError::from(e)))? {
        (Some(listed), now) => Ok(view(&listed, now)),
        (None, _) => Err(not_found(name)),
    }
}

async fn api_action(
    state: &AppState,
    op: &Operator,
    name: Result<Path<String>, PathRejection>,
    action: Action,
) -> Result<Response, Problem> {
    let name = schedule_name(name)?;
    op.may_act()?;
    match act(state, &op.name, &name, action).await? {
        Done::Changed(_) => Ok(Json(current(state, &name).await?).into_response()),
        Done::Ran(run) => {
            let status = if run.replayed { StatusCode::OK } else { StatusCode::ACCEPTED };
            let body = json!({"schedule": name, "id": run.id, "kind": run.kind, "status": run.status,
                              "run_at": run.run_at, "idempotency_key": run.idempotency_key, "replayed": run.replayed});
            Ok((status, Json(body)).into_response())
        }
    }
}

/// `POST /api/schedules/{name}/pause` → the schedule's view, `"paused": true`.
pub async fn api_pause(
    State(state): State<AppState>,
    op: Operator,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    api_action(&state, &op, name, Action::Pause).await
}

/// `POST /api/schedules/{name}/resume` → the schedule's view, `"paused": false`.
pub async fn api_resume(
    State(state): State<AppState>,
    op: Operator,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    api_action(&state, &op, name, Action::Resume).await
}

/// `POST /api/schedules/{name}/run` → `202` with the job (`200`, `"replayed": true`, for the
/// job of a run within the second before).
pub async fn api_run(
    State(state): State<AppState>,
    op: Operator,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    api_action(&state, &op, name, Action::Run).await
}

async fn page_action(
    state: &AppState,
    session: &Session,
    name: Result<Path<String>, PathRejection>,
    action: Action,
) -> Response {
    if let Err(r) = session.may_act() {
        return r;
    }
    let name = match schedule_name(name) {
        Ok(name) => name,
        Err(problem) => return crate::pages::problem_page(session, problem),
    };
    let (done, job) = match act(state, &session.operator, &name, action).await {
        Ok(Done::Changed(true)) if action == Action::Pause => ("paused", None),
        Ok(Done::Changed(true)) => ("resumed", None),
        Ok(Done::Changed(false)) if action == Action::Pause => ("already_paused", None),
        Ok(Done::Changed(false)) => ("not_paused", None),
        Ok(Done::Ran(run)) if run.replayed => ("ran_already", Some(run.id)),
        Ok(Done::Ran(run)) => ("ran", Some(run.id)),
        Err(problem) => return crate::pages::problem_page(session, problem),
    };
    // Post/redirect/get: a refresh of the page that follows reloads it and repeats nothing (a
    // repeated run-now more than a second later would make another job).
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("done", done).append_pair("name", &name);
    if let Some(job) = job {
        query.append_pair("job", &job);
    }
    Redirect::to(&format!("/schedules?{}", query.finish())).into_response()
}

/// What the schedules page says after an action: the redirect's query, checked, so the page
/// never echoes text it did not write itself.
#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    done: Option<String>,
    name: Option<String>,
    job: Option<String>,
}

impl Notice {
    pub fn text(&self) -> Option<String> {
        let name = self.name.as_deref().filter(|n| jobs::schedule::valid_name(n))?;
        let job = || {
            self.job.as_deref().filter(|j| j.len() <= 64 && j.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        };
        Some(match self.done.as_deref()? {
            "paused" => format!("Schedule {name} paused: it fires nothing until resumed."),
            "resumed" => format!("Schedule {name} resumed."),
            "already_paused" => format!("Schedule {name} was already paused."),
            "not_paused" => format!("Schedule {name} was not paused."),
            "ran_already" => {
                format!("Schedule {name} already ran within the last second: job {} (no second job).", job()?)
            }
            "ran" => format!("Schedule {name} ran now: job {}.", job()?),
            _ => return None,
        })
    }
}

pub async fn page_pause(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    CsrfForm { session, .. }: CsrfForm<Session>,
) -> Response {
    page_action(&state, &session, name, Action::Pause).await
}

pub async fn page_resume(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    CsrfForm { session, .. }: CsrfForm<Session>,
) -> Response {
    page_action(&state, &session, name, Action::Resume).await
}

pub async fn page_run(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    CsrfForm { session, .. }: CsrfForm<Session>,
) -> Response {
    page_action(&state, &session, name, Action::Run).await
}
