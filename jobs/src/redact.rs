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
//!   `/api/webhooks/<id>/<token>`, Teams, Telegram bots, Zapier catch hooks);
//! - in every string, header lines (`X-Api-Key: …`), `Basic`/`Bearer` credentials and form pairs
//!   (`client_secret=…`) whose name marks a secret; a string that holds JSON is redacted as JSON;
//!   a name/value pair (`{"name": "Authorization", "value": …}`) hides its value; a key that is
//!   a secret itself (a token shape, or a token-like key under a secret key) is shown as
//!   `[redacted]`, and an edit left as shown maps it back.
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
        r"|(?i:\bbasic\s+)[0-9A-Za-z+/]{8,}=*",       // basic credentials (base64 user:password)
        r"|-----BEGIN[A-Z ]*PRIVATE KEY-----(?s:.*?)(?:-----END[A-Z ]*PRIVATE KEY-----|\z)",
    ))
});

/// A header line (`X-Api-Key: …`, `Authorization: Basic …`) inside any text: the name, then the
/// value to the end of the line.
static HEADER_LINE: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"(?m)^([ \t]*([A-Za-z0-9_\-]+)[ \t]*:[ \t]*)(\S[^\r\n]*)"));

/// A `name=value` pair of a form body or a query string outside a URL (`client_secret=…`).
static FORM_PAIR: LazyLock<Regex> = LazyLock::new(|| pattern(r#"([A-Za-z0-9_.\-\[\]]+)=([^&\s"'#;,]+)"#));

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
    if let std::borrow::Cow::Owned(hidden) = TOKENS.replace_all(&out, REDACTED) {
        out = hidden;
    }
    // Header lines and form pairs whose name marks a secret (the name stays).
    if out.contains(':')
        && let std::borrow::Cow::Owned(hidden) = HEADER_LINE.replace_all(&out, |c: &regex::Captures<'_>| {
            if secret_key(&c[2]) && &c[3] != REDACTED { format!("{}{REDACTED}", &c[1]) } else { c[0].to_owned() }
        })
    {
        out = hidden;
    }
    if out.contains('=')
        && let std::borrow::Cow::Owned(hidden) = FORM_PAIR.replace_all(&out, |c: &regex::Captures<'_>| {
            if secret_key(&c[1]) && &c[2] != REDACTED { format!("{}={REDACTED}", &c[1]) } else { c[0].to_owned() }
        })
    {
        out = hidden;
    }
    out
}

/// A string as shown: a string that holds a JSON object or array is redacted as JSON (its
/// secrets by key, at any depth) and shown re-serialized; any other by [`redact_text`].
fn redact_string(text: &str) -> Option<String> {
    let trimmed = text.trim_start();
    if (trimmed.starts_with('{') || trimmed.starts_with('['))
        && let Ok(mut inner) = serde_json::from_str::<Value>(text)
        && (inner.is_object() || inner.is_array())
    {
        let before = inner.clone();
        walk(&mut inner);
        return (inner != before).then(|| inner.to_string());
    }
    let shown = redact_text(text);
    (shown != text).then_some(shown)
}

/// Under a secret key, a key that is not a plain word (it holds a digit, or is long: a token
/// used as a map's key) is hidden too.
fn key_looks_secret(key: &str) -> bool {
    key.len() > 32 || !key.chars().all(|c| c.is_ascii_alphabetic() || c == '_' || c == '-')
}

/// The keys of an object as shown, each with the key stored: a key that is a secret itself (a
/// token shape, a URL with a query, or a token-like key under a secret key) is shown as
/// `[redacted]` (`[redacted 2]`, ... when several).
fn shown_keys(map: &serde_json::Map<String, Value>, hidden: bool) -> Vec<(String, String)> {
    let mut n = 0;
    map.keys()
        .map(|key| {
            let secret = if hidden { key_looks_secret(key) } else { redact_text(key) != *key };
            if !secret {
                return (key.clone(), key.clone());
            }
            loop {
                n += 1;
                let name = if n == 1 { REDACTED.to_owned() } else { format!("[redacted {n}]") };
                if !map.contains_key(&name) {
                    return (name, key.clone());
                }
            }
        })
        .collect()
}

/// A key as the audit record names it (see [`shown_keys`]).
fn shown_key(key: &str, hidden: bool) -> String {
    let secret = if hidden { key_looks_secret(key) } else { redact_text(key) != key };
    if secret { REDACTED.to_owned() } else { key.to_owned() }
}

/// Renames the keys of an object as [`shown_keys`] says.
fn rename_keys(map: &mut serde_json::Map<String, Value>, hidden: bool) {
    let names = shown_keys(map, hidden);
    if names.iter().all(|(shown, stored)| shown == stored) {
        return;
    }
    let mut old = std::mem::take(map);
    for (shown, stored) in names {
        if let Some(value) = old.remove(&stored) {
            map.insert(shown, value);
        }
    }
}

