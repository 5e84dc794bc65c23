//! Webhooks, signed per Standard Webhooks: `webhook-id` (the job id, the same on every
//! attempt), `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
//! 2xx is done; 408, 429, 5xx and network failures retry (honouring `Retry-After`); any other
//! status is permanent. Redirects are not followed.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use hmac::{Hmac, Mac};
use jobs::payload::Webhook;
use sha2::Sha256;

use crate::outcome::JobError;

/// The most of a response body kept in the error record.
const BODY_SNIPPET: usize = 256;

pub struct WebhookSender {
    client: reqwest::Client,
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender").field("key", &"[redacted]").finish_non_exhaustive()
    }
}

impl WebhookSender {
    /// `secret` is `whsec_<base64>`.
    pub fn new(secret: &str, timeout: Duration) -> Result<Self, String> {
        let encoded = secret.strip_prefix("whsec_").ok_or("must start with whsec_")?;
        let key = STANDARD.decode(encoded).map_err(|e| format!("the part after whsec_ is not base64 ({e})"))?;
        if key.len() < 16 {
            return Err("the key must be at least 16 bytes".into());
        }
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Jobplane-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { client, key })
    }

    /// `v1,<signature>` of `body` sent as message `id` at `timestamp` (seconds).
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    pub async fn deliver(&self, id: &str, webhook: &Webhook) -> Result<(), JobError> {
        let now = Utc::now();
        let body =
            serde_json::json!({"type": webhook.event, "timestamp": now.to_rfc3339(), "data": webhook.data}).to_string();
        let timestamp = now.timestamp();
        let response = self
            .client
            .post(&webhook.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", self.sign(id, timestamp, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| JobError::Retry(format!("request failed: {}", without_url(&e))))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let after = super::retry_after(response.headers().get(reqwest::header::RETRY_AFTER));
        let message = format!("HTTP {}{}", status.as_u16(), snippet(response).await);
        match status.as_u16() {
            408 | 429 | 500..=599 => Err(match after {
                Some(after) => JobError::RetryAfter { after, message },
                None => JobError::Retry(message),
            }),
            300..=399 => Err(JobError::Permanent(format!("{message} (redirects are not followed)"))),
            _ => Err(JobError::Permanent(message)),
        }
    }
}

/// reqwest's errors name the URL, which may carry a token in its query: keep the kind only.
fn without_url(e: &reqwest::Error) -> String {
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

async fn snippet(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < BODY_SNIPPET {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(BODY_SNIPPET);
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if text.is_empty() { String::new() } else { format!(": {}", text.replace(['\r', '\n'], " ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let sender = WebhookSender::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", Duration::from_secs(1)).unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sender.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert!(WebhookSender::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", Duration::from_secs(1)).is_err());
        assert!(WebhookSender::new("whsec_!!!", Duration::from_secs(1)).is_err());
        assert!(WebhookSender::new("whsec_c2hvcnQ=", Duration::from_secs(1)).is_err());
    }
}
