//! What operators do to live work, and see of it: pause and resume a kind (JSON API, pages,
//! CLI), and the worker processes (their heartbeats). Each action goes to the audit log as
//! `queue.pause` / `queue.resume` (resource `queue`, id the kind); read-only operators are
//! refused.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use jobs::Kind;
use jobs::fleet::WorkerView;
use jobs::pause::Pause;
use maud::{Markup, html};
use serde_json::{Value, json};
use service::Problem;
use service::csrf::CsrfForm;

use crate::AppState;
use crate::actions::{ActionError, Console};
use crate::api::{Operator, QueueView, queue_view};
use crate::config::Role;
use crate::pages::{Session, html_response, page, problem_page};

impl Console {
    /// Pauses `kind`: no worker leases a job of it from the next fetch on (each worker looks
    /// at least 4 times a second). Pausing a paused kind changes nothing and records nothing.
    pub async fn pause(&self, operator: &str, kind: Kind) -> Result<Pause, ActionError> {
        let (pause, made) = self.pauses.pause(kind, operator, Utc::now()).await?;
        if made {
            self.record_on(operator, "queue.pause", "queue", Some(kind.as_str()), json!({"kind": kind})).await;
        }
        Ok(pause)
    }

    /// Resumes `kind` and wakes its idle workers; whether it was paused (recorded only then).
    pub async fn resume(&self, operator: &str, kind: Kind) -> Result<bool, ActionError> {
        let was = self.pauses.resume(kind).await?;
        if was {
            self.record_on(operator, "queue.resume", "queue", Some(kind.as_str()), json!({"kind": kind})).await;
        }
        Ok(was)
    }
}

/// The kind named in a path: an unknown one is `404`, naming the kinds there are.
pub(crate) fn kind_of(raw: &str) -> Result<Kind, Problem> {
    raw.parse::<Kind>().map_err(|e| Problem::not_found(format!("no queue `{raw}`: {e}")))
}

/// `POST /api/queues/{kind}/pause` → the queue's view, `"paused": true`.
pub async fn api_pause(
    State(state): State<AppState>,
    op: Operator,
    Path(kind): Path<String>,
) -> Result<Json<QueueView>, Problem> {
    let kind = kind_of(&kind)?;
    op.may_act()?;
    state.console.pause(&op.name, kind).await?;
    Ok(Json(queue_view(&state, kind, Utc::now()).await?))
}

/// `POST /api/queues/{kind}/resume` → the queue's view, `"paused": false`.
pub async fn api_resume(
    State(state): State<AppState>,
    op: Operator,
    Path(kind): Path<String>,
) -> Result<Json<QueueView>, Problem> {
    let kind = kind_of(&kind)?;
    op.may_act()?;
    state.console.resume(&op.name, kind).await?;
    Ok(Json(queue_view(&state, kind, Utc::now()).await?))
}

/// `GET /api/workers` → `{"workers": [...]}`, alive ones first.
pub async fn api_workers(State(state): State<AppState>, _op: Operator) -> Result<Json<Value>, Problem> {
    let workers = state.console.fleet.list().await.map_err(ActionError::from)?;
    Ok(Json(json!({"workers": workers})))
}

async fn page_action(state: &AppState, session: &Session, kind: &str, pause: bool) -> Response {
    if let Err(refused) = session.may_act() {
        return refused;
    }
    let kind = match kind_of(kind) {
        Ok(kind) => kind,
        Err(problem) => return problem_page(session, problem),
    };
    let done = if pause {
        state.console.pause(&session.operator, kind).await.map(|_| ())
    } else {
        state.console.resume(&session.operator, kind).await.map(|_| ())
    };
    match done {
        Ok(()) => Redirect::to("/").into_response(),
        Err(e) => problem_page(session, e.into()),
    }
}

/// The overview's Pause button.
pub async fn page_pause(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    CsrfForm { session, .. }: CsrfForm<Session>,
) -> Response {
    page_action(&state, &session, &kind, true).await
}

