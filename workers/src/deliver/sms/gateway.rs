//! `SMS_PROVIDER=http`: a generic JSON gateway. `POST SMS_HTTP_URL` with
//! `{"id": "<job id>", "to": "+E164", "body": "<text>"}`, the job id again as
//! `Idempotency-Key` (the same on every attempt, so the gateway can deduplicate), and
//! `Authorization: Bearer SMS_HTTP_TOKEN` when set. A 2xx is sent, its optional JSON
//! `{"message_id": "...", "cost": "..."}` kept. 408, 429, 5xx, timeouts and connection
//! failures retry (not sooner than `Retry-After`), a 429 also slowing the whole kind down
//! (`JobError::Throttled`, `jobs::rate`); 401 and 403 retry too, logged as errors
//! (the token is wrong: an operator can fix it within the OTP's TTL); any other status is
//! permanent.

use std::time::Duration;

use futures::future::BoxFuture;
use jobs::settings::{Env, SettingError};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use super::{Message, Sent, SmsProvider, clean};
use crate::deliver::http::{self, Answer};
use crate::outcome::JobError;

/// The most of a success body read.
const SUCCESS_READ: usize = 64 * 1024;

pub struct Gateway {
    client: reqwest::Client,
    url: String,
    token: Option<SecretString>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("token", &self.token.as_ref().map(|_| "[redacted]")).finish_non_exhaustive()
    }
}

/// `SMS_HTTP_URL` and `SMS_HTTP_TOKEN`, read and checked at start.
#[derive(Clone)]
pub struct GatewaySettings {
    url: String,
    token: Option<SecretString>,
}

impl std::fmt::Debug for GatewaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewaySettings")
            .field("url", &jobs::settings::redacted_url(&self.url))
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl GatewaySettings {
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let url = http::http_url(env.require("SMS_HTTP_URL", "the URL the worker POSTs each SMS to")?)
            .map_err(|problem| SettingError::new("SMS_HTTP_URL", problem))?;
        let token = match env.get("SMS_HTTP_TOKEN") {
            Some(token) if token.bytes().all(|b| b.is_ascii_graphic()) => Some(SecretString::from(token)),
            Some(_) => return Err(SettingError::new("SMS_HTTP_TOKEN", "must be visible ASCII characters only")),
            None => None,
        };
        Ok(Self { url, token })
    }
}

impl Gateway {
    pub fn new(settings: &GatewaySettings, timeout: Duration) -> Result<Self, SettingError> {
        let client = http::client_builder(concat!("Jobplane-SMS/", env!("CARGO_PKG_VERSION")), timeout)
            .build()
            .map_err(|e| SettingError::new("SMS_PROVIDER", format!("cannot build the HTTP client ({e})")))?;
        let GatewaySettings { url, token } = settings.clone();
        Ok(Self { client, url, token })
    }

    async fn post(&self, message: &Message<'_>) -> Result<Sent, JobError> {
        let payload = serde_json::json!({"id": message.job_id, "to": message.to, "body": message.body});
        let mut request = self.client.post(&self.url).header("idempotency-key", message.job_id).json(&payload);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose_secret());
        }
        let response = request
            .send()
            .await
            .map_err(|e| JobError::Retry(format!("SMS gateway: request failed: {}", http::transport_error(&e))))?;
        if !response.status().is_success() {
            let answer = Answer::read(response).await;
            let text = format!("SMS gateway {}", message.describe(&answer));
            if matches!(answer.status.as_u16(), 401 | 403) {
                tracing::error!(
                    job_id = message.job_id,
                    status = answer.status.as_u16(),
                    "the SMS gateway refused our credentials: check SMS_HTTP_TOKEN; retrying"
                );
                return Err(JobError::Retry(format!("{text} (check SMS_HTTP_TOKEN)")));
            }
            return Err(answer.provider_error(text));
        }
        // Sent: whatever happens to the rest of the answer, it must not be sent again.
        let body = http::read_limited(response, SUCCESS_READ).await.unwrap_or_default();
        let accepted: Accepted = serde_json::from_slice(&body).unwrap_or_default();
        let cost = accepted.cost.and_then(|c| match c {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        Ok(Sent { message_id: clean(accepted.message_id, 128), cost: clean(cost, 32) })
    }
}

impl SmsProvider for Gateway {
    fn name(&self) -> &'static str {
        "http"
    }

    fn send<'a>(&'a self, message: &'a Message<'a>) -> BoxFuture<'a, Result<Sent, JobError>> {
        Box::pin(self.post(message))
    }
}

/// The gateway's optional answer.
#[derive(Debug, Default, Deserialize)]
struct Accepted {
    message_id: Option<String>,
    cost: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let error =
            |pairs: &[(&str, &str)]| GatewaySettings::from_env(&Env::from_pairs(pairs)).unwrap_err().to_string();
        assert!(error(&[]).starts_with("SMS_HTTP_URL: is required"));
        assert!(error(&[("SMS_HTTP_URL", "sms.example.org/send")]).starts_with("SMS_HTTP_URL: "));
        assert!(error(&[("SMS_HTTP_URL", "ftp://sms.example.org")]).starts_with("SMS_HTTP_URL: "));
        assert!(
            error(&[("SMS_HTTP_URL", "https://sms.example.org"), ("SMS_HTTP_TOKEN", "a b")])
                .starts_with("SMS_HTTP_TOKEN: ")
        );
        let settings = GatewaySettings::from_env(&Env::from_pairs(&[
            ("SMS_HTTP_URL", "https://sms.example.org/send"),
            ("SMS_HTTP_TOKEN", "s3cret"),
        ]))
        .unwrap();
        assert!(!format!("{settings:?}").contains("s3cret"));
        let gateway = Gateway::new(&settings, Duration::from_secs(1)).unwrap();
        assert!(!format!("{gateway:?}").contains("s3cret"));
    }
}
