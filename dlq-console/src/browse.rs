//! Every job, every state: `GET /api/jobs`, `GET /api/jobs/{id}`, the pages `/jobs` and
//! `/jobs/{id}`, over [`jobs::browse::JobBrowser`] (cursor pages whose cost does not grow with
//! the queue). Lists never show a payload; one job shows it redacted, as a dead letter does.
//!
//! The actions these pages offer (cancel, run now, bulk cancel) are forms posting to
//! `/jobs/{id}/cancel`, `/jobs/{id}/run` and `/jobs/bulk-cancel`, handled elsewhere; only
//! admins see them.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use chrono::{DateTime, Utc};
use jobs::browse::{Cursor, DEFAULT_LIMIT, Groups, JobDetail, JobPage, JobState, JobSummary, StateCounts, check_limit};
use jobs::{FieldError, Kind};
use maud::{Markup, html};
use service::Problem;

use crate::AppState;
use crate::actions::ActionError;
use crate::api::Operator;
use crate::config::Role;
use crate::pages::{Session, format_time, html_response, page, problem_page};

/// `?kind=&state=&group=&cursor=&limit=`, as given.
#[derive(Debug, Default)]
pub struct JobsQuery {
    pub kind: Option<String>,
    pub state: Option<String>,
    pub group: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

/// A query checked: which list, from where, how many.
#[derive(Debug)]
pub struct Listing {
    pub kind: Kind,
    pub state: JobState,
    /// Queued jobs of this group only (the queued state's lists are per group).
    pub group: Option<String>,
    pub cursor: Option<Cursor>,
    pub limit: usize,
}

/// The longest query string read: five short parameters, generously.
const MAX_QUERY_BYTES: usize = 2048;

/// `400` naming every bad parameter.
fn bad_query(errors: &[FieldError]) -> Problem {
    let detail = errors.iter().map(|e| format!("{} {}", e.field, e.message)).collect::<Vec<_>>().join("; ");
    Problem::new(StatusCode::BAD_REQUEST, "/problems/bad-query", "The query is not valid", detail)
        .with("errors", errors)
}

/// Read from the raw query string: each parameter at most once, unknown ones ignored.
impl<S: Send + Sync> FromRequestParts<S> for JobsQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or_default();
        if raw.len() > MAX_QUERY_BYTES {
            return Err(bad_query(&[FieldError::new("query", format!("is longer than {MAX_QUERY_BYTES} bytes"))]));
        }
        let mut query = JobsQuery::default();
        let mut errors: Vec<FieldError> = Vec::new();
        for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            let slot = match name.as_ref() {
                "kind" => &mut query.kind,
                "state" => &mut query.state,
                "group" => &mut query.group,
                "cursor" => &mut query.cursor,
                "limit" => &mut query.limit,
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() && !errors.iter().any(|e| e.field == name) {
                errors.push(FieldError::new(name.as_ref(), "is given more than once"));
            }
        }
        if errors.is_empty() { Ok(query) } else { Err(bad_query(&errors)) }
    }
}

/// A `limit` parameter as given (trimmed, absent when empty): [`DEFAULT_LIMIT`] when absent,
/// else a whole number from 1 to [`jobs::browse::MAX_LIMIT`].
fn page_limit(given: Option<&str>) -> Result<usize, FieldError> {
    match given {
        None => Ok(DEFAULT_LIMIT),
        Some(l) => l.parse::<usize>().ok().and_then(|n| check_limit(n).ok()).ok_or_else(|| {
            FieldError::new("limit", format!("must be a whole number from 1 to {}", jobs::browse::MAX_LIMIT))
        }),
    }
}

