//! The job record: what Redis holds of one job, in one codec for every reader and writer.
//!
//! A job is one Redis STRING (`<ns>:{<kind>}:job:<id>`) holding a MessagePack map with short
//! keys. Rust writes it with `rmp_serde` (enqueue), the Lua scripts read and rewrite it with
//! Redis's `cmsgpack` (fetch, finish, replay), and every Rust reader (the status endpoint, the
//! dead letters, the tests) decodes it here. One value instead of a hash of named fields plus a
//! list of attempt records: one key per job, so each state change is one `GET` and one `SET`
//! of a string, with no number formatted as text on Redis's side.
//!
//! Once a job succeeds, its record is replaced by [`JobRecord::finished`]: only what the status
//! answer needs (no payload, no idempotency key, no trace), kept for the kind's retention.
//!
//! The keys are part of the storage format; a key renamed here must be renamed in
//! `lua/record.lua` and the scripts. Unknown keys are ignored, so a newer writer can add one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{JobStatus, Priority};

/// Why a job died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeadReason {
    /// Every attempt failed.
    Exhausted,
    /// The handler said no attempt can succeed (a 4xx, an invalid address).
    Permanent,
    /// Its deadline passed before it could run (an OTP past its TTL): status `expired`.
    Expired,
    /// Its handler panicked on its last attempt.
    Panicked,
    /// An email to an address on the suppression list ([`crate::suppression`]): never sent.
    Suppressed,
}

impl DeadReason {
    pub const ALL: [DeadReason; 5] = [
        DeadReason::Exhausted,
        DeadReason::Permanent,
        DeadReason::Expired,
        DeadReason::Panicked,
        DeadReason::Suppressed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Exhausted => "exhausted",
            DeadReason::Permanent => "permanent",
            DeadReason::Expired => "expired",
            DeadReason::Panicked => "panicked",
            DeadReason::Suppressed => "suppressed",
        }
    }

    /// The status a job dying for this reason takes.
    pub fn status(self) -> JobStatus {
        if self == DeadReason::Expired { JobStatus::Expired } else { JobStatus::Dead }
    }
}

impl std::str::FromStr for DeadReason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeadReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("must be one of {}", DeadReason::ALL.map(DeadReason::as_str).join(", ")))
    }
}

impl std::fmt::Display for DeadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt, as the worker (or the lease recovery) recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    #[serde(rename = "n")]
    pub attempt: u32,
    /// ms since the epoch, Redis's clock (`fetch.lua`).
    #[serde(rename = "sa")]
    pub started_at: i64,
    #[serde(rename = "fa")]
    pub finished_at: i64,
    /// The failure; absent for the attempt that succeeded.
    #[serde(rename = "er", default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(rename = "wk", default)]
    pub worker: String,
}

/// One job as stored. Times are ms since the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    #[serde(rename = "st")]
    pub status: JobStatus,
    /// Attempts started so far (the running one included).
    #[serde(rename = "at", default)]
    pub attempts: u32,
    /// Leases handed out so far: a fetch's token for the lease it hands out. Unlike the attempt
    /// count, which a replay resets and a release takes back, it never repeats, so an outcome,
    /// renewal or release from a holder whose lease was lost never passes for a newer holder's.
    #[serde(rename = "ln", default)]
    pub leases: u64,
    #[serde(rename = "ma")]
    pub max_attempts: u32,
    /// The API key name that enqueued the job.
    #[serde(rename = "pr")]
    pub producer: String,
    #[serde(rename = "ca")]
    pub created_at: i64,
    /// When it is due: now for an immediate job, later for a delayed one or a retry.
    #[serde(rename = "ra")]
    pub run_at: i64,
    /// The payload's normal form as JSON; absent once the job has succeeded.
    #[serde(rename = "pl", default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(rename = "ik", default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The W3C `traceparent` of the request that enqueued the job.
    #[serde(rename = "tp", default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Start of the current or last attempt.
    #[serde(rename = "sa", default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// The worker running the current attempt, or that ran the last one.
    #[serde(rename = "wk", default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(rename = "le", default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// What the provider called the message it accepted (an SES message id, a Twilio SID).
    #[serde(rename = "pm", default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(rename = "fa", default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    #[serde(rename = "rs", default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DeadReason>,
    #[serde(rename = "da", default, skip_serializing_if = "Option::is_none")]
    pub dead_at: Option<i64>,
    /// The idempotency record a dead job gave up (`bury` in `lua/record.lua`): its fingerprint
    /// and expiry, so a replay can claim the key again.
    #[serde(rename = "fp", default, skip_serializing_if = "Option::is_none")]
    pub idem_fingerprint: Option<String>,
    #[serde(rename = "fx", default, skip_serializing_if = "Option::is_none")]
    pub idem_expires_at: Option<i64>,
    /// Operator actions on this job (`<time> replayed by <operator>`), oldest first.
    #[serde(rename = "nt", default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The job's priority (`pi`: "h", "l"; absent for normal): its lane (`lua/lanes.lua`).
    #[serde(rename = "pi", default, skip_serializing_if = "Priority::is_normal", with = "crate::lanes::priority_code")]
    pub priority: Priority,
    /// The job's group (`gr`; absent: none), served round-robin with the others of its lane.
    #[serde(rename = "gr", default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A webhook waiting for its destination: when it was first deferred (ms), cleared once it
    /// holds a slot ([`crate::destinations`]); the longest deferral counts from it.
    #[serde(rename = "df", default, skip_serializing_if = "Option::is_none")]
    pub deferred_at: Option<i64>,
    /// The provider's report on the message (`dv`, [`crate::delivery`]): kept when the job
    /// finishes, since reports come after the success.
    #[serde(rename = "dv", default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<crate::delivery::StoredDelivery>,
    /// Every finished attempt, oldest first. A job that succeeded at its first attempt keeps
    /// none: its record says when it started and finished.
    #[serde(rename = "hs", default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AttemptRecord>,
}

