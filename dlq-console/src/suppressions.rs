//! The email suppression list ([`jobs::suppression`]): searched (JSON API, page, CLI), and
//! entries removed or added by an operator. Each change goes to the audit log as
//! `suppression.delete` or `suppression.add` (resource `email_address`, id the normalised
//! address); read-only operators are refused.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use jobs::FieldError;
use jobs::suppression::{PAGE_MAX, Page, Suppression, SuppressionReason, normalise};
use maud::html;
use serde::{Deserialize, Serialize};
use serde_json::json;
use service::Problem;
use service::csrf::CsrfForm;

use crate::AppState;
use crate::actions::{ActionError, Console};
use crate::api::Operator;
use crate::config::Role;
use crate::pages::{Session, done_page, format_time, html_response, page, problem_page};

/// Entries a page lists unless told.
pub const DEFAULT_LIMIT: usize = 50;
/// The longest search text.
const QUERY_MAX: usize = 320;

impl Console {
    /// Removes `address` from the list: its entry, or `None` (nothing recorded) when it was
    /// not listed.
    pub async fn unsuppress(&self, operator: &str, address: &str) -> Result<Option<Suppression>, ActionError> {
        let removed = self.suppressions.remove(address).await?;
        if let Some(entry) = &removed {
            let metadata = json!({"reason": entry.reason, "suppressed_at": entry.at});
            self.record_on(operator, "suppression.delete", "email_address", Some(&entry.address), metadata).await;
        }
        Ok(removed)
    }

    /// Adds `address` to the list by hand (reason `manual`): the entry.
    pub async fn suppress(&self, operator: &str, address: &str, detail: &str) -> Result<Suppression, ActionError> {
        let invalid = || ActionError::Invalid(vec![FieldError::new("address", "must be an email address")]);
        let normal = normalise(address).ok_or_else(invalid)?;
        let detail = if detail.trim().is_empty() { format!("added by {operator}") } else { detail.to_owned() };
        self.suppressions.add(&normal, SuppressionReason::Manual, &detail, None, Utc::now()).await?;
        self.record_on(operator, "suppression.add", "email_address", Some(&normal), json!({})).await;
        self.suppressions.get(&normal).await?.ok_or_else(invalid)
    }
}

/// `?q=&cursor=&limit=` as given.
#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    pub q: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

/// A page of entries as the API answers it.
#[derive(Debug, Serialize)]
pub struct SearchPage {
    pub items: Vec<Suppression>,
    pub next_cursor: Option<String>,
    /// Addresses on the list.
    pub total: u64,
}

impl SearchQuery {
    /// `422` naming each bad parameter, else the page.
    pub async fn page(&self, console: &Console) -> Result<SearchPage, ActionError> {
        let mut errors = Vec::new();
        let q = self.q.as_deref().unwrap_or("");
        if q.len() > QUERY_MAX {
            errors.push(FieldError::new("q", format!("must be at most {QUERY_MAX} bytes")));
        }
        let cursor = self.cursor.as_deref().filter(|c| !c.is_empty());
        if cursor.is_some_and(|c| c.len() > 64 || !c.bytes().all(|b| b.is_ascii_digit() || b == b':')) {
            errors.push(FieldError::new("cursor", "must be the next_cursor of a previous page"));
        }
        let limit = match self.limit.as_deref().filter(|l| !l.is_empty()) {
            None => DEFAULT_LIMIT,
            Some(raw) => raw.parse::<usize>().ok().filter(|l| (1..=PAGE_MAX).contains(l)).unwrap_or_else(|| {
                errors.push(FieldError::new("limit", format!("must be a whole number from 1 to {PAGE_MAX}")));
                DEFAULT_LIMIT
            }),
        };
        if !errors.is_empty() {
            return Err(ActionError::Invalid(errors));
        }
        let Page { items, next_cursor } = console.suppressions.search(q, cursor, limit).await?;
        Ok(SearchPage { items, next_cursor, total: console.suppressions.count().await? })
    }
}

fn not_listed(address: &str) -> Problem {
    Problem::not_found(format!("`{address}` is not on the suppression list"))
}

