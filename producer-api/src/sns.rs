//! Amazon SNS messages, verified: the envelope SNS posts to an HTTP(S) subscriber, its
//! signature checked against the signing certificate SNS names, that certificate fetched only
//! from SNS's own host and cached.
//!
//! The checks follow AWS's "Verifying the signatures of Amazon SNS messages":
//! - `SigningCertURL` (and a confirmation's `SubscribeURL`) must match the pinned pattern
//!   (`SES_SNS_URL_PATTERN`, default `^https://sns\.<region>\.amazonaws\.com(\.cn)?/`): only an
//!   HTTPS URL on an SNS host, so a forged message cannot name a certificate of its own. The
//!   certificate URL must also end in `.pem`.
//! - The certificate is fetched with a timeout, no redirects, at most [`CERT_MAX_BYTES`], over
//!   TLS checked against the web PKI roots; kept [`CERT_TTL`] in a bounded cache; at most
//!   [`CERT_FETCHES_PER_MINUTE`] fetches a minute, so forged URLs cannot make it a fetch each.
//! - `TopicArn` must be one of `SES_SNS_TOPIC_ARNS`, checked first; while it is unset every
//!   message is refused: SNS signs any AWS account's topic alike, so the signature alone says
//!   nothing about who published.
//! - The string to sign is each of the documented fields, in the documented order (`Message`,
//!   `MessageId`, `Subject` when present, `Timestamp`, `TopicArn`, `Type` for a notification;
//!   `Message`, `MessageId`, `SubscribeURL`, `Timestamp`, `Token`, `TopicArn`, `Type` for a
//!   (un)subscription confirmation), each as `name\nvalue\n`.
//! - `SignatureVersion` `1` is RSA PKCS#1 v1.5 with SHA-1, `2` the same with SHA-256.
//!
//! The tests override the pattern to reach a certificate host of their own on loopback (plain
//! HTTP); the producer API logs that override as a warning at start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use regex::Regex;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{AlgorithmIdentifier, CertificateDer, InvalidSignature, SignatureVerificationAlgorithm, alg_id};
use serde::Deserialize;

/// SNS's hosts: `https://sns.<region>.amazonaws.com/` (and the China partition's `.com.cn`).
pub const DEFAULT_URL_PATTERN: &str = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/";
/// The largest signing certificate read (SNS's are about 2 KiB).
pub const CERT_MAX_BYTES: usize = 16 * 1024;
/// How long a fetched certificate is trusted before it is fetched again.
pub const CERT_TTL: Duration = Duration::from_hours(24);
/// Certificates kept at most (SNS uses one per region at a time).
const CERT_CACHE_MAX: usize = 32;
/// Certificates fetched at most per minute, cache misses all together: each message naming a
/// URL not cached (any path on SNS's host will do) would otherwise cost a fetch, and callbacks
/// are only rate-limited once verified. SNS uses one certificate per region for months.
pub const CERT_FETCHES_PER_MINUTE: u32 = 10;
/// The longest wait for SNS's host (a certificate, a subscription confirmation).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The envelope SNS posts (the fields this code reads; the rest is ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "MessageId")]
    pub message_id: String,
    #[serde(rename = "TopicArn")]
    pub topic_arn: String,
    #[serde(rename = "Subject")]
    pub subject: Option<String>,
    #[serde(rename = "Message")]
    pub message: String,
    #[serde(rename = "Timestamp")]
    pub timestamp: String,
    #[serde(rename = "SignatureVersion")]
    pub signature_version: String,
    #[serde(rename = "Signature")]
    pub signature: String,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    #[serde(rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    #[serde(rename = "Token")]
    pub token: Option<String>,
}

/// Why a message was refused. Every variant is a `403` to the caller; the text goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("not an SNS message: {0}")]
    Malformed(String),
    #[error("message type `{0}` is not signed by SNS")]
    UnknownType(String),
    #[error("SignatureVersion `{0}` is not 1 or 2")]
    UnknownVersion(String),
    #[error("{0} is not on an SNS host (SES_SNS_URL_PATTERN)")]
    OffPattern(&'static str),
    #[error("the signing certificate could not be had: {0}")]
    Certificate(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("topic not in SES_SNS_TOPIC_ARNS (every topic is refused while it is unset)")]
    Topic,
}

/// Certificates by URL (DER), with when each was fetched.
type CertCache = HashMap<String, (Arc<Vec<u8>>, Instant)>;

/// The checks and the certificate cache, shared by every request.
#[derive(Debug, Clone)]
pub struct Verifier {
    pattern: Regex,
    /// `SES_SNS_TOPIC_ARNS`: the only topics accepted; empty, none is.
    topics: Vec<String>,
    http: reqwest::Client,
    cache: Arc<Mutex<CertCache>>,
    /// Fetches in the current minute, and when it began.
    fetches: Arc<Mutex<(u32, Instant)>>,
}