impl JobsQuery {
    /// The listing asked for; `defaults` fills a missing kind and state (the pages), else
    /// both are required (the API).
    pub fn parse(&self, defaults: bool) -> Result<Listing, Problem> {
        let mut errors = Vec::new();
        let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        let kind = match given(&self.kind) {
            Some(k) => k.parse::<Kind>().map_err(|e| errors.push(FieldError::new("kind", e.to_string()))).ok(),
            None if defaults => Some(Kind::ALL[0]),
            None => {
                errors.push(FieldError::new("kind", "is required"));
                None
            }
        };
        let state = match given(&self.state) {
            Some(s) => s.parse::<JobState>().map_err(|e| errors.push(FieldError::new("state", e))).ok(),
            None if defaults => Some(JobState::Queued),
            None => {
                errors.push(FieldError::new("state", "is required"));
                None
            }
        };
        let limit = page_limit(given(&self.limit).as_deref()).unwrap_or_else(|e| {
            errors.push(e);
            DEFAULT_LIMIT
        });
        let group = match (self.group.as_deref().filter(|g| !g.is_empty()), state) {
            (Some(g), Some(JobState::Queued)) if jobs::lanes::valid_group(g) => Some(g.to_owned()),
            (Some(_), Some(JobState::Queued)) => {
                errors.push(FieldError::new(
                    "group",
                    format!("must be 1 to {} visible ASCII characters", jobs::lanes::MAX_GROUP_LEN),
                ));
                None
            }
            (Some(_), Some(_)) => {
                errors.push(FieldError::new(
                    "group",
                    "filters the queued state only (groups decide where a ready job waits)",
                ));
                None
            }
            _ => None,
        };
        let cursor = match (given(&self.cursor), state) {
            (Some(c), Some(state)) => {
                Cursor::parse(state, &c).map_err(|e| errors.push(FieldError::new("cursor", e))).ok()
            }
            _ => None,
        };
        match (kind, state) {
            (Some(kind), Some(state)) if errors.is_empty() => Ok(Listing { kind, state, group, cursor, limit }),
            _ => Err(bad_query(&errors)),
        }
    }
}

impl Listing {
    async fn page(&self, state: &AppState) -> Result<JobPage, Problem> {
        let browser = state.console.dead.browser();
        browser
            .list_in(self.kind, self.state, self.group.as_deref(), self.cursor.as_ref(), self.limit)
            .await
            .map_err(|e| ActionError::from(e).into())
    }
}

/// `GET /api/jobs?kind=&state=&group=&cursor=&limit=` → `{"items": [...], "next_cursor"}`.
pub async fn api_list(
    State(state): State<AppState>,
    _op: Operator,
    query: JobsQuery,
) -> Result<Json<JobPage>, Problem> {
    Ok(Json(query.parse(false)?.page(&state).await?))
}

/// The most groups the queued page shows.
const PAGE_GROUPS: usize = 50;

/// `GET /api/queues/{kind}/groups?limit=` → `{"items": [{"group", "waiting", "high", "normal",
/// "low"}], "more"}`: the groups with jobs waiting, the largest first; list one with
/// `GET /api/jobs?kind=&state=queued&group=`.
pub async fn api_groups(
    State(state): State<AppState>,
    _op: Operator,
    Path(kind): Path<String>,
    uri: axum::http::Uri,
) -> Result<Json<Groups>, Problem> {
    let kind = crate::fleet::kind_of(&kind)?;
    let raw = uri.query().unwrap_or_default();
    if raw.len() > MAX_QUERY_BYTES {
        return Err(bad_query(&[FieldError::new("query", format!("is longer than {MAX_QUERY_BYTES} bytes"))]));
    }
    let given = url::form_urlencoded::parse(raw.as_bytes()).find(|(name, _)| name == "limit").map(|(_, v)| v);
    let limit = page_limit(given.as_deref().map(str::trim).filter(|l| !l.is_empty())).map_err(|e| bad_query(&[e]))?;
    let groups = state.console.dead.browser().groups(kind, limit).await.map_err(ActionError::from)?;
    Ok(Json(groups))
}

fn no_job() -> Problem {
    Problem::not_found("no job has this id (or it ended longer ago than its retention)")
}

