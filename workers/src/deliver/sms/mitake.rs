//! `SMS_PROVIDER=mitake`: Mitake (三竹簡訊), the Taiwanese SMS gateway, through its HTTP API.
//!
//! One `POST {MITAKE_BASE_URL}/SmSend?CharsetURL=UTF8` per message, the fields form-encoded in
//! the body (never in the URL, which proxies and logs keep): `username`, `password`, `dstaddr`
//! (a Taiwanese mobile as `09xxxxxxxx`, any other number in E.164), `smbody` (a line break sent
//! as the character with code 6, as Mitake wants it), `clientid` (the job id: the gateway
//! refuses a second message with the same one, so a redelivery after a crash is not sent twice)
//! and, when `CALLBACK_BASE_URL` and `CALLBACK_SECRET` are set, `response`: the URL of the
//! delivery report, `{CALLBACK_BASE_URL}/v1/callbacks/mitake?secret=…&job=<id>`.
//!
//! The answer is `key=value` lines (`[1]`, `msgid=…`, `statuscode=…`, `AccountPoint=…`, and
//! `Duplicate=Y` for a `clientid` seen before). The wire format is the one Mitake's public
//! clients speak (the `mitake_sms` Ruby gem, `tw.com.mitake.sms` for Java, `Mitake.Sms.Core`
//! for .NET); the status codes are Mitake's published table (its HTTP API document, appendix
//! "statuscode", as the .NET client's `StatusFlag` enum carries it):
//! - `0` scheduled, `1`/`2` handed to the carrier, `4` delivered to the handset: accepted;
//!   `msgid` becomes the job's `provider_message_id`;
//! - `5` bad content, `6` bad number, `7` SMS disabled for the number, `8` expired undelivered,
//!   `9` scheduled send cancelled, `t` message expired, `u` empty body, `v` invalid mobile number,
//!   `x` too large, `y` bad parameters: permanent (no retry can change them);
//! - `c`/`d` no username/password, `e` wrong username or password, `f` account expired, `h`
//!   account disabled, `k` address not allowed, `m`/`n` password must be changed, `p` no right to
//!   use the HTTP API, `s` billing failed (no credit left): retried and logged as errors (an
//!   operator can fix them; the OTP's TTL bounds the tries);
//! - `a`/`b` sending suspended, `r` system paused, `l` too many connections, `*` system error,
//!   and any code not in the table: retried.
//!
//! The credit left (`AccountPoint`) is exported as `jobplane_sms_credit_remaining{provider}`
//! and logged as a warning below `MITAKE_LOW_CREDIT_WARNING`. The password never leaves the
//! request body: `Debug` hides it, and it is cut out of every error text, as given and
//! form-encoded, as is `CALLBACK_SECRET` (an echoed `response`).

use std::time::Duration;

use futures::future::BoxFuture;
use jobs::callbacks::CallbackSettings;
use jobs::settings::{Env, SettingError};
use secrecy::{ExposeSecret, SecretString};

use super::{Message, Sent, SmsProvider, clean};
use crate::deliver::http::{self, Answer};
use crate::outcome::JobError;

/// The API root Mitake documents for its HTTP API.
const DEFAULT_BASE: &str = "https://smsapi.mitake.com.tw/api/mtk";
/// The most of an answer read (a single send's answer is a few lines).
const ANSWER_READ: usize = 16 * 1024;
/// What Mitake wants for a line break in `smbody`.
const LINE_BREAK: char = '\u{6}';

/// `MITAKE_*` and the callback settings, read and checked at start.
#[derive(Clone)]
pub struct MitakeSettings {
    username: String,
    password: SecretString,
    /// `MITAKE_BASE_URL`, without its trailing `/`.
    base: String,
    /// `MITAKE_LOW_CREDIT_WARNING`: a warning when the credit left falls below it (0: never).
    low_credit: u64,
    callbacks: CallbackSettings,
}

impl std::fmt::Debug for MitakeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MitakeSettings")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("base", &jobs::settings::redacted_url(&self.base))
            .field("low_credit", &self.low_credit)
            .field("callbacks", &self.callbacks)
            .finish()
    }
}

