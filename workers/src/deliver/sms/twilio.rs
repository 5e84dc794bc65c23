//! `SMS_PROVIDER=twilio`: Twilio's Messages API. `POST {TWILIO_BASE_URL}/2010-04-01/Accounts/
//! {TWILIO_ACCOUNT_SID}/Messages.json`, form-encoded `To`, `From` (or `MessagingServiceSid`
//! when `TWILIO_FROM` is a Messaging Service SID) and `Body`, with HTTP basic auth
//! `TWILIO_ACCOUNT_SID:TWILIO_AUTH_TOKEN`. A 2xx (Twilio answers 201) is sent; its `sid`
//! becomes the job's `provider_message_id`. With `CALLBACK_BASE_URL` set, `StatusCallback` is
//! `{CALLBACK_BASE_URL}/v1/callbacks/twilio?job=<job id>`: Twilio reports the final status
//! there, signed (producer-api's `callbacks::twilio`).
//!
//! Failures, by Twilio's error body `{code, message, more_info, status}`:
//! - a number that cannot receive the SMS (invalid, unreachable, landline, opted out, region
//!   not enabled: [`RECIPIENT_CODES`]) is permanent: no retry can change it;
//! - 401, 403 and 404 (credentials refused, wrong account or base URL) and a refused sender
//!   ([`SENDER_CODES`], `TWILIO_FROM`) retry, logged as errors: an operator can fix them, and
//!   the OTP's TTL bounds how long it keeps trying;
//! - 408, 429, 5xx, a full sender queue (21611), timeouts and connection failures retry,
//!   not sooner than `Retry-After`; a 429 (Twilio's 20429) also slows the whole kind down
//!   (`JobError::Throttled`, `jobs::rate`);
//! - any other 4xx is permanent (the request itself is wrong).

use std::time::Duration;

use futures::future::BoxFuture;
use jobs::settings::{Env, SettingError};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{Message, Sent, SmsProvider, clean};
use crate::deliver::http::{self, Answer};
use crate::outcome::JobError;

/// The recipient cannot receive this SMS: 21211 invalid `To`, 21214 `To` cannot be reached,
/// 21217 not a valid number, 21219 `To` not verified (trial account), 21265 `To` is a short
/// code, 21266 `To` and `From` are the same, 21401 not a valid phone number, 21407 number type
/// cannot receive SMS, 21408 the destination's region is not enabled, 21421 invalid number,
/// 21601 not SMS-capable, 21604 `To` missing, 21608 unverified number (trial account),
/// 21610 the recipient opted out (STOP), 21612 `To`/`From` cannot be connected, 21614 not a
/// mobile number.
pub const RECIPIENT_CODES: [u32; 16] =
    [21211, 21214, 21217, 21219, 21265, 21266, 21401, 21407, 21408, 21421, 21601, 21604, 21608, 21610, 21612, 21614];

/// Our sender is refused, which an operator can fix (`TWILIO_FROM`): 21212 invalid `From`,
/// 21603 `From` missing, 21606 `From` cannot send SMS, 21659 `From` is not a Twilio number,
/// 21660 `From` belongs to another account.
pub const SENDER_CODES: [u32; 5] = [21212, 21603, 21606, 21659, 21660];

/// 21611: the sender's queue of outgoing messages is full; it drains by itself.
const QUEUE_FULL: u32 = 21_611;

/// The most of a success body read (Twilio's message resource is about 1 KiB).
const SUCCESS_READ: usize = 64 * 1024;

pub struct Twilio {
    client: reqwest::Client,
    url: String,
    account_sid: String,
    token: SecretString,
    from: (&'static str, String),
    /// `{CALLBACK_BASE_URL}/v1/callbacks/twilio`, when set.
    status_callback: Option<String>,
}

impl std::fmt::Debug for Twilio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Twilio")
            .field("account_sid", &self.account_sid)
            .field("token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// `TWILIO_*`, read and checked at start.
#[derive(Clone)]
pub struct TwilioSettings {
    account_sid: String,
    token: SecretString,
    from: (&'static str, String),
    /// `TWILIO_BASE_URL`, without its trailing `/`.
    base: String,
    status_callback: Option<String>,
}

impl std::fmt::Debug for TwilioSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioSettings")
            .field("account_sid", &self.account_sid)
            .field("token", &"[redacted]")
            .field("from", &self.from)
            // `TWILIO_BASE_URL` may carry a proxy's or an emulator's credentials.
            .field("base", &jobs::settings::redacted_url(&self.base))
            .field("status_callback", &self.status_callback)
            .finish()
    }
}

impl TwilioSettings {
    pub fn from_env(env: &Env, callbacks: &jobs::callbacks::CallbackSettings) -> Result<Self, SettingError> {
        let account_sid = env.require("TWILIO_ACCOUNT_SID", "the account SID, AC followed by 32 hex digits")?;
        if !is_sid(account_sid, "AC") {
            return Err(SettingError::new("TWILIO_ACCOUNT_SID", "must be AC followed by 32 hex digits"));
        }
        let token = env.require("TWILIO_AUTH_TOKEN", "the account's auth token")?;
        let from = sender(env.require(
            "TWILIO_FROM",
            "the sender: a Twilio number in E.164, an alphanumeric sender ID or a Messaging Service SID (MG...)",
        )?)
        .map_err(|problem| SettingError::new("TWILIO_FROM", problem))?;
        let base = http::http_url(&env.or("TWILIO_BASE_URL", "https://api.twilio.com"))
            .map_err(|problem| SettingError::new("TWILIO_BASE_URL", problem))?;
        Ok(Self {
            account_sid: account_sid.to_owned(),
            token: SecretString::from(token),
            from,
            base: base.trim_end_matches('/').to_owned(),
            status_callback: callbacks.url("/v1/callbacks/twilio"),
        })
    }
}

impl Twilio {
    pub fn new(settings: &TwilioSettings, timeout: Duration) -> Result<Self, SettingError> {
        let client = http::client_builder(concat!("Jobplane-SMS/", env!("CARGO_PKG_VERSION")), timeout)
            .build()
            .map_err(|e| SettingError::new("SMS_PROVIDER", format!("cannot build the HTTP client ({e})")))?;
        let TwilioSettings { account_sid, token, from, base, status_callback } = settings.clone();
        Ok(Self {
            client,
            url: format!("{base}/2010-04-01/Accounts/{account_sid}/Messages.json"),
            account_sid,
            token,
            from,
            status_callback,
        })
    }

