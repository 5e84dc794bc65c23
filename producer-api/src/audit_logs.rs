//! `GET /v1/audit-logs`: one tenant's audit events, newest first, keyset-paginated on
//! `(occurred_at, event_id)` so a page costs the same however deep it is, and events written
//! while a reader pages through never shift or repeat its pages.

use axum::Json;
use axum::extract::{RawQuery, State};
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
use crate::problem::{ApiError, ProblemDoc};

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

/// At most this many parameters: the endpoint has seven, so anything longer is not a query
/// this API documents, and is refused before it costs more than a count.
pub const MAX_PARAMETERS: usize = 64;
/// At most this many bytes of query string (a cursor is under 64, a value at most 256 characters).
pub const MAX_QUERY_BYTES: usize = 8 * 1024;
/// Text parameters are at most this many characters (the longest column allows 256).
const MAX_TEXT: usize = 256;

/// The parameters, in the order the documentation lists them.
const NAMES: [&str; 7] = ["tenant_id", "action", "actor", "from", "to", "limit", "cursor"];

/// The first and last instants PostgreSQL's `timestamptz` and this API both take: RFC 3339's
/// four-digit years.
fn in_range(at: DateTime<Utc>) -> bool {
    (1..=9999).contains(&chrono::Datelike::year(&at))
}

impl Filter {
    /// Checks the raw query string in one pass: every pair is looked at once, so the cost is
    /// linear in its length, and a query over [`MAX_QUERY_BYTES`] or [`MAX_PARAMETERS`] is
    /// refused before its pairs are decoded.
    fn parse(raw: &str) -> Result<Self, Vec<FieldError>> {
        if raw.len() > MAX_QUERY_BYTES {
            return Err(vec![FieldError::new("query", format!("is longer than {MAX_QUERY_BYTES} bytes"))]);
        }
        let count = raw.split('&').filter(|p| !p.is_empty()).count();
        if count > MAX_PARAMETERS {
            return Err(vec![FieldError::new(
                "query",
                format!(
                    "has {count} parameters; at most {MAX_PARAMETERS} are taken (tenant_id, action, actor, from, to, limit, cursor, each once)"
                ),
            )]);
        }
        let mut errors = Vec::new();
        let mut filter = Filter { limit: DEFAULT_LIMIT, ..Filter::default() };
        let mut seen = [false; NAMES.len()];
        for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            let Some(index) = NAMES.iter().position(|n| *n == name) else {
                errors.push(FieldError::new(
                    printable(&name),
                    "is not a parameter of this endpoint (tenant_id, action, actor, from, to, limit, cursor)",
                ));
                continue;
            };
            let name = NAMES[index];
            if std::mem::replace(&mut seen[index], true) {
                errors.push(FieldError::new(name, "is given more than once"));
                continue;
            }
            if let Err(message) = filter.set(name, &value) {
                errors.push(FieldError::new(name, message));
            }
        }
        if !seen[0] {
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

    /// Takes one parameter's value, or says what is wrong with it.
    fn set(&mut self, name: &str, value: &str) -> Result<(), &'static str> {
        match name {
            "tenant_id" | "action" | "actor" => {
                if value.is_empty() || value.chars().count() > MAX_TEXT {
                    return Err("must be 1 to 256 characters");
                }
                if value.chars().any(char::is_control) {
                    return Err("must not hold control characters (such as NUL or a line break)");
                }
                let value = value.to_owned();
                match name {
                    "tenant_id" => self.tenant_id = value,
                    "action" => self.action = Some(value),
                    _ => self.actor = Some(value),
                }
            }
            "from" | "to" => {
                let at = DateTime::parse_from_rfc3339(value)
                    .map(|at| at.with_timezone(&Utc))
                    .ok()
                    .filter(|at| in_range(*at))
                    .ok_or("must be an RFC 3339 time between years 0001 and 9999, such as 2026-11-21T09:00:00Z")?;
                if name == "from" {
                    self.from = Some(at);
                } else {
                    self.to = Some(at);
                }
            }
            "limit" => match value.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => self.limit = n,
                _ => return Err("must be a whole number from 1 to 1000"),
            },
            _ => self.after = Some(decode_cursor(value).ok_or("is not a cursor this API returned")?),
        }
        Ok(())
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
    if cursor.len() > 128 {
        return None;
    }
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (micros, id) = text.split_once(',')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?).filter(|at| in_range(*at))?;
    Some((at, id.parse().ok()?))
}

/// An unknown parameter's name as an error names it: control characters escaped, at most 64
/// characters, so the answer stays readable and small.
fn printable(name: &str) -> String {
    let mut shown: String = name.chars().take(64).flat_map(char::escape_default).collect();
    if name.chars().count() > 64 {
        shown.push('…');
    }
    shown
}

