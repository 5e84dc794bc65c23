//! `GET|POST /v1/callbacks/mitake?secret=<CALLBACK_SECRET>&job=<id>&…`: Mitake's delivery
//! reports.
//!
//! Mitake does not sign its reports, so the URL the worker gives it with each send (`response`)
//! carries `CALLBACK_SECRET`, compared here in constant time, and the job id (`job`; Mitake's
//! own `clientid` is the job id too, and is read when `job` is absent). Mitake calls that URL
//! with its report's fields appended: `msgid`, `dstaddr`, `dlvtime` and `donetime`
//! (`YYYYMMDDHHMMSS`, Taiwan time), `statusstr` (`DELIVRD`, `UNDELIV`, `EXPIRED`, `REJECTD`,
//! …), `statuscode` and `StatusFlag`; they may come in the query (GET) or a form body (POST).
//!
//! `StatusFlag` (Mitake's table of message states): `4` delivered to the handset →
//! `delivered`; `5` bad content, `6` bad number, `7` SMS disabled, `8` expired undelivered →
//! `undelivered`; `0`, `1`, `2` (scheduled, at the carrier) and `9` (a scheduled send cancelled)
//! are not final and are dropped. Without `StatusFlag`, `statusstr` decides: `DELIVRD` →
//! `delivered`; `UNDELIV`, `EXPIRED`, `REJECTD`, `DELETED` → `undelivered`. The detail is
//! `statusstr` (or the flag). `donetime` is when it happened.
//!
//! The answer to an authentic report is Mitake's acknowledgement,
//! `magicid=sms_gateway_rpack` and `msgid=<msgid>` lines, whether or not the job exists.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use jobs::Kind;
use jobs::delivery::{Delivery, DeliveryStatus};

use super::{Report, accept};
use crate::AppState;
use crate::problem::ApiError;

/// Taiwan's offset from UTC (no daylight saving time), in which Mitake states its times.
const TAIWAN_OFFSET_SECONDS: i32 = 8 * 3600;

/// A Mitake delivery report. Authenticated by `secret` (CALLBACK_SECRET); answered alike
/// whether or not the job exists.
#[utoipa::path(get, path = "/v1/callbacks/mitake", tag = "callbacks",
    params(("secret" = String, Query, description = "CALLBACK_SECRET, as the worker put it in the report URL"),
        ("job" = Option<String>, Query, description = "The job id, as the worker put it in the report URL"),
        ("msgid" = Option<String>, Query, description = "Mitake's message id"),
        ("StatusFlag" = Option<String>, Query, description = "Mitake's message state: 4 delivered; 5, 6, 7, 8 not delivered"),
        ("statusstr" = Option<String>, Query, description = "DELIVRD, UNDELIV, EXPIRED, REJECTD, ..."),
        ("donetime" = Option<String>, Query, description = "When it ended, YYYYMMDDHHMMSS, Taiwan time")),
    responses(
        (status = 200, description = "Authentic: acknowledged as Mitake expects (a report for an unknown job is dropped, and answered the same)", body = String, content_type = "text/plain"),
        (status = 403, description = "The secret is missing or wrong, or CALLBACK_SECRET is not set", body = crate::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = crate::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Redis unreachable, or authentic callbacks over CALLBACK_RATE_LIMIT_PER_SECOND (header `Retry-After`): Mitake retries", body = crate::problem::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn report(State(state): State<AppState>, uri: Uri, body: Bytes) -> Result<Response, ApiError> {
    let mut params: Vec<(String, String)> =
        uri.query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    params.extend(url::form_urlencoded::parse(&body).into_owned());
    let field = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if !state.callbacks.settings.secret_matches(field("secret").unwrap_or("")) {
        return Err(ApiError::CallbackForbidden);
    }
    super::admit(&state)?;
    let msgid: String = field("msgid").unwrap_or("").chars().filter(char::is_ascii_alphanumeric).take(64).collect();
    if let Some(status) = status(field("StatusFlag"), field("statusstr")) {
        let at = field("donetime").and_then(taiwan_time).unwrap_or_else(Utc::now);
        let code = field("statusstr").filter(|s| !s.is_empty()).or(field("StatusFlag")).unwrap_or("");
        let delivery = Delivery::coded(status, at, code, None);
        let job_id = field("job").or(field("clientid")).unwrap_or("").to_owned();
        let report = Report { provider: "mitake", kind: Kind::OtpSms, job_id, delivery };
        accept(&state, &report).await?;
        super::sms_rows::record(&state.db, "mitake", &report.job_id, &report.delivery);
    }
    let ack = format!("magicid=sms_gateway_rpack\nmsgid={msgid}\n");
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], ack).into_response())
}

/// The final state a report names, if it names one; see the module's documentation.
fn status(flag: Option<&str>, text: Option<&str>) -> Option<DeliveryStatus> {
    match flag.map(str::trim) {
        Some("4") => Some(DeliveryStatus::Delivered),
        Some("5" | "6" | "7" | "8") => Some(DeliveryStatus::Undelivered),
        Some(flag) if !flag.is_empty() => None,
        _ => match text.map(|t| t.trim().to_ascii_uppercase()).as_deref() {
            Some("DELIVRD") => Some(DeliveryStatus::Delivered),
            Some("UNDELIV" | "EXPIRED" | "REJECTD" | "DELETED") => Some(DeliveryStatus::Undelivered),
            _ => None,
        },
    }
}

/// `YYYYMMDDHHMMSS` in Taiwan time.
fn taiwan_time(text: &str) -> Option<DateTime<Utc>> {
    let local = NaiveDateTime::parse_from_str(text.trim(), "%Y%m%d%H%M%S").ok()?;
    let offset = chrono::FixedOffset::east_opt(TAIWAN_OFFSET_SECONDS)?;
    Some(local.and_local_timezone(offset).single()?.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_texts_map_to_final_states_only() {
        assert_eq!(status(Some("4"), Some("DELIVRD")), Some(DeliveryStatus::Delivered));
        assert_eq!(status(Some("6"), None), Some(DeliveryStatus::Undelivered));
        assert_eq!(status(Some("1"), Some("DELIVRD")), None, "the flag decides when present");
        assert_eq!(status(None, Some("expired")), Some(DeliveryStatus::Undelivered));
        assert_eq!(status(None, Some("ACCEPTD")), None);
        assert_eq!(status(None, None), None);
    }

    #[test]
    fn times_are_taiwans() {
        assert_eq!(taiwan_time("20261128110203").unwrap().to_rfc3339(), "2026-11-28T03:02:03+00:00");
        assert_eq!(taiwan_time("2026-11-28"), None);
    }
}
