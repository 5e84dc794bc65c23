//! The typed payload of each kind, its validation, and its normal form as stored in Redis.
//!
//! Also compiled into the producers' Rust client (`clients/rust/src/lib.rs`, `#[path]`), without
//! the rest of this crate: use only `crate::Kind`, `crate::payload` and `crate::validation` here,
//! and the dependencies `clients/rust/Cargo.toml` lists (`cargo build -p jobplane-client` checks).

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::Kind;
use crate::validation::{Checker, FieldError, from_serde};

/// The most recipients (to + cc + bcc) one SES `SendEmail` takes.
pub const MAX_EMAIL_RECIPIENTS: usize = 50;

/// The most a payload may hold as JSON, whichever route stores it (a single job, a batch's
/// item, a console edit; a schedule's whole job is capped tighter): the same as a single job's
/// whole body, so a batch cannot carry a job that `POST /v1/jobs` would refuse.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// Audit-event actors that start with this (in any case, after any spaces) are the
/// dead-letter console's operators; only [`Payload::operator_audit_record`] writes them.
pub const OPERATOR_ACTOR_PREFIX: &str = "console:";

/// Who writes an audit event: a producer (any route that stores a job) or the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Author {
    Producer,
    Operator,
}

/// A validated payload in its normal form. Workers read it back by kind, never by guessing.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Payload {
    OtpSms(OtpSms),
    Email(Email),
    Webhook(Webhook),
    AuditLog(AuditLog),
}

impl Payload {
    /// Reads and validates the payload of `kind`; errors point under `base` (`/payload`).
    /// `now` fills defaults that depend on time (an audit event's `occurred_at`).
    /// Every route that stores a job (direct, batch, schedule, console edit) reads it here.
    pub fn parse(kind: Kind, value: Value, base: &str, now: DateTime<Utc>) -> Result<Self, Vec<FieldError>> {
        Self::parse_as(kind, value, base, now, Author::Producer)
    }