    async fn post(&self, message: &Message<'_>) -> Result<Sent, JobError> {
        let callback = self.status_callback.as_ref().map(|url| format!("{url}?job={}", message.job_id));
        let mut form = vec![("To", message.to), ("Body", message.body), (self.from.0, self.from.1.as_str())];
        if let Some(callback) = &callback {
            form.push(("StatusCallback", callback.as_str()));
        }
        let response = self
            .client
            .post(&self.url)
            .basic_auth(&self.account_sid, Some(self.token.expose_secret()))
            .form(&form)
            .send()
            .await
            .map_err(|e| JobError::Retry(format!("Twilio: request failed: {}", http::transport_error(&e))))?;
        if !response.status().is_success() {
            return Err(judge(&Answer::read(response).await, message));
        }
        // Twilio took the message: whatever happens to the rest of the answer, it must not be sent again.
        let body = http::read_limited(response, SUCCESS_READ).await.unwrap_or_default();
        let created: Created = serde_json::from_slice(&body).unwrap_or_default();
        if created.sid.is_none() {
            tracing::warn!(job_id = message.job_id, "Twilio accepted the message without a readable sid");
        }
        let cost = created.price.map(|price| format!("{price} {}", created.price_unit.unwrap_or_default()));
        Ok(Sent { message_id: clean(created.sid, 64), cost: clean(cost.map(|c| c.trim().to_owned()), 32) })
    }
}

impl SmsProvider for Twilio {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn send<'a>(&'a self, message: &'a Message<'a>) -> BoxFuture<'a, Result<Sent, JobError>> {
        Box::pin(self.post(message))
    }
}

/// Twilio's message resource; only what is kept.
#[derive(Debug, Default, Deserialize)]
struct Created {
    sid: Option<String>,
    price: Option<String>,
    price_unit: Option<String>,
}

/// Twilio's error body.
#[derive(Debug, Deserialize)]
struct TwilioError {
    code: Option<u32>,
    message: Option<String>,
}

/// A failed answer as a job outcome; see the module's documentation.
fn judge(answer: &Answer, message: &Message<'_>) -> JobError {
    let status = answer.status.as_u16();
    let parsed: Option<TwilioError> = serde_json::from_slice(&answer.body).ok();
    let code = parsed.as_ref().and_then(|e| e.code);
    let text = match (code, parsed.as_ref().and_then(|e| e.message.as_deref())) {
        (Some(code), Some(said)) => format!("Twilio HTTP {status} error {code}{}", message.snippet(said)),
        _ => format!("Twilio {}", message.describe(answer)),
    };
    match (status, code) {
        (401 | 403 | 404, _) => {
            tracing::error!(
                job_id = message.job_id,
                status,
                code,
                "Twilio refused the account: check TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_BASE_URL; retrying"
            );
            JobError::Retry(format!("{text} (check TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_BASE_URL)"))
        }
        (_, Some(code)) if SENDER_CODES.contains(&code) => {
            tracing::error!(
                job_id = message.job_id,
                status,
                code,
                "Twilio refused the sender: check TWILIO_FROM; retrying"
            );
            JobError::Retry(format!("{text} (check TWILIO_FROM)"))
        }
        (_, Some(QUEUE_FULL)) => http::retry(answer.retry_after, text),
        (_, Some(code)) if RECIPIENT_CODES.contains(&code) => {
            JobError::Permanent(format!("{text} (the number cannot receive this SMS)"))
        }
        _ => answer.provider_error(text),
    }
}

