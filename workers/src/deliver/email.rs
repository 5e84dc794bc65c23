//! Email: Amazon SES v2 `SendEmail` (`EMAIL_PROVIDER=ses`), or a line in the log (`log`, the
//! default, for development).
//!
//! SES is reached through the AWS SDK's standard environment (`AWS_REGION`, credentials,
//! `AWS_ENDPOINT_URL_SESV2` / `AWS_ENDPOINT_URL` for a local emulator). The SDK's own retries
//! are off: the job's durable retry with backoff (`jobs::retry`) is the only retry there is.
//! A rejected message, an unverified sender, a suspended account, a malformed request or an
//! unknown template is permanent; throttling, a paused account, 5xx, timeouts and network
//! failures are retried. Error texts carry what SES says, never the mail's content.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::operation::send_email::SendEmailError;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message, MessageTag, Template};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use jobs::payload::Email;
use jobs::settings::{Env, SettingError};

use crate::outcome::{Delivered, JobError};

/// Longest error text kept from SES (its messages are short; this bounds a misbehaving peer).
const ERROR_TEXT: usize = 512;
/// How long the start may wait for the credential chain (a role or SSO may take a round trip).
const CREDENTIALS_AT_START: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum EmailProvider {
    /// Writes a line per message to the log: the number of recipients, never the content.
    Log,
    Ses(SesSender),
}

/// `EMAIL_PROVIDER` and, with `ses`, `EMAIL_FROM` and `EMAIL_TIMEOUT_MS`, read and checked at
/// start. The SDK's own settings (region, credentials) are checked when the client is built.
#[derive(Debug, Clone)]
pub enum EmailSettings {
    Log,
    Ses {
        from: String,
        timeout: Duration,
        /// `SES_CONFIGURATION_SET`: the configuration set every message is sent with, whose
        /// event destination (SNS) reports bounces, complaints and deliveries back
        /// (`POST /v1/callbacks/ses`). Each message carries the tag `jobplane_job_id`, which
        /// SES echoes in `mail.tags`, so a report finds its job without a lookup table.
        configuration_set: Option<String>,
    },
}

impl EmailSettings {
    /// `consumes`: this worker runs email jobs. One that runs none never sends one, so SES
    /// need not be set up there.
    pub fn from_env(env: &Env, consumes: bool) -> Result<Self, SettingError> {
        match env.or("EMAIL_PROVIDER", "log").as_str() {
            "ses" if consumes => Self::ses(env),
            "log" | "ses" => Ok(Self::Log),
            other => Err(SettingError::new("EMAIL_PROVIDER", format!("`{other}` is not ses or log"))),
        }
    }

    fn ses(env: &Env) -> Result<Self, SettingError> {
        let from = env
            .require("EMAIL_FROM", "the default sender with EMAIL_PROVIDER=ses, such as Shop <noreply@example.org>")?;
        if !jobs::payload::is_mailbox(from) {
            return Err(SettingError::new(
                "EMAIL_FROM",
                format!("`{from}` is not an address such as Shop <noreply@example.org>"),
            ));
        }
        let timeout = env.millis("EMAIL_TIMEOUT_MS", 30_000)?;
        if timeout.is_zero() {
            return Err(SettingError::new("EMAIL_TIMEOUT_MS", "must be at least 1"));
        }
        let configuration_set = match env.get("SES_CONFIGURATION_SET").filter(|s| !s.is_empty()) {
            Some(name)
                if name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Some(name.to_owned())
            }
            Some(_) => {
                return Err(SettingError::new(
                    "SES_CONFIGURATION_SET",
                    "must be an SES configuration set name: 1 to 64 letters, digits, `-` or `_`",
                ));
            }
            None => None,
        };
        Ok(Self::Ses { from: from.to_owned(), timeout, configuration_set })
    }
}

impl EmailProvider {
    /// With SES, builds its client and checks that the SDK's settings are usable, naming the
    /// variable otherwise.
    pub async fn start(settings: &EmailSettings) -> Result<Self, SettingError> {
        match settings {
            EmailSettings::Log => Ok(Self::Log),
            EmailSettings::Ses { from, timeout, configuration_set } => {
                Ok(Self::Ses(SesSender::start(from, *timeout, configuration_set.clone()).await?))
            }
        }
    }