    /// The console's record of what operator `operator` did: an audit event with actor
    /// `console:<operator>` (which [`Payload::parse`] refuses) and `fields`, checked by every
    /// other rule of an audit event.
    pub fn operator_audit_record(
        operator: &str,
        mut fields: Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<Self, Vec<FieldError>> {
        fields.insert("actor".to_owned(), Value::String(format!("{OPERATOR_ACTOR_PREFIX}{operator}")));
        Self::parse_as(Kind::AuditLog, Value::Object(fields), "/payload", now, Author::Operator)
    }

    fn parse_as(
        kind: Kind,
        value: Value,
        base: &str,
        now: DateTime<Utc>,
        author: Author,
    ) -> Result<Self, Vec<FieldError>> {
        if !value.is_object() {
            return Err(vec![FieldError::new(base, "must be a JSON object")]);
        }
        if json_len_exceeds(&value, MAX_PAYLOAD_BYTES) {
            return Err(vec![FieldError::new(
                base,
                format!("must be at most {} KiB as JSON", MAX_PAYLOAD_BYTES / 1024),
            )]);
        }
        let mut checker = Checker::new(base);
        let payload = match kind {
            Kind::OtpSms => Payload::OtpSms(read::<OtpSms>(value, base)?.checked(&mut checker)),
            Kind::Email => Payload::Email(read::<Email>(value, base)?.checked(&mut checker)),
            Kind::Webhook => Payload::Webhook(read::<Webhook>(value, base)?.checked(&mut checker)),
            Kind::AuditLog => Payload::AuditLog(read::<AuditLog>(value, base)?.checked(&mut checker, now, author)),
        };
        checker.finish().map(|()| payload)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("payloads serialize")
    }
}

fn read<T: for<'de> Deserialize<'de>>(value: Value, base: &str) -> Result<T, Vec<FieldError>> {
    serde_path_to_error::deserialize(value).map_err(|e| vec![from_serde(base, &e)])
}

/// A one-time code. Its `Debug` never shows the digits, so no log line can leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", schema(value_type = String, example = "482913"))]
pub struct OtpCode(String);

impl OtpCode {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for OtpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpCode(\"[redacted]\")")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OtpSms {
    /// E.164, such as +14155550100.
    #[cfg_attr(feature = "openapi", schema(example = "+14155550100"))]
    pub to: String,
    /// 4 to 10 digits; never logged, never shown.
    pub code: OtpCode,
    /// `default` (the built-in text) or a template configured as `SMS_TEMPLATE_<NAME>`
    /// (`login` for `SMS_TEMPLATE_LOGIN`); a name this deployment lacks is refused at enqueue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "login"))]
    pub template: Option<String>,
    /// 30 to 86400, default 300: not delivered by `created_at + ttl_seconds`, never sent.
    #[serde(default = "default_otp_ttl")]
    pub ttl_seconds: u32,
}

fn default_otp_ttl() -> u32 {
    300
}

impl OtpSms {
    fn checked(mut self, c: &mut Checker) -> Self {
        match e164(&self.to) {
            Some(normal) => self.to = normal,
            None => c.fail("to", "must be a valid phone number in E.164 form, such as +14155550100"),
        }
        let code = self.code.expose();
        if !(4..=10).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_digit()) {
            c.fail("code", "must be 4 to 10 digits");
        }
        if let Some(template) = &self.template {
            c.name("template", template, 64);
        }
        c.range("ttl_seconds", self.ttl_seconds, 30, 86_400);
        self
    }
}

/// The number in E.164 form when `raw` is a valid, fully international number.
fn e164(raw: &str) -> Option<String> {
    if !raw.starts_with('+') || raw.len() > 32 {
        return None;
    }
    let number = phonenumber::parse(None, raw).ok()?;
    phonenumber::is_valid(&number).then(|| number.format().mode(phonenumber::Mode::E164).to_string())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Email {
    #[serde(deserialize_with = "one_or_many")]
    pub to: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub reply_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<EmailTemplate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EmailTemplate {
    pub name: String,
    #[serde(default)]
    pub data: Map<String, Value>,
}

/// Accepts `"a@x.org"` as well as `["a@x.org", ...]`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl Email {
    fn checked(self, c: &mut Checker) -> Self {
        if self.to.is_empty() {
            c.fail("to", "must name at least one address");
        }
        for (field, list) in [("to", &self.to), ("cc", &self.cc), ("bcc", &self.bcc), ("reply_to", &self.reply_to)] {
            for (i, address) in list.iter().enumerate() {
                if !is_mailbox(address) {
                    c.fail(
                        &format!("{field}/{i}"),
                        "must be an email address, such as ada@example.org or Ada <ada@example.org>",
                    );
                }
            }
        }
        if self.to.len() + self.cc.len() + self.bcc.len() > MAX_EMAIL_RECIPIENTS {
            c.fail("to", format!("to, cc and bcc together must hold at most {MAX_EMAIL_RECIPIENTS} addresses"));
        }
        if self.reply_to.len() > 10 {
            c.fail("reply_to", "must hold at most 10 addresses");
        }
        if let Some(from) = &self.from
            && !is_mailbox(from)
        {
            c.fail("from", "must be an email address, such as ada@example.org or Ada <ada@example.org>");
        }
        self.check_content(c);
        self
    }

    fn check_content(&self, c: &mut Checker) {
        if let Some(template) = &self.template {
            for (field, present) in
                [("subject", self.subject.is_some()), ("text", self.text.is_some()), ("html", self.html.is_some())]
            {
                if present {
                    c.fail(field, "must be absent when template is given (the SES template supplies it)");
                }
            }
            c.name("template/name", &template.name, 64);
            if serde_json::to_string(&template.data).map_or(0, |s| s.len()) > 64 * 1024 {
                c.fail("template/data", "must be at most 64 KiB as JSON");
            }
            return;
        }
        match &self.subject {
            Some(subject) => c.text("subject", subject, 998),
            None => c.fail("subject", "is required unless template is given"),
        }
        if self.text.is_none() && self.html.is_none() {
            c.fail("text", "text or html is required unless template is given");
        }
        for (field, body) in [("text", &self.text), ("html", &self.html)] {
            if body.as_ref().is_some_and(|b| b.trim().is_empty()) {
                c.fail(field, "must not be empty");
            }
        }
    }
}

/// `ada@example.org`, or `Ada Lovelace <ada@example.org>`.
pub fn is_mailbox(s: &str) -> bool {
    let address = match (s.rfind('<'), s.strip_suffix('>')) {
        (Some(open), Some(inner)) => {
            let name = &s[..open];
            if name.contains(['<', '>', '\r', '\n']) {
                return false;
            }
            &inner[open + 1..]
        }
        _ => s,
    };
    s.len() <= 320
        && !address.is_empty()
        && email_address::EmailAddress::is_valid(address)
        && !address.contains(['<', '>'])
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    pub event: String,
    #[serde(default)]
    pub data: Value,
}

impl Webhook {
    fn checked(self, c: &mut Checker) -> Self {
        match url::Url::parse(&self.url) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") => c.fail("url", "must be an http or https URL"),
            Ok(url) if url.host_str().is_none_or(str::is_empty) => c.fail("url", "must name a host"),
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                c.fail("url", "must not carry credentials; the signature authenticates the sender");
            }
            Ok(_) if self.url.len() > 2048 => c.fail("url", "must be at most 2048 characters"),
            Ok(_) => {}
            Err(e) => c.fail("url", format!("must be an absolute http or https URL ({e})")),
        }
        c.name("event", &self.event, 128);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditLog {
    /// Filled in at enqueue when absent, so every copy of a job names the same event.
    #[serde(default)]
    pub event_id: Option<Uuid>,
    pub tenant_id: String,
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "203.0.113.7"))]
    pub ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
}

