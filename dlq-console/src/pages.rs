//! The pages: server-rendered HTML (maud), no front-end build. A login form takes an operator
//! token and sets a signed, HttpOnly, SameSite=Strict session cookie; every form carries a
//! CSRF token bound to the session, and every handler that changes anything reads its form
//! through [`CsrfForm`], which checks it. Read-only operators see no action and are refused one.

#![expect(clippy::result_large_err, reason = "a refused form answers with its page, built once")]

use axum::Form;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use jobs::Kind;
use jobs::dead::DeadFilter;
use jobs::record::DeadReason;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;
use service::Problem;
use service::csrf::{CsrfForm, CsrfSession};
use sha2::Sha256;

use crate::AppState;
use crate::actions::ActionError;
use crate::api::{ListQuery, queues_view, refused};
use crate::config::Role;

const COOKIE: &str = "jp_session";
const SESSION_HOURS: i64 = 12;

fn sign(key: &[u8], text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(text.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// A logged-in operator: from the session cookie, checked against its signature, its expiry
/// and the session registry (a session ended by logout opens nothing).
#[derive(Debug, Clone)]
pub struct Session {
    pub operator: String,
    pub role: Role,
    /// The token every form must echo.
    pub csrf: String,
    /// The cookie's nonce: the session's name in the registry.
    nonce: String,
}

/// Why a request carries no session.
enum NoSession {
    /// No cookie, a bad one, or one whose session ended: log in.
    LogIn,
    /// The registry did not answer.
    Unavailable(jobs::StoreError),
}

impl Session {
    /// A new session's nonce and cookie, `<operator>.<expiry>.<nonce>.<signature>`. The
    /// signature also covers the digest of the operator's token, so a rotated token ends the
    /// sessions it opened.
    fn cookie_value(key: &[u8], operator: &crate::config::Operator) -> Option<(String, String)> {
        let expires = (Utc::now() + chrono::Duration::hours(SESSION_HOURS)).timestamp();
        let nonce = URL_SAFE_NO_PAD.encode(crate::config::random_bytes(16).ok()?);
        let body = format!("{}.{expires}.{nonce}", operator.name);
        let value =
            format!("{body}.{}", sign(key, &format!("{body}.{}", URL_SAFE_NO_PAD.encode(operator.digest.as_bytes()))));
        Some((nonce, value))
    }

    /// The session the cookie names, if its signature and expiry hold (the registry aside).
    fn from_cookie(state: &AppState, headers: &HeaderMap) -> Option<Self> {
        let cookies = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';'));
        let value = { cookies }.find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))?;
        let (body, signature) = value.rsplit_once('.')?;
        let mut parts = body.splitn(3, '.');
        let (name, expires, nonce) = (parts.next()?, parts.next()?, parts.next()?);
        let op = state.config.operator_named(name)?;
        let expected =
            sign(&state.config.session_key, &format!("{body}.{}", URL_SAFE_NO_PAD.encode(op.digest.as_bytes())));
        if !bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), signature.as_bytes())) {
            return None;
        }
        if expires.parse::<i64>().ok()? < Utc::now().timestamp() {
            return None;
        }
        Some(Self {
            operator: op.name.clone(),
            role: op.role,
            csrf: sign(&state.config.session_key, &format!("csrf.{nonce}")),
            nonce: nonce.to_owned(),
        })
    }

    async fn read(state: &AppState, headers: &HeaderMap) -> Result<Self, NoSession> {
        let session = Self::from_cookie(state, headers).ok_or(NoSession::LogIn)?;
        match state.sessions.alive(&session.nonce, &session.operator).await {
            Ok(true) => Ok(session),
            Ok(false) => Err(NoSession::LogIn),
            Err(e) => Err(NoSession::Unavailable(e)),
        }
    }

    pub(crate) fn may_act(&self) -> Result<(), Response> {
        match self.role {
            Role::Admin => Ok(()),
            Role::ReadOnly => {
                Err((StatusCode::FORBIDDEN, page("Refused", Some(self), html! { p { "Your operator is read-only." } }))
                    .into_response())
            }
        }
    }
}

impl CsrfSession for Session {
    fn csrf_token(&self) -> &str {
        &self.csrf
    }

