//! What operators may see of a payload or an error: secrets replaced by `[redacted]`, and what
//! an operator's edit of such a redacted payload may put back.
//!
//! Three rules, applied at any depth of the JSON:
//! - every value under a key that names a secret (`api_tokens`, `password`, `x-api-key`,
//!   `authToken`, `otp`, `pin`, ...) is hidden, the whole subtree, leaf by leaf;
//! - in every string, each URL loses its user info, query string and fragment
//!   (`https://[redacted]@host/p?[redacted]#[redacted]`): tokens travel there;
//! - in every string, well-known secret shapes are hidden wherever they appear: provider keys
//!   (`sk_live_…`, `xoxb-…`, `ghp_…`, `AKIA…`, JWTs, `Bearer …`, PEM private keys) and the
//!   secret parts of webhook URLs' paths (Slack `hooks.slack.com/services/…`, Discord
//!   `/api/webhooks/<id>/<token>`, Teams, Telegram bots, Zapier catch hooks).
//!
//! Searching the dead letters reads only this redacted form, so a secret cannot be found by
//! probing for it.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::Kind;

/// What a hidden value is shown as.
pub const REDACTED: &str = "[redacted]";

/// Anywhere in a key's name (lowercased), these make its value a secret.
const SECRET_PARTS: [&str; 23] = [
    "secret",
    "token",
    "password",
    "passwd",
    "passphrase",
    "api_key",
    "apikey",
    "api-key",
    "access_key",
    "accesskey",
    "private_key",
    "privatekey",
    "authorization",
    "credential",
    "cookie",
    "session",
    "signature",
    "verification_code",
    "auth_code",
    "reset_code",
    "recovery_code",
    "totp",
    "mfa",
];
/// ... or as one word of it (split at `_`, `-`, `.` and camelCase), so `author` and
/// `footprint` stay visible while `auth_header`, `basicAuth` and `otp_sent` do not.
const SECRET_WORDS: [&str; 9] = ["auth", "pwd", "jwt", "otp", "pin", "passcode", "bearer", "cvv", "cvc"];
/// ... or as its whole name (`zip_code` keeps its value, `code` does not).
const SECRET_NAMES: [&str; 5] = ["code", "key", "pass", "sig", "otp_code"];

/// Whether a key's name marks its value (all of it) as a secret.
pub fn secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    SECRET_NAMES.contains(&lower.as_str())
        || SECRET_PARTS.iter().any(|part| lower.contains(part))
        || words(key).iter().any(|word| SECRET_WORDS.contains(&word.as_str()))
}

/// A key's words, lowercased: split at anything not a letter or digit, and before an
/// upper-case letter that follows a lower-case one.
fn words(key: &str) -> Vec<String> {
    let mut spaced = String::with_capacity(key.len() + 4);
    let mut previous_lower = false;
    for c in key.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            spaced.push(' ');
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        spaced.push(if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { ' ' });
    }
    spaced.split_whitespace().map(str::to_owned).collect()
}

fn pattern(text: &str) -> Regex {
    Regex::new(text).expect("a valid pattern")
}

