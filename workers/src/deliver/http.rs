//! What every delivery over HTTP does alike (webhooks, the SMS providers): a client that
//! follows no redirect and bounds both the connection and the whole request; transport errors
//! that never name the URL (it may carry a token or an account id); and a failed answer turned
//! into a [`JobError`] with a short, one-line, redacted snippet of its body.

use std::time::Duration;

use reqwest::StatusCode;

use crate::outcome::JobError;

/// The most of a response body kept in an error text, in characters.
pub const BODY_SNIPPET: usize = 256;

/// The most of a failed response's body read. Larger than the snippet, so a secret that
/// straddles the end of what was read lies past the snippet and is cut off with it.
const BODY_READ: usize = 4096;

/// A client builder with no redirects, `timeout` for the whole request and at most 5 s of it
/// to connect.
///
/// It keeps reqwest's use of the environment's proxies (`HTTPS_PROXY`, `HTTP_PROXY`,
/// `ALL_PROXY`, `NO_PROXY`), which suits the SMS providers: they reach only the URLs an operator
/// set (`TWILIO_BASE_URL`, `SMS_HTTP_URL`). The webhook client, whose URLs come from producers,
/// turns them off (`no_proxy`), so that every host name goes through its SSRF guard.
pub fn client_builder(user_agent: &str, timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent)
}

/// reqwest's errors name the URL, which may carry a token in its query: keep the kind only.
pub fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "broken response"
    } else {
        "transport error"
    };
    match std::error::Error::source(e) {
        Some(source) => format!("{kind}: {source}"),
        None => kind.to_owned(),
    }
}

/// Retry, not sooner than `after` when the far side named a time.
pub fn retry(after: Option<Duration>, message: String) -> JobError {
    match after {
        Some(after) => JobError::RetryAfter { after, message },
        None => JobError::Retry(message),
    }
}

/// A response that was not a success: its status, its `Retry-After` and the start of its body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Answer {
    /// Reads the status, `Retry-After` and at most 4 KiB of the body (what arrived of it, if
    /// the body breaks off).
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let retry_after = super::retry_after(response.headers().get(reqwest::header::RETRY_AFTER));
        let body = match read_limited(response, BODY_READ).await {
            Ok(body) | Err(body) => body,
        };
        Self { status, retry_after, body }
    }

    /// `": <text>"`, one line of at most [`BODY_SNIPPET`] characters, each `(secret,
    /// replacement)` replaced first; `""` for an empty body.
    pub fn snippet(&self, redact: &[(&str, &str)]) -> String {
        snippet(&String::from_utf8_lossy(&self.body), redact)
    }

    /// `HTTP <status>: <snippet>`.
    pub fn message(&self, redact: &[(&str, &str)]) -> String {
        format!("HTTP {}{}", self.status.as_u16(), self.snippet(redact))
    }

    /// The usual mapping: 408, 429 and 5xx retry (not sooner than `Retry-After`); 3xx is
    /// permanent (redirects are not followed); any other status is permanent.
    pub fn error(&self, message: String) -> JobError {
        match self.status.as_u16() {
            408 | 429 | 500..=599 => retry(self.retry_after, message),
            300..=399 => JobError::Permanent(format!("{message} (redirects are not followed)")),
            _ => JobError::Permanent(message),
        }
    }

    /// [`Answer::error`] for a provider that serves the whole kind (an SMS gateway): its 429
    /// throttles the kind ([`JobError::Throttled`]), not only this job.
    pub fn provider_error(&self, message: String) -> JobError {
        match self.status.as_u16() {
            429 => JobError::Throttled { after: self.retry_after, message },
            _ => self.error(message),
        }
    }
}

/// At most `limit` bytes of the body; `Err` with what arrived when the body broke off or timed out.
pub async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, Vec<u8>> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(_) => return Err(body),
        }
    }
    body.truncate(limit);
    Ok(body)
}

/// `raw` when it is an absolute http(s) URL with a host (a setting such as `SMS_HTTP_URL`).
/// The error shows the value without any password it holds.
pub fn http_url(raw: &str) -> Result<String, String> {
    let shown = jobs::settings::redacted_url(raw);
    match url::Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty()) => {
            Ok(raw.to_owned())
        }
        Ok(_) => Err(format!("`{shown}` is not an http or https URL with a host")),
        Err(e) => Err(format!("`{shown}` is not an absolute URL ({e})")),
    }
}

/// `": <text>"` of `text`: secrets replaced, then one line, then cut to [`BODY_SNIPPET`]
/// characters (in that order, so no part of a secret survives at the cut).
pub fn snippet(text: &str, redact: &[(&str, &str)]) -> String {
    let mut text = text.to_owned();
    for (secret, replacement) in redact {
        if !secret.is_empty() {
            text = text.replace(secret, replacement);
        }
    }
    let line: String = text.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).take(BODY_SNIPPET).collect();
    let line = line.trim_end();
    if line.is_empty() { String::new() } else { format!(": {line}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_setting_is_named_without_its_password() {
        for raw in ["ftp://user:s3cretpw@gateway/sms", "https://user:s3cretpw@gateway:notaport/sms"] {
            let error = http_url(raw).unwrap_err();
            assert!(!error.contains("s3cretpw"), "{error}");
        }
    }

    #[test]
    fn snippets_are_redacted_one_line_and_short() {
        assert_eq!(snippet("  busy\r\nnow ", &[]), ": busy  now");
        assert_eq!(snippet("", &[]), "");
        assert_eq!(
            snippet("code 482913 for +886912345678", &[("482913", "[code]")]),
            ": code [code] for +886912345678"
        );
        let long = format!("{}482913", "x".repeat(BODY_SNIPPET - 3));
        let cut = snippet(&long, &[("482913", "[code]")]);
        assert!(!cut.contains("482"), "{cut}");
        assert_eq!(cut.chars().count(), BODY_SNIPPET + 2);
    }

    #[test]
    fn statuses_map_to_retry_or_permanent() {
        let answer = |status: u16, after: Option<u64>| Answer {
            status: StatusCode::from_u16(status).unwrap(),
            retry_after: after.map(Duration::from_secs),
            body: b"no".to_vec(),
        };
        assert!(matches!(answer(503, None).error("m".into()), JobError::Retry(_)));
        assert!(matches!(answer(408, None).error("m".into()), JobError::Retry(_)));
        assert!(matches!(
            answer(429, Some(3)).error("m".into()),
            JobError::RetryAfter { after, .. } if after == Duration::from_secs(3)
        ));
        assert!(matches!(answer(400, Some(3)).error("m".into()), JobError::Permanent(_)));
        let JobError::Permanent(text) = answer(302, None).error("HTTP 302".into()) else { panic!() };
        assert_eq!(text, "HTTP 302 (redirects are not followed)");
        assert_eq!(answer(500, None).message(&[]), "HTTP 500: no");
    }
}
