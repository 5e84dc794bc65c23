//! Bearer API keys. Only SHA-256 digests of the secrets are kept, and every request is
//! compared against every key in constant time, so neither timing nor a memory dump gives
//! a secret away.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::problem::ApiError;

/// Shortest secret accepted: 16 characters is 96 bits of base64 or more.
const MIN_SECRET_LEN: usize = 16;

#[derive(Clone)]
pub struct ApiKeys {
    keys: Arc<[(String, [u8; 32])]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|(name, _)| name)).finish()
    }
}

impl ApiKeys {
    /// `name:secret,name:secret`. A name may appear twice (old and new secret during a
    /// rotation); the name is what jobs record as their producer.
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
            keys.push((name.to_owned(), Sha256::digest(secret.as_bytes()).into()));
        }
        Ok(Self { keys: keys.into() })
    }

    /// The producer name of the key whose secret is `presented`.
    pub fn authenticate(&self, presented: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (name, expected) in self.keys.iter() {
            if bool::from(expected.ct_eq(&digest)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// The authenticated caller, by its key's name.
#[derive(Debug, Clone)]
pub struct Producer(pub String);

impl FromRequestParts<AppState> for Producer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .ok_or(ApiError::Unauthorized)?;
        state.api_keys.authenticate(token.trim()).map(|name| Producer(name.to_owned())).ok_or(ApiError::Unauthorized)
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