/// `GET /api/jobs/{id}`: the job with its attempts, payload redacted.
pub async fn api_show(
    State(state): State<AppState>,
    _op: Operator,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<JobDetail>, Problem> {
    let Path(id) = id.map_err(|_| no_job())?;
    let found = state.console.dead.browser().job(&id).await.map_err(ActionError::from)?;
    found.map(Json).ok_or_else(no_job)
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn list_url(kind: Kind, state: JobState) -> String {
    format!("/jobs?kind={}&state={}", kind.as_str(), state.as_str())
}

/// The listing's own URL: its kind, state and group.
fn listing_url(listing: &Listing) -> String {
    let base = list_url(listing.kind, listing.state);
    match &listing.group {
        Some(g) => format!("{base}&group={}", urlencode(g)),
        None => base,
    }
}

/// The queued tab's groups: each a link to its own jobs, and a box to name one.
fn groups_section(kind: Kind, listing: &Listing, groups: &Groups) -> Markup {
    let queued = list_url(kind, JobState::Queued);
    html! {
        section #groups {
            @match &listing.group {
                Some(g) => p { "Jobs of group " code { (g) } " only. " a href=(queued) { "All ungrouped jobs" } },
                None => @if !groups.items.is_empty() {
                    p { "Jobs waiting in a group are listed per group:" }
                },
            }
            @if !groups.items.is_empty() {
                table #group-list {
                    thead { tr { th { "group" } th { "waiting" } th { "high" } th { "normal" } th { "low" } } }
                    tbody {
                        @for g in &groups.items {
                            tr {
                                td { a href=(format!("{queued}&group={}", urlencode(&g.group))) { code { (g.group) } } }
                                td { (g.waiting) } td { (g.high) } td { (g.normal) } td { (g.low) }
                            }
                        }
                    }
                }
                @if groups.more { p { "More groups wait than are shown; name one:" } }
            }
            form.inline #group-filter method="get" action="/jobs" {
                input type="hidden" name="kind" value=(kind.as_str());
                input type="hidden" name="state" value="queued";
                input type="text" name="group" placeholder="group" maxlength=(jobs::lanes::MAX_GROUP_LEN) value=(listing.group.as_deref().unwrap_or_default());
                button type="submit" { "Show group" }
            }
        }
    }
}

/// How long ago, roughly: `3m 12s`, `2h 5m`, `4d 1h`.
fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - since).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(format_time).unwrap_or_default()
}

/// The action forms a job in `state` offers an admin; nothing for others.
fn actions(session: &Session, id: &str, state: Option<JobState>) -> Markup {
    let Some(state) = state.filter(|_| session.role == Role::Admin) else { return html! {} };
    html! {
        @if state.cancellable() {
            form.inline method="post" action=(format!("/jobs/{id}/cancel")) onsubmit="return confirm('Cancel this job? It will never run.')" {
                input type="hidden" name="csrf" value=(session.csrf);
                button.danger.cancel type="submit" { "Cancel" }
            }
            " "
        }
        @if state.runnable_now() {
            form.inline method="post" action=(format!("/jobs/{id}/run")) {
                input type="hidden" name="csrf" value=(session.csrf);
                button.run type="submit" { "Run now" }
            }
        }
    }
}

/// The columns one state shows beside the id, each with its value of a job.
type Column = (&'static str, fn(&JobSummary) -> String);

fn columns(state: JobState) -> Vec<Column> {
    let attempts: Column = ("attempts", |j| format!("{} of {}", j.attempts, j.max_attempts));
    let created: Column = ("created", |j| format_time(j.created_at));
    let producer: Column = ("producer", |j| j.producer.clone());
    let mut out = vec![created];
    out.extend::<Vec<Column>>(match state {
        JobState::Queued => vec![("ready since", |j| format_time(j.run_at))],
        JobState::Scheduled => vec![("due", |j| format_time(j.run_at))],
        JobState::Retrying => {
            vec![
                ("next attempt", |j| format_time(j.run_at)),
                ("last error", |j| j.last_error.clone().unwrap_or_default()),
            ]
        }
        JobState::Running => vec![
            ("worker", |j| j.worker.clone().unwrap_or_default()),
            ("started", |j| when(j.started_at)),
            ("lease deadline", |j| when(j.lease_deadline)),
        ],
        JobState::Succeeded | JobState::Cancelled => vec![("finished", |j| when(j.finished_at))],
    });
    out.push(attempts);
    out.push(producer);
    out
}

fn tabs(kind: Kind, current: JobState, counts: &StateCounts) -> Markup {
    html! {
        nav.tabs {
            @for k in Kind::ALL {
                @if k == kind { strong { (k.as_str()) } } @else { a href=(list_url(k, current)) { (k.as_str()) } }
                " "
            }
        }
        nav.tabs #states {
            @for s in JobState::ALL {
                @let label = match counts.of(s) { Some(n) => format!("{s} ({n})"), None => s.to_string() };
                @if s == current { strong { (label) } } @else { a href=(list_url(kind, s)) { (label) } }
                " · "
            }
        }
    }
}

