//! The JSON Schemas (OpenAPI 3.1, JSON Schema 2020-12) of the requests that store jobs, as
//! strict as the rules in [`crate::payload`], [`crate::envelope`] and [`crate::schedule`]: one
//! schema per kind selected by `kind` (`oneOf` with a discriminator), string lengths, patterns,
//! enums and numeric bounds, `additionalProperties: false` where serde refuses unknown fields.
//! Every bound comes from the constant the validation uses.
//!
//! What JSON Schema cannot say is said with a `format` a client may check (`e164`, `mailbox`,
//! `cron`, `time-zone`: the real rule lives in the validation) and in each description: a
//! phone number's plan, the 50 recipients of to + cc + bcc together, an OTP template this
//! deployment has, an actor that reads as `console:`, times at most 366 days (`run_at`) or 24
//! hours (`occurred_at`) ahead, an idempotency key repeated within a batch.

use serde_json::{Map, Value, json};

use crate::Kind;
use crate::envelope::MAX_DELAY_SECONDS;
use crate::lanes::MAX_GROUP_LEN;
use crate::payload::MAX_EMAIL_RECIPIENTS;
use crate::schedule::MAX_CRON_CHARS;

/// Characters a one-line text refuses: C0 and C1 controls but the tab (`char::is_control`).
const CONTROLS: &str = r"\u0000-\u0008\u000A-\u001F\u007F-\u009F";
/// Characters an actor refuses besides: invisible and direction-changing ones (the BMP's; the
/// validation refuses a few astral ones too).
const INVISIBLE: &str = r"\u00AD\u034F\u061C\u115F\u1160\u17B4\u17B5\u180B-\u180F\u200B-\u200F\u202A-\u202E\u2060-\u206F\u3164\uFE00-\uFE0F\uFEFF\uFFA0\uFFF9-\uFFFB";
/// Whitespace as Rust's `str::trim` sees it that ECMA-262's `\s` leaves out.
const MORE_SPACE: &str = r"\u0085";

/// Where a job schema is used: each takes a different set of envelope fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    /// `POST /v1/jobs`: the key is the `Idempotency-Key` header.
    Single,
    /// An item of `POST /v1/jobs/batch`: may carry `idempotency_key`.
    Batch,
    /// A schedule's `job`: kind, payload, max_attempts, priority, group; never `otp_sms`.
    Schedule,
}

impl Context {
    fn suffix(self) -> &'static str {
        match self {
            Context::Single => "Job",
            Context::Batch => "BatchJob",
            Context::Schedule => "ScheduleJob",
        }
    }

    fn kinds(self) -> &'static [Kind] {
        match self {
            Context::Schedule => &[Kind::Email, Kind::Webhook, Kind::AuditLog],
            _ => &Kind::ALL,
        }
    }
}

/// The schemas under `components/schemas`, by name: the three request bodies (`JobRequest`,
/// `BatchRequest`, `ScheduleRequest`), each kind's job in each of them, and each payload.
pub fn request_schemas() -> Map<String, Value> {
    let mut schemas = Map::new();
    let mut put = |name: &str, schema: Value| {
        schemas.insert(name.to_owned(), schema);
    };
    put("OtpSmsPayload", otp_sms());
    put("Mailbox", mailbox());
    put("EmailMessagePayload", email_message());
    put("EmailTemplatePayload", email_template());
    put(
        "EmailPayload",
        json!({"description": "A message (`subject` with `text` and/or `html`) or an SES template, never both.",
            "oneOf": [reference("EmailMessagePayload"), reference("EmailTemplatePayload")]}),
    );
    put("WebhookPayload", webhook());
    put("AuditLogPayload", audit_log());
    for context in [Context::Single, Context::Batch, Context::Schedule] {
        for &kind in context.kinds() {
            put(&job_name(kind, context), job(kind, context));
        }
    }
    put("JobRequest", one_of_kinds(Context::Single, "A job to enqueue: its `kind` selects its schema."));
    put(
        "BatchRequest",
        json!({"type": "object", "additionalProperties": false, "required": ["jobs"],
            "description": "All jobs are validated before any is written. Idempotency keys must differ within a batch (per kind).",
            "properties": {"jobs": {"type": "array", "minItems": 1, "maxItems": 1000,
                "items": one_of_kinds(Context::Batch, "One job of a batch: its `kind` selects its schema.")}}}),
    );
    put("ScheduleRequest", schedule_request());
    schemas
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn job_name(kind: Kind, context: Context) -> String {
    let kind = match kind {
        Kind::OtpSms => "OtpSms",
        Kind::Email => "Email",
        Kind::Webhook => "Webhook",
        Kind::AuditLog => "AuditLog",
    };
    format!("{kind}{}", context.suffix())
}

fn payload_name(kind: Kind) -> &'static str {
    match kind {
        Kind::OtpSms => "OtpSmsPayload",
        Kind::Email => "EmailPayload",
        Kind::Webhook => "WebhookPayload",
        Kind::AuditLog => "AuditLogPayload",
    }
}

