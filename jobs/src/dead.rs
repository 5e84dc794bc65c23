//! Dead letters as operators change them: replay (under the same id, attempts reset, payload
//! optionally edited; an OTP past its TTL refused) and delete, one or many. What operators
//! read (listing, one letter, the queues' counts) is `inspect`'s; both are methods of
//! [`DeadLetters`], the console's one handle.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use redis::Script;
use serde_json::Value;

use crate::record::with_records;
use crate::redis_conn::Conn;
use crate::{JobStatus, Keys, Kind, StoreError};

pub use crate::inspect::{Attempt, CHUNK, DeadFilter, DeadPage, DeadRecord, DeadSummary, Depths, decode_cursor};
pub use crate::redact::{REDACTED, changed_fields, redact, redact_text, restore_redacted};

/// Why a replay did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayRefused {
    #[error("no dead letter has this id")]
    NotFound,
    #[error("{0}")]
    NotReplayable(String),
}

static REPLAY: LazyLock<Script> = LazyLock::new(|| with_records(include_str!("../lua/replay.lua")));
static FORGET: LazyLock<Script> = LazyLock::new(|| with_records(include_str!("../lua/forget.lua")));

/// Dead letters of every queue of one namespace.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    pub(crate) conn: Conn,
    pub(crate) keys: Keys,
}

impl DeadLetters {
    pub fn new(conn: Conn, keys: Keys) -> Self {
        Self { conn, keys }
    }

    /// Queues the letter again under its id, attempts reset; `payload` (already checked)
    /// replaces the stored one. An OTP past its TTL is refused: it would never be sent.
    pub async fn replay(
        &self,
        id: &str,
        payload: Option<&str>,
        operator: &str,
        now: DateTime<Utc>,
    ) -> Result<Kind, ReplayOutcome> {
        let letter = self
            .letter(id)
            .await
            .map_err(ReplayOutcome::Store)?
            .ok_or(ReplayOutcome::Refused(ReplayRefused::NotFound))?;
        if letter.kind == Kind::OtpSms {
            if letter.status == JobStatus::Expired {
                return Err(ReplayOutcome::Refused(ReplayRefused::NotReplayable(
                    "an expired OTP cannot be replayed: its code is no longer valid".into(),
                )));
            }
            let ttl = serde_json::from_str::<Value>(&letter.payload)
                .ok()
                .and_then(|p| p.get("ttl_seconds").and_then(Value::as_i64))
                .unwrap_or(300);
            if now > letter.created_at + chrono::Duration::seconds(ttl) {
                return Err(ReplayOutcome::Refused(ReplayRefused::NotReplayable(format!(
                    "this OTP's ttl of {ttl} s has passed: it would expire unsent"
                ))));
            }
        }
        let q = self.keys.queue(letter.kind);
        let note = match payload {
            Some(_) => format!("{} edited and replayed by {operator}", now.to_rfc3339()),
            None => format!("{} replayed by {operator}", now.to_rfc3339()),
        };
        let idem =
            letter.idempotency_key.as_ref().map_or_else(|| q.job(id), |key| q.idempotency(&letter.producer, key));
        let mut call = REPLAY.prepare_invoke();
        call.key(q.job(id))
            .key(q.dead())
            .key(q.ready())
            .key(idem)
            .key(q.wake())
            .arg(id)
            .arg(now.timestamp_millis())
            .arg(payload.unwrap_or(""))
            .arg(note)
            .arg(q.job_prefix());
        let done: i32 = call.invoke_async(&mut self.conn.clone()).await.map_err(|e| ReplayOutcome::Store(e.into()))?;
        match done {
            1 => Ok(letter.kind),
            -1 => Err(ReplayOutcome::Refused(ReplayRefused::NotReplayable(format!(
                "its idempotency key `{}` now names a newer job: the producer sent it again, and a replay would deliver twice",
                letter.idempotency_key.unwrap_or_default()
            )))),
            _ => Err(ReplayOutcome::Refused(ReplayRefused::NotFound)),
        }
    }

    /// Deletes a dead letter and its attempts; whether it was one (a letter replayed
    /// meanwhile is not deleted).
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let Some(letter) = self.letter(id).await? else { return Ok(false) };
        Ok(self.delete_many(letter.kind, &[id.to_owned()]).await? == 1)
    }

    /// Deletes those of the letters `ids` of `kind` that are still dead letters, in one script
    /// call; how many were deleted.
    pub async fn delete_many(&self, kind: Kind, ids: &[String]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let q = self.keys.queue(kind);
        let mut call = FORGET.prepare_invoke();
        call.key(q.dead()).arg(q.job_prefix()).arg(ids);
        Ok(call.invoke_async(&mut self.conn.clone()).await?)
    }
}

#[derive(Debug)]
pub enum ReplayOutcome {
    Refused(ReplayRefused),
    Store(StoreError),
}
