//! `POST /v1/callbacks/twilio`: Twilio's message status callbacks.
//!
//! The worker gives Twilio `StatusCallback = CALLBACK_BASE_URL/v1/callbacks/twilio?job=<id>`
//! with each send, so the job travels in the URL, which the signature covers. Twilio signs
//! each callback (`X-Twilio-Signature`): base64 of HMAC-SHA1, keyed with the account's auth
//! token, over the full URL it called followed by every POST parameter sorted by name, each
//! name immediately followed by its value
//! (<https://www.twilio.com/docs/usage/security#validating-requests>). The URL is rebuilt
//! from `CALLBACK_BASE_URL` (what Twilio was told to call, whatever proxy sits in front) and the
//! request's path and query.
//!
//! `MessageStatus` `delivered` → `delivered`; `undelivered` and `failed` → `undelivered`, with
//! Twilio's `ErrorCode` as the detail; the intermediate statuses (`queued`, `sending`, `sent`,
//! `accepted`, ...) are acknowledged and dropped.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use base64::Engine;
use hmac::{Hmac, Mac};
use jobs::Kind;
use jobs::delivery::{Delivery, DeliveryStatus};
use secrecy::{ExposeSecret, SecretString};

use super::{ACCEPTED, Report, accept};
use crate::AppState;
use crate::problem::ApiError;

pub const PATH: &str = "/v1/callbacks/twilio";

/// A Twilio message status callback. Authenticated by `X-Twilio-Signature`; the job is named by
/// the `job` query parameter of the URL the worker gave Twilio.
#[utoipa::path(post, path = "/v1/callbacks/twilio", tag = "callbacks",
    params(("job" = Option<String>, Query, description = "The job id, as the worker put it in the StatusCallback URL"),
        ("X-Twilio-Signature" = String, Header, description = "Twilio's signature of the URL and the parameters")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
        description = "Twilio's status callback parameters (MessageSid, MessageStatus, ErrorCode, ...)"),
    responses(
        (status = 204, description = "Authentic: taken (a report for an unknown job is dropped, and answered the same)"),
        (status = 403, description = "The signature is missing or wrong, or TWILIO_AUTH_TOKEN / CALLBACK_BASE_URL is not set", body = crate::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = crate::problem::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Redis unreachable, or authentic callbacks over CALLBACK_RATE_LIMIT_PER_SECOND (header `Retry-After`)", body = crate::problem::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn report(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let (Some(token), Some(base)) = (&state.callbacks.twilio_token, state.callbacks.settings.base_url()) else {
        return Err(ApiError::CallbackForbidden);
    };
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let url = match uri.query() {
        Some(query) => format!("{base}{}?{query}", uri.path()),
        None => format!("{base}{}", uri.path()),
    };
    let presented = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !signature_matches(token, &url, &params, presented) {
        return Err(ApiError::CallbackForbidden);
    }
    super::admit(&state)?;
    let field = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let status = match field("MessageStatus") {
        Some("delivered") => DeliveryStatus::Delivered,
        Some("undelivered" | "failed") => DeliveryStatus::Undelivered,
        _ => return Ok(ACCEPTED),
    };
    let job_id = uri
        .query()
        .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "job").map(|(_, v)| v.into_owned()))
        .unwrap_or_default();
    let now = chrono::Utc::now();
    let delivery = match field("ErrorCode").filter(|c| !c.is_empty()) {
        Some(code) => Delivery::coded(status, now, code, None),
        None => Delivery::new(status, now, None),
    };
    let report = Report { provider: "twilio", kind: Kind::OtpSms, job_id, delivery };
    accept(&state, &report).await?;
    super::sms_rows::record(&state.db, "twilio", &report.job_id, &report.delivery);
    Ok(ACCEPTED)
}

/// Twilio's signature of a callback: base64(HMAC-SHA1(token, url + sorted name+value pairs)).
pub fn signature(token: &SecretString, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `presented` is the signature, compared in constant time.
fn signature_matches(token: &SecretString, url: &str, params: &[(String, String)], presented: &str) -> bool {
    let expected = signature(token, url, params);
    !presented.is_empty() && subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), presented.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Twilio's own example (docs, "Validating requests"): this token, URL and parameters
    /// sign to this value.
    #[test]
    fn the_signature_is_twilios() {
        let token = SecretString::from("12345");
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(signature(&token, url, &params), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(signature_matches(&token, url, &params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
        assert!(!signature_matches(&token, url, &params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ"));
        assert!(!signature_matches(&token, url, &params, ""));
    }
}