/// `PREFIX` followed by 32 hex digits.
fn is_sid(value: &str, prefix: &str) -> bool {
    value.len() == 34 && value.starts_with(prefix) && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The form field and value of `TWILIO_FROM`.
fn sender(from: &str) -> Result<(&'static str, String), String> {
    if is_sid(from, "MG") {
        return Ok(("MessagingServiceSid", from.to_owned()));
    }
    let number =
        from.strip_prefix('+').is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()));
    let alphanumeric = (1..=11).contains(&from.len())
        && from.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && from.bytes().any(|b| b.is_ascii_alphabetic());
    if number || alphanumeric {
        Ok(("From", from.to_owned()))
    } else {
        Err("must be a number in E.164 (+14155550100), an alphanumeric sender ID of up to 11 characters, or a Messaging Service SID (MG followed by 32 hex digits)".into())
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;

    fn message() -> Message<'static> {
        Message { job_id: "j1", to: "+14155550100", body: "code 482913", code: "482913" }
    }

    fn answer(status: u16, body: &str, after: Option<u64>) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            retry_after: after.map(Duration::from_secs),
            body: body.as_bytes().to_vec(),
        }
    }

    fn twilio_error(status: u16, code: u32) -> Answer {
        let body = serde_json::json!({
            "code": code,
            "message": "The 'To' number +14155550100 is not a valid phone number.",
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        });
        answer(status, &body.to_string(), None)
    }

    #[test]
    fn recipient_errors_are_permanent_and_redacted() {
        for code in RECIPIENT_CODES {
            let JobError::Permanent(text) = judge(&twilio_error(400, code), &message()) else { panic!("{code}") };
            assert!(
                text.starts_with(&format!("Twilio HTTP 400 error {code}: The 'To' number +141******00 ")),
                "{text}"
            );
            assert!(!text.contains("4155550100"), "{text}");
        }
    }

    #[test]
    fn what_an_operator_or_time_can_fix_is_retried() {
        assert!(
            matches!(judge(&twilio_error(401, 20003), &message()), JobError::Retry(t) if t.contains("TWILIO_AUTH_TOKEN"))
        );
        assert!(matches!(judge(&twilio_error(403, 20003), &message()), JobError::Retry(_)));
        assert!(
            matches!(judge(&twilio_error(400, 21606), &message()), JobError::Retry(t) if t.contains("TWILIO_FROM"))
        );
        assert!(matches!(judge(&twilio_error(400, 21611), &message()), JobError::Retry(_)));
        assert!(matches!(
            judge(&answer(429, r#"{"code":20429,"message":"Too Many Requests"}"#, Some(7)), &message()),
            JobError::Throttled { after: Some(after), .. } if after == Duration::from_secs(7)
        ));
        let JobError::Retry(text) = judge(&answer(502, "<html>bad gateway</html>", None), &message()) else { panic!() };
        assert_eq!(text, "Twilio HTTP 502: <html>bad gateway</html>");
        assert!(matches!(judge(&twilio_error(400, 21602), &message()), JobError::Permanent(_)));
    }

    #[test]
    fn an_echoed_body_loses_the_code() {
        let JobError::Permanent(text) = judge(&answer(400, "Body=code+482913&To=%2B14155550100", None), &message())
        else {
            panic!()
        };
        assert_eq!(text, "Twilio HTTP 400: Body=code+[code]&To=%2B+141******00");
    }

    #[test]
    fn settings_are_checked() {
        let sid = "AC0123456789abcdef0123456789abcdef";
        let ok = [("TWILIO_ACCOUNT_SID", sid), ("TWILIO_AUTH_TOKEN", "t"), ("TWILIO_FROM", "+14155550100")];
        let none = jobs::callbacks::CallbackSettings::default();
        let settings = TwilioSettings::from_env(&Env::from_pairs(&ok), &none).unwrap();
        assert!(!format!("{settings:?}").contains("\"t\""));
        let twilio = Twilio::new(&settings, Duration::from_secs(1)).unwrap();
        assert_eq!(twilio.url, format!("https://api.twilio.com/2010-04-01/Accounts/{sid}/Messages.json"));
        assert!(!format!("{twilio:?}").contains("\"t\""));
        let error = |name: &str, value: &str| {
            let mut pairs = ok.to_vec();
            pairs.retain(|(n, _)| *n != name);
            pairs.push((name, value));
            TwilioSettings::from_env(&Env::from_pairs(&pairs), &none).unwrap_err().to_string()
        };
        assert!(error("TWILIO_ACCOUNT_SID", "").starts_with("TWILIO_ACCOUNT_SID: is required"));
        assert!(error("TWILIO_ACCOUNT_SID", "AC12").starts_with("TWILIO_ACCOUNT_SID: must be"));
        assert!(error("TWILIO_AUTH_TOKEN", "").starts_with("TWILIO_AUTH_TOKEN: is required"));
        assert!(error("TWILIO_FROM", "0912 345").starts_with("TWILIO_FROM: must be"));
        assert!(error("TWILIO_BASE_URL", "ftp://x").starts_with("TWILIO_BASE_URL: "));
        assert_eq!(sender("MG0123456789abcdef0123456789abcdef").unwrap().0, "MessagingServiceSid");
        assert_eq!(sender("Jobplane").unwrap(), ("From", "Jobplane".to_owned()));
    }
}