fn one_of_kinds(context: Context, description: &str) -> Value {
    let kinds = context.kinds();
    let one_of: Vec<Value> = kinds.iter().map(|&k| reference(&job_name(k, context))).collect();
    let mapping: Map<String, Value> = kinds
        .iter()
        .map(|&k| (k.as_str().to_owned(), json!(format!("#/components/schemas/{}", job_name(k, context)))))
        .collect();
    json!({"description": description, "oneOf": one_of,
        "discriminator": {"propertyName": "kind", "mapping": mapping}})
}

/// One kind's job in one context.
fn job(kind: Kind, context: Context) -> Value {
    let limit = kind.max_attempts_limit();
    let mut properties = Map::new();
    properties.insert("kind".into(), json!({"type": "string", "enum": [kind.as_str()]}));
    properties.insert("payload".into(), reference(payload_name(kind)));
    properties.insert(
        "max_attempts".into(),
        json!({"type": "integer", "minimum": 1, "maximum": limit,
            "description": format!("1 to {limit}; default {}.", kind.default_max_attempts())}),
    );
    properties.insert(
        "priority".into(),
        json!({"type": "string", "enum": ["high", "normal", "low"],
            "description": "Served after every ready job of a higher priority of its kind; default `normal`."}),
    );
    properties.insert(
        "group".into(),
        json!({"type": "string", "minLength": 1, "maxLength": MAX_GROUP_LEN, "pattern": format!("^[!-~]{{1,{MAX_GROUP_LEN}}}$"),
            "description": "A tenant or customer, 1 to 128 visible ASCII characters: groups are served round-robin within a kind and priority."}),
    );
    if context != Context::Schedule {
        properties.insert(
            "run_at".into(),
            json!({"type": "string", "format": "date-time",
                "description": "When to run (RFC 3339), at most 366 days ahead; a time in the past means now. Not with `delay_seconds`."}),
        );
        properties.insert(
            "delay_seconds".into(),
            json!({"type": "integer", "minimum": 0, "maximum": MAX_DELAY_SECONDS,
                "description": "Run after this many seconds (at most 366 days). Not with `run_at`."}),
        );
    }
    if context == Context::Batch {
        properties.insert(
            "idempotency_key".into(),
            json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]{1,255}$",
                "description": "1 to 255 visible ASCII characters; the same key within 24 h returns the same job."}),
        );
    }
    let mut schema = json!({"type": "object", "additionalProperties": false, "required": ["kind", "payload"],
        "properties": properties});
    if context != Context::Schedule {
        schema["not"] = json!({"required": ["run_at", "delay_seconds"]});
    }
    schema
}

/// A required one-line text: at most `max` characters, not blank, no control character but tab.
fn text(max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max,
        "pattern": format!("^[^{CONTROLS}]*[^\\s{MORE_SPACE}{CONTROLS}][^{CONTROLS}]*$")})
}

fn optional_text(max: usize) -> Value {
    json!({"type": "string", "maxLength": max, "pattern": format!("^[^{CONTROLS}]*$")})
}

/// Letters, digits and `_ . : -` (events, template names).
fn name(max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": format!("^[A-Za-z0-9_.:-]{{1,{max}}}$")})
}

fn otp_sms() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["to", "code"], "properties": {
        "to": {"type": "string", "format": "e164", "maxLength": 32, "pattern": "^\\+[0-9][0-9 ().-]{5,29}[0-9]$", "example": "+14155550100",
            "description": "E.164, such as +14155550100 (spaces, dashes, dots and parentheses between the digits are taken and dropped: +1 (415) 555-0100); the number must be a valid one of its country's plan."},
        "code": {"type": "string", "pattern": "^[0-9]{4,10}$", "writeOnly": true, "example": "482913",
            "description": "4 to 10 digits; never logged, never shown."},
        "template": {"allOf": [name(64)], "example": "login",
            "description": "`default` (the built-in text) or a template this deployment configures as `SMS_TEMPLATE_<NAME>`; another name is refused."},
        "ttl_seconds": {"type": "integer", "minimum": 30, "maximum": 86_400, "default": 300,
            "description": "Not delivered by created_at + ttl_seconds: never sent, ends `expired`."}
    }})
}

