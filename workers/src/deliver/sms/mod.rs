//! OTP SMS: the job's template is rendered, its TTL checked right before the provider is
//! called (on every attempt, so a retry never sends a dead code), the text sent through the
//! provider `SMS_PROVIDER` names, and each attempt recorded in `sms_deliveries` off the
//! job's path.
//!
//! The code never leaves this module except inside the request to the provider: error texts
//! (which become `last_error`, attempt records, logs and `sms_deliveries.error`) are redacted
//! here whatever a provider put in them, so a gateway that echoes the request cannot leak it.

mod gateway;
mod mitake;
mod record;
mod twilio;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use jobs::payload::OtpSms;
use jobs::queue::Leased;
use jobs::settings::{Env, SettingError};
use jobs::sms_templates::SmsTemplates;

use super::http;
use crate::outcome::{Delivered, JobError};

/// What replaces the code wherever a text might show it.
const CODE_MASK: &str = "[code]";

/// One SMS to send. Its `Debug` shows neither the text nor the full number.
pub struct Message<'a> {
    /// The job id: the same on every attempt, so a provider can deduplicate by it.
    pub job_id: &'a str,
    /// E.164.
    pub to: &'a str,
    /// The rendered text, holding the code.
    pub body: &'a str,
    code: &'a str,
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("job_id", &self.job_id)
            .field("to", &mask(self.to))
            .field("body", &"[redacted]")
            .finish()
    }
}

impl Message<'_> {
    /// `text` without the full number (masked) or the code, for anything kept or logged.
    pub fn redact(&self, text: &str) -> String {
        let masked = mask(self.to);
        let digits = self.to.trim_start_matches('+');
        text.replace(self.to, &masked).replace(digits, &masked).replace(self.code, CODE_MASK)
    }

    /// `": <text>"`: one redacted line of at most 256 characters of a provider's `text`,
    /// redacted before it is cut, so no part of the code survives at the cut.
    fn snippet(&self, text: &str) -> String {
        let masked = mask(self.to);
        let digits = self.to.trim_start_matches('+');
        http::snippet(text, &[(self.to, &masked), (digits, &masked), (self.code, CODE_MASK)])
    }

    /// `HTTP <status>: <redacted snippet of the body>`.
    fn describe(&self, answer: &http::Answer) -> String {
        format!("HTTP {}{}", answer.status.as_u16(), self.snippet(&String::from_utf8_lossy(&answer.body)))
    }
}

/// What a provider reports of a sent message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    /// The provider's id of the message (Twilio's `sid`); lands on the job as `provider_message_id`.
    pub message_id: Option<String>,
    /// The price, as the provider states it (Twilio: `price` and `price_unit`).
    pub cost: Option<String>,
}

/// A way to send an SMS (`SMS_PROVIDER`). Errors follow the job outcomes: `Permanent` for a
/// number that cannot receive it, `Retry`/`RetryAfter` for the rest.
pub trait SmsProvider: Send + Sync + fmt::Debug {
    /// `twilio`, `mitake`, `http` or `log`, as recorded in `sms_deliveries.provider`.
    fn name(&self) -> &'static str;

    fn send<'a>(&'a self, message: &'a Message<'a>) -> BoxFuture<'a, Result<Sent, JobError>>;
}

/// `SMS_PROVIDER=log`, for development: writes the text with the code masked and the number masked.
#[derive(Debug)]
struct LogProvider;

impl SmsProvider for LogProvider {
    fn name(&self) -> &'static str {
        "log"
    }

    fn send<'a>(&'a self, message: &'a Message<'a>) -> BoxFuture<'a, Result<Sent, JobError>> {
        tracing::info!(job_id = message.job_id, to = %mask(message.to), text = %message.redact(message.body), "sms (log provider)");
        Box::pin(std::future::ready(Ok(Sent::default())))
    }
}

/// Sends the OTP SMS jobs: templates, the TTL check, the provider, the delivery records.
#[derive(Debug)]
pub struct SmsSender {
    provider: Arc<dyn SmsProvider>,
    templates: SmsTemplates,
    records: record::Recorder,
}

/// `SMS_PROVIDER` and its settings, `SMS_TIMEOUT_MS` and `SMS_TEMPLATE_<NAME>`, read and
/// checked at start.
#[derive(Debug, Clone)]
pub struct SmsSettings {
    timeout: Duration,
    provider: ProviderSettings,
    templates: SmsTemplates,
}

#[derive(Debug, Clone)]
enum ProviderSettings {
    Log,
    Twilio(twilio::TwilioSettings),
    Http(gateway::GatewaySettings),
    Mitake(mitake::MitakeSettings),
}

impl SmsSettings {
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let timeout = env.millis("SMS_TIMEOUT_MS", 10_000)?;
        if timeout.is_zero() || timeout > Duration::from_mins(2) {
            return Err(SettingError::new("SMS_TIMEOUT_MS", "must be between 1 and 120000"));
        }
        let callbacks = jobs::callbacks::CallbackSettings::from_env(env)?;
        let provider = match env.or("SMS_PROVIDER", "log").as_str() {
            "log" => ProviderSettings::Log,
            "twilio" => ProviderSettings::Twilio(twilio::TwilioSettings::from_env(env, &callbacks)?),
            "http" => ProviderSettings::Http(gateway::GatewaySettings::from_env(env)?),
            "mitake" => ProviderSettings::Mitake(mitake::MitakeSettings::from_env(env, &callbacks)?),
            other => {
                return Err(SettingError::new("SMS_PROVIDER", format!("`{other}` is not twilio, mitake, http or log")));
            }
        };
        Ok(Self { timeout, provider, templates: SmsTemplates::from_env(env)? })
    }
}