/// `GET /api/suppressions?q=&cursor=&limit=` → `{"items": [...], "next_cursor", "total"}`:
/// the entries whose address contains `q`.
pub async fn api_list(
    State(state): State<AppState>,
    _op: Operator,
    Query(query): Query<SearchQuery>,
) -> Result<Json<SearchPage>, Problem> {
    Ok(Json(query.page(&state.console).await?))
}

/// `DELETE /api/suppressions/{address}` → `200` with the entry removed; `404` when the address
/// was not listed.
pub async fn api_delete(
    State(state): State<AppState>,
    op: Operator,
    Path(address): Path<String>,
) -> Result<Json<Suppression>, Problem> {
    op.may_act()?;
    match state.console.unsuppress(&op.name, &address).await? {
        Some(entry) => Ok(Json(entry)),
        None => Err(not_listed(&address)),
    }
}

/// `POST /api/suppressions` body.
#[derive(Debug, Deserialize)]
pub struct AddBody {
    address: String,
    #[serde(default)]
    detail: String,
}

/// `POST /api/suppressions` `{"address", "detail"?}` → `201` with the entry (reason `manual`).
pub async fn api_add(
    State(state): State<AppState>,
    op: Operator,
    Json(body): Json<AddBody>,
) -> Result<(StatusCode, Json<Suppression>), Problem> {
    op.may_act()?;
    let entry = state.console.suppress(&op.name, &body.address, &body.detail).await?;
    Ok((StatusCode::CREATED, Json(entry)))
}

/// The page `/suppressions`.
pub async fn list_page(State(state): State<AppState>, session: Session, Query(query): Query<SearchQuery>) -> Response {
    let list = match query.page(&state.console).await {
        Ok(list) => list,
        Err(e) => return problem_page(&session, e.into()),
    };
    let q = query.q.clone().unwrap_or_default();
    let body = html! {
        p { (list.total) " address(es) suppressed. An email job to any of them ends dead with reason "
            code { "suppressed" } " without being sent." }
        form.filters method="get" action="/suppressions" {
            label { "address contains" input type="search" name="q" value=(q); }
            button type="submit" { "Search" }
        }
        table #suppressions {
            thead { tr { th { "address" } th { "reason" } th { "since" } th { "detail" } th { "job" } th {} } }
            tbody { @for s in &list.items {
                tr {
                    td { code { (s.address) } }
                    td { (s.reason.as_str()) }
                    td { (format_time(s.at)) }
                    td.err { (s.detail) }
                    td { @if let Some(job) = &s.job_id { code { (job) } } }
                    td { @if session.role == Role::Admin {
                        form.inline method="post" action=(format!("/suppressions/{}/delete", url_encode(&s.address))) {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button.danger type="submit" { "Remove" }
                        }
                    } }
                }
            } }
        }
        @if let Some(next) = list.next_cursor {
            p { a href=(format!("/suppressions?q={}&cursor={next}", url_encode(&q))) { "Next page" } }
        }
    };
    (StatusCode::OK, html_response(page("Suppressions", Some(&session), body))).into_response()
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The page's "Remove" button.
pub async fn page_delete(
    State(state): State<AppState>,
    Path(address): Path<String>,
    CsrfForm { session, .. }: CsrfForm<Session>,
) -> Response {
    if let Err(refused) = session.may_act() {
        return refused;
    }
    let back = ("/suppressions", "Back to the suppression list");
    match state.console.unsuppress(&session.operator, &address).await {
        Ok(Some(entry)) => {
            done_page(&session, &format!("{} removed from the suppression list.", entry.address), None, back)
        }
        Ok(None) => problem_page(&session, not_listed(&address)),
        Err(e) => problem_page(&session, e.into()),
    }
}

/// `dlq-console suppressions`: a table, or the API's page with `--json`.
pub async fn print(console: &Console, query: SearchQuery, as_json: bool) -> anyhow::Result<()> {
    let list = query.page(console).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!("{:<40}  {:<9}  {:<23}  detail", "address", "reason", "since");
    for s in &list.items {
        println!("{:<40}  {:<9}  {:<23}  {}", s.address, s.reason.as_str(), format_time(s.at), s.detail);
    }
    if let Some(next) = list.next_cursor {
        println!("more: --cursor {next}");
    }
    Ok(())
}
