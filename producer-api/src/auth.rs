//! The producers' API keys (`PRODUCER_API_KEYS`), kept and checked by [`service::auth`]: as
//! digests, compared in constant time.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use service::auth::{BearerSecrets, MIN_SECRET_LEN, SecretDigest};

use crate::AppState;
use crate::problem::ApiError;

/// Each key by its producer's name, which jobs record as their producer.
#[derive(Debug, Clone)]
pub struct ApiKeys(BearerSecrets<String>);

impl ApiKeys {
    /// `name:secret,name:secret`. A name may appear twice (old and new secret during a
    /// rotation).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (i, pair) in raw.split(',').map(str::trim).enumerate() {
            let Some((name, secret)) = pair.split_once(':') else {
                return Err(format!("entry {} is not name:secret", i + 1));
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
                return Err(format!("entry {}: the name must be letters, digits, _ . or -", i + 1));
            }
            if secret.len() < MIN_SECRET_LEN {
                return Err(format!(
                    "entry {} ({name}): the secret must be at least {MIN_SECRET_LEN} characters",
                    i + 1
                ));
            }
            keys.push((SecretDigest::of(secret), name.to_owned()));
        }
        Ok(Self(BearerSecrets::new(keys)))
    }

    /// The producer name of the key whose secret is `presented`.
    pub fn authenticate(&self, presented: &str) -> Option<&str> {
        self.0.authenticate(presented).map(String::as_str)
    }
}

/// The authenticated caller, by its key's name.
#[derive(Debug, Clone)]
pub struct Producer(pub String);

impl FromRequestParts<AppState> for Producer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        state.api_keys.0.from_headers(&parts.headers).map(|name| Producer(name.clone())).ok_or(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_authenticate() {
        let keys = ApiKeys::parse("shop:aaaaaaaaaaaaaaaa, shop:bbbbbbbbbbbbbbbb,billing:cccccccccccccccc").unwrap();
        assert_eq!(keys.authenticate("bbbbbbbbbbbbbbbb"), Some("shop"));
        assert_eq!(keys.authenticate("cccccccccccccccc"), Some("billing"));
        assert_eq!(keys.authenticate("cccccccccccccccd"), None);
        assert_eq!(keys.authenticate(""), None);
        assert!(!format!("{keys:?}").contains("aaaa"));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(ApiKeys::parse("shop").unwrap_err().contains("name:secret"));
        assert!(ApiKeys::parse("shop:short").unwrap_err().contains("at least 16"));
        assert!(ApiKeys::parse("sh op:aaaaaaaaaaaaaaaa").unwrap_err().contains("name"));
        assert!(ApiKeys::parse("a:aaaaaaaaaaaaaaaa,").is_err());
    }
}
