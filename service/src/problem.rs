//! Errors as `application/problem+json` (RFC 9457), one shape for every process: `type`,
//! `title`, `status`, `detail`, and the members a problem type adds (`errors` naming each broken
//! rule, `limit`, `enqueued`). The types more than one process answers are constructors here, so
//! the producer API and the console give the same failure the same `type`; a process adds its
//! own types with [`Problem::new`]. Each process keeps its own error enum and maps it onto these.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// `Retry-After` of a full Redis: room comes back as memory is freed (workers drain, finished
/// jobs expire) or `maxmemory` is raised, which takes seconds at least, not the instant a
/// reconnect takes.
pub const QUEUE_FULL_RETRY_AFTER_SECONDS: u64 = 5;

/// An RFC 9457 problem document, and the response that carries it.
#[derive(Debug, Clone)]
pub struct Problem {
    kind: &'static str,
    title: &'static str,
    status: StatusCode,
    detail: String,
    /// Extension members (RFC 9457 §3.2), in the order they were added.
    members: Vec<(&'static str, Value)>,
    /// `Retry-After`; a `503` without one says 1 s.
    retry_after_seconds: Option<u64>,
}

impl Problem {
    /// A problem of a type of the caller's: `kind` is its `type` URI (`/problems/<name>`), which
    /// clients may match on, `title` its fixed summary, `detail` this occurrence.
    pub fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self { kind, title, status, detail: detail.into(), members: Vec::new(), retry_after_seconds: None }
    }

    /// A problem with no type of its own (`about:blank`): its title is the status's reason
    /// phrase, as RFC 9457 asks. For answers nobody shaped (routing, extractor rejections).
    pub fn about_blank(status: StatusCode, detail: impl Into<String>) -> Self {
        Self::new(status, "about:blank", status.canonical_reason().unwrap_or("Error"), detail)
    }

    /// `401`, with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "/problems/unauthorized", "Unauthorized", detail)
    }

    /// `403`: authenticated, but not allowed this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "/problems/forbidden", "Forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "/problems/not-found", "Not found", detail)
    }

    /// `422`, naming every broken rule in `errors` (`[{"field": "/payload/to", "message": ...}]`).
    pub fn invalid<E: Serialize>(errors: &[E]) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation",
            "The request is not valid",
            format!("{} rule(s) broken", errors.len()),
        )
        .with("errors", errors)
    }

    /// `503`: a store did not answer; worth retrying shortly.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "/problems/unavailable", "Service unavailable", detail)
    }

    /// `503` with `Retry-After: 5`: Redis is at its `maxmemory` and refuses writes, an outage of
    /// capacity rather than a bug.
    pub fn queue_full(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "/problems/queue-full", "Queue store full", detail)
            .retry_after(QUEUE_FULL_RETRY_AFTER_SECONDS)
    }

    /// `500` with a generic detail: the cause goes to the log, here, and never to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(detail = %cause, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "/problems/internal", "Internal server error", "internal error")
    }

    /// Adds an extension member. A value that does not serialize (none of ours) becomes `null`.
    #[must_use]
    pub fn with(mut self, name: &'static str, value: impl Serialize) -> Self {
        self.members.push((name, serde_json::to_value(value).unwrap_or(Value::Null)));
        self
    }

    #[must_use]
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `type` URI.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// An extension member, such as `errors`.
    pub fn member(&self, name: &str) -> Option<&Value> {
        self.members.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The document alone, as a JSON object.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Map::new()))
    }
}

impl Serialize for Problem {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(4 + self.members.len()))?;
        map.serialize_entry("type", self.kind)?;
        map.serialize_entry("title", self.title)?;
        map.serialize_entry("status", &self.status.as_u16())?;
        map.serialize_entry("detail", &self.detail)?;
        for (name, value) in &self.members {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(&self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        let retry_after = self.retry_after_seconds.or((self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(1));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(problem: Problem) -> (StatusCode, axum::http::HeaderMap, Value) {
        let response = problem.into_response();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_problem_is_its_members_in_order_with_its_headers() {
        #[derive(serde::Serialize)]
        struct Broken {
            field: &'static str,
            message: &'static str,
        }
        let problem = Problem::invalid(&[Broken { field: "/payload/to", message: "must be a phone number" }])
            .with("limit", "otp_per_number");
        assert_eq!(problem.member("errors").unwrap()[0]["field"], "/payload/to");
        let (status, headers, body) = parts(problem).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert!(!headers.contains_key(header::RETRY_AFTER));
        let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 6);
        assert_eq!(
            (&body["type"], &body["title"], &body["status"], &body["detail"], &body["limit"]),
            (
                &Value::from("/problems/validation"),
                &Value::from("The request is not valid"),
                &Value::from(422),
                &Value::from("1 rule(s) broken"),
                &Value::from("otp_per_number"),
            )
        );
    }

    #[tokio::test]
    async fn unavailable_says_when_to_retry_and_unauthorized_which_scheme() {
        let (_, headers, _) = parts(Problem::unavailable("Redis did not answer")).await;
        assert_eq!(headers[header::RETRY_AFTER], "1");
        let (status, headers, body) = parts(Problem::queue_full("full")).await;
        assert_eq!((status, &headers[header::RETRY_AFTER]), (StatusCode::SERVICE_UNAVAILABLE, &HeaderValue::from(5)));
        assert_eq!(body["type"], "/problems/queue-full");
        let (_, headers, _) = parts(Problem::unauthorized("a key is required")).await;
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        let (status, _, body) = parts(Problem::internal("the secret cause")).await;
        assert_eq!((status, body["detail"].as_str()), (StatusCode::INTERNAL_SERVER_ERROR, Some("internal error")));
        let (_, _, body) = parts(Problem::about_blank(StatusCode::METHOD_NOT_ALLOWED, "no")).await;
        assert_eq!((body["type"].as_str(), body["title"].as_str()), (Some("about:blank"), Some("Method Not Allowed")));
    }
}
