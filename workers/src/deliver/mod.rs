//! Deliveries: what running a job of each kind means. Each kind's real provider sits behind
//! its module; the worker runtime only sees [`Deliveries::run`].

pub mod audit;
mod email;
pub mod flow;
pub mod http;
pub mod public_address;
pub mod sms;
pub mod webhook;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use jobs::Kind;
use jobs::queue::Leased;
use jobs::settings::{Env, SecretUrl, SettingError};
use secrecy::{ExposeSecret, SecretString};

use crate::outcome::{Delivered, JobError};

#[derive(Debug)]
pub struct Deliveries {
    /// `WORKER_JOB_TIMEOUT_SECONDS` (default 300): an attempt still running after this fails
    /// (retryable), so a hung far side cannot hold a slot and renew its lease forever.
    pub timeout: Duration,
    webhook: Option<webhook::WebhookSender>,
    /// Every webhook delivery takes a slot of its destination first.
    flow: Option<flow::Flow>,
    /// Only for a worker that consumes `otp_sms`: the others need no SMS settings.
    sms: Option<sms::SmsSender>,
    email: email::EmailProvider,
    /// Asked about every recipient of an email before it is sent.
    suppressions: jobs::suppression::Suppressions,
    audit: Option<audit::AuditWriter>,
}

/// Every delivery setting of the kinds this worker consumes, read and checked at start
/// ([`crate::Config::from_env`]); a kind this worker does not run needs none of its settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `WORKER_JOB_TIMEOUT_SECONDS` (default 300): an attempt still running after this fails
    /// (retryable), so a hung far side cannot hold a slot and renew its lease forever.
    pub timeout: Duration,
    webhook: Option<WebhookSettings>,
    sms: Option<sms::SmsSettings>,
    email: email::EmailSettings,
    audit: Option<audit::AuditSettings>,
}

/// `WEBHOOK_*`.
#[derive(Debug, Clone)]
struct WebhookSettings {
    secret: SecretString,
    timeout: Duration,
    allow_private: bool,
    /// May carry the proxy's credentials: shown without them.
    proxy: Option<SecretUrl>,
    /// `WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION`, `WEBHOOK_COOLDOWN_*`, `WEBHOOK_MAX_DEFERRAL_SECONDS`.
    flow: jobs::destinations::Policy,
}

impl Settings {
    pub fn from_env(env: &Env, kinds: &BTreeSet<Kind>) -> Result<Self, SettingError> {
        let timeout = env.seconds("WORKER_JOB_TIMEOUT_SECONDS", 300)?;
        if timeout.is_zero() {
            return Err(SettingError::new("WORKER_JOB_TIMEOUT_SECONDS", "must be at least 1"));
        }
        let consumes = |kind| kinds.contains(&kind);
        Ok(Self {
            timeout,
            webhook: consumes(Kind::Webhook).then(|| WebhookSettings::from_env(env)).transpose()?,
            sms: consumes(Kind::OtpSms).then(|| sms::SmsSettings::from_env(env)).transpose()?,
            email: email::EmailSettings::from_env(env, consumes(Kind::Email))?,
            audit: consumes(Kind::AuditLog).then(|| audit::AuditSettings::from_env(env, timeout)).transpose()?,
        })
    }
}

impl WebhookSettings {
    fn from_env(env: &Env) -> Result<Self, SettingError> {
        let secret = env.require("WEBHOOK_SIGNING_SECRET", "whsec_<base64>, the Standard Webhooks signing secret")?;
        webhook::signing_key(secret).map_err(|problem| SettingError::new("WEBHOOK_SIGNING_SECRET", problem))?;
        let proxy = match env.get("WEBHOOK_PROXY_URL").filter(|url| !url.is_empty()) {
            Some(url) => {
                proxy(url).map_err(|problem| SettingError::new("WEBHOOK_PROXY_URL", problem))?;
                Some(SecretUrl::new(url))
            }
            None => None,
        };
        let timeout = env.millis("WEBHOOK_TIMEOUT_MS", 10_000)?;
        Ok(Self {
            secret: SecretString::from(secret),
            timeout,
            allow_private: env.flag("WEBHOOK_ALLOW_PRIVATE_NETWORKS", false)?,
            proxy,
            flow: flow::policy_from_env(env, timeout)?,
        })
    }

    fn sender(&self) -> Result<webhook::WebhookSender, SettingError> {
        let proxy = self.proxy.as_ref().map(|url| proxy(url.expose())).transpose();
        let proxy = proxy.map_err(|problem| SettingError::new("WEBHOOK_PROXY_URL", problem))?;
        webhook::WebhookSender::new(self.secret.expose_secret(), self.timeout, self.allow_private, proxy)
            .map_err(|e| SettingError::new("WEBHOOK_SIGNING_SECRET", e))
    }
}

/// `WEBHOOK_PROXY_URL` as the client takes it.
fn proxy(url: &str) -> Result<reqwest::Proxy, String> {
    http::http_url(url).and_then(|url| reqwest::Proxy::all(url).map_err(|e| e.to_string()))
}