impl MitakeSettings {
    pub fn from_env(env: &Env, callbacks: &CallbackSettings) -> Result<Self, SettingError> {
        let username = env.require("MITAKE_USERNAME", "the Mitake account's username")?;
        if username.len() > 64 || !username.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SettingError::new("MITAKE_USERNAME", "must be 1 to 64 visible ASCII characters"));
        }
        let password = env.require("MITAKE_PASSWORD", "the Mitake account's password")?;
        if password.len() > 128 || password.chars().any(char::is_control) {
            return Err(SettingError::new("MITAKE_PASSWORD", "must be 1 to 128 characters without control characters"));
        }
        let base = http::http_url(&env.or("MITAKE_BASE_URL", DEFAULT_BASE))
            .map_err(|problem| SettingError::new("MITAKE_BASE_URL", problem))?;
        Ok(Self {
            username: username.to_owned(),
            password: SecretString::from(password),
            base: base.trim_end_matches('/').to_owned(),
            low_credit: env.parse("MITAKE_LOW_CREDIT_WARNING", 100)?,
            callbacks: callbacks.clone(),
        })
    }
}

pub struct Mitake {
    client: reqwest::Client,
    url: String,
    username: String,
    password: SecretString,
    low_credit: u64,
    callbacks: CallbackSettings,
}

impl std::fmt::Debug for Mitake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mitake")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl Mitake {
    pub fn new(settings: &MitakeSettings, timeout: Duration) -> Result<Self, SettingError> {
        let client = http::client_builder(concat!("Jobplane-SMS/", env!("CARGO_PKG_VERSION")), timeout)
            .build()
            .map_err(|e| SettingError::new("SMS_PROVIDER", format!("cannot build the HTTP client ({e})")))?;
        let MitakeSettings { username, password, base, low_credit, callbacks } = settings.clone();
        Ok(Self { client, url: format!("{base}/SmSend?CharsetURL=UTF8"), username, password, low_credit, callbacks })
    }

    /// The delivery report's URL for job `id`, when callbacks are configured.
    fn report_url(&self, id: &str) -> Option<String> {
        let secret = self.callbacks.secret()?;
        let url = self.callbacks.url("/v1/callbacks/mitake")?;
        Some(format!("{url}?secret={}&job={id}", secret.expose_secret()))
    }

    async fn post(&self, message: &Message<'_>) -> Result<Sent, JobError> {
        let body = message.body.replace("\r\n", "\n").replace(['\n', '\r'], &LINE_BREAK.to_string());
        let number = dstaddr(message.to);
        let report = self.report_url(message.job_id);
        let mut form = vec![
            ("username", self.username.as_str()),
            ("password", self.password.expose_secret()),
            ("dstaddr", number.as_str()),
            ("smbody", body.as_str()),
            ("clientid", message.job_id),
        ];
        if let Some(report) = &report {
            form.push(("response", report.as_str()));
        }
        let response = self
            .client
            .post(&self.url)
            .form(&form)
            .send()
            .await
            .map_err(|e| JobError::Retry(format!("Mitake: request failed: {}", http::transport_error(&e))))?;
        if !response.status().is_success() {
            let answer = Answer::read(response).await;
            let said = message.snippet(&self.scrub(&String::from_utf8_lossy(&answer.body), message));
            return Err(answer.provider_error(format!("Mitake HTTP {}{said}", answer.status.as_u16())));
        }
        // The gateway answered: whatever its body says, it decides about this message alone.
        let text = match http::read_limited(response, ANSWER_READ).await {
            Ok(body) | Err(body) => String::from_utf8_lossy(&body).into_owned(),
        };
        let answer = Reply::parse(&text);
        self.note_credit(answer.credit, message.job_id);
        self.judge(&answer, message)
    }

    /// Exports the credit left and warns below the threshold.
    fn note_credit(&self, credit: Option<u64>, job_id: &str) {
        let Some(credit) = credit else { return };
        #[expect(clippy::cast_precision_loss, reason = "a credit of points, far below 2^52")]
        metrics::gauge!("jobplane_sms_credit_remaining", "provider" => "mitake").set(credit as f64);
        if credit < self.low_credit {
            tracing::warn!(
                job_id,
                credit,
                threshold = self.low_credit,
                "Mitake credit is low (AccountPoint below MITAKE_LOW_CREDIT_WARNING): top it up"
            );
        }
    }

    /// The answer as the job's outcome; see the module's documentation.
    fn judge(&self, answer: &Reply, message: &Message<'_>) -> Result<Sent, JobError> {
        let Some(code) = answer.status.as_deref() else {
            let said = message.snippet(&self.scrub(&answer.raw, message));
            return Err(JobError::Retry(format!("Mitake answered without a statuscode{said}")));
        };
        let said = answer.error.as_deref().map(|e| message.snippet(&self.scrub(e, message))).unwrap_or_default();
        let text = format!("Mitake statuscode {code}{said}");
        match Status::of(code) {
            Status::Accepted => Ok(Sent { message_id: clean(answer.msgid.clone(), 64), cost: None }),
            Status::Permanent(why) => Err(JobError::Permanent(format!("{text} ({why})"))),
            Status::Account(why) => {
                tracing::error!(
                    job_id = message.job_id,
                    statuscode = code,
                    "Mitake refused the account ({why}): check MITAKE_USERNAME, MITAKE_PASSWORD and the account; retrying"
                );
                Err(JobError::Retry(format!("{text} ({why}; check MITAKE_USERNAME and MITAKE_PASSWORD)")))
            }
            Status::Retry(why) => Err(JobError::Retry(format!("{text} ({why})"))),
        }
    }

    /// `text` from the gateway without the password (as given or form-encoded), CALLBACK_SECRET
    /// (in the echoed `response`) or the number as Mitake was given it
    /// (`09…`), before [`Message::snippet`] hides the code and the E.164 number: a gateway that
    /// echoes the request must not leak them.
    fn scrub(&self, text: &str, message: &Message<'_>) -> String {
        let password = self.password.expose_secret();
        // As sent (form-encoded, `+` or `%20` for a space) and as given.
        let encoded: String = url::form_urlencoded::byte_serialize(password.as_bytes()).collect();
        let spaced = encoded.replace('+', "%20");
        // CALLBACK_SECRET travels in `response`; url-safe, so the same encoded or not.
        let callback = self.callbacks.secret().map(|s| s.expose_secret().to_owned());
        let mut text = text.to_owned();
        for secret in [Some(encoded), Some(spaced), Some(password.to_owned()), callback].into_iter().flatten() {
            if !secret.is_empty() {
                text = text.replace(&secret, "[redacted]");
            }
        }
        text.replace(&dstaddr(message.to), &super::mask(message.to))
    }
}