/// Whether an object is a name/value pair (`{"name": "X-Api-Key", "value": "…"}`) whose name
/// marks a secret: then its value is one.
fn secret_pair(map: &serde_json::Map<String, Value>) -> bool {
    map.iter().any(|(k, v)| {
        ["name", "key", "header", "field", "param"].iter().any(|n| k.eq_ignore_ascii_case(n))
            && v.as_str().is_some_and(secret_key)
    })
}

/// Whether the value under `key` of `map` is hidden whole: a secret key, or the value of a
/// secret name/value pair.
fn hides(map: &serde_json::Map<String, Value>, key: &str) -> bool {
    secret_key(key) || (key.to_ascii_lowercase().starts_with("value") && secret_pair(map))
}

fn walk(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let pair = secret_pair(map);
            for (key, v) in map.iter_mut() {
                if secret_key(key) || (pair && key.to_ascii_lowercase().starts_with("value")) {
                    hide_all(v);
                } else {
                    walk(v);
                }
            }
            rename_keys(map, false);
        }
        Value::Array(items) => items.iter_mut().for_each(walk),
        Value::String(s) => {
            if let Some(shown) = redact_string(s) {
                *s = shown;
            }
        }
        _ => {}
    }
}

/// Every leaf of a value hidden, its shape kept (so an edit can leave a leaf as it was shown).
fn hide_all(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.values_mut().for_each(hide_all);
            rename_keys(map, true);
        }
        Value::Array(items) => items.iter_mut().for_each(hide_all),
        leaf => *leaf = Value::String(REDACTED.into()),
    }
}

/// The payload as operators may see it (see the module's rules). An OTP job's `code` is
/// always hidden.
pub fn redact(kind: Kind, mut payload: Value) -> Value {
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
        // Replies (and auto-replies, which quote the message) go to `reply_to`.
        Kind::Email => &["to", "cc", "bcc", "reply_to"],
        Kind::OtpSms => &["to"],
        Kind::AuditLog => &[],
    }
}

/// The addresses of a destination field, compared as a set: order and repeats aside, and case
/// too for addresses (email, phone). A URL is compared as written: its path is case-sensitive,
/// and another path on the same host may be someone else's receiver.
fn destination(kind: Kind, value: Option<&Value>) -> Vec<String> {
    let fold = |s: &str| if kind == Kind::Webhook { s.trim().to_owned() } else { s.trim().to_lowercase() };
    let mut list: Vec<String> = match value {
        Some(Value::String(s)) => vec![fold(s)],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(fold).collect(),
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
    fn walk(
        edited: &mut Value,
        shown: &Value,
        stored: &Value,
        path: &str,
        restore: bool,
        hidden: bool,
        held: &mut Vec<String>,
    ) {
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
                // Keys shown as `[redacted]` (secrets themselves) map back to the stored ones.
                let names = shown_keys(st, hidden);
                let mut renames = Vec::new();
                for (key, value) in e.iter_mut() {
                    let stored_key = names.iter().find(|(shown, _)| shown == key).map(|(_, stored)| stored);
                    if let (Some(sh), Some(stored_key)) = (sh.get(key), stored_key)
                        && let Some(stored_value) = st.get(stored_key)
                    {
                        let inner = hidden || hides(st, stored_key);
                        walk(value, sh, stored_value, &format!("{path}/{}", segment(key)), restore, inner, held);
                        if stored_key != key {
                            if restore {
                                renames.push((key.clone(), stored_key.clone()));
                            } else {
                                held.push(format!("{path}/{}", segment(key)));
                            }
                        }
                    }
                }
                for (shown, stored) in renames {
                    if let Some(value) = e.remove(&shown) {
                        e.insert(stored, value);
                    }
                }
            }
            (Value::Array(e), Value::Array(sh), Value::Array(st)) => {
                for (i, ((value, sh), st)) in e.iter_mut().zip(sh).zip(st).enumerate() {
                    walk(value, sh, st, &format!("{path}/{i}"), restore, hidden, held);
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
                walk(value, sh, st, &format!("/{field}"), true, false, &mut held);
            }
        }
    }
    let moved = fields.iter().any(|f| destination(kind, edited.get(*f)) != destination(kind, stored.get(*f)));
    walk(edited, &shown, stored, "", !moved, false, &mut held);
    held.sort();
    held.dedup();
    held
}