impl SmsSender {
    /// The provider `settings` name; records go to `database_url`.
    pub fn start(settings: &SmsSettings, database_url: &str) -> Result<Self, SettingError> {
        let provider: Arc<dyn SmsProvider> = match &settings.provider {
            ProviderSettings::Log => Arc::new(LogProvider),
            ProviderSettings::Twilio(twilio) => Arc::new(twilio::Twilio::new(twilio, settings.timeout)?),
            ProviderSettings::Http(gateway) => Arc::new(gateway::Gateway::new(gateway, settings.timeout)?),
            ProviderSettings::Mitake(mitake) => Arc::new(mitake::Mitake::new(mitake, settings.timeout)?),
        };
        let pool = db::pool(database_url, 2).map_err(|e| SettingError::new("DATABASE_URL", e.to_string()))?;
        Ok(Self { provider, templates: settings.templates.clone(), records: record::Recorder::spawn(pool) })
    }

    /// One attempt of `otp`: never sent once its TTL has passed.
    pub async fn deliver(&self, job: &Leased, otp: &OtpSms) -> Result<Delivered, JobError> {
        let template = otp.template.as_deref().unwrap_or(jobs::sms_templates::DEFAULT_NAME);
        let body = self.templates.render(otp, otp.code.expose()).ok_or_else(|| {
            JobError::Permanent(format!("the template `{template}` is not configured on this worker (SMS_TEMPLATE_*)"))
        })?;
        let message = Message { job_id: &job.id, to: &otp.to, body: &body, code: otp.code.expose() };
        // Right before the call, on every attempt: a code past its TTL is worthless, and
        // sending it would only confuse its recipient.
        if Utc::now() > job.created_at + chrono::Duration::seconds(i64::from(otp.ttl_seconds)) {
            return Err(JobError::Expired(format!("not delivered within its ttl of {} s", otp.ttl_seconds)));
        }
        let result = self.provider.send(&message).await.map_err(|e| redacted(&message, e));
        let status = if result.is_ok() { "sent" } else { "failed" };
        metrics::counter!("jobplane_sms_sent_total", "provider" => self.provider.name(), "status" => status)
            .increment(1);
        self.records.record(record::Row::of(job, &message, self.provider.name(), &result));
        let sent = result?;
        Ok(sent.message_id.map_or_else(Delivered::done, Delivered::with_id))
    }

    /// Waits, at most `limit`, until the delivery records sent so far are written (at shutdown).
    pub async fn flush(&self, limit: Duration) {
        self.records.flush(limit).await;
    }
}

/// The error with the code and the full number taken out, whatever the provider wrote.
fn redacted(message: &Message<'_>, error: JobError) -> JobError {
    match error {
        JobError::Retry(text) => JobError::Retry(message.redact(&text)),
        JobError::RetryAfter { after, message: text } => JobError::RetryAfter { after, message: message.redact(&text) },
        JobError::Throttled { after, message: text } => JobError::Throttled { after, message: message.redact(&text) },
        JobError::Permanent(text) => JobError::Permanent(message.redact(&text)),
        JobError::Expired(text) => JobError::Expired(message.redact(&text)),
        JobError::Suppressed(text) => JobError::Suppressed(message.redact(&text)),
        JobError::Deferred => JobError::Deferred,
    }
}

/// A provider's id or price, kept only when it is short visible ASCII (it is stored and shown).
fn clean(value: Option<String>, max: usize) -> Option<String> {
    value.filter(|v| !v.is_empty() && v.len() <= max && v.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
}

/// `+886912345678` → `+886*******78`: enough to tell numbers apart in a log, not to dial one.
pub fn mask(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    chars.iter().enumerate().map(|(i, c)| if i < 4 || i >= chars.len() - 2 { *c } else { '*' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message<'static> {
        Message { job_id: "j1", to: "+886912345678", body: "Your verification code is 482913.", code: "482913" }
    }

    #[test]
    fn numbers_are_masked() {
        assert_eq!(super::mask("+886912345678"), "+886*******78");
        assert_eq!(super::mask("+1234"), "*****");
    }

    #[test]
    fn texts_lose_the_code_and_the_number() {
        let m = message();
        assert_eq!(
            m.redact("To=%2B886912345678&Body=Your+code+482913, to 886912345678"),
            "To=%2B+886*******78&Body=Your+code+[code], to +886*******78"
        );
        let debug = format!("{m:?}");
        assert!(!debug.contains("482913") && !debug.contains("912345678"), "{debug}");
        let error = redacted(&m, JobError::Permanent("HTTP 400: bad body Your verification code is 482913.".into()));
        assert_eq!(error.to_string(), "HTTP 400: bad body Your verification code is [code].");
    }

    #[test]
    fn provider_values_are_kept_only_when_clean() {
        assert_eq!(clean(Some("SM123".into()), 64).as_deref(), Some("SM123"));
        assert_eq!(clean(Some("a\nb".into()), 64), None);
        assert_eq!(clean(Some("x".repeat(65)), 64), None);
        assert_eq!(clean(Some(String::new()), 64), None);
    }
}