    pub async fn send(&self, job_id: &str, email: &Email) -> Result<Delivered, JobError> {
        match self {
            Self::Log => {
                let recipients = email.to.len() + email.cc.len() + email.bcc.len();
                tracing::info!(
                    job_id,
                    recipients,
                    template = email.template.as_ref().map(|t| t.name.as_str()),
                    "email (log provider): sent"
                );
                Ok(Delivered::done())
            }
            Self::Ses(ses) => ses.send(job_id, email).await,
        }
    }
}

/// Sends through SES v2 with one attempt per job attempt.
#[derive(Debug)]
pub struct SesSender {
    client: aws_sdk_sesv2::Client,
    /// `EMAIL_FROM`: the sender of messages whose payload names none.
    from: String,
    /// `SES_CONFIGURATION_SET`.
    configuration_set: Option<String>,
}

impl SesSender {
    async fn start(from: &str, timeout: Duration, configuration_set: Option<String>) -> Result<Self, SettingError> {
        let config = load_aws(timeout).await;
        if config.region().is_none() {
            return Err(SettingError::new(
                "AWS_REGION",
                "is required with EMAIL_PROVIDER=ses: the SES region, such as eu-west-1 (or AWS_DEFAULT_REGION, or a profile's region)",
            ));
        }
        check_credentials(&config).await?;
        // The service config is built from the shared one; retries are off there too, explicitly.
        let ses = aws_sdk_sesv2::config::Builder::from(&config).retry_config(RetryConfig::disabled()).build();
        Ok(Self { client: aws_sdk_sesv2::Client::from_conf(ses), from: from.to_owned(), configuration_set })
    }

    async fn send(&self, job_id: &str, email: &Email) -> Result<Delivered, JobError> {
        let tag = MessageTag::builder().name("jobplane_job_id").value(job_id).build().map_err(permanent)?;
        let destination = Destination::builder()
            .set_to_addresses(Some(email.to.clone()))
            .set_cc_addresses(non_empty(&email.cc))
            .set_bcc_addresses(non_empty(&email.bcc))
            .build();
        let sent = self
            .client
            .send_email()
            .from_email_address(email.from.as_deref().unwrap_or(&self.from))
            .destination(destination)
            .set_reply_to_addresses(non_empty(&email.reply_to))
            .content(content(email)?)
            .email_tags(tag)
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await
            .map_err(|e| judge(&e))?;
        tracing::debug!(job_id, message_id = sent.message_id(), "email sent through SES");
        Ok(sent.message_id().map_or_else(Delivered::done, Delivered::with_id))
    }
}

/// The AWS SDK's standard configuration (region, credentials, endpoints from the environment
/// and profiles), with rustls over ring, no SDK retries, and our timeouts. No proxy: this
/// client uses one only when given one in code (it reads no `HTTPS_PROXY`), and it reaches only
/// the AWS endpoints the operator's settings name, never a producer's URL.
async fn load_aws(timeout: Duration) -> aws_config::SdkConfig {
    let http =
        aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .operation_timeout(timeout)
        .build();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts)
        .load()
        .await
}

/// Resolves credentials once at start, so a worker without any says so in one line instead of
/// failing every email.
async fn check_credentials(config: &aws_config::SdkConfig) -> Result<(), SettingError> {
    use aws_sdk_sesv2::config::ProvideCredentials;
    let unusable = |why: String| {
        SettingError::new(
            "AWS_ACCESS_KEY_ID",
            format!(
                "no usable AWS credentials for SES: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile or role ({why})"
            ),
        )
    };
    let provider = config.credentials_provider().ok_or_else(|| unusable("no credential provider".into()))?;
    match tokio::time::timeout(CREDENTIALS_AT_START, provider.provide_credentials()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unusable(one_line(&e))),
        Err(_) => Err(unusable(format!("none found within {} s", CREDENTIALS_AT_START.as_secs()))),
    }
}

/// An error and its sources on one line (the credential chain reports one line per provider).
fn one_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text = format!("{text}: {e}");
        source = e.source();
    }
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

fn non_empty(list: &[String]) -> Option<Vec<String>> {
    (!list.is_empty()).then(|| list.to_vec())
}

fn permanent(e: impl std::fmt::Display) -> JobError {
    JobError::Permanent(format!("the email cannot be built: {e}"))
}