fn mailbox() -> Value {
    json!({"type": "string", "format": "mailbox", "minLength": 3, "maxLength": 320,
        "pattern": "^([^<>\\r\\n@]+@[^<>\\r\\n]+|[^<>\\r\\n]*<[^<>\\r\\n@]+@[^<>\\r\\n]+>)$",
        "example": "Ada Lovelace <ada@example.org>",
        "description": "An email address (`ada@example.org`) or a name and one (`Ada <ada@example.org>`)."})
}

fn recipients(min: usize, max: usize, description: &str) -> Value {
    json!({"description": description, "oneOf": [reference("Mailbox"),
        {"type": "array", "minItems": min, "maxItems": max, "items": reference("Mailbox")}]})
}

/// The addressing fields every email has.
fn addressing() -> Map<String, Value> {
    let together = format!("to, cc and bcc together hold at most {MAX_EMAIL_RECIPIENTS} addresses.");
    let mut fields = Map::new();
    fields.insert("to".into(), recipients(1, MAX_EMAIL_RECIPIENTS, &format!("One address or a list; {together}")));
    fields.insert("cc".into(), recipients(0, MAX_EMAIL_RECIPIENTS - 1, &together));
    fields.insert("bcc".into(), recipients(0, MAX_EMAIL_RECIPIENTS - 1, &together));
    fields.insert("reply_to".into(), recipients(0, 10, "At most 10 addresses."));
    fields.insert("from".into(), json!({"allOf": [reference("Mailbox")], "description": "Default `EMAIL_FROM`."}));
    fields
}

fn email_message() -> Value {
    let body = json!({"type": "string", "pattern": format!("[^\\s{MORE_SPACE}]"), "description": "Not blank."});
    let mut properties = addressing();
    properties.insert("subject".into(), text(998));
    properties.insert("text".into(), body.clone());
    properties.insert("html".into(), body);
    json!({"type": "object", "additionalProperties": false, "required": ["to", "subject"],
        "anyOf": [{"required": ["text"]}, {"required": ["html"]}],
        "description": "A message: `subject` and `text` and/or `html`.", "properties": properties})
}

fn email_template() -> Value {
    let mut properties = addressing();
    properties.insert(
        "template".into(),
        json!({"type": "object", "additionalProperties": false, "required": ["name"], "properties": {
            "name": name(64),
            "data": {"type": "object", "description": "The template's data, at most 64 KiB as JSON."}}}),
    );
    json!({"type": "object", "additionalProperties": false, "required": ["to", "template"],
        "description": "An SES template, which supplies subject and body.", "properties": properties})
}

fn webhook() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["url", "event"], "properties": {
        "url": {"type": "string", "format": "uri", "maxLength": 2048,
            "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@\\s]+([/?#][^\\s]*)?$", "example": "https://example.org/hooks/orders",
            "description": "An absolute http or https URL naming a host, without credentials."},
        "event": {"allOf": [name(128)], "example": "order.created"},
        "data": {"description": "Any JSON: the event's body."}
    }})
}

fn audit_log() -> Value {
    let mut actor = text(256);
    actor["pattern"] =
        json!(format!("^[^{CONTROLS}{INVISIBLE}]*[^\\s{MORE_SPACE}{CONTROLS}{INVISIBLE}][^{CONTROLS}{INVISIBLE}]*$"));
    actor["description"] = json!(
        "Who acted. Invisible characters are refused, and so is anything that reads as `console:` (the console's operators)."
    );
    json!({"type": "object", "additionalProperties": false,
        "required": ["tenant_id", "actor", "action", "resource_type"], "properties": {
        "event_id": {"type": "string", "format": "uuid",
            "description": "Generated when absent; a repeated event_id is stored once per UTC month of occurred_at (a repeat in another month is stored again)."},
        "tenant_id": text(128),
        "actor": actor,
        "action": text(128),
        "resource_type": text(128),
        "resource_id": optional_text(256),
        "ip": {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}], "example": "203.0.113.7"},
        "user_agent": optional_text(1024),
        "metadata": {"type": "object", "description": "At most 64 KiB as JSON, without NUL characters."},
        "occurred_at": {"type": "string", "format": "date-time",
            "description": "Default now; not before 1970, at most 24 hours ahead."}
    }})
}