impl Deliveries {
    /// Builds each provider's client from `settings` (async: the SES client loads the AWS
    /// SDK's configuration and checks its credentials); webhooks take their destinations'
    /// slots in `destinations`.
    pub async fn start(
        settings: &Settings,
        database_url: &str,
        destinations: jobs::destinations::Destinations,
        suppressions: jobs::suppression::Suppressions,
    ) -> Result<Self, SettingError> {
        let audit = match &settings.audit {
            Some(audit) => {
                // A connection per writer, and one for the partition upkeep.
                let connections = u32::try_from(audit.writers + 1).unwrap_or(u32::MAX);
                let pool = db::pool(database_url, connections)
                    .map_err(|e| SettingError::new("DATABASE_URL", e.to_string()))?;
                tokio::spawn(audit::keep_partitions(pool.clone(), audit.retention_months));
                Some(audit::AuditWriter::spawn(pool, *audit))
            }
            None => None,
        };
        Ok(Self {
            timeout: settings.timeout,
            webhook: settings.webhook.as_ref().map(WebhookSettings::sender).transpose()?,
            flow: settings
                .webhook
                .as_ref()
                .filter(|w| w.flow.max_in_flight > 0)
                .map(|w| flow::Flow { destinations, policy: w.flow }),
            sms: settings.sms.as_ref().map(|sms| sms::SmsSender::start(sms, database_url)).transpose()?,
            email: email::EmailProvider::start(&settings.email).await?,
            suppressions,
            audit,
        })
    }

    /// Runs one attempt of `job`. The payload was validated at enqueue; one that no longer
    /// reads (a foreign writer) is a permanent failure, never a panic.
    pub async fn run(&self, job: &Leased, payload: &str) -> Result<Delivered, JobError> {
        let unreadable =
            |e: serde_json::Error| JobError::Permanent(format!("the payload does not read as {} ({e})", job.kind));
        match job.kind {
            Kind::Webhook => {
                let sender =
                    self.webhook.as_ref().ok_or_else(|| JobError::Retry("this worker has no webhook sender".into()))?;
                let webhook: jobs::payload::Webhook = serde_json::from_str(payload).map_err(unreadable)?;
                let delivery = sender.deliver(&job.id, &webhook, job.traceparent.as_deref());
                match &self.flow {
                    Some(flow) => flow.gate(job, &webhook.url, delivery).await,
                    None => delivery.await,
                }
            }
            Kind::OtpSms => {
                let sender =
                    self.sms.as_ref().ok_or_else(|| JobError::Retry("this worker has no SMS sender".into()))?;
                // The TTL is checked inside, right before the provider is called.
                sender.deliver(job, &serde_json::from_str(payload).map_err(unreadable)?).await
            }
            Kind::Email => {
                let email: jobs::payload::Email = serde_json::from_str(payload).map_err(unreadable)?;
                self.refuse_suppressed(&email).await?;
                self.email.send(&job.id, &email).await
            }
            Kind::AuditLog => {
                let writer =
                    self.audit.as_ref().ok_or_else(|| JobError::Retry("this worker has no audit-log writer".into()))?;
                writer.write(&job.id, &serde_json::from_str(payload).map_err(unreadable)?).await
            }
        }
    }
}

impl Deliveries {
    /// Fails an email with a recipient (to, cc or bcc) on the suppression list, before any
    /// provider is called: one `HMGET` for all its recipients. The whole message is refused,
    /// not only the suppressed recipient: a message is one send, and its other recipients see
    /// the suppressed one in its headers.
    async fn refuse_suppressed(&self, email: &jobs::payload::Email) -> Result<(), JobError> {
        let recipients = email.to.iter().chain(&email.cc).chain(&email.bcc).map(String::as_str);
        let listed = self.suppressions.first_listed(recipients).await;
        match listed.map_err(|e| JobError::Retry(format!("could not read the suppression list: {e}")))? {
            None => Ok(()),
            Some(entry) => {
                metrics::counter!("jobplane_email_suppressed_total", "reason" => entry.reason.as_str()).increment(1);
                Err(JobError::Suppressed(format!(
                    "{} is on the suppression list ({} at {})",
                    entry.address,
                    entry.reason.as_str(),
                    entry.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )))
            }
        }
    }

    /// At shutdown: waits, at most `limit`, for the records of the deliveries made so far.
    pub async fn flush(&self, limit: Duration) {
        if let Some(sms) = &self.sms {
            sms.flush(limit).await;
        }
    }
}

/// How long to wait, from a `Retry-After` header: delay-seconds or an HTTP date; at most a day.
pub fn retry_after(value: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let text = value?.to_str().ok()?.trim();
    let wait = if let Ok(seconds) = text.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
        (at.with_timezone(&Utc) - Utc::now()).to_std().unwrap_or(Duration::ZERO)
    };
    Some(wait.min(Duration::from_hours(24)))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after(Some(&HeaderValue::from_static("3"))), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(Some(&HeaderValue::from_static("999999"))), Some(Duration::from_hours(24)));
        assert_eq!(retry_after(Some(&HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"))), Some(Duration::ZERO));
        let later = (Utc::now() + chrono::Duration::seconds(60)).to_rfc2822();
        let wait = retry_after(Some(&HeaderValue::from_str(&later).unwrap())).unwrap();
        assert!((Duration::from_secs(58)..=Duration::from_mins(1)).contains(&wait), "{wait:?}");
        assert_eq!(retry_after(Some(&HeaderValue::from_static("soon"))), None);
        assert_eq!(retry_after(None), None);
    }
}