impl Verifier {
    /// `pattern`: the URL pattern (anchored at the start here); `topics`: the allow-list.
    pub fn new(pattern: &str, topics: Vec<String>) -> Result<Self, String> {
        let anchored = format!("^(?:{})", pattern.trim_start_matches('^'));
        let pattern = Regex::new(&anchored).map_err(|e| format!("not a regular expression: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| format!("no HTTP client: {e}"))?;
        Ok(Self { pattern, topics, http, cache: Arc::default(), fetches: Arc::new(Mutex::new((0, Instant::now()))) })
    }

    /// Whether the pinned pattern is the default one.
    pub fn is_default_pattern(&self) -> bool {
        self.pattern.as_str() == format!("^(?:{})", DEFAULT_URL_PATTERN.trim_start_matches('^'))
    }

    /// Whether `url` is on the pinned SNS hosts.
    pub fn on_pattern(&self, url: &str) -> bool {
        self.pattern.is_match(url) && !url.contains(['\r', '\n', ' ', '#'])
    }

    /// Parses `body` as an SNS envelope and verifies it: pattern, topic, signature.
    pub async fn verify(&self, body: &[u8]) -> Result<Envelope, Refused> {
        let envelope: Envelope = serde_json::from_slice(body).map_err(|e| Refused::Malformed(e.to_string()))?;
        // Anyone can make a topic, subscribe this endpoint and publish: SNS signs it all alike.
        // Only the operator's topics are taken, and none when none is named.
        if !self.topics.contains(&envelope.topic_arn) {
            return Err(Refused::Topic);
        }
        let to_sign = string_to_sign(&envelope)?;
        let algorithm: &dyn SignatureVerificationAlgorithm = match envelope.signature_version.as_str() {
            "1" => &RsaPkcs1 { sha256: false },
            "2" => &RsaPkcs1 { sha256: true },
            other => return Err(Refused::UnknownVersion(other.chars().take(8).collect())),
        };
        let url = &envelope.signing_cert_url;
        if !self.on_pattern(url) || !url.split('?').next().unwrap_or("").to_ascii_lowercase().ends_with(".pem") {
            return Err(Refused::OffPattern("SigningCertURL"));
        }
        let signature = base64::engine::general_purpose::STANDARD
            .decode(envelope.signature.trim())
            .map_err(|_| Refused::BadSignature)?;
        let der = self.certificate(url).await?;
        let der = CertificateDer::from(der.as_slice());
        let cert =
            webpki::EndEntityCert::try_from(&der).map_err(|e| Refused::Certificate(format!("does not parse: {e}")))?;
        cert.verify_signature(algorithm, to_sign.as_bytes(), &signature).map_err(|_| Refused::BadSignature)?;
        Ok(envelope)
    }

    /// The DER certificate at `url`, from the cache or fetched.
    async fn certificate(&self, url: &str) -> Result<Arc<Vec<u8>>, Refused> {
        if let Some((der, at)) = self.lock().get(url)
            && at.elapsed() < CERT_TTL
        {
            return Ok(der.clone());
        }
        if !self.may_fetch() {
            return Err(Refused::Certificate(format!("over {CERT_FETCHES_PER_MINUTE} certificate fetches a minute")));
        }
        let der = Arc::new(self.fetch_certificate(url).await?);
        let mut cache = self.lock();
        if cache.len() >= CERT_CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < CERT_TTL);
            if cache.len() >= CERT_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(url.to_owned(), (der.clone(), Instant::now()));
        Ok(der)
    }

    /// Takes one fetch from this minute's [`CERT_FETCHES_PER_MINUTE`].
    fn may_fetch(&self) -> bool {
        let mut guard = self.fetches.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.1.elapsed() >= Duration::from_mins(1) {
            *guard = (0, Instant::now());
        }
        guard.0 += 1;
        guard.0 <= CERT_FETCHES_PER_MINUTE
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CertCache> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn fetch_certificate(&self, url: &str) -> Result<Vec<u8>, Refused> {
        let failed = |e: String| Refused::Certificate(e);
        let mut response = self.http.get(url).send().await.map_err(|e| failed(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("HTTP {}", response.status().as_u16())));
        }
        let mut pem = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.without_url().to_string()))? {
            if pem.len() + chunk.len() > CERT_MAX_BYTES {
                return Err(failed(format!("larger than {CERT_MAX_BYTES} bytes")));
            }
            pem.extend_from_slice(&chunk);
        }
        let der = CertificateDer::from_pem_slice(&pem).map_err(|e| failed(format!("not a PEM certificate: {e}")))?;
        tracing::info!(url, "SNS signing certificate fetched");
        Ok(der.as_ref().to_vec())
    }

    /// Confirms a subscription: a GET of its `SubscribeURL`, which must be on the pinned hosts.
    pub async fn confirm(&self, envelope: &Envelope) -> Result<(), String> {
        let url = envelope.subscribe_url.as_deref().ok_or("no SubscribeURL")?;
        if !self.on_pattern(url) {
            return Err("SubscribeURL is not on an SNS host (SES_SNS_URL_PATTERN)".into());
        }
        let response = self.http.get(url).send().await.map_err(|e| e.without_url().to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("SNS answered HTTP {}", response.status().as_u16()))
        }
    }
}