/// A record Redis held that this codec cannot read: only a foreign writer (or a record of an
/// older layout) causes it.
#[derive(Debug, thiserror::Error)]
#[error("unreadable job record: {0}")]
pub struct BadRecord(#[from] rmp_serde::decode::Error);

impl JobRecord {
    /// The record of a job just enqueued, due at `run_at` (ms): `scheduled` when that is later
    /// than `now`, else `queued`.
    pub fn new(job: &crate::NewJob, now: DateTime<Utc>) -> Self {
        let now_ms = now.timestamp_millis();
        let run_at = job.run_at.map_or(now_ms, |t| t.timestamp_millis());
        let (status, run_at) =
            if run_at > now_ms { (JobStatus::Scheduled, run_at) } else { (JobStatus::Queued, now_ms) };
        Self {
            status,
            attempts: 0,
            leases: 0,
            max_attempts: job.max_attempts,
            producer: job.producer.clone(),
            created_at: job.created_at.timestamp_millis(),
            run_at,
            payload: Some(job.payload.clone()),
            idempotency_key: job.idempotency.as_ref().map(|(key, _)| key.clone()),
            traceparent: job.traceparent.clone(),
            started_at: None,
            worker: None,
            last_error: None,
            provider_message_id: None,
            finished_at: None,
            reason: None,
            dead_at: None,
            idem_fingerprint: None,
            idem_expires_at: None,
            notes: Vec::new(),
            priority: job.priority,
            group: job.group.clone(),
            deferred_at: None,
            delivery: None,
            history: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing a struct of plain fields into a Vec cannot fail.
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, BadRecord> {
        Ok(rmp_serde::from_slice(bytes)?)
    }

    pub fn is_dead_letter(&self) -> bool {
        matches!(self.status, JobStatus::Dead | JobStatus::Expired)
    }
}

/// A script that reads or writes job records, with the Lua side of this codec
/// (`lua/record.lua`: `load_record`, `save_record`, `add_attempt`, `bury`) and of the ready
/// lists' layout (`lua/lanes.lua`: `push`, `pop`, the lanes and groups) in front of it.
pub(crate) fn with_records(script: &str) -> redis::Script {
    redis::Script::new(&format!("{}{}{script}", include_str!("../lua/record.lua"), include_str!("../lua/lanes.lua")))
}

/// `script` with `lua/record.lua` and the token bucket's functions (`lua/rate.lua`) in front.
pub(crate) fn with_rate(script: &str) -> redis::Script {
    with_records(&format!("{}{script}", include_str!("../lua/rate.lua")))
}

/// Milliseconds since the epoch as a time; the epoch for a value out of range.
pub fn millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Reads job `id`'s record wherever its queue, one `GET` per queue sent at once: the kind and
/// the record, or `None` when no queue holds it. A record that cannot be decoded is reported.
pub async fn find(
    conn: &crate::redis_conn::Conn,
    keys: &crate::Keys,
    id: &str,
) -> Result<Option<(crate::Kind, JobRecord)>, crate::StoreError> {
    let raws: Vec<Option<Vec<u8>>> = crate::redis_conn::for_job_in_every_queue(conn, keys, id, |key| {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        cmd
    })
    .await?;
    for (kind, raw) in crate::Kind::ALL.into_iter().zip(raws) {
        if let Some(raw) = raw {
            return Ok(Some((kind, JobRecord::decode(&raw)?)));
        }
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn dead_record() -> JobRecord {
        JobRecord {
            status: JobStatus::Dead,
            attempts: 2,
            leases: 2,
            max_attempts: 2,
            producer: "shop".into(),
            created_at: 1_763_712_000_000,
            run_at: 1_763_712_000_000,
            payload: Some(r#"{"url":"https://a.example/é"}"#.into()),
            idempotency_key: None,
            traceparent: None,
            started_at: Some(1_763_712_000_100),
            worker: Some("w1".into()),
            last_error: Some("HTTP 500".into()),
            provider_message_id: None,
            finished_at: Some(1_763_712_000_200),
            reason: Some(DeadReason::Exhausted),
            dead_at: Some(1_763_712_000_200),
            idem_fingerprint: None,
            idem_expires_at: None,
            notes: vec![],
            priority: Priority::Normal,
            group: None,
            deferred_at: None,
            delivery: None,
            history: vec![AttemptRecord {
                attempt: 1,
                started_at: 1,
                finished_at: 2,
                error: Some("HTTP 500".into()),
                worker: "w1".into(),
            }],
        }
    }

    #[test]
    fn a_record_round_trips_and_omits_what_it_does_not_hold() {
        let record = dead_record();
        let bytes = record.encode();
        assert_eq!(JobRecord::decode(&bytes).unwrap(), record);
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("ik") && !text.contains("nt"), "absent fields are not written");
    }

    #[test]
    fn unknown_keys_are_ignored_and_garbage_is_an_error() {
        #[derive(Serialize)]
        struct Newer<'a> {
            st: &'a str,
            ma: u32,
            pr: &'a str,
            ca: i64,
            ra: i64,
            zz: &'a str,
        }
        let bytes = rmp_serde::to_vec_named(&Newer { st: "queued", ma: 1, pr: "p", ca: 1, ra: 1, zz: "x" }).unwrap();
        assert_eq!(JobRecord::decode(&bytes).unwrap().status, JobStatus::Queued);
        assert!(JobRecord::decode(b"not msgpack").is_err());
    }
}
