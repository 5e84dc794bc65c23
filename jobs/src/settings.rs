//! Reading settings from the environment: a bad value stops the process at start with one
//! line naming the variable.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

/// A URL as a log line or an error message may show it: its password replaced by `***`; a value
/// that does not parse as a URL is shown only when it holds no `@` (no user info to leak).
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) if url.contains('@') => "<not a URL>".to_owned(),
        Err(_) => url.to_owned(),
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
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
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

#[cfg(test)]
mod tests {
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