/// `template` (an SES template and its JSON data), or a simple message: subject, text and/or html.
fn content(email: &Email) -> Result<EmailContent, JobError> {
    if let Some(template) = &email.template {
        let data = serde_json::to_string(&template.data).map_err(permanent)?;
        let template = Template::builder().template_name(&template.name).template_data(data).build();
        return Ok(EmailContent::builder().template(template).build());
    }
    let subject = email.subject.as_deref().ok_or_else(|| permanent("neither subject nor template"))?;
    let utf8 = |data: &str| Content::builder().data(data).charset("UTF-8").build().map_err(permanent);
    let body = Body::builder()
        .set_text(email.text.as_deref().map(utf8).transpose()?)
        .set_html(email.html.as_deref().map(utf8).transpose()?)
        .build();
    Ok(EmailContent::builder().simple(Message::builder().subject(utf8(subject)?).body(body).build()).build())
}

/// Error codes AWS uses for throttling outside SES's modelled errors: the kind slows down.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestLimitExceeded",
    "SlowDown",
];

/// Error codes AWS uses for transient failures outside SES's modelled errors.
const RETRYABLE_CODES: &[&str] =
    &["RequestTimeout", "RequestTimeoutException", "ServiceUnavailable", "InternalFailure"];

/// What a failed `SendEmail` means for the job.
fn judge(error: &SdkError<SendEmailError>) -> JobError {
    match error {
        SdkError::ServiceError(context) => {
            let raw = context.raw();
            let retry_after = raw.headers().get("retry-after");
            judge_service(context.err(), raw.status().as_u16(), retry_after)
        }
        SdkError::TimeoutError(_) => JobError::Retry("SES did not answer in time (EMAIL_TIMEOUT_MS)".into()),
        SdkError::DispatchFailure(_) => JobError::Retry(bounded(format!("SES unreachable: {}", one_line(error)))),
        SdkError::ResponseError(e) => JobError::Retry(bounded(format!(
            "SES answered HTTP {} with a reply that does not read: {}",
            e.raw().status().as_u16(),
            one_line(error)
        ))),
        // Construction failures and anything newer: a fault on our side, not the message's.
        _ => JobError::Retry(bounded(format!("SES request failed: {}", one_line(error)))),
    }
}

fn judge_service(err: &SendEmailError, status: u16, retry_after: Option<&str>) -> JobError {
    let code = err.code().unwrap_or("unknown error");
    let message = bounded(format!("SES {code} (HTTP {status}): {}", err.message().unwrap_or("no message")));
    let throttled = |message: String| {
        let hint = retry_after.and_then(|v| reqwest::header::HeaderValue::from_str(v).ok());
        JobError::Throttled { after: super::retry_after(hint.as_ref()), message }
    };
    let retry = |message: String| {
        let hint = retry_after.and_then(|v| reqwest::header::HeaderValue::from_str(v).ok());
        match super::retry_after(hint.as_ref()) {
            Some(after) => JobError::RetryAfter { after, message },
            None => JobError::Retry(message),
        }
    };
    match err {
        SendEmailError::MessageRejected(_)
        | SendEmailError::MailFromDomainNotVerifiedException(_)
        | SendEmailError::AccountSuspendedException(_)
        | SendEmailError::BadRequestException(_)
        | SendEmailError::NotFoundException(_) => JobError::Permanent(message),
        // SES's sending rate: the whole kind slows down (jobs::rate), not only this message.
        SendEmailError::TooManyRequestsException(_) => throttled(message),
        _ if status == 429 || THROTTLING_CODES.contains(&code) => throttled(message),
        SendEmailError::LimitExceededException(_) | SendEmailError::SendingPausedException(_) => retry(message),
        // Credentials or permissions (401/403) are an operator's fix, not the message's fault.
        _ if status >= 500 || matches!(status, 401 | 403 | 408 | 429) || RETRYABLE_CODES.contains(&code) => {
            retry(message)
        }
        _ => JobError::Permanent(message),
    }
}