impl AuditLog {
    fn checked(mut self, c: &mut Checker, now: DateTime<Utc>, author: Author) -> Self {
        c.text("tenant_id", &self.tenant_id, 128);
        c.text("actor", &self.actor, 256);
        if self.actor.chars().any(is_invisible) {
            c.fail("actor", "must not hold invisible or direction-changing characters");
        } else if author == Author::Producer && is_operator_actor(&self.actor) {
            c.fail(
                "actor",
                format!("actors starting with `{OPERATOR_ACTOR_PREFIX}` are reserved for the dead-letter console's own records"),
            );
        }
        c.text("action", &self.action, 128);
        c.text("resource_type", &self.resource_type, 128);
        c.optional_text("resource_id", self.resource_id.as_deref(), 256);
        c.optional_text("user_agent", self.user_agent.as_deref(), 1024);
        if serde_json::to_string(&self.metadata).map_or(0, |s| s.len()) > 64 * 1024 {
            c.fail("metadata", "must be at most 64 KiB as JSON");
        }
        if self.metadata.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)) {
            c.fail("metadata", "must not contain the NUL character (\\u0000), which PostgreSQL cannot store");
        }
        let occurred_at = *self.occurred_at.get_or_insert(now);
        if occurred_at > now + Duration::hours(24) {
            c.fail("occurred_at", "must not be more than 24 hours in the future");
        }
        if occurred_at < DateTime::UNIX_EPOCH {
            c.fail("occurred_at", "must not be before 1970-01-01T00:00:00Z");
        }
        self.event_id.get_or_insert_with(Uuid::now_v7);
        self
    }
}

