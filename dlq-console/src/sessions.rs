//! The console's live sessions, kept in Redis so that they can end before their cookie does:
//! logging out deletes the session, and a cookie whose session is gone opens nothing, however
//! valid its signature. Each session is one key (`<ns>:console:session:<id>`) holding the
//! operator's name, expiring with the cookie; the id is a digest of the cookie's nonce, so
//! what Redis holds cannot be turned back into a cookie.
//!
//! A rotated token (a new `CONSOLE_TOKEN`, or an operator's new token in `CONSOLE_OPERATORS`,
//! then a restart) ends every session of that operator as well: the cookie's signature covers
//! the digest of the token it was opened with (see `pages::Session`).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jobs::redis_conn::Conn;
use jobs::{Keys, StoreError};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct Sessions {
    conn: Conn,
    keys: Keys,
}

impl Sessions {
    pub fn new(conn: Conn, keys: Keys) -> Self {
        Self { conn, keys }
    }

    fn key(&self, nonce: &str) -> String {
        self.keys.console_session(&URL_SAFE_NO_PAD.encode(Sha256::digest(nonce.as_bytes())))
    }

    /// Records a new session of `operator` for `ttl`.
    pub async fn open(&self, nonce: &str, operator: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let () = redis::cmd("SET")
            .arg(self.key(nonce))
            .arg(operator)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Whether the session is still open, and `operator`'s.
    pub async fn alive(&self, nonce: &str, operator: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let holder: Option<String> = redis::cmd("GET").arg(self.key(nonce)).query_async(&mut conn).await?;
        Ok(holder.as_deref() == Some(operator))
    }

    /// Ends the session: its cookie opens nothing from now on.
    pub async fn end(&self, nonce: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: u64 = redis::cmd("DEL").arg(self.key(nonce)).query_async(&mut conn).await?;
        Ok(())
    }
}