    fn forged(&self) -> Response {
        (
            StatusCode::FORBIDDEN,
            page(
                "Refused",
                None,
                html! { p { "The form expired or came from elsewhere (CSRF check). Reload the page and try again." } },
            ),
        )
            .into_response()
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Session::read(state, &parts.headers).await.map_err(|refused| match refused {
            NoSession::LogIn => Redirect::to("/login").into_response(),
            NoSession::Unavailable(e) => unavailable(&e),
        })
    }
}

/// The answer when Redis (sessions, letters) does not answer.
fn unavailable(e: &jobs::StoreError) -> Response {
    // A full Redis answers, but takes no session until workers drain some jobs.
    let (text, retry_after) = if matches!(e, jobs::StoreError::Full(_)) {
        (
            "Redis is full (it reached its maxmemory) and takes no new session. Try again once workers have drained some jobs.",
            "5",
        )
    } else {
        tracing::warn!(error = %e, "console sessions unavailable");
        ("Redis did not answer. Try again in a moment.", "1")
    };
    let mut response =
        (StatusCode::SERVICE_UNAVAILABLE, html_response(page("Unavailable", None, html! { p.warn { (text) } })))
            .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(retry_after));
    response
}

/// A time as every page shows it: `2026-11-27 14:46:46 UTC`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A time in ms since the epoch (a record's), as [`format_time`] shows it.
pub fn format_millis(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map(format_time).unwrap_or_default()
}