/// The JSON pointers of the values an edit changed, added or removed, leaf by leaf (at most
/// `limit`, then `…`): what the audit record of an edit names. Values are never listed.
pub fn changed_fields(before: &Value, after: &Value, limit: usize) -> Vec<String> {
    fn walk(before: Option<&Value>, after: Option<&Value>, path: &str, hidden: bool, out: &mut Vec<String>) {
        match (before, after) {
            (Some(Value::Object(b)), Some(Value::Object(a))) => {
                let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    // A key that is a secret itself is named as shown (`[redacted]`).
                    let inner = hidden || hides(b, key) || hides(a, key);
                    let name = segment(&shown_key(key, hidden));
                    walk(b.get(key), a.get(key), &format!("{path}/{name}"), inner, out);
                }
            }
            (Some(Value::Array(b)), Some(Value::Array(a))) if b.len() == a.len() => {
                for (i, (b, a)) in b.iter().zip(a).enumerate() {
                    walk(Some(b), Some(a), &format!("{path}/{i}"), hidden, out);
                }
            }
            (b, a) if b != a => out.push(if path.is_empty() { "/".to_owned() } else { path.to_owned() }),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(Some(before), Some(after), "", false, &mut out);
    out.dedup();
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

/// Review of the console hardening (issue 13): secrets the first version still showed, and edits
/// it still let through.
#[cfg(test)]
mod review {
    use serde_json::json;

    use super::*;

    fn shown(stored: &Value) -> String {
        redact(Kind::Webhook, stored.clone()).to_string()
    }

    #[test]
    fn secrets_inside_json_text_are_hidden() {
        let stored = json!({"url": "https://a.example/in", "event": "e", "data": {
            "body": "{\"password\":\"hunter2-pw\",\"user\":\"ann\"}",
            "items": "[{\"api_key\":\"k-998877\"}]",
            "twice": "{\"inner\":\"{\\\"secret\\\":\\\"s3cr3t-deep\\\"}\"}"}});
        let text = shown(&stored);
        for secret in ["hunter2-pw", "k-998877", "s3cr3t-deep"] {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
        assert!(text.contains("ann"), "what is no secret stays: {text}");
    }

    #[test]
    fn header_lines_name_value_pairs_basic_auth_and_form_bodies_are_hidden() {
        let stored = json!({"url": "https://a.example/in", "event": "e", "data": {
            "headers": ["Authorization: Basic dXNlcjpodW50ZXIy", "X-Api-Key: k_live_4455", "Accept: */*"],
            "header_list": [{"name": "X-Api-Key", "value": "hdr-77665544"},
                            {"key": "Authorization", "value": "Token tk-11223344"},
                            {"name": "Accept", "value": "text/plain"}],
            "form": "grant_type=client_credentials&client_secret=cs-5566778899&scope=all",
            "line": "send with basic dXNlcjpzZWNyZXRwdw=="}});
        let text = shown(&stored);
        for secret in
            ["dXNlcjpodW50ZXIy", "k_live_4455", "hdr-77665544", "tk-11223344", "cs-5566778899", "dXNlcjpzZWNyZXRwdw"]
        {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
        for kept in ["Accept: */*", "text/plain", "grant_type=client_credentials", "scope=all"] {
            assert!(text.contains(kept), "{kept} hidden: {text}");
        }
    }

    #[test]
    fn keys_that_are_secrets_are_hidden_and_an_edit_keeps_them() {
        let stored = json!({"url": "https://a.example/in", "event": "e", "data": {
            "api_tokens": {"tok-a1b2c3d4e5": "billing", "tok-f6g7h8i9j0": "crm"},
            "by_key": {"sk_live_4eC39HqLyjWDarjtT1zdp7dc": 1}, "n": 1}});
        let text = shown(&stored);
        for secret in ["tok-a1b2c3d4e5", "tok-f6g7h8i9j0", "sk_live_4eC39Hq"] {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
        // An edit that leaves them as shown gets them back, same destination.
        let mut edited = redact(Kind::Webhook, stored.clone());
        edited["data"]["n"] = json!(2);
        assert!(restore_redacted(Kind::Webhook, &mut edited, &stored).is_empty());
        let mut expected = stored.clone();
        expected["data"]["n"] = json!(2);
        assert_eq!(edited, expected);
        // A new destination: held, named by the shown path.
        let mut moved = redact(Kind::Webhook, stored.clone());
        moved["url"] = json!("https://evil.example/in");
        let held = restore_redacted(Kind::Webhook, &mut moved, &stored);
        assert!(!held.is_empty());
        assert!(held.iter().all(|p| !p.contains("tok-") && !p.contains("sk_live")), "{held:?}");
        // The audit record's changed paths never name a secret key either.
        let mut after = stored.clone();
        after["data"]["api_tokens"]["tok-a1b2c3d4e5"] = json!("finance");
        let changed = changed_fields(&stored, &after, 10);
        assert_eq!(changed.len(), 1);
        assert!(!changed[0].contains("tok-"), "{changed:?}");
    }

    #[test]
    fn a_webhook_url_that_differs_in_its_path_case_is_a_new_destination() {
        let stored = json!({"url": "https://receiver.example/Tenants/AcmeCo", "event": "e",
            "data": {"api_token": "tok_live_secret"}});
        let mut edited = redact(Kind::Webhook, stored.clone());
        edited["url"] = json!("https://receiver.example/tenants/acmeco");
        assert_eq!(restore_redacted(Kind::Webhook, &mut edited, &stored), ["/data/api_token"]);
        assert_eq!(edited["data"]["api_token"], REDACTED);
    }

    #[test]
    fn a_new_reply_to_is_a_new_destination() {
        let stored = json!({"to": ["ann@example.org"], "subject": "s",
            "template": {"name": "reset", "data": {"reset_token": "rt_1"}}});
        let mut edited = redact(Kind::Email, stored.clone());
        edited["reply_to"] = json!(["spy@example.net"]);
        assert_eq!(restore_redacted(Kind::Email, &mut edited, &stored), ["/template/data/reset_token"]);
    }
}