/// The string SNS signed for `envelope`, by its type.
pub fn string_to_sign(envelope: &Envelope) -> Result<String, Refused> {
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        out.push_str(name);
        out.push('\n');
        out.push_str(value);
        out.push('\n');
    };
    match envelope.kind.as_str() {
        "Notification" => {
            field("Message", &envelope.message);
            field("MessageId", &envelope.message_id);
            if let Some(subject) = &envelope.subject {
                field("Subject", subject);
            }
            field("Timestamp", &envelope.timestamp);
            field("TopicArn", &envelope.topic_arn);
            field("Type", &envelope.kind);
        }
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
            let missing = |name| Refused::Malformed(format!("{name} is missing"));
            field("Message", &envelope.message);
            field("MessageId", &envelope.message_id);
            field("SubscribeURL", envelope.subscribe_url.as_deref().ok_or_else(|| missing("SubscribeURL"))?);
            field("Timestamp", &envelope.timestamp);
            field("Token", envelope.token.as_deref().ok_or_else(|| missing("Token"))?);
            field("TopicArn", &envelope.topic_arn);
            field("Type", &envelope.kind);
        }
        other => return Err(Refused::UnknownType(other.chars().take(32).collect())),
    }
    Ok(out)
}

/// RSA PKCS#1 v1.5 over SHA-1 (SNS's SignatureVersion 1) or SHA-256 (2), with ring, for
/// webpki's check against the certificate's key. SHA-1 is only accepted here, where AWS still
/// signs with it; webpki itself offers no SHA-1.
#[derive(Debug)]
struct RsaPkcs1 {
    sha256: bool,
}

/// sha1WithRSAEncryption (1.2.840.113549.1.1.5) with NULL parameters, as an AlgorithmIdentifier's contents.
const RSA_PKCS1_SHA1: AlgorithmIdentifier =
    AlgorithmIdentifier::from_slice(&[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05, 0x00]);

impl SignatureVerificationAlgorithm for RsaPkcs1 {
    fn verify_signature(&self, public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), InvalidSignature> {
        let params = if self.sha256 {
            &ring::signature::RSA_PKCS1_2048_8192_SHA256
        } else {
            &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY
        };
        ring::signature::UnparsedPublicKey::new(params, public_key)
            .verify(message, signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        if self.sha256 { alg_id::RSA_PKCS1_SHA256 } else { RSA_PKCS1_SHA1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(kind: &str) -> Envelope {
        Envelope {
            kind: kind.into(),
            message_id: "m-1".into(),
            topic_arn: "arn:aws:sns:us-east-1:1:t".into(),
            subject: None,
            message: "{}".into(),
            timestamp: "2026-11-28T00:00:00.000Z".into(),
            signature_version: "1".into(),
            signature: String::new(),
            signing_cert_url: String::new(),
            subscribe_url: Some("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription".into()),
            token: Some("tok".into()),
        }
    }

    #[test]
    fn the_string_to_sign_follows_the_type() {
        assert_eq!(
            string_to_sign(&envelope("Notification")).unwrap(),
            "Message\n{}\nMessageId\nm-1\nTimestamp\n2026-11-28T00:00:00.000Z\nTopicArn\narn:aws:sns:us-east-1:1:t\nType\nNotification\n"
        );
        let confirmation = string_to_sign(&envelope("SubscriptionConfirmation")).unwrap();
        assert!(
            confirmation
                .contains("SubscribeURL\nhttps://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription\nTimestamp\n")
        );
        assert!(confirmation.contains("Token\ntok\nTopicArn\n"));
        assert!(matches!(string_to_sign(&envelope("Other")), Err(Refused::UnknownType(_))));
    }

    #[test]
    fn only_sns_hosts_pass_the_default_pattern() {
        let v = Verifier::new(DEFAULT_URL_PATTERN, vec![]).unwrap();
        assert!(v.is_default_pattern());
        assert!(v.on_pattern("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem"));
        assert!(v.on_pattern("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem"));
        for bad in [
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
            "https://sns.us-east-1.amazonaws.com@evil.example/x.pem",
            "https://evil.example/https://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.evil.example/x.pem",
        ] {
            assert!(!v.on_pattern(bad), "{bad}");
        }
        assert!(!Verifier::new(r"^http://127\.0\.0\.1:\d+/", vec![]).unwrap().is_default_pattern());
        let fetches = (0..CERT_FETCHES_PER_MINUTE + 5).filter(|_| v.may_fetch()).count();
        assert_eq!(fetches, CERT_FETCHES_PER_MINUTE as usize, "certificate fetches are bounded");
        assert!(Verifier::new("(", vec![]).is_err());
    }
}