/// An operator note (`<RFC 3339 time> replayed by <operator>`, as stored) with its time shown
/// as [`format_time`] shows times.
pub fn format_note(note: &str) -> String {
    let (first, rest) = note.split_once(' ').unwrap_or((note, ""));
    match DateTime::parse_from_rfc3339(first) {
        Ok(t) => format!("{} {rest}", format_time(t.with_timezone(&Utc))),
        Err(_) => note.to_owned(),
    }
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330}header{background:#1d2330;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}header a{color:#cfe0ff;text-decoration:none}header .who{margin-left:auto}main{padding:1em 1.2em;max-width:1200px}table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #e3e6ec;padding:.35em .5em;text-align:left;vertical-align:top}th{background:#f5f7fa}td.num{text-align:right;font-variant-numeric:tabular-nums}.err{color:#a3262c;max-width:40em;overflow-wrap:anywhere}form.inline{display:inline}input,select,button,textarea{font:inherit}button{cursor:pointer}button.danger{color:#a3262c}pre{background:#f5f7fa;padding:.6em;overflow:auto}.filters{display:flex;flex-wrap:wrap;gap:.5em;align-items:end;margin-bottom:1em}.filters label{display:flex;flex-direction:column;font-size:12px}.notice{background:#eef6ee;border:1px solid #b5d6b5;padding:.5em .8em}.warn{background:#fdf3e6;border:1px solid #e8c38f;padding:.5em .8em}ol.timeline li{margin-bottom:.4em}nav.tabs{margin-bottom:.6em}";

#[expect(clippy::needless_pass_by_value, reason = "pages are built inline at the call")]
pub(crate) fn page(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Jobplane console" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "Jobplane" }
                    @if let Some(s) = session {
                        a href="/" { "Overview" }
                        a href="/jobs" { "Jobs" }
                        a href="/dead" { "Dead letters" }
                        a href="/schedules" { "Schedules" }
                        a href="/workers" { "Workers" }
                        a href="/webhook-destinations" { "Destinations" }
                        a href="/suppressions" { "Suppressions" }
                        span.who {
                            (s.operator) @if s.role == Role::ReadOnly { " (read-only)" } " "
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

pub(crate) fn html_response(markup: Markup) -> Response {
    let mut response = markup.into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

#[expect(clippy::needless_pass_by_value, reason = "callers hand over the problem they made")]
pub(crate) fn problem_page(session: &Session, problem: Problem) -> Response {
    let status = problem.status();
    let errors: Vec<(&str, &str)> = problem
        .member("errors")
        .and_then(|errors| errors.as_array())
        .into_iter()
        .flatten()
        .map(|e| (e["field"].as_str().unwrap_or_default(), e["message"].as_str().unwrap_or_default()))
        .collect();
    let body = html! {
        p.warn { (problem.detail()) }
        @if !errors.is_empty() { ul { @for (field, message) in &errors { li { code { (field) } " " (message) } } } }
        p { a href="javascript:history.back()" { "Back" } }
    };
    (status, html_response(page("Not done", Some(session), body))).into_response()
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login_form() -> Response {
    html_response(page(
        "Log in",
        None,
        html! {
            form method="post" action="/login" {
                p { label { "Operator token " input type="password" name="token" autocomplete="current-password" autofocus; } }
                button type="submit" { "Log in" }
            }
        },
    ))
}

/// The one form without a CSRF token: there is no session yet to bind one to, and a forged
/// login could only open a session of the forger's, with a token the forger gives away.
pub async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let Some(op) = state.config.operator(form.token.trim()) else {
        return (
            StatusCode::UNAUTHORIZED,
            html_response(page(
                "Log in",
                None,
                html! {
                    p.warn { "That token is not an operator's." }
                    form method="post" action="/login" {
                        p { label { "Operator token " input type="password" name="token" autofocus; } }
                        button type="submit" { "Log in" }
                    }
                },
            )),
        )
            .into_response();
    };
    let secure = if state.config.secure_cookies { "; Secure" } else { "" };
    let Some((nonce, value)) = Session::cookie_value(&state.config.session_key, op) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no random source for the session").into_response();
    };
    let lifetime = std::time::Duration::from_secs(u64::try_from(SESSION_HOURS * 3600).unwrap_or(0));
    if let Err(e) = state.sessions.open(&nonce, &op.name, lifetime).await {
        return unavailable(&e);
    }
    let cookie =
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", SESSION_HOURS * 3600);
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Ends the session server-side, so the cookie and its CSRF token open nothing any more, then
/// clears the cookie.
pub async fn logout(State(state): State<AppState>, CsrfForm { session, .. }: CsrfForm<Session>) -> Response {
    if let Err(e) = state.sessions.end(&session.nonce).await {
        return unavailable(&e);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("jp_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// One minute: its start, processed and failed.
type Point = (DateTime<Utc>, u64, u64);

/// Processed and failed per minute over the last hour, as an SVG line chart.
#[expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "pixel arithmetic on small counts"
)]
fn chart(points: &[Point]) -> Markup {
    let (w, h, pad) = (720.0_f64, 160.0_f64, 24.0_f64);
    let top = points.iter().map(|(_, ok, failed)| ok + failed).max().unwrap_or(0).max(1) as f64;
    let n = points.len().max(2) as f64 - 1.0;
    let line = |value: &dyn Fn(&Point) -> u64| -> String {
        points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "{:.1},{:.1}",
                    pad + i as f64 * (w - 2.0 * pad) / n,
                    h - pad - value(p) as f64 * (h - 2.0 * pad) / top
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let processed = line(&|p| p.1 + p.2);
    let failed = line(&|p| p.2);
    html! {
        svg width=(w) height=(h) viewBox=(format!("0 0 {w} {h}")) role="img" aria-label="processed and failed per minute, last hour" {
            rect x="0" y="0" width=(w) height=(h) fill="#fafbfc" {}
            text x=(pad) y="14" font-size="11" fill="#555" { "max " (top as u64) "/min" }
            polyline points=(processed) fill="none" stroke="#2f6fdb" stroke-width="2" {}
            polyline points=(failed) fill="none" stroke="#c9353c" stroke-width="2" {}
            text x=(w - 200.0) y="14" font-size="11" fill="#2f6fdb" { "processed" }
            text x=(w - 120.0) y="14" font-size="11" fill="#c9353c" { "failed" }
        }
    }
}

pub async fn overview(State(state): State<AppState>, session: Session) -> Response {
    let queues = match queues_view(&state).await {
        Ok(q) => q,
        Err(problem) => return problem_page(&session, problem),
    };
    let now = Utc::now();
    let mut hour: Vec<(DateTime<Utc>, u64, u64)> = Vec::new();
    for kind in Kind::ALL {
        match state.console.dead.throughput(kind, crate::api::last_complete_minute(now), 60).await {
            Ok(points) if hour.is_empty() => hour = points,
            Ok(points) => {
                for (total, p) in hour.iter_mut().zip(points) {
                    total.1 += p.1;
                    total.2 += p.2;
                }
            }
            Err(e) => return problem_page(&session, ActionError::from(e).into()),
        }
    }
    html_response(page("Overview", Some(&session), html! {
        table {
            thead { tr { th { "kind" } th { "queued" } th { "latency" } th { "scheduled" } th { "running" } th { "retrying" } th { "dead" } th { "processed, last minute" } th { "failed, last minute" } th { "state" } th { "rate limit" } } }
            tbody {
                @for q in &queues {
                    tr {
                        td { (q.kind.as_str()) }
                        td.num { (q.depths.queued) } td.num { (crate::fleet::latency(q.latency_seconds)) }
                        td.num { (q.depths.scheduled) } td.num { (q.depths.running) }
                        td.num { (q.retrying) }
                        td.num { a href=(format!("/dead?kind={}", q.kind.as_str())) { (q.depths.dead) } }
                        td.num { (q.processed_last_minute) } td.num { (q.failed_last_minute) }
                        td { (crate::fleet::pause_cell(&session, q)) }
                        td { (crate::rate::rate_cell(&session, q)) }
                    }
                }
            }
        }
        @if let Some((start, _, _)) = hour.last() {
            p #minute { "\"Last minute\" is the last complete minute, " (format_time(*start)) " to " (format_time(*start + chrono::Duration::minutes(1)))
                ", the chart's rightmost point; the minute still running is counted once it ends." }
        }
        h2 { "Processed and failed per complete minute, last hour" }
        (chart(&hour))
    }))
    .into_response()
}

fn filter_query(query: &ListQuery) -> String {
    let pairs = [
        ("kind", &query.kind),
        ("reason", &query.reason),
        ("q", &query.q),
        ("since", &query.since),
        ("until", &query.until),
    ];
    pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().filter(|v| !v.is_empty()).map(|v| format!("{k}={}", urlencode(v))))
        .collect::<Vec<_>>()
        .join("&")
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn filter_fields(query: &ListQuery) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
        label { "kind" select name="kind" {
            option value="" { "any" }
            @for k in Kind::ALL { option value=(k.as_str()) selected[query.kind.as_deref() == Some(k.as_str())] { (k.as_str()) } }
        } }
        label { "reason" select name="reason" {
            option value="" { "any" }
            @for r in DeadReason::ALL.map(DeadReason::as_str) { option value=(r) selected[query.reason.as_deref() == Some(r)] { (r) } }
        } }
        label { "search error and payload" input type="search" name="q" value=(value(&query.q)) placeholder="text"; }
        label { "since (RFC 3339)" input type="text" name="since" value=(value(&query.since)) placeholder="2026-11-21T00:00:00Z"; }
        label { "until" input type="text" name="until" value=(value(&query.until)); }
    }
}

pub async fn dead_list(State(state): State<AppState>, session: Session, query: ListQuery) -> Response {
    let (filter, limit, cursor) = match query.parse() {
        Ok(parsed) => parsed,
        Err(problem) => return problem_page(&session, problem),
    };
    let page_data = match state.console.dead.list(&filter, limit, cursor.as_deref()).await {
        Ok(p) => p,
        Err(e) => return problem_page(&session, ActionError::from(e).into()),
    };
    let filters = filter_query(&query);
    html_response(page(
        "Dead letters",
        Some(&session),
        html! {
            form.filters method="get" action="/dead" {
                (filter_fields(&query))
                button type="submit" { "Filter" }
            }
            p { strong #total { (page_data.total) } " matching" }
            @if session.role == Role::Admin && page_data.total > 0 {
                form.inline method="post" action="/dead/bulk" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="filters" value=(filters);
                    button type="submit" name="action" value="replay" { "Replay all " (page_data.total) " matching…" }
                    " "
                    button.danger type="submit" name="action" value="purge" { "Delete all " (page_data.total) " matching…" }
                }
            }
            table #letters {
                thead { tr { th { "died" } th { "kind" } th { "reason" } th { "attempts" } th { "last error" } th { "job" } } }
                tbody {
                    @for item in &page_data.items {
                        tr {
                            td { (format_time(item.dead_at)) }
                            td { (item.kind.as_str()) }
                            td { (item.reason) }
                            td.num { (item.attempts) }
                            td.err { (item.last_error.clone().unwrap_or_default()) }
                            td { a href=(format!("/dead/{}", item.id)) { code { (item.id) } } }
                        }
                    }
                }
            }
            @if let Some(next) = &page_data.next_cursor {
                p { a href=(format!("/dead?{filters}&cursor={next}")) { "Older →" } }
            }
        },
    ))
}

pub async fn dead_detail(State(state): State<AppState>, session: Session, Path(id): Path<String>) -> Response {
    let record = match state.console.dead.get(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return problem_page(
                &session,
                Problem::not_found("No dead letter has this id (replayed, deleted or evicted)."),
            );
        }
        Err(e) => return problem_page(&session, ActionError::from(e).into()),
    };
    let payload = serde_json::to_string_pretty(&record.payload).unwrap_or_default();
    html_response(page(
        &format!("Dead letter {id}"),
        Some(&session),
        html! {
            table {
                tr { th { "kind" } td { (record.summary.kind.as_str()) } }
                tr { th { "status" } td { (record.status.as_str()) " (" (record.summary.reason) ")" } }
                tr { th { "died" } td { (format_time(record.summary.dead_at)) } }
                tr { th { "attempts" } td { (record.summary.attempts) " of " (record.max_attempts) } }
                tr { th { "producer" } td { (record.producer) } }
                @if let Some(key) = &record.idempotency_key { tr { th { "idempotency key" } td { code { (key) } } } }
                tr { th { "last error" } td.err { (record.summary.last_error.clone().unwrap_or_default()) } }
            }
            h2 { "Payload" }
            pre #payload { (payload) }
            h2 { "Attempts" }
            ol.timeline {
                @for a in &record.history {
                    li { strong { "attempt " (a.attempt) } " · " (format_millis(a.started_at)) " → " (format_millis(a.finished_at)) " · " (a.worker)
                        @if let Some(e) = &a.error { br; span.err { (e) } } }
                }
            }
            @if !record.notes.is_empty() { h2 { "Operator actions" } ul { @for n in &record.notes { li { (format_note(n)) } } } }
            @if session.role == Role::Admin {
                h2 { "Actions" }
                form.inline method="post" action=(format!("/dead/{id}/replay")) {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button #replay type="submit" { "Replay" }
                }
                " "
                form.inline method="post" action=(format!("/dead/{id}/delete")) onsubmit="return confirm('Delete this dead letter for good?')" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button.danger type="submit" { "Delete" }
                }
                h3 { "Edit the payload and replay" }
                form method="post" action=(format!("/dead/{id}/edit")) {
                    input type="hidden" name="csrf" value=(session.csrf);
                    textarea name="payload" rows="12" cols="80" { (payload) }
                    br;
                    button type="submit" { "Check, save and replay" }
                }
            }
        },
    ))
}

#[derive(Debug, Deserialize)]
pub struct EditForm {
    payload: String,
}

pub async fn replay_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm { session, .. }: CsrfForm<Session>,
) -> Response {
    if let Err(r) = session.may_act() {
        return r;
    }
    match state.console.replay(&session.operator, &id, None).await {
        Ok(()) => done_page(&session, &format!("Job {id} is queued again under the same id."), Some(&id), BACK_TO_DEAD),
        Err(e) => problem_page(&session, e.into()),
    }
}

