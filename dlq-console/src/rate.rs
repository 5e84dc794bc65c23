//! A kind's rate limit, set by operators at run time (JSON API, the overview's form, CLI) over
//! the workers' `RATE_LIMIT_<KIND>` (`jobs::rate`): the console's value stands from then on,
//! its removal too. Each change goes to the audit log as `queue.rate_limit` (resource `queue`,
//! id the kind); read-only operators are refused.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use jobs::Kind;
use jobs::rate::{RateLimit, RateView};
use jobs::validation::FieldError;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};
use service::Problem;
use service::csrf::CsrfForm;

use crate::AppState;
use crate::actions::{ActionError, Console};
use crate::api::{Operator, QueueView, queue_view};
use crate::config::Role;
use crate::fleet::kind_of;
use crate::pages::{Session, problem_page};

impl Console {
    /// Sets `kind`'s limit (`None`: no limit), in force from each worker's next fetch.
    pub async fn set_rate_limit(
        &self,
        operator: &str,
        kind: Kind,
        limit: Option<RateLimit>,
    ) -> Result<(), ActionError> {
        self.rates.put(kind, limit, operator).await?;
        let detail = json!({"kind": kind, "per_second": limit.map(|l| l.per_second), "burst": limit.map(|l| l.burst)});
        self.record_on(operator, "queue.rate_limit", "queue", Some(kind.as_str()), detail).await;
        Ok(())
    }

    /// `kind`'s limit and any provider throttle in force.
    pub async fn rate_limit(&self, kind: Kind) -> Result<RateView, ActionError> {
        Ok(self.rates.view(kind, Utc::now()).await?)
    }
}

/// A body field: absent or `null` is `None`; otherwise a whole number, or the error naming it.
fn whole(body: &serde_json::Map<String, Value>, field: &str) -> Result<Option<u32>, FieldError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| FieldError::new(format!("/{field}"), "must be a whole number or null")),
    }
}

/// `{"per_second": n, "burst": n}` read: `per_second` `null` (or absent) removes the limit,
/// `burst` `null` takes the default (one second's worth).
pub fn limit_of(body: &Value) -> Result<Option<RateLimit>, Problem> {
    let invalid = |e: FieldError| Problem::invalid(&[e]);
    let Some(body) = body.as_object() else {
        return Err(invalid(FieldError::new("/", "must be an object {\"per_second\", \"burst\"}")));
    };
    if let Some(other) = body.keys().find(|k| !matches!(k.as_str(), "per_second" | "burst")) {
        return Err(invalid(FieldError::new(format!("/{other}"), "is not a field of a rate limit")));
    }
    let (per_second, burst) = (whole(body, "per_second").map_err(invalid)?, whole(body, "burst").map_err(invalid)?);
    match per_second {
        None if burst.is_some() => {
            Err(invalid(FieldError::new("/burst", "needs per_second (a null per_second removes the limit)")))
        }
        None => Ok(None),
        Some(n) => {
            RateLimit::new(n, burst).map(Some).map_err(|e| invalid(FieldError::new(format!("/{}", e.field), e.problem)))
        }
    }
}

/// `PUT /api/queues/{kind}/rate-limit` `{"per_second", "burst"}` → the queue's view.
pub async fn api_put(
    State(state): State<AppState>,
    op: Operator,
    Path(kind): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<QueueView>, Problem> {
    let kind = kind_of(&kind)?;
    op.may_act()?;
    let limit = limit_of(&body)?;
    state.console.set_rate_limit(&op.name, kind, limit).await?;
    Ok(Json(queue_view(&state, kind, Utc::now()).await?))
}

/// The overview's form: empty `per_second` removes the limit, empty `burst` takes the default.
#[derive(Debug, Deserialize)]
pub struct RateForm {
    #[serde(default)]
    per_second: String,
    #[serde(default)]
    burst: String,
}

impl RateForm {
    fn body(&self) -> Value {
        let field = |raw: &str| match raw.trim() {
            "" => Value::Null,
            raw => raw.parse::<u64>().map_or_else(|_| Value::String(raw.to_owned()), Value::from),
        };
        json!({"per_second": field(&self.per_second), "burst": field(&self.burst)})
    }
}

/// `POST /queues/{kind}/rate-limit`: the overview's form.
pub async fn page_put(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    CsrfForm { session, form }: CsrfForm<Session, RateForm>,
) -> Response {
    if let Err(refused) = session.may_act() {
        return refused;
    }
    let done = async {
        let kind = kind_of(&kind)?;
        let limit = limit_of(&form.body())?;
        state.console.set_rate_limit(&session.operator, kind, limit).await.map_err(Problem::from)
    };
    match done.await {
        Ok(()) => Redirect::to("/").into_response(),
        Err(problem) => problem_page(&session, problem),
    }
}

/// The overview's "rate limit" cell: the limit in force and any throttle, and for an admin the
/// form that changes it.
pub fn rate_cell(session: &Session, queue: &QueueView) -> Markup {
    let kind = queue.kind.as_str();
    let rate = &queue.rate_limit;
    html! {
        @match (rate.per_second, rate.burst) {
            (Some(ps), Some(burst)) => span.rate title=(format!("set by {}", rate.set_by.as_deref().unwrap_or("?"))) { (ps) "/s, burst " (burst) },
            _ => span.rate { "none" },
        }
        @if let Some(effective) = rate.effective_per_second.filter(|e| Some(*e) != rate.per_second.map(f64::from)) {
            " " span.throttled { (format!("slowed to {effective:.1}/s")) }
        }
        @if let Some(until) = rate.throttled_until {
            " " span.throttled { "throttled until " (crate::pages::format_time(until)) }
        }
        @if session.role == Role::Admin {
            form.inline method="post" action=(format!("/queues/{kind}/rate-limit")) {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="number" name="per_second" min="1" max=(jobs::rate::MAX_PER_SECOND) size="5" placeholder="per s"
                    aria-label="per second (empty: none)" value=[rate.per_second];
                input type="number" name="burst" min="1" max=(jobs::rate::MAX_BURST) size="5" placeholder="burst"
                    aria-label="burst (empty: one second's worth)" value=[rate.burst];
                button type="submit" id=(format!("rate-{kind}")) { "Set" }
            }
        }
    }
}

/// One line for the CLI: the limit, who set it, and any throttle.
pub fn describe(view: &RateView) -> String {
    let mut parts = vec![match (view.per_second, view.burst) {
        (Some(ps), Some(burst)) => format!("{ps}/s, burst {burst}"),
        _ => "no rate limit".to_owned(),
    }];
    if let Some(source) = view.source {
        let source = match source {
            jobs::rate::Source::Setting => "RATE_LIMIT setting",
            jobs::rate::Source::Console => "console",
        };
        parts.push(format!("set by {} ({source})", view.set_by.as_deref().unwrap_or("?")));
    }
    if let Some(effective) = view.effective_per_second.filter(|e| Some(*e) != view.per_second.map(f64::from)) {
        parts.push(format!("slowed by the provider to {effective:.1}/s"));
    }
    if let Some(until) = view.throttled_until {
        parts.push(format!("throttled until {}", crate::pages::format_time(until)));
    }
    parts.join("; ")
}
