//! Reading settings from the environment: a bad value stops the process at start with one
//! line naming the variable.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

/// A URL as a log line or an error message may show it: its password, and the values of secret
/// query keys (`?password=`), replaced by `***`; a value that does not parse as a URL with a
/// host is shown only when it holds no `@` or `?` (no user info or query to leak).
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.has_host() => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            // `?password=...` (which sqlx reads too), `?token=...`: the values of secret keys.
            if parsed.query_pairs().any(|(k, _)| crate::redact::secret_key(&k)) {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if crate::redact::secret_key(&k) { "***".to_owned() } else { v.into_owned() };
                        (k.into_owned(), v)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        _ if url.contains('@') || url.contains('?') => "<not a URL>".to_owned(),
        _ => url.to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct SettingError {
    pub name: Cow<'static, str>,
    pub problem: String,
}

impl SettingError {
    pub fn new(name: &'static str, problem: impl Into<String>) -> Self {
        Self { name: Cow::Borrowed(name), problem: problem.into() }
    }

    /// For variables whose name is only known at run time (`SMS_TEMPLATE_<NAME>`).
    pub fn named(name: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { name: Cow::Owned(name.into()), problem: problem.into() }
    }
}

/// A snapshot of the environment. Tests build one from pairs instead of changing the process's.
/// Its `Debug` lists the names only: the values include every secret the process was given.
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Env").field("names", &names).finish_non_exhaustive()
    }
}

/// A URL setting that may carry a password (`DATABASE_URL`): `Debug` shows it with the password
/// replaced ([`redacted_url`]); [`SecretUrl::expose`] gives the URL itself, for connecting.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redacted_url(&self.0))
    }
}

impl Env {
    pub fn from_process() -> Self {
        Self { vars: std::env::vars().collect() }
    }

    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self { vars: pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect() }
    }

    /// The value, with an empty one counted as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Every set variable whose name starts with `prefix`, as (the rest of the name, value), sorted by name.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut found: Vec<(&str, &str)> = self
            .vars
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?, v.as_str())))
            .collect();
        found.sort_unstable();
        found
    }

    pub fn or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    pub fn require(&self, name: &'static str, what: &str) -> Result<&str, SettingError> {
        self.get(name).ok_or_else(|| SettingError::new(name, format!("is required: {what}")))
    }

    pub fn parse<T: FromStr>(&self, name: &'static str, default: T) -> Result<T, SettingError>
    where
        T::Err: Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|e| SettingError::new(name, format!("`{raw}` is not valid ({e})"))),
        }
    }

    pub fn seconds(&self, name: &'static str, default: u64) -> Result<Duration, SettingError> {
        self.parse(name, default).map(Duration::from_secs)
    }

    pub fn millis(&self, name: &'static str, default: u64) -> Result<Duration, SettingError> {
        self.parse(name, default).map(Duration::from_millis)
    }

    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool, SettingError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(other) => Err(SettingError::new(name, format!("`{other}` is not true or false"))),
        }
    }
}

/// How long a finished (succeeded or cancelled) job stays readable, per kind:
/// `JOB_RETENTION_SECONDS` (default a day), or `JOB_RETENTION_SECONDS_<KIND>`; `audit_log`
/// defaults to 0, since an audit event's row in PostgreSQL is its record. Read by the worker
/// (succeeded jobs) and by whatever cancels jobs (the producer API, the console).
pub fn finished_retention(env: &Env) -> Result<std::collections::BTreeMap<crate::Kind, Duration>, SettingError> {
    use crate::Kind;
    let shared = env.seconds("JOB_RETENTION_SECONDS", 86_400)?;
    let mut retention = std::collections::BTreeMap::new();
    for kind in Kind::ALL {
        let (name, default) = match kind {
            Kind::OtpSms => ("JOB_RETENTION_SECONDS_OTP_SMS", shared),
            Kind::Email => ("JOB_RETENTION_SECONDS_EMAIL", shared),
            Kind::Webhook => ("JOB_RETENTION_SECONDS_WEBHOOK", shared),
            Kind::AuditLog => ("JOB_RETENTION_SECONDS_AUDIT_LOG", Duration::ZERO),
        };
        let finished = match env.get(name) {
            Some(_) => env.seconds(name, 0)?,
            None => default,
        };
        retention.insert(kind, finished);
    }
    Ok(retention)
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_never_shows_a_secret_setting() {
        let env = super::Env::from_pairs(&[("TWILIO_AUTH_TOKEN", "s3cretpw"), ("WEBHOOK_SIGNING_SECRET", "s3cretpw")]);
        let shown = format!("{env:?}");
        assert!(shown.contains("TWILIO_AUTH_TOKEN") && !shown.contains("s3cretpw"), "{shown}");
        let url = super::SecretUrl::new("postgres://app:s3cretpw@db:5432/jobs");
        let shown = format!("{url:?}");
        assert!(shown.contains("db:5432") && !shown.contains("s3cretpw"), "{shown}");
        assert_eq!(url.expose(), "postgres://app:s3cretpw@db:5432/jobs");
        assert_eq!(super::redacted_url("not a url"), "not a url");
        assert_eq!(super::redacted_url("x:s3cretpw@y z"), "<not a URL>");
        let shown = super::redacted_url("postgres://db/jobs?sslmode=require&password=s3cretpw");
        assert_eq!(shown, "postgres://db/jobs?sslmode=require&password=***");
    }

    use super::*;

    #[test]
    fn errors_name_the_variable() {
        let env = Env::from_pairs(&[("N", "x"), ("B", "maybe"), ("E", "")]);
        assert_eq!(
            env.parse::<u32>("N", 1).unwrap_err().to_string(),
            "N: `x` is not valid (invalid digit found in string)"
        );
        assert!(env.flag("B", false).unwrap_err().to_string().starts_with("B: "));
        assert_eq!(env.parse::<u32>("E", 7).unwrap(), 7);
        assert!(env.require("E", "a thing").unwrap_err().to_string().starts_with("E: is required"));
        assert_eq!(SettingError::named("SMS_TEMPLATE_X", "bad").to_string(), "SMS_TEMPLATE_X: bad");
    }

    #[test]
    fn variables_by_prefix() {
        let env = Env::from_pairs(&[("P_B", "2"), ("P_A", "1"), ("P_E", ""), ("Q_A", "3")]);
        assert_eq!(env.with_prefix("P_"), [("A", "1"), ("B", "2")]);
    }
}