pub async fn edit_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm { session, form }: CsrfForm<Session, EditForm>,
) -> Response {
    if let Err(r) = session.may_act() {
        return r;
    }
    let value = match serde_json::from_str(&form.payload) {
        Ok(v) => v,
        Err(e) => {
            return problem_page(
                &session,
                Problem::invalid(&[jobs::FieldError::new("/payload", format!("is not JSON: {e}"))]),
            );
        }
    };
    match state.console.replay(&session.operator, &id, Some(value)).await {
        Ok(()) => done_page(
            &session,
            &format!("The payload of job {id} was checked and saved, and the job is queued again."),
            Some(&id),
            BACK_TO_DEAD,
        ),
        Err(e) => problem_page(&session, e.into()),
    }
}

pub async fn delete_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm { session, .. }: CsrfForm<Session>,
) -> Response {
    if let Err(r) = session.may_act() {
        return r;
    }
    match state.console.delete(&session.operator, &id).await {
        Ok(()) => html_response(page(
            "Deleted",
            Some(&session),
            html! { p.notice { "Dead letter " code { (id) } " deleted." } p { a href="/dead" { "Back to the list" } } },
        )),
        Err(e) => problem_page(&session, e.into()),
    }
}

/// What an action's page says once done: `message`, where to follow the job `id` (if one), and a
/// link `back` (its address and text).
pub(crate) fn done_page(session: &Session, message: &str, id: Option<&str>, back: (&str, &str)) -> Response {
    let (href, text) = back;
    html_response(page(
        "Done",
        Some(session),
        html! {
            p.notice #done { (message) }
            @if let Some(id) = id { p { "Follow it in the producer API: " code { "GET /v1/jobs/" (id) } "." } }
            p { a href=(href) { (text) } }
        },
    ))
}