/// `/jobs?kind=&state=&cursor=&limit=`: one state's jobs of one kind, a page at a time.
pub async fn list_page(State(state): State<AppState>, session: Session, query: JobsQuery) -> Response {
    let listing = match query.parse(true) {
        Ok(l) => l,
        Err(problem) => return problem_page(&session, problem),
    };
    let browser = state.console.dead.browser();
    let (page_data, counts, oldest, groups) = match tokio::try_join!(
        listing.page(&state),
        async { browser.counts(listing.kind).await.map_err(|e| Problem::from(ActionError::from(e))) },
        async {
            if listing.state == JobState::Queued {
                browser.oldest_queued(listing.kind).await.map_err(|e| Problem::from(ActionError::from(e)))
            } else {
                Ok(None)
            }
        },
        async {
            if listing.state == JobState::Queued {
                browser.groups(listing.kind, PAGE_GROUPS).await.map_err(|e| Problem::from(ActionError::from(e)))
            } else {
                Ok(Groups { items: Vec::new(), more: false })
            }
        },
    ) {
        Ok(all) => all,
        Err(problem) => return problem_page(&session, problem),
    };
    let (kind, st) = (listing.kind, listing.state);
    let cols = columns(st);
    let now = Utc::now();
    html_response(page(
        &format!("Jobs · {} · {}", kind.as_str(), st),
        Some(&session),
        html! {
            (tabs(kind, st, &counts))
            @if st == JobState::Queued {
                p #latency { @match oldest {
                    Some(t) => { "Oldest queued job ready for " strong { (age(t, now)) } " (since " (format_time(t)) "): the queue's latency." }
                    None => { "Nothing queued: no latency." }
                } }
                (groups_section(kind, &listing, &groups))
            }
            @if session.role == Role::Admin && st.cancellable() && jobs::control::operator_may_cancel(kind) && counts.of(st).unwrap_or(0) > 0 {
                form.inline #bulk-cancel method="post" action="/jobs/bulk-cancel" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="kind" value=(kind.as_str());
                    input type="hidden" name="state" value=(st.as_str());
                    button.danger type="submit" { "Cancel all " (st) " " (kind.as_str()) " jobs…" }
                }
            }
            table #jobs {
                thead { tr { th { "job" } @for (name, _) in &cols { th { (name) } } @if session.role == Role::Admin { th { "actions" } } } }
                tbody {
                    @for job in &page_data.items {
                        tr {
                            td { a href=(format!("/jobs/{}", job.id)) { code { (job.id) } } }
                            @for (name, value) in &cols { td.err[*name == "last error"] { (value(job)) } }
                            @if session.role == Role::Admin { td { (actions(&session, &job.id, Some(st))) } }
                        }
                    }
                }
            }
            @if page_data.items.is_empty() { p { "No " (st) " " (kind.as_str()) " jobs on this page." } }
            @if let Some(next) = &page_data.next_cursor {
                p { a #next href=(format!("{}&limit={}&cursor={}", listing_url(&listing), listing.limit, urlencode(next))) { "Next page →" } }
            }
        },
    ))
}

