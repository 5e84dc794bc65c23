//! `GET /v1/audit-logs`: one tenant's audit events, newest first, keyset-paginated on
//! `(occurred_at, event_id)` so a page costs the same however deep it is, and events written
//! while a reader pages through never shift or repeat its pages.

use axum::Json;
use axum::extract::{Query, State};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jobs::FieldError;
use serde::Serialize;
use sqlx::{FromRow, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Producer;
use crate::problem::{ApiError, Problem};

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

/// The query string (documentation; the handler reads and checks the raw pairs).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "documentation only")]
pub struct AuditQueryDoc {
    /// Required: whose events.
    tenant_id: String,
    /// Only this action, such as `invoice.paid`.
    action: Option<String>,
    /// Only this actor.
    actor: Option<String>,
    /// RFC 3339; events that occurred at or after it.
    from: Option<DateTime<Utc>>,
    /// RFC 3339; events that occurred before it.
    to: Option<DateTime<Utc>>,
    /// 1–1000, default 100.
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, FromRow, ToSchema)]
pub struct AuditEvent {
    pub event_id: Uuid,
    pub tenant_id: String,
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    #[schema(example = "203.0.113.7")]
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
    /// When a worker wrote it.
    pub recorded_at: DateTime<Utc>,
    /// The job that carried it.
    pub job_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub items: Vec<AuditEvent>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A checked query.
#[derive(Debug, Default, PartialEq)]
struct Filter {
    tenant_id: String,
    action: Option<String>,
    actor: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: i64,
    after: Option<(DateTime<Utc>, Uuid)>,
}

impl Filter {
    fn parse(pairs: &[(String, String)]) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut filter = Filter { limit: DEFAULT_LIMIT, ..Filter::default() };
        for (i, (name, value)) in pairs.iter().enumerate() {
            let mut fail = |message: &str| errors.push(FieldError::new(name.as_str(), message));
            match name.as_str() {
                _ if pairs[..i].iter().any(|(earlier, _)| earlier == name) => fail("is given more than once"),
                "tenant_id" | "action" | "actor" if value.is_empty() || value.len() > 256 => {
                    fail("must be 1 to 256 characters");
                }
                "tenant_id" => filter.tenant_id.clone_from(value),
                "action" => filter.action = Some(value.clone()),
                "actor" => filter.actor = Some(value.clone()),
                "from" | "to" => match DateTime::parse_from_rfc3339(value) {
                    Ok(at) if name == "from" => filter.from = Some(at.with_timezone(&Utc)),
                    Ok(at) => filter.to = Some(at.with_timezone(&Utc)),
                    Err(_) => fail("must be an RFC 3339 time, such as 2026-11-21T09:00:00Z"),
                },
                "limit" => match value.parse::<i64>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => filter.limit = n,
                    _ => fail("must be a whole number from 1 to 1000"),
                },
                "cursor" => match decode_cursor(value) {
                    Some(after) => filter.after = Some(after),
                    None => fail("is not a cursor this API returned"),
                },
                _ => fail("is not a parameter of this endpoint (tenant_id, action, actor, from, to, limit, cursor)"),
            }
        }
        if !pairs.iter().any(|(name, _)| name == "tenant_id") {
            errors.push(FieldError::new("tenant_id", "is required"));
        }
        if let (Some(from), Some(to)) = (filter.from, filter.to)
            && from >= to
        {
            errors.push(FieldError::new("to", "must be later than from"));
        }
        if errors.is_empty() {
            Ok(filter)
        } else {
            errors.sort_by(|a, b| a.field.cmp(&b.field));
            errors.dedup_by(|a, b| a.field == b.field && a.message == b.message);
            Err(errors)
        }
    }

    fn query(&self) -> QueryBuilder<'_, Postgres> {
        let mut q = QueryBuilder::new(
            "SELECT event_id, tenant_id, actor, action, resource_type, resource_id, host(ip) AS ip, user_agent, \
             metadata, occurred_at, recorded_at, job_id FROM audit_logs WHERE tenant_id = ",
        );
        q.push_bind(&self.tenant_id);
        if let Some(action) = &self.action {
            q.push(" AND action = ").push_bind(action);
        }
        if let Some(actor) = &self.actor {
            q.push(" AND actor = ").push_bind(actor);
        }
        if let Some(from) = self.from {
            q.push(" AND occurred_at >= ").push_bind(from);
        }
        if let Some(to) = self.to {
            q.push(" AND occurred_at < ").push_bind(to);
        }
        if let Some((at, id)) = self.after {
            q.push(" AND (occurred_at, event_id) < (").push_bind(at).push(", ").push_bind(id).push(")");
        }
        // One row more than asked tells whether there is a next page.
        q.push(" ORDER BY occurred_at DESC, event_id DESC LIMIT ").push_bind(self.limit + 1);
        q
    }
}

fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{},{id}", at.timestamp_micros()))
}

fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (micros, id) = text.split_once(',')?;
    Some((DateTime::from_timestamp_micros(micros.parse().ok()?)?, id.parse().ok()?))
}

#[utoipa::path(get, path = "/v1/audit-logs", tag = "audit logs", params(AuditQueryDoc),
    responses(
        (status = 200, description = "A page of events, newest first", body = AuditPage),
        (status = 401, description = "Missing or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is missing or invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "PostgreSQL unreachable (header `Retry-After`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _producer: Producer,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<AuditPage>, ApiError> {
    let filter = Filter::parse(&pairs).map_err(ApiError::Validation)?;
    let mut items: Vec<AuditEvent> = filter.query().build_query_as().fetch_all(&state.db).await.map_err(|e| {
        tracing::warn!(error = %e, "audit-log query failed");
        ApiError::DatabaseUnavailable
    })?;
    let limit = usize::try_from(filter.limit).unwrap_or(usize::MAX);
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|last| encode_cursor(last.occurred_at, last.event_id))
    } else {
        None
    };
    Ok(Json(AuditPage { items, next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let at = DateTime::from_timestamp_micros(1_763_712_000_123_456).unwrap();
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(at, id)), Some((at, id)));
        assert_eq!(decode_cursor("bm9wZQ"), None);
        assert_eq!(decode_cursor("!!"), None);
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let errors = Filter::parse(&pairs(&[("limit", "0"), ("from", "yesterday"), ("colour", "red")])).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["colour", "from", "limit", "tenant_id"]);
        let errors = Filter::parse(&pairs(&[
            ("tenant_id", "t"),
            ("from", "2026-11-21T10:00:00Z"),
            ("to", "2026-11-21T09:00:00Z"),
        ]))
        .unwrap_err();
        assert_eq!(errors[0].field, "to");
        let filter = Filter::parse(&pairs(&[("tenant_id", "t"), ("limit", "1000")])).unwrap();
        assert_eq!((filter.tenant_id.as_str(), filter.limit), ("t", 1000));
        let errors = Filter::parse(&pairs(&[("tenant_id", "t"), ("tenant_id", "u")])).unwrap_err();
        assert_eq!((errors[0].field.as_str(), errors[0].message.as_str()), ("tenant_id", "is given more than once"));
    }
}