/// Where the dead-letter actions' done pages lead back to.
const BACK_TO_DEAD: (&str, &str) = ("/dead", "Back to the dead letters");

#[derive(Debug, Deserialize)]
pub struct BulkForm {
    action: String,
    /// The list page's filter, as its query string.
    filters: String,
    /// Set by the confirmation page: the count the operator saw.
    #[serde(default)]
    confirm: Option<u64>,
}

pub async fn bulk(State(state): State<AppState>, CsrfForm { session, form }: CsrfForm<Session, BulkForm>) -> Response {
    if let Err(r) = session.may_act() {
        return r;
    }
    let mut query: ListQuery = match serde_urlencoded_query(&form.filters) {
        Some(q) => q,
        None => {
            return problem_page(&session, Problem::about_blank(StatusCode::BAD_REQUEST, "the filter does not read"));
        }
    };
    if form.confirm.is_none() {
        // The confirmation freezes the filter at this moment: letters that die after the
        // operator saw the count are not part of what they confirm.
        let now = Utc::now();
        let until =
            query.until.as_deref().and_then(|u| DateTime::parse_from_rfc3339(u).ok()).map(|u| u.with_timezone(&Utc));
        if until.is_none_or(|u| u > now) {
            query.until = Some(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        }
    }
    let frozen = filter_query(&query);
    let filter: DeadFilter = match query.parse() {
        Ok((filter, _, _)) => filter,
        Err(problem) => return problem_page(&session, problem),
    };
    let verb = match form.action.as_str() {
        "replay" => "Replay",
        "purge" => "Delete",
        _ => return problem_page(&session, Problem::about_blank(StatusCode::BAD_REQUEST, "unknown action")),
    };
    let Some(confirmed) = form.confirm else {
        let count = match state.console.dead.count(&filter).await {
            Ok(n) => n,
            Err(e) => return problem_page(&session, ActionError::from(e).into()),
        };
        return html_response(page(
            &format!("{verb} {count} dead letters?"),
            Some(&session),
            html! {
                p.warn { (verb) " " strong #count { (count) } " dead letters matching " code { (frozen) } "?"
                    @if form.action == "replay" { " Replays are paced at " (state.config.replay_rate) " a second." }
                    @if form.action == "purge" { " This cannot be undone." } }
                form method="post" action="/dead/bulk" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="filters" value=(frozen);
                    input type="hidden" name="action" value=(form.action);
                    input type="hidden" name="confirm" value=(count);
                    button #confirm type="submit" { "Yes, " (verb.to_lowercase()) " them" }
                    " " a href=(format!("/dead?{}", form.filters)) { "Cancel" }
                }
            },
        ));
    };
    // The filter is frozen at the confirmation, so fewer may match now, never more.
    match state.console.dead.count(&filter).await {
        Ok(now) if now > confirmed => {
            return problem_page(
                &session,
                refused(format!(
                    "{now} letters match now, more than the {confirmed} confirmed; nothing was done. Review the list again."
                )),
            );
        }
        Ok(_) => {}
        Err(e) => return problem_page(&session, ActionError::from(e).into()),
    }
    let outcome = if form.action == "replay" {
        match state.console.matching(&filter).await {
            Ok(targets) => {
                let ids: Vec<String> = targets.into_iter().map(|(_, id)| id).collect();
                let scope = serde_json::json!({"filter": filter, "confirmed": confirmed});
                // Its own task: a browser that gives up does not cut a paced replay short.
                let (console, operator) = (state.console.clone(), session.operator.clone());
                let task = tokio::spawn(async move { console.replay_many(&operator, &ids, scope, |_| {}).await });
                match task.await {
                    Ok(result) => result.map(|r| format!("{} replayed, {} refused.", r.replayed, r.refused.len())),
                    Err(e) => Err(ActionError::Refused(format!("the replay failed: {e}"))),
                }
            }
            Err(e) => Err(e),
        }
    } else {
        state.console.purge(&session.operator, &filter, |_| {}).await.map(|n| format!("{n} deleted."))
    };
    match outcome {
        Ok(message) => done_page(&session, &message, None, BACK_TO_DEAD),
        Err(e) => problem_page(&session, e.into()),
    }
}

