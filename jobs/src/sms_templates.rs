//! The texts of OTP SMS. The producer API refuses a job naming a template that does not
//! exist (`422` at `/payload/template`) and the worker renders it, so both read the same
//! settings through this module: the built-in `default`, and one `SMS_TEMPLATE_<NAME>`
//! variable per named template (`SMS_TEMPLATE_LOGIN` is the template `login`;
//! `SMS_TEMPLATE_DEFAULT` replaces the built-in text).
//!
//! A template holds `{code}` (required) and may hold `{minutes}` (the job's `ttl_seconds`
//! in minutes, rounded up); any other `{...}` is refused at start, so a typo such as
//! `{cod}` stops the process instead of sending a text without its code.

use std::collections::BTreeMap;

use crate::payload::OtpSms;
use crate::settings::{Env, SettingError};
use crate::validation::FieldError;

/// Used when a job names no template, unless `SMS_TEMPLATE_DEFAULT` replaces it.
pub const DEFAULT_TEMPLATE: &str = "Your verification code is {code}. It expires in {minutes} minutes.";

/// The name a job without `template` gets.
pub const DEFAULT_NAME: &str = "default";

/// The longest template accepted: ten SMS segments of 160 GSM characters.
const MAX_TEMPLATE_CHARS: usize = 1600;

const PREFIX: &str = "SMS_TEMPLATE_";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsTemplates {
    by_name: BTreeMap<String, Template>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Code,
    Minutes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Template(Vec<Piece>);

impl Default for SmsTemplates {
    fn default() -> Self {
        let default = Template::parse(DEFAULT_TEMPLATE).unwrap_or_else(|_| Template(vec![Piece::Code]));
        Self { by_name: BTreeMap::from([(DEFAULT_NAME.to_owned(), default)]) }
    }
}

impl SmsTemplates {
    /// The built-in default and every `SMS_TEMPLATE_<NAME>`; a bad one names its variable.
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let mut templates = Self::default();
        for (suffix, text) in env.with_prefix(PREFIX) {
            let variable = format!("{PREFIX}{suffix}");
            let valid_name = !suffix.is_empty()
                && suffix.len() <= 64
                && suffix.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                return Err(SettingError::named(
                    variable,
                    "the part after SMS_TEMPLATE_ must be 1 to 64 capital letters, digits or _",
                ));
            }
            let template = Template::parse(text).map_err(|problem| SettingError::named(variable, problem))?;
            templates.by_name.insert(suffix.to_ascii_lowercase(), template);
        }
        Ok(templates)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// The text of `otp`, `{code}` filled with `code` (the real one to send, a mask to log);
    /// `None` when its template is unknown.
    pub fn render(&self, otp: &OtpSms, code: &str) -> Option<String> {
        let template = self.by_name.get(otp.template.as_deref().unwrap_or(DEFAULT_NAME))?;
        let minutes = otp.ttl_seconds.div_ceil(60).to_string();
        Some(
            template
                .0
                .iter()
                .map(|piece| match piece {
                    Piece::Text(text) => text.as_str(),
                    Piece::Code => code,
                    Piece::Minutes => &minutes,
                })
                .collect(),
        )
    }

    /// The enqueue-time check: a job naming an unknown template breaks a rule at
    /// `<base>/payload/template`.
    pub fn check(&self, otp: &OtpSms, base: &str) -> Option<FieldError> {
        let name = otp.template.as_deref()?;
        (!self.contains(name)).then(|| {
            let known: Vec<&str> = self.names().collect();
            FieldError::new(
                format!("{base}/payload/template"),
                format!("unknown template `{name}`; this deployment has: {}", known.join(", ")),
            )
        })
    }
}

impl Template {
    fn parse(text: &str) -> Result<Self, String> {
        if text.chars().count() > MAX_TEMPLATE_CHARS {
            return Err(format!("must be at most {MAX_TEMPLATE_CHARS} characters"));
        }
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err("must not hold control characters other than a line feed".into());
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or("has a `{` without its `}`; placeholders are {code} and {minutes}")?;
            pieces.push(match &after[..close] {
                "code" => Piece::Code,
                "minutes" => Piece::Minutes,
                other => {
                    return Err(format!("unknown placeholder {{{other}}}; placeholders are {{code}} and {{minutes}}"));
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        if !pieces.contains(&Piece::Code) {
            return Err("must contain {code}".into());
        }
        Ok(Self(pieces))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn otp(template: Option<&str>, ttl_seconds: u32) -> OtpSms {
        serde_json::from_value(serde_json::json!({
            "to": "+886912345678", "code": "482913", "template": template, "ttl_seconds": ttl_seconds
        }))
        .unwrap()
    }

    #[test]
    fn the_default_renders_code_and_minutes_rounded_up() {
        let templates = SmsTemplates::default();
        assert_eq!(
            templates.render(&otp(None, 300), "482913").unwrap(),
            "Your verification code is 482913. It expires in 5 minutes."
        );
        assert_eq!(
            templates.render(&otp(Some("default"), 61), "****").unwrap(),
            "Your verification code is ****. It expires in 2 minutes."
        );
        assert!(templates.render(&otp(Some("login"), 300), "1").is_none());
    }

    #[test]
    fn named_templates_come_from_the_environment() {
        let env = Env::from_pairs(&[
            ("SMS_TEMPLATE_LOGIN", "{code} is your login code ({minutes} min)"),
            ("SMS_TEMPLATE_DEFAULT", "Code: {code}"),
        ]);
        let templates = SmsTemplates::from_env(&env).unwrap();
        assert_eq!(templates.names().collect::<Vec<_>>(), ["default", "login"]);
        assert_eq!(templates.render(&otp(Some("login"), 90), "1234").unwrap(), "1234 is your login code (2 min)");
        assert_eq!(templates.render(&otp(None, 90), "1234").unwrap(), "Code: 1234");
        assert!(templates.check(&otp(Some("login"), 90), "").is_none());
        let error = templates.check(&otp(Some("signup"), 90), "/jobs/2").unwrap();
        assert_eq!(error.field, "/jobs/2/payload/template");
        assert!(error.message.contains("`signup`") && error.message.contains("default, login"), "{}", error.message);
    }

    #[test]
    fn bad_templates_name_their_variable() {
        let error = |value: &str| {
            SmsTemplates::from_env(&Env::from_pairs(&[("SMS_TEMPLATE_LOGIN", value)])).unwrap_err().to_string()
        };
        assert_eq!(error("Welcome, {minutes}"), "SMS_TEMPLATE_LOGIN: must contain {code}");
        assert!(error("{cod}").starts_with("SMS_TEMPLATE_LOGIN: unknown placeholder {cod}"), "{}", error("{cod}"));
        assert!(error("{code").starts_with("SMS_TEMPLATE_LOGIN: has a `{`"));
        assert!(error("a\u{7}{code}").starts_with("SMS_TEMPLATE_LOGIN: must not hold control"));
        assert!(error(&"x".repeat(1601)).starts_with("SMS_TEMPLATE_LOGIN: must be at most"));
        let bad_name = SmsTemplates::from_env(&Env::from_pairs(&[("SMS_TEMPLATE_log-in", "{code}")])).unwrap_err();
        assert!(bad_name.to_string().starts_with("SMS_TEMPLATE_log-in: the part after"), "{bad_name}");
        assert!(Template::parse("Line one\n{code}").is_ok());
    }
}
