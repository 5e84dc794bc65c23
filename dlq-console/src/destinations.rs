//! Webhook destinations cooling down ([`jobs::destinations`]): listed (JSON API, page, CLI),
//! each shown as `scheme://host:port` only, and an operator may end a cool-down at once.
//! Ending one goes to the audit log as `webhook_destination.resume` (resource
//! `webhook_destination`, id the destination's digest); read-only operators are refused.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jobs::FieldError;
use jobs::destinations::{CoolingPage, MAX_PAGE, Policy, is_id};
use maud::html;
use serde::Deserialize;
use serde_json::{Value, json};
use service::Problem;
use service::csrf::CsrfForm;

use crate::AppState;
use crate::actions::{ActionError, Console};
use crate::api::Operator;
use crate::config::Role;
use crate::pages::{Session, done_page, format_time, html_response, page, problem_page};

/// Destinations a page lists unless told.
pub const DEFAULT_LIMIT: usize = 50;

impl Console {
    /// Ends the cool-down of destination `id`; the parked jobs fill its free slots at once.
    /// `None` (nothing recorded) when it was not cooling down.
    pub async fn resume_destination(&self, operator: &str, id: &str) -> Result<Option<u64>, ActionError> {
        if !is_id(id) {
            return Ok(None);
        }
        let moved = self.destinations.resume(id, Policy::default().max_in_flight).await?;
        if let Some(moved) = moved {
            let metadata = json!({"moved_to_ready": moved});
            self.record_on(operator, "webhook_destination.resume", "webhook_destination", Some(id), metadata).await;
        }
        Ok(moved)
    }
}

/// `?cursor=&limit=` as given.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    cursor: Option<String>,
    limit: Option<String>,
}

impl PageQuery {
    /// (cursor, limit), or `422` naming each bad parameter.
    fn parse(&self) -> Result<(u64, usize), ActionError> {
        let mut errors = Vec::new();
        let cursor = match self.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => 0,
            Some(raw) => raw.parse::<u64>().ok().filter(|c| *c <= 1_000_000_000).unwrap_or_else(|| {
                errors.push(FieldError::new("cursor", "must be the next_cursor of a previous page"));
                0
            }),
        };
        let limit = match self.limit.as_deref().filter(|l| !l.is_empty()) {
            None => DEFAULT_LIMIT,
            Some(raw) => raw.parse::<usize>().ok().filter(|l| (1..=MAX_PAGE).contains(l)).unwrap_or_else(|| {
                errors.push(FieldError::new("limit", format!("must be a whole number from 1 to {MAX_PAGE}")));
                DEFAULT_LIMIT
            }),
        };
        if errors.is_empty() { Ok((cursor, limit)) } else { Err(ActionError::Invalid(errors)) }
    }

    async fn page(&self, console: &Console) -> Result<CoolingPage, ActionError> {
        let (cursor, limit) = self.parse()?;
        Ok(console.destinations.cooling(cursor, limit).await?)
    }
}

fn not_cooling(id: &str) -> Problem {
    Problem::not_found(format!("no webhook destination `{id}` is cooling down"))
}

/// `GET /api/webhook-destinations?cursor=&limit=` → `{"items": [...], "next_cursor", "total"}`.
pub async fn api_list(
    State(state): State<AppState>,
    _op: Operator,
    Query(query): Query<PageQuery>,
) -> Result<Json<CoolingPage>, Problem> {
    Ok(Json(query.page(&state.console).await?))
}

/// `POST /api/webhook-destinations/{id}/resume` → `{"id", "resumed": true, "moved_to_ready"}`;
/// `404` when the destination is not cooling down.
pub async fn api_resume(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    op.may_act()?;
    match state.console.resume_destination(&op.name, &id).await? {
        Some(moved) => Ok(Json(json!({"id": id, "resumed": true, "moved_to_ready": moved}))),
        None => Err(not_cooling(&id)),
    }
}

/// The page `/webhook-destinations`.
pub async fn list_page(State(state): State<AppState>, session: Session, Query(query): Query<PageQuery>) -> Response {
    let list = match query.page(&state.console).await {
        Ok(list) => list,
        Err(e) => return problem_page(&session, e.into()),
    };
    let body = html! {
        p { (list.total) " webhook destination(s) cooling down. Their jobs wait without using attempts; "
            "after each gap a single probe tests the destination: a success ends the cool-down, a failure doubles the gap." }
        table #destinations {
            thead { tr { th { "destination" } th { "failures" } th { "since" } th { "gap ends" } th { "gap" } th { "jobs waiting" } th {} } }
            tbody { @for d in &list.items {
                tr {
                    td { code { (d.destination) } }
                    td.num { (d.failures) }
                    td { (d.since.map(format_time).unwrap_or_default()) }
                    td { (format_time(d.until)) }
                    td.num { (format!("{:.0} s", d.gap_seconds)) }
                    td.num { (d.parked) }
                    td { @if session.role == Role::Admin {
                        form.inline method="post" action=(format!("/webhook-destinations/{}/resume", d.id)) {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button type="submit" id=(format!("resume-{}", d.id)) { "End cool-down" }
                        }
                    } }
                }
            } }
        }
        @if let Some(next) = list.next_cursor {
            p { a href=(format!("/webhook-destinations?cursor={next}")) { "Next page" } }
        }
    };
    (StatusCode::OK, html_response(page("Webhook destinations", Some(&session), body))).into_response()
}

/// The page's "End cool-down" button.
pub async fn page_resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm { session, .. }: CsrfForm<Session>,
) -> Response {
    if let Err(refused) = session.may_act() {
        return refused;
    }
    let back = ("/webhook-destinations", "Back to the destinations");
    match state.console.resume_destination(&session.operator, &id).await {
        Ok(Some(moved)) => done_page(
            &session,
            &format!("Cool-down ended; {moved} waiting job(s) moved to the ready list."),
            None,
            back,
        ),
        Ok(None) => problem_page(&session, not_cooling(&id)),
        Err(e) => problem_page(&session, e.into()),
    }
}

/// `dlq-console destinations`: a table, or the API's page with `--json`.
pub async fn print(console: &Console, cursor: u64, limit: usize, as_json: bool) -> anyhow::Result<()> {
    let list = PageQuery { cursor: Some(cursor.to_string()), limit: Some(limit.to_string()) }
        .page(console)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!("{:<32}  {:<40}  {:>8}  {:<23}  {:>7}", "id", "destination", "failures", "gap ends", "waiting");
    for d in &list.items {
        println!(
            "{:<32}  {:<40}  {:>8}  {:<23}  {:>7}",
            d.id,
            d.destination,
            d.failures,
            format_time(d.until),
            d.parked
        );
    }
    if let Some(next) = list.next_cursor {
        println!("more: --cursor {next}");
    }
    Ok(())
}