#[utoipa::path(get, path = "/v1/audit-logs", tag = "audit logs", params(AuditQueryDoc),
    responses(
        (status = 200, description = "A page of events, newest first", body = AuditPage),
        (status = 401, description = "Missing or unknown API key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is missing, repeated, unknown or invalid (control characters, lengths, times, limit, cursor), or the query has over 64 parameters or 8 KiB; `errors` names it", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "PostgreSQL unreachable, overloaded or not migrated yet (header `Retry-After`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _producer: Producer,
    RawQuery(raw): RawQuery,
) -> Result<Json<AuditPage>, ApiError> {
    let filter = Filter::parse(raw.as_deref().unwrap_or_default()).map_err(ApiError::Validation)?;
    // The server ends a statement after `STATEMENT_TIMEOUT`; this bounds the wait when the
    // server or the network stops answering at all.
    let mut items: Vec<AuditEvent> =
        tokio::time::timeout(db::QUERY_DEADLINE, filter.query().build_query_as().fetch_all(&state.db))
            .await
            .unwrap_or_else(|_| Err(db::no_answer()))
            .map_err(|e| ApiError::from_database(&e))?;
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

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let at = DateTime::from_timestamp_micros(1_763_712_000_123_456).unwrap();
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(at, id)), Some((at, id)));
        assert_eq!(decode_cursor("bm9wZQ"), None);
        assert_eq!(decode_cursor("!!"), None);
        // A time PostgreSQL cannot hold (year -200000) is not a cursor this API returned.
        let far = URL_SAFE_NO_PAD.encode(format!("{},{id}", -6_400_000_000_000_000_000_i64));
        assert_eq!(decode_cursor(&far), None);
    }

    fn fields(query: &str) -> Vec<(String, String)> {
        Filter::parse(query).unwrap_err().into_iter().map(|e| (e.field, e.message)).collect()
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let names: Vec<String> = fields("limit=0&from=yesterday&colour=red").into_iter().map(|(f, _)| f).collect();
        assert_eq!(names, ["colour", "from", "limit", "tenant_id"]);
        let errors = fields("tenant_id=t&from=2026-11-21T10:00:00Z&to=2026-11-21T09:00:00Z");
        assert_eq!(errors[0].0, "to");
        let filter = Filter::parse("tenant_id=t&limit=1000").unwrap();
        assert_eq!((filter.tenant_id.as_str(), filter.limit), ("t", 1000));
        assert_eq!(Filter::parse("tenant_id=a%20b").unwrap().tenant_id, "a b");
    }

    #[test]
    fn a_repeated_parameter_is_named_once() {
        assert_eq!(fields("tenant_id=t&tenant_id=u"), [("tenant_id".to_owned(), "is given more than once".to_owned())]);
        let errors = fields("tenant_id=t&limit=5&actor=a&limit=6&limit=7");
        assert_eq!(errors, [("limit".to_owned(), "is given more than once".to_owned())]);
    }

    #[test]
    fn control_characters_and_long_values_are_refused_before_the_database() {
        for query in ["tenant_id=%00", "tenant_id=t&actor=a%0Ab", "tenant_id=t&action=%7F", "tenant_id=t%1B"] {
            let errors = fields(query);
            assert_eq!(errors.len(), 1, "{query}: {errors:?}");
            assert!(errors[0].1.contains("control characters"), "{query}: {errors:?}");
        }
        let long = "é".repeat(257);
        assert_eq!(fields(&format!("tenant_id={long}"))[0].0, "tenant_id");
        assert!(Filter::parse(&format!("tenant_id={}", "é".repeat(256))).is_ok());
        assert_eq!(fields("tenant_id=t&from=0000-01-01T00:00:00Z")[0].0, "from");
        assert_eq!(fields("%00=1&tenant_id=t")[0].0, "\\u{0}");
    }

    #[test]
    fn huge_queries_are_refused_whole_and_in_linear_time() {
        let many = "tenant_id=t&".repeat(65);
        assert_eq!(fields(&many)[0].0, "query");
        let long = format!("tenant_id={}", "a".repeat(MAX_QUERY_BYTES));
        assert_eq!(fields(&long)[0].0, "query");
        let started = std::time::Instant::now();
        assert_eq!(fields(&"limit=1&".repeat(100_000))[0].0, "query");
        assert_eq!(fields(&(0..100_000).map(|i| format!("{i:x}")).collect::<Vec<_>>().join("&"))[0].0, "query");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
        // 64 parameters are still read, each once: the repeats are named, not quadratically.
        let errors = fields(&"limit=1&".repeat(64));
        assert_eq!(errors.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), ["limit", "tenant_id"]);
    }
}