/// A URL inside any text: a scheme, `://`, and everything up to a space, a quote or a bracket.
static URL: LazyLock<Regex> = LazyLock::new(|| pattern(r#"(?i)\b[a-z][a-z0-9+.\-]*://[^\s"'<>`]+"#));

/// Secret parts of webhook URLs' paths, one alternative per service: the part kept (the one
/// group that matched), then the secret.
static PATH_SHAPES: LazyLock<Regex> = LazyLock::new(|| {
    pattern(concat!(
        // Slack incoming webhooks and workflow triggers: the whole path after the first segment.
        r#"(?i)(hooks\.slack\.com/(?:services|workflows|triggers)/)[^\s"'<>?#]+"#,
        // Discord (and alike): /api/webhooks/<id>/<token>.
        r#"|(?i)(/api(?:/v\d+)?/webhooks/\d+/)[^\s"'<>/?#]+"#,
        // Microsoft Teams (Office 365 connectors).
        r#"|(?i)(\.webhook\.office\.com/webhookb2/|outlook\.office\.com/webhook/)[^\s"'<>?#]+"#,
        // Telegram bot API: /bot<token>/method.
        r#"|(?i)(api\.telegram\.org/(?:file/)?bot)[^\s"'<>/?#]+"#,
        // Zapier catch hooks: /hooks/catch/<account>/<secret>.
        r#"|(?i)(hooks\.zapier\.com/hooks/catch/\d+/)[^\s"'<>/?#]+"#,
    ))
});

/// Well-known secret tokens, wherever they appear in a string.
static TOKENS: LazyLock<Regex> = LazyLock::new(|| {
    pattern(concat!(
        r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{8,}", // Stripe secret and restricted keys
        r"|\bxox[abposer]-[0-9A-Za-z\-]{8,}",         // Slack tokens
        r"|\bxapp-[0-9A-Za-z\-]{8,}",                 // Slack app tokens
        r"|\bgh[pousr]_[0-9A-Za-z]{20,}",             // GitHub tokens
        r"|\bgithub_pat_[0-9A-Za-z_]{20,}",           // GitHub fine-grained tokens
        r"|\bglpat-[0-9A-Za-z_\-]{20,}",              // GitLab tokens
        r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",            // AWS access key ids
        r"|\bAIza[0-9A-Za-z_\-]{35}",                 // Google API keys
        r"|\bSG\.[0-9A-Za-z_\-]{16,}\.[0-9A-Za-z_\-]{16,}", // SendGrid keys
        r"|\bwhsec_[0-9A-Za-z+/=]{8,}",               // Standard Webhooks secrets
        r"|\beyJ[0-9A-Za-z_\-]{8,}\.[0-9A-Za-z_\-]{8,}\.[0-9A-Za-z_\-]*", // JWTs
        r"|(?i:\bbearer\s+)[0-9A-Za-z._~+/\-]{8,}=*", // bearer credentials
        r"|-----BEGIN[A-Z ]*PRIVATE KEY-----(?s:.*?)(?:-----END[A-Z ]*PRIVATE KEY-----|\z)",
    ))
});

/// One URL without its user info, query string and fragment.
fn redact_url(url: &str) -> String {
    let (rest, fragment) = match url.split_once('#') {
        Some((rest, _)) => (rest, Some(REDACTED)),
        None => (url, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, _)) => (rest, Some(REDACTED)),
        None => (rest, None),
    };
    let mut out = match rest.split_once("://") {
        Some((scheme, after)) => {
            let authority_end = after.find('/').unwrap_or(after.len());
            let (authority, path) = after.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{REDACTED}@{host}{path}"),
                None => rest.to_owned(),
            }
        }
        None => rest.to_owned(),
    };
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// A string with every URL's user info, query and fragment, every secret path part and every
/// well-known token hidden. Used for payload strings and for errors shown to operators.
pub fn redact_text(text: &str) -> String {
    let mut out = if text.contains("://") {
        URL.replace_all(text, |c: &regex::Captures<'_>| redact_url(&c[0])).into_owned()
    } else {
        text.to_owned()
    };
    // Each path shape names one of these (cheap to look for before the pattern runs).
    let lower = out.to_ascii_lowercase();
    if ["hooks.", "webhook", "telegram"].iter().any(|hint| lower.contains(hint)) {
        out = PATH_SHAPES
            .replace_all(&out, |c: &regex::Captures<'_>| {
                let kept = c.iter().skip(1).flatten().next().map_or("", |m| m.as_str());
                format!("{kept}{REDACTED}")
            })
            .into_owned();
    }
    match TOKENS.replace_all(&out, REDACTED) {
        std::borrow::Cow::Borrowed(_) => out,
        std::borrow::Cow::Owned(hidden) => hidden,
    }
}

/// Every leaf of a value hidden, its shape kept (so an edit can leave a leaf as it was shown).
fn hide_all(value: &mut Value) {
    match value {
        Value::Object(map) => map.values_mut().for_each(hide_all),
        Value::Array(items) => items.iter_mut().for_each(hide_all),
        leaf => *leaf = Value::String(REDACTED.into()),
    }
}

/// The payload as operators may see it (see the module's rules). An OTP job's `code` is
/// always hidden.
pub fn redact(kind: Kind, mut payload: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if secret_key(key) { hide_all(v) } else { walk(v) }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::String(s) => {
                let shown = redact_text(s);
                if shown != *s {
                    *s = shown;
                }
            }
            _ => {}
        }
    }
    if kind == Kind::OtpSms
        && let Some(code) = payload.get_mut("code")
    {
        *code = Value::String(REDACTED.into());
    }
    walk(&mut payload);
    payload
}