fn bounded(mut text: String) -> String {
    if text.len() > ERROR_TEXT {
        let mut end = ERROR_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use aws_sdk_sesv2::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_sesv2::types::error::{MessageRejected, NotFoundException, TooManyRequestsException};

    use super::*;

    fn meta(code: &str, message: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).message(message).build()
    }

    #[test]
    fn modelled_errors_are_permanent_or_retried() {
        let rejected = SendEmailError::MessageRejected(
            MessageRejected::builder()
                .message("Email address not verified a@example.org")
                .meta(meta("MessageRejected", "Email address not verified a@example.org"))
                .build(),
        );
        let e = judge_service(&rejected, 400, None);
        assert!(
            matches!(&e, JobError::Permanent(m) if m == "SES MessageRejected (HTTP 400): Email address not verified a@example.org"),
            "{e:?}"
        );
        let unknown_template = SendEmailError::NotFoundException(
            NotFoundException::builder().meta(meta("NotFoundException", "no t")).build(),
        );
        assert!(matches!(judge_service(&unknown_template, 404, None), JobError::Permanent(_)));
        let throttled = SendEmailError::TooManyRequestsException(
            TooManyRequestsException::builder().meta(meta("TooManyRequestsException", "slow down")).build(),
        );
        assert!(matches!(judge_service(&throttled, 429, None), JobError::Throttled { after: None, .. }));
        assert!(matches!(
            judge_service(&throttled, 429, Some("7")),
            JobError::Throttled { after: Some(after), .. } if after == Duration::from_secs(7)
        ));
    }

    #[test]
    fn unmodelled_errors_follow_their_code_and_status() {
        let generic = |code: &str| SendEmailError::generic(meta(code, "m"));
        assert!(matches!(judge_service(&generic("Throttling"), 400, None), JobError::Throttled { .. }));
        assert!(matches!(judge_service(&generic("InternalFailure"), 500, None), JobError::Retry(_)));
        assert!(matches!(judge_service(&generic("Whatever"), 503, None), JobError::Retry(_)));
        assert!(matches!(judge_service(&generic("AccessDeniedException"), 403, None), JobError::Retry(_)));
        assert!(matches!(judge_service(&generic("ValidationException"), 400, None), JobError::Permanent(_)));
    }

    #[test]
    fn transport_failures_are_retried() {
        let timeout: SdkError<SendEmailError> = SdkError::timeout_error("operation timed out");
        assert!(matches!(judge(&timeout), JobError::Retry(m) if m.contains("in time")));
        let refused: SdkError<SendEmailError> =
            SdkError::dispatch_failure(ConnectorError::io("connection refused".into()));
        let e = judge(&refused);
        assert!(
            matches!(&e, JobError::Retry(m) if m == "SES unreachable: dispatch failure: io error: connection refused"),
            "{e:?}"
        );
    }

    #[test]
    fn content_is_simple_or_a_template() {
        let simple: Email = serde_json::from_value(serde_json::json!({
            "to": "a@example.org", "subject": "Hi", "text": "plain", "html": "<p>rich</p>"
        }))
        .unwrap();
        let built = content(&simple).unwrap();
        let message = built.simple().unwrap();
        assert_eq!(message.subject().unwrap().data(), "Hi");
        assert_eq!(message.body().unwrap().text().unwrap().data(), "plain");
        assert_eq!(message.body().unwrap().html().unwrap().charset(), Some("UTF-8"));
        let templated: Email = serde_json::from_value(serde_json::json!({
            "to": "a@example.org", "template": {"name": "welcome", "data": {"name": "Ada"}}
        }))
        .unwrap();
        let built = content(&templated).unwrap();
        assert_eq!(built.template().unwrap().template_name(), Some("welcome"));
        assert_eq!(built.template().unwrap().template_data(), Some(r#"{"name":"Ada"}"#));
        let neither: Email = serde_json::from_value(serde_json::json!({"to": "a@example.org"})).unwrap();
        assert!(matches!(content(&neither), Err(JobError::Permanent(_))));
    }

    #[test]
    fn the_configuration_set_is_checked_at_start() {
        let base = [("EMAIL_PROVIDER", "ses"), ("EMAIL_FROM", "a@example.org")];
        let with = |name: &'static str| {
            let pairs: Vec<(&str, &str)> = base.iter().copied().chain([("SES_CONFIGURATION_SET", name)]).collect();
            EmailSettings::from_env(&Env::from_pairs(&pairs), true)
        };
        assert!(
            matches!(with("jobplane-events_1"), Ok(EmailSettings::Ses { configuration_set: Some(s), .. }) if s == "jobplane-events_1")
        );
        assert!(matches!(with(""), Ok(EmailSettings::Ses { configuration_set: None, .. })));
        let e = with("no spaces").unwrap_err().to_string();
        assert!(e.starts_with("SES_CONFIGURATION_SET: "), "{e}");
    }

    #[test]
    fn long_texts_are_bounded_on_a_char_boundary() {
        let text = bounded("é".repeat(600));
        assert!(text.len() <= ERROR_TEXT + '…'.len_utf8());
        assert!(text.ends_with('…'));
    }
}
