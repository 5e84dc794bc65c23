//! Webhooks, signed per Standard Webhooks: `webhook-id` (the job id, the same on every
//! attempt), `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
//! 2xx is done; 408, 429, 5xx and network failures retry (honouring `Retry-After`); any other
//! status is permanent. Redirects are not followed.
//!
//! SSRF guard: unless `WEBHOOK_ALLOW_PRIVATE_NETWORKS=true`, a webhook may only reach public
//! addresses. Host names are checked after DNS resolution by the client's own resolver (so the
//! address checked is the address connected to, and a name pointing at 127.0.0.1 is refused),
//! and IP-literal URLs before sending. A refusal is a permanent failure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
}

/// Why a webhook's destination was refused.
#[derive(Debug, thiserror::Error)]
#[error("refused: {0} is not a public address (set WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow it)")]
pub struct Refused(String);

/// Whether `ip` is reachable on the public internet: not loopback, private, link-local,
/// shared (CGNAT), multicast, documentation, benchmarking, reserved or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => is_public_v4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(a),
        },
    }
}

fn is_public_v4(a: Ipv4Addr) -> bool {
    let [o1, o2, o3, _] = a.octets();
    !(a.is_private()
        || a.is_loopback()
        || a.is_link_local()
        || a.is_multicast()
        || a.is_broadcast()
        || a.is_unspecified()
        || a.is_documentation()
        || o1 == 0
        || (o1 == 100 && (64..128).contains(&o2))
        || (o1 == 192 && o2 == 0 && o3 == 0)
        || (o1 == 198 && (18..20).contains(&o2))
        || o1 >= 240)
}

fn is_public_v6(addr: Ipv6Addr) -> bool {
    let seg = addr.segments();
    // NAT64 (64:ff9b::/96) embeds an IPv4 address: judge that one.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let octets = addr.octets();
        return is_public_v4(Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]));
    }
    !(addr.is_loopback()
        || addr.is_unspecified()
        || addr.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00
        || (seg[0] & 0xffc0) == 0xfe80
        || (seg[0] == 0x2001 && seg[1] == 0x0db8)
        || addr.to_ipv4().is_some_and(|v4| !is_public_v4(v4)))
}

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

impl WebhookSender {
    /// `secret` is `whsec_<base64>`; `allow_private` lifts the SSRF guard (tests, development).
    pub fn new(secret: &str, timeout: Duration, allow_private: bool) -> Result<Self, String> {
        let encoded = secret.strip_prefix("whsec_").ok_or("must start with whsec_")?;
        let key = STANDARD.decode(encoded).map_err(|e| format!("the part after whsec_ is not base64 ({e})"))?;
        if key.len() < 16 {
            return Err("the key must be at least 16 bytes".into());
        }
        let mut builder = client_builder(concat!("Jobplane-Webhooks/", env!("CARGO_PKG_VERSION")), timeout);
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(Self { client, key, allow_private })
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
            // The resolver never sees an IP literal: check it here.
            let literal = url::Url::parse(&webhook.url).ok().and_then(|u| match u.host() {
                Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
                Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
                _ => None,
            });
            if let Some(ip) = literal.filter(|ip| !is_public(*ip)) {
                return Err(JobError::Permanent(Refused(ip.to_string()).to_string()));
            }
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
            WebhookSender::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", Duration::from_secs(1), false).unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sender.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert!(WebhookSender::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", Duration::from_secs(1), false).is_err());
        assert!(WebhookSender::new("whsec_!!!", Duration::from_secs(1), false).is_err());
        assert!(WebhookSender::new("whsec_c2hvcnQ=", Duration::from_secs(1), false).is_err());
    }

    #[test]
    fn only_public_addresses_pass() {
        for public in
            ["93.184.215.14", "8.8.8.8", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "::ffff:8.8.8.8", "64:ff9b::808:808"]
        {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
    }
}