/// The fields that say where a job goes: an edit that changes one of them may not carry the
/// stored secrets along (they would go to whoever the operator now names).
pub fn destination_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Webhook => &["url"],
        Kind::Email => &["to", "cc", "bcc"],
        Kind::OtpSms => &["to"],
        Kind::AuditLog => &[],
    }
}

/// The addresses of a destination field, compared as a set: case, order and repeats aside.
fn destination(value: Option<&Value>) -> Vec<String> {
    let mut list: Vec<String> = match value {
        Some(Value::String(s)) => vec![s.trim().to_lowercase()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(|s| s.trim().to_lowercase()).collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other.to_string()],
    };
    list.sort();
    list.dedup();
    list
}

/// A JSON pointer segment, escaped (RFC 6901).
fn segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// An operator's edit of a redacted payload, with every value still as the console showed it
/// redacted put back from `stored`, so editing one field never writes `[redacted]` over a secret.
///
/// A stored value is put back only while the destination ([`destination_fields`]) is unchanged:
/// when the edit changes it, the values left as shown stay as they are and their JSON pointers
/// (under the payload) are returned, for the operator to supply; nothing secret follows the job
/// to a new destination. Empty when the edit may go.
pub fn restore_redacted(kind: Kind, edited: &mut Value, stored: &Value) -> Vec<String> {
    fn walk(edited: &mut Value, shown: &Value, stored: &Value, path: &str, restore: bool, held: &mut Vec<String>) {
        if edited == shown && shown != stored {
            if restore {
                *edited = stored.clone();
                return;
            }
            // Held: name the leaves (an object left whole as shown names each redacted value).
            if !(edited.is_object() || edited.is_array()) || edited.is_object() != stored.is_object() {
                held.push(path.to_owned());
                return;
            }
        }
        match (edited, shown, stored) {
            (Value::Object(e), Value::Object(sh), Value::Object(st)) => {
                for (key, value) in e.iter_mut() {
                    if let (Some(sh), Some(st)) = (sh.get(key), st.get(key)) {
                        walk(value, sh, st, &format!("{path}/{}", segment(key)), restore, held);
                    }
                }
            }
            (Value::Array(e), Value::Array(sh), Value::Array(st)) => {
                for (i, ((value, sh), st)) in e.iter_mut().zip(sh).zip(st).enumerate() {
                    walk(value, sh, st, &format!("{path}/{i}"), restore, held);
                }
            }
            _ => {}
        }
    }
    let shown = redact(kind, stored.clone());
    let fields = destination_fields(kind);
    // The destination fields themselves first: one left as shown is the stored one.
    let mut held = Vec::new();
    if let (Value::Object(e), Value::Object(sh), Value::Object(st)) = (&mut *edited, &shown, stored) {
        for field in fields {
            if let (Some(value), Some(sh), Some(st)) = (e.get_mut(*field), sh.get(*field), st.get(*field)) {
                walk(value, sh, st, &format!("/{field}"), true, &mut held);
            }
        }
    }
    let moved = fields.iter().any(|f| destination(edited.get(*f)) != destination(stored.get(*f)));
    walk(edited, &shown, stored, "", !moved, &mut held);
    held
}