impl SmsProvider for Mitake {
    fn name(&self) -> &'static str {
        "mitake"
    }

    fn send<'a>(&'a self, message: &'a Message<'a>) -> BoxFuture<'a, Result<Sent, JobError>> {
        Box::pin(self.post(message))
    }
}

/// `+8869xxxxxxxx` (a Taiwanese mobile) as Mitake's domestic `09xxxxxxxx`; any other number as given (E.164).
fn dstaddr(to: &str) -> String {
    match to.strip_prefix("+886") {
        Some(rest) if rest.len() == 9 && rest.starts_with('9') => format!("0{rest}"),
        _ => to.to_owned(),
    }
}

/// What the gateway answered to one send.
#[derive(Debug, Default, PartialEq, Eq)]
struct Reply {
    status: Option<String>,
    msgid: Option<String>,
    credit: Option<u64>,
    error: Option<String>,
    duplicate: bool,
    raw: String,
}

impl Reply {
    /// `key=value` lines (`\r\n` or `\n`); `[1]` and unknown keys are skipped.
    fn parse(text: &str) -> Self {
        let mut reply = Reply { raw: text.chars().take(512).collect(), ..Reply::default() };
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once('=') else { continue };
            let value = value.trim();
            match key.trim() {
                "statuscode" => reply.status = Some(value.to_ascii_lowercase()),
                "msgid" => reply.msgid = Some(value.to_owned()).filter(|v| !v.is_empty()),
                "AccountPoint" => reply.credit = value.parse().ok(),
                "Error" => reply.error = Some(value.to_owned()).filter(|v| !v.is_empty()),
                "Duplicate" => reply.duplicate = value.eq_ignore_ascii_case("y"),
                _ => {}
            }
        }
        reply
    }
}