/// `/jobs/{id}`: one job, any state, with its attempts.
pub async fn detail_page(
    State(state): State<AppState>,
    session: Session,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(id)) = id else { return problem_page(&session, no_job()) };
    let job = match state.console.dead.browser().job(&id).await {
        Ok(Some(job)) => job,
        Ok(None) => return problem_page(&session, no_job()),
        Err(e) => return problem_page(&session, ActionError::from(e).into()),
    };
    let s = &job.summary;
    let listed = JobState::of(s.status);
    let payload = job.payload.as_ref().map(|p| serde_json::to_string_pretty(p).unwrap_or_default());
    html_response(page(
        &format!("Job {id}"),
        Some(&session),
        html! {
            table #job {
                tr { th { "kind" } td { (s.kind.as_str()) } }
                tr { th { "status" } td #status { (s.status.as_str()) @if let Some(r) = job.reason { " (" (r) ")" } } }
                tr { th { "attempts" } td { (s.attempts) " of " (s.max_attempts) } }
                tr { th { "producer" } td { (s.producer) } }
                tr { th { "created" } td { (format_time(s.created_at)) } }
                tr { th { "run at" } td { (format_time(s.run_at)) } }
                @if let Some(w) = &s.worker { tr { th { "worker" } td { (w) } } }
                @if let Some(t) = s.started_at { tr { th { "started" } td { (format_time(t)) } } }
                @if let Some(t) = s.lease_deadline { tr { th { "lease deadline" } td { (format_time(t)) } } }
                @if let Some(t) = s.finished_at { tr { th { "finished" } td { (format_time(t)) } } }
                @if let Some(t) = job.dead_at { tr { th { "died" } td { (format_time(t)) } } }
                @if let Some(p) = job.priority { tr { th { "priority" } td { (p.as_str()) } } }
                @if let Some(g) = &job.group { tr { th { "group" } td { code { (g) } } } }
                @if let Some(key) = &job.idempotency_key { tr { th { "idempotency key" } td { code { (key) } } } }
                @if let Some(e) = &s.last_error { tr { th { "last error" } td.err { (e) } } }
                @if let Some(d) = &job.delivery {
                    tr { th { "delivery" } td #delivery { (d.status.as_str()) " · " (format_time(d.at)) @if let Some(detail) = &d.detail { " · " (detail) } } }
                }
            }
            @if let Some(listed) = listed { p { a href=(list_url(s.kind, listed)) { "All " (listed) " " (s.kind.as_str()) " jobs" } } }
            @else { p { a href=(format!("/dead/{id}")) { "See it among the dead letters" } } }
            h2 { "Payload" }
            @match &payload {
                Some(p) => { pre #payload { (p) } }
                None => { p { "Not kept: a job's payload is dropped once it has succeeded." } }
            }
            h2 { "Attempts" }
            @if job.history.is_empty() { p { "No finished attempt yet." } }
            ol.timeline {
                @for a in &job.history {
                    li { strong { "attempt " (a.attempt) } " · " (crate::pages::format_millis(a.started_at)) " → " (crate::pages::format_millis(a.finished_at)) " · " (a.worker)
                        @if let Some(e) = &a.error { br; span.err { (e) } } }
                }
            }
            @if !job.notes.is_empty() { h2 { "Operator actions" } ul { @for n in &job.notes { li { (crate::pages::format_note(n)) } } } }
            @if session.role == Role::Admin && listed.is_some_and(|l| l.cancellable() || l.runnable_now()) {
                h2 { "Actions" }
                (actions(&session, &id, listed))
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> JobsQuery {
        let get = |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned());
        JobsQuery {
            kind: get("kind"),
            state: get("state"),
            group: get("group"),
            cursor: get("cursor"),
            limit: get("limit"),
        }
    }

    fn fields(problem: &Problem) -> Vec<String> {
        problem
            .member("errors")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_bad_query_is_400_naming_each_field() {
        let bad = query(&[("kind", "fax"), ("state", "dead"), ("limit", "501")]).parse(false).unwrap_err();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert_eq!(fields(&bad), ["kind", "state", "limit"]);
        let bad = query(&[("kind", "email"), ("state", "scheduled"), ("cursor", "12")]).parse(false).unwrap_err();
        assert_eq!(fields(&bad), ["cursor"]);
        assert_eq!(fields(&query(&[]).parse(false).unwrap_err()), ["kind", "state"]);
        let ok = query(&[]).parse(true).unwrap();
        assert_eq!((ok.state, ok.limit), (JobState::Queued, DEFAULT_LIMIT));
        let ok = query(&[("kind", "email"), ("state", "queued"), ("cursor", "3:abc"), ("limit", "500")])
            .parse(false)
            .unwrap();
        assert_eq!(ok.cursor, Some(Cursor::List { index: 3, id: "abc".into() }));
        let ok = query(&[("kind", "email"), ("state", "queued"), ("group", "acme")]).parse(false).unwrap();
        assert_eq!(ok.group.as_deref(), Some("acme"));
        let bad = query(&[("kind", "email"), ("state", "queued"), ("group", "a b")]).parse(false).unwrap_err();
        assert_eq!(fields(&bad), ["group"]);
        let bad = query(&[("kind", "email"), ("state", "running"), ("group", "acme")]).parse(false).unwrap_err();
        assert_eq!(fields(&bad), ["group"]);
    }

    #[test]
    fn ages_read_at_a_glance() {
        let now = Utc::now();
        assert_eq!(age(now - chrono::Duration::seconds(192), now), "3m 12s");
        assert_eq!(age(now - chrono::Duration::seconds(7500), now), "2h 5m");
        assert_eq!(age(now + chrono::Duration::seconds(5), now), "0s");
    }
}