/// The JSON pointers of the values an edit changed, added or removed, leaf by leaf (at most
/// `limit`, then `…`): what the audit record of an edit names. Values are never listed.
pub fn changed_fields(before: &Value, after: &Value, limit: usize) -> Vec<String> {
    fn walk(before: Option<&Value>, after: Option<&Value>, path: &str, out: &mut Vec<String>) {
        match (before, after) {
            (Some(Value::Object(b)), Some(Value::Object(a))) => {
                let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    walk(b.get(key), a.get(key), &format!("{path}/{}", segment(key)), out);
                }
            }
            (Some(Value::Array(b)), Some(Value::Array(a))) if b.len() == a.len() => {
                for (i, (b, a)) in b.iter().zip(a).enumerate() {
                    walk(Some(b), Some(a), &format!("{path}/{i}"), out);
                }
            }
            (b, a) if b != a => out.push(if path.is_empty() { "/".to_owned() } else { path.to_owned() }),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(Some(before), Some(after), "", &mut out);
    if out.len() > limit {
        out.truncate(limit);
        out.push("…".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secret_keys_are_found_by_part_word_or_name() {
        for key in [
            "api_token",
            "apiToken",
            "x-api-key",
            "password",
            "client_secret",
            "Authorization",
            "auth",
            "auth_header",
            "basicAuth",
            "otp",
            "otp_code",
            "pin",
            "code",
            "key",
            "session_id",
            "aws_access_key_id",
            "webhook_signature",
            "passphrase",
            "card_cvv",
        ] {
            assert!(secret_key(key), "{key} is a secret");
        }
        for key in ["author", "footprint", "shipping", "zip_code", "url", "event", "n", "monkey", "keyboard", "spinner"]
        {
            assert!(!secret_key(key), "{key} is not a secret");
        }
    }

    #[test]
    fn strings_lose_url_secrets_and_token_shapes() {
        let cases = [
            ("https://hooks.example.org/in?token=abc", "https://hooks.example.org/in?[redacted]"),
            ("https://app.example/cb?token=abc#frag", "https://app.example/cb?[redacted]#[redacted]"),
            ("https://user:pa55@db.example/x", "https://[redacted]@db.example/x"),
            ("see https://a.example/x?sig=1 and more", "see https://a.example/x?[redacted] and more"),
            (
                "https://hooks.slack.com/services/T0001/B0002/XXXXXXXXXXXXXXXXXXXXXXXX",
                "https://hooks.slack.com/services/[redacted]",
            ),
            ("hooks.slack.com/services/T0001/B0002/XXXX", "hooks.slack.com/services/[redacted]"),
            (
                "https://discord.com/api/webhooks/123456789012345678/abcDEF_ghi-JKL",
                "https://discord.com/api/webhooks/123456789012345678/[redacted]",
            ),
            (
                "https://discord.com/api/v10/webhooks/1234/tok/slack",
                "https://discord.com/api/v10/webhooks/1234/[redacted]/slack",
            ),
            (
                "https://acme.webhook.office.com/webhookb2/abc@def/IncomingWebhook/x/y",
                "https://acme.webhook.office.com/webhookb2/[redacted]",
            ),
            (
                "https://api.telegram.org/bot123:AAH-secret/sendMessage",
                "https://api.telegram.org/bot[redacted]/sendMessage",
            ),
            (
                "https://hooks.zapier.com/hooks/catch/123/abcsecret/",
                "https://hooks.zapier.com/hooks/catch/123/[redacted]/",
            ),
            ("key sk_live_4eC39HqLyjWDarjtT1zdp7dc here", "key [redacted] here"),
            ("rk_test_abcdefgh12345678", "[redacted]"),
            ("xoxb-1234-5678-abcdefgh", "[redacted]"),
            ("xoxp-1234-5678-abcdefgh", "[redacted]"),
            ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[redacted]"),
            ("github_pat_11ABCDEFG0123456789_abcdefghij", "[redacted]"),
            ("AKIAIOSFODNN7EXAMPLE", "[redacted]"),
            ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "[redacted]"),
            ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig-nature_x", "[redacted]"),
            ("Authorization: Bearer abc.def-ghi_123", "Authorization: [redacted]"),
            ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "[redacted]"),
            ("https://hooks.example.org/orders", "https://hooks.example.org/orders"),
            ("order 1234 shipped", "order 1234 shipped"),
            ("task_live_now", "task_live_now"),
        ];
        for (text, shown) in cases {
            assert_eq!(redact_text(text), shown, "{text}");
        }
    }

    #[test]
    fn payloads_hide_secrets_at_any_depth() {
        let cases = [
            (
                json!({"api_tokens": ["sk_live_aaaaaaaaaaaa", "plain"]}),
                json!({"api_tokens": ["[redacted]", "[redacted]"]}),
            ),
            (
                json!({"password": {"value": "p", "n": 1}}),
                json!({"password": {"value": "[redacted]", "n": "[redacted]"}}),
            ),
            (
                json!({"callback_url": "https://a.example/cb?token=t"}),
                json!({"callback_url": "https://a.example/cb?[redacted]"}),
            ),
            (
                json!({"links": [{"href": "https://a.example/?k=v"}]}),
                json!({"links": [{"href": "https://a.example/?[redacted]"}]}),
            ),
            (json!({"deep": {"deeper": [{"secret": null}]}}), json!({"deep": {"deeper": [{"secret": "[redacted]"}]}})),
            (json!({"note": "use xoxb-1111-2222-abcdefgh"}), json!({"note": "use [redacted]"})),
            (json!({"n": 1, "ok": true, "zip_code": "10001"}), json!({"n": 1, "ok": true, "zip_code": "10001"})),
            (json!({"headers": {"auth": "a"}}), json!({"headers": {"auth": "[redacted]"}})),
        ];
        for (stored, shown) in cases {
            assert_eq!(redact(Kind::Webhook, stored.clone()), shown, "{stored}");
        }
        let otp = redact(Kind::OtpSms, json!({"to": "+14155550100", "code": "493817"}));
        assert_eq!(otp, json!({"to": "+14155550100", "code": "[redacted]"}));
    }

    #[test]
    fn an_edit_keeps_stored_secrets_only_for_the_same_destination() {
        let stored = json!({"url": "https://hooks.example.org/in?token=abc", "event": "e",
            "data": {"api_token": "tok_live", "n": 1, "items": [{"password": "p"}]}});
        let shown = redact(Kind::Webhook, stored.clone());
        // Same destination: every value left as shown is put back, the edit kept.
        let mut edited = shown.clone();
        edited["data"]["n"] = json!(2);
        assert!(restore_redacted(Kind::Webhook, &mut edited, &stored).is_empty());
        let mut expected = stored.clone();
        expected["data"]["n"] = json!(2);
        assert_eq!(edited, expected);
        // A new URL: the secrets left as shown are named, not restored.
        let mut moved = shown.clone();
        moved["url"] = json!("https://evil.example/in");
        let held = restore_redacted(Kind::Webhook, &mut moved, &stored);
        assert_eq!(held, ["/data/api_token", "/data/items/0/password"]);
        assert_eq!(moved["data"]["api_token"], "[redacted]");
        // ... unless the operator supplies them.
        let mut supplied = moved.clone();
        supplied["data"]["api_token"] = json!("tok_new");
        supplied["data"]["items"][0]["password"] = json!("p2");
        assert!(restore_redacted(Kind::Webhook, &mut supplied, &stored).is_empty());
        assert_eq!(supplied["url"], "https://evil.example/in");

        let email = json!({"to": ["a@example.org"], "subject": "s",
            "template": {"name": "welcome", "data": {"reset_token": "rt_1", "name": "Ann"}}});
        let shown = redact(Kind::Email, email.clone());
        let mut same = shown.clone();
        same["to"] = json!(["A@example.org"]);
        assert!(restore_redacted(Kind::Email, &mut same, &email).is_empty());
        assert_eq!(same["template"]["data"]["reset_token"], "rt_1");
        let mut new_bcc = shown.clone();
        new_bcc["bcc"] = json!(["spy@example.org"]);
        assert_eq!(restore_redacted(Kind::Email, &mut new_bcc, &email), ["/template/data/reset_token"]);
    }

    #[test]
    fn changed_fields_name_paths_never_values() {
        let before = json!({"url": "https://a/", "data": {"n": 1, "list": [1, 2], "gone": true}});
        let after = json!({"url": "https://b/", "data": {"n": 1, "list": [1, 3], "new": "x"}});
        assert_eq!(changed_fields(&before, &after, 10), ["/data/gone", "/data/list/1", "/data/new", "/url"]);
        assert_eq!(changed_fields(&before, &after, 2), ["/data/gone", "/data/list/1", "…"]);
        assert!(changed_fields(&before, &before, 10).is_empty());
    }
}
