//! Where providers call back (`CALLBACK_BASE_URL`) and the secret that authenticates the
//! callbacks that carry no signature of their own (`CALLBACK_SECRET`): read by the worker, which
//! gives providers the callback URLs with each send, and by the producer API, which serves them
//! under `/v1/callbacks/*`.

use secrecy::{ExposeSecret, SecretString};

use crate::settings::{Env, SettingError};

/// The shortest `CALLBACK_SECRET`.
pub const MIN_SECRET_LEN: usize = 16;
/// The longest `CALLBACK_SECRET`: it travels in a URL.
pub const MAX_SECRET_LEN: usize = 128;

/// `CALLBACK_BASE_URL` and `CALLBACK_SECRET`, each optional: without the base URL no provider is
/// asked to call back; without the secret every callback that relies on it is refused.
#[derive(Clone, Default)]
pub struct CallbackSettings {
    /// `https://api.example.com` (no trailing `/`, no query, no user info), or a path prefix
    /// under which a proxy serves the producer API (`https://example.com/jobplane`).
    base_url: Option<String>,
    secret: Option<SecretString>,
}

impl std::fmt::Debug for CallbackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackSettings")
            .field("base_url", &self.base_url)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl CallbackSettings {
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let base_url = env.get("CALLBACK_BASE_URL").map(base_url).transpose()?;
        let secret = match env.get("CALLBACK_SECRET") {
            None => None,
            Some(s) if (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&s.len()) && s.bytes().all(url_safe) => {
                Some(SecretString::from(s))
            }
            Some(_) => {
                return Err(SettingError::new(
                    "CALLBACK_SECRET",
                    format!(
                        "must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters of letters, digits, `-`, `_`, `.` or `~` (it travels in a URL)"
                    ),
                ));
            }
        };
        Ok(Self { base_url, secret })
    }

    /// Settings built in code (tests, tools).
    pub fn new(base_url: Option<&str>, secret: Option<&str>) -> Self {
        Self { base_url: base_url.map(|u| u.trim_end_matches('/').to_owned()), secret: secret.map(SecretString::from) }
    }

    /// The public URL of `path` (`/v1/callbacks/twilio`), or `None` when `CALLBACK_BASE_URL` is unset.
    pub fn url(&self, path: &str) -> Option<String> {
        self.base_url.as_ref().map(|base| format!("{base}{path}"))
    }

    pub fn base_url(&self) -> Option<&str> {
        self.base_url.as_deref()
    }

    /// Whether `presented` is the callback secret, compared in constant time (digests of both,
    /// so neither the length nor a prefix leaks); never true when no secret is set.
    pub fn secret_matches(&self, presented: &str) -> bool {
        use sha2::Digest;
        let Some(secret) = &self.secret else { return false };
        let expected = sha2::Sha256::digest(secret.expose_secret().as_bytes());
        let given = sha2::Sha256::digest(presented.as_bytes());
        subtle::ConstantTimeEq::ct_eq(expected.as_slice(), given.as_slice()).into()
    }

    /// The secret itself, for the URLs the worker gives providers.
    pub fn secret(&self) -> Option<&SecretString> {
        self.secret.as_ref()
    }
}

fn url_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.~".contains(&b)
}

fn base_url(raw: &str) -> Result<String, SettingError> {
    // Shown without any password it holds.
    let shown = crate::settings::redacted_url(raw);
    let bad = |problem: &str| SettingError::new("CALLBACK_BASE_URL", format!("`{shown}` {problem}"));
    let parsed = url::Url::parse(raw).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.has_host() {
        return Err(bad("must be an http or https URL with a host"));
    }
    if !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        return Err(bad("must carry no user info, query or fragment: it is the producer API's public root"));
    }
    if raw.len() > 512 {
        return Err(bad("is longer than 512 characters"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(pairs: &[(&str, &str)]) -> String {
        CallbackSettings::from_env(&Env::from_pairs(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn settings_are_checked_and_the_secret_never_shown() {
        assert!(error(&[("CALLBACK_BASE_URL", "ftp://x")]).starts_with("CALLBACK_BASE_URL: "));
        assert!(error(&[("CALLBACK_BASE_URL", "https://a.example/?x=1")]).starts_with("CALLBACK_BASE_URL: "));
        let userinfo = error(&[("CALLBACK_BASE_URL", "https://u:pw-s3cret@a.example")]);
        assert!(userinfo.starts_with("CALLBACK_BASE_URL: ") && !userinfo.contains("pw-s3cret"), "{userinfo}");
        assert!(error(&[("CALLBACK_SECRET", "short")]).starts_with("CALLBACK_SECRET: "));
        assert!(error(&[("CALLBACK_SECRET", "has space 0123456789")]).starts_with("CALLBACK_SECRET: "));
        let s = CallbackSettings::from_env(&Env::from_pairs(&[
            ("CALLBACK_BASE_URL", "https://api.example.com/jobplane/"),
            ("CALLBACK_SECRET", "s3cret-0123456789abcdef"),
        ]))
        .unwrap();
        assert_eq!(
            s.url("/v1/callbacks/twilio").as_deref(),
            Some("https://api.example.com/jobplane/v1/callbacks/twilio")
        );
        assert!(s.secret_matches("s3cret-0123456789abcdef"));
        assert!(!s.secret_matches("s3cret-0123456789abcdeF") && !s.secret_matches(""));
        assert!(!format!("{s:?}").contains("s3cret"));
        let none = CallbackSettings::from_env(&Env::default()).unwrap();
        assert_eq!(none.url("/x"), None);
        assert!(!none.secret_matches(""), "no secret set: nothing matches");
    }
}