fn schedule_request() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["name", "cron", "job"], "properties": {
        "name": {"allOf": [name(128)], "example": "weekday-digest",
            "description": "The same name again replaces the schedule."},
        "cron": {"type": "string", "format": "cron", "minLength": 1, "maxLength": MAX_CRON_CHARS, "example": "0 9 * * 1-5",
            "description": "5 fields (`minute hour day month weekday`), or 6 with a leading seconds field; must fire at least once."},
        "timezone": {"type": "string", "format": "time-zone", "minLength": 1, "maxLength": 64, "example": "Asia/Taipei",
            "description": "An IANA time zone; default `UTC`."},
        "catch_up": {"type": "string", "enum": ["latest", "none"], "default": "latest",
            "description": "`latest`: fire the most recent missed tick once; `none`: skip missed ticks."},
        "job": one_of_kinds(Context::Schedule,
            &format!("The job each firing enqueues, at most {} KiB as JSON; otp_sms cannot be scheduled.", crate::schedule::MAX_JOB_BYTES / 1024))
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` names a schema this module defines, and every pattern compiles.
    #[test]
    fn references_resolve_and_patterns_compile() {
        let schemas = request_schemas();
        let text = serde_json::to_string(&schemas).unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(schemas.contains_key(name), "{name}");
        }
        walk(&Value::Object(schemas));
    }

    /// Compiles every pattern under `v`.
    fn walk(v: &Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(p)) = m.get("pattern") {
                    // ECMA-262's \uXXXX is the regex crate's \x{XXXX}.
                    let rust = regex_of(p);
                    regex::Regex::new(&rust).unwrap_or_else(|e| panic!("{p}: {e}"));
                }
                m.values().for_each(walk);
            }
            Value::Array(a) => a.iter().for_each(walk),
            _ => {}
        }
    }

    fn regex_of(ecma: &str) -> String {
        let mut out = String::new();
        let mut rest = ecma;
        while let Some(i) = rest.find("\\u") {
            out.push_str(&rest[..i]);
            out.push_str("\\x{");
            out.push_str(&rest[i + 2..i + 6]);
            out.push('}');
            rest = &rest[i + 6..];
        }
        out.push_str(rest);
        out
    }

    /// The patterns agree with the validation on samples either side of each rule.
    #[test]
    fn patterns_agree_with_the_rules() {
        let schemas = request_schemas();
        let pattern = |schema: &Value| regex::Regex::new(&regex_of(schema["pattern"].as_str().unwrap())).unwrap();
        let actor = pattern(&schemas["AuditLogPayload"]["properties"]["actor"]);
        assert!(actor.is_match("José Müller <ops@example.com>"));
        for bad in [" ", "", "a\nb", "a\u{200B}b", "\u{85}"] {
            assert!(!actor.is_match(bad), "{bad:?}");
        }
        let tenant = pattern(&schemas["AuditLogPayload"]["properties"]["tenant_id"]);
        assert!(tenant.is_match("t\tx") && !tenant.is_match("\t"));
        let to = pattern(&schemas["OtpSmsPayload"]["properties"]["to"]);
        assert!(to.is_match("+14155550100") && !to.is_match("0912345678"));
        // The API takes these and stores +14155552671: a strict client must send them too.
        for spaced in ["+1 415 555 2671", "+1 (415) 555-2671", "+886 912-345-678", "+44 7911.123456"] {
            assert!(to.is_match(spaced), "{spaced}");
        }
        let url = pattern(&schemas["WebhookPayload"]["properties"]["url"]);
        assert!(url.is_match("https://example.org/h?x=1") && !url.is_match("https://u:p@example.org/"));
        assert!(!url.is_match("ftp://example.org"));
        let mailbox = pattern(&schemas["Mailbox"]);
        assert!(mailbox.is_match("Ada <ada@example.org>") && mailbox.is_match("ada@example.org"));
        assert!(!mailbox.is_match("nope") && !mailbox.is_match("a@b\r\nBcc: c@d"));
    }
}