/// A list page's query string back into its parameters.
fn serde_urlencoded_query(text: &str) -> Option<ListQuery> {
    let pairs: Vec<(String, String)> = url_decode_pairs(text)?;
    let get = |k: &str| pairs.iter().find(|(name, _)| name == k).map(|(_, v)| v.clone());
    Some(ListQuery {
        kind: get("kind"),
        reason: get("reason"),
        q: get("q"),
        since: get("since"),
        until: get("until"),
        limit: None,
        cursor: None,
    })
}

fn url_decode_pairs(text: &str) -> Option<Vec<(String, String)>> {
    fn decode(s: &str) -> Option<String> {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = s.get(i + 1..i + 3)?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).ok()
    }
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

/// `GET /schedules`, with the notice of the action that redirected here, if any.
pub async fn schedules(
    State(state): State<AppState>,
    session: Session,
    notice: Result<Query<crate::schedule_actions::Notice>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let notice = notice.ok().and_then(|Query(n)| n.text());
    schedules_page(&state, &session, notice.as_deref()).await
}

/// The schedules, with a pause or resume and a run-now button each for admins (the handlers
/// are in `schedule_actions`), and `notice` (what an action just did) on top.
pub(crate) async fn schedules_page(state: &AppState, session: &Session, notice: Option<&str>) -> Response {
    let list = match state.schedules.list().await {
        Ok(l) => l,
        Err(e) => return problem_page(session, ActionError::from(e).into()),
    };
    let now = Utc::now();
    let time = |t: Option<DateTime<Utc>>| t.map(format_time).unwrap_or_default();
    let admin = session.role == Role::Admin;
    html_response(page(
        "Schedules",
        Some(session),
        html! {
            @if let Some(notice) = notice { p.notice #done { (notice) } }
            @if list.is_empty() { p { "No schedules. Producers create them with " code { "POST /v1/schedules" } "; workers load " code { "SCHEDULES_FILE" } "." } }
            @else {
                p { "A paused schedule fires nothing; on resume, " code { "catch_up: latest" } " fires the most recent tick missed while paused, once, and "
                    code { "none" } " skips them. Run now adds one job (one per second however often pressed) and leaves the regular ticks alone." }
                table #schedules {
                    thead { tr { th { "name" } th { "cron" } th { "time zone" } th { "job" } th { "catch-up" } th { "source" } th { "state" } th { "last run" } th { "next run" } @if admin { th { "actions" } } } }
                    tbody { @for listed in &list {
                        @let s = &listed.schedule;
                        tr data-name=(s.name) {
                            td { (s.name) } td { code { (s.cron) } } td { (s.timezone) }
                            td { (s.job.get("kind").and_then(|k| k.as_str()).unwrap_or("?")) }
                            td { (format!("{:?}", s.catch_up).to_lowercase()) } td { (format!("{:?}", s.source).to_lowercase()) }
                            td { @if let Some(p) = &listed.pause { strong { "paused" } " since " (time(Some(p.at))) " by " (p.by) } @else { "running" } }
                            td { (time(listed.last)) }
                            td { (time(listed.next_run_at(now))) }
                            @if admin { td {
                                @let base = format!("/schedules/{}", urlencode(&s.name));
                                @if listed.pause.is_some() {
                                    form.inline method="post" action=(format!("{base}/resume")) {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        button.resume type="submit" { "Resume" }
                                    }
                                } @else {
                                    form.inline method="post" action=(format!("{base}/pause")) {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        button.pause type="submit" { "Pause" }
                                    }
                                }
                                " "
                                form.inline method="post" action=(format!("{base}/run")) {
                                    input type="hidden" name="csrf" value=(session.csrf);
                                    button.run type="submit" { "Run now" }
                                }
                            } }
                        }
                    } }
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_time_reads_the_same_way() {
        let t = DateTime::parse_from_rfc3339("2026-11-27T14:46:46.643+00:00").unwrap().with_timezone(&Utc);
        assert_eq!(format_time(t), "2026-11-27 14:46:46 UTC");
        assert_eq!(format_millis(t.timestamp_millis()), "2026-11-27 14:46:46 UTC");
        assert_eq!(
            format_note("2026-11-27T14:46:46.643+00:00 replayed by ops"),
            "2026-11-27 14:46:46 UTC replayed by ops"
        );
        assert_eq!(format_note("replayed by ops"), "replayed by ops");
    }
}