/// A statuscode of Mitake's table, classified.
#[derive(Debug, PartialEq, Eq)]
enum Status {
    Accepted,
    Permanent(&'static str),
    Account(&'static str),
    Retry(&'static str),
}

impl Status {
    fn of(code: &str) -> Self {
        match code {
            "0" | "1" | "2" | "4" => Status::Accepted,
            "5" => Status::Permanent("the content has an error"),
            "6" => Status::Permanent("the number has an error"),
            "7" => Status::Permanent("SMS is disabled for this number"),
            "8" => Status::Permanent("expired without delivery"),
            "9" => Status::Permanent("the scheduled send was cancelled"),
            "t" => Status::Permanent("the message expired"),
            "u" => Status::Permanent("the message body is empty"),
            "v" => Status::Permanent("invalid mobile number"),
            "x" => Status::Permanent("the message is too large"),
            "y" => Status::Permanent("a parameter is wrong"),
            "c" | "d" => Status::Account("the username or password is missing"),
            "e" => Status::Account("wrong username or password"),
            "f" => Status::Account("the account has expired"),
            "h" => Status::Account("the account is disabled"),
            "k" => Status::Account("this address may not connect"),
            "m" | "n" => Status::Account("the password must be changed"),
            "p" => Status::Account("the account may not use the HTTP API"),
            "s" => Status::Account("billing failed: no credit left?"),
            "a" | "b" => Status::Retry("sending is suspended for now"),
            "r" => Status::Retry("the system is paused"),
            "l" => Status::Retry("too many connections at once"),
            "*" => Status::Retry("system error"),
            _ => Status::Retry("a code not in Mitake's table"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message<'static> {
        Message { job_id: "j1", to: "+886912345678", body: "code 482913", code: "482913" }
    }

    fn mitake(callbacks: &CallbackSettings) -> Mitake {
        let env = Env::from_pairs(&[("MITAKE_USERNAME", "acct"), ("MITAKE_PASSWORD", "pw-s3cret")]);
        Mitake::new(&MitakeSettings::from_env(&env, callbacks).unwrap(), Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn the_answer_is_parsed_and_classified() {
        let reply = Reply::parse("[1]\r\nmsgid=1010079522\r\nstatuscode=1\r\nAccountPoint=98\r\n");
        assert_eq!(
            (reply.status.as_deref(), reply.msgid.as_deref(), reply.credit, reply.duplicate),
            (Some("1"), Some("1010079522"), Some(98), false)
        );
        let m = mitake(&CallbackSettings::default());
        assert_eq!(m.judge(&reply, &message()).unwrap().message_id.as_deref(), Some("1010079522"));
        let duplicate = Reply::parse("[1]\nmsgid=#1010079522\nstatuscode=1\nAccountPoint=98\nDuplicate=Y\n");
        assert!(duplicate.duplicate && m.judge(&duplicate, &message()).is_ok(), "a clientid seen before: sent once");
        let bad_number = Reply::parse("[1]\nstatuscode=6\nError=門號有錯誤 0912345678\n");
        let JobError::Permanent(text) = m.judge(&bad_number, &message()).unwrap_err() else { panic!() };
        assert_eq!(text, "Mitake statuscode 6: 門號有錯誤 +886*******78 (the number has an error)");
        assert!(
            matches!(m.judge(&Reply::parse("statuscode=e"), &message()), Err(JobError::Retry(t)) if t.contains("MITAKE_PASSWORD"))
        );
        assert!(matches!(m.judge(&Reply::parse("statuscode=E"), &message()), Err(JobError::Retry(_))));
        assert!(matches!(m.judge(&Reply::parse("statuscode=*"), &message()), Err(JobError::Retry(_))));
        assert!(matches!(m.judge(&Reply::parse("garbage"), &message()), Err(JobError::Retry(_))));
        for code in ["5", "7", "8", "9", "t", "u", "v", "x", "y"] {
            assert!(matches!(Status::of(code), Status::Permanent(_)), "{code}");
        }
        for code in ["0", "2", "4"] {
            assert_eq!(Status::of(code), Status::Accepted, "{code}");
        }
    }

    #[test]
    fn numbers_bodies_and_the_report_url() {
        assert_eq!(dstaddr("+886912345678"), "0912345678");
        assert_eq!(dstaddr("+14155550100"), "+14155550100");
        assert_eq!(dstaddr("+88622345678"), "+88622345678", "a landline stays international");
        assert_eq!(mitake(&CallbackSettings::default()).report_url("j1"), None);
        let with = mitake(&CallbackSettings::new(Some("https://api.example.com/"), Some("cb-secret-0123456789")));
        assert_eq!(
            with.report_url("j1").as_deref(),
            Some("https://api.example.com/v1/callbacks/mitake?secret=cb-secret-0123456789&job=j1")
        );
        assert_eq!(with.url, "https://smsapi.mitake.com.tw/api/mtk/SmSend?CharsetURL=UTF8");
    }

    #[test]
    fn the_password_never_shows() {
        let m = mitake(&CallbackSettings::default());
        assert!(!format!("{m:?}").contains("pw-s3cret"));
        let settings = MitakeSettings::from_env(
            &Env::from_pairs(&[("MITAKE_USERNAME", "acct"), ("MITAKE_PASSWORD", "pw-s3cret")]),
            &CallbackSettings::default(),
        )
        .unwrap();
        assert!(!format!("{settings:?}").contains("pw-s3cret"));
        let echoed = Reply::parse("statuscode=y\nError=bad request username=acct&password=pw-s3cret");
        let error = m.judge(&echoed, &message()).unwrap_err().to_string();
        assert!(!error.contains("pw-s3cret") && error.contains("password=[redacted]"), "{error}");
    }

    /// A gateway (or a proxy before it) that echoes the form it was sent shows the password and
    /// the report URL form-encoded: neither the password nor CALLBACK_SECRET may reach the job's error.
    #[test]
    fn an_echoed_form_shows_neither_the_password_nor_the_callback_secret() {
        let callbacks = CallbackSettings::new(Some("https://api.example.com"), Some("cb-secret-0123456789"));
        let env = Env::from_pairs(&[("MITAKE_USERNAME", "acct"), ("MITAKE_PASSWORD", "p@ss w0rd!")]);
        let m = Mitake::new(&MitakeSettings::from_env(&env, &callbacks).unwrap(), Duration::from_secs(1)).unwrap();
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("username", "acct")
            .append_pair("password", "p@ss w0rd!")
            .append_pair("response", &m.report_url("j1").unwrap())
            .finish();
        let echoed = Reply::parse(&format!("statuscode=y\nError=bad request {form}"));
        let error = m.judge(&echoed, &message()).unwrap_err().to_string();
        assert!(!error.contains("cb-secret-0123456789"), "{error}");
        assert!(!error.contains("w0rd"), "{error}");
    }

    #[test]
    fn settings_are_checked() {
        let error = |pairs: &[(&str, &str)]| {
            MitakeSettings::from_env(&Env::from_pairs(pairs), &CallbackSettings::default()).unwrap_err().to_string()
        };
        assert!(error(&[]).starts_with("MITAKE_USERNAME: is required"));
        assert!(error(&[("MITAKE_USERNAME", "a b"), ("MITAKE_PASSWORD", "p")]).starts_with("MITAKE_USERNAME: "));
        assert!(error(&[("MITAKE_USERNAME", "a")]).starts_with("MITAKE_PASSWORD: is required"));
        let with = |name, value| error(&[("MITAKE_USERNAME", "a"), ("MITAKE_PASSWORD", "p"), (name, value)]);
        assert!(with("MITAKE_BASE_URL", "ftp://x").starts_with("MITAKE_BASE_URL: "));
        assert!(with("MITAKE_LOW_CREDIT_WARNING", "-1").starts_with("MITAKE_LOW_CREDIT_WARNING: "));
    }
}