/// What would pass for an operator in the audit log or its `actor` filter: `console:<name>`
/// as a reader sees it, in any case, with any spaces or invisible characters inside or before
/// it, in compatibility forms (`ｃｏｎｓｏｌｅ：`, `𝐜𝐨𝐧𝐬𝐨𝐥𝐞`) or letters that look the same
/// (Cyrillic `с`, `consoIe` with a capital I): the start of its skeleton is compared.
fn is_operator_actor(actor: &str) -> bool {
    use unicode_normalization::UnicodeNormalization;
    let mut skeleton =
        actor.nfkc().filter(|c| !c.is_whitespace() && !is_invisible(*c)).map(look_alike).flat_map(char::to_lowercase);
    OPERATOR_ACTOR_PREFIX.chars().all(|want| skeleton.next() == Some(want))
}

/// Characters that show nothing, or reorder what follows (bidirectional controls): in an
/// actor they only serve to make one string look like another.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF9}'..='\u{FFFB}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// The letter of `console:` a character passes for (Unicode's confusables for those letters
/// that NFKC leaves alone); any other character as it is.
fn look_alike(c: char) -> char {
    match c {
        '\u{0441}' | '\u{03F2}' | '\u{1D04}' | '\u{0421}' | '\u{03F9}' | '\u{216D}' => 'c',
        '\u{043E}' | '\u{03BF}' | '\u{0585}' | '\u{1D0F}' | '\u{041E}' | '\u{039F}' | '0' => 'o',
        '\u{0578}' | '\u{057C}' | '\u{0274}' | '\u{039D}' => 'n',
        '\u{0455}' | '\u{A731}' | '\u{0405}' | '\u{01BD}' => 's',
        'I' | '1' | '|' | '\u{01C0}' | '\u{04CF}' | '\u{0406}' | '\u{0399}' | '\u{0196}' | '\u{05C0}' => 'l',
        '\u{0435}' | '\u{04BD}' | '\u{0415}' | '\u{0395}' | '\u{1D07}' => 'e',
        '\u{2236}' | '\u{02D0}' | '\u{A789}' | '\u{0589}' | '\u{05C3}' | '\u{16EC}' | '\u{0703}' | '\u{0704}'
        | '\u{02F8}' | '\u{1361}' | '\u{205A}' | '\u{2E35}' => ':',
        other => other,
    }
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// Whether `value` written as JSON is longer than `max` bytes, found without building the text:
/// the count stops at the first byte past `max`.
fn json_len_exceeds(value: &Value, max: usize) -> bool {
    struct Counter {
        left: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.left = self.left.checked_sub(buf.len()).ok_or(std::io::ErrorKind::FileTooLarge)?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Counter { left: max }, value).is_err()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_size_cap_counts_the_json_text_exactly() {
        // {"a":"xxxx"} is 8 bytes of punctuation and key around the string.
        let value = json!({"a": "x".repeat(92)});
        assert_eq!(serde_json::to_string(&value).unwrap().len(), 100);
        assert!(!json_len_exceeds(&value, 100));
        assert!(json_len_exceeds(&value, 99));
        assert!(json_len_exceeds(&json!({"a": "x".repeat(1 << 20)}), MAX_PAYLOAD_BYTES));
    }

    fn parse(kind: Kind, value: Value) -> Result<Payload, Vec<FieldError>> {
        Payload::parse(kind, value, "/payload", Utc::now())
    }

    fn fields(result: Result<Payload, Vec<FieldError>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn otp_numbers_are_checked_and_normalized() {
        let p = parse(Kind::OtpSms, json!({"to": "+1 415 555 2671", "code": "123456"})).unwrap();
        let Payload::OtpSms(otp) = p else { panic!() };
        assert_eq!(otp.to, "+14155552671");
        // The strict schema's pattern takes these too (jobs/src/openapi.rs).
        for spaced in ["+1 (415) 555-2671", "+886 912-345-678", "+44 7911.123456"] {
            assert!(parse(Kind::OtpSms, json!({"to": spaced, "code": "123456"})).is_ok(), "{spaced}");
        }
        assert_eq!(otp.ttl_seconds, 300);
        for bad in ["0912345678", "+1555", "+999999999999", "hello"] {
            assert_eq!(fields(parse(Kind::OtpSms, json!({"to": bad, "code": "1234"}))), ["/payload/to"], "{bad}");
        }
        for bad in ["123", "12345678901", "12a4"] {
            assert_eq!(fields(parse(Kind::OtpSms, json!({"to": "+886912345678", "code": bad}))), ["/payload/code"]);
        }
    }

    #[test]
    fn otp_code_never_shows_in_debug() {
        let p = parse(Kind::OtpSms, json!({"to": "+886912345678", "code": "987654"})).unwrap();
        assert!(!format!("{p:?}").contains("987654"));
    }

    #[test]
    fn email_rules() {
        assert!(parse(Kind::Email, json!({"to": "a@example.org", "subject": "Hi", "text": "x"})).is_ok());
        assert!(
            parse(
                Kind::Email,
                json!({"to": ["Ada <a@example.org>"], "template": {"name": "welcome", "data": {"n": 1}}})
            )
            .is_ok()
        );
        assert_eq!(fields(parse(Kind::Email, json!({"to": [], "subject": "Hi", "text": "x"}))), ["/payload/to"]);
        assert_eq!(
            fields(parse(Kind::Email, json!({"to": ["nope"], "subject": "Hi", "text": "x"}))),
            ["/payload/to/0"]
        );
        assert_eq!(fields(parse(Kind::Email, json!({"to": "a@example.org", "subject": "Hi"}))), ["/payload/text"]);
        let injected = json!({"to": "a@example.org", "subject": "Hi\r\nBcc: x@example.org", "text": "x"});
        assert_eq!(fields(parse(Kind::Email, injected)), ["/payload/subject"]);
        assert_eq!(
            fields(parse(Kind::Email, json!({"to": "a@example.org", "subject": "Hi", "template": {"name": "t"}}))),
            ["/payload/subject"]
        );
        let many: Vec<String> = (0..51).map(|i| format!("u{i}@example.org")).collect();
        assert_eq!(fields(parse(Kind::Email, json!({"to": many, "subject": "Hi", "text": "x"}))), ["/payload/to"]);
    }

    #[test]
    fn webhook_rules() {
        assert!(
            parse(Kind::Webhook, json!({"url": "https://example.org/hook", "event": "order.created", "data": [1]}))
                .is_ok()
        );
        for bad in ["ftp://example.org", "not a url", "https://user:pw@example.org/", "/relative"] {
            assert_eq!(fields(parse(Kind::Webhook, json!({"url": bad, "event": "e"}))), ["/payload/url"], "{bad}");
        }
        assert_eq!(
            fields(parse(Kind::Webhook, json!({"url": "https://example.org", "event": "has space"}))),
            ["/payload/event"]
        );
    }

    #[test]
    fn audit_log_defaults_and_rules() {
        let now = Utc::now();
        let p = Payload::parse(
            Kind::AuditLog,
            json!({"tenant_id": "t1", "actor": "u1", "action": "login", "resource_type": "session"}),
            "/payload",
            now,
        )
        .unwrap();
        let Payload::AuditLog(a) = p else { panic!() };
        assert_eq!(a.occurred_at, Some(now));
        assert!(a.event_id.is_some());
        let bad = json!({"tenant_id": "", "actor": "u", "action": "a", "resource_type": "r", "ip": "1.2.3"});
        assert_eq!(fields(parse(Kind::AuditLog, bad)), ["/payload/ip"]);
        let bad = json!({"tenant_id": " ", "actor": "u", "action": "a", "resource_type": "r"});
        assert_eq!(fields(parse(Kind::AuditLog, bad)), ["/payload/tenant_id"]);
        let bad = json!({"tenant_id": "t", "actor": "u", "action": "a", "resource_type": "r", "metadata": {"k": ["a\u{0}b"]}});
        assert_eq!(fields(parse(Kind::AuditLog, bad)), ["/payload/metadata"]);
        let bad = json!({"tenant_id": "t", "actor": "u", "action": "a", "resource_type": "r", "occurred_at": "1969-12-31T23:59:59Z"});
        assert_eq!(fields(parse(Kind::AuditLog, bad)), ["/payload/occurred_at"]);
        let bad = json!({"tenant_id": "t", "actor": "u\r\nx", "action": "a", "resource_type": "r"});
        assert_eq!(fields(parse(Kind::AuditLog, bad)), ["/payload/actor"]);
    }

    #[test]
    fn operator_actors_are_the_console_s_alone() {
        for actor in ["console:admin1", "Console:admin1", "  CONSOLE:x"] {
            let forged = json!({"tenant_id": "jobplane", "actor": actor, "action": "dead_letter.purge", "resource_type": "dead_letter"});
            assert_eq!(fields(parse(Kind::AuditLog, forged)), ["/payload/actor"], "{actor}");
        }
        let ok = json!({"tenant_id": "t", "actor": "consoles:x", "action": "a", "resource_type": "r"});
        assert!(parse(Kind::AuditLog, ok).is_ok());
        let ok = json!({"tenant_id": "t", "actor": "José Müller <ops-console@example.com>", "action": "a", "resource_type": "r"});
        assert!(parse(Kind::AuditLog, ok).is_ok());
        let mut fields = Map::new();
        for (k, v) in [("tenant_id", "jobplane"), ("action", "dead_letter.purge"), ("resource_type", "dead_letter")] {
            fields.insert(k.to_owned(), json!(v));
        }
        let bad = Payload::operator_audit_record("a\nb", fields.clone(), Utc::now()).unwrap_err();
        assert_eq!(bad[0].field, "/payload/actor");
        let Payload::AuditLog(record) = Payload::operator_audit_record("admin1", fields, Utc::now()).unwrap() else {
            panic!()
        };
        assert_eq!(record.actor, "console:admin1");
    }

    /// Review of issue 13 item 4: actors that read as `console:<operator>` but are not those
    /// bytes (invisible characters, compatibility forms, look-alike letters, a reversed string)
    /// were accepted from producers and shown as an operator's in the audit log.
    #[test]
    fn operator_actors_cannot_be_forged_with_look_alikes() {
        for actor in [
            "\u{200B}console:admin1",
            "con\u{200B}sole:admin1",
            "console\u{FEFF}:admin1",
            "console :admin1",
            "\u{0441}onsole:admin1",
            "c\u{043E}ns\u{043E}l\u{0435}:admin1",
            "\u{FF43}\u{FF4F}\u{FF4E}\u{FF53}\u{FF4F}\u{FF4C}\u{FF45}\u{FF1A}admin1",
            "console\u{FF1A}admin1",
            "console\u{2236}admin1",
            "consoIe:admin1",
            "\u{1D41C}\u{1D428}\u{1D427}\u{1D42C}\u{1D428}\u{1D425}\u{1D41E}:admin1",
            "\u{202E}1nimda:elosnoc",
            "admin\u{2066}1",
        ] {
            let forged = json!({"tenant_id": "jobplane", "actor": actor, "action": "dead_letter.purge", "resource_type": "dead_letter"});
            assert_eq!(fields(parse(Kind::AuditLog, forged)), ["/payload/actor"], "{actor:?}");
        }
    }

    #[test]
    fn unknown_payload_fields_are_named() {
        assert_eq!(
            fields(parse(Kind::Webhook, json!({"url": "https://e.org", "event": "e", "secret": 1}))),
            ["/payload/secret"]
        );
        assert_eq!(fields(parse(Kind::Webhook, json!([1]))), ["/payload"]);
    }
}
