//! Bearer secrets (the producer API's keys, the console's operator tokens). Only SHA-256
//! digests of the secrets are kept, and a presented secret is compared against every digest in
//! constant time, so neither timing nor a memory dump gives a secret away.

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Shortest secret accepted: 16 characters is 96 bits of base64 or more.
pub const MIN_SECRET_LEN: usize = 16;

/// The SHA-256 of a secret: what is kept of it. Its `Debug` shows nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretDigest([u8; 32]);

impl SecretDigest {
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDigest([redacted])")
    }
}

/// Who holds which secret: each holder (a producer's name, an operator) by the digest of its
/// secret. One holder may appear twice, with its old and new secret during a rotation.
#[derive(Clone)]
pub struct BearerSecrets<T> {
    holders: Arc<[(SecretDigest, T)]>,
}

impl<T> BearerSecrets<T> {
    pub fn new(holders: Vec<(SecretDigest, T)>) -> Self {
        Self { holders: holders.into() }
    }

    /// The holder of `presented`. Every digest is compared, in constant time, whichever matches.
    pub fn authenticate(&self, presented: &str) -> Option<&T> {
        let presented = SecretDigest::of(presented);
        let mut found = None;
        for (digest, holder) in self.holders.iter() {
            if bool::from(digest.0.ct_eq(&presented.0)) {
                found = Some(holder);
            }
        }
        found
    }

    /// The holder of the request's `Authorization: Bearer <secret>`.
    pub fn from_headers(&self, headers: &HeaderMap) -> Option<&T> {
        bearer_token(headers).and_then(|token| self.authenticate(token))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&SecretDigest, &T)> {
        self.holders.iter().map(|(digest, holder)| (digest, holder))
    }

    pub fn len(&self) -> usize {
        self.holders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }
}

/// The holders only: never a digest.
impl<T: std::fmt::Debug> std::fmt::Debug for BearerSecrets<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.holders.iter().map(|(_, holder)| holder)).finish()
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case, the token trimmed).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn secrets() -> BearerSecrets<&'static str> {
        BearerSecrets::new(vec![
            (SecretDigest::of("aaaaaaaaaaaaaaaa"), "shop"),
            (SecretDigest::of("bbbbbbbbbbbbbbbb"), "shop"),
            (SecretDigest::of("cccccccccccccccc"), "billing"),
        ])
    }

    #[test]
    fn a_secret_finds_its_holder_and_nothing_else_does() {
        let secrets = secrets();
        assert_eq!(secrets.authenticate("bbbbbbbbbbbbbbbb"), Some(&"shop"));
        assert_eq!(secrets.authenticate("cccccccccccccccc"), Some(&"billing"));
        assert_eq!(secrets.authenticate("cccccccccccccccd"), None);
        assert_eq!(secrets.authenticate(""), None);
        assert!(!format!("{secrets:?} {:?}", SecretDigest::of("aaaaaaaaaaaaaaaa")).contains("aaaa"));
    }

    #[test]
    fn the_token_comes_from_a_bearer_authorization_only() {
        let secrets = secrets();
        let headers = |value: &'static str| HeaderMap::from_iter([(AUTHORIZATION, HeaderValue::from_static(value))]);
        assert_eq!(secrets.from_headers(&headers("Bearer cccccccccccccccc")), Some(&"billing"));
        assert_eq!(secrets.from_headers(&headers("bearer  cccccccccccccccc ")), Some(&"billing"));
        assert_eq!(secrets.from_headers(&headers("Basic cccccccccccccccc")), None);
        assert_eq!(secrets.from_headers(&headers("cccccccccccccccc")), None);
        assert_eq!(secrets.from_headers(&HeaderMap::new()), None);
    }
}