/// The overview's Resume button.
pub async fn page_resume(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    CsrfForm { session, .. }: CsrfForm<Session>,
) -> Response {
    page_action(&state, &session, &kind, false).await
}

/// The overview's "state" cell: a badge while paused, and the button an admin may press.
pub fn pause_cell(session: &Session, queue: &QueueView) -> Markup {
    let kind = queue.kind.as_str();
    let (action, label) = if queue.paused { ("resume", "Resume") } else { ("pause", "Pause") };
    html! {
        @if queue.paused {
            span.badge.paused style="background:#fdf3e6;border:1px solid #e8c38f;padding:0 .4em;border-radius:3px"
                title=(format!("since {}{}", when(queue.paused_since), queue.paused_by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default())) { "paused" }
            " "
        } @else { span.running { "running" } " " }
        @if session.role == Role::Admin {
            form.inline method="post" action=(format!("/queues/{kind}/{action}")) {
                input type="hidden" name="csrf" value=(session.csrf);
                button type="submit" id=(format!("{action}-{kind}")) { (label) }
            }
        }
    }
}

/// A latency as the overview shows it: seconds, or minutes and hours once it is long.
pub fn latency(seconds: f64) -> String {
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a display of whole seconds")]
    let whole = seconds.max(0.0).round() as u64;
    match whole {
        0..60 => format!("{seconds:.1} s"),
        60..3600 => format!("{} min {} s", whole / 60, whole % 60),
        _ => format!("{} h {} min", whole / 3600, whole % 3600 / 60),
    }
}

/// A time as every console page shows it.
fn when(at: Option<DateTime<Utc>>) -> String {
    at.map(crate::pages::format_time).unwrap_or_default()
}

fn per_kind(worker: &WorkerView) -> String {
    worker
        .kinds
        .iter()
        .map(|k| {
            let held = worker.in_flight.get(k).copied().unwrap_or(0);
            let of = worker.concurrency.get(k).copied().unwrap_or(0);
            format!("{} {held}/{of}", k.as_str())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `/workers`: every worker process seen within the hour, live ones first.
pub async fn workers_page(State(state): State<AppState>, session: Session) -> Response {
    let workers = match state.console.fleet.list().await {
        Ok(workers) => workers,
        Err(e) => return problem_page(&session, ActionError::from(e).into()),
    };
    let live = workers.iter().filter(|w| w.alive).count();
    let body = html! {
        p { (live) " live, " (workers.len() - live) " gone. A worker is gone once a whole lease "
            "(its " code { "WORKER_LEASE_SECONDS" } ") passed without a heartbeat; entries unseen for an hour are removed." }
        table #workers {
            thead { tr { th { "worker" } th { "state" } th { "host" } th { "pid" } th { "version" } th { "jobs held / concurrency" } th { "started" } th { "last seen" } } }
            tbody { @for w in &workers {
                tr.(if w.alive { "alive" } else { "gone" }) {
                    td { code { (w.id) } }
                    td { @if w.alive { "live" } @else { span.badge style="color:#a3262c" { "gone" } } }
                    td { (w.host) } td.num { (w.pid) } td { (w.version) }
                    td { (per_kind(w)) }
                    td { (when(Some(w.started_at))) } td { (when(Some(w.last_seen_at))) }
                }
            } }
        }
    };
    (StatusCode::OK, html_response(page("Workers", Some(&session), body))).into_response()
}

/// `dlq-console workers`: a table, or `{"workers": [...]}` with `--json`.
pub async fn print_workers(console: &Console, as_json: bool) -> anyhow::Result<()> {
    let workers = console.fleet.list().await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json!({"workers": workers}))?);
        return Ok(());
    }
    println!("{:<36}  {:<5}  {:<20}  {:<23}  jobs held / concurrency", "worker", "state", "host", "last seen");
    for w in &workers {
        println!(
            "{:<36}  {:<5}  {:<20}  {:<23}  {}",
            w.id,
            if w.alive { "live" } else { "gone" },
            w.host,
            when(Some(w.last_seen_at)),
            per_kind(w)
        );
    }
    Ok(())
}
