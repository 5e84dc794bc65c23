//! Webhooks, signed per Standard Webhooks: `webhook-id` (the job id, the same on every
//! attempt), `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
//! 2xx is done; 408, 429, 5xx and network failures retry (honouring `Retry-After`); any other
//! status is permanent. Redirects are not followed.
//!
//! SSRF guard: unless `WEBHOOK_ALLOW_PRIVATE_NETWORKS=true`, a webhook may only reach public
//! addresses ([`super::public_address`]). Host names are checked after DNS resolution by the
//! client's own resolver (so the address checked is the address connected to, and a name
//! pointing at 127.0.0.1 is refused), and IP-literal URLs before sending. A refusal is a
//! permanent failure.
//!
//! Proxies: the environment's `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` are ignored, since a
//! request handed to a proxy never reaches the resolver above. Only `WEBHOOK_PROXY_URL` sends
//! webhooks through a proxy; then the worker resolves each target itself and refuses it unless
//! every address is public, before handing it over. The proxy resolves the name again, so a
//! name whose answer changes between the two lookups (DNS rebinding) is caught only by a proxy
//! that enforces the same policy: such a proxy is trusted to.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use hmac::{Hmac, Mac};
use jobs::payload::Webhook;
use sha2::Sha256;

use super::http::{Answer, client_builder, transport_error};
use crate::outcome::{Delivered, JobError};

pub struct WebhookSender {
    client: reqwest::Client,
    key: Vec<u8>,
    allow_private: bool,
    /// `WEBHOOK_PROXY_URL` is set: the client's resolver sees the proxy's name, not the target's.
    via_proxy: bool,
}

/// Why a webhook's destination was refused.
#[derive(Debug, thiserror::Error)]
#[error("refused: {0} is not a public address (set WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow it)")]
pub struct Refused(String);

pub use super::public_address::is_public;

/// Resolves with the system resolver and keeps only public addresses.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(Refused(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender").field("key", &"[redacted]").finish_non_exhaustive()
    }
}

/// The key of a `whsec_<base64>` signing secret, or what is wrong with it.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix("whsec_").ok_or("must start with whsec_")?;
    let key = STANDARD.decode(encoded).map_err(|e| format!("the part after whsec_ is not base64 ({e})"))?;
    if key.len() < 16 {
        return Err("the key must be at least 16 bytes".into());
    }
    Ok(key)
}

impl WebhookSender {
    /// `secret` is `whsec_<base64>`; `allow_private` lifts the SSRF guard (tests, development);
    /// `proxy` (`WEBHOOK_PROXY_URL`) is the only proxy ever used: the environment's are ignored.
    pub fn new(
        secret: &str,
        timeout: Duration,
        allow_private: bool,
        proxy: Option<reqwest::Proxy>,
    ) -> Result<Self, String> {
        let key = signing_key(secret)?;
        let builder = client_builder(concat!("Jobplane-Webhooks/", env!("CARGO_PKG_VERSION")), timeout).no_proxy();
        let via_proxy = proxy.is_some();
        let builder = match proxy {
            // The resolver would see the proxy's name: the target is checked in `deliver`.
            Some(proxy) => builder.proxy(proxy),
            None if !allow_private => builder.dns_resolver(Arc::new(PublicOnly)),
            None => builder,
        };
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(Self { client, key, allow_private, via_proxy })
    }

    /// `v1,<signature>` of `body` sent as message `id` at `timestamp` (seconds).
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Delivers one webhook; `traceparent` (the job's span) goes along as the W3C header.
    pub async fn deliver(&self, id: &str, webhook: &Webhook, traceparent: Option<&str>) -> Result<Delivered, JobError> {
        if !self.allow_private {
            self.check_target(&webhook.url).await?;
        }
        let now = Utc::now();
        let body =
            serde_json::json!({"type": webhook.event, "timestamp": now.to_rfc3339(), "data": webhook.data}).to_string();
        let timestamp = now.timestamp();
        let mut request = self
            .client
            .post(&webhook.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", self.sign(id, timestamp, &body));
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = request.body(body).send().await.map_err(|e| match refusal(&e) {
            Some(refused) => JobError::Permanent(refused.to_string()),
            None => JobError::Retry(format!("request failed: {}", transport_error(&e))),
        })?;
        if response.status().is_success() {
            return Ok(Delivered::done());
        }
        let answer = Answer::read(response).await;
        Err(answer.error(answer.message(&[])))
    }
}

impl WebhookSender {
    /// What the resolver cannot check: an IP literal (never resolved), and, through a proxy,
    /// every address the target's name has (the proxy may connect to any of them).
    async fn check_target(&self, raw: &str) -> Result<(), JobError> {
        let refused = |what: String| JobError::Permanent(Refused(what).to_string());
        let Ok(url) = url::Url::parse(raw) else { return Ok(()) };
        let (name, port) = match url.host() {
            Some(url::Host::Ipv4(a)) if !is_public(IpAddr::V4(a)) => return Err(refused(a.to_string())),
            Some(url::Host::Ipv6(a)) if !is_public(IpAddr::V6(a)) => return Err(refused(a.to_string())),
            Some(url::Host::Domain(name)) if self.via_proxy => (name, url.port_or_known_default().unwrap_or(80)),
            _ => return Ok(()),
        };
        let addrs = tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| JobError::Retry(format!("could not resolve the webhook's host: {e}")))?;
        match addrs.map(|a| a.ip()).find(|ip| !is_public(*ip)) {
            Some(ip) => Err(refused(format!("{name} ({ip})"))),
            None => Ok(()),
        }
    }
}

fn refusal(e: &reqwest::Error) -> Option<&Refused> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return Some(refused);
        }
        source = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let sender =
            WebhookSender::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", Duration::from_secs(1), false, None).unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sender.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    /// Every spelling of a private address that the URL parser turns into an IP literal (so the
    /// resolver never sees it) is judged before sending: decimal, hex, octal, short forms, a
    /// trailing dot, percent-encoding, userinfo, IPv4-mapped and NAT64 IPv6.
    #[tokio::test]
    async fn ip_literals_in_any_spelling_are_refused_before_sending() {
        let sender =
            WebhookSender::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", Duration::from_secs(1), false, None).unwrap();
        for url in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://127.0.0.1./",
            "http://%31%32%37.0.0.1/",
            "http://0/",
            "http://user:pw@127.0.0.1@169.254.169.254/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[64:ff9b::127.0.0.1]/",
            "http://[::]/",
            "https://[fe80::1]:443/",
        ] {
            let refused = sender.check_target(url).await;
            assert!(
                matches!(&refused, Err(JobError::Permanent(m)) if m.contains("is not a public address")),
                "{url}: {refused:?}"
            );
        }
        // Host names (any spelling) are left to the resolver, which sees every address.
        assert!(sender.check_target("http://localhost./").await.is_ok());
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert!(WebhookSender::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", Duration::from_secs(1), false, None).is_err());
        assert!(WebhookSender::new("whsec_!!!", Duration::from_secs(1), false, None).is_err());
        assert!(WebhookSender::new("whsec_c2hvcnQ=", Duration::from_secs(1), false, None).is_err());
    }
}
